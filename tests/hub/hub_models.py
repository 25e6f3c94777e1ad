"""Real models for the hub tests: scikit-learn on its bundled datasets, the architectures shipped
inside the ``onnx`` package, and hand-built graphs for edge cases. Nothing is downloaded.

Import as ``from hub_models import ...`` (pytest puts this directory on ``sys.path``)."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from verinfer.examples import LIGHT, sklearn_model

__all__ = ["LIGHT", "LIGHT_MODELS", "multi_io_model", "sklearn_model", "tiny_model"]

LIGHT_MODELS = sorted(LIGHT.glob("light_*.onnx"))


def multi_io_model() -> bytes:
    """Two inputs (float with a symbolic batch dim, int64), two outputs (float, bool)."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["x", "kf"], ["y"]),
            helper.make_node("Greater", ["y", "zero"], ["positive"]),
        ],
        "multi_io",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [1, 3]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("positive", TensorProto.BOOL, ["batch", 3]),
        ],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def tiny_model(op: str = "Relu", domain: str = "", opset: int = 17) -> onnx.ModelProto:
    """``y = op(x)`` over float[N, 4]: the smallest valid model, for mutations."""
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], domain=domain)],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    imports = [helper.make_opsetid("", opset)]
    if domain:
        imports.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    return model
