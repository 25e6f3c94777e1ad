"""The request pipeline's scheduling, with a real log: a long request is never held up by a
batch of short ones, and a batch whose estimates were wrong hands its rest back. Ordering comes
from events the computations set and wait on, and time from a clock the test advances: nothing
here depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from verinfer import note
from verinfer.log import Log
from verinfer.log.sequencer import Committed, Sequencer
from verinfer.node.pipeline import Pipeline


class Clock:
    """Seconds that pass only when a computation says so (one for every thread)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


async def _until(event: threading.Event) -> None:
    """Wait on a thread's event without blocking the event loop."""
    assert await asyncio.to_thread(event.wait, 30)


def _pipeline(
    log: Log,
    compute: object,
    estimate: object,
    *,
    workers: int,
    batch_seconds: float = 2e-3,
    clock: Callable[[], float] | None = None,
) -> tuple[Sequencer, Pipeline[str, tuple[str, Committed]]]:
    sequencer = Sequencer(log)
    pipeline: Pipeline[str, tuple[str, Committed]] = Pipeline(
        compute,  # type: ignore[arg-type]
        lambda payload, committed: (payload, committed),
        sequencer,
        workers=workers,
        estimate=estimate,  # type: ignore[arg-type]
        batch_seconds=batch_seconds,
        **({"clock": clock} if clock else {}),
    )
    return sequencer, pipeline


def test_a_long_request_is_not_held_up_by_a_running_short_batch(
    tmp_path: Path, signer: note.Signer
) -> None:
    gate, running = threading.Event(), threading.Event()

    def compute(name: str) -> tuple[bytes, str]:
        if name == "short-0":
            running.set()  # a worker has taken it and holds the short role
            assert gate.wait(30)  # the short batch is still running while the long one arrives
        return name.encode(), name

    def estimate(args: tuple[str, ...]) -> float | None:
        return 1e-6 if args[0].startswith("short") else None

    with Log.open(tmp_path, signer) as log:
        sequencer, pipeline = _pipeline(log, compute, estimate, workers=2)

        async def scenario() -> list[str]:
            first = asyncio.ensure_future(pipeline.arun("short-0"))
            await _until(running)
            later = [asyncio.ensure_future(pipeline.arun(f"short-{k}")) for k in (1, 2)]
            long = await asyncio.wait_for(pipeline.arun("long"), 30)  # the idle worker takes it
            order = [long[0]]
            gate.set()
            for done in await asyncio.gather(first, *later):
                order.append(done[0])
            return order

        order = asyncio.run(scenario())
        pipeline.close()
        sequencer.close()
        assert order == ["long", "short-0", "short-1", "short-2"]
        assert log.entries(0, 4)[0] == b"long"  # logged before the short batch it overtook


def test_a_batch_whose_estimates_were_wrong_hands_its_rest_back(
    tmp_path: Path, signer: note.Signer
) -> None:
    gate, busy, clock = threading.Event(), threading.Event(), Clock()

    def compute(name: str) -> tuple[bytes, str]:
        if name == "gate":
            busy.set()
            assert gate.wait(30)
        else:
            clock.advance(0.005)  # estimated at 1 us, takes 5 ms: over twice the 1 ms budget
        return name.encode(), name

    def estimate(args: tuple[str, ...]) -> float | None:
        return None if args[0] == "gate" else 1e-6

    with Log.open(tmp_path, signer) as log:
        sequencer, pipeline = _pipeline(
            log, compute, estimate, workers=1, batch_seconds=1e-3, clock=clock
        )

        async def scenario() -> list[tuple[str, Committed]]:
            blocked = asyncio.ensure_future(pipeline.arun("gate"))
            await _until(busy)  # the only worker is busy: five short ones queue
            rest = [asyncio.ensure_future(pipeline.arun(f"s{k}")) for k in range(5)]
            await asyncio.sleep(0)  # each task queues its request before it first waits
            gate.set()
            return list(await asyncio.gather(blocked, *rest))

        answers = asyncio.run(scenario())
        pipeline.close()
        sequencer.close()
        assert [name for name, _ in answers] == ["gate", "s0", "s1", "s2", "s3", "s4"]
        # taken as one batch of five, but each overran the budget: the rest went back to the
        # queue every time, so each was committed alone
        assert [c.size for _, c in answers] == [1, 2, 3, 4, 5, 6]
        assert sequencer.commits == 6
