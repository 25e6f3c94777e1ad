"""Real models for the hub tests: scikit-learn on its bundled datasets, the architectures shipped
inside the ``onnx`` package, and hand-built graphs for edge cases. Nothing is downloaded.

Import as ``from hub_models import ...`` (pytest puts this directory on ``sys.path``)."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(LIGHT.glob("light_*.onnx"))


@functools.cache
def sklearn_model(dataset: str) -> bytes:
    """A real trained classifier, converted with skl2onnx (plain tensor outputs)."""
    from skl2onnx import to_onnx  # noqa: PLC0415 - slow import, only when a test needs it
    from sklearn import datasets  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.neural_network import MLPClassifier  # noqa: PLC0415
    from sklearn.tree import DecisionTreeClassifier  # noqa: PLC0415

    loaders = {
        "iris": (datasets.load_iris, LogisticRegression(max_iter=1000)),
        "digits": (datasets.load_digits, MLPClassifier((32,), max_iter=300, random_state=0)),
        "breast_cancer": (datasets.load_breast_cancer, DecisionTreeClassifier(random_state=0)),
    }
    load, estimator = loaders[dataset]
    x, y = load(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings do not matter here
        estimator.fit(x, y)
        model = to_onnx(estimator, x[:1].astype(np.float32), options={"zipmap": False})
    return model.SerializeToString()


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
