"""zk with symbolic dimensions: every scikit-learn export has an unnamed batch dimension, which a
circuit cannot have. ``zk-setup`` binds it (default 1, or ``dims``), the endorsement records the
bound shapes, a node rebuilds the same circuit from them, and refuses requests of other shapes
with a clear message. Real ezkl (local SRS), a real node over HTTP."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from test_http import Served

from verinfer import examples, note, tensors, zk
from verinfer.client import Client
from verinfer.errors import InputError, LimitExceeded, VerificationError
from verinfer.hub.documents import ZkAddendum, sign_document
from verinfer.node import Node

ALICE = note.Signer(note.generate_key("alice")[0])
ROW = np.array([[5.1, 3.5, 1.4]], dtype=np.float32)


def _iris_mlp() -> bytes:
    """scikit-learn's MLPRegressor on iris (petal width from the other three measurements,
    3-4-1), exported by skl2onnx: its batch dimension is unnamed. A regressor keeps the circuit
    small (a classifier's softmax and argmax take lookup tables: a circuit 4 times the size)."""
    from skl2onnx import to_onnx  # noqa: PLC0415
    from sklearn.neural_network import MLPRegressor  # noqa: PLC0415

    x, _ = examples.sklearn_samples("iris")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence
        model = MLPRegressor(hidden_layer_sizes=(4,), max_iter=300, random_state=0).fit(
            x[:, :3], x[:, 3]
        )
        onx = to_onnx(model, x[:1, :3])
    return bytes(onx.SerializeToString())


def test_binding_names_every_dimension_that_is_not_fixed() -> None:
    specs = [
        {"name": "X", "dtype": "float32", "shape": [None, 4]},
        {"name": "m", "dtype": "float32", "shape": ["N", "N", 2]},
    ]
    assert zk.binding(specs) == {"X": [1, 4], "m": [1, 1, 2]}
    assert zk.binding(specs, {"X:0": 8, "N": 3}) == {"X": [8, 4], "m": [3, 3, 2]}
    assert zk.binding(specs, {"N": 3, "m:1": 5}) == {"X": [1, 4], "m": [3, 5, 2]}
    assert zk.binding([{"name": "x", "dtype": "float32", "shape": [1, 4]}]) is None
    with pytest.raises(InputError, match=r"--dim X:1: the model has no such symbolic dim"):
        zk.binding(specs, {"X:1": 2})
    with pytest.raises(InputError, match="bindable: N, X:0, m:0, m:1"):
        zk.binding(specs, {"batch": 2})
    with pytest.raises(InputError, match=r"--dim N: a dimension is bound to an integer >= 1"):
        zk.binding(specs, {"N": 0})
    with pytest.raises(InputError, match="has no declared shape"):
        zk.binding([{"name": "x", "dtype": "float32", "shape": None}])


def test_skl2onnx_iris_logistic_meets_its_real_limit() -> None:
    """Without a binding ezkl stopped at 'Undetermined symbol'; with one, the example iris
    model (a logistic regression) meets its real limit: its operator."""
    with pytest.raises(InputError, match="operator LinearClassifier is not supported by the zk"):
        zk.setup(examples.sklearn_model("iris"), [_spec(4)], Path("/nonexistent-never-written"))


def _spec(width: int) -> dict[str, object]:
    return {"name": "X", "dtype": "float32", "shape": [None, width]}


def test_skl2onnx_digits_binds_and_is_sized(tmp_path: Path) -> None:
    """The example digits MLP binds and calibrates; its circuit (2^15 rows, about 50 s to
    set up here) is sized, and refused under a budget of 2^10."""
    with pytest.raises(LimitExceeded, match=r"the circuit needs 2\^1[3-9] rows"):
        zk.setup(examples.sklearn_model("digits"), [_spec(64)], tmp_path, max_logrows=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with Node(tmp_path_factory.mktemp("zk-dims") / "node") as node:
        node.hub.publish(_iris_mlp(), repository="alice/iris-mlp", version="1", signer=ALICE)
        node.hub.zk_setup("alice/iris-mlp", ALICE)  # batch bound to the default, 1
        running = Served(node)
        try:
            yield running
        finally:
            running.stop()


def test_a_bound_circuit_answers_its_shape_and_refuses_others(
    served: Served, tmp_path: Path
) -> None:
    manifest = served.node.resolve("alice/iris-mlp")
    assert manifest.body["inputs"][0]["shape"] == [None, 3]
    addendum = served.node.hub.zk_addendum(manifest.cid)
    assert addendum.body["shapes"] == {"X": [1, 3]}  # the binding, signed by the publisher
    with Client(served.url, known_nodes=tmp_path / "known.json", allow_insecure_srs=True) as client:
        result = client.infer("alice/iris-mlp", {"X": ROW}, mode="zk")
        assert result.bundle.receipt["mode"] == "zk"  # proof verified by the SDK
        exact = ort.InferenceSession(served.node.hub.blobs.get(manifest.model)).run(
            None, {"X": ROW}
        )[0]
        assert np.abs(result.outputs["variable"] - exact).max() < 0.05  # fixed point
        size = served.node.log.size
        with pytest.raises(
            InputError,
            match=r"input 'X' has shape \[2, 3\], but the zk circuit was built for \[1, 3\]",
        ):
            client.infer("alice/iris-mlp", {"X": np.repeat(ROW, 2, axis=0)}, mode="zk")
        assert served.node.log.size == size
        # the attested mode is not bound: any batch
        assert client.infer("alice/iris-mlp", {"X": np.repeat(ROW, 3, axis=0)}).outputs[
            "variable"
        ].shape == (3, 1)
    answer = httpx.post(
        f"{served.url}/v1/infer",
        json={"model": "alice/iris-mlp", "mode": "zk", "inputs": tensors.encode_json(
            {"X": np.repeat(ROW, 2, axis=0)})},
    )  # fmt: skip
    assert answer.status_code == 400
    assert "symbolic dimensions were bound at zk-setup" in answer.json()["message"]


def test_an_endorsement_with_malformed_shapes_does_not_verify(served: Served) -> None:
    manifest = served.node.resolve("alice/iris-mlp")
    body = dict(served.node.hub.zk_addendum(manifest.cid).body)
    for shapes in ({}, {"X": [0, 4]}, {"X": "1x4"}, {"X": [True, 4]}):
        forged = sign_document({**body, "shapes": shapes}, ALICE)
        with pytest.raises(VerificationError, match="malformed zk addendum: shapes"):
            ZkAddendum.from_bytes(forged, manifest)
    # a binding that does not fit the model is refused when a node builds the circuit
    with pytest.raises(InputError, match=r"the circuit's shape \[1, 5\] for input 'X' does not"):
        zk.build(b"", manifest.body["inputs"], b"", b"", Path("/nonexistent"),
                 shapes={"X": [1, 5]})  # fmt: skip
