"""Review 6: attacks on the lone entry's checkpoint signed aside while its journal record syncs
(``_Signing`` in verinfer.log.core, ``SqliteStore._journal_batch``).

A lone durable answer's commit (``Log.append(waited=True)``) writes its journal record, hands
the signature to the log's signer thread, syncs, then collects the note. Anything that escapes
between the record and the collection other than a ``StorageError`` (a Ctrl-C in the committing
thread, the signer thread failing to start) leaves the record in the journal while the store
goes on committing at the same index, and leaves the note it never collected for the next
commit to pick up.
"""

from __future__ import annotations

import inspect
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

import pytest

from verinfer import merkle, note
from verinfer.errors import StorageError
from verinfer.log import Appended, Log, core
from verinfer.log.sqlite import FILENAME, SqliteStore
from verinfer.log.store import Signing
from verinfer.log.tiles import TileRow

DB_FILES = (FILENAME, FILENAME + "-wal")
WAIT = 10.0  # seconds before a test calls a thread hung


def snapshot(data: Path, to: Path) -> None:
    """The database files as a power cut would leave them (the journal is not copied)."""
    to.mkdir()
    for name in DB_FILES:
        if (data / name).exists():
            shutil.copy2(data / name, to / name)


def restore(snap: Path, data: Path) -> None:
    for name in (*DB_FILES, FILENAME + "-shm"):
        (data / name).unlink(missing_ok=True)
        if (snap / name).exists():
            shutil.copy2(snap / name, data / name)


def covers(signed: str, vkey: str, entries: list[bytes]) -> bool:
    """Whether ``signed`` is a checkpoint of exactly the tree of ``entries``."""
    checkpoint, _ = note.verify_checkpoint(signed, [vkey])
    return checkpoint.size == len(entries) and checkpoint.root == merkle.root(
        merkle.leaf_hashes(entries)
    )


_COLLECT_LINE = next(
    start + offset
    for lines, start in [inspect.getsourcelines(core._Signing.__call__)]
    for offset, line in enumerate(lines)
    if "self._notes.get()" in line
)


def _collecting(frame: FrameType | None) -> bool:
    """Whether ``frame`` (a thread's innermost) waits for a note signed aside."""
    return (
        frame is not None
        and frame.f_code is core._Signing.__call__.__code__
        and frame.f_lineno == _COLLECT_LINE
    )


class CtrlC(note.Signer):
    """A signer that, once armed, presses Ctrl-C while the main thread waits for the note it
    signs aside, and hands the note over only once the interrupt was raised there."""

    def __init__(self, skey: str) -> None:
        super().__init__(skey)
        self.armed = False
        self.interrupted = threading.Event()

    def sign(self, text: str) -> str:
        if self.armed and threading.current_thread() is not threading.main_thread():
            self.armed = False
            main = threading.main_thread().ident
            assert main is not None
            deadline = time.monotonic() + WAIT
            while not _collecting(sys._current_frames().get(main)):
                assert time.monotonic() < deadline, "the committing thread never collected"
                time.sleep(0.001)
            time.sleep(0.05)  # into the queue's blocking wait, which a signal interrupts
            signal.pthread_kill(main, signal.SIGINT)
            assert self.interrupted.wait(WAIT), "the Ctrl-C never reached the committer"
        return super().sign(text)


@pytest.fixture
def ctrl_c(log_key: tuple[str, str]) -> Iterator[CtrlC]:
    signer = CtrlC(log_key[0])

    def pressed(signum: int, frame: FrameType | None) -> None:
        signer.interrupted.set()
        raise KeyboardInterrupt("Ctrl-C while the note was collected")

    previous = signal.signal(signal.SIGINT, pressed)
    try:
        yield signer
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_while_the_note_is_collected_never_forks_the_log(
    tmp_path: Path, ctrl_c: CtrlC
) -> None:
    """The lone entry's record is synced, its note not yet collected, when Ctrl-C stops the
    committing thread. The store is not marked failed, so the next batch is journaled at the
    same index and its checkpoint handed out; a power cut that loses the unsynced tables then
    makes the open replay the interrupted batch: a second tree of that size, signed."""
    data = tmp_path / "node"
    with Log.open(data, ctrl_c) as log:
        log.append([b"first"])
    snapshot(data, tmp_path / "cut")  # the tables as a power cut leaves them: size 1
    handed: dict[int, str] = {}
    with Log.open(data, ctrl_c) as log:
        ctrl_c.armed = True
        with pytest.raises(KeyboardInterrupt, match="Ctrl-C while the note was collected"):
            log.append([b"interrupted answer"], waited=True)
        assert log.size == 1
        served = _attempt(log, [b"served answer"], waited=False)
        if isinstance(served, StorageError):  # refused until reopened: fine
            assert "reopen the log" in str(served)
        else:  # whatever it hands out must stand
            handed[served.end] = served.signed_checkpoint
    restore(tmp_path / "cut", data)  # power cut: the journal was synced, the tables were not
    with Log.open(data, ctrl_c) as log:  # disarmed: an ordinary signer now
        for size, signed in handed.items():
            assert log.checkpoint_at(size) == signed, (
                f"two trees of size {size} signed: {signed!r} was handed out, the reopened log "
                f"says {log.checkpoint_at(size)!r}"
            )
        log.verify()


