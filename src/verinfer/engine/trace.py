"""Lazy traces for disputes: a model's execution as numbered steps, and their states.

*Steps* are the operators of the model's main graph in the order the file lists them (ONNX
requires that order to be topological, and it is checked here), numbered 1..N; they are derived
from the model's bytes alone. The *state* after step i is the set of live tensors: graph inputs
and initializers that a later step (or the graph's outputs) still needs, and the outputs of steps
1..i still needed; state 0 holds the inputs, state N exactly the graph outputs. A state commits
as the RFC 9162 hash of two Merkle roots, over its computed tensors and over its initializers::

    leaf  = u32be(len(name)) || name || tensor digest (32 bytes, docs/PROTOCOL.md §9)
    state = node_hash(root(leaves of live non-initializers), root(leaves of live initializers))

each root over leaves in UTF-8 byte order of the names. The initializer half depends on the model
alone: :meth:`Steps.prepare` computes it for every state once per model, so judging a step hashes
only the few tensors a side computed.

Nothing here runs at inference time. When a receipt is challenged, :meth:`Steps.trace` re-runs the
model once with every intermediate tensor exposed as an output (the pinned session options of
:mod:`verinfer.engine`), and :func:`run_step` re-executes one operator alone, as a referee does.
Exposing intermediates stops ONNX Runtime from fusing operators, and the referee's kernel class
may differ from a node's, so a step's result is judged within :func:`bound` of the referee's.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from verinfer import cid, merkle, tensors
from verinfer.engine import PROVIDER, load_session, session_options
from verinfer.errors import InputError

__all__ = ["BOUND_FACTOR", "Leaf", "Steps", "Trace", "bound", "leaf_bytes", "reduction", "run_step"]

Leaf = tuple[str, str]  # (tensor name, tensor digest)

BOUND_FACTOR = 8.0  # headroom over K units in the last place: summation order, FMA, fusion
_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})
_NOT_TENSORS = frozenset(
    {"SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceErase", "SequenceAt",
     "SequenceLength", "SplitToSequence", "ConcatFromSequence", "ZipMap", "CastMap",
     "DictVectorizer", "Optional", "OptionalGetElement", "OptionalHasElement"}
)  # fmt: skip


def leaf_bytes(name: str, digest: str) -> bytes:
    """The Merkle leaf of one live tensor."""
    encoded = name.encode()
    return struct.pack(">I", len(encoded)) + encoded + tensors.raw_digest(digest)


@dataclass(frozen=True)
class Step:
    """One operator: ``index`` (1-based), its node, and its tensor names."""

    index: int
    node: onnx.NodeProto
    inputs: tuple[str, ...]  # the names it reads (optional inputs left out)
    outputs: tuple[str, ...]

    @property
    def op(self) -> str:
        return f"{self.node.domain + '.' if self.node.domain else ''}{self.node.op_type}"


class Steps:
    """A model's steps and the live set of every state, from the model's bytes alone."""

    def __init__(self, model: bytes) -> None:
        try:
            proto = onnx.load_model_from_string(model)
        except Exception as exc:  # protobuf's DecodeError and friends
            raise InputError(f"not an ONNX model: {exc}") from exc
        graph = proto.graph
        self.model = model
        self.proto = proto
        self.initializers = {init.name: init for init in graph.initializer}
        self.inputs = tuple(i.name for i in graph.input if i.name not in self.initializers)
        self.outputs = tuple(o.name for o in graph.output)
        known = set(self.initializers) | set(self.inputs)
        born: dict[str, int] = dict.fromkeys(known, 0)
        steps: list[Step] = []
        for index, node in enumerate(graph.node, start=1):
            if node.op_type in _SUBGRAPH_OPS or any(a.g.node or a.graphs for a in node.attribute):
                raise InputError(
                    f"step {index} ({node.op_type}) holds a subgraph; disputes cover models "
                    "whose operators have no subgraphs"
                )
            if node.op_type in _NOT_TENSORS:
                raise InputError(
                    f"step {index} ({node.op_type}) makes sequences or maps; disputes cover "
                    "models whose values are all tensors"
                )
            reads = tuple(name for name in node.input if name)
            missing = [name for name in reads if name not in born]
            if missing:
                raise InputError(
                    f"step {index} ({node.op_type}) reads {missing[0]!r} before any step "
                    "writes it: the model's nodes are not in topological order"
                )
            writes = tuple(name for name in node.output if name)
            for name in writes:
                if name in born:
                    raise InputError(f"step {index} writes {name!r}, which already exists")
                born[name] = index
            steps.append(Step(index, node, reads, writes))
        if not steps:
            raise InputError("the model has no operators to dispute")
        absent = [name for name in self.outputs if name not in born]
        if absent:
            raise InputError(f"graph output {absent[0]!r} is written by no step")
        self.steps = tuple(steps)
        self.count = len(steps)
        last = dict.fromkeys(born, -1)
        for step in steps:
            for name in step.inputs:
                last[name] = step.index
        for name in self.outputs:
            last[name] = self.count + 1  # live to the end
        self._born = born
        self._last = last
        self._initializer_roots: dict[int, bytes] = {}

    @functools.cached_property
    def cid(self) -> str:
        """The model's CID."""
        return cid.compute(self.model)

    def step(self, index: int) -> Step:
        """Step ``index``, 1..N."""
        if not 1 <= index <= self.count:
            raise InputError(f"step {index} is outside 1..{self.count}")
        return self.steps[index - 1]

    def live(self, index: int) -> list[str]:
        """The names live in state ``index`` (0..N), in UTF-8 byte order."""
        if not 0 <= index <= self.count:
            raise InputError(f"state {index} is outside 0..{self.count}")
        names = [n for n, b in self._born.items() if b <= index < self._last[n]]
        return sorted(names, key=str.encode)

    @functools.cached_property
    def initializer_digests(self) -> dict[str, str]:
        """The digest of every initializer (computed once per model)."""
        return {name: tensors.digest(self.initializer(name)) for name in self.initializers}

    @functools.cached_property
    def _initializer_hashes(self) -> dict[str, bytes]:
        return {
            name: merkle.leaf_hash(leaf_bytes(name, digest))
            for name, digest in self.initializer_digests.items()
        }

    def computed(self, index: int) -> list[str]:
        """The names live in state ``index`` that are not initializers: what a side of a
        dispute reveals (anyone reads initializers from the model)."""
        return [name for name in self.live(index) if name not in self.initializers]

    def root(self, index: int, digests: Mapping[str, str]) -> bytes:
        """The commitment to state ``index`` from the digests of its :meth:`computed` tensors
        (the initializers' half comes from the model). :class:`InputError` if a name is
        missing or extra, or a digest malformed."""
        names = self.computed(index)
        if len(digests) != len(names) or any(name not in digests for name in names):
            odd = sorted(set(names) ^ set(digests))
            raise InputError(f"state {index} holds other computed tensors than given: {odd[:1]!r}")
        computed = merkle.root(merkle.leaf_hashes(leaf_bytes(n, digests[n]) for n in names))
        return merkle.node_hash(computed, self.initializer_root(index))

    def initializer_root(self, index: int) -> bytes:
        """The root of the initializers live in state ``index``."""
        found = self._initializer_roots.get(index)
        if found is None:
            live = [n for n in self.live(index) if n in self.initializers]
            found = merkle.root([self._initializer_hashes[name] for name in live])
            self._initializer_roots[index] = found
        return found

    def prepare(self) -> None:
        """Compute what depends on the model alone (its CID, every initializer digest, every
        state's initializer root): a referee does it once per model."""
        _ = self.cid
        for index in range(self.count + 1):
            self.initializer_root(index)

    def initializer(self, name: str) -> np.ndarray:
        """An initializer's value, read from the model."""
        return np.asarray(numpy_helper.to_array(self.initializers[name]))

    @functools.cached_property
    def _exposed(self) -> bytes:
        exposed = onnx.ModelProto()
        exposed.CopyFrom(self.proto)
        present = set(self.outputs)
        for step in self.steps:
            for name in step.outputs:
                if name not in present:
                    exposed.graph.output.append(onnx.ValueInfoProto(name=name))
                    present.add(name)
        return bytes(exposed.SerializeToString())

    def trace(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        answered: Mapping[str, np.ndarray] | None = None,
        threads: int = 1,
    ) -> Trace:
        """Run the model once with every step's outputs exposed.

        ``answered``: the outputs the node actually answered (from its optimized run); they
        replace the trace's graph outputs so that state N is exactly what the receipt states.
        """
        missing = [name for name in self.inputs if name not in inputs]
        if missing:
            raise InputError(f"input {missing[0]!r} is missing")
        # not from the capped inference arena: a trace keeps every intermediate tensor, many
        # times what the answer's run needed, and the node ran these inputs within the cap
        session = load_session(self._exposed, threads, capped=False)
        names = [output.name for output in session.get_outputs()]
        feed = {name: np.ascontiguousarray(inputs[name]) for name in self.inputs}
        values = dict(zip(names, session.run(None, feed), strict=True))
        found: dict[str, np.ndarray] = {name: np.asarray(v) for name, v in values.items()}
        found.update(feed)
        if answered is not None:
            if set(answered) != set(self.outputs):
                raise InputError("the answered outputs do not name the graph's outputs")
            found.update({name: np.asarray(value) for name, value in answered.items()})
        return Trace(self, found)


