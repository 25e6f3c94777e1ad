"""Models ONNX Runtime runs are hosted as they are: NaN and infinity as inputs, operator domains
that are declared but unused, and checker false positives inside function bodies. Each through a
real node over HTTP, with the bundle verified offline."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
from test_http import Served

from verinfer import note, tensors
from verinfer.client import Client
from verinfer.errors import InputError, VerificationError
from verinfer.hub.documents import MANIFEST_TYPE, Manifest, sign_document
from verinfer.node import Node
from verinfer.verify import Bundle, verify_bundle


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with Node(tmp_path_factory.mktemp("fidelity") / "node") as node:
        running = Served(node)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture(scope="module")
def alice() -> note.Signer:  # one owner key for the module's node (it pins the first it sees)
    return note.Signer(note.generate_key("alice")[0])


@pytest.fixture
def client(served: Served, tmp_path: Path) -> Iterator[Client]:
    with Client(served.url, known_nodes=tmp_path / "known.json") as opened:
        yield opened


def _model(nodes: list[onnx.NodeProto], inputs: list[Any], outputs: list[Any],
           imports: dict[str, int], **extra: Any) -> bytes:  # fmt: skip
    graph = helper.make_graph(nodes, "fidelity", inputs, outputs)
    opsets = [helper.make_opsetid(domain, version) for domain, version in imports.items()]
    model = helper.make_model(graph, opset_imports=opsets, **extra)
    model.ir_version = 8
    return model.SerializeToString()


def _checked(served: Served, result: Any, inputs: dict[str, np.ndarray]) -> None:
    """The answer's bundle verifies offline, from its JSON, for exactly these tensors."""
    bundle = Bundle.from_json(result.bundle.to_json())
    verify_bundle(bundle, [served.node.vkey], inputs=inputs, outputs=result.outputs)
    assert bundle.receipt["inputs"] == tensors.map_digest(inputs)  # the exact bytes, NaN too


# -- NaN and infinity ------------------------------------------------------------------------


