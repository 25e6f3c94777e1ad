"""Sides of a dispute for the tests: dishonest ones that perturb one step (everything after it
computed honestly, on the same engine), lie about one state, stop answering or replay messages;
and an honest one on another kernel class (its floats differ from ours in the last bit).

Import as ``from dishonest import ...`` (the tests put this directory on ``sys.path``)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from verinfer.engine import Engine
from verinfer.engine.trace import Steps, Trace, bound
from verinfer.modes.dispute import Dispute, LocalParty, Reveal

__all__ = [
    "Answering",
    "CrossClass",
    "Liar",
    "Perturbing",
    "Replaying",
    "Silent",
    "perturbed_trace",
]


class Answering(Engine):
    """An engine that answers fixed outputs: what a node that lied somewhere signs."""

    def __init__(self, outputs: Mapping[str, np.ndarray]) -> None:
        super().__init__()
        self.outputs = dict(outputs)

    def run(self, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        return dict(self.outputs)


def _target(steps: Steps, at: int) -> str:
    live = set(steps.live(at))
    found = [name for name in steps.step(at).outputs if name in live]
    if not found:
        raise ValueError(f"step {at} writes nothing live")
    return found[0]


def perturbed_trace(steps: Steps, inputs: Mapping[str, np.ndarray], at: int, scale: float) -> Trace:
    """The execution of a node that perturbs step ``at``'s output, then computes every later
    step honestly: the model is rewritten with an ``Add`` after that step and traced as usual.
    Below ``scale`` 10, the largest element moves by ``scale`` times the step's bound; from 10
    on, every element moves by more than the tensor's range. Exact dtypes move by 1."""
    honest = steps.trace(inputs)
    step, name = steps.step(at), _target(steps, at)
    value = honest.values[name]
    shapes = {n: tuple(honest.value(n).shape) for n in step.inputs}
    delta = np.zeros_like(value)
    if value.dtype.kind != "f":
        delta.reshape(-1)[value.size // 2] = 1
    elif scale < 10:
        delta.reshape(-1)[int(np.argmax(value))] = scale * bound(step, shapes, value)
    else:  # a big lie: a ramp over the whole tensor, which no Relu, max pool or (shift-
        # invariant) softmax downstream can erase
        amount = scale * bound(step, shapes, value) + float(np.ptp(value)) + 1.0
        delta[...] = (amount * np.linspace(0.5, 1.5, value.size)).reshape(value.shape)
    proto = onnx.load_model_from_string(steps.model)
    nodes = list(proto.graph.node)
    raw = f"{name}/unperturbed"
    writer = nodes[at - 1]
    writer.output[list(writer.output).index(name)] = raw
    add = helper.make_node("Add", [raw, f"{name}/delta"], [name])
    nodes.insert(at, add)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    proto.graph.initializer.append(numpy_helper.from_array(delta, f"{name}/delta"))
    lying = Steps(proto.SerializeToString()).trace(inputs)
    names = set(honest.values)
    return Trace(steps, {n: v for n, v in lying.values.items() if n in names})


class Perturbing(LocalParty):
    """A side whose execution perturbs step ``at`` by ``scale`` times its bound."""

    def __init__(self, *args: object, at: int, scale: float = 1000.0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.at, self.scale = at, scale

    def trace(self, dispute: Dispute, inputs: Mapping[str, np.ndarray] | None = None) -> Trace:
        if dispute.id not in self._traces:
            assert inputs is not None
            steps = self.steps(dispute.receipt["model"])
            self._traces[dispute.id] = perturbed_trace(steps, inputs, self.at, self.scale)
        return self._traces[dispute.id]


class CrossClass(LocalParty):
    """An honest side on another CPU kernel class: a share of its floats differ in the last
    place from ours (as AVX2 and AVX-512 kernels do), and its engine identity differs."""

    def __init__(self, *args: object, seed: int = 0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.rng = np.random.default_rng(seed)

    def trace(self, dispute: Dispute, inputs: Mapping[str, np.ndarray] | None = None) -> Trace:
        if dispute.id not in self._traces:
            honest = super().trace(dispute, inputs)
            values = dict(honest.values)
            for name, value in values.items():
                if value.dtype.kind != "f" or name in honest.steps.inputs:
                    continue
                flip = self.rng.random(value.shape) < 0.5
                up = np.nextafter(value, np.inf).astype(value.dtype)
                values[name] = np.where(flip, up, value)
            self._traces[dispute.id] = Trace(honest.steps, values)
        return self._traces[dispute.id]


class Liar(LocalParty):
    """Computes honestly but answers a made-up root for state ``at`` (with the proof of the
    true one: the only proof it has)."""

    def __init__(self, *args: object, at: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.at = at

    def state(self, dispute: Dispute, step: int) -> dict[str, Any]:
        answer = super().state(dispute, step)
        return {**answer, "state": "ab" * 32} if step == self.at else answer


# never set: a silent side waits on it far past any test's deadline (the referee gives up at
# its deadline and never joins the thread), instead of sleeping a guessed few seconds
_NEVER = threading.Event()
_SILENCE = 30.0


class Silent(LocalParty):
    """Stops answering from round ``after`` on (it answers only 30 s later, long after
    any deadline a test gives, however loaded the machine)."""

    def __init__(self, *args: object, after: int = 0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.after, self.asked = after, 0

    def state(self, dispute: Dispute, step: int) -> dict[str, Any]:
        self.asked += 1
        if self.asked > self.after:
            _NEVER.wait(_SILENCE)
        return super().state(dispute, step)

    def reveal(self, dispute: Dispute, step: int, names: Sequence[str]) -> Reveal:
        _NEVER.wait(_SILENCE)
        return super().reveal(dispute, step, names)


class Replaying(LocalParty):
    """Answers the opening and state requests with recorded ones from elsewhere, in turn."""

    def __init__(
        self, *args: object, openings: list[str] = (), states: list[Any] = (), **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.openings, self.states = list(openings), list(states)

    def opening(self, dispute: Dispute, inputs: Mapping[str, np.ndarray]) -> str:
        mine = super().opening(dispute, inputs)
        return self.openings.pop(0) if self.openings else mine

    def state(self, dispute: Dispute, step: int) -> dict[str, Any]:
        mine = super().state(dispute, step)
        return self.states.pop(0) if self.states else mine
