"""The SQLite store's batch journal: a commit made durable by one small synced append.

A durable SQLite commit syncs every page the batch changed: the entry rows, the right-edge tiles
(16 KiB pages) and the checkpoint, 0.6-1.6 ms on the development disk for a one-entry batch. The
entries alone determine the rest: the tiles are hashes of them, and the checkpoint is an Ed25519
signature (deterministic, RFC 8032) over the note of the tree they make. So a batch is
appended here and synced (one sequential write: 0.2 ms, or 0.6 ms once the disk idled), and the
commit returns; the store's table writer inserts it into the tables a moment later, without
syncing, which survives a killed process but not a power cut. On
open, a batch the journal holds and the database lost is replayed through the same path as an
append; its checkpoint comes out byte for byte as it was issued, so nobody can hold a
conflicting one.

Once the journal holds :data:`ROTATE_BYTES`, the table writer commits durably
(``synchronous=FULL``, which makes every earlier batch durable too) and empties it, off the
answer path. A batch whose record exceeds :data:`MAX_RECORD_BYTES`, or one that would grow the
journal past :data:`JOURNAL_BYTES` (the writer fell behind), is committed that way by its own
commit.

A record is ``u32 n | payload (n bytes) | SHA-256(payload)``, payload ``u64 first index | u32
count | u16 length * count | the entries, concatenated``, integers big-endian. Records are
written and synced one at a time, in order, so only the last can be torn: reading stops at the
first short or mismatching record and cuts the file there (that batch was never acknowledged).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from verinfer.errors import StorageError

__all__ = [
    "JOURNAL_BYTES",
    "MAX_RECORD_BYTES",
    "ROTATE_BYTES",
    "Journal",
    "encode",
    "parse",
    "size",
]

# with the tables written off the answer path, an append of the entries beats SQLite syncing
# them with their tiles at any size; the caps bound what an open reads and replays
MAX_RECORD_BYTES = 1 << 20
ROTATE_BYTES = 4 << 20  # the table writer empties the journal once it holds this much
JOURNAL_BYTES = 16 << 20  # a commit that would grow it past this is made durable by SQLite
_HEAD = struct.Struct(">QI")
_LENGTH = struct.Struct(">I")
_DIGEST = hashlib.sha256().digest_size

Batch = tuple[int, list[bytes]]


def size(entries: Sequence[bytes]) -> int:
    """The length of the record of ``entries``, without building it."""
    return _LENGTH.size + _HEAD.size + 2 * len(entries) + sum(map(len, entries)) + _DIGEST


def encode(start: int, entries: Sequence[bytes]) -> bytes:
    """One journal record: the batch of ``entries`` appended at index ``start``."""
    count = len(entries)
    payload = struct.pack(f">QI{count}H", start, count, *map(len, entries)) + b"".join(entries)
    return _LENGTH.pack(len(payload)) + payload + hashlib.sha256(payload).digest()


def parse(data: bytes) -> tuple[list[Batch], int]:
    """The whole records at the front of ``data`` and the length they span."""
    batches: list[Batch] = []
    offset = 0
    while offset + _LENGTH.size <= len(data):
        (length,) = _LENGTH.unpack_from(data, offset)
        end = offset + _LENGTH.size + length + _DIGEST
        payload = data[offset + _LENGTH.size : end - _DIGEST]
        if end > len(data) or length < _HEAD.size:
            break
        if hashlib.sha256(payload).digest() != data[end - _DIGEST : end]:
            break
        start, count = _HEAD.unpack_from(payload)
        position = _HEAD.size + 2 * count
        if position > len(payload):
            break  # a hash-valid record that does not parse: not written by this code
        entries = []
        for width in struct.unpack_from(f">{count}H", payload, _HEAD.size):
            entries.append(payload[position : position + width])
            position += width
        if position != len(payload):
            break
        batches.append((start, entries))
        offset = end
    return batches, offset


class Journal:
    """An append-only file of batch records next to the database. Not thread-safe: the store
    calls it under its own lock and inside its write transaction."""

    def __init__(self, path: Path, *, wait: float = 0.0) -> None:
        """Open (creating) the journal at ``path`` and lock it for this opener alone (``flock``,
        released when it is closed or its process dies), waiting up to ``wait`` seconds for
        another opener to let go."""
        self.path = path
        created = not path.exists()
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open the log journal {str(path)!r}: {exc}") from exc
        try:
            self._lock(wait)
            if created:  # the file's name must survive a crash as well as its records
                directory = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
            self.size = os.fstat(self._fd).st_size  # under the lock: nobody appends now
            self.torn = False  # a failed append left bytes behind that could not be cut off
        except BaseException as exc:
            os.close(self._fd)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot open the log journal {str(path)!r}: {exc}") from exc
            raise

    def _lock(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StorageError(
                        f"the log at {str(self.path.parent)!r} is open elsewhere (its journal "
                        f"{self.path.name!r} is locked by another process, or by a log of this "
                        "process not closed): one opener at a time; while a node serves this "
                        "directory, ask it through its URL (verinfer infer --node URL)"
                    ) from None
                time.sleep(0.05)

    def read(self) -> list[Batch]:
        """Every whole record, in order; a torn tail is cut off the file."""
        try:
            data = os.pread(self._fd, self.size, 0)
            batches, whole = parse(data)
            if whole < len(data):
                self.truncate(whole)
        except OSError as exc:
            raise StorageError(f"cannot read the log journal {str(self.path)!r}: {exc}") from exc
        return batches

    def append(self, record: bytes) -> int:
        """Write ``record`` (not yet synced); return the file's length before it. If the write
        fails and its bytes cannot be cut off again, :attr:`torn` says so: a record appended
        after them would be cut off with them at the next open."""
        before = self.size
        try:
            written = os.write(self._fd, record)
        except OSError as exc:
            self._cut(before, f"cannot write the log journal: {exc}")
        self.size += written
        if written != len(record):
            self._cut(before, "cannot write the log journal: short write (is the disk full?)")
        return before

    def _cut(self, length: int, failure: str) -> NoReturn:
        """Cut a failed append's bytes off again, and raise ``failure``."""
        try:
            self.truncate(length)
        except StorageError as exc:
            self.torn = True
            raise StorageError(f"{failure}; its bytes stay: {exc}") from exc
        raise StorageError(failure)

    def sync(self) -> None:
        """Make every appended record durable."""
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise StorageError(f"cannot sync the log journal: {exc}") from exc

    def truncate(self, length: int) -> None:
        """Cut the file to ``length`` bytes (0 empties it)."""
        try:
            os.ftruncate(self._fd, length)
        except OSError as exc:
            raise StorageError(f"cannot truncate the log journal: {exc}") from exc
        self.size = length

    def close(self) -> None:
        """Close the file (once; later calls do nothing)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
