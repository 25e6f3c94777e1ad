"""Every model file is hostile input: nothing a model does may crash or hang the process.

Three layers are tested: :func:`inspect_model` refuses what verinfer will not host with an
:class:`InputError` naming the problem; mutated real models (truncations, bit flips, splices)
pushed through the real sandbox either inspect cleanly or are refused by name; and the sandbox
contains crashes, hangs and runaway allocations, replacing its worker when needed.
"""

from __future__ import annotations

import collections
import os
import random
import re
import resource
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from hub_models import LIGHT, multi_io_model, sklearn_model, tiny_model
from onnx import TensorProto, helper
from onnx.external_data_helper import set_external_data

from verinfer import cid, note
from verinfer.errors import InputError
from verinfer.hub import Hub, Limits, Sandbox
from verinfer.hub.onnxmodel import analyse, inspect_model

TINY = tiny_model().SerializeToString()
SQUEEZENET = LIGHT / "light_squeezenet.onnx"


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    *,
    initializers: list[onnx.TensorProto] | None = None,
    opset: int = 17,
) -> bytes:
    graph = helper.make_graph(nodes, "hostile", inputs, outputs, initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _float(name: str, shape: list[int | str] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(
        name, TensorProto.FLOAT, ["N", 4] if shape is None else shape
    )


def _refused(data: bytes, match: str, sandbox: Sandbox, limits: Limits | None = None) -> None:
    """``data`` is refused with a message matching ``match``, in process and in the sandbox."""
    limits = limits or Limits()
    with pytest.raises(InputError, match=match):
        inspect_model(data, limits)
    with pytest.raises(InputError, match=match):
        sandbox.call(inspect_model, data, limits, timeout=60, what="the model")


# ---------------------------------------------------------------------------------------------
# Refusals, each naming its problem


PLACEMENTS = (
    "initializer",
    "constant attribute",
    "sparse constant attribute",
    "subgraph initializer",
)


def _weights_model(placement: str, location: str | None, *, flag: bool = True) -> bytes:
    """``y = x + w`` with the weights ``w`` stored as ``placement``; external if ``location``.

    With ``flag=False`` the tensor lists external-data entries but keeps the default
    ``data_location`` (and its inline values): still a reference to an outside file.
    """
    values = np.array([0.5, 1.0, 1.5, 2.0], dtype=np.float32).tobytes()
    weights = helper.make_tensor("w", TensorProto.FLOAT, [4], values, raw=True)
    if location is not None and flag:
        set_external_data(weights, location, offset=0, length=len(values))
        weights.ClearField("raw_data")
    elif location is not None:
        entry = weights.external_data.add()
        entry.key, entry.value = "location", location
    add = helper.make_node("Add", ["x", "w"], ["y"])
    x, y = _float("x"), _float("y")
    if placement == "initializer":
        return _model([add], [x], [y], initializers=[weights])
    if placement == "constant attribute":
        return _model([helper.make_node("Constant", [], ["w"], value=weights), add], [x], [y])
    if placement == "sparse constant attribute":
        indices = helper.make_tensor("w_indices", TensorProto.INT64, [4], [0, 1, 2, 3])
        sparse = helper.make_sparse_tensor(weights, indices, [4])
        constant = helper.make_node("Constant", [], ["w"], sparse_value=sparse)
        return _model([constant, add], [x], [y])
    then_branch = helper.make_graph([add], "then", [], [_float("y")], [weights])
    else_branch = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"])], "else", [], [_float("r")]
    )
    branch = helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)
    condition = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    return _model([branch], [condition, x], [y])


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_self_contained_variants_are_accepted(placement: str) -> None:
    """The controls for the external-data tests: without the reference, each model is fine."""
    facts = inspect_model(_weights_model(placement, None))
    assert facts["inputs"][-1]["name"] == "x"


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("location", ["weights.bin", "../../etc/passwd", "/etc/shadow"])
def test_external_data_is_refused(placement: str, location: str, sandbox: Sandbox) -> None:
    data = _weights_model(placement, location)
    _refused(data, rf"tensor 'w' references external data {location!r}.*self-contained", sandbox)


