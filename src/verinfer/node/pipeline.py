"""Requests to answers with as few thread handoffs as the work allows.

An answer needs its request checked and run, and its receipt committed to the log. Each handoff
between threads costs a wakeup, and on CPython a wakeup also moves the GIL. So:

- a blocking caller does the work on its own thread (at most ``workers`` at once);
- an asyncio caller's requests go to worker threads, which take them from one queue one at a
  time (a long zk proof never holds up a request queued behind it) and wake only when the queue
  was empty;
- a computed receipt goes to the sequencer with a callback, not a future;
- the committer thread answers a whole batch at once: one wakeup of each event loop with
  answers in it, however many answers the batch holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
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
    ``sequencer``, then ``finish(payload, committed) -> answer`` on the committer thread."""

    def __init__(
        self,
        compute: Callable[..., tuple[bytes, T]],
        finish: Callable[[T, Committed], R],
        sequencer: Sequencer,
        *,
        workers: int,
        name: str = "verinfer-infer",
    ) -> None:
        self._compute = compute
        self._finish = finish
        self._sequencer = sequencer
        self._queue: deque[tuple[tuple[Any, ...], _Waiter]] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._closed = False
        self._slots = threading.BoundedSemaphore(workers)  # how many compute at once
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
        if self._closed:
            raise StorageError("the node is closing")
        future: Future[R] = Future()
        with self._slots:
            entry, payload = self._compute(*args)
        self._sequencer.enqueue(entry, functools.partial(self._committed, future, payload))
        return future.result()

    async def arun(self, *args: Any) -> R:
        """:meth:`run` for asyncio callers: the event loop never blocks on the work."""
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

    def _put(self, args: tuple[Any, ...], waiter: _Waiter) -> None:
        with self._ready:
            if self._closed:
                raise StorageError("the node is closing")
            self._queue.append((args, waiter))
            self._ready.notify()  # a no-op when every worker is busy

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if not self._queue:
                    return
                args, waiter = self._queue.popleft()
            try:
                with self._slots:
                    entry, payload = self._compute(*args)
            except BaseException as exc:  # handed to the caller
                _deliver(waiter, None, exc)
                continue
            try:
                self._sequencer.enqueue(entry, functools.partial(self._committed, waiter, payload))
            except BaseException as exc:  # the sequencer closed or refused it
                _deliver(waiter, None, exc)

    def _committed(self, waiter: _Waiter, payload: T, outcome: Committed | BaseException) -> None:
        """On the committer thread: finish the answer; asyncio answers wait for the batch end."""
        answer: R | None = None
        error = outcome if isinstance(outcome, BaseException) else None
        if error is None:
            try:
                answer = self._finish(payload, outcome)  # type: ignore[arg-type]
            except BaseException as exc:
                error = exc
        if isinstance(waiter, Future):
            _deliver(waiter, answer, error)
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


def _deliver(waiter: _Waiter, answer: Any, error: BaseException | None) -> None:
    if isinstance(waiter, Future):
        with contextlib.suppress(InvalidStateError):  # the caller cancelled it
            if error is None:
                waiter.set_result(answer)
            else:
                waiter.set_exception(error)
        return
    loop, future = waiter
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, [(future, answer, error)])
