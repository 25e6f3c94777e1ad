"""Re-review of the SQLite store after the review-5 fixes: one opener at a time holds the
journal's ``flock`` for as long as it is open, and an open's replay does not write again the
records it replays. What that review found, as tests: a failed start must let the directory go,
a replayed record must be durable before its checkpoint is served, and a committed batch must
not be reported failed because the journal could not be emptied."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from verinfer import note
from verinfer.errors import InputError, StorageError
from verinfer.log import Log, journal, sqlite
from verinfer.log.sqlite import FILENAME


def batch(start: int, count: int) -> list[bytes]:
    return [b"receipt-%d" % i for i in range(start, start + count)]


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite, "_OPEN_WAIT", 0.0)


def test_a_node_that_fails_to_start_lets_its_data_directory_go(tmp_path: Path) -> None:
    from verinfer.node.service import Node  # noqa: PLC0415 - the node pulls in the engine

    data = tmp_path / "node"
    with pytest.raises(InputError, match="challenge window"):
        Node(data, window=5)  # refused before anything is opened
    data.mkdir(exist_ok=True)
    (data / "tensors").write_bytes(b"a file where the archive's directory goes")
    with pytest.raises(StorageError, match="tensors"):
        Node(data)  # fails after its log was opened
    (data / "tensors").unlink()
    with Node(data) as node:  # a corrected retry in the same process (a test, an embedder)
        assert node.log.size == 0


def test_a_replayed_record_is_durable_before_its_checkpoint_is_served(
    tmp_path: Path, signer: note.Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "node"
    with Log.open(data, signer) as log:
        log.append(batch(0, 1))
    path = data / "log.journal"
    # a writer wrote its record and was killed before its fdatasync: the bytes are in the page
    # cache, not on the disk; what a power cut keeps of the journal is what was synced
    durable = {"length": path.stat().st_size}
    with path.open("ab") as file:
        file.write(journal.encode(1, [b"written, never synced"]))
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy2(data / FILENAME, cut / FILENAME)  # the tables at size 1, closed cleanly
    inode = path.stat().st_ino
    real_fdatasync, real_fsync = os.fdatasync, os.fsync

    def spying(real: object) -> object:
        def sync(fd: int) -> None:
            real(fd)  # type: ignore[operator]
            status = os.fstat(fd)
            if status.st_ino == inode:
                durable["length"] = status.st_size

        return sync

    monkeypatch.setattr(os, "fdatasync", spying(real_fdatasync))
    monkeypatch.setattr(os, "fsync", spying(real_fsync))
    with Log.open(data, signer) as log:  # the next opener replays it and serves it
        assert log.size == 2
        served = log.signed_checkpoint
        # the power fails while it serves: the tables' unsynced commit and the journal's
        # unsynced bytes are gone
        with path.open("rb") as file:
            (cut / "log.journal").write_bytes(file.read(durable["length"]))
    with Log.open(cut, signer) as log:
        if log.size < 2:
            log.append([b"another batch"])
        assert log.checkpoint_at(2) == served  # else two signed trees of size 2: a fork


def test_a_journal_that_cannot_be_emptied_does_not_fail_a_committed_batch(
    tmp_path: Path, signer: note.Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "MAX_RECORD_BYTES", 16 << 10)
    data = tmp_path / "node"
    large = [b"L" * 20_000]  # a record over MAX_RECORD_BYTES: committed by SQLite itself
    assert journal.size(large) > journal.MAX_RECORD_BYTES
    with Log.open(data, signer) as log:
        log.append(batch(0, 1))  # in the journal
        truncate = os.ftruncate

        def failing(fd: int, length: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "ftruncate", failing)
        try:
            log.append(large)
            answered = True
        except StorageError:
            answered = False
        monkeypatch.setattr(os, "ftruncate", truncate)
        if answered:  # acknowledged: the log goes on
            log.append(batch(2, 1))
            assert log.size == 3
    with Log.open(data, signer) as log:
        # an append that raised committed nothing (Log.append's contract); one that returned
        # is kept
        assert log.size == (3 if answered else 1)
        log.verify()


def test_a_failed_append_whose_bytes_stay_stops_the_writer(
    tmp_path: Path, signer: note.Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "node"
    with Log.open(data, signer) as log:
        log.append(batch(0, 1))
        write, ftruncate = os.write, os.ftruncate

        def short(fd: int, record: bytes) -> int:
            return write(fd, bytes(record)[:7])  # a disk that filled up mid-record

        def failing(fd: int, length: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "write", short)
        monkeypatch.setattr(os, "ftruncate", failing)
        with pytest.raises(StorageError, match="short write"):
            log.append(batch(1, 1))
        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "ftruncate", ftruncate)
        with pytest.raises(StorageError, match="reopen the log"):  # it would land after them
            log.append(batch(1, 1))
    with Log.open(data, signer) as log:  # the torn bytes are cut off; the log goes on
        assert log.size == 1
        log.append(batch(1, 1))
    with Log.open(data, signer) as log:
        assert log.entries(0, 2) == batch(0, 2)
        log.verify()
