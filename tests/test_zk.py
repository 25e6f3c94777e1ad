"""Zero-knowledge proofs with ezkl, offline (a local, insecure SRS made with gen_srs): a proof
binds the model's weights and the exact public inputs and outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from verinfer import cid, examples, zk
from verinfer.errors import InputError, LimitExceeded, VerificationError

SPECS = [{"name": "x", "dtype": "float32", "shape": [1, 4]}]
X = {"x": np.array([[0.5, -1.0, 0.25, 2.0]], dtype=np.float32)}


def mlp(seed: int) -> bytes:
    """A 4-8-3 MLP with seeded weights."""
    return examples.mlp([4, 8, 3], seed=seed)


@pytest.fixture(scope="module")
def circuits(tmp_path_factory: pytest.TempPathFactory) -> tuple[zk.Circuit, zk.Circuit]:
    work = tmp_path_factory.mktemp("zk")
    first = zk.setup(mlp(1), SPECS, work / "a")  # makes a local SRS
    other = zk.setup(mlp(2), SPECS, work / "b", srs=first.srs)  # other weights, same SRS
    return first, other


def _verify(circuit: zk.Circuit, proof: bytes, outputs: dict[str, np.ndarray]) -> None:
    zk.verify(proof, circuit.settings, circuit.vk, circuit.srs, [X["x"]], [outputs["y"]],
              allow_insecure_srs=True)  # fmt: skip


def test_a_proof_verifies_and_binds_inputs_and_outputs(circuits: tuple[zk.Circuit, ...]) -> None:
    circuit, _ = circuits
    outputs, proof = zk.prove(circuit, X)
    assert list(outputs) == ["y"]
    assert outputs["y"].shape == (1, 3)
    import onnxruntime as ort  # noqa: PLC0415

    exact = ort.InferenceSession(mlp(1)).run(None, X)[0]
    assert np.abs(outputs["y"] - exact).max() < 0.05  # fixed point, close to the float model
    _verify(circuit, proof, outputs)
    altered = {"y": outputs["y"].copy()}
    altered["y"][0, 0] += 2.0**-8
    with pytest.raises(VerificationError, match="public instances"):
        _verify(circuit, proof, altered)
    with pytest.raises(VerificationError, match="public instances"):
        zk.verify(proof, circuit.settings, circuit.vk, circuit.srs, [X["x"] + 1],
                  [outputs["y"]], allow_insecure_srs=True)  # fmt: skip
    nudged = {"y": outputs["y"] + np.float32(2.0**-16)}  # within half a quantum: still refused
    with pytest.raises(VerificationError, match="not values the circuit produces"):
        _verify(circuit, proof, nudged)
    odds = (
        ({"y": np.full((1, 3), np.nan, np.float32)}, r"shape \[1, 3\] .* or is not finite"),
        ({"y": outputs["y"].reshape(3, 1)[:2]}, r"shape \[2, 1\] is not the circuit's \[1, 3\]"),
        ({"y": outputs["y"].astype(np.float64)}, "not values the circuit produces"),
    )
    for odd, message in odds:
        with pytest.raises(VerificationError, match=message):
            _verify(circuit, proof, odd)
    with pytest.raises(VerificationError, match="1 inputs and 1 outputs; 1 and 2"):
        zk.verify(proof, circuit.settings, circuit.vk, circuit.srs, [X["x"]],
                  [outputs["y"], outputs["y"]], allow_insecure_srs=True)  # fmt: skip
    truncated = proof[: len(proof) // 2]
    with pytest.raises(VerificationError, match="malformed proof or settings"):
        _verify(circuit, truncated, outputs)


def test_a_proof_made_with_other_weights_fails_against_the_published_key(
    circuits: tuple[zk.Circuit, ...],
) -> None:
    published, other = circuits
    assert published.vk != other.vk  # the weights are in the circuit, hence in the key
    outputs, proof = zk.prove(other, X)
    zk.verify(proof, other.settings, other.vk, other.srs, [X["x"]], [outputs["y"]],
              allow_insecure_srs=True)  # fmt: skip
    with pytest.raises(VerificationError, match="does not verify"):
        _verify(published, proof, outputs)


def test_a_locally_made_srs_is_refused_unless_allowed(circuits: tuple[zk.Circuit, ...]) -> None:
    circuit, _ = circuits
    outputs, proof = zk.prove(circuit, X)
    with pytest.raises(VerificationError, match="not a trusted one"):
        zk.verify(proof, circuit.settings, circuit.vk, circuit.srs, [X["x"]], [outputs["y"]])
    zk.verify(proof, circuit.settings, circuit.vk, circuit.srs, [X["x"]], [outputs["y"]],
              trusted_srs=[cid.compute(circuit.srs)])  # fmt: skip
    assert circuit.cids["srs"] == cid.compute(circuit.srs)


def test_unsuitable_models_and_inputs_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="zk mode takes floats"):
        zk.setup(mlp(1), [{"name": "x", "dtype": "int64", "shape": [1, 4]}], tmp_path / "i")


def test_an_unsupported_operator_is_named(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Det", ["x"], ["y"])],
        "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    specs = [{"name": "x", "dtype": "float32", "shape": [2, 2]}]
    with pytest.raises(InputError, match="operator Det is not supported by the zk prover"):
        zk.setup(model.SerializeToString(), specs, tmp_path / "det")


def test_a_circuit_above_the_budget_is_refused_with_sizes(tmp_path: Path) -> None:
    with pytest.raises(LimitExceeded, match=r"needs 2\^\d+ rows .* budget is 2\^10 rows"):
        zk.setup(mlp(1), SPECS, tmp_path / "big", max_logrows=10)
