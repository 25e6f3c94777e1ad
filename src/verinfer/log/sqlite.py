"""The embedded default: one SQLite file in the node's data directory, and its batch journal.

WAL journal mode, so a reader never sees a half-written batch; ``BEGIN IMMEDIATE`` takes the
writer lock up front. A commit is durable before it returns: a small batch by one synced append
to the batch journal (``log.journal``, see :mod:`verinfer.log.journal`), a large one by SQLite
itself (``synchronous=FULL``).

A small batch is in the tables only a moment later: the commit returns once its journal record
is synced, and a writer thread inserts the batches so far into the tables, in one unsynced
(``synchronous=NORMAL``) transaction, a millisecond later, off the answer path. Until then the
store's reads see them from memory. One opener at a time: the store locks the journal (``flock``)
for as long as it is open, so no other opener can replay, overwrite or cut a record the tables
do not hold yet; a killed process's lock goes with it, and the next opener replays the journal.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from verinfer.errors import ConflictError, StorageError
from verinfer.log import journal
from verinfer.log.store import Signing, SQLStore
from verinfer.log.tiles import TileRow

__all__ = ["FILENAME", "SqliteStore"]

FILENAME = "log.sqlite"
_GATHER = 1e-3  # the table writer waits this long after a commit, to insert what follows with it
_OPEN_WAIT = 5.0  # seconds an opener waits for another (a node restarting) to let the log go
_MAX_PENDING = 256  # batches durable in the journal only: a commit past it writes them itself

_Batch = tuple[int, Sequence[bytes], Sequence[TileRow], tuple[int, str]]

# tiles is a rowid table on purpose: WITHOUT ROWID would keep each ~16 KiB row in its key B-tree,
# whose interior cells then carry kilobytes of payload; a point read measured 36 us that way and
# 11-16 us with the (level, idx) key in a separate small index.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tiles (
    level INTEGER NOT NULL, idx INTEGER NOT NULL, width INTEGER NOT NULL, hashes BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS entries_append_only_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_append_only_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_append_only_update BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_append_only_delete BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS tiles_only_widen BEFORE UPDATE ON tiles WHEN NEW.width <= OLD.width
    BEGIN SELECT RAISE(ABORT, 'tiles only ever widen'); END;
CREATE TRIGGER IF NOT EXISTS tiles_no_delete BEFORE DELETE ON tiles
    BEGIN SELECT RAISE(ABORT, 'tiles are append-only'); END;
"""


