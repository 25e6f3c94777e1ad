"""Storage of one log behind one interface, with SQLite and PostgreSQL implementations.

The tables (the same in both back ends)::

    meta(key, value)                       schema version, origin, the log's vkey
    entries(idx, data)                     the leaves, append-only
    tiles(level, idx, width, hashes)       stored tiles (see verinfer.log.tiles); only ever widened
    checkpoints(size, note)                every signed checkpoint the log issued

:meth:`Store.commit` writes a batch of entries, the tiles it changed and the checkpoint that covers
them in one transaction, after checking that no other writer moved the log since ``old_size``. A
crash at any point therefore leaves the last committed checkpoint and everything it covers intact,
or (SQLite, see :mod:`verinfer.log.journal`) the batches the tables lost in the store's journal,
for the log to replay.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from verinfer.errors import ConflictError, StorageError
from verinfer.log.tiles import TileRow

__all__ = ["SCHEMA_VERSION", "SQLStore", "Signing", "Store"]

SCHEMA_VERSION = "1"


class Signing(Protocol):
    """The signed note of a batch's checkpoint, for :meth:`Store.commit` to write: calling it
    returns the note, signed on the calling thread unless :meth:`aside` handed it to another."""

    def aside(self) -> None:
        """Sign on another thread from now on. A store calls it just before it waits for its
        disk, which then hides the signature's time; the note is still called for afterwards."""

    def __call__(self) -> str: ...


class Store(ABC):
    """Persistent, transactional storage for one log. Implementations are thread-safe."""

    @abstractmethod
    def read_meta(self) -> dict[str, str]:
        """The log's metadata; empty if the log was never initialized."""

    @abstractmethod
    def initialize(self, meta: dict[str, str], checkpoint: str) -> None:
        """Create an empty log with its size-0 checkpoint; ConflictError if one exists."""

    @abstractmethod
    def head(self) -> tuple[int, str]:
        """The size and signed note of the latest checkpoint."""

    @abstractmethod
    def checkpoint(self, size: int) -> str | None:
        """The signed checkpoint the log issued at ``size``, if any."""

    @abstractmethod
    def checkpoint_sizes(self) -> list[int]:
        """The sizes of all issued checkpoints, ascending."""

    @abstractmethod
    def read_tiles(
        self, keys: Collection[tuple[int, int]]
    ) -> dict[tuple[int, int], tuple[int, bytes]]:
        """``{(level, index): (width, stored tile)}`` for the keys that exist."""

    @abstractmethod
    def find_leaf_tiles(self, leaf_hash: bytes) -> list[tuple[int, bytes]]:
        """``(index, stored tile)`` of the level-0 tiles whose bytes contain ``leaf_hash``."""

    @abstractmethod
    def read_entries(self, start: int, end: int) -> list[bytes]:
        """Entries ``[start, end)`` that exist, in order."""

    @abstractmethod
    def commit(
        self,
        old_size: int,
        entries: Sequence[bytes],
        tiles: Sequence[TileRow],
        checkpoint: tuple[int, Signing],
    ) -> str:
        """Append ``entries`` at ``old_size``, write ``tiles`` and the checkpoint of the new size,
        atomically; return the checkpoint's note (``checkpoint``: the size, and its note to sign).

        Raises :class:`~verinfer.errors.ConflictError` if the log is no longer at ``old_size``.
        """

    def unapplied(self) -> list[tuple[int, list[bytes]]]:
        """Batches made durable but missing from the tables (a crash came between), in order:
        ``(first index, entries)``, the first at the current head. The log replays them when it
        opens; a store whose commits are durable transactions has none."""
        return []

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""


