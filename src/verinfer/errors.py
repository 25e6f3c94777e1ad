"""The one exception tree of verinfer.

::

    Error                   base of everything verinfer raises on purpose
    ├── VerificationError   a check failed: signature, proof, digest, malformed signed data
    ├── InputError          a caller passed a value that is malformed or out of range
    ├── NotFound            the thing asked for does not exist (yet)
    ├── ConflictError       another writer changed the state this operation was based on
    ├── LimitExceeded       a request ran past a time or capacity limit
    └── StorageError        the backing store failed, or holds data that fails its hash check

Verifiers return ``None`` or raise :class:`VerificationError`. Messages name the bad value with
``!r`` so a user can see what was wrong without a debugger. Third-party exceptions are translated
at one boundary (``raise InputError(...) from exc``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "ConflictError",
    "DisagreementError",
    "Error",
    "InputError",
    "LimitExceeded",
    "NotFound",
    "StorageError",
    "VerificationError",
]


class Error(Exception):
    """Base class of every error verinfer raises on purpose."""

    def diagnostics(self) -> str:
        """A human-readable explanation, including the chain of causes."""
        lines = [f"{type(self).__name__}: {self}"]
        cause = self.__cause__
        while cause is not None:
            lines.append(f"  caused by {type(cause).__name__}: {cause}")
            cause = cause.__cause__
        return "\n".join(lines)


class VerificationError(Error):
    """A verification step failed; the message names the step and the offending value."""


class DisagreementError(VerificationError):
    """Nodes asked the same request (``replicated:K``) answered differently. ``bundles`` holds
    every signed answer, each verified on its own: the evidence of which node said what."""

    def __init__(self, message: str, bundles: tuple[Any, ...]) -> None:
        super().__init__(message)
        self.bundles = bundles


class InputError(Error):
    """A caller-supplied value is malformed or out of range."""


class NotFound(Error):  # noqa: N818 - reads better at call sites than NotFoundError
    """The requested object does not exist."""


class ConflictError(Error):
    """The operation was based on a state that another writer has since changed."""


class AuthError(Error):
    """An administrative request lacks the node's admin token (a node answers 401)."""


class LimitExceeded(Error):  # noqa: N818 - reads better at call sites, like NotFound
    """A request ran past a time or capacity limit (a node answers 503/504 for it)."""


class StorageError(Error):
    """The store failed, or returned data that does not match its hash."""
