"""Canonical JSON (RFC 8785, JCS) for everything that is hashed or signed.

Encoding uses the ``rfc8785`` package. :func:`loads` additionally insists that the bytes it parses
are already canonical, so a signed document has exactly one spelling.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from verinfer.errors import InputError, VerificationError

__all__ = ["dumps", "loads"]


def dumps(value: Any) -> bytes:
    """The RFC 8785 canonical encoding of ``value``; raises :class:`InputError` if it has none."""
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as exc:
        raise InputError(f"value has no canonical JSON form: {exc}") from exc


_SAFE_INTEGER = 2**53 - 1  # I-JSON: larger integer literals are doubles (RFC 8785 §3.2.2.3)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _number(literal: str) -> int | float:
    value = int(literal)
    return value if -_SAFE_INTEGER <= value <= _SAFE_INTEGER else float(literal)


def loads(data: bytes) -> Any:
    """Parse canonical JSON; raise :class:`VerificationError` if ``data`` is not canonical."""
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant, parse_int=_number)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise VerificationError(f"malformed canonical JSON: {exc}") from exc
    try:
        again = dumps(value)
    except InputError as exc:
        raise VerificationError(f"malformed canonical JSON: {exc}") from exc
    if again != data:
        raise VerificationError("malformed canonical JSON: not in RFC 8785 canonical form")
    return value