def test_a_ctrl_c_while_the_note_is_collected_leaves_no_stale_note_for_the_next_batch(
    tmp_path: Path, ctrl_c: CtrlC
) -> None:
    """The interrupted commit's note stays in the signer's queue (``_owed`` was cleared before
    the wait), so the next lone commit collects it: the checkpoint handed out for the new batch
    is the interrupted batch's tree, not the log's."""
    with Log.open(tmp_path / "node", ctrl_c) as log:
        log.append([b"first"])
        ctrl_c.armed = True
        with pytest.raises(KeyboardInterrupt, match="Ctrl-C while the note was collected"):
            log.append([b"interrupted answer"], waited=True)
        appended = _attempt(log, [b"next answer"])
        if isinstance(appended, StorageError):  # refused until reopened: fine
            assert "reopen the log" in str(appended)
            return
        assert covers(appended.signed_checkpoint, ctrl_c.vkey, [b"first", b"next answer"]), (
            f"handed out for [first, next answer]: {appended.signed_checkpoint!r}"
        )
        assert log.signed_checkpoint == appended.signed_checkpoint


def test_a_signer_thread_that_cannot_start_neither_hangs_later_commits_nor_breaks_close(
    tmp_path: Path, signer: note.Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``threading.Thread.start`` fails once (``can't start new thread``: a node at its thread
    limit). Before the fix, ``_Signing.aside`` had already kept the unstarted thread, so the next
    lone commit queued its signature for a thread that never ran and waited for the note forever
    (holding the log's and the store's locks), and ``Log.close`` raised from ``join`` before it
    closed the store, which kept the journal's lock. Now the commit signs on its own thread."""
    data = tmp_path / "node"
    log = Log.open(data, signer)
    try:
        log.append([b"first"])
        start = threading.Thread.start

        def no_signer_thread(self: threading.Thread) -> None:
            if self.name == "verinfer-log-signer":
                raise RuntimeError("can't start new thread")
            start(self)

        monkeypatch.setattr(threading.Thread, "start", no_signer_thread)
        alone = log.append([b"no thread"], waited=True)  # signed here instead
        note.verify_checkpoint(alone.signed_checkpoint, [signer.vkey])
        assert not [t for t in threading.enumerate() if t.name == "verinfer-log-signer"]
        monkeypatch.setattr(threading.Thread, "start", start)  # threads start again
        outcome: list[object] = []
        later = threading.Thread(
            target=lambda: outcome.append(_attempt(log, [b"later"])), daemon=True
        )
        later.start()
        later.join(WAIT)
        hung = later.is_alive()
        if hung:  # release it (its commit then fails): it holds the locks close() needs
            log._signing._notes.put(RuntimeError("released by the test"))
            later.join(WAIT)
        assert not hung, "a lone commit after the failed thread start never returned"
        assert outcome, "the later commit returned nothing"
        assert isinstance(outcome[0], Appended), outcome
    finally:
        try:
            log.close()  # must close the store (and let the next opener in), not raise
        except BaseException:
            log._store.close()  # the test's own cleanup: the journal's lock goes
            raise
    with Log.open(data, signer) as reopened:
        reopened.verify()


def _attempt(log: Log, entries: list[bytes], *, waited: bool = True) -> Appended | StorageError:
    """The append's outcome: the batch committed, or the store's refusal."""
    try:
        return log.append(entries, waited=waited)
    except StorageError as exc:
        return exc


class AsideTwice(SqliteStore):
    """A store that hands the signature aside twice before its sync (say, one call per file it
    syncs): :class:`Signing` says ``aside`` means "sign on another thread from now on", so a
    second call should change nothing."""

    def commit(
        self,
        old_size: int,
        entries: Sequence[bytes],
        tiles: Sequence[TileRow],
        checkpoint: tuple[int, Signing],
    ) -> str:
        size, sign = checkpoint

        class Twice:
            def aside(self) -> None:
                sign.aside()
                sign.aside()

            def __call__(self) -> str:
                return sign()

        return super().commit(old_size, entries, tiles, (size, Twice()))


def test_a_store_that_hands_the_signature_aside_twice_gets_no_stale_note(
    tmp_path: Path, signer: note.Signer
) -> None:
    """The second ``aside`` queues a second signature of the same text, which nobody collects:
    the next lone commit collects it instead of its own, and the log hands out (and stores)
    the previous checkpoint for its new tree."""
    with Log(AsideTwice.in_directory(tmp_path / "node"), signer) as log:
        first = log.append([b"one"], waited=True)
        assert covers(first.signed_checkpoint, signer.vkey, [b"one"])
        second = log.append([b"two"], waited=True)
        assert covers(second.signed_checkpoint, signer.vkey, [b"one", b"two"]), (
            f"handed out for [one, two]: {second.signed_checkpoint!r}"
        )


class HeldPuts:
    """The signer's job queue, with a pause between ``aside``'s check of ``_closed`` and its
    ``put``: the window in which a concurrent ``Log.close`` stops the signer thread."""

    def __init__(self, jobs: object) -> None:
        self._jobs = jobs
        self.in_put = threading.Event()
        self.go = threading.Event()

    def put(self, item: str | None) -> None:
        if item is not None and not self.go.is_set():
            self.in_put.set()
            self.go.wait(WAIT)
        self._jobs.put(item)  # type: ignore[attr-defined]

    def get(self) -> str | None:
        return self._jobs.get()  # type: ignore[attr-defined,no-any-return]


def test_close_during_a_lone_commit_neither_hangs_it_nor_itself(
    tmp_path: Path, signer: note.Signer
) -> None:
    """A node shutting down while a lone answer commits: ``Log.close`` stops the signer thread
    between ``aside``'s ``_closed`` check and its ``put``. The commit then waits forever for a
    note nobody signs, holding the store's lock, and ``close`` waits forever for that lock."""
    log = Log.open(tmp_path / "node", signer)
    log.append([b"warm"], waited=True)  # the signer thread runs
    held = HeldPuts(log._signing._jobs)
    log._signing._jobs = held  # type: ignore[assignment]
    outcome: list[object] = []
    committer = threading.Thread(
        target=lambda: outcome.append(_attempt(log, [b"lone"])), daemon=True
    )
    committer.start()
    assert held.in_put.wait(WAIT)
    closer = threading.Thread(target=log.close, daemon=True)
    closer.start()
    deadline = time.monotonic() + 1.0  # a fixed close may rather wait for the commit
    thread = log._signing._thread
    while thread is not None and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)  # the closer stopped the signer thread
    held.go.set()
    committer.join(WAIT)
    closer.join(WAIT)
    hung = [t.name for t in (committer, closer) if t.is_alive()]
    if hung:  # release them: the commit's note, then the close behind it
        log._signing._notes.put(RuntimeError("released by the test"))
        committer.join(WAIT)
        closer.join(WAIT)
    assert not hung, f"hung after close() during a lone commit: {hung}"


