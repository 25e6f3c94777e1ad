"""Test support only: fakes that plug into verinfer's seams. Never use them to serve answers.

A lying node is an ordinary :class:`~verinfer.node.Node` given a lying engine, as
``Node(data, engine=FalsifyingEngine(share=1.0))``: the node signs and logs whatever its engine
returns, exactly as a dishonest operator's node would, so the tests, ``scripts/fault-scenarios.py``
and a devnet (``verinfer node start --test-engine falsifying:0.5``) exercise the real node with a
fault injected at the engine, and the production ``Node`` carries no switch to lie.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from verinfer.engine import Engine
from verinfer.errors import InputError

__all__ = ["TEST_ENGINES", "FalsifyingEngine", "SkewedEngine", "falsified", "named_engine"]


def falsified(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs with one value of the first output changed (by 1e-3 relative, at least 1e-3,
    for floats; by one for integers; negated for booleans)."""
    name = next(iter(outputs))
    changed = np.array(outputs[name], copy=True)
    if changed.size:
        flat = changed.reshape(-1)
        if changed.dtype == np.bool_:
            flat[0] = not flat[0]
        elif changed.dtype.kind == "f":
            flat[0] += max(abs(float(flat[0])) * 1e-3, 1e-3)
        else:
            flat[0] += 1
    return {**outputs, name: changed}


class FalsifyingEngine(Engine):
    """An engine that runs the model honestly and then falsifies the outputs of a share of its
    runs (each run independently, with probability ``share``): what a lying node signs as if
    computed. ``share`` may be changed while it serves. Every run goes through it, so a node
    with this engine lies when it answers and when it recomputes an answer as a dispute's
    challenger; its dispute traces (:mod:`verinfer.engine.trace`) stay honest."""

    def __init__(self, share: float = 1.0, *, seed: int | None = None, **options: Any) -> None:
        if not 0.0 <= share <= 1.0:
            raise InputError(f"falsifying share {share!r} is not in [0, 1]")
        super().__init__(**options)
        self.share = share
        self._coin = random.Random(seed)  # noqa: S311 - picks which runs a test engine falsifies
        self._coin_lock = threading.Lock()

    def run(
        self,
        model: str,
        load: Callable[[], bytes],
        inputs: Mapping[str, np.ndarray],
        *,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        outputs = super().run(model, load, inputs, timeout=timeout)
        with self._coin_lock:
            lie = self._coin.random() < self.share
        return falsified(outputs) if lie else outputs


class SkewedEngine(Engine):
    """An engine that runs the model on ``inner`` (sharing its sessions: one copy of a large
    model serves several test nodes of one process), then adds ``offset`` and seeded Gaussian
    noise of standard deviation ``noise`` to the first output (a language model's logits), and
    states ``kernel_class`` as its CPU kernel class. A little noise under another class stands
    in for an honest node on other hardware, whose kernels differ in the low bits; a large
    offset or noise for a dishonest node that signs a self-consistent record of something
    else than the model computed."""

    def __init__(
        self,
        inner: Engine,
        *,
        kernel_class: str,
        offset: float = 0.0,
        noise: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(threads=inner.threads, timeout=inner.timeout, memory=None)
        self.inner = inner
        self.kernel_class = kernel_class
        self.offset, self.noise = offset, noise
        self._noise = np.random.default_rng(seed)
        self._noise_lock = threading.Lock()

    @property
    def identity(self) -> str:
        return f"{self.inner.identity.rpartition('/')[0]}/{self.kernel_class}"

    def session(self, model: str, load: Callable[[], bytes]) -> Any:
        return self.inner.session(model, load)

    def run(
        self,
        model: str,
        load: Callable[[], bytes],
        inputs: Mapping[str, np.ndarray],
        *,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        outputs = self.inner.run(model, load, inputs, timeout=timeout)
        name = next(iter(outputs))
        first = outputs[name]
        with self._noise_lock:
            jitter = self._noise.normal(0.0, self.noise, first.shape) if self.noise else 0.0
        skewed = (first.astype(np.float64) + self.offset + jitter).astype(first.dtype)
        return {**outputs, name: skewed}


# the fakes ``verinfer node start --test-engine NAME:ARG`` can start a node with
TEST_ENGINES: dict[str, Callable[..., Engine]] = {
    "falsifying": lambda arg, **options: FalsifyingEngine(float(arg or 1.0), **options),
}


def named_engine(spec: str, **options: Any) -> Engine:
    """The test engine ``spec`` names, ``NAME[:ARG]`` (e.g. ``falsifying:0.5``), built with the
    :class:`~verinfer.engine.Engine` ``options``."""
    name, _, arg = spec.partition(":")
    make = TEST_ENGINES.get(name)
    if make is None:
        raise InputError(f"unknown test engine {name!r}; known: {', '.join(sorted(TEST_ENGINES))}")
    try:
        return make(arg, **options)
    except ValueError as exc:
        raise InputError(f"bad test engine argument {arg!r} for {name!r}: {exc}") from exc
