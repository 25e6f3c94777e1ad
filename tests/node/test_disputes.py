"""Disputes end to end on a devnet: three node processes on loopback (one referees, one
challenges) and a dishonest node, through the SDK, the CLI and the HTTP API."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from test_http import Served

from verinfer import devnet, note, tensors
from verinfer.client import Client, Network
from verinfer.examples import light_model
from verinfer.modes.dispute import Dispute, verify_verdict
from verinfer.node import Node
from verinfer.testing import FalsifyingEngine
from verinfer.verify import evidence

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]
MODEL = light_model("squeezenet", seed=5)
IMAGE = np.random.default_rng(8).standard_normal((1, 3, 224, 224)).astype(np.float32)
INPUTS = {"data_0": IMAGE}


@dataclass
class Net:
    nodes: list[dict[str, Any]]
    liar: Served
    directory: Path

    def url(self, number: int) -> str:
        return str(self.nodes[number - 1]["url"])


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("disputes")
    nodes = devnet.up(tmp / "net", 3)
    try:
        alice = note.Signer(note.generate_key("alice")[0])
        with Client(nodes[0]["url"]) as first:
            first.publish(MODEL, repository="alice/squeezenet", version="1", signer=alice)
        liar = Node(
            tmp / "liar", name="liar.test", peers=[nodes[0]["url"]],
            engine=FalsifyingEngine(share=1.0),
        )  # fmt: skip
        served = Served(liar)
        try:
            yield Net(nodes, served, tmp / "net")
        finally:
            served.stop()
            liar.close()
    finally:
        devnet.down(tmp / "net")


def _lying_bundle(net: Net) -> Any:
    with Client(net.liar.url, trusted_vkeys=[net.liar.node.vkey]) as client:
        answer = client.infer("alice/squeezenet", INPUTS, mode="optimistic")
    net.liar.node.archive.flush()
    assert answer.bundle.receipt["mode"] == "optimistic:86400"
    return answer


def test_a_dishonest_node_loses_a_dispute_through_the_sdk(net: Net) -> None:
    lying = _lying_bundle(net)
    with Client(net.url(3)) as referee:
        verdict = referee.challenge(
            lying.bundle, INPUTS, challenger=net.url(2), defendant=net.liar.url, deadline=60
        )
        assert (verdict.winner, verdict.loser) == ("challenger", "defendant")
        assert verdict.body["dispute"]["defendant"] == net.liar.node.vkey
        assert verdict.body["judgement"]["step"] == verdict.body["steps"]  # its final Softmax
        kept = referee.verdict(Dispute.from_header(verdict.body["dispute"]).id)
    assert kept == verdict.data
    assert verify_verdict(kept, model=MODEL).winner == "challenger"


def test_an_honest_answer_survives_a_challenge(net: Net) -> None:
    with Client(net.url(1)) as first:
        honest = first.infer("alice/squeezenet", INPUTS, mode="optimistic:600")
    with Client(net.url(3)) as referee:  # an honest challenger computes the receipt's outputs
        verdict = referee.challenge(honest.bundle, INPUTS, challenger=net.url(2))
    assert (verdict.winner, verdict.reason) == (
        "defendant",
        "the challenger's final state is the receipt's",
    )


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VERINFER_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [*VERINFER, *args], check=False, capture_output=True, text=True, timeout=300, env=env
    )


def test_the_cli_challenges_and_checks_the_verdict(net: Net, tmp_path: Path) -> None:
    lying = _lying_bundle(net)
    bundle, inputs, model = tmp_path / "bundle.json", tmp_path / "x.npz", tmp_path / "sq.onnx"
    bundle.write_text(lying.bundle.to_json())
    inputs.write_bytes(tensors.encode_binary(INPUTS))
    model.write_bytes(MODEL)
    verdict = tmp_path / "verdict.json"
    settled = run(
        tmp_path, "challenge", str(bundle), "--inputs", str(inputs), "--challenger", net.url(2),
        "--node", net.url(3), "--defendant", net.liar.url, "--verdict", str(verdict),
    )  # fmt: skip
    assert settled.returncode == 0, settled.stderr
    assert "challenger wins" in settled.stdout
    assert net.liar.node.vkey in settled.stdout  # the loser
    referee = tmp_path / "referee.txt"
    referee.write_text(net.nodes[2]["vkey"] + "\n")
    checked = run(tmp_path, "verdict", str(verdict), "--model", str(model), "--referee",
                  str(referee))  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "challenger wins" in checked.stdout
    other = tmp_path / "other.txt"
    other.write_text(net.nodes[1]["vkey"] + "\n")
    refused = run(tmp_path, "verdict", str(verdict), "--model", str(model), "--referee",
                  str(other))  # fmt: skip
    assert refused.returncode == 1
    assert "not a trusted referee" in refused.stderr
    wrong = tmp_path / "wrong.onnx"
    wrong.write_bytes(light_model("squeezenet", seed=6))
    refused = run(tmp_path, "verdict", str(verdict), "--model", str(wrong))
    assert refused.returncode == 1
    assert "not the disputed receipt's model" in refused.stderr


def _npz(arrays: dict[str, np.ndarray]) -> str:
    return base64.b64encode(tensors.encode_binary(arrays)).decode()


def test_bad_challenges_get_clear_4xx_answers(net: Net) -> None:
    with Client(net.url(1)) as first:
        attested = first.infer("alice/squeezenet", INPUTS)
        optimistic = first.infer("alice/squeezenet", INPUTS, mode="optimistic")
    body = {"bundle": optimistic.bundle.to_dict(), "inputs": _npz(INPUTS),
            "challenger": net.url(2)}  # fmt: skip
    with httpx.Client(base_url=net.url(3), timeout=120) as http:
        cases = [
            ({**body, "bundle": attested.bundle.to_dict()}, 422, "only optimistic answers"),
            ({**body, "inputs": "not base64!"}, 400, "malformed inputs"),
            ({**body, "inputs": _npz({"data_0": IMAGE + 1})}, 400, "not the disputed receipt's"),
            ({**body, "deadline": 0}, 422, "deadline"),
            ({**body, "extra": 1}, 422, "extra"),
            ({**body, "bundle": {"receipt": "x"}}, 422, "malformed"),
            ({**body, "challenger": "not a url"}, 400, "is not an http(s)://host[:port] URL"),
            ({**body, "defendant": "ftp://x"}, 400, "is not an http(s)://host[:port] URL"),
        ]
        for request, status, message in cases:
            answer = http.post("/v1/disputes", json=request)
            assert answer.status_code == status, (request.keys(), answer.text)
            assert message in answer.json()["message"], answer.text
        for path, status in [("/v1/disputes/sha256:" + "0" * 64, 404), ("/v1/disputes/xyz", 400)]:
            answer = http.get(path)
            assert answer.status_code == status
            assert answer.json()["code"] in ("not_found", "bad_input")
        # the side endpoints: unknown disputes, and headers that do not name this node
        answer = http.post("/v1/disputes/party/state", json={"dispute": "sha256:00", "step": 1})
        assert (answer.status_code, answer.json()["code"]) == (404, "not_found")
        answer = http.post(
            "/v1/disputes/party/reveal", json={"dispute": "x", "step": -1, "names": []}
        )
        assert answer.status_code == 422
        stranger, judge = (note.Signer(note.generate_key(n)[0]).vkey for n in ("x", "judge"))
        header = Dispute.create(optimistic.bundle, challenger=stranger, referee=judge).header
        answer = http.post(
            "/v1/disputes/party/opening", json={"dispute": header, "inputs": _npz(INPUTS)}
        )
        assert (answer.status_code, answer.json()["code"]) == (400, "bad_input")
        assert "neither the defendant nor the challenger" in answer.json()["message"]
        stale = Dispute.create(optimistic.bundle, challenger=net.nodes[2]["vkey"], referee=judge,
                               opened=time.time() - 3600).header  # fmt: skip
        answer = http.post(
            "/v1/disputes/party/opening", json={"dispute": stale, "inputs": _npz(INPUTS)}
        )
        assert (answer.status_code, answer.json()["code"]) == (400, "bad_input")
        assert "not within 600 s of now" in answer.json()["message"]
        answer = http.post("/v1/disputes", json={**body, "challenger": "http://[::1"})
        assert (answer.status_code, answer.json()["code"]) == (400, "bad_input"), answer.text


def test_a_conviction_is_evidence_the_referee_serves_and_clients_act_on(
    net: Net, tmp_path: Path
) -> None:
    token = (Path(net.nodes[2]["data"]) / "admin.token").read_text().strip()
    with Client(net.url(3), admin_token=token) as admin:  # node 3 now witnesses the liar's log
        before = admin.peers()
        admin.set_peers([*before, net.liar.url])
    try:
        with httpx.Client(base_url=net.url(3), timeout=120) as http:
            while True:  # its cosigning round takes the liar's log in within a second or so
                lying = _lying_bundle(net)
                with Client(net.url(3)) as referee:
                    verdict = referee.challenge(
                        lying.bundle, INPUTS, challenger=net.url(2), defendant=net.liar.url
                    )
                kept = [e for e in http.get("/v1/evidence").json() if e["kind"] == "dispute"]
                if kept:  # (pytest's time limit stops a hang: no clock decides)
                    break
            assert kept, "the referee kept no evidence of the conviction"
            document = evidence.dispute(verdict)
            assert document is not None
            assert document["vkey"] == net.liar.node.vkey
            again = http.post("/v1/evidence", content=json.dumps(document))
            assert again.status_code == 200, again.text
            assert "answered falsely" in again.json()["verdict"]
            forged = {**document, "verdict": verdict.data.decode().replace("challenger", "x", 1)}
            refused = http.post("/v1/evidence", content=json.dumps(forged))
            assert refused.status_code in (400, 422)
        network_file = tmp_path / "net.json"
        network_file.write_text(json.dumps({"nodes": [
            {"url": net.url(3), "vkey": net.nodes[2]["vkey"]},
            {"url": net.liar.url, "vkey": net.liar.node.vkey}]}))  # fmt: skip
        with Network(network_file) as network:
            convicted = network.check_evidence()
        assert "answered falsely" in convicted[net.liar.node.vkey]
        (tmp_path / "evidence.json").write_text(json.dumps(kept[0]))
        (tmp_path / "sq.onnx").write_bytes(MODEL)
        checked = run(tmp_path, "evidence", "verify", str(tmp_path / "evidence.json"),
                      "--model", str(tmp_path / "sq.onnx"))  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        assert "answered falsely" in checked.stdout
    finally:
        with Client(net.url(3), admin_token=token) as admin:
            admin.set_peers(before)
