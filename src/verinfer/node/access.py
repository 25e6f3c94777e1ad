"""Who may read the tensors a node keeps: the requester, the operator's auditors, or anyone.

A receipt's inputs and outputs are the caller's data. They are private unless the caller asked
for a public audit (the receipt then says ``"audit": "public"``, docs/PROTOCOL.md §10). A node
serves private tensors (``GET /v1/tensors/{digest}``) only to a reader who sends, as
``Authorization: Bearer <token>``, one of:

- the digest's *capability*: ``base64url(HMAC-SHA256(tensor secret, label || digest))``, answered
  to the requester with the inference (``"capabilities"``). It opens that digest and no other; the
  secret (``DATA/tensors.secret``, mode 0600) never leaves the node, so nobody else can make one.
- an *auditor token* the operator issued (``verinfer node auditors add``), kept in
  ``DATA/auditors.json`` (mode 0600) only as its SHA-256: the file does not reveal the tokens.
- the node's admin token.

Tokens are compared in constant time and never logged or echoed in an error.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from verinfer import keys
from verinfer.errors import ConflictError, InputError, NotFound, StorageError

__all__ = [
    "AUDITORS_FILE",
    "TENSOR_SECRET_FILE",
    "Auditors",
    "TensorAccess",
    "bearer",
]

TENSOR_SECRET_FILE = "tensors.secret"  # noqa: S105 - a file name, not a secret
AUDITORS_FILE = "auditors.json"
_LABEL = b"verinfer tensor capability v1\n"  # domain separation: this HMAC opens tensors only
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_AUDITORS = 1024
_log = logging.getLogger("verinfer.access")


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if authorization is None or not authorization.startswith("Bearer "):
        return None
    return authorization[7:].strip() or None


def _private_file(path: Path) -> bool:
    """Whether ``path`` is readable by its owner only."""
    return not path.stat().st_mode & 0o077


def _load_secret(path: Path) -> bytes:
    if not path.exists():
        with contextlib.suppress(ConflictError):  # another process created it meanwhile
            keys.write_secret(path, secrets.token_urlsafe(32) + "\n")
    if not _private_file(path):
        raise InputError(f"{str(path)!r} is readable by others: chmod 600 it")
    text = path.read_text().strip()
    if len(text) < 32:
        raise InputError(f"{str(path)!r} holds no usable secret (fewer than 32 characters)")
    return text.encode()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Auditors:
    """The auditor tokens an operator issued for one node, in ``DATA/auditors.json``.

    The file holds each token's SHA-256 under the auditor's name; the token itself is shown
    once, when it is issued. A running node re-reads the file when it changes, so tokens
    issued or removed by ``verinfer node auditors`` take effect without a restart.
    """

    def __init__(self, data: str | os.PathLike[str]) -> None:
        self.data = Path(data)
        self.path = self.data / AUDITORS_FILE
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime) last read
        self._holders: dict[str, str] = {}  # token SHA-256 -> auditor name
        self._lock = threading.Lock()

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            if not _private_file(self.path):
                raise InputError(f"{str(self.path)!r} is readable by others: chmod 600 it")
            parsed: Any = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot read {str(self.path)!r}: {exc}") from exc
        found = parsed.get("auditors") if isinstance(parsed, dict) else None
        if not isinstance(found, dict) or not all(
            isinstance(name, str)
            and isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            for name, entry in found.items()
        ):
            raise StorageError(f"{str(self.path)!r} is malformed: expected {{'auditors': {{}}}}")
        return found

    def _write(self, auditors: dict[str, dict[str, str]]) -> None:
        """Replace the file atomically (a 0600 temporary file, fsync, rename)."""
        temp = self.data / f".{AUDITORS_FILE}.tmp"
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({"auditors": auditors}, indent=1, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, dict[str, str]]]:
        """The registry, locked against other editors (another CLI call) until written."""
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.data / f".{AUDITORS_FILE}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            auditors = self._read()
            yield auditors
            self._write(auditors)

    def add(self, name: str, *, replace: bool = False) -> str:
        """Issue a token for auditor ``name`` and return it (it is not kept: show it once).
        An existing name is a :class:`ConflictError` unless ``replace``."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InputError(f"malformed auditor name {name!r}: use 1-64 of A-Z a-z 0-9 . _ -")
        token = secrets.token_urlsafe(32)
        with self._editing() as auditors:
            if name in auditors and not replace:
                raise ConflictError(f"auditor {name!r} already has a token: remove it first")
            if name not in auditors and len(auditors) >= _MAX_AUDITORS:
                raise InputError(f"a node keeps at most {_MAX_AUDITORS} auditor tokens")
            auditors[name] = {
                "sha256": _digest(token),
                "issued": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        return token

    def remove(self, name: str) -> None:
        """Revoke auditor ``name``'s token."""
        with self._editing() as auditors:
            if auditors.pop(name, None) is None:
                raise NotFound(f"no auditor {name!r} on this node")

    def names(self) -> list[str]:
        """The auditors holding a token, by name."""
        return sorted(self._read())

    def holder(self, token: str) -> str | None:
        """The name of the auditor whose token ``token`` is, else ``None``."""
        try:
            stat = self.path.stat()
            seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            seen = None
        with self._lock:
            if seen != self._seen:  # issued or revoked since the last read
                self._holders = {e["sha256"]: n for n, e in self._read().items()}
                self._seen = seen
            return self._holders.get(_digest(token))


class TensorAccess:
    """The node's decision on who reads which kept tensors (see the module's docstring)."""

    def __init__(self, data: str | os.PathLike[str], admin_token: str) -> None:
        self._secret = _load_secret(Path(data) / TENSOR_SECRET_FILE)
        self._admin = admin_token.encode()
        self.auditors = Auditors(data)

    def capability(self, digest: str) -> str:
        """The token that opens ``digest``'s tensors, and only them."""
        mac = hmac.digest(self._secret, _LABEL + digest.encode(), "sha256")  # one-shot, in C
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def reader(self, digest: str, token: str | None) -> str | None:
        """Who ``token`` makes a reader of ``digest``'s private tensors: ``"requester"``,
        ``"auditor <name>"`` or ``"admin"``; ``None`` if nobody."""
        if not token:
            return None
        if hmac.compare_digest(token.encode(), self.capability(digest).encode()):
            return "requester"
        if hmac.compare_digest(token.encode(), self._admin):
            return "admin"
        try:
            name = self.auditors.holder(token)
        except (InputError, StorageError) as exc:  # the operator's to fix: not told to callers
            _log.warning("auditor tokens unusable, every auditor refused: %s", exc)
            return None
        return None if name is None else f"auditor {name}"
