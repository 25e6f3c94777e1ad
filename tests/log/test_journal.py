"""The SQLite store's batch journal: small batches are durable by one synced append, and a batch
the database lost (a power cut after its unsynced commit) comes back, under the very checkpoint
that was issued for it."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from verinfer import merkle, note
from verinfer.errors import StorageError
from verinfer.log import Log, journal, sqlite
from verinfer.log.sqlite import FILENAME, SqliteStore

DB_FILES = (FILENAME, FILENAME + "-wal")


def batch(start: int, count: int) -> list[bytes]:
    return [b"receipt-%d" % i for i in range(start, start + count)]


def snapshot(data: Path, to: Path) -> None:
    """The database as a power cut would leave it: the files as they were at some point."""
    to.mkdir()
    for name in DB_FILES:
        if (data / name).exists():
            shutil.copy2(data / name, to / name)


def tables(data: Path) -> tuple[int, int]:
    """(entries, checkpoints) the database's tables hold, as another process sees them."""
    db = sqlite3.connect(data / FILENAME)
    try:
        return (
            db.execute("SELECT COUNT(*) FROM entries").fetchone()[0],
            db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0],
        )
    finally:
        db.close()


def restore(snap: Path, data: Path) -> None:
    for name in (*DB_FILES, FILENAME + "-shm"):
        (data / name).unlink(missing_ok=True)
        if (snap / name).exists():
            shutil.copy2(snap / name, data / name)


def test_records_round_trip_and_a_torn_tail_is_never_read() -> None:
    records = [journal.encode(0, batch(0, 3)), journal.encode(3, [b""]), journal.encode(4, [])]
    data = b"".join(records)
    assert journal.parse(data) == ([(0, batch(0, 3)), (3, [b""]), (4, [])], len(data))
    ends = [sum(map(len, records[: i + 1])) for i in range(len(records))]
    for cut in range(len(data)):  # every prefix: only the whole records in it
        whole = sum(end <= cut for end in ends)
        batches, length = journal.parse(data[:cut])
        assert len(batches) == whole
        assert length == (ends[whole - 1] if whole else 0)
    for position in range(len(records[0])):  # any flipped byte ends the journal there
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        assert journal.parse(bytes(flipped))[0] == []


def test_a_batch_the_database_lost_is_replayed_under_the_checkpoint_it_was_issued(
    tmp_path: Path, signer: note.Signer
) -> None:
    data = tmp_path / "node"
    issued: dict[int, str] = {}
    with Log.open(data, signer) as log:
        for count in (3, 1):
            appended = log.append(batch(log.size, count))
            issued[appended.end] = appended.signed_checkpoint
    snapshot(data, tmp_path / "cut")
    with Log.open(data, signer) as log:
        for count in (2, 1, 300, 5):  # 300 entries: across a tile boundary
            appended = log.append(batch(log.size, count))
            issued[appended.end] = appended.signed_checkpoint
        assert log.size == 312
    restore(tmp_path / "cut", data)  # the unsynced commits are gone; the journal is not
    store = SqliteStore.in_directory(data)
    assert store.head()[0] == 4
    store.close()
    with Log.open(data, signer) as log:
        assert log.size == 312
        assert log.entries(0, 312) == batch(0, 312)
        for size, signed in issued.items():  # the same bytes: no conflicting checkpoint exists
            assert log.checkpoint_at(size) == signed
        log.verify()
        assert log.root() == merkle.root(merkle.leaf_hashes(batch(0, 312)))
    with Log.open(data, signer) as log:  # replayed once: a second open finds nothing to do
        assert log.size == 312
        log.append([b"after"])
        assert log.size == 313
        log.verify()