def test_nan_and_infinity_are_inputs_like_any_other(
    served: Served, client: Client, alice: note.Signer
) -> None:
    data = _model(
        [helper.make_node("IsNaN", ["x"], ["nan"]), helper.make_node("IsInf", ["x"], ["inf"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [
            helper.make_tensor_value_info("nan", TensorProto.BOOL, ["N"]),
            helper.make_tensor_value_info("inf", TensorProto.BOOL, ["N"]),
        ],
        {"": 17},
    )
    client.publish(data, repository="alice/isnan", version="1", signer=alice)
    x = np.array([1.0, np.nan, np.inf, -np.inf, -0.0], dtype=np.float32)
    result = client.infer("alice/isnan", {"x": x})
    assert result.outputs["nan"].tolist() == [False, True, False, False, False]
    assert result.outputs["inf"].tolist() == [False, False, True, True, False]
    _checked(served, result, {"x": x})
    # a NaN with another payload is other bytes: another digest, the receipt names which
    other = x.copy()
    other.view(np.uint32)[1] = 0x7FC00001
    assert tensors.map_digest({"x": other}) != tensors.map_digest({"x": x})
    assert client.infer("alice/isnan", {"x": other}).bundle.receipt["inputs"] == (
        tensors.map_digest({"x": other})
    )


@contextlib.contextmanager
def _skl2onnx_tree_fix() -> Iterator[None]:
    """skl2onnx 1.20 passes a Python bool where ONNX wants an int in
    ``nodes_missing_value_tracks_true`` (onnx >= 1.17 refuses it), so HistGradientBoosting
    does not convert; cast it, for the duration of one conversion."""
    import skl2onnx.common.tree_ensemble as trees  # noqa: PLC0415

    original = trees.add_node

    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        return original(
            *args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs
        )

    trees.add_node = add_node
    try:
        yield
    finally:
        trees.add_node = original


def test_histgradientboosting_reads_nan_as_missing(
    served: Served, client: Client, alice: note.Signer
) -> None:
    """scikit-learn's NaN-means-missing convention, exported by skl2onnx, through a node."""
    from skl2onnx import to_onnx  # noqa: PLC0415
    from sklearn.datasets import load_iris  # noqa: PLC0415
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415

    features, labels = load_iris(return_X_y=True)
    features = features.astype(np.float32)
    features[::3, 2] = np.nan  # petal length missing in a third of the rows
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(features, labels)
    with _skl2onnx_tree_fix():
        onx = to_onnx(model, features[:1], options={"zipmap": False})
    client.publish(onx.SerializeToString(), repository="alice/hgb", version="1", signer=alice)
    rows = np.array(
        [[5.1, 3.5, np.nan, 0.2], [6.7, 3.0, np.nan, 2.3], [np.nan] * 4, [5.9, 3.0, 4.2, 1.5]],
        dtype=np.float32,
    )
    result = client.infer("alice/hgb", {"X": rows})
    assert result.outputs["label"].tolist() == model.predict(rows).tolist()
    assert np.allclose(result.outputs["probabilities"], model.predict_proba(rows), atol=1e-5)
    _checked(served, result, {"X": rows})


def test_a_publisher_may_declare_finite_inputs(
    served: Served, client: Client, alice: note.Signer
) -> None:
    data = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        {"": 17},
    )
    manifest = client.publish(
        data, repository="alice/finite", version="1", signer=alice, finite_inputs=True
    )
    assert manifest.body["finite_inputs"] is True
    good = {"x": np.array([1.0, -1.0], dtype=np.float32)}
    _checked(served, client.infer("alice/finite", good), good)
    size = served.node.log.size
    with pytest.raises(InputError, match=r"input 'x' holds NaN or infinity at index \[1\], and"):
        client.infer("alice/finite", {"x": np.array([1.0, np.inf], dtype=np.float32)})
    body = {"model": "alice/finite", "inputs": tensors.encode_json({"x": np.full(2, np.nan)})}
    body["inputs"]["x"]["dtype"] = "float32"
    body["inputs"]["x"]["base64"] = "AADAfwAAwH8="  # two float32 NaNs
    answer = httpx.post(f"{served.url}/v1/infer", json=body)
    assert answer.status_code == 400
    assert "publisher declared finite inputs only" in answer.json()["message"]
    assert served.node.log.size == size
    # one way to say it: a manifest with "finite_inputs": false does not verify
    forged = {**manifest.body, "finite_inputs": False}
    with pytest.raises(VerificationError, match="field 'finite_inputs' is False"):
        Manifest.from_bytes(sign_document(forged, alice))
    assert forged["type"] == MANIFEST_TYPE


# -- operator domains ------------------------------------------------------------------------


def test_a_declared_but_unused_domain_is_hosted(
    served: Served, client: Client, alice: note.Signer
) -> None:
    data = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        {"": 17, "ai.onnx.preview": 1, "com.microsoft": 1},
    )
    manifest = client.publish(data, repository="alice/preview", version="1", signer=alice)
    assert manifest.body["opsets"] == {"ai.onnx": 17, "ai.onnx.preview": 1, "com.microsoft": 1}
    x = {"x": np.array([[-1.0, 2.0]], dtype=np.float32)}
    result = client.infer("alice/preview", x)
    assert result.outputs["y"].tolist() == [[0.0, 2.0]]
    _checked(served, result, x)


def test_a_foreign_operator_inside_a_local_function_is_refused(
    served: Served, client: Client, alice: note.Signer
) -> None:
    """The domains actually used include local functions' bodies (and their subgraphs); the
    call of a local function is judged by its body, whatever domain the function is in."""
    body = [helper.make_node("FusedConv", ["a"], ["b"], domain="com.microsoft")]
    function = helper.make_function(
        "local.fns", "Wrapped", ["a"], ["b"], body, [helper.make_opsetid("", 17)]
    )
    data = _model(
        [helper.make_node("Wrapped", ["x"], ["y"], domain="local.fns")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        {"": 17, "local.fns": 1},
        functions=[function],
    )
    with pytest.raises(InputError, match=r"operator domain 'com\.microsoft' is not allowed: node"):
        client.publish(data, repository="alice/wrapped", version="1", signer=alice)
    fine = helper.make_function(
        "local.fns", "Wrapped", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )  # fmt: skip
    data = _model(
        [helper.make_node("Wrapped", ["x"], ["y"], domain="local.fns")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        {"": 17, "local.fns": 1},
        functions=[fine],
    )
    client.publish(data, repository="alice/wrapped", version="1", signer=alice)
    x = {"x": np.array([-3.0, 3.0], dtype=np.float32)}
    result = client.infer("alice/wrapped", x)
    assert result.outputs["y"].tolist() == [0.0, 3.0]
    _checked(served, result, x)


# -- checker false positives -----------------------------------------------------------------


def test_a_checker_failure_inside_a_function_body_is_set_aside_and_recorded(
    served: Served, client: Client, alice: note.Signer
) -> None:
    """MeanVarianceNormalization with its default axes fails onnx.checker's strict shape
    inference inside its function body; ONNX Runtime runs it."""
    data = _model(
        [helper.make_node("MeanVarianceNormalization", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 2, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 2, 1])],
        {"": 13},
    )
    with pytest.raises(onnx.shape_inference.InferenceError, match="op_type:Constant"):
        onnx.checker.check_model(onnx.ModelProto.FromString(data), full_check=True)
    manifest = client.publish(data, repository="alice/mvn", version="1", signer=alice)
    finding = manifest.body["analysis"]["checker"]
    assert "inside the function body of MeanVarianceNormalization" in finding
    assert manifest.body["determinism"]["bit_identical"] is True
    x = np.arange(12, dtype=np.float32).reshape(2, 3, 2, 1) ** 1.5
    result = client.infer("alice/mvn", {"x": x})
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    expected = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True))
    assert np.allclose(result.outputs["y"], expected, atol=1e-5)
    _checked(served, result, {"x": x})
    # the finding is a fact: a manifest that leaves it out does not match the node's analysis
    hidden = {k: v for k, v in manifest.body.items() if k != "analysis"}
    hidden["version"] = "2"
    with pytest.raises(VerificationError, match="the manifest says analysis = None"):
        served.node.hub.accept(sign_document(hidden, alice), [])


