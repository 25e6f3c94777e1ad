"""Zero-knowledge mode end to end: a publisher endorses a circuit for a published model, a node
answers zk requests with a proof, the SDK verifies it (proof, endorsement, instances), and so does
an offline verifier holding the materials. A real node on 127.0.0.1, real ezkl (local SRS)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from test_http import Served

from verinfer import cid, note, tensors
from verinfer.client import AsyncClient, Client, Result
from verinfer.errors import NotFound, VerificationError
from verinfer.hub.documents import Manifest, ZkAddendum
from verinfer.modes.zk import ZkProof
from verinfer.node import Node
from verinfer.verify import Bundle, verify_bundle

sys.path.insert(0, str(Path(__file__).parents[1]))
from test_zk import X, mlp

ALICE = note.Signer(note.generate_key("alice")[0])
VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]


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
    mallory = note.generate_key("alice")[1]  # the owner's name, another key
    for publishers, message in (
        ([mallory], "not a trusted publisher"),
        ([note.generate_key("bob")[1]], "no publisher key is trusted for owner 'alice'"),
    ):
        with (
            Client(served.url, trusted_vkeys=[vkey], allow_insecure_srs=True,
                   trusted_publishers=publishers) as client,
            pytest.raises(VerificationError, match=message),
        ):  # fmt: skip
            client.infer("alice/mlp", X, mode="zk")
    with Client(served.url, trusted_vkeys=[vkey], allow_insecure_srs=True,
                trusted_publishers=[ALICE.vkey]) as client:  # fmt: skip
        result = client.infer("alice/mlp", X, mode="zk")
        materials = client.zk_materials(result.bundle)
        fetched: list[str] = []
        client._http.event_hooks = {"request": [lambda r: fetched.append(r.url.path)]}
        client.infer("alice/mlp", X, mode="zk")  # the materials are kept by CID
        assert not [path for path in fetched if path.startswith("/v1/blobs/")]
    bundle = Bundle.from_json(result.bundle.to_json())
    assert bundle.receipt["mode"] == "zk"
    exact = ort.InferenceSession(mlp(1)).run(None, X)[0]
    assert np.abs(result.outputs["y"] - exact).max() < 0.05  # the circuit's fixed point
    lines: list[str] = []
    verify_bundle(bundle, [vkey], X, result.outputs, zk_materials=materials,
                  zk_publishers=[ALICE.vkey], allow_insecure_srs=True,
                  report=lines.append)  # fmt: skip
    assert any(line.startswith("7. the zero-knowledge proof verifies") for line in lines)
    # the SRS policy, missing materials, a forged material, other outputs
    policy = {"zk_materials": materials, "zk_publishers": [ALICE.vkey]}
    with pytest.raises(VerificationError, match="not a trusted one"):
        verify_bundle(bundle, [vkey], X, result.outputs, **policy)  # type: ignore[arg-type]
    srs = next(name for name, data in materials.items() if len(data) > 1_000_000)
    verify_bundle(bundle, [vkey], X, result.outputs, trusted_srs=[srs], **policy)  # type: ignore[arg-type]
    # who endorsed the circuit matters: another publisher key, or none, is refused
    mallory = note.Signer(note.generate_key("alice")[0]).vkey  # the same owner name
    for publishers, message in (([mallory], "not a trusted publisher"), ([], "publisher keys")):
        with pytest.raises(VerificationError, match=message):
            verify_bundle(bundle, [vkey], X, result.outputs, zk_materials=materials,
                          zk_publishers=publishers, trusted_srs=[srs])  # fmt: skip
    # the outputs under other names, or an invented one, are not what was proven
    swapped = {"z": result.outputs["y"]}
    with pytest.raises(VerificationError, match=r"step 5 \(outputs\)"):  # names are digested
        verify_bundle(bundle, [vkey], X, swapped, trusted_srs=[srs], **policy)  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="needs the inputs, the outputs"):
        verify_bundle(bundle, [vkey], X, result.outputs)
    forged = dict(materials)
    forged[bundle.zk_addendum] = forged[bundle.zk_addendum] + b" "
    with pytest.raises(VerificationError, match="step 7"):
        verify_bundle(bundle, [vkey], X, result.outputs, zk_materials=forged,
                      zk_publishers=[ALICE.vkey], allow_insecure_srs=True)  # fmt: skip
    proof = json.loads(bundle.zk_proof)  # one flipped bit of the proof itself
    proof["proof"][40] ^= 1
    proof["hex_proof"] = "0x" + bytes(proof["proof"]).hex()
    flipped = dataclasses.replace(bundle, evidence=ZkProof(bundle.zk_addendum, json.dumps(proof)))
    with pytest.raises(VerificationError, match="step 7"):
        verify_bundle(flipped, [vkey], X, result.outputs, zk_materials=materials,
                      zk_publishers=[ALICE.vkey], allow_insecure_srs=True)  # fmt: skip
    assert cid.compute(materials[bundle.zk_addendum]) == bundle.zk_addendum


def test_the_async_client_verifies_zk_through_the_same_flow(served: Served) -> None:
    """AsyncClient drives the very flow Client does: the proof, the endorsement by a trusted
    publisher, the SRS policy (it could not ask for zk at all before)."""

    async def ask(publisher: str) -> Result:
        async with AsyncClient(served.url, trusted_vkeys=[served.node.vkey],
                               allow_insecure_srs=True,
                               trusted_publishers=[publisher]) as client:  # fmt: skip
            return await client.infer("alice/mlp", X, mode="zk")

    result = asyncio.run(ask(ALICE.vkey))
    assert result.bundle.receipt["mode"] == "zk"
    assert result.bundle.zk_addendum
    mallory = note.generate_key("alice")[1]
    with pytest.raises(VerificationError, match=r"step 7 \(zk\).*not a trusted publisher"):
        asyncio.run(ask(mallory))


def test_the_sdk_refuses_an_insecure_srs_unless_told_and_unendorsed_models(
    served: Served,
) -> None:
    keys = {"trusted_vkeys": [served.node.vkey], "trusted_publishers": [ALICE.vkey]}
    with (
        Client(served.url, **keys) as strict,  # type: ignore[arg-type]
        pytest.raises(VerificationError, match="not a trusted one"),
    ):
        strict.infer("alice/mlp", X, mode="zk")
    with (
        Client(served.url, allow_insecure_srs=True, **keys) as client,  # type: ignore[arg-type]
        pytest.raises(NotFound, match="no zero-knowledge circuit is endorsed"),
    ):
        client.infer("alice/plain", X, mode="zk")


def test_the_cli_sets_up_asks_and_verifies_zk(served: Served, tmp_path: Path) -> None:
    env = {**os.environ, "VERINFER_HOME": str(tmp_path / "home")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*VERINFER, *args], capture_output=True, text=True, timeout=300,
                              env=env, check=False)  # fmt: skip

    files = {name: tmp_path / name for name in ("x.json", "b.json", "o.json", "t.txt", "m.onnx")}
    files["x.json"].write_text(json.dumps(tensors.encode_json(X)))
    files["t.txt"].write_text(served.node.vkey + "\n")
    materials = tmp_path / "materials"
    asked = run("infer", "alice/mlp", "--inputs", str(files["x.json"]), "--node", served.url,
                "--mode", "zk", "--allow-insecure-srs", "--zk-materials", str(materials),
                "--bundle", str(files["b.json"]), "--outputs", str(files["o.json"]))  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert len(list(materials.iterdir())) == 5  # addendum, manifest, settings, key, SRS
    check = ["verify", str(files["b.json"]), "--trust", str(files["t.txt"]), "--inputs",
             str(files["x.json"]), "--outputs", str(files["o.json"]), "--zk-materials",
             str(materials), "--publisher", ALICE.vkey]  # fmt: skip
    refused = run(*check)
    assert refused.returncode == 1
    assert "not a trusted one" in refused.stderr
    verified = run(*check, "--allow-insecure-srs")
    assert verified.returncode == 0, verified.stderr
    assert "7. the zero-knowledge proof verifies" in verified.stdout
    # a remote publisher: publish on the node, pull the signed documents, endorse, push
    assert run("key", "generate", "--name", "bob").returncode == 0
    files["m.onnx"].write_bytes(mlp(3))
    for step in (
        ["model", "publish", str(files["m.onnx"]), "--name", "bob/mlp", "--version", "1",
         "--node", served.url],
        ["model", "pull", "bob/mlp", "--node", served.url],
    ):  # fmt: skip
        done = run(*step)
        assert done.returncode == 0, (step, done.stderr)
    endorsed = run("model", "zk-setup", "bob/mlp", "--node", served.url)
    assert endorsed.returncode == 0, endorsed.stderr
    assert "zk addendum bafkrei" in endorsed.stdout
    assert "development only" in endorsed.stderr
    answered = run("infer", "bob/mlp", "--inputs", str(files["x.json"]), "--node", served.url,
                   "--mode", "zk", "--allow-insecure-srs", "--bundle",
                   str(tmp_path / "bob.json"))  # fmt: skip
    assert answered.returncode == 0, answered.stderr


def test_endorsements_are_served_and_never_rolled_back(served: Served) -> None:
    hub = served.node.hub
    manifest = hub.resolve("alice/mlp")
    current = hub.zk_addendum(manifest.cid)
    names = {key: current.body[key] for key in ("settings", "vk", "srs")}
    older = ZkAddendum.create(manifest, logrows=current.body["logrows"], signer=ALICE,
                              time="2000-01-01T00:00:00.000Z", **names)  # fmt: skip
    unpublished = Manifest.create(dict(manifest.body), repository="alice/mlp", version="99",
                                  model=manifest.model, signer=ALICE)  # fmt: skip
    stray = ZkAddendum.create(unpublished, logrows=current.body["logrows"], signer=ALICE, **names)
    with httpx.Client(base_url=served.url) as http:
        got = http.get(f"/v1/zk/{manifest.cid}")
        assert got.status_code == 200
        assert got.content == current.data
        assert http.get(f"/v1/zk/{hub.resolve('alice/plain').cid}").status_code == 404
        rolled = http.post("/v1/zk/addenda", content=older.data)
        assert (rolled.status_code, rolled.json()["code"]) == (409, "conflict")
        orphan = http.post("/v1/zk/addenda", content=stray.data)
        assert (orphan.status_code, orphan.json()["code"]) == (404, "not_found")
    assert hub.zk_addendum(manifest.cid).cid == current.cid  # unchanged