def test_external_data_entries_without_the_external_flag_are_refused(sandbox: Sandbox) -> None:
    data = _weights_model("initializer", "weights.bin", flag=False)
    _refused(data, "references external data 'weights.bin'", sandbox)


def test_model_above_the_size_limit_is_refused(sandbox: Sandbox) -> None:
    data = sklearn_model("iris")
    _refused(
        data,
        rf"the model is {len(data)} bytes, above the limit of {len(data) - 1}$",
        sandbox,
        Limits(max_bytes=len(data) - 1),
    )
    assert inspect_model(data, Limits(max_bytes=len(data)))["size"] == len(data)


@pytest.mark.parametrize(
    ("op", "domain"), [("FusedConv", "com.microsoft"), ("Backdoor", "org.example.evil")]
)
def test_operator_domain_off_the_allow_list_is_refused(
    op: str, domain: str, sandbox: Sandbox
) -> None:
    data = tiny_model(op, domain).SerializeToString()
    _refused(
        data,
        rf"operator domain '{domain}' is not allowed: node '{op}' uses its operator '{op}'; "
        "allowed: ai.onnx, ai.onnx.ml",
        sandbox,
    )


def test_node_of_an_undeclared_domain_is_refused(sandbox: Sandbox) -> None:
    """A node may name a domain the model never imports; the node itself is checked."""
    model = tiny_model("FusedConv", "com.microsoft")
    del model.opset_import[1]
    _refused(
        model.SerializeToString(),
        "operator domain 'com.microsoft' is not allowed: node 'FusedConv' uses its operator",
        sandbox,
    )


def test_node_of_a_foreign_domain_inside_a_subgraph_is_refused(sandbox: Sandbox) -> None:
    then_branch = helper.make_graph(
        [helper.make_node("FusedConv", ["x"], ["t"], domain="com.microsoft")],
        "then",
        [],
        [_float("t")],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["e"])], "else", [], [_float("e")]
    )
    data = _model(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)],
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), _float("x")],
        [_float("y")],
    )
    _refused(data, "operator domain 'com.microsoft' is not allowed: node 'FusedConv'", sandbox)


def test_the_allow_list_comes_from_the_limits(sandbox: Sandbox) -> None:
    """A hub that allows only ``ai.onnx`` refuses scikit-learn's ``ai.onnx.ml`` operators."""
    _refused(
        sklearn_model("iris"),
        "operator domain 'ai.onnx.ml' is not allowed: node .* uses its operator .*; "
        "allowed: ai.onnx$",
        sandbox,
        Limits(domains=("ai.onnx",)),
    )


def test_node_reading_an_undefined_value_is_refused(sandbox: Sandbox) -> None:
    data = _model([helper.make_node("Relu", ["missing"], ["y"])], [_float("x")], [_float("y")])
    _refused(data, "the ONNX checker rejects the model: .*'missing'", sandbox)


def test_operator_newer_than_the_model_opset_is_refused(sandbox: Sandbox) -> None:
    """Gelu exists from opset 20 on; a model importing opset 17 cannot use it."""
    assert inspect_model(tiny_model("Gelu", opset=20).SerializeToString())["operators"] == ["Gelu"]
    _refused(
        tiny_model("Gelu", opset=17).SerializeToString(),
        "the ONNX checker rejects the model: No Op registered for Gelu with domain_version of 17",
        sandbox,
    )


def test_model_the_checker_accepts_but_onnx_runtime_cannot_load_is_refused(
    sandbox: Sandbox,
) -> None:
    """Relu-14 is defined on int16, but ONNX Runtime's CPU provider has no int16 kernel."""
    model = onnx.ModelProto.FromString(
        _model(
            [helper.make_node("Relu", ["x"], ["y"])],
            [helper.make_tensor_value_info("x", TensorProto.INT16, [2])],
            [helper.make_tensor_value_info("y", TensorProto.INT16, [2])],
        )
    )
    onnx.checker.check_model(model, full_check=True)  # the checker is satisfied
    _refused(
        model.SerializeToString(),
        r"ONNX Runtime cannot load the model: .*NOT_IMPLEMENTED.*Relu",
        sandbox,
    )