def test_a_checker_failure_in_the_graph_itself_is_still_refused(
    client: Client, alice: note.Signer
) -> None:
    data = _model(
        [helper.make_node("Add", ["x", "z"], ["y"])],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        {"": 17},
    )
    with pytest.raises(InputError, match=r"the ONNX checker rejects the model: .*Incompatible"):
        client.publish(data, repository="alice/bad", version="1", signer=alice)


# -- inputs as people type them --------------------------------------------------------------


def _iris(client: Client, alice: note.Signer) -> None:
    from verinfer.examples import sklearn_model  # noqa: PLC0415

    if "alice/iris" not in [m.get("repository") for m in client.models(owner="alice")]:
        client.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)


def test_plain_lists_over_http_take_dtype_and_shape_from_the_signature(
    served: Served, client: Client, alice: note.Signer
) -> None:
    _iris(client, alice)
    answer = httpx.post(
        f"{served.url}/v1/infer",
        json={"model": "alice/iris", "inputs": {"X": [[5.1, 3.5, 1.4, 0.2]]}},
    )
    assert answer.status_code == 200, answer.text
    typed = {"X": np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)}
    outputs = tensors.decode_json(answer.json()["outputs"])
    assert outputs["label"].tolist() == [0]
    bundle = Bundle.from_json(answer.json()["bundle"])
    verify_bundle(bundle, [served.node.vkey], inputs=typed, outputs=outputs)
    size = served.node.log.size
    cases = {
        "input 'X' is a plain list of shape [4], but the model expects shape [None, 4] of "
        "float32 (rank 2: [[...]])": [5.1, 3.5, 1.4, 0.2],
        "input 'X' is a plain list of shape [1, 3], but the model expects shape": [[1, 2, 3]],
        "input 'X': data is not a regular nested list (its rows differ": [[1, 2, 3, 4], [1]],
        "tensor 'X': data does not fit dtype float32: need numbers": [[1, 2, 3, "4"]],
    }
    for message, value in cases.items():
        answer = httpx.post(
            f"{served.url}/v1/infer", json={"model": "alice/iris", "inputs": {"X": value}}
        )
        assert answer.status_code == 400, answer.text
        assert message in answer.json()["message"]
    answer = httpx.post(
        f"{served.url}/v1/infer", json={"model": "alice/nope", "inputs": {"X": [1]}}
    )
    assert answer.status_code == 404
    assert served.node.log.size == size