class Trace:
    """Every tensor of one execution; digests and state roots are computed when asked."""

    def __init__(self, steps: Steps, values: dict[str, np.ndarray]) -> None:
        self.steps = steps
        self.values = values
        self._digests: dict[str, str] = {}
        self._commitment: list[bytes] | None = None

    def value(self, name: str) -> np.ndarray:
        found = self.values.get(name)
        return self.steps.initializer(name) if found is None else found

    def digest(self, name: str) -> str:
        if name in self.steps.initializers:
            return self.steps.initializer_digests[name]
        found = self._digests.get(name)
        if found is None:
            found = self._digests[name] = tensors.digest(self.values[name])
        return found

    def leaves(self, index: int) -> list[Leaf]:
        """Every live tensor of state ``index``, initializers included."""
        return [(name, self.digest(name)) for name in self.steps.live(index)]

    def computed(self, index: int) -> list[Leaf]:
        """The live tensors of state ``index`` that are not initializers."""
        return [(name, self.digest(name)) for name in self.steps.computed(index)]

    def root(self, index: int) -> bytes:
        return self.steps.root(index, dict(self.computed(index)))

    def commitment(self) -> list[bytes]:
        """The leaves of the trace's commitment: the hash of each state's root, 0..N."""
        if self._commitment is None:
            roots = (self.root(index) for index in range(self.steps.count + 1))
            self._commitment = merkle.leaf_hashes(roots)
        return self._commitment