def test_classifier_converted_with_zipmap_is_refused(sandbox: Sandbox) -> None:
    """skl2onnx's default ZipMap output is a sequence of maps; the message says how to fix it."""
    from skl2onnx import to_onnx  # noqa: PLC0415 - slow import
    from sklearn.datasets import load_iris  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    x, y = load_iris(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and conversion chatter
        model = to_onnx(LogisticRegression(max_iter=1000).fit(x, y), x[:1].astype(np.float32))
    _refused(
        model.SerializeToString(),
        r"output 'output_probability' is a sequence, not a tensor.*'zipmap': False",
        sandbox,
    )


def test_sequence_input_is_refused(sandbox: Sandbox) -> None:
    data = _model(
        [helper.make_node("SequenceLength", ["s"], ["n"])],
        [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
    )
    _refused(data, "input 's' is a sequence, not a tensor", sandbox)


def test_string_input_is_refused(sandbox: Sandbox) -> None:
    data = _model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.STRING, [2])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [2])],
    )
    _refused(data, "input 'x' has element type 'string'; supported: float32", sandbox)


def test_string_output_is_refused(sandbox: Sandbox) -> None:
    data = _model(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.STRING)],
        [_float("x", [2])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [2])],
    )
    _refused(data, "output 'y' has element type 'string'", sandbox)


@pytest.mark.parametrize("element", [TensorProto.BFLOAT16, TensorProto.COMPLEX64])
def test_element_type_without_a_fixed_encoding_here_is_refused(
    element: int, sandbox: Sandbox
) -> None:
    data = _model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", element, [2])],
        [helper.make_tensor_value_info("y", element, [2])],
        opset=21,
    )
    name = TensorProto.DataType.Name(element).lower()
    _refused(data, f"input 'x' has element type '{name}'", sandbox)


def test_unknown_element_type_number_is_refused() -> None:
    """An unused input of element type 99 passes the checker; verinfer must refuse it by name.

    Found by fuzzing (a bit flip in tiny_model). In the sandbox the ValueError is caught by the
    worker's last-resort handler and surfaces as ``unexpected ValueError: Enum DataType has no
    name defined for value 99``, so the process survives but the message names no problem.
    """
    data = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [_float("x"), helper.make_tensor_value_info("z", 99, [1])],
        [_float("y")],
    )
    onnx.checker.check_model(onnx.ModelProto.FromString(data), full_check=True)
    with pytest.raises(InputError, match="element type"):
        inspect_model(data)


def test_model_without_real_inputs_is_refused(sandbox: Sandbox) -> None:
    constant = helper.make_tensor("c", TensorProto.FLOAT, [1], [1.0])
    data = _model([helper.make_node("Constant", [], ["y"], value=constant)], [], [_float("y", [1])])
    _refused(data, "the model must have at least one input and one output", sandbox)


def test_empty_graph_is_refused(sandbox: Sandbox) -> None:
    """A graph with inputs and outputs but no nodes (an identity by pass-through)."""
    model = helper.make_model(helper.make_graph([], "empty", [_float("x")], [_float("x")]))
    _refused(model.SerializeToString(), "it has no graph or an empty graph", sandbox)


def test_model_without_a_graph_is_refused(sandbox: Sandbox) -> None:
    model = onnx.ModelProto(ir_version=8, producer_name="nothing")
    _refused(model.SerializeToString(), "it has no graph or an empty graph", sandbox)


def test_empty_bytes_are_refused(sandbox: Sandbox) -> None:
    _refused(b"", "malformed ONNX model: it has no graph or an empty graph", sandbox)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff" * 64,
        bytes(1000),
        b'{"ir_version": 8, "graph": {}}',
        b"\x89PNG\r\n\x1a\n" + bytes(64),
        b"\x3a\xff\xff\xff\xff\x0f",  # field 7 (graph), length 2^32 - 1, then nothing
        random.Random(20261125).randbytes(4096),
        helper.make_tensor("t", TensorProto.FLOAT, [2], [1.0, 2.0]).SerializeToString(),
    ],
    ids=["ff", "zeros", "json", "png", "huge-length", "random", "tensor-proto"],
)
def test_garbage_bytes_are_refused(data: bytes, sandbox: Sandbox) -> None:
    _refused(data, r"malformed ONNX model: not a valid ModelProto \(", sandbox)