class ReturnsNothing(SqliteStore):
    """A store wrapper written against the old ``Store.commit`` (``checkpoint: (size, note)``,
    returns ``None``): it passes the checkpoint on and returns nothing, as every wrapper of
    ``commit`` (tracing, metrics) did before this change."""

    def commit(  # type: ignore[override]
        self,
        old_size: int,
        entries: Sequence[bytes],
        tiles: Sequence[TileRow],
        checkpoint: tuple[int, Signing],
    ) -> None:
        super().commit(old_size, entries, tiles, checkpoint)


def test_a_store_that_returns_no_note_is_refused_not_served(
    tmp_path: Path, signer: note.Signer
) -> None:
    """``Log`` hands out whatever ``Store.commit`` returns, unchecked: a public ``Store``
    written for the old interface makes the log serve ``None`` as its signed checkpoint."""
    with Log(ReturnsNothing.in_directory(tmp_path / "node"), signer) as log:
        appended = _attempt(log, [b"one"])
        if isinstance(appended, StorageError):  # a clear refusal is fine
            assert "note" in str(appended)
            return
        assert isinstance(appended.signed_checkpoint, str), appended
        assert covers(appended.signed_checkpoint, signer.vkey, [b"one"])
        assert log.signed_checkpoint == appended.signed_checkpoint