Constant = Callable[[str], "np.ndarray | None"]  # an initializer's value by name, else None

_QUANTIZING = frozenset(
    {"QuantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "QLinearAdd",
     "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSigmoid",
     "QLinearLeakyRelu", "QLinearConcat", "QLinearSoftmax"}
)  # fmt: skip


def _axes(step: Step, attrs: Mapping[str, object], constant: Constant | None) -> list[int] | None:
    """A reduction's axes, from its attribute or its constant second input; ``None`` if
    unknown."""
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]  # type: ignore[attr-defined]
    if len(step.node.input) > 1 and step.node.input[1] and constant is not None:
        found = constant(step.node.input[1])
        if found is not None:
            return [int(a) for a in np.asarray(found).reshape(-1)]
    return None


def _einsum(equation: str, shapes: Sequence[tuple[int, ...]]) -> int | None:
    """The product of an einsum's summed-over dimensions, ``None`` if it cannot be read."""
    if "->" not in equation or "." in equation:
        return None
    left, right = equation.replace(" ", "").split("->")
    sizes: dict[str, int] = {}
    for term, shape in zip(left.split(","), shapes, strict=False):
        if len(term) != len(shape):
            return None
        sizes.update(zip(term, shape, strict=True))
    return int(np.prod([size for letter, size in sizes.items() if letter not in right]))


