"""Canonical JSON (RFC 8785, JCS) for everything that is hashed or signed.

Encoding uses the ``rfc8785`` package. :func:`loads` additionally insists that the bytes it parses
are already canonical, so a signed document has exactly one spelling.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from verinfer.errors import InputError, VerificationError

__all__ = ["dumps", "dumps_flat", "loads"]

_STRING_OR_NULL = (str, type(None))
_SAFE_INTEGER = 2**53 - 1  # I-JSON: larger integer literals are doubles (RFC 8785 §3.2.2.3)


def _simple(value: Any, depth: int = 0) -> bool:
    """Whether ``json.dumps`` already writes ``value`` as RFC 8785 does: ASCII keys, strings,
    safe integers, booleans, null, and lists and objects of those (no floats)."""
    if value is None or isinstance(value, str | bool):
        return True
    if isinstance(value, int):
        return -_SAFE_INTEGER <= value <= _SAFE_INTEGER
    if depth > 32:
        return False
    if isinstance(value, list):
        return all(_simple(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and key.isascii() and _simple(item, depth + 1)
            for key, item in value.items()
        )
    return False


def dumps(value: Any) -> bytes:
    """The RFC 8785 canonical encoding of ``value``; raises :class:`InputError` if it has none.

    Values without floats and with ASCII keys (receipts, manifests) take a fast path through
    ``json.dumps``, whose output for them is byte-identical to RFC 8785: the same escapes, and
    key order by code point equals order by UTF-16 unit for ASCII (tests hold it to ``rfc8785``).
    """
    if _simple(value):
        try:
            return json.dumps(
                value, sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
        except UnicodeEncodeError:  # a lone surrogate: let rfc8785 report it
            pass
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as exc:
        raise InputError(f"value has no canonical JSON form: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _number(literal: str) -> int | float:
    value = int(literal)
    return value if -_SAFE_INTEGER <= value <= _SAFE_INTEGER else float(literal)


def dumps_flat(value: dict[str, str | None]) -> bytes:
    """:func:`dumps` of a flat object of ASCII keys and string or null values (a receipt),
    without the general type walk: the hot path of every inference."""
    for key, item in value.items():
        if not key.isascii() or type(item) not in _STRING_OR_NULL:
            return dumps(value)
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return dumps(value)  # a lone surrogate: let rfc8785 report it


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