def test_a_torn_record_is_cut_off_and_the_log_goes_on(tmp_path: Path, signer: note.Signer) -> None:
    data = tmp_path / "node"
    with Log.open(data, signer) as log:
        log.append(batch(0, 2))
    whole = (data / "log.journal").stat().st_size
    with (data / "log.journal").open("ab") as handle:  # a write the crash cut short
        handle.write(journal.encode(2, batch(2, 4))[:-5])
    with Log.open(data, signer) as log:
        assert log.size == 2
        assert (data / "log.journal").stat().st_size == whole
        log.append(batch(2, 1))
    with Log.open(data, signer) as log:
        assert log.entries(0, 3) == batch(0, 3)
        log.verify()


def test_a_journal_that_does_not_follow_the_database_is_refused(
    tmp_path: Path, signer: note.Signer
) -> None:
    data = tmp_path / "node"
    with Log.open(data, signer) as log:
        log.append(batch(0, 2))
    with (data / "log.journal").open("ab") as handle:  # a batch at 5: 2, 3 and 4 are nowhere
        handle.write(journal.encode(5, batch(5, 1)))
    with pytest.raises(StorageError, match=r"batch \[5, 6\) does not follow index 2"):
        Log.open(data, signer)
    (data / "log.journal").write_bytes(journal.encode(0, batch(0, 3)))  # straddles the head
    with pytest.raises(StorageError, match=r"batch \[0, 3\) does not follow index 2"):
        Log.open(data, signer)
    other = tmp_path / "empty"
    other.mkdir()
    (other / "log.journal").write_bytes(journal.encode(0, batch(0, 1)))
    with pytest.raises(StorageError, match="holds batches but the log database is empty"):
        Log.open(other, signer)