def reduction(
    step: Step, shapes: Mapping[str, tuple[int, ...]], constant: Constant | None = None
) -> int:
    """How many products or terms one output element of ``step`` accumulates (K >= 1), from
    the operator and its input shapes (and ``constant`` inputs such as axes): the length of the
    sums whose rounding can differ between kernels. An Einsum whose equation cannot be read
    counts the whole size of its largest input (loose, never too tight); operators not listed
    here are taken as element-wise (1). For recurrent operators without ``hidden_size`` the
    weight's gate rows stand in for it (4x hidden for LSTM, 3x for GRU: looser, not tighter)."""
    node, op = step.node, step.node.op_type
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    listed = [shapes.get(name, ()) for name in step.inputs]
    first = listed[0] if listed else ()
    largest = max((int(np.prod(shape)) for shape in listed), default=1)
    if op in ("Conv", "ConvInteger", "QLinearConv") and len(step.inputs) > 1:
        weight = shapes.get(step.inputs[3 if op == "QLinearConv" else 1], ())
        return max(1, int(np.prod(weight[1:])) if len(weight) > 1 else 1)
    if op == "ConvTranspose" and len(step.inputs) > 1:
        weight = shapes.get(step.inputs[1], ())
        return max(1, int(np.prod(weight[:1] + weight[2:])) if len(weight) > 1 else 1)
    if op in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
        transposed = op == "Gemm" and attrs.get("transA", 0)
        return max(1, first[-2] if transposed and len(first) > 1 else (first[-1] if first else 1))
    if op in ("AveragePool", "LpPool", "MaxPool"):
        return max(1, int(np.prod(attrs.get("kernel_shape", [1]))))
    if op in ("GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool"):
        return max(1, int(np.prod(first[2:])) if len(first) > 2 else 1)
    if op == "LRN":
        return int(attrs.get("size", 1)) + 4
    if op in ("Softmax", "LogSoftmax", "Hardmax", "CumSum"):
        axis = int(attrs.get("axis", -1))
        if op == "CumSum":
            found = _axes(step, {}, constant)
            axis = found[0] if found else max(range(len(first)), key=first.__getitem__, default=0)
        return (first[axis] if first else 1) + 4
    if op == "LayerNormalization":
        axis = int(attrs.get("axis", -1))
        return max(1, int(np.prod(first[axis:])) if first else 1) + 4
    if op in ("InstanceNormalization", "GroupNormalization"):
        return max(1, int(np.prod(first[1:] if op == "GroupNormalization" else first[2:]))) + 4
    if op.startswith("Reduce"):
        axes = _axes(step, attrs, constant)
        dims = axes or range(len(first))
        return max(1, int(np.prod([first[a] for a in dims])) if first else 1) + 4
    if op == "Einsum":
        equation = attrs.get("equation", b"")
        text = equation.decode() if isinstance(equation, bytes) else str(equation)
        summed = _einsum(text, listed)
        return max(1, summed if summed is not None else largest)
    if op in ("LSTM", "GRU", "RNN") and len(listed) > 1 and len(first) > 2:
        hidden = int(attrs.get("hidden_size", listed[1][1]))
        return first[0] * (first[2] + hidden) + 4  # every time step feeds the next
    if op == "BatchNormalization":
        return 4
    if op in ("Sum", "Mean", "Max", "Min"):
        return max(1, len(step.inputs))
    return 1


def bound(
    step: Step,
    shapes: Mapping[str, tuple[int, ...]],
    reference: np.ndarray,
    constant: Constant | None = None,
) -> float:
    """The largest absolute difference from the referee's ``reference`` output that step's
    output may show and still be an honest run::

        bound = BOUND_FACTOR * (K + 1) * u * max(|reference|)

    with u the unit roundoff of the dtype (2^-24 for float32) and K = :func:`reduction`. Exact
    dtypes: 0, except 1 for the integer outputs of quantizing operators (their rounding to an
    integer step follows float arithmetic that differs between kernels).
    """
    if reference.dtype.kind != "f" or reference.size == 0:
        return 1.0 if step.node.op_type in _QUANTIZING and reference.size else 0.0
    scale = float(np.max(np.abs(reference)))
    if not math.isfinite(scale):
        finite = reference[np.isfinite(reference)]
        scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    unit = float(np.finfo(reference.dtype).eps) / 2
    scale = max(scale, float(np.finfo(reference.dtype).tiny))
    return BOUND_FACTOR * (reduction(step, shapes, constant) + 1) * unit * scale


def _onnx_type(array: np.ndarray) -> int:
    return int(helper.np_dtype_to_tensor_dtype(array.dtype))


@functools.cache
def _step_options() -> ort.SessionOptions:
    options = session_options(1, capped=False)  # one operator on revealed tensors
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def run_step(steps: Steps, index: int, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Re-execute step ``index`` alone on ``values`` (its non-initializer inputs); initializers
    are read from the model. Returns the step's outputs by name."""
    step = steps.step(index)
    graph_inputs, feed, initializers = [], {}, []
    for name in dict.fromkeys(step.inputs):
        if name in steps.initializers:
            initializers.append(steps.initializers[name])
            continue
        if name not in values:
            raise InputError(f"step {index} needs tensor {name!r}, which was not revealed")
        array = np.ascontiguousarray(values[name])
        graph_inputs.append(helper.make_tensor_value_info(name, _onnx_type(array), array.shape))
        feed[name] = array
    graph = helper.make_graph(
        [step.node],
        f"step{index}",
        graph_inputs,
        [onnx.ValueInfoProto(name=name) for name in step.outputs],
        initializers,
    )
    source = steps.proto  # same opsets, IR version and functions as the model
    alone = helper.make_model(graph, opset_imports=source.opset_import)
    alone.ir_version = source.ir_version
    alone.functions.extend(source.functions)
    try:
        session = ort.InferenceSession(alone.SerializeToString(), _step_options(), [PROVIDER])
        results = session.run(None, feed)
    except Exception as exc:  # ORT's own exception types are not importable API
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        message = f"step {index} ({step.op}) fails on the revealed tensors: {first}"
        raise InputError(message) from exc
    names = [output.name for output in session.get_outputs()]
    return {name: np.asarray(value) for name, value in zip(names, results, strict=True)}