class SQLStore(Store):
    """The SQL shared by the back ends; statements use ``?`` placeholders."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    @abstractmethod
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows."""

    @abstractmethod
    def _transaction(self) -> Any:
        """A context manager for one write transaction that holds the log's writer lock."""

    @abstractmethod
    def _insert_entries(self, start: int, entries: Sequence[bytes]) -> None: ...

    @abstractmethod
    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per row."""

    def _upsert_tiles(self, tiles: Sequence[TileRow]) -> None:
        self._many(
            "INSERT INTO tiles (level, idx, width, hashes) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (level, idx) DO UPDATE "
            "SET width = excluded.width, hashes = excluded.hashes",
            tiles,
        )

    def read_meta(self) -> dict[str, str]:
        with self._lock:
            return {str(k): str(v) for k, v in self._query("SELECT key, value FROM meta")}

    def initialize(self, meta: dict[str, str], checkpoint: str) -> None:
        with self._lock, self._transaction():
            for key, value in {**meta, "schema_version": SCHEMA_VERSION}.items():
                self._query("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
            self._insert_checkpoint(0, checkpoint)

    def head(self) -> tuple[int, str]:
        with self._lock:
            rows = self._query("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")
        if not rows:
            raise StorageError("the log has no checkpoint: it was never initialized")
        return int(rows[0][0]), str(rows[0][1])

    def checkpoint(self, size: int) -> str | None:
        with self._lock:
            rows = self._query("SELECT note FROM checkpoints WHERE size = ?", (size,))
        return str(rows[0][0]) if rows else None

    def checkpoint_sizes(self) -> list[int]:
        with self._lock:
            return [int(r[0]) for r in self._query("SELECT size FROM checkpoints ORDER BY size")]

    def read_tiles(
        self, keys: Collection[tuple[int, int]]
    ) -> dict[tuple[int, int], tuple[int, bytes]]:
        if not keys:
            return {}
        # OR-ed point conditions: both SQLite and PostgreSQL answer them from the primary key
        # (a row-value IN over VALUES makes SQLite scan the table).
        where = " OR ".join(["(level = ? AND idx = ?)"] * len(keys))
        params = [v for key in keys for v in key]
        sql = f"SELECT level, idx, width, hashes FROM tiles WHERE {where}"  # noqa: S608 - placeholders only
        with self._lock:
            rows = self._query(sql, params)
        return {(int(r[0]), int(r[1])): (int(r[2]), bytes(r[3])) for r in rows}

    _CONTAINS = "instr(hashes, ?) > 0"  # SQLite; PostgreSQL overrides

    def find_leaf_tiles(self, leaf_hash: bytes) -> list[tuple[int, bytes]]:
        # a substring search inside the database (a scan of the level-0 tiles, 8 KiB each)
        sql = f"SELECT idx, hashes FROM tiles WHERE level = 0 AND {self._CONTAINS}"  # noqa: S608
        with self._lock:
            rows = self._query(sql, (leaf_hash,))
        return [(int(r[0]), bytes(r[1])) for r in rows]

    def read_entries(self, start: int, end: int) -> list[bytes]:
        with self._lock:
            rows = self._query(
                "SELECT data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
            )
        return [bytes(r[0]) for r in rows]

    def commit(
        self,
        old_size: int,
        entries: Sequence[bytes],
        tiles: Sequence[TileRow],
        checkpoint: tuple[int, Signing],
    ) -> str:
        size, sign = checkpoint
        note = sign()  # written in the batch's own transaction: signed first
        with self._lock, self._transaction():
            self._write_batch(old_size, entries, tiles, (size, note))
        return note

    def _write_batch(
        self,
        old_size: int,
        entries: Sequence[bytes],
        tiles: Sequence[TileRow],
        checkpoint: tuple[int, str],
    ) -> None:
        """The writes of :meth:`commit`, inside the caller's transaction."""
        current = self._size()
        if current != old_size:
            raise ConflictError(f"the log is at size {current}, not {old_size}: another writer")
        if entries:
            self._insert_entries(old_size, entries)
        if tiles:
            self._upsert_tiles(tiles)
        self._insert_checkpoint(*checkpoint)

    def _size(self) -> int:
        """The size of the latest checkpoint; -1 before the log is initialized."""
        rows = self._query("SELECT MAX(size) FROM checkpoints")
        return int(rows[0][0]) if rows and rows[0][0] is not None else -1

    def _insert_checkpoint(self, size: int, note: str) -> None:
        self._query("INSERT INTO checkpoints (size, note) VALUES (?, ?)", (size, note))