def test_large_batches_and_a_full_journal_are_made_durable_by_sqlite_itself(
    tmp_path: Path, signer: note.Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "node"
    path = data / "log.journal"
    with Log.open(data, signer) as log:
        log.append(batch(0, 1))
        assert path.stat().st_size > 0
        log.append([b"x" * 65_000] * 17)  # above MAX_RECORD_BYTES (1 MiB): SQLite syncs it
        assert path.stat().st_size == 0  # and every batch before it: the journal is emptied
        monkeypatch.setattr(journal, "JOURNAL_BYTES", 200)
        sizes = []
        for _ in range(12):
            log.append(batch(log.size, 1))
            sizes.append(path.stat().st_size)
        assert max(sizes) <= 200
        assert 0 in sizes[1:]  # it filled up and was emptied again
    with Log.open(data, signer) as log:
        assert log.size == 30
        log.verify()


def test_the_table_writer_empties_a_full_journal_off_the_answer_path(
    tmp_path: Path, signer: note.Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "ROTATE_BYTES", 300)
    monkeypatch.setattr(sqlite, "_GATHER", 0.0)
    data = tmp_path / "node"
    path = data / "log.journal"
    with Log.open(data, signer) as log:
        store = log._store
        assert isinstance(store, SqliteStore)
        durable = store._durably
        emptied = []

        def spied() -> object:
            emptied.append(threading.current_thread().name)
            return durable()

        monkeypatch.setattr(store, "_durably", spied)
        for _ in range(40):
            log.append(batch(log.size, 1))
    # emptied by the writer (as it went, or at the latest when closing), never by a commit
    assert emptied
    assert set(emptied) == {"verinfer-log-tables"}
    assert path.stat().st_size < 300
    with Log.open(data, signer) as log:
        assert log.entries(0, 40) == batch(0, 40)
        log.verify()


def test_batches_are_served_while_only_the_journal_holds_them(
    tmp_path: Path, signer: note.Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "_GATHER", 60.0)  # the table writer waits until close
    data = tmp_path / "node"
    with Log.open(data, signer) as log:
        issued = {}
        for count in (3, 250, 1, 40):  # across the first full tile
            appended = log.append(batch(log.size, count))
            issued[appended.end] = appended.signed_checkpoint
        store = log._store
        assert isinstance(store, SqliteStore)
        assert len(store._pending) == 4  # durable in the journal only
        assert tables(data) == (0, 1)  # no entry, the size-0 checkpoint
        assert log.entries(0, 294) == batch(0, 294)
        assert log.entries(250, 260) == batch(250, 10)
        assert log.checkpoint_sizes() == [0, *issued]
        for size, signed in issued.items():
            assert log.checkpoint_at(size) == signed
        assert log.find(merkle.leaf_hash(b"receipt-255")) == 255
        assert len(log.tile(0, 0)) == 32 * 256  # a full tile that only memory holds
        log.verify()
        leaf = merkle.leaf_hash(b"receipt-7")
        checkpoint, _ = note.verify_checkpoint(log.signed_checkpoint, [signer.vkey])
        merkle.verify_inclusion(leaf, 7, 294, log.inclusion_proof(7, 294), checkpoint.root)
    assert tables(data) == (294, 5)  # closing inserted them
    with Log.open(data, signer) as log:
        assert log.size == 294
        log.verify()


def test_a_killed_writer_keeps_every_batch_it_answered(
    tmp_path: Path, signer: note.Signer, log_key: tuple[str, str]
) -> None:
    data = tmp_path / "node"
    script = (
        "import os, sys\n"
        "from verinfer import note\n"
        "from verinfer.log import Log, sqlite\n"
        "sqlite._GATHER = 60.0\n"
        "log = Log.open(sys.argv[1], note.Signer(sys.argv[2]))\n"
        "for count in (2, 1, 300):\n"
        "    log.append([b'receipt-%d' % i for i in range(log.size, log.size + count)])\n"
        "print(log.signed_checkpoint, end='', flush=True)\n"
        "os._exit(0)  # as a kill: the table writer never ran\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(data), log_key[0]],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert tables(data) == (0, 1)
    with Log.open(data, signer) as log:
        assert log.size == 303
        assert log.signed_checkpoint == child.stdout  # replayed, the very note it answered with
        assert log.entries(0, 303) == batch(0, 303)
        log.verify()


def test_a_failed_table_write_loses_no_answered_batch(
    tmp_path: Path, signer: note.Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "node"
    with Log.open(data, signer) as log:
        log.append(batch(0, 1))
        store = log._store
        assert isinstance(store, SqliteStore)
        query = store._query

        def failing_commit(sql: str, params: object = ()) -> list[tuple[object, ...]]:
            if sql == "COMMIT":
                raise StorageError("log database error: disk I/O error")
            return query(sql, params)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "_query", failing_commit)
        answered = log.append(batch(1, 2))  # durable in the journal: answered
        deadline = time.monotonic() + 10
        while not store._failed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "cannot write the log's tables" in store._failed
        monkeypatch.setattr(store, "_query", query)
        assert log.entries(0, 3) == batch(0, 3)  # still served
        with pytest.raises(StorageError, match="reopen the log"):  # nothing builds on it
            log.append(batch(3, 1))
        monkeypatch.setattr(sqlite, "_OPEN_WAIT", 0.0)
        with pytest.raises(StorageError, match="open elsewhere"):  # nor another opener
            Log.open(data, signer)
    with Log.open(data, signer) as log:  # the journal brings it back, under the same note
        assert log.size == 3
        assert log.checkpoint_at(3) == answered.signed_checkpoint
        log.append(batch(3, 1))
        log.verify()


def test_a_failed_sync_stops_the_writer_until_the_log_is_reopened(
    tmp_path: Path, signer: note.Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "node"
    with Log.open(data, signer) as log:
        log.append(batch(0, 1))
        sync = os.fdatasync

        def failing(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", failing)
        before = log.signed_checkpoint
        with pytest.raises(StorageError, match="cannot sync the log journal"):
            log.append(batch(1, 1), waited=True)  # its note, signed aside: never handed out
        assert (log.size, log.signed_checkpoint) == (1, before)
        monkeypatch.setattr(os, "fdatasync", sync)
        with pytest.raises(StorageError, match="reopen the log"):  # nothing builds on it
            log.append(batch(1, 1))
        assert log.size == 1
    with Log.open(data, signer) as log:  # the record reached the file: replayed, consistent
        assert log.size == 2
        log.append(batch(2, 1))
        log.verify()


class WatchedSigner(note.Signer):
    """A signer that records, for each note it signs, its thread and whether a journal sync was
    in progress; ``fail`` makes the next signature raise."""

    def __init__(self, skey: str) -> None:
        super().__init__(skey)
        self.syncing = False
        self.signed: list[tuple[str, bool]] = []
        self.fail = False

    def sign(self, text: str) -> str:
        if self.fail:
            self.fail = False
            raise MemoryError("no memory for the signature")
        self.signed.append((threading.current_thread().name, self.syncing))
        return super().sign(text)


def watch_syncs(
    monkeypatch: pytest.MonkeyPatch, signer: WatchedSigner, log: Log
) -> Callable[[], list[tuple[int, bool]]]:
    """Mark ``signer`` as syncing during each ``fdatasync``, which first waits for a signature
    handed aside (if any), then has another thread read the store's head. Returns what the
    readers saw, once they are done: the size each got, and whether the sync had returned."""
    sync = os.fdatasync
    seen: list[tuple[int, bool]] = []
    readers: list[threading.Thread] = []

    def read() -> None:
        seen.append((log._store.head()[0], not signer.syncing))

    def watched(fd: int) -> None:
        signer.syncing = True
        try:
            deadline = time.monotonic() + 10
            while log._signing._owed and not log._signing._notes.qsize():
                assert time.monotonic() < deadline, "the note handed aside was never signed"
                time.sleep(0.001)
            readers.append(threading.Thread(target=read))
            readers[-1].start()
            time.sleep(0.01)  # its chance to read while the record is not yet durable
            sync(fd)
        finally:
            signer.syncing = False

    def served() -> list[tuple[int, bool]]:
        for reader in readers:
            reader.join(10)
        return seen

    monkeypatch.setattr(os, "fdatasync", watched)
    return served


def test_a_lone_entry_is_signed_while_its_record_syncs_and_served_only_after(
    tmp_path: Path, log_key: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = WatchedSigner(log_key[0])
    with Log.open(tmp_path / "node", signer) as log:
        served = watch_syncs(monkeypatch, signer, log)
        signer.signed.clear()
        lone = log.append(batch(0, 1), waited=True)
        assert signer.signed == [("verinfer-log-signer", True)]  # aside, during the sync
        # signed, not served: a reader during the sync gets the new head only once it returned
        assert served() in ([(0, False)], [(1, True)])
        assert log.signed_checkpoint == lone.signed_checkpoint
        note.verify_checkpoint(lone.signed_checkpoint, [signer.vkey])
        several = log.append(batch(1, 5))  # nobody waits alone: signed by this thread
        assert signer.signed[1] == (threading.current_thread().name, False)
        assert served()[1] in ((1, False), (6, True))
        checkpoint, _ = note.verify_checkpoint(several.signed_checkpoint, [signer.vkey])
        assert checkpoint.size == 6
        log.verify()
    assert not [t for t in threading.enumerate() if t.name == "verinfer-log-signer"]  # closed


def test_a_signature_that_fails_aside_stops_the_log_until_it_is_reopened(
    tmp_path: Path, log_key: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = WatchedSigner(log_key[0])
    data = tmp_path / "node"
    with Log.open(data, signer) as log:
        log.append(batch(0, 1))
        before = log.signed_checkpoint
        signer.fail = True
        with pytest.raises(StorageError, match=r"cannot sign the checkpoint of size 2 .*reopen"):
            log.append(batch(1, 1), waited=True)
        assert (log.size, log.signed_checkpoint) == (1, before)  # nothing of it handed out
        with pytest.raises(StorageError, match="reopen the log"):  # nothing builds on it
            log.append(batch(1, 1))
    with Log.open(data, note.Signer(log_key[0])) as log:  # its record is durable: replayed
        assert log.size == 2
        assert log.entries(0, 2) == batch(0, 2)
        log.append(batch(2, 1))
        log.verify()
