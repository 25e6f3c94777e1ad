"""Audits: nodes keep the tensors of their receipts, auditors re-execute a sample, a lying node
is convicted by evidence anyone with the model can check, and clients stop calling it. Real
nodes on 127.0.0.1, a real dishonest node, real re-execution."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_http import IRIS, Served

from verinfer import note, tensors
from verinfer.audit import Auditor
from verinfer.client import Client, Network
from verinfer.errors import VerificationError
from verinfer.examples import sklearn_model
from verinfer.node import Node
from verinfer.node.access import Auditors
from verinfer.testing import FalsifyingEngine
from verinfer.verify.evidence import verify_evidence

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]
MODEL = sklearn_model("iris")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Served]]:
    tmp = tmp_path_factory.mktemp("audit")
    alice = note.Signer(note.generate_key("alice")[0])
    honest = Node(tmp / "honest", name="honest.test")
    honest.hub.publish(MODEL, repository="alice/iris", version="1", signer=alice)
    a = Served(honest)
    liar = Node(tmp / "liar", name="liar.test", peers=[a.url], engine=FalsifyingEngine(share=1.0))
    b = Served(liar)
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()
        liar.close()
        honest.close()


def _tokens(*nodes: Served) -> dict[str, str]:
    """Auditor tokens the nodes' operators issue: callers' tensors are private by default."""
    return {s.url: Auditors(s.node.data).add("test-auditor", replace=True) for s in nodes}


def _ask(served: Served, count: int) -> None:
    with Client(served.url, trusted_vkeys=[served.node.vkey]) as client:
        for row in range(count):
            client.infer("alice/iris", {"X": IRIS[row % 2 :][:1] + row})
    served.node.archive.flush()


def test_nodes_keep_and_serve_the_tensors_their_receipts_name(pair: tuple[Served, Served]) -> None:
    honest, _ = pair
    with Client(honest.url, trusted_vkeys=[honest.node.vkey]) as client:
        result = client.infer("alice/iris", {"X": IRIS})
    honest.node.archive.flush()
    receipt = result.bundle.receipt
    admin = {"Authorization": f"Bearer {honest.node.admin_token}"}  # private: the operator reads
    with httpx.Client(base_url=honest.url, headers=admin) as http:
        for name, expected in (("inputs", {"X": IRIS}), ("outputs", result.outputs)):
            answer = http.get(f"/v1/tensors/{receipt[name]}")
            assert answer.status_code == 200
            kept = tensors.decode_binary(answer.content)
            assert tensors.map_digest(kept) == receipt[name] == tensors.map_digest(expected)
        missing = http.get("/v1/tensors/sha256:" + "0" * 64)
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
        malformed = http.get("/v1/tensors/md5:abc")
        assert (malformed.status_code, malformed.json()["code"]) == (400, "bad_input")
        kept = honest.node.archive.where(receipt["inputs"])
        assert kept is not None
        segment, offset, length = kept
        original = segment.read_bytes()
        record = original[offset : offset + length]
        assert record.count(IRIS.tobytes()) == 1
        damage = record.replace(IRIS.tobytes(), (IRIS + 1).tobytes())
        segment.write_bytes(original[:offset] + damage + original[offset + length :])
        damaged = http.get(f"/v1/tensors/{receipt['inputs']}")
        assert damaged.status_code == 503
        assert damaged.json()["message"] == (
            f"the kept tensors {receipt['inputs']!r} are damaged; not served"
        )
        segment.write_bytes(original)


def test_an_audit_convicts_a_lying_node_and_clears_an_honest_one(
    pair: tuple[Served, Served], tmp_path: Path
) -> None:
    honest, liar = pair
    _ask(honest, 5)
    _ask(liar, 5)
    nodes = [(s.url, s.node.vkey) for s in pair]
    seen = []
    with Auditor(nodes, rate=1.0, seed=1, tokens=_tokens(*pair)) as auditor:
        findings = auditor.round(seen.append)
    assert {f.verdict for f in seen if f.node == honest.node.vkey} == {"ok"}
    frauds = [f for f in findings if f.verdict == "fraud"]
    assert frauds
    assert {f.node for f in findings} == {liar.node.vkey}
    evidence = frauds[0].evidence
    assert evidence is not None
    verdict = verify_evidence(json.dumps(evidence), model=MODEL)
    assert f"node {liar.node.vkey} signed outputs" in verdict
    with pytest.raises(VerificationError, match="needs the bytes of model"):
        verify_evidence(json.dumps(evidence))
    honest_answer = next(f for f in seen if f.node == honest.node.vkey)
    assert honest_answer.verdict == "ok"
    # the evidence cannot be bent: other outputs, another model, a forged receipt
    bent = dict(evidence, outputs=evidence["inputs"])
    with pytest.raises(VerificationError, match=r"neither the receipt's .* nor the evidence's"):
        verify_evidence(json.dumps(bent), model=MODEL)
    with pytest.raises(VerificationError, match="step 3"):
        verify_evidence(json.dumps(evidence), model=MODEL + b"\x00")
    forged = json.loads(json.dumps(evidence))
    forged["bundle"]["receipt"] = forged["bundle"]["receipt"].replace('"time":"', '"time":"1', 1)
    with pytest.raises(VerificationError, match="malformed receipt: time '12"):
        verify_evidence(json.dumps(forged), model=MODEL)
    # offline, from the command line
    path, model = tmp_path / "fraud.json", tmp_path / "iris.onnx"
    path.write_text(json.dumps(evidence))
    model.write_bytes(MODEL)
    env = {**os.environ, "VERINFER_HOME": str(tmp_path / "home")}
    command = [*VERINFER, "evidence", "verify", str(path), "--model", str(model)]
    checked = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert checked.returncode == 0, checked.stderr
    assert "signed outputs" in checked.stdout


def test_nodes_keep_checked_evidence_and_clients_avoid_the_convicted(
    pair: tuple[Served, Served], tmp_path: Path
) -> None:
    honest, liar = pair
    _ask(liar, 2)
    with Auditor([(liar.url, liar.node.vkey)], rate=1.0, seed=2, tokens=_tokens(liar)) as auditor:
        evidence = next(f.evidence for f in auditor.round() if f.evidence is not None)
    with httpx.Client(base_url=honest.url, timeout=60) as http:
        stranger = http.post("/v1/evidence", json=evidence)  # a log this node does not witness
        assert (stranger.status_code, stranger.json()["code"]) == (400, "bad_input")
        honest.node.witness.trust(liar.node.log.origin, liar.node.vkey)  # as for a peer
        kept = http.post("/v1/evidence", json=evidence)
        assert kept.status_code == 200, kept.text
        assert kept.json()["kept"] is True
        assert http.post("/v1/evidence", json=evidence).json()["kept"] is False
        bent = dict(evidence, outputs=evidence["inputs"])
        refused = http.post("/v1/evidence", json=bent)
        assert refused.status_code == 422
        assert evidence in http.get("/v1/evidence").json()
    network_file = tmp_path / "net.json"
    network_file.write_text(json.dumps({"nodes": [
        {"url": s.url, "vkey": s.node.vkey} for s in (liar, honest)]}))  # fmt: skip
    with Network(network_file) as network:
        convicted = network.check_evidence()
        assert list(convicted) == [liar.node.vkey]
        for _ in range(4):  # the liar is never called again
            result = network.infer("alice/iris", {"X": IRIS})
            assert result.bundle.receipt["node"] == honest.node.vkey


def test_detection_rate_follows_one_minus_one_minus_pf_to_the_n(
    pair: tuple[Served, Served],
) -> None:
    """A node falsifying a share f of its answers, audited at rate p, escapes n audited answers
    with probability (1 - p*f)^n."""
    _, liar = pair
    f, p, n, trials = 0.5, 0.3, 6, 40
    lying = liar.node.engine
    assert isinstance(lying, FalsifyingEngine)
    lying.share = f
    caught = 0
    try:
        with Auditor([(liar.url, liar.node.vkey)], rate=p, seed=3, tokens=_tokens(liar)) as auditor:
            auditor.round()  # start after what earlier tests logged
            for _ in range(trials):
                _ask(liar, n)
                caught += any(x.verdict == "fraud" for x in auditor.round())
    finally:
        lying.share = 1.0
    expected = 1 - (1 - p * f) ** n
    spread = 4 * math.sqrt(expected * (1 - expected) / trials)
    assert abs(caught / trials - expected) <= spread, (caught, trials, expected)


def test_the_audit_command_writes_and_submits_fraud_evidence(
    pair: tuple[Served, Served], tmp_path: Path
) -> None:
    honest, liar = pair
    _ask(liar, 3)
    honest.node.witness.trust(liar.node.log.origin, liar.node.vkey)  # honest witnesses the liar
    network = tmp_path / "net.json"
    network.write_text(json.dumps({"nodes": [
        {"url": s.url, "vkey": s.node.vkey} for s in (honest, liar)]}))  # fmt: skip
    out = tmp_path / "evidence"
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps(_tokens(honest, liar)))
    tokens.chmod(0o600)
    env = {**os.environ, "VERINFER_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [*VERINFER, "audit", "--network", str(network), "--rate", "1", "--out", str(out),
         "--submit", "--tokens", str(tokens)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "frauds found" in done.stdout
    files = sorted(out.glob("fraud-liar.test-*.json"))
    assert files
    assert "signed outputs" in verify_evidence(files[0].read_text(), model=MODEL)
    kept = httpx.get(f"{honest.url}/v1/evidence").json()
    assert json.loads(files[0].read_text()) in kept