def test_serialized_graph_is_not_a_model(sandbox: Sandbox) -> None:
    """A bare GraphProto parses as a ModelProto of unknown fields: no graph."""
    _refused(tiny_model().graph.SerializeToString(), "no graph or an empty graph", sandbox)


def _huge_input_model() -> bytes:
    """A valid model whose declared input, float32[2^40, 2^40], has no memory representation."""
    shape: list[int | str] = [1 << 40, 1 << 40]
    return _model(
        [helper.make_node("Relu", ["x"], ["y"])], [_float("x", shape)], [_float("y", shape)]
    )


def test_probe_of_an_unallocatable_input_is_contained(sandbox: Sandbox) -> None:
    """The determinism probe cannot build such an input; the sandbox reports, it survives."""
    data = _huge_input_model()
    assert inspect_model(data)["inputs"][0]["shape"] == [1 << 40, 1 << 40]
    with pytest.raises(InputError, match="declared inputs cannot be allocated: array is too big"):
        sandbox.call(analyse, data, cid.compute(data), Limits(), timeout=60, what="the model")
    assert sandbox.call(inspect_model, TINY, Limits(), timeout=60, what="tiny")["size"] == len(TINY)


def test_probe_of_an_unallocatable_input_is_refused_by_name() -> None:
    """Through the hub, the publisher sees ``unexpected ValueError: array is too big; ...``."""
    data = _huge_input_model()
    with pytest.raises(InputError, match="declared inputs cannot be allocated: array is too big"):
        analyse(data, cid.compute(data), Limits())


# ---------------------------------------------------------------------------------------------
# Fuzzing real models through the real sandbox


def _squeezenet() -> bytes:
    return SQUEEZENET.read_bytes()


FUZZ_MODELS: dict[str, Callable[[], bytes]] = {
    "iris": lambda: sklearn_model("iris"),
    "breast_cancer": lambda: sklearn_model("breast_cancer"),  # a tree ensemble
    "multi_io": multi_io_model,
    "squeezenet": _squeezenet,
}


