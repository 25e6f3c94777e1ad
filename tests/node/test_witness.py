"""Witnesses (C2SP tlog-witness), cosigned bundles and equivocation evidence: a real witness
state file, real logs, real nodes served on 127.0.0.1 that cosign each other's checkpoints."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_http import IRIS, Served

from verinfer import note, tensors
from verinfer.client import Client, Network
from verinfer.errors import ConflictError, VerificationError
from verinfer.examples import sklearn_model
from verinfer.log import Log
from verinfer.node import Node
from verinfer.verify import Bundle, verify_bundle
from verinfer.verify.evidence import verify_evidence
from verinfer.witness import Refusal, Witness, add_checkpoint_body

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[Witness]:
    opened = Witness(tmp_path / "w.sqlite", note.Signer(note.generate_key("w", cosigner=True)[0]))
    yield opened
    opened.close()


@pytest.fixture
def log_key() -> note.Signer:
    return note.Signer(note.generate_key("log.example")[0])


def _grow(log: Log, count: int, tag: bytes = b"") -> str:
    log.append([b"entry %d %s" % (log.size + i, tag) for i in range(count)])
    return log.signed_checkpoint


def test_a_witness_cosigns_only_consistent_checkpoints(
    tmp_path: Path, witness: Witness, log_key: note.Signer
) -> None:
    witness.trust("log.example", log_key.vkey)
    with Log.open(tmp_path / "log", log_key) as log:
        first = _grow(log, 5)
        line = witness.add_checkpoint(add_checkpoint_body(0, [], first))
        assert line.startswith("— w ")
        assert line.endswith("\n")
        cosigned = note.verify(note.attach(first, [line]), [witness.vkey])
        assert cosigned.verified[0].timestamp is not None  # tlog-cosignature/v1
        assert witness.latest("log.example")[0] == 5
        second = _grow(log, 7)
        proof = log.consistency_proof(5, 12)
        # the old size must be the one it holds: 409 names it, in text/x.tlog.size form
        with pytest.raises(Refusal, match="the latest cosigned size is 5, not 0") as stale:
            witness.add_checkpoint(add_checkpoint_body(0, [], second))
        assert (stale.value.status, stale.value.body) == (409, "5\n")
        bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
        with pytest.raises(Refusal, match="the consistency proof does not verify") as wrong:
            witness.add_checkpoint(add_checkpoint_body(5, bad, second))
        assert wrong.value.status == 422
        assert witness.latest("log.example")[0] == 5  # a refusal changes nothing
        assert witness.add_checkpoint(add_checkpoint_body(5, proof, second))
        assert witness.latest("log.example") == (12, second)
        # the same checkpoint again is cosigned again; an older one is not
        assert witness.add_checkpoint(add_checkpoint_body(12, [], second))
        with pytest.raises(Refusal, match="the latest cosigned size is 12, not 5") as rollback:
            witness.add_checkpoint(add_checkpoint_body(5, [], first))
        assert rollback.value.status == 409


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"old 01\n\nx", 400, "malformed old size"),
        (b"new 0\n\nx", 400, "malformed old size"),
        (b"old 0\nnot base64!\n\nx", 400, "not base64"),
        (b"old 0\n" + b"AAAA\n" + b"\nx", 400, "not a 32-byte hash"),
        (b"old 0\n" + b"\n".join([base64.b64encode(bytes(32))] * 64) + b"\n\nx", 400, "63"),
        (b"old 0", 400, "an empty line"),
        (b"\xff\xfe", 400, "UTF-8"),
        (b"old 0\n\nnot a note", 400, "malformed checkpoint"),
    ],
)
def test_malformed_submissions_get_a_400_naming_the_problem(
    witness: Witness, body: bytes, status: int, message: str
) -> None:
    with pytest.raises(Refusal, match=message) as refused:
        witness.add_checkpoint(body)
    assert refused.value.status == status


def test_unknown_logs_forged_signatures_and_sizes(
    tmp_path: Path, witness: Witness, log_key: note.Signer
) -> None:
    with Log.open(tmp_path / "log", log_key) as log:
        signed = _grow(log, 3)
    with pytest.raises(
        Refusal, match=r"this witness does not witness log 'log\.example'"
    ) as unknown:
        witness.add_checkpoint(add_checkpoint_body(0, [], signed))
    assert unknown.value.status == 404
    impostor = note.Signer(note.generate_key("log.example")[0])
    witness.trust("log.example", impostor.vkey)
    with pytest.raises(Refusal, match="the checkpoint is not signed by the log's key") as forged:
        witness.add_checkpoint(add_checkpoint_body(0, [], signed))
    assert forged.value.status == 403
    with pytest.raises(ConflictError, match="already knows log"):
        witness.trust("log.example", log_key.vkey)
    with pytest.raises(Refusal, match="above the checkpoint's size"):
        witness.add_checkpoint(
            add_checkpoint_body(9, [], impostor.sign(signed.split("\n\n")[0] + "\n"))
        )


def test_two_histories_of_one_size_become_evidence_anyone_can_check(
    tmp_path: Path, witness: Witness, log_key: note.Signer
) -> None:
    witness.trust("log.example", log_key.vkey)
    with Log.open(tmp_path / "a", log_key) as a, Log.open(tmp_path / "b", log_key) as b:
        shown_to_me, shown_to_you = _grow(a, 4, b"honest"), _grow(b, 4, b"forked")
    witness.add_checkpoint(add_checkpoint_body(0, [], shown_to_me))
    with pytest.raises(Refusal, match="equivocation evidence recorded") as refused:
        witness.add_checkpoint(add_checkpoint_body(4, [], shown_to_you))
    assert refused.value.status == 409
    [evidence] = witness.evidence()
    verdict = verify_evidence(json.dumps(evidence))
    assert "signed two different trees of size 4" in verdict
    # every part of the evidence matters
    tampered = {  # each with the refusal that proves the right check fired
        "the two checkpoints of size 4 have the same root": {
            **evidence, "checkpoints": [shown_to_me, shown_to_me]},
        "evidence does not verify: note is not signed by any trusted key": {
            **evidence, "vkey": note.generate_key("log.example")[1]},
        "evidence does not verify: checkpoint origin is 'log.example', expected 'other.example'": {
            **evidence, "log": "other.example"},
        "checkpoints must be two signed notes": {**evidence, "checkpoints": [shown_to_me]},
        r"malformed evidence: fields \['checkpoints', 'kind', 'log', 'note', 'type', 'vkey'\]": {
            **evidence, "note": "x"},
        r"malformed evidence: fields \['checkpoints', 'kind', 'log', 'type', 'vkey'\]": {
            **evidence, "kind": "fraud"},
    }  # fmt: skip
    for message, document in tampered.items():
        with pytest.raises(VerificationError, match=message):
            verify_evidence(json.dumps(document))
    with Log.open(tmp_path / "a", log_key) as a:
        longer = _grow(a, 1)
    with pytest.raises(VerificationError, match="not one size"):
        verify_evidence(json.dumps({**evidence, "checkpoints": [shown_to_you, longer]}))


# -- nodes that witness each other ---------------------------------------------------------------


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Served]]:
    tmp = tmp_path_factory.mktemp("witnessing")
    alice = note.Signer(note.generate_key("alice")[0])
    nodes = [Node(tmp / name, name=f"{name}.test", cosign_interval=0.05) for name in "abc"]
    nodes[0].hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    served = [Served(node) for node in nodes]
    for node in nodes:  # everyone peers with everyone: models and witnessing
        node.set_peers([s.url for s in served if s.node is not node])
    try:
        yield served
    finally:
        for running in served:
            running.stop()
        for node in nodes:
            node.close()


def test_bundles_carry_a_quorum_of_cosignatures(trio: list[Served], tmp_path: Path) -> None:
    a, b, c = trio
    witnesses = [b.node.witness.vkey, c.node.witness.vkey]
    with Client(a.url, trusted_vkeys=[a.node.vkey]) as client:
        answer = client.infer("alice/iris", {"X": IRIS})
        with pytest.raises(VerificationError, match="step 1\\+"):
            verify_bundle(answer.bundle, [a.node.vkey], witnesses=witnesses, quorum=1)
        bundle = client.cosigned(answer.bundle, witnesses, 2)
    lines: list[str] = []
    parsed = Bundle.from_json(bundle.to_json())
    verify_bundle(
        parsed, [a.node.vkey], {"X": IRIS}, answer.outputs, witnesses=witnesses, quorum=2,
        report=lines.append,
    )  # fmt: skip
    assert any(line.startswith("1+. 2 trusted witnesses cosigned") for line in lines)
    assert parsed.receipt.data == answer.bundle.receipt.data
    # the policy: too few keys, the node's own key posing as a witness, a forged line
    with pytest.raises(VerificationError, match="needs as many trusted witness keys"):
        verify_bundle(parsed, [a.node.vkey], witnesses=witnesses[:1], quorum=2)
    with pytest.raises(VerificationError, match="step 1\\+"):
        verify_bundle(parsed, [a.node.vkey], witnesses=[a.node.vkey, *witnesses], quorum=3)
    line = parsed.cosignatures[0]
    raw = bytearray(base64.b64decode(line.split()[-1]))
    raw[-1] ^= 1
    forged = line.rsplit(" ", 1)[0] + " " + base64.b64encode(bytes(raw)).decode() + "\n"
    text = json.loads(parsed.to_json())
    text["cosignatures"] = [forged, parsed.cosignatures[1]]
    with pytest.raises(VerificationError, match="step 1\\+ \\(witnesses\\): invalid signature"):
        verify_bundle(Bundle.from_json(text), [a.node.vkey], witnesses=witnesses, quorum=1)
    verify_bundle(Bundle.from_json(text), [a.node.vkey])  # without a policy: a hint only
    # the CLI applies the same policy
    files = {name: tmp_path / name for name in ("bundle.json", "trust.txt", "w.txt")}
    files["bundle.json"].write_text(bundle.to_json())
    files["trust.txt"].write_text(a.node.vkey + "\n")
    files["w.txt"].write_text("\n".join(witnesses) + "\n")
    base = ["verify", str(files["bundle.json"]), "--trust", str(files["trust.txt"])]
    ok = subprocess.run([*VERINFER, *base, "--witnesses", str(files["w.txt"]), "--quorum", "2"],
                        capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "2 trusted witnesses cosigned" in ok.stdout
    short = subprocess.run([*VERINFER, *base, "--witnesses", str(files["w.txt"]), "--quorum", "3"],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert short.returncode == 1
    assert "needs as many trusted witness keys" in short.stderr


def test_every_node_witnesses_the_others(trio: list[Served]) -> None:
    with httpx.Client() as http:
        for served in trio:
            with Client(served.url, trusted_vkeys=[served.node.vkey]) as client:
                client.infer("alice/iris", {"X": IRIS})
        while True:  # until every log is cosigned by both other nodes' witnesses (pytest's
            counts = []  # time limit stops a hang: no clock decides)
            for served in trio:
                answer = http.get(f"{served.url}/v1/log/cosigned")
                counts.append(answer.text.count("/witness ") if answer.status_code == 200 else 0)
            if counts == [2, 2, 2]:
                break
            time.sleep(0.05)
        assert counts == [2, 2, 2]
        node = http.get(f"{trio[0].url}/v1/node").json()
        assert node["witness"] == trio[0].node.witness.vkey
        answer = http.post(f"{trio[0].url}/add-checkpoint", content=b"old 0\n\nnothing")
        assert answer.status_code == 400
        assert answer.json()["code"] == "witness_refused"
        empty = http.get(f"{trio[0].url}/v1/log/cosigned", params={"size": 10**9})
        assert empty.status_code == 404


def test_a_split_view_is_caught_by_a_witness_over_http(
    trio: list[Served], tmp_path: Path, log_key: note.Signer
) -> None:
    """A log that shows one history to one party and another to another: the witness refuses
    the second, keeps the evidence, serves it, and the CLI checks it offline."""
    witness = trio[2]
    witness.node.witness.trust("log.example", log_key.vkey)
    with Log.open(tmp_path / "a", log_key) as a, Log.open(tmp_path / "b", log_key) as b:
        mine, yours = _grow(a, 6, b"one"), _grow(b, 6, b"two")
    with httpx.Client(base_url=witness.url) as http:
        first = http.post("/add-checkpoint", content=add_checkpoint_body(0, [], mine))
        assert first.status_code == 200
        assert first.text.startswith("— c.test/witness ")
        stale = http.post("/add-checkpoint", content=add_checkpoint_body(0, [], yours))
        assert (stale.status_code, stale.text) == (409, "6\n")
        assert stale.headers["content-type"].startswith("text/x.tlog.size")
        split = http.post("/add-checkpoint", content=add_checkpoint_body(6, [], yours))
        assert split.status_code == 409
        found = http.get("/v1/evidence").json()
    [evidence] = [e for e in found if e["log"] == "log.example"]
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps(evidence))
    env = {**os.environ, "VERINFER_HOME": str(tmp_path / "home")}
    checked = subprocess.run([*VERINFER, "evidence", "verify", str(path)], env=env,
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "signed two different trees of size 6" in checked.stdout
    path.write_text(json.dumps({**evidence, "checkpoints": [mine, mine]}))
    refused = subprocess.run([*VERINFER, "evidence", "verify", str(path)], env=env,
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert refused.returncode == 1
    assert "same root" in refused.stderr


def test_a_log_showing_two_histories_is_caught_by_gossip(tmp_path: Path) -> None:
    """One log key, two histories (a forked data directory served twice): each history goes to
    a different witness; the witnesses' next gossip round, or a client's, turns the two trees
    of one size into equivocation evidence."""
    alice = note.Signer(note.generate_key("alice")[0])
    first = Node(tmp_path / "f1", name="fork.test", cosign_interval=0.05)
    (tmp_path / "f2").mkdir()
    shutil.copy(tmp_path / "f1" / "node.skey", tmp_path / "f2" / "node.skey")
    second = Node(tmp_path / "f2", name="fork.test", cosign_interval=0.05)
    assert first.vkey == second.vkey
    witnesses = [Node(tmp_path / w, name=f"{w}.test", cosign_interval=0.05) for w in ("w1", "w2")]
    nodes = [first, second, *witnesses]
    first.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    second.hub.pull("alice/iris", first.hub)  # one model history: only the log forks
    served = [Served(node) for node in nodes]
    f1, f2, w1, w2 = served
    try:
        w1.node.set_peers([w2.url, f1.url])  # each witness sees one history...
        w2.node.set_peers([w1.url, f2.url])
        f1.node.set_peers([w1.url])
        f2.node.set_peers([w2.url])
        bundles = []
        for fork, row in ((f1, IRIS[:1]), (f2, IRIS[1:])):
            with Client(fork.url, trusted_vkeys=[first.vkey]) as client:
                bundles.append(client.infer("alice/iris", {"X": row}).bundle)
        sizes = {note.verify_checkpoint(b.checkpoint, [first.vkey])[0].size for b in bundles}
        assert sizes == {1}  # one size, two roots
        found: list[dict[str, object]] = []
        while not found:  # ...until they gossip (pytest's time limit stops a hang)
            found = [e for s in (w1, w2) for e in s.node.witness.evidence()]
            time.sleep(0.05)
        assert found, "the witnesses' gossip did not find the split view"
        verdict = verify_evidence(json.dumps(found[0]))
        assert "'fork.test'" in verdict
        assert "signed two different trees of size 1" in verdict
        # a client that saw one history tells the network; a witness of the other answers
        network_file = tmp_path / "net.json"
        network_file.write_text(json.dumps({"nodes": [
            {"url": s.url, "vkey": s.node.vkey} for s in (w1, w2)]}))  # fmt: skip
        with Network(network_file) as network:
            evidence = network.gossip(bundles[0].checkpoint) or network.gossip(
                bundles[1].checkpoint
            )
        assert evidence is not None
        assert evidence["kind"] == "equivocation"
    finally:
        for running in served:
            running.stop()
        for node in nodes:
            node.close()


def test_the_cli_asks_for_a_cosigned_bundle(trio: list[Served], tmp_path: Path) -> None:
    a, b, c = trio
    files = {name: tmp_path / name for name in ("x.json", "w.txt", "bundle.json", "trust.txt")}
    files["x.json"].write_text(json.dumps(tensors.encode_json({"X": IRIS})))
    files["w.txt"].write_text(f"{b.node.witness.vkey}\n{c.node.witness.vkey}\n")
    files["trust.txt"].write_text(a.node.vkey + "\n")
    env = {**os.environ, "VERINFER_HOME": str(tmp_path / "home")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*VERINFER, *args], capture_output=True, text=True, timeout=120,
                              env=env, check=False)  # fmt: skip

    infer = ["infer", "alice/iris", "--inputs", str(files["x.json"]), "--node", a.url]
    asked = run(*infer, "--witnesses", str(files["w.txt"]), "--quorum", "2",
                "--bundle", str(files["bundle.json"]))  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert "cosigned by 2 trusted witnesses" in asked.stderr
    checked = run("verify", str(files["bundle.json"]), "--trust", str(files["trust.txt"]),
                  "--witnesses", str(files["w.txt"]), "--quorum", "2")  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    missing = run(*infer, "--quorum", "2")
    assert missing.returncode == 1
    assert "--quorum needs --witnesses" in missing.stderr


def test_gossip_refuses_unknown_logs_and_malformed_notes(
    trio: list[Served], tmp_path: Path
) -> None:
    stranger = note.Signer(note.generate_key("stranger.example")[0])
    with Log.open(tmp_path / "s", stranger) as log:
        signed = _grow(log, 2)
    with httpx.Client(base_url=trio[0].url) as http:
        unknown = http.post("/v1/gossip", content=signed.encode())
        assert (unknown.status_code, unknown.json()["code"]) == (404, "witness_refused")
        for body, status in ((b"\xff\xfe", 400), (b"not a note", 400)):
            bad = http.post("/v1/gossip", content=body)
            assert bad.status_code == status, bad.text
            assert bad.json()["message"]
        told = http.post("/v1/gossip", content=trio[1].node.log.signed_checkpoint.encode())
        assert told.status_code == 200  # a peer's log, witnessed here: remembered, no conflict
        assert told.json() == {"equivocation": None}


def test_a_peer_that_does_not_list_us_back_is_logged_once_per_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A node whose peer does not witness its log gets every checkpoint refused; the refusal
    is logged once (it was logged four times a second), each new checkpoint is still offered,
    and a refused one is offered again after a wait: the peer cosigns soon after it lists the
    node back, even when the log has not grown since."""
    alice = note.Signer(note.generate_key("alice")[0])
    lonely = Node(tmp_path / "a", name="a.test", cosign_interval=0.05)
    other = Node(tmp_path / "b", name="b.test", cosign_interval=0.05)
    lonely.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    served = [Served(lonely), Served(other)]
    try:
        lonely.set_peers([served[1].url])  # b does not list a: its witness does not know a's log
        with caplog.at_level("DEBUG", logger="verinfer.cosigning"):
            for _ in range(6):
                lonely.infer("alice/iris", {"X": IRIS})
                time.sleep(0.3)  # several cosigning rounds per checkpoint
        refusals = [r for r in caplog.records if "refused our checkpoint" in r.getMessage()]
        warnings = [r for r in refusals if r.levelname == "WARNING"]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert len(refusals) >= 2  # later checkpoints were offered, and refused at debug level
        assert len(refusals) <= 8  # one per new checkpoint, not one per round
        other.set_peers([served[0].url])  # b lists a back: b's witness now cosigns a's log
        deadline = time.monotonic() + 30
        while lonely.cosigner.cosigned() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lonely.cosigner.cosigned() is not None
    finally:
        for running in served:
            running.stop()
        lonely.close()
        other.close()