class SqliteStore(SQLStore):
    """A log in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        # first: while this opener holds the journal's lock, nobody else touches the log
        self._journal = journal.Journal(self.path.with_suffix(".journal"), wait=_OPEN_WAIT)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 10000")
            # a stored tile is ~16 KiB: one page each, no overflow chains (measured: 1.2-1.4x
            # append throughput over 4 KiB pages). Takes effect when the file is created.
            self._db.execute("PRAGMA page_size = 16384")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)  # durably: the batch journal never holds the schema
            self._db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            self._journal.close()
            raise StorageError(f"cannot open log database {str(self.path)!r}: {exc}") from exc
        self._failed = ""  # set when a synced write or a table write failed: reopen the log
        self._pending: list[_Batch] = []  # durable in the journal, not in the tables (_lock)
        self._changed = threading.Condition(self._lock)
        self._closing = False
        self._writer: threading.Thread | None = None
        try:
            self._unapplied = self._recover()
            self._head = self._size()  # the tables and the pending batches together
        except BaseException:
            self.close()
            raise
        # the journal's batches the log is about to append again: their records are there
        self._replays = deque(start for start, _ in self._unapplied)

    @classmethod
    def in_directory(cls, directory: str | os.PathLike[str]) -> SqliteStore:
        """The log of the data directory ``directory`` (created if missing)."""
        path = Path(directory)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {str(path)!r}: {exc}") from exc
        return cls(path / FILENAME)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.IntegrityError as exc:
            raise ConflictError(f"log database rejected a write: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"log database error: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._query("BEGIN IMMEDIATE")
        try:
            yield
            self._query("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def initialize(self, meta: dict[str, str], checkpoint: str) -> None:
        with self._lock, self._durably():
            super().initialize(meta, checkpoint)
            self._head = 0

    @contextmanager
    def _durably(self) -> Iterator[None]:
        """Commits inside are synced by SQLite itself, with every earlier one."""
        self._query("PRAGMA synchronous = FULL")
        try:
            yield
        finally:
            self._query("PRAGMA synchronous = NORMAL")

    def commit(
        self,
        old_size: int,
        entries: Sequence[bytes],
        tiles: Sequence[TileRow],
        checkpoint: tuple[int, Signing],
    ) -> str:
        size, sign = checkpoint
        length = journal.size(entries)
        with self._lock:
            if self._closing:
                raise StorageError("the log is closed")
            if self._failed:
                raise StorageError(self._failed)
            if self._head != old_size:
                raise ConflictError(f"the log is at size {self._head}, not {old_size}")
            if self._replays and self._replays[0] == old_size:
                # a batch of the journal appended again on open: its record is not written
                # again, and the journal is not emptied before the tables hold every such batch
                self._replays.popleft()
                note = sign()
                if not self._replays:
                    # the last one: all of them into the tables now, synced, before the log
                    # serves their checkpoints (a record read back may never have been synced:
                    # its writer was killed first, or its sync failed)
                    self._pending.append((old_size, list(entries), list(tiles), (size, note)))
                    self._head = size
                    with self._durably():
                        self._write_tables()
                    return note
            elif (
                length > journal.MAX_RECORD_BYTES
                or self._journal.size + length > journal.JOURNAL_BYTES
                or len(self._pending) >= _MAX_PENDING
            ) and not self._replays:
                note = sign()
                self._write_tables()  # the batches before it, in order
                with self._durably(), self._transaction():
                    self._write_batch(old_size, entries, tiles, (size, note))
                self._head = size
                # every batch so far is durable in SQLite now: the journal is emptied (if that
                # fails, the batch is committed all the same: the next open skips the records
                # the tables hold)
                if self._journal.size:
                    with contextlib.suppress(StorageError):
                        self._journal.truncate(0)
                return note
            else:
                note = self._journal_batch(old_size, entries, size, sign)
            self._pending.append((old_size, list(entries), list(tiles), (size, note)))
            self._head = size
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_later, name="verinfer-log-tables", daemon=True
                )
                self._writer.start()
            if len(self._pending) == 1:  # else the writer is gathering them already
                self._changed.notify()
            return note

    def _journal_batch(
        self, old_size: int, entries: Sequence[bytes], size: int, sign: Signing
    ) -> str:
        """Make a batch durable by one synced journal record (under ``_lock``). Its checkpoint
        is signed on another thread meanwhile, and handed out only once the record is synced."""
        try:
            self._journal.append(journal.encode(old_size, entries))
        except StorageError as exc:
            if self._journal.torn:  # a record after the torn bytes would be lost
                self._failed = f"{exc}; reopen the log"
            raise
        try:
            sign.aside()
            self._journal.sync()
        except BaseException as exc:
            # maybe on disk, maybe not: nothing may build on it until the log is reopened,
            # which replays it if it is there
            self._failed = f"{exc or type(exc).__name__}; reopen the log"
            with contextlib.suppress(Exception):
                sign()  # collected all the same, never handed out: the signer is free again
            raise
        try:
            return sign()
        except BaseException as exc:
            # the record is durable and its batch not committed: the open replays it
            self._failed = (
                f"cannot sign the checkpoint of size {size} ({exc or type(exc).__name__}); "
                "reopen the log"
            )
            if not isinstance(exc, Exception):
                raise
            raise StorageError(self._failed) from exc

    def _write_later(self) -> None:
        """The table writer: inserts the journal's batches into the tables, off the answer
        path, a moment after they were committed (with whatever was committed meanwhile)."""
        with self._lock:
            while not self._closing or self._pending:
                if not self._pending:
                    self._changed.wait()
                    continue
                if not self._closing:
                    self._changed.wait(_GATHER)  # releases the lock: commits go on meanwhile
                try:
                    if self._journal.size < journal.ROTATE_BYTES or self._replays:
                        self._write_tables()
                        continue
                    with self._durably():  # every batch so far durable in SQLite: the journal
                        self._write_tables()  # is emptied (a failure: the next open skips it)
                    with contextlib.suppress(StorageError):
                        self._journal.truncate(0)
                except StorageError:
                    return  # the batches stay in memory and in the journal; commits refuse

    def _write_tables(self) -> None:
        """Insert the pending batches into the tables in one transaction (under ``_lock``). On
        failure they stay readable from memory, the journal keeps them for the next open, and
        the store refuses commits until then."""
        if not self._pending:
            return
        batches = list(self._pending)
        try:
            with self._transaction():
                for batch in batches:
                    self._write_batch(*batch)
        except BaseException as exc:
            self._failed = (
                f"cannot write the log's tables ({exc}); the journal keeps the batches: reopen "
                "the log"
            )
            raise StorageError(self._failed) from exc
        del self._pending[: len(batches)]

    # reads see the pending batches too: they are durable, and the log already serves them

    def head(self) -> tuple[int, str]:
        with self._lock:
            return self._pending[-1][3] if self._pending else super().head()

    def checkpoint(self, size: int) -> str | None:
        with self._lock:
            for _, _, _, (issued, note) in self._pending:
                if issued == size:
                    return note
            return super().checkpoint(size)

    def checkpoint_sizes(self) -> list[int]:
        with self._lock:
            return super().checkpoint_sizes() + [batch[3][0] for batch in self._pending]

    def read_tiles(
        self, keys: Collection[tuple[int, int]]
    ) -> dict[tuple[int, int], tuple[int, bytes]]:
        with self._lock:
            found = super().read_tiles(keys)
            if self._pending:
                wanted = set(keys)
                for _, _, tiles, _ in self._pending:  # in order: a later row is wider
                    for level, index, width, hashes in tiles:
                        if (level, index) in wanted:
                            found[level, index] = (width, hashes)
            return found

    def find_leaf_tiles(self, leaf_hash: bytes) -> list[tuple[int, bytes]]:
        with self._lock:
            found = dict(super().find_leaf_tiles(leaf_hash))
            for _, _, tiles, _ in self._pending:
                for level, index, _, hashes in tiles:
                    if level == 0 and leaf_hash in hashes:
                        found[index] = hashes
            return list(found.items())

    def read_entries(self, start: int, end: int) -> list[bytes]:
        with self._lock:
            rows = super().read_entries(start, end)
            for first, entries, _, _ in self._pending:
                low, high = max(start, first), min(end, first + len(entries))
                if low < high:
                    rows.extend(entries[low - first : high - first])
            return rows

    def _recover(self) -> list[tuple[int, list[bytes]]]:
        """The journal's batches that the tables lost (a power cut after an unsynced commit)."""
        with self._lock, self._transaction():  # no writer is between its record and its COMMIT
            head = self._size()
            records = self._journal.read()
        if head < 0:  # a new log: whatever a journal holds belongs to no tree here
            if records:
                raise StorageError(
                    f"{str(self._journal.path)!r} holds batches but the log database is empty"
                )
            return []
        known = head  # one past the last entry the tables or an earlier batch hold
        batches = []
        for start, entries in records:
            end = start + len(entries)
            if start == known:  # beyond what the tables hold: lost there, to be replayed
                batches.append((start, entries))
                known = end
            elif start > known or end > known:
                raise StorageError(
                    f"the log journal's batch [{start}, {end}) does not follow index {known}: "
                    "the journal or the database is corrupt"
                )
            # else applied before (the tables check each entry against its leaf hash on read)
        if batches:  # their writer may have been killed before its sync: synced before served
            self._journal.sync()
        return batches

    def unapplied(self) -> list[tuple[int, list[bytes]]]:
        batches, self._unapplied = self._unapplied, []
        return batches

    def _insert_entries(self, start: int, entries: Sequence[bytes]) -> None:
        rows = list(zip(range(start, start + len(entries)), entries, strict=True))
        self._many("INSERT INTO entries (idx, data) VALUES (?, ?)", rows)

    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self._db.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise ConflictError(f"log database rejected a write: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"log database error: {exc}") from exc

    def close(self) -> None:
        """Insert the pending batches into the tables (the table writer does, then stops), and
        close the database and the journal (which lets the next opener in)."""
        with self._lock:
            self._closing = True
            self._changed.notify_all()
        if self._writer is not None:
            self._writer.join()
        with self._lock:
            self._db.close()
            self._journal.close()
