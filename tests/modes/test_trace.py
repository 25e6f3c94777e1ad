"""Steps, states and bounds, on hand-built graphs: what a dispute's referee judges by."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from verinfer import merkle
from verinfer.engine.trace import Steps, bound, leaf_bytes, reduction, run_step
from verinfer.errors import InputError
from verinfer.modes.dispute import Reveal, _agree_within


def _model(nodes: list, inputs: list, outputs: list, inits: list = (), opset: int = 18) -> bytes:  # type: ignore[type-arg,assignment]
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _float(name: str, shape: list[int]) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_live_sets_and_roots_follow_the_graph() -> None:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    steps = Steps(_model(
        [helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
         helper.make_node("Add", ["b", "x"], ["y"])],
        [_float("x", [1, 4])], [_float("y", [1, 4])], [w],
    ))  # fmt: skip
    assert steps.count == 3
    assert [steps.live(i) for i in range(4)] == [["w", "x"], ["a", "x"], ["b", "x"], ["y"]]
    assert steps.computed(0) == ["x"]
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    trace = steps.trace({"x": x})
    # state 1: computed leaves a, x; no initializer is live any more
    digests = dict(trace.computed(1))
    computed = merkle.root(merkle.leaf_hashes(leaf_bytes(n, digests[n]) for n in ["a", "x"]))
    assert trace.root(1) == merkle.node_hash(computed, merkle.root([]))
    with pytest.raises(InputError, match="other computed tensors"):
        steps.root(1, {"a": digests["a"]})
    assert np.array_equal(run_step(steps, 2, {"a": trace.values["a"]})["b"], trace.values["b"])


@pytest.mark.parametrize(
    ("node", "shape", "wanted"),
    [
        (helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=-1), [1, 512, 768], 772),
        (helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"]), [1, 64, 56, 56],
         56 * 56 + 4),
        (helper.make_node("ReduceMean", ["x", "axes"], ["y"]), [1, 3, 224, 224], 224 + 4),
        (helper.make_node("Softmax", ["x"], ["y"], axis=-1), [2, 1000], 1004),
        (helper.make_node("Einsum", ["x", "s"], ["y"], equation="bij,jk->bik"), [2, 8, 16], 16),
    ],
)  # fmt: skip
def test_reduction_lengths_come_from_the_operator_and_its_shapes(
    node: object, shape: list[int], wanted: int
) -> None:
    einsum = "Einsum" in str(node)
    s = np.ones((16, 4) if einsum else (shape[-1],), np.float32)
    inits = [numpy_helper.from_array(np.array([3], np.int64), "axes"),
             numpy_helper.from_array(np.ones(16, np.float32), "b"),
             numpy_helper.from_array(s, "s")]  # fmt: skip
    steps = Steps(_model([node], [_float("x", shape)], [_float("y", None)], inits))  # type: ignore[arg-type]
    shapes = {"x": tuple(shape), "s": s.shape}
    assert reduction(steps.step(1), shapes, steps.initializer) == wanted


def test_quantized_integer_outputs_may_differ_by_one_step() -> None:
    steps = Steps(_model(
        [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"])],
        [_float("x", [4])], [helper.make_tensor_value_info("q", TensorProto.UINT8, [4])],
        [numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
         numpy_helper.from_array(np.array(0, np.uint8), "zero")],
    ))  # fmt: skip
    assert bound(steps.step(1), {"x": (4,)}, np.zeros(4, np.uint8)) == 1.0
    relu = Steps(_model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT32)],
                        [_float("x", [4])],
                        [helper.make_tensor_value_info("y", TensorProto.INT32, [4])]))  # fmt: skip
    assert bound(relu.step(1), {"x": (4,)}, np.zeros(4, np.int32)) == 0.0


def test_models_disputes_cannot_cover_are_refused_by_name() -> None:
    zipmap = helper.make_node("ZipMap", ["x"], ["y"], domain="ai.onnx.ml", classlabels_int64s=[0])
    with pytest.raises(InputError, match="makes sequences or maps"):
        Steps(_model([zipmap], [_float("x", [1, 1])], [_float("y", None)]))
    backwards = [helper.make_node("Relu", ["a"], ["y"]), helper.make_node("Relu", ["x"], ["a"])]
    with pytest.raises(InputError, match="not in topological order"):
        Steps(_model(backwards, [_float("x", [1])], [_float("y", [1])]))
    with pytest.raises(InputError, match="not an ONNX model"):
        Steps(b"not onnx")


def test_agreement_across_classes_treats_infinities_as_values() -> None:
    def reveal(values: list[float]) -> Reveal:
        return Reveal([("t", "sha256:" + "0" * 64)], {"t": np.array(values, np.float32)})

    other = Reveal([("t", "sha256:" + "1" * 64)], {"t": np.array([1.0, 2.0], np.float32)})
    assert _agree_within(reveal([1.00001, 2.0]), other)
    assert not _agree_within(reveal([1.1, 2.0]), other)
    inf = Reveal([("t", "sha256:" + "1" * 64)], {"t": np.array([1, 2, -np.inf], np.float32)})
    assert not _agree_within(reveal([1000, -5e6, 3]), inf)  # a challenger's -inf scales nothing
    assert _agree_within(reveal([1, 2, -np.inf]), inf)
    assert not _agree_within(reveal([1, 2, np.inf]), inf)
