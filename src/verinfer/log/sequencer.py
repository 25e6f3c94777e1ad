"""Group commit without a waiting window: receipts that arrive together share one checkpoint.

One committer thread takes everything queued, appends it as one batch (one transaction, one
signed checkpoint) and answers each entry with its index and inclusion proof. It starts the next
commit as soon as the last one ends, so a lone entry waits for nobody and a burst costs one
signature per commit rather than one per entry. A caller that finds nothing queued and no commit
running may commit its entry itself (:meth:`Sequencer.commit_if_idle`), saving a lone entry two
thread handoffs; one that gathered a batch itself commits it directly (:meth:`Sequencer.commit`).

Callers either wait on a future (:meth:`Sequencer.submit`) or hand over a callback
(:meth:`Sequencer.enqueue`) that the committer thread calls with the outcome; a batch hook runs
after each batch's callbacks, so a caller can deliver a whole batch of answers in one handoff.

**Positions before durability** (:meth:`Sequencer.promise`, :meth:`Sequencer.reserve`): every
entry takes a ticket when it is queued, reserved or handed to :meth:`Sequencer.commit`, and
batches are appended strictly in ticket order (a batch waits until every earlier ticket is
committed or failed). A worker that promised a batch reserves its tickets, answers, then commits
it itself (:meth:`Sequencer.commit_reserved`). So the index an entry
will occupy is known when it is queued: its ticket, less the entries of batches that failed
before it was queued. A batch that fails after later entries were promised shifts them: those
promises break, which the node reports (and their holders can prove).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

from verinfer.errors import Error, InputError, StorageError
from verinfer.log.core import MAX_ENTRY_BYTES, Log

__all__ = ["MAX_BATCH", "Committed", "Sequencer"]

MAX_BATCH = 4096

Done = Callable[["Committed | BaseException"], None]


@dataclass(frozen=True)
class Committed:
    """Where an entry landed: its index, the signed checkpoint and the proof against it."""

    index: int
    size: int
    signed_checkpoint: str
    proof: list[bytes]


class Sequencer:
    """Sequences entries into ``log`` by group commit. Thread-safe; ``close`` drains the queue."""

    def __init__(self, log: Log, *, max_batch: int = MAX_BATCH) -> None:
        self.log = log
        self._max_batch = max_batch
        self._queue: deque[tuple[bytes, Done]] = deque()
        self._wakeup = threading.Condition()
        self._closed = False
        self._hooks: list[Callable[[], None]] = []
        self.commits = 0  # batches committed (for metrics and tests)
        # tickets: the order entries are appended in. _next is the next to hand out (under
        # _wakeup); a batch of tickets [start, end) is appended once _done reaches start
        self._next = log.size
        self._done = log.size
        self._lost = 0  # entries of failed batches: tickets that took no index
        self._turn = threading.Condition(threading.Lock())
        self._tickets: deque[int] = deque()  # the queued entries' tickets, in queue order
        self._thread = threading.Thread(target=self._run, name="verinfer-sequencer", daemon=True)
        self._thread.start()

    def submit(self, entry: bytes) -> Future[Committed]:
        """Queue an entry; the future resolves once it is durable and proven."""
        future: Future[Committed] = Future()
        self.enqueue(entry, lambda outcome: _resolve(future, outcome))
        return future

    def enqueue(self, entry: bytes, done: Done) -> None:
        """Queue an entry; ``done`` is called on the committer thread with its
        :class:`Committed` or the exception that failed its batch. It must not block."""
        self._queued(entry, done, None)

    def promise(
        self,
        entry: bytes,
        done: Callable[[int, Committed | BaseException], None],
        *,
        wake: bool = True,
    ) -> int:
        """:meth:`enqueue`, and return the index ``entry`` will occupy once committed, which
        ``done`` is called with too, before the outcome (a batch failing before it was
        committed moves it elsewhere, or fails it: the outcome then says so). ``wake=False``:
        the committer is not woken for it (the caller answers first, then calls :meth:`wake`;
        a committer running Python meanwhile would hold the GIL the answer needs)."""
        return self._queued(entry, None, done, wake)

    def wake(self) -> None:
        """Wake the committer for entries queued with ``wake=False``."""
        with self._wakeup:
            self._wakeup.notify()

    def _queued(
        self,
        entry: bytes,
        done: Done | None,
        pledged: Callable[[int, Committed | BaseException], None] | None,
        wake: bool = True,
    ) -> int:
        _check(entry)  # here, so one bad entry can never fail the batch it would have joined
        with self._wakeup:
            if self._closed:
                raise StorageError("the sequencer is closed")
            ticket = self._next
            self._next += 1
            index = ticket - self._lost
            if pledged is not None:
                done = functools.partial(pledged, index)
            assert done is not None
            self._queue.append((entry, done))
            self._tickets.append(ticket)
            if wake:
                self._wakeup.notify()
            return index

    def after_each_batch(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` on the committer thread after each batch's callbacks have run."""
        self._hooks.append(hook)

    def append(self, entry: bytes, timeout: float | None = None) -> Committed:
        """Queue an entry and wait until it is committed."""
        return self.submit(entry).result(timeout)

    def _take(self) -> tuple[int, list[tuple[bytes, Done]]] | None:
        """The queue's head: entries of consecutive tickets (a direct commit may hold the
        tickets between two queued entries), and the first ticket."""
        with self._wakeup:
            while not self._queue and not self._closed:
                self._wakeup.wait()
            if not self._queue:
                return None
            start = self._tickets.popleft()
            batch = [self._queue.popleft()]
            while self._queue and len(batch) < self._max_batch:
                if self._tickets[0] != start + len(batch):
                    break
                self._tickets.popleft()
                batch.append(self._queue.popleft())
            return start, batch

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            start, batch = taken
            outcomes = self._in_turn(start, [entry for entry, _ in batch])
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                try:  # noqa: SIM105 - per entry: cheaper than a suppress() context
                    done(outcome)
                except Exception:  # noqa: S110 - a caller's callback must not stop the log
                    pass
            for hook in self._hooks:
                with contextlib.suppress(Exception):
                    hook()

    def commit(self, entries: list[bytes]) -> list[Committed | BaseException]:
        """Commit ``entries`` as one batch on this thread, now (a caller that gathered a batch
        itself needs no handoff to the committer); the outcome of each, in order. A bad entry
        fails only this caller's batch, so the log's own checks suffice."""
        return self._in_turn(self._take_tickets(len(entries)), entries)

    def _take_tickets(self, count: int) -> int:
        """Take ``count`` consecutive tickets (at least one: a batch that took none would wait
        for a turn another batch may take first); return the first."""
        if count < 1:
            raise InputError("cannot commit or reserve an empty batch of entries")
        with self._wakeup:
            if self._closed:
                raise StorageError("the sequencer is closed")
            start = self._next
            self._next += count
            return start

    def reserve(self, entries: list[bytes]) -> tuple[int, int]:
        """Take consecutive tickets for ``entries``, to be committed on this thread by
        :meth:`commit_reserved`, which the caller must call (even on failure: every later
        ticket waits for it). Returns (the first ticket, the index it will occupy): a worker
        promises answers at these indexes, delivers them, then commits without a handoff."""
        for entry in entries:  # refused here, so a bad entry never reserves tickets
            _check(entry)
        start = self._take_tickets(len(entries))
        with self._wakeup:  # batches that failed before this one was reserved took no index
            return start, start - self._lost

    def commit_reserved(self, start: int, entries: list[bytes]) -> list[Committed | BaseException]:
        """Commit the entries of :meth:`reserve` (ticket ``start``) as one batch, in turn. Their
        outcomes carry no inclusion proof: a promise's holder fetches one when upgrading."""
        return self._in_turn(start, entries, proofs=False)

    def commit_if_idle(self, entry: bytes) -> Committed | BaseException | None:
        """Commit ``entry`` alone on this thread if nothing is queued or committing (a lone
        entry then skips the handoff to the committer and back); ``None`` if busy."""
        with self._wakeup:
            if self._queue or self._closed or self._next != self._done:
                return None
            start = self._next
            self._next += 1
        return self._in_turn(start, [entry], waited=True)[0]

    def _in_turn(
        self, start: int, entries: list[bytes], *, proofs: bool = True, waited: bool = False
    ) -> list[Committed | BaseException]:
        """Commit the batch of tickets ``[start, start + len(entries))`` once every earlier
        ticket is done: appends happen in ticket order, one at a time."""
        with self._turn:
            while self._done != start:
                self._turn.wait()
            try:
                return self._commit(entries, proofs, waited)
            finally:
                self._done = start + len(entries)
                self._turn.notify_all()

    def _commit(
        self, entries: list[bytes], proofs: bool = True, waited: bool = False
    ) -> list[Committed | BaseException]:
        try:
            appended = self.log.append(entries, waited=waited)
        except Error as exc:
            self._failed(len(entries))
            return [exc] * len(entries)
        except BaseException as exc:  # never leave a caller waiting forever
            self._failed(len(entries))
            return [StorageError(f"commit failed: {exc!r}")] * len(entries)
        self.commits += 1  # in turn, like every commit
        size = appended.end
        if not proofs:
            return [
                Committed(i, size, appended.signed_checkpoint, [])
                for i in range(appended.start, size)
            ]
        outcomes: list[Committed | BaseException] = []
        for index in range(appended.start, size):
            try:
                proof = self.log.inclusion_proof(index, size)
            except Error as exc:
                outcomes.append(exc)
                continue
            outcomes.append(Committed(index, size, appended.signed_checkpoint, proof))
        return outcomes

    def _failed(self, count: int) -> None:
        """A batch took no indexes: later tickets land ``count`` earlier than counted."""
        with self._wakeup:
            self._lost += count

    def close(self) -> None:
        """Commit whatever is queued, then stop."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        self._thread.join()

    def __enter__(self) -> Sequencer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check(entry: bytes) -> None:
    if not isinstance(entry, bytes) or len(entry) > MAX_ENTRY_BYTES:
        got = f"{len(entry)} bytes" if isinstance(entry, bytes) else type(entry).__name__
        raise InputError(f"an entry is bytes of at most {MAX_ENTRY_BYTES}, got {got}")


def _resolve(future: Future[Committed], outcome: Committed | BaseException) -> None:
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except InvalidStateError:
        pass  # the caller cancelled it
