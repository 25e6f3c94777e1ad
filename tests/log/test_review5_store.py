"""Review 5 of the SQLite store's table writer: what its findings showed, as tests.

A commit returns once its journal record is synced; the tables get the batch a moment later. An
acknowledged batch that only the journal holds must survive anything: a failed table write, a
kill before the table writer ran, another opener, a kill in the middle of the replay. The first
design guarded it with SQLite's writer lock, which a failed write or a kill released while the
journal alone held the batch: another opener then signed a different tree of the same size (a
fork), or missed the batch. Now one opener at a time holds the journal's lock for as long as it is
open, and an opener reads the whole journal under that lock.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from verinfer import note
from verinfer.errors import StorageError
from verinfer.log import Log, journal, sqlite

# the child opens the log, appends one batch (the table writer kept waiting, as if the process
# were killed in the millisecond before it runs), prints the checkpoint it answered with, dies
_CHILD = (
    "import os, sys\n"
    "from verinfer import note\n"
    "from verinfer.log import Log, sqlite\n"
    "sqlite._GATHER = 60.0\n"
    "sqlite._OPEN_WAIT = 0.0\n"
    "log = Log.open(sys.argv[1], note.Signer(sys.argv[2]))\n"
    "log.append([b'acknowledged'])\n"
    "print(log.signed_checkpoint, end='', flush=True)\n"
    "os._exit(0)\n"
)


def _acknowledge_and_die(data: Path, skey: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CHILD, str(data), skey],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite, "_OPEN_WAIT", 0.0)


def test_one_opener_at_a_time_and_a_killed_one_lets_the_next_replay(
    tmp_path: Path, signer: note.Signer, log_key: tuple[str, str]
) -> None:
    data = tmp_path / "node"
    with Log.open(data, signer) as first:
        first.append([b"first"])
        refused = _acknowledge_and_die(data, log_key[0])  # another process, while it is open
        assert refused.returncode != 0
        assert "open elsewhere" in refused.stderr
        with pytest.raises(StorageError, match="open elsewhere"):
            Log.open(data, signer)  # a second log of this process too
        assert first.size == 1
    killed = _acknowledge_and_die(data, log_key[0])  # closed: the child gets in, then dies
    assert killed.returncode == 0, killed.stderr
    with Log.open(data, signer) as log:  # its lock died with it; its batch is replayed
        assert log.size == 2
        assert log.signed_checkpoint == killed.stdout
        log.verify()


def test_verify_passes_while_a_batch_is_committed_during_it(
    tmp_path: Path, signer: note.Signer
) -> None:
    with Log.open(tmp_path / "node", signer) as log:
        log.append([b"a", b"b", b"c"])
        sizes = log.checkpoint_sizes

        def with_a_commit_meanwhile() -> list[int]:
            log.append([b"d"])  # another thread's commit, between size and checkpoint_sizes
            return sizes()

        log.checkpoint_sizes = with_a_commit_meanwhile  # type: ignore[method-assign]
        log.verify()
        log.checkpoint_sizes = sizes  # type: ignore[method-assign]
        log.verify()


def test_a_replay_killed_midway_keeps_the_batches_it_had_not_replayed(
    tmp_path: Path, signer: note.Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "JOURNAL_BYTES", 1 << 20)  # small: a quick test
    monkeypatch.setattr(journal, "ROTATE_BYTES", 1 << 30)  # the writer leaves it full
    data = tmp_path / "node"
    entry = b"r" * 15000  # one batch: a 15 KiB record, under MAX_RECORD_BYTES
    count = (journal.JOURNAL_BYTES - 1) // journal.size([entry])  # a journal just under 1 MiB
    with Log.open(data, signer) as log:
        lost = tmp_path / "power-cut"  # the tables as a power cut leaves them: no batch yet
        lost.mkdir()
        for name in ("log.sqlite", "log.sqlite-wal"):
            if (data / name).exists():
                shutil.copy2(data / name, lost / name)
        for _ in range(count):
            answered = log.append([entry]).signed_checkpoint  # each one synced in the journal
    for name in ("log.sqlite", "log.sqlite-wal", "log.sqlite-shm"):
        (data / name).unlink(missing_ok=True)
        if (lost / name).exists():
            shutil.copy2(lost / name, data / name)
    appended = []
    append = Log.append

    def killed_midway(self: Log, entries: list[bytes], **options: bool) -> object:
        if len(appended) == count // 2:
            raise KeyboardInterrupt("killed here")  # as os._exit: nothing after it runs
        appended.append(entries)
        return append(self, entries, **options)

    monkeypatch.setattr(Log, "append", killed_midway)
    with pytest.raises(KeyboardInterrupt, match="killed here"):
        Log.open(data, signer)  # replays half, then dies
    monkeypatch.setattr(Log, "append", append)
    with Log.open(data, signer) as log:
        assert log.size == count
        assert log.signed_checkpoint == answered
        log.append([entry])  # the journal is full: this one empties it, after the tables
        assert (data / "log.journal").stat().st_size == 0
    with Log.open(data, signer) as log:
        assert log.size == count + 1
        log.verify()


def test_an_append_after_close_is_a_storage_error(tmp_path: Path, signer: note.Signer) -> None:
    log = Log.open(tmp_path / "node", signer)
    log.append([b"a"])
    log.close()
    with pytest.raises(StorageError, match="closed"):
        log.append([b"b"])


def test_a_failed_sync_keeps_the_log_locked_until_closed_and_reopened(
    tmp_path: Path, signer: note.Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "node"
    with Log.open(data, signer) as log:
        sync = os.fdatasync

        def failing(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", failing)
        with pytest.raises(StorageError, match="cannot sync the log journal"):
            log.append([b"maybe"])
        monkeypatch.setattr(os, "fdatasync", sync)
        with pytest.raises(StorageError, match="reopen the log"):
            log.append([b"after"])
    with Log.open(data, signer) as other:  # e.g. the replacement node: it replays the record
        assert other.entries(0, other.size) in ([], [b"maybe"])
        other.verify()
