"""Group commit without a waiting window: receipts that arrive together share one checkpoint.

One committer thread takes everything queued, appends it as one batch (one transaction, one
signed checkpoint) and answers each entry with its index and inclusion proof. It starts the next
commit as soon as the last one ends, so a lone entry waits for nobody and a burst costs one
signature per commit rather than one per entry.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

from verinfer.errors import Error, InputError, StorageError
from verinfer.log.core import MAX_ENTRY_BYTES, Log

__all__ = ["Committed", "Sequencer"]

MAX_BATCH = 4096


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
        self._queue: deque[tuple[bytes, Future[Committed]]] = deque()
        self._wakeup = threading.Condition()
        self._closed = False
        self.commits = 0  # batches committed (for metrics and tests)
        self._thread = threading.Thread(target=self._run, name="verinfer-sequencer", daemon=True)
        self._thread.start()

    def submit(self, entry: bytes) -> Future[Committed]:
        """Queue an entry; the future resolves once it is durable and proven."""
        if not isinstance(entry, bytes) or len(entry) > MAX_ENTRY_BYTES:
            # checked here, so one bad entry can never fail the batch it would have joined
            raise InputError(f"an entry is bytes of at most {MAX_ENTRY_BYTES}, got {len(entry)}")
        future: Future[Committed] = Future()
        with self._wakeup:
            if self._closed:
                raise StorageError("the sequencer is closed")
            self._queue.append((entry, future))
            self._wakeup.notify()
        return future

    def append(self, entry: bytes, timeout: float | None = None) -> Committed:
        """Queue an entry and wait until it is committed."""
        return self.submit(entry).result(timeout)

    def _take(self) -> list[tuple[bytes, Future[Committed]]] | None:
        with self._wakeup:
            while not self._queue and not self._closed:
                self._wakeup.wait()
            if not self._queue:
                return None
            count = min(len(self._queue), self._max_batch)
            return [self._queue.popleft() for _ in range(count)]

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                appended = self.log.append([entry for entry, _ in batch])
            except Error as exc:
                for _, future in batch:
                    future.set_exception(exc)
                continue
            except BaseException as exc:  # never leave a caller waiting forever
                for _, future in batch:
                    future.set_exception(StorageError(f"commit failed: {exc!r}"))
                continue
            self.commits += 1
            size = appended.end
            for offset, (_, future) in enumerate(batch):
                index = appended.start + offset
                try:
                    proof = self.log.inclusion_proof(index, size)
                except Error as exc:
                    future.set_exception(exc)
                    continue
                future.set_result(Committed(index, size, appended.signed_checkpoint, proof))

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