def test_plain_lists_through_the_sdk_are_typed_and_verified(
    served: Served, client: Client, alice: note.Signer
) -> None:
    _iris(client, alice)
    result = client.infer("alice/iris", {"X": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})
    assert result.outputs["label"].tolist() == [0, 2]
    typed = {"X": np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)}
    assert result.bundle.receipt["inputs"] == tensors.map_digest(typed)
    _checked(served, result, typed)
    # the explicit form stays, for exactness: float64 is not silently narrowed
    with pytest.raises(InputError, match="input 'X' has dtype float64, expected float32"):
        client.infer("alice/iris", {"X": typed["X"].astype(np.float64)})
    with pytest.raises(InputError, match="input 'X' is a str: give a numpy array or nested"):
        client.infer("alice/iris", {"X": "5.1 3.5 1.4 0.2"})


# -- the determinism probe -------------------------------------------------------------------


def _int64(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.INT64, shape)


@pytest.mark.parametrize(
    ("name", "nodes", "inputs", "output", "request_"),
    [
        (  # random integers in [0, 4) index out of range: zeros are always in range
            "gather",
            [helper.make_node("Gather", ["data", "i"], ["y"])],
            [helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 3]), _int64("i", [8])],
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 3]),
            {"data": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.ones(8, np.int64)},
        ),
        (  # random divisors include 0
            "div",
            [helper.make_node("Div", ["a", "b"], ["y"])],
            [_int64("a", [16]), _int64("b", [16])],
            _int64("y", [16]),
            {"a": np.full(16, 7, np.int64), "b": np.full(16, 2, np.int64)},
        ),
        (  # a Reshape target must fit: zeros copy every dim
            "reshape",
            [helper.make_node("Reshape", ["x", "shape"], ["y"])],
            [
                helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
                _int64("shape", [3]),
            ],
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c"]),
            {"x": np.ones((2, 3, 4), np.float32), "shape": np.array([4, 3, 2], np.int64)},
        ),
    ],
)
def test_the_probe_finds_inputs_the_model_accepts(
    served: Served,
    client: Client,
    alice: note.Signer,
    name: str,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    output: onnx.ValueInfoProto,
    request_: dict[str, np.ndarray],
) -> None:
    data = _model(nodes, inputs, [output], {"": 17})
    manifest = client.publish(data, repository=f"alice/probe-{name}", version="1", signer=alice)
    verdict = manifest.body["determinism"]
    assert verdict["bit_identical"] is True, verdict
    assert verdict["inputs"] in {"positive", "zeros", "ones", "zeros-last-minus-one"}
    assert "error" not in verdict
    result = client.infer(f"alice/probe-{name}", request_)
    _checked(served, result, request_)


def test_null_means_the_model_cannot_run_on_any_probe_family(
    client: Client, alice: note.Signer
) -> None:
    """An index that is 5 or more into 3 elements, whatever the family: nothing runs it."""
    data = _model(
        [
            helper.make_node("Add", ["i", "five"], ["j"]),
            helper.make_node("Gather", ["data", "j"], ["y"]),
        ],
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [3]), _int64("i", [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        {"": 17},
    )
    model = onnx.ModelProto.FromString(data)
    model.graph.initializer.append(helper.make_tensor("five", TensorProto.INT64, [], [5]))
    manifest = client.publish(
        model.SerializeToString(), repository="alice/probe-never", version="1", signer=alice
    )
    verdict = manifest.body["determinism"]
    assert verdict["bit_identical"] is None
    assert "inputs" not in verdict
    assert verdict["error"].startswith("the probe could not run the model: ")
    assert "Gather" in verdict["error"] or "indices" in verdict["error"]
