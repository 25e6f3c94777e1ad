"""Zero-knowledge mode end to end: a publisher endorses a circuit for a published model, a node
answers zk requests with a proof, the SDK verifies it (proof, endorsement, instances), and so does
an offline verifier holding the materials. A real node on 127.0.0.1, real ezkl (local SRS)."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from test_http import Served

from verinfer import cid, note
from verinfer.client import Client
from verinfer.errors import NotFound, VerificationError
from verinfer.node import Node
from verinfer.verify import Bundle, verify_bundle

sys.path.insert(0, str(Path(__file__).parents[1]))
from test_zk import X, mlp

ALICE = note.Signer(note.generate_key("alice")[0])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    node = Node(tmp_path_factory.mktemp("zk-node") / "node")
    node.hub.publish(mlp(1), repository="alice/mlp", version="1", signer=ALICE)
    node.hub.publish(mlp(2), repository="alice/plain", version="1", signer=ALICE)
    node.hub.zk_setup("alice/mlp", ALICE)  # the publisher endorses a circuit (local SRS)
    running = Served(node)
    try:
        yield running
    finally:
        running.stop()
        node.close()


def test_a_zk_answer_is_proven_and_verified(served: Served) -> None:
    vkey = served.node.vkey
    with Client(served.url, trusted_vkeys=[vkey], allow_insecure_srs=True) as client:
        result = client.infer("alice/mlp", X, mode="zk")
        materials = client.zk_materials(result.bundle)
    bundle = Bundle.from_json(result.bundle.to_json())
    assert bundle.receipt["mode"] == "zk"
    exact = ort.InferenceSession(mlp(1)).run(None, X)[0]
    assert np.abs(result.outputs["y"] - exact).max() < 0.05  # the circuit's fixed point
    lines: list[str] = []
    verify_bundle(bundle, [vkey], X, result.outputs, zk_materials=materials,
                  allow_insecure_srs=True, report=lines.append)  # fmt: skip
    assert any(line.startswith("7. the zero-knowledge proof verifies") for line in lines)
    # the SRS policy, missing materials, a forged material, other outputs
    with pytest.raises(VerificationError, match="not a trusted one"):
        verify_bundle(bundle, [vkey], X, result.outputs, zk_materials=materials)
    srs = next(name for name, data in materials.items() if len(data) > 1_000_000)
    verify_bundle(bundle, [vkey], X, result.outputs, zk_materials=materials, trusted_srs=[srs])
    with pytest.raises(VerificationError, match="needs the inputs, the outputs"):
        verify_bundle(bundle, [vkey], X, result.outputs)
    forged = dict(materials)
    forged[bundle.zk_addendum] = forged[bundle.zk_addendum] + b" "
    with pytest.raises(VerificationError, match="step 7"):
        verify_bundle(bundle, [vkey], X, result.outputs, zk_materials=forged,
                      allow_insecure_srs=True)  # fmt: skip
    proof = json.loads(bundle.zk_proof)  # one flipped bit of the proof itself
    proof["proof"][40] ^= 1
    proof["hex_proof"] = "0x" + bytes(proof["proof"]).hex()
    flipped = dataclasses.replace(bundle, zk_proof=json.dumps(proof))
    with pytest.raises(VerificationError, match="step 7"):
        verify_bundle(flipped, [vkey], X, result.outputs, zk_materials=materials,
                      allow_insecure_srs=True)  # fmt: skip
    assert cid.compute(materials[bundle.zk_addendum]) == bundle.zk_addendum


def test_the_sdk_refuses_an_insecure_srs_unless_told_and_unendorsed_models(
    served: Served,
) -> None:
    with (
        Client(served.url, trusted_vkeys=[served.node.vkey]) as strict,
        pytest.raises(VerificationError, match="not a trusted one"),
    ):
        strict.infer("alice/mlp", X, mode="zk")
    with (
        Client(served.url, trusted_vkeys=[served.node.vkey], allow_insecure_srs=True) as client,
        pytest.raises(NotFound, match="no zero-knowledge circuit is endorsed"),
    ):
        client.infer("alice/plain", X, mode="zk")
