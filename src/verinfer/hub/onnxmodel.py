"""What the hub checks and records about an ONNX model before it publishes it.

Every model file is hostile input. :func:`analyse` parses it, walks every graph and subgraph,
refuses what verinfer will not host (external data, operator domains off the allow-list, non-tensor
inputs or outputs, anything ``onnx.checker`` with full shape inference or ONNX Runtime rejects),
extracts the model card's facts, and runs the determinism probe. The hub runs it in a sandboxed
child process (:mod:`verinfer.hub.sandbox`), so a model that crashes or hangs a native library
costs a clear error, not the process.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from verinfer import cid, engine
from verinfer.engine.nondeterminism import nondeterministic_operators_of
from verinfer.errors import InputError

__all__ = [
    "DEFAULT_DOMAINS",
    "DEFAULT_MAX_BYTES",
    "DTYPES",
    "Limits",
    "analyse",
    "inspect_model",
    "probe_determinism",
]

DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_DOMAINS = ("ai.onnx", "ai.onnx.ml")
PROBE_SEED = 20261125
PROBE_THREADS = (1, 2)
PROBE_REPEATS = 2

# the tensor element types verinfer hosts: fixed-width little-endian encodings (strings are not)
DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.UINT64: "uint64",
    onnx.TensorProto.BOOL: "bool",
}


@dataclass(frozen=True)
class Limits:
    """What a hub accepts."""

    max_bytes: int = DEFAULT_MAX_BYTES
    domains: tuple[str, ...] = DEFAULT_DOMAINS  # "ai.onnx" also stands for the empty domain
    timeout: float = 300.0  # seconds for the whole analysis, probe included
    memory: int = 8 << 30  # address-space limit of the sandbox, bytes


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph nested in its nodes' attributes."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


def _tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in the model: initializers and constant attributes, everywhere."""
    for graph in _graphs(model.graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                if attribute.HasField("sparse_tensor"):
                    yield attribute.sparse_tensor.values
                    yield attribute.sparse_tensor.indices


def _domain(name: str) -> str:
    return name or "ai.onnx"


def _check_self_contained(model: onnx.ModelProto) -> None:
    for tensor in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            where = {entry.key: entry.value for entry in tensor.external_data}.get("location", "")
            raise InputError(
                f"tensor {tensor.name!r} references external data {where!r}: verinfer hosts "
                f"self-contained models only (save with onnx.save(..., "
                f"save_as_external_data=False))"
            )


def _nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node that can run: in the graph, its subgraphs, the model's local functions and
    their subgraphs."""
    for graph in _graphs(model.graph):
        yield from graph.node
    for function in model.functions:
        for node in function.node:
            yield node
            for attribute in node.attribute:
                subgraphs = [attribute.g] if attribute.HasField("g") else []
                for sub in [*subgraphs, *attribute.graphs]:
                    for inner in _graphs(sub):
                        yield from inner.node


def _check_domains(model: onnx.ModelProto, allowed: tuple[str, ...]) -> None:
    """Refuse an operator of a domain off the allow-list that some node actually uses: in the
    graph, in a subgraph or in a local function's body. A domain the model only declares in
    ``opset_import`` (exporters declare ``ai.onnx.preview`` or their own domain out of habit)
    runs nothing; a call of a local function is checked through the function's body."""
    local = {(function.domain, function.name) for function in model.functions}
    for node in _nodes(model):
        if (node.domain, node.op_type) in local:
            continue
        if _domain(node.domain) not in allowed:
            raise InputError(
                f"operator domain {_domain(node.domain)!r} is not allowed: node "
                f"{node.name or node.op_type!r} uses its operator {node.op_type!r}; "
                f"allowed: {', '.join(allowed)}"
            )


# attributes from which operators make strings out of numbers (a string input is caught by its
# type): CategoryMapper always maps between strings and integers
_STRING_MAKERS = {
    "CategoryMapper": {"cats_strings"},
    "LabelEncoder": {"values_strings", "default_string"},
}


def _string_type(value: onnx.TypeProto) -> bool:
    """Whether a value of this type holds strings (a tensor, or a sequence or optional of one)."""
    kind = value.WhichOneof("value")
    if kind == "tensor_type":
        return bool(value.tensor_type.elem_type == onnx.TensorProto.STRING)
    if kind == "sequence_type":
        return _string_type(value.sequence_type.elem_type)
    if kind == "optional_type":
        return _string_type(value.optional_type.elem_type)
    if kind == "map_type":
        return bool(value.map_type.key_type == onnx.TensorProto.STRING) or _string_type(
            value.map_type.value_type
        )
    return False


def _check_no_strings(model: onnx.ModelProto) -> None:
    """Refuse a model that computes with strings anywhere, not only at its inputs and outputs.

    ONNX Runtime's memory cap (the arena, see :mod:`verinfer.engine`) counts a string tensor's
    element headers but not the characters, so ``Expand`` of a 1 MiB string constant to a
    requester-chosen shape took gigabytes under a 64 MiB cap. Strings are found in stored
    tensors and ``Constant`` attributes, in ``Cast`` to string, in the operators that make
    strings from their attributes, and in every value's type after shape inference."""
    where = ""
    if any(tensor.data_type == onnx.TensorProto.STRING for tensor in _tensors(model)):
        where = "a stored tensor"
    for node in _nodes(model) if not where else ():
        names = {attribute.name for attribute in node.attribute}
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        makers = _STRING_MAKERS.get(node.op_type, set()) if node.domain == "ai.onnx.ml" else set()
        if (
            (node.op_type == "Constant" and names & {"value_string", "value_strings"})
            or (node.op_type == "Cast" and to == onnx.TensorProto.STRING)
            or names & makers
        ):
            where = f"node {node.name or node.op_type!r} ({node.op_type})"
            break
    if not where:
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # the checker, run before, reports what inference cannot do
            inferred = model
        for graph in _graphs(inferred.graph):
            for value in (*graph.input, *graph.value_info, *graph.output):
                if _string_type(value.type):
                    where = f"value {value.name!r}"
                    break
            if where:
                break
    if where:
        raise InputError(
            f"the model computes with strings ({where}): verinfer hosts models of fixed-width "
            "tensors only, since a run's memory limit cannot bound the length of strings"
        )


def _signature(values: Any, role: str, skip: set[str]) -> list[dict[str, Any]]:
    out = []
    for value in values:
        if value.name in skip:
            continue
        if not value.type.HasField("tensor_type"):
            kind = value.type.WhichOneof("value") or "unknown"
            hint = " (skl2onnx: options={'zipmap': False})" if kind != "tensor_type" else ""
            raise InputError(
                f"{role} {value.name!r} is a {kind.replace('_type', '')}, not a tensor: verinfer "
                f"hosts models whose inputs and outputs are tensors{hint}"
            )
        tensor = value.type.tensor_type
        if tensor.elem_type not in DTYPES:
            try:
                name = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
            except ValueError:  # a number ONNX itself has no name for
                name = f"unknown type number {tensor.elem_type}"
            raise InputError(
                f"{role} {value.name!r} has element type {name!r}; supported: "
                f"{', '.join(DTYPES.values())}"
            )
        shape: list[int | str | None] | None = None
        if tensor.HasField("shape"):
            shape = []
            for dim in tensor.shape.dim:
                if dim.HasField("dim_value"):
                    shape.append(int(dim.dim_value))
                elif dim.HasField("dim_param"):
                    shape.append(dim.dim_param)
                else:
                    shape.append(None)
        out.append({"name": value.name, "dtype": DTYPES[tensor.elem_type], "shape": shape})
    return out


def inspect_model(data: bytes, limits: Limits = Limits()) -> dict[str, Any]:
    """Check the model bytes and return the facts its manifest records.

    Raises :class:`InputError` naming the first problem found.
    """
    if len(data) > limits.max_bytes:
        raise InputError(f"the model is {len(data)} bytes, above the limit of {limits.max_bytes}")
    try:
        model = onnx.ModelProto.FromString(data)
    except Exception as exc:  # protobuf's DecodeError, or worse, on hostile bytes
        raise InputError(f"malformed ONNX model: not a valid ModelProto ({exc})") from exc
    if not model.HasField("graph") or not model.graph.node:
        raise InputError("malformed ONNX model: it has no graph or an empty graph")
    _check_self_contained(model)
    _check_domains(model, limits.domains)
    overruled = _check(model)
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = _signature(model.graph.input, "input", initializers)
    outputs = _signature(model.graph.output, "output", set())
    if not inputs or not outputs:
        raise InputError("the model must have at least one input and one output")
    _check_no_strings(model)  # after the signature: a string input or output is named as such
    engine.load_session(data)  # raises InputError if ONNX Runtime cannot load it
    operators = sorted(
        {
            node.op_type if not node.domain else f"{node.domain}:{node.op_type}"
            for graph in _graphs(model.graph)
            for node in graph.node
        }
    )
    # weights: stored tensors, plus the float lists classic ML operators keep their weights in
    parameters = sum(int(np.prod(tensor.dims, dtype=np.int64)) for tensor in _tensors(model))
    parameters += sum(
        len(attribute.floats)
        for graph in _graphs(model.graph)
        for node in graph.node
        for attribute in node.attribute
    )
    facts: dict[str, Any] = {
        "size": len(data),
        "format": "onnx",
        "ir_version": int(model.ir_version),
        "opsets": {_domain(o.domain): int(o.version) for o in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": inputs,
        "outputs": outputs,
        "parameters": parameters,
        "operators": operators,
    }
    if overruled:  # the runtime loaded it above: say which strict finding was set aside
        facts["analysis"] = {"checker": overruled}
    return facts


_TOP_LEVEL = re.compile(r"\(op_type:([A-Za-z0-9_.]+)(?:, node name: [^)]*)?\): ")


def _function_ops(model: onnx.ModelProto) -> set[str]:
    """Operators whose shape inference is their function body's: the model's local functions,
    and the schema operators (of the model's opsets) that have a body and no inference of
    their own."""
    found = {function.name for function in model.functions}
    versions = {_domain(o.domain): int(o.version) for o in model.opset_import}
    for node in _nodes(model):
        domain = node.domain if node.domain != "ai.onnx" else ""
        version = versions.get(_domain(domain), 1)
        if not onnx.defs.has(node.op_type, version, domain):
            continue  # no such operator: the checker's structural pass refused it already
        schema = onnx.defs.get_schema(node.op_type, version, domain)
        body = getattr(schema, "has_function", False) or getattr(
            schema, "has_context_dependent_function", False
        )
        if body and not schema.has_type_and_shape_inference_function:
            found.add(node.op_type)
    return found


def _check(model: onnx.ModelProto) -> str | None:
    """``onnx.checker`` with full shape inference; raise :class:`InputError` naming what it
    rejects, except one kind of finding: a failure of strict shape inference *inside the body
    of a function* (an operator defined by a function and inferred through it, or a local
    function), in a model the structural checker accepts. The checker has false positives
    there (``MeanVarianceNormalization`` with its default ``axes`` makes its body's
    ``Constant`` fail, onnx 1.16-1.23) while ONNX Runtime, which runs the operator by its own
    kernel or expands the body with the real attributes, accepts the model. Such a model is
    accepted only if ONNX Runtime then loads it (the caller checks), and the returned text
    says, in the manifest, what was set aside."""
    try:
        onnx.checker.check_model(model, full_check=True)
        return None
    except Exception as exc:  # ValidationError, InferenceError, and C++ errors as RuntimeError
        failure = exc
    text = str(failure).strip()
    first = text.splitlines()[0] if text else type(failure).__name__
    refused = InputError(f"the ONNX checker rejects the model: {first}")
    if not isinstance(failure, onnx.shape_inference.InferenceError):
        raise refused from failure
    try:
        onnx.checker.check_model(model)  # everything but shape inference
    except Exception:
        raise refused from failure
    functions = _function_ops(model)
    inside: list[str] = []
    for line in filter(None, (line.strip() for line in text.splitlines())):
        found = _TOP_LEVEL.search(line)
        if (
            found is None
            or found.group(1) not in functions
            or "Inference error(s): (op_type:" not in line[found.end() :]
        ):
            raise refused from failure  # a finding about the graph itself
        inside.append(found.group(1))
    if not inside:
        raise refused from failure
    return (
        f"onnx.checker's strict shape inference fails inside the function body of "
        f"{', '.join(sorted(set(inside)))} ({first}); ONNX Runtime loads the model, so the "
        f"finding is set aside"
    )


# the families of inputs the determinism probe tries, in order, until one runs the model: a
# model's valid inputs are often narrower than its types (an index must be in range, a divisor
# non-zero, a scale positive, a Reshape target must fit); each family is seeded and fixed, so
# every hub probes a model with the same inputs and reaches the same verdict
PROBE_FAMILIES = ("random", "positive", "zeros", "ones", "zeros-last-minus-one")


def _probe_input(
    spec: dict[str, Any], rng: np.random.Generator, family: str = "random"
) -> np.ndarray:
    """One probe input of ``family`` (symbolic or unknown dims are 1): ``random`` floats
    N(0, 1), integers in [0, 4); ``positive`` floats in [1, 2), integers in [1, 4) (divisors,
    scales, sizes); ``zeros`` (an index that is always in range, a Reshape target that copies
    every dim); ``ones``; ``zeros-last-minus-one``: zeros with a 1-D signed integer tensor
    ending in -1 (a Reshape target that copies the leading dims and infers the last). Booleans
    are random in every family."""
    shape = [d if isinstance(d, int) and d >= 0 else 1 for d in spec["shape"] or []]
    dtype = np.dtype(spec["dtype"])
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    integer = dtype.kind in "iu"
    if family == "random":
        if integer:
            return rng.integers(0, 4, size=shape).astype(dtype)
        return rng.standard_normal(size=shape).astype(dtype)
    if family == "positive":
        if integer:
            return rng.integers(1, 4, size=shape).astype(dtype)
        return rng.uniform(1.0, 2.0, size=shape).astype(dtype)
    array = np.ones(shape, dtype) if family == "ones" else np.zeros(shape, dtype)
    if family == "zeros-last-minus-one" and dtype.kind == "i" and array.ndim == 1 and array.size:
        array[-1] = -1
    return array


def _probe_runs(data: bytes, feed: dict[str, np.ndarray]) -> set[bytes]:
    """The digests of every output of every probe run on ``feed``."""
    digests = set()
    for threads in PROBE_THREADS:
        session = engine.load_session(data, threads)
        for _ in range(PROBE_REPEATS):
            hasher = hashlib.sha256()
            for output in session.run(None, feed):
                array = np.ascontiguousarray(output)
                hasher.update(f"{array.dtype.str}{array.shape}".encode())
                hasher.update(array.tobytes())
            digests.add(hasher.digest())
    return digests


def probe_determinism(data: bytes, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Find the operators whose output is not a function of their inputs (static analysis of
    every graph, subgraph and local function), then run the model on seeded inputs, twice under
    each thread setting, and compare the bytes.

    The inputs are the first of :data:`PROBE_FAMILIES` the model accepts (each family with
    the seed :data:`PROBE_SEED`); the verdict names the family as ``inputs`` unless it is the
    first, ``random``. ``bit_identical`` is ``null`` only when no family runs the model: the
    model cannot be run on inputs that plain (its ``error`` says why, for the first family).
    The verdict records those operators (``nondeterministic``), whether the model is
    bit-reproducible (``bit_identical``: every run gave the same bytes and no such operator
    exists; the probe's inputs may never reach a random branch, so the runs alone prove
    nothing), and on what engine.
    """
    try:
        nondeterministic = nondeterministic_operators_of(data)
    except ValueError as exc:
        raise InputError(f"malformed ONNX model: {exc}") from exc
    verdict: dict[str, Any] = {
        "engine": engine.identity(),
        "seed": PROBE_SEED,
        "threads": list(PROBE_THREADS),
        "runs": len(PROBE_THREADS) * PROBE_REPEATS,
        "nondeterministic": nondeterministic,
    }
    first_error = ""
    for family in PROBE_FAMILIES:
        rng = np.random.default_rng(PROBE_SEED)
        try:
            feed = {spec["name"]: _probe_input(spec, rng, family) for spec in inputs}
        except (ValueError, MemoryError) as exc:  # e.g. a declared input of 2**40 x 2**40
            raise InputError(f"the model's declared inputs cannot be allocated: {exc}") from exc
        try:
            digests = _probe_runs(data, feed)
        except InputError:
            raise
        except Exception as exc:  # the model loads but fails on these inputs: the next family
            if not first_error:
                text = str(exc).strip()
                first_error = text.splitlines()[0] if text else type(exc).__name__
            continue
        if family != PROBE_FAMILIES[0]:
            verdict["inputs"] = family
        verdict["bit_identical"] = len(digests) == 1 and not nondeterministic
        return verdict
    verdict["bit_identical"] = False if nondeterministic else None
    verdict["error"] = f"the probe could not run the model: {first_error}"
    return verdict


def analyse(data: bytes, expected: str, limits: Limits) -> dict[str, Any]:
    """Everything publishing needs to know about the model whose CID is ``expected``."""
    cid.verify(expected, data)
    facts = inspect_model(data, limits)
    facts["determinism"] = probe_determinism(data, facts["inputs"])
    return facts
