"""Group commit: concurrent entries share checkpoints, a lone entry waits for nobody."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from verinfer import merkle, note
from verinfer.errors import InputError, StorageError
from verinfer.log import Log
from verinfer.log.sequencer import Committed, Sequencer


def test_a_lone_entry_is_committed_and_proven(tmp_path: Path, signer: note.Signer) -> None:
    with Log.open(tmp_path, signer) as log, Sequencer(log) as sequencer:
        committed = sequencer.append(b"alone", timeout=30)
        assert (committed.index, committed.size) == (0, 1)
        checkpoint, _ = note.verify_checkpoint(committed.signed_checkpoint, [signer.vkey])
        merkle.verify_inclusion(
            merkle.leaf_hash(b"alone"), 0, checkpoint.size, committed.proof, checkpoint.root
        )
        assert sequencer.commits == 1


def test_concurrent_entries_share_checkpoints(log_location: str, signer: note.Signer) -> None:
    """64 threads x 20 entries: every entry lands once, is proven, and commits are shared."""
    results: dict[bytes, tuple[int, int, str, list[bytes]]] = {}
    lock = threading.Lock()
    with Log.open(log_location, signer) as log, Sequencer(log) as sequencer:
        barrier = threading.Barrier(64)

        def worker(number: int) -> None:
            barrier.wait()
            for i in range(20):
                entry = b"entry %d/%d" % (number, i)
                done = sequencer.append(entry, timeout=60)
                with lock:
                    results[entry] = (done.index, done.size, done.signed_checkpoint, done.proof)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 64 * 20
        assert sorted(r[0] for r in results.values()) == list(range(64 * 20))
        assert sequencer.commits < 64 * 20 / 2  # entries really did share commits
        for entry, (index, size, signed, proof) in results.items():
            checkpoint, _ = note.verify_checkpoint(signed, [signer.vkey])
            assert checkpoint.size == size > index
            merkle.verify_inclusion(merkle.leaf_hash(entry), index, size, proof, checkpoint.root)
            assert log.entry(index) == entry
        log.verify()


def test_close_commits_what_is_queued_and_refuses_more(tmp_path: Path, signer: note.Signer) -> None:
    with Log.open(tmp_path, signer) as log:
        sequencer = Sequencer(log)
        futures = [sequencer.submit(b"queued %d" % i) for i in range(100)]
        sequencer.close()
        assert all(f.done() for f in futures)
        assert log.size == 100
        with pytest.raises(StorageError, match="closed"):
            sequencer.submit(b"late")


def test_a_bad_entry_is_refused_before_it_can_join_a_batch(
    tmp_path: Path, signer: note.Signer
) -> None:
    with Log.open(tmp_path, signer) as log, Sequencer(log) as sequencer:
        with pytest.raises(InputError, match="at most 65535"):
            sequencer.submit(b"x" * 70_000)
        assert sequencer.append(b"fine", timeout=30).index == 0


def test_a_failed_commit_fails_its_callers_and_the_next_one_works(
    tmp_path: Path, signer: note.Signer
) -> None:
    with Log.open(tmp_path, signer) as log, Sequencer(log) as sequencer:
        real_append = log.append
        calls = []

        def failing_once(entries: list[bytes], **options: bool) -> object:
            calls.append(len(entries))
            if len(calls) == 1:
                raise StorageError("disk full")
            return real_append(entries, **options)

        log.append = failing_once  # type: ignore[assignment,method-assign]
        with pytest.raises(StorageError, match="disk full"):
            sequencer.append(b"first", timeout=30)
        assert sequencer.append(b"second", timeout=30).index == 0  # nothing of "first" remains
        assert log.size == 1


def test_callbacks_get_each_outcome_and_a_hook_ends_each_batch(
    tmp_path: Path, signer: note.Signer
) -> None:
    with Log.open(tmp_path, signer) as log, Sequencer(log) as sequencer:
        events: list[object] = []
        done = threading.Event()
        sequencer.after_each_batch(lambda: events.append("batch"))

        def broken(outcome: object) -> None:
            raise RuntimeError("a caller's bug")

        def record(outcome: object) -> None:
            events.append(outcome)
            if len([e for e in events if isinstance(e, Committed)]) == 20:
                done.set()

        for k in range(20):
            sequencer.enqueue(b"entry %d" % k, broken if k == 3 else record)
            if k == 3:
                sequencer.enqueue(b"after the broken one", record)
        assert done.wait(30)
        sequencer.close()  # joins the committer: every hook has run
        committed = [e for e in events if isinstance(e, Committed)]
        assert sorted(c.index for c in committed) == [k for k in range(21) if k != 3]
        assert events[-1] == "batch"  # the hook ran after its batch's callbacks
        assert events.count("batch") == sequencer.commits
        assert {log.entry(c.index) for c in committed} == {
            b"entry %d" % k for k in range(20) if k != 3
        } | {b"after the broken one"}


def test_callers_may_commit_on_their_own_thread(tmp_path: Path, signer: note.Signer) -> None:
    with Log.open(tmp_path, signer) as log:
        sequencer = Sequencer(log)
        alone = sequencer.commit_if_idle(b"alone")
        assert isinstance(alone, Committed)
        assert (alone.index, alone.size) == (0, 1)
        batch = sequencer.commit([b"one", b"two", b"three"])
        assert [c.index for c in batch if isinstance(c, Committed)] == [1, 2, 3]
        for entry, c in zip([b"alone", b"one", b"two", b"three"], [alone, *batch], strict=True):
            assert isinstance(c, Committed)
            checkpoint, _ = note.verify_checkpoint(c.signed_checkpoint, [signer.vkey])
            merkle.verify_inclusion(
                merkle.leaf_hash(entry), c.index, c.size, c.proof, checkpoint.root
            )
        assert sequencer.commits == 2
        [refused] = sequencer.commit([b"x" * 70_000])  # fails this batch alone
        assert isinstance(refused, InputError)
        assert "at most 65535" in str(refused)
        assert sequencer.commits == 2
        sequencer.close()
        assert sequencer.commit_if_idle(b"late") is None  # closed: the caller must not log it
        with pytest.raises(StorageError, match="closed"):
            sequencer.commit([b"late"])
        assert log.size == 4


def test_promised_indexes_hold_while_other_threads_commit_directly(
    tmp_path: Path, signer: note.Signer
) -> None:
    """Promises (queued) and direct commits (a worker's own batch, a lone idle entry) from many
    threads at once: every promised entry lands exactly at the index promised."""
    promised: dict[bytes, int] = {}
    landed: dict[bytes, int] = {}
    lock = threading.Lock()
    with Log.open(tmp_path, signer) as log, Sequencer(log) as sequencer:
        barrier = threading.Barrier(6)

        def promising(number: int) -> None:
            barrier.wait()
            for i in range(40):
                entry = b"promise %d/%d" % (number, i)

                def done(
                    index: int, outcome: Committed | BaseException, entry: bytes = entry
                ) -> None:
                    assert isinstance(outcome, Committed)
                    with lock:
                        landed[entry] = outcome.index

                index = sequencer.promise(entry, done)
                with lock:
                    promised[entry] = index

        def direct(number: int) -> None:
            barrier.wait()
            for i in range(20):
                sequencer.commit([b"direct %d/%d/%d" % (number, i, k) for k in range(3)])
                sequencer.commit_if_idle(b"idle %d/%d" % (number, i))

        threads = [threading.Thread(target=promising, args=(n,)) for n in range(3)]
        threads += [threading.Thread(target=direct, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sequencer.close()
        assert len(promised) == 120
        assert landed == promised
        for entry, index in promised.items():
            assert log.entry(index) == entry


def test_a_failed_batch_breaks_only_the_promises_queued_behind_it(
    tmp_path: Path, signer: note.Signer
) -> None:
    """A batch that fails takes no indexes: a promise made while it was being committed lands
    earlier than promised (the node reports it broken); a promise made after it holds."""
    with Log.open(tmp_path, signer) as log, Sequencer(log) as sequencer:
        real_append = log.append
        entered, release = threading.Event(), threading.Event()

        def failing_first(entries: list[bytes], **options: bool) -> object:
            if b"doomed" in entries:
                entered.set()
                release.wait(30)
                raise StorageError("disk full")
            return real_append(entries, **options)

        log.append = failing_first  # type: ignore[assignment,method-assign]
        outcomes: dict[bytes, tuple[int, Committed | BaseException]] = {}
        finished = threading.Event()

        def record(entry: bytes) -> Callable[[int, Committed | BaseException], None]:
            def done(index: int, outcome: Committed | BaseException) -> None:
                outcomes[entry] = (index, outcome)
                if len(outcomes) == 2:
                    finished.set()

            return done

        failed: list[Committed | BaseException] = []
        worker = threading.Thread(target=lambda: failed.extend(sequencer.commit([b"doomed"])))
        worker.start()
        assert entered.wait(30)  # "doomed" holds index 0 and is being committed
        behind = sequencer.promise(b"behind", record(b"behind"))
        assert behind == 1
        release.set()
        worker.join()
        assert isinstance(failed[0], StorageError)
        after = sequencer.promise(b"after", record(b"after"))
        assert finished.wait(30)
        landed = {e: o.index for e, (_, o) in outcomes.items() if isinstance(o, Committed)}
        assert landed[b"behind"] == 0  # broken: it landed before the index it was promised
        assert landed[b"after"] == after == 1  # made after the failure was known: kept


def test_reserved_tickets_hold_later_commits_until_committed_on_the_reserving_thread(
    tmp_path: Path, signer: note.Signer
) -> None:
    """A worker that promises a batch reserves its indexes, answers, then commits it itself:
    a later commit waits for the reserved batch, the batch lands exactly where reserved, and
    its outcomes carry no proof (a promise's holder fetches one when upgrading)."""
    with Log.open(tmp_path, signer) as log, Sequencer(log) as sequencer:
        sequencer.commit([b"before"])
        ticket, index = sequencer.reserve([b"one", b"two"])
        assert index == 1
        later: list[Committed | BaseException] = []
        behind = threading.Thread(target=lambda: later.extend(sequencer.commit([b"later"])))
        behind.start()
        behind.join(timeout=0.3)
        assert behind.is_alive()
        assert log.size == 1
        outcomes = sequencer.commit_reserved(ticket, [b"one", b"two"])
        behind.join(timeout=30)
        assert [o.index for o in outcomes if isinstance(o, Committed)] == [1, 2]
        assert all(isinstance(o, Committed) and o.proof == [] for o in outcomes)
        assert [log.entry(i) for i in range(4)] == [b"before", b"one", b"two", b"later"]
        (after,) = later
        assert isinstance(after, Committed)
        assert after.index == 3
        with pytest.raises(InputError, match="entry is bytes"):
            sequencer.reserve([b"x" * 70_000])  # refused before any ticket is taken
        assert sequencer.commit([b"next"])[0].index == 4  # type: ignore[union-attr]
        sequencer.close()
        with pytest.raises(StorageError, match="closed"):
            sequencer.reserve([b"late"])


def test_a_promise_queued_without_a_wakeup_waits_for_wake(
    tmp_path: Path, signer: note.Signer
) -> None:
    """A blocking caller queues its promised entry without waking the committer, signs its
    answer (the committer would hold the GIL meanwhile), then wakes it."""
    landed = threading.Event()
    with Log.open(tmp_path, signer) as log, Sequencer(log) as sequencer:
        index = sequencer.promise(b"quiet", lambda i, outcome: landed.set(), wake=False)
        assert index == 0
        assert not landed.wait(0.3)  # nobody woke the committer
        assert log.size == 0
        sequencer.wake()
        assert landed.wait(30)
        assert log.entry(0) == b"quiet"
