"""Review 5c, of the journal's rotation: the table writer commits synced and empties the
journal once it holds ``ROTATE_BYTES``. Nothing here failed: these tests pin what held. A power
cut around the rotation (the journal keeps what was fdatasync'ed, SQLite what a synced commit
made durable) loses no acknowledged batch and forks no size, and a record the journal cuts at
open was never acknowledged."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from verinfer import note
from verinfer.log import Log, journal, sqlite
from verinfer.log.sqlite import FILENAME, SqliteStore


def batch(start: int, count: int) -> list[bytes]:
    return [b"receipt-%d-" % i + b"r" * 40 for i in range(start, start + count)]


def test_a_power_cut_around_the_writers_rotation_keeps_every_acknowledged_batch(
    tmp_path: Path, signer: note.Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "ROTATE_BYTES", 700)  # a rotation every few batches
    monkeypatch.setattr(sqlite, "_GATHER", 0.0)
    data = tmp_path / "node"
    path = data / "log.journal"
    synced: dict[str, bytes] = {}  # what a power cut keeps: the journal at its last sync,
    durable: dict[str, bytes] = {}  # and SQLite's files at its last synced commit
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        if os.fstat(fd).st_ino == path.stat().st_ino:
            synced["journal"] = path.read_bytes()

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    cuts = []
    rotations: list[int] = []
    acknowledged: dict[int, str] = {}
    with Log.open(data, signer) as log:
        store = log._store
        assert isinstance(store, SqliteStore)
        real_durably = store._durably

        @contextmanager
        def spied() -> Iterator[None]:
            with real_durably():
                yield
            rotations.append(len(acknowledged))
            for name in (FILENAME, FILENAME + "-wal"):  # synced: the WAL holds every commit
                file = data / name
                durable[name] = file.read_bytes() if file.exists() else b""

        monkeypatch.setattr(store, "_durably", spied)
        with spied():  # the schema and the empty checkpoint were committed synced on open
            pass
        rotations.clear()
        for _ in range(60):
            count = 1 + log.size % 3
            appended = log.append(batch(log.size, count))
            acknowledged[appended.end] = appended.signed_checkpoint
            if log.size % 7 == 0:  # the power fails here: what the disk holds now
                cuts.append((dict(synced), dict(durable), dict(acknowledged)))
        assert len(rotations) > 5  # the writer rotated again and again
    for number, (journal_bytes, tables, served) in enumerate(cuts):
        copy = tmp_path / f"cut{number}"
        copy.mkdir()
        for name, content in tables.items():
            (copy / name).write_bytes(content)
        (copy / "log.journal").write_bytes(journal_bytes.get("journal", b""))
        with Log.open(copy, signer) as log:
            assert log.size >= max(served)  # nothing acknowledged is lost
            for size, signed in served.items():  # and no size has another tree
                assert log._store.checkpoint(size) == signed
            appended = log.append(batch(log.size, 1))
            assert appended.start == max(served)
        shutil.rmtree(copy)


def test_a_torn_record_of_a_mebibyte_is_cut_at_open_and_the_log_goes_on(
    tmp_path: Path, signer: note.Signer
) -> None:
    data = tmp_path / "node"
    with Log.open(data, signer) as log:
        log.append(batch(0, 2))
    path = data / "log.journal"
    whole = path.stat().st_size
    entries = [bytes([i]) * 0xFFFF for i in range(15)]  # u16 lengths at their largest
    record = journal.encode(2, entries)
    assert len(record) <= journal.MAX_RECORD_BYTES  # a record the journal path takes
    with path.open("ab") as file:  # killed mid-write: never synced, never acknowledged
        file.write(record[: len(record) // 2])
    with Log.open(data, signer) as log:
        assert log.size == 2
        assert path.stat().st_size == whole  # the torn tail is cut off
        appended = log.append(entries)  # and the same batch goes through the journal whole
        assert path.stat().st_size == whole + len(record)
    with Log.open(data, signer) as log:
        assert log.entries(2, 17) == entries
        assert log.signed_checkpoint == appended.signed_checkpoint