def _truncations(data: bytes, rng: random.Random) -> Iterator[bytes]:
    """40 evenly spaced prefixes, from empty to just short of the whole model."""
    del rng
    for i in range(40):
        yield data[: len(data) * i // 40]


def _bit_flips(data: bytes, rng: random.Random) -> Iterator[bytes]:
    """150 copies with one, a few or many random bits flipped."""
    for _ in range(150):
        mutant = bytearray(data)
        for _ in range(rng.choice((1, 1, 1, 2, 3, 8, 32))):
            mutant[rng.randrange(len(mutant))] ^= 1 << rng.randrange(8)
        yield bytes(mutant)


def _splices(data: bytes, rng: random.Random) -> Iterator[bytes]:
    """60 copies with a stretch replaced by another stretch of the model, or by random bytes."""
    for _ in range(60):
        start = rng.randrange(len(data))
        end = rng.randrange(start, min(len(data), start + 64) + 1)
        if rng.random() < 0.5:
            source = rng.randrange(len(data))
            insert = data[source : source + rng.randrange(1, 65)]
        else:
            insert = rng.randbytes(rng.randrange(1, 17))
        yield data[:start] + insert + data[end:]


MUTATIONS: dict[str, Callable[[bytes, random.Random], Iterator[bytes]]] = {
    "truncation": _truncations,
    "bit-flip": _bit_flips,
    "splice": _splices,
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
@pytest.mark.parametrize("model", list(FUZZ_MODELS))
def test_mutants_are_inspected_or_refused_by_name(
    model: str, mutation: str, sandbox: Sandbox
) -> None:
    """Each mutant returns facts or raises InputError; none escapes as an unexpected error.

    The sandbox turns *any* exception into InputError, so the test also rejects the worker's
    last-resort ``unexpected <Exception>`` messages: those are errors inspect_model let through.
    """
    data = FUZZ_MODELS[model]()
    assert sandbox.call(inspect_model, data, Limits(), timeout=60, what="original")["size"] == len(
        data
    )
    rng = random.Random(f"{model}/{mutation}")
    outcomes: collections.Counter[str] = collections.Counter()
    unexpected = []
    for mutant in MUTATIONS[mutation](data, rng):
        try:
            facts = sandbox.call(inspect_model, mutant, Limits(), timeout=60, what="mutant")
        except InputError as exc:
            message = str(exc)
            if message.startswith("unexpected "):
                unexpected.append(message)
                outcomes["unexpected"] += 1
            elif message.startswith("mutant crashed") or message.startswith("mutant took"):
                outcomes["contained"] += 1  # a native crash or hang, turned into a refusal
            else:
                outcomes["refused"] += 1
            continue
        assert isinstance(facts, dict)
        assert facts["size"] == len(mutant)
        assert facts["inputs"]
        assert facts["outputs"]
        outcomes["accepted"] += 1
    total = sum(outcomes.values())
    assert total == {"truncation": 40, "bit-flip": 150, "splice": 60}[mutation]
    assert not unexpected, f"{model}/{mutation}: {dict(outcomes)}: {unexpected}"
    assert outcomes["refused"] > 0, outcomes
    if mutation == "truncation":
        assert outcomes["refused"] >= 0.9 * total, outcomes


# ---------------------------------------------------------------------------------------------
# Containment by the sandbox


@pytest.fixture(scope="module")
def small_sandbox() -> Iterator[Sandbox]:
    """A sandbox with a 2 GiB address-space limit, whose crashing workers dump no core files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    try:
        with Sandbox(memory=2 << 30) as limited:
            yield limited
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


def _worker(sandbox: Sandbox) -> int:
    """The process ID of the sandbox's current worker (starting one if needed)."""
    return sandbox.call(os.getpid, timeout=60, what="getpid")


def _assert_serves(sandbox: Sandbox) -> None:
    facts = sandbox.call(inspect_model, TINY, Limits(), timeout=60, what="tiny model")
    assert facts["operators"] == ["Relu"]
    assert facts["size"] == len(TINY)


def test_the_worker_runs_under_the_memory_limit(small_sandbox: Sandbox) -> None:
    limit = small_sandbox.call(resource.getrlimit, resource.RLIMIT_AS, timeout=60, what="getrlimit")
    assert tuple(limit) == (2 << 30, 2 << 30)
    assert _worker(small_sandbox) != os.getpid()


def test_abort_is_contained_and_the_worker_replaced(small_sandbox: Sandbox) -> None:
    before = _worker(small_sandbox)
    with pytest.raises(
        InputError, match=r"^probe crashed the sandboxed checker \(exit code -6\); it is refused$"
    ):
        small_sandbox.call(os.abort, timeout=60, what="probe")
    after = _worker(small_sandbox)
    assert after != before
    _assert_serves(small_sandbox)
    assert _worker(small_sandbox) == after  # the replacement is kept, not restarted per call


def test_segfault_is_contained(small_sandbox: Sandbox) -> None:
    with pytest.raises(
        InputError, match=rf"crashed the sandboxed checker \(exit code -{signal.SIGSEGV}\)"
    ):
        small_sandbox.call(signal.raise_signal, signal.SIGSEGV, timeout=60, what="probe")
    _assert_serves(small_sandbox)


def test_exit_is_contained(small_sandbox: Sandbox) -> None:
    """SystemExit is no Exception: the worker ends and the call is refused as a crash.

    The exit code may read -9: the parent sees the pipe close while the worker is still
    finalizing, and kills it.
    """
    with pytest.raises(InputError, match=r"crashed the sandboxed checker \(exit code (3|-9)\)"):
        small_sandbox.call(sys.exit, 3, timeout=60, what="probe")
    _assert_serves(small_sandbox)


def test_hang_is_stopped_and_the_worker_replaced(small_sandbox: Sandbox) -> None:
    """A probe that would sleep for an hour: the call returns (a sandbox that waited it out
    would fail this test at pytest's time limit), and the worker that hung is gone (killed and
    reaped), not left running."""
    before = _worker(small_sandbox)
    with pytest.raises(InputError, match=r"^probe took more than 1 s; it was stopped$"):
        small_sandbox.call(time.sleep, 3600, timeout=1, what="probe")
    with pytest.raises(ProcessLookupError, match="No such process"):
        os.kill(before, 0)
    assert _worker(small_sandbox) != before
    _assert_serves(small_sandbox)


def test_huge_allocation_is_refused_and_the_worker_survives(small_sandbox: Sandbox) -> None:
    before = _worker(small_sandbox)
    with pytest.raises(InputError, match=r"^the model needs more memory than the sandbox allows$"):
        small_sandbox.call(bytearray, 64 << 30, timeout=60, what="probe")
    assert _worker(small_sandbox) == before  # MemoryError is caught inside the worker
    _assert_serves(small_sandbox)


def test_unexpected_exception_is_reported_and_the_worker_survives(small_sandbox: Sandbox) -> None:
    before = _worker(small_sandbox)
    with pytest.raises(InputError, match=r"^unexpected ValueError: invalid literal"):
        small_sandbox.call(int, "not a number", timeout=60, what="probe")
    assert _worker(small_sandbox) == before
    _assert_serves(small_sandbox)


def test_native_writes_to_stdout_do_not_corrupt_the_protocol(small_sandbox: Sandbox) -> None:
    """The worker moves fd 1 to stderr; bytes a native library prints never reach the pipe."""
    noise = b"\x00\x00\x00\x00\x00\x00\x00\x08garbage!"  # would parse as a frame header
    assert small_sandbox.call(os.write, 1, noise, timeout=60, what="probe") == len(noise)
    _assert_serves(small_sandbox)


# ---------------------------------------------------------------------------------------------
# Through the hub


def _truncated_squeezenet() -> bytes:
    data = _squeezenet()
    return data[: len(data) // 2]


def test_publishing_a_hostile_model_leaves_nothing_behind(hub: Hub, alice: note.Signer) -> None:
    with pytest.raises(InputError, match="malformed ONNX model: not a valid ModelProto"):
        hub.publish(_truncated_squeezenet(), repository="alice/squeeze", version="1", signer=alice)
    assert list(hub.blobs) == []
    assert hub.repositories() == []
    assert hub.models() == []
    assert hub.pinned_owner("alice") is None
    # the hub and its sandbox still work
    manifest = hub.publish(TINY, repository="alice/squeeze", version="1", signer=alice)
    assert hub.resolve("alice/squeeze") == manifest


def test_publishing_a_hostile_model_file_leaves_nothing_behind(
    hub: Hub, alice: note.Signer, tmp_path: Path
) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(_weights_model("initializer", "../../etc/passwd"))
    with pytest.raises(InputError, match=re.escape("references external data '../../etc/passwd'")):
        hub.publish(path, repository="alice/x", version="1", signer=alice)
    assert list(hub.blobs) == []
    assert hub.repositories() == []


@pytest.mark.parametrize("as_file", [False, True], ids=["bytes", "file"])
def test_publishing_above_the_size_limit_stores_nothing(
    as_file: bool, tmp_path: Path, sandbox: Sandbox, alice: note.Signer
) -> None:
    data = sklearn_model("iris")
    path = tmp_path / "iris.onnx"
    path.write_bytes(data)
    with Hub(tmp_path / "hub", limits=Limits(max_bytes=len(data) - 1), sandbox=sandbox) as small:
        with pytest.raises(InputError, match=f"above the limit of {len(data) - 1}"):
            small.publish(
                path if as_file else data, repository="alice/x", version="1", signer=alice
            )
        assert list(small.blobs) == []
        assert small.repositories() == []


def test_publish_refused_for_a_malformed_tag_leaves_nothing_behind(
    hub: Hub, alice: note.Signer
) -> None:
    with pytest.raises(InputError, match="malformed tag 'bad tag'"):
        hub.publish(TINY, repository="alice/x", version="1", signer=alice, tags=("bad tag",))
    assert hub.repositories() == []
    assert list(hub.blobs) == []
