"""Requests to answers with as few thread handoffs as the work allows.

An answer needs its request checked and run, and its receipt committed to the log. Each handoff
between threads costs a wakeup, and on CPython a wakeup also moves the GIL. So:

- a blocking caller does the work on its own thread (at most ``workers`` at once);
- an asyncio caller's requests go to worker threads, which take them from one queue one at a
  time (a long zk proof never holds up a request queued behind it) and wake only when the queue
  was empty. Requests known to be short are taken several at a time and committed by the worker
  itself as one batch: a commit and a wakeup per batch, no handoff per request;
- a computed receipt is committed on the computing thread if nothing else is being committed,
  else it goes to the sequencer with a callback, not a future;
- the committer thread answers a whole batch at once: one wakeup of each event loop with
  answers in it, however many answers the batch holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any, Generic, TypeVar

from verinfer.errors import StorageError
from verinfer.log.sequencer import Committed, Sequencer

__all__ = ["Pipeline"]

T = TypeVar("T")  # what a worker computed, besides the log entry
R = TypeVar("R")  # the answer

_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]"] | Future[Any]
_Settled = list[tuple["asyncio.Future[Any]", Any, BaseException | None]]


class Pipeline(Generic[T, R]):
    """``compute(*args) -> (entry, payload)`` on worker threads, the entry logged by
    ``sequencer``, then ``finish(payload, committed) -> answer``.

    ``estimate(args)`` is the expected compute time of a request in seconds, or ``None`` if
    unknown or long: a worker takes several queued requests at once only while their estimates
    add up to less than ``batch_seconds``, computes them and commits them itself as one batch.
    Any other request is committed by the sequencer's committer thread. ``clock`` (seconds)
    times a batch against twice its budget; tests give one they advance themselves.

    A request whose payload ``promise(payload)`` is ``True`` is answered before it is durable:
    its entry is given the index it will occupy, and ``pledge(payloads, index)`` answers a batch
    of them at once (entries ``index``, ``index + 1``, ...); ``settle(payload, index, outcome)`` is
    called once the entry is committed (or its batch failed).
    """

    def __init__(
        self,
        compute: Callable[..., tuple[bytes, T]],
        finish: Callable[[T, Committed], R],
        sequencer: Sequencer,
        *,
        workers: int,
        estimate: Callable[[tuple[Any, ...]], float | None] = lambda args: None,
        batch_seconds: float = 2e-3,
        name: str = "verinfer-infer",
        clock: Callable[[], float] = time.monotonic,
        promise: Callable[[T], bool] = lambda payload: False,
        pledge: Callable[[list[T], int], list[R]] | None = None,
        settle: Callable[[T, int, Committed | BaseException], None] | None = None,
    ) -> None:
        self._compute = compute
        self._promise = promise
        self._pledge = pledge
        self._settle = settle
        self._finish = finish
        self._sequencer = sequencer
        self._estimate = estimate
        self._batch_seconds = batch_seconds
        self._clock = clock
        self._workers = workers
        self._queue: deque[tuple[tuple[Any, ...], _Waiter]] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._closed = False
        self._slots = threading.BoundedSemaphore(workers)  # how many compute at once
        self._short_running = False  # a worker is running a batch of short requests
        self._running = 0  # blocking callers computing or committing on their own threads
        self._settled: dict[asyncio.AbstractEventLoop, _Settled] = {}  # the committer thread's
        sequencer.after_each_batch(self._flush)
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, *args: Any) -> R:
        """Compute, log and finish one request on this thread; block until it is answered."""
        with self._ready:
            if self._closed:
                raise StorageError("the node is closing")
            self._running += 1  # close() waits for it
        try:
            return self._run(args)
        finally:
            with self._ready:
                self._running -= 1
                if self._closed:
                    self._ready.notify_all()

    def _run(self, args: tuple[Any, ...]) -> R:
        with self._slots:
            entry, payload = self._compute(*args)
        future: Future[R] = Future()
        self._commit_all([(future, entry, payload)], [])
        return future.result()

    async def arun(self, *args: Any) -> R:
        """:meth:`run` for asyncio callers: the event loop never waits for the work."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._put(args, (loop, future))
        return await future

    def close(self) -> None:
        """Answer everything queued, then stop the workers (the sequencer stays open)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()
        with self._ready:  # and for blocking callers still computing on their own threads
            while self._running:
                self._ready.wait()

    def _put(self, args: tuple[Any, ...], waiter: _Waiter) -> None:
        with self._ready:
            if self._closed:
                raise StorageError("the node is closing")
            self._queue.append((args, waiter))
            if not self._short_running or self._estimate(args) is None:
                self._ready.notify()  # a no-op when every worker is busy

    def _take(self) -> tuple[list[tuple[tuple[Any, ...], _Waiter]], bool] | None:
        """The next request; if it is short, more short ones after it while they fit the batch
        budget. One worker at a time runs short ones: they are mostly Python, and two threads
        running Python at once spend more CPU handing the GIL around than they gain."""
        with self._ready:
            while True:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if not self._queue:
                    return None
                first = self._estimate(self._queue[0][0])
                if first is None or not self._short_running:
                    taken = [self._queue.popleft()]
                    break
                # the worker running short ones takes those next; a long one behind them is
                # this worker's to take now
                found = next(
                    (k for k, (a, _) in enumerate(self._queue) if self._estimate(a) is None), None
                )
                if found is not None:
                    taken = [self._queue[found]]
                    del self._queue[found]
                    return taken, False
                self._ready.wait()
            if first is not None:
                self._short_running = True
                budget = self._batch_seconds - first
                while self._queue:
                    cost = self._estimate(self._queue[0][0])
                    if cost is None or cost > budget:
                        break
                    budget -= cost
                    taken.append(self._queue.popleft())
            if self._queue and (first is None or self._estimate(self._queue[0][0]) is None):
                self._ready.notify()  # work another worker may take now
            return taken, first is not None

    def _work(self) -> None:
        while (took := self._take()) is not None:
            taken, short = took
            try:
                computed, done = self._compute_all(taken)
            finally:
                if short:  # while this worker commits, another may compute the next batch
                    self._short_done()
            try:
                self._commit_all(computed, done, then_commit=True)
            except BaseException as exc:  # never leave a caller waiting, nor lose this worker
                _deliver_all(done + [(waiter, None, exc) for waiter, _, _ in computed])

    def _short_done(self) -> None:
        with self._ready:
            self._short_running = False
            if self._closed or (self._queue and self._estimate(self._queue[0][0]) is not None):
                self._ready.notify_all()  # closing: a waiting worker must see the end

    def _compute_all(
        self, taken: list[tuple[tuple[Any, ...], _Waiter]]
    ) -> tuple[list[tuple[_Waiter, bytes, T]], list[tuple[_Waiter, Any, BaseException | None]]]:
        done: list[tuple[_Waiter, Any, BaseException | None]] = []
        computed: list[tuple[_Waiter, bytes, T]] = []
        deadline = self._clock() + 2 * self._batch_seconds
        with self._slots:
            for position, (args, waiter) in enumerate(taken):
                try:
                    entry, payload = self._compute(*args)
                except BaseException as exc:  # handed to the caller
                    done.append((waiter, None, exc))
                    continue
                computed.append((waiter, entry, payload))
                if position + 1 < len(taken) and self._clock() > deadline:
                    # the estimates were wrong (a name now leads to a heavier model): the rest
                    # go back to the front of the queue, to be estimated again
                    with self._ready:
                        self._queue.extendleft(reversed(taken[position + 1 :]))
                        self._ready.notify()
                    break
        return computed, done

    def _commit_all(
        self,
        computed: list[tuple[_Waiter, bytes, T]],
        done: list[tuple[_Waiter, Any, BaseException | None]],
        *,
        then_commit: bool = False,
    ) -> None:
        """Commit ``computed`` and answer every caller. ``then_commit``: this thread answers
        nobody by returning (a worker), so it may commit promised entries after answering."""
        if self._pledge is not None:
            computed = self._promise_all(computed, done, then_commit)
        if len(computed) == 1:
            waiter, entry, payload = computed[0]
            outcome = self._sequencer.commit_if_idle(entry)
            if outcome is not None:  # nothing else to commit: done here, without a handoff
                done.append((waiter, *self._answer(payload, outcome)))
            else:  # the committer thread batches it with other workers' work
                try:
                    self._sequencer.enqueue(
                        entry, functools.partial(self._committed, waiter, payload)
                    )
                except BaseException as exc:  # the sequencer closed or refused it
                    done.append((waiter, None, exc))
        elif computed:  # a batch of short ones: committed here, without another handoff
            try:
                outcomes = self._sequencer.commit([entry for _, entry, _ in computed])
            except BaseException as exc:  # the sequencer closed
                outcomes = [exc] * len(computed)
            for (waiter, _, payload), outcome in zip(computed, outcomes, strict=True):
                done.append((waiter, *self._answer(payload, outcome)))
        _deliver_all(done)

    def _promise_all(
        self,
        computed: list[tuple[_Waiter, bytes, T]],
        done: list[tuple[_Waiter, Any, BaseException | None]],
        then_commit: bool,
    ) -> list[tuple[_Waiter, bytes, T]]:
        """Answer the promise requests of ``computed`` (into ``done``); the others, to commit.

        ``then_commit``: the promises are answered at once and committed here, as one batch,
        right after (no handoff to the committer thread, no wakeup per entry); else each is
        queued for the committer."""
        rest: list[tuple[_Waiter, bytes, T]] = []
        promised: list[tuple[_Waiter, bytes, T]] = []
        for item in computed:
            (promised if self._promise(item[2]) else rest).append(item)
        if then_commit and promised:
            self._promise_here(promised, done)
            return rest
        for waiter, entry, payload in promised:
            try:
                # the committer is woken after the answer is signed, not while it is
                index = self._sequencer.promise(
                    entry, functools.partial(self._logged, payload), wake=False
                )
                try:
                    assert self._pledge is not None  # checked by the caller
                    done.append((waiter, self._pledge([payload], index)[0], None))
                finally:
                    self._sequencer.wake()
            except BaseException as exc:  # the sequencer closed or refused it
                done.append((waiter, None, exc))
        return rest

    def _promise_here(
        self,
        promised: list[tuple[_Waiter, bytes, T]],
        done: list[tuple[_Waiter, Any, BaseException | None]],
    ) -> None:
        """Reserve indexes for ``promised``, answer them (and whatever ``done`` holds), then
        commit them on this thread: every later entry waits for this batch, so it is committed
        whatever happens in between."""
        entries = [entry for _, entry, _ in promised]
        try:
            ticket, index = self._sequencer.reserve(entries)
        except BaseException as exc:  # the sequencer closed or refused them
            done.extend((waiter, None, exc) for waiter, _, _ in promised)
            return
        try:
            assert self._pledge is not None  # checked by the caller
            try:
                answers = self._pledge([payload for _, _, payload in promised], index)
                done.extend((waiter, answer, None) for (waiter, _, _), answer in zip(
                    promised, answers, strict=True))  # fmt: skip
            except BaseException as exc:  # still committed below: an answer was lost, no entry
                done.extend((waiter, None, exc) for waiter, _, _ in promised)
            _deliver_all(done)  # answered before their entries are durable: that is a promise
            done.clear()
        finally:
            outcomes = self._sequencer.commit_reserved(ticket, entries)
        for offset, ((_, _, payload), outcome) in enumerate(zip(promised, outcomes, strict=True)):
            self._logged(payload, index + offset, outcome)

    def _logged(self, payload: T, index: int, outcome: Committed | BaseException) -> None:
        if self._settle is not None:
            self._settle(payload, index, outcome)

    def _answer(self, payload: T, outcome: Committed | BaseException) -> tuple[Any, Any]:
        if isinstance(outcome, BaseException):
            return None, outcome
        try:
            return self._finish(payload, outcome), None
        except BaseException as exc:
            return None, exc

    def _committed(self, waiter: _Waiter, payload: T, outcome: Committed | BaseException) -> None:
        """On the committer thread: finish the answer; asyncio answers wait for the batch end."""
        answer, error = self._answer(payload, outcome)
        if isinstance(waiter, Future):
            _deliver_all([(waiter, answer, error)])
        else:
            loop, future = waiter
            self._settled.setdefault(loop, []).append((future, answer, error))

    def _flush(self) -> None:
        """On the committer thread, once per batch: wake each event loop once."""
        settled, self._settled = self._settled, {}
        for loop, answers in settled.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for these
                loop.call_soon_threadsafe(_settle, answers)


def _settle(answers: _Settled) -> None:
    for future, answer, error in answers:
        if future.done():  # the caller was cancelled
            continue
        if error is None:
            future.set_result(answer)
        else:
            future.set_exception(error)


def _deliver_all(done: list[tuple[_Waiter, Any, BaseException | None]]) -> None:
    """Answer blocking callers at once and each event loop with one wakeup."""
    loops: dict[asyncio.AbstractEventLoop, _Settled] = {}
    for waiter, answer, error in done:
        if isinstance(waiter, Future):
            with contextlib.suppress(InvalidStateError):  # the caller cancelled it
                if error is None:
                    waiter.set_result(answer)
                else:
                    waiter.set_exception(error)
        else:
            loops.setdefault(waiter[0], []).append((waiter[1], answer, error))
    for loop, answers in loops.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for these
            loop.call_soon_threadsafe(_settle, answers)
