"""Honest nodes are never framed through a model whose output is not a function of its inputs,
and publishers cannot assert the facts a node measures (issue 15, items 1 and 2).

The framing attack: ``Where(x > 100, RandomUniformLike(x, seed=7), x)`` passes a probe whose
inputs never exceed 100; a node that kept one ONNX Runtime session per model answered each
request with the generator's next draw, so its second answer differed from a fresh re-execution,
and fraud evidence, a node's ``POST /v1/evidence``, ``Network.check_evidence()`` and a dispute
convicted it. Real nodes on 127.0.0.1, over HTTP."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_http import Served

from verinfer import cid, note, tensors
from verinfer.audit import Auditor, Finding
from verinfer.client import Network
from verinfer.engine import Engine
from verinfer.engine.nondeterminism import nondeterministic_operators
from verinfer.errors import VerificationError
from verinfer.hub.documents import Change, Manifest
from verinfer.modes import dispute as dispute_module
from verinfer.modes.dispute import Dispute, LocalParty, settle, verify_verdict
from verinfer.node import Node
from verinfer.verify import Bundle, verify_bundle
from verinfer.verify.evidence import fraud, verify_evidence

HIGH = {"x": np.full((1, 4), 200.0, np.float32)}  # every element takes the random branch


def _graph_model(nodes: list[onnx.NodeProto], *, opset: int = 17, **extra: Any) -> bytes:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=extra.pop("initializer", []),
    )
    imports = extra.pop("opset_imports", [helper.make_opsetid("", opset)])
    model = helper.make_model(graph, opset_imports=imports, **extra)
    model.ir_version = 8
    return model.SerializeToString()


def framing_model() -> bytes:
    """``Where(x > 100, RandomUniformLike(x, seed=7), x)``."""
    limit = helper.make_tensor("limit", TensorProto.FLOAT, [], [100.0])
    return _graph_model(
        [
            helper.make_node("Constant", [], ["limit"], value=limit),
            helper.make_node("Greater", ["x", "limit"], ["high"]),
            helper.make_node("RandomUniformLike", ["x"], ["random"], seed=7.0),
            helper.make_node("Where", ["high", "random", "x"], ["y"]),
        ]
    )


@dataclass
class Framed:
    victim: Served  # the honest node that hosts the model
    witness: Served  # an honest node that witnesses the victim's log
    alice: note.Signer
    model: bytes
    honest: Manifest  # what the victim's analysis records
    legacy: Manifest  # signed before this fix: bit_identical true, no operator list
    tmp: Path


def _commit(node: Node, manifest: Manifest, signer: note.Signer) -> None:
    """Put a manifest into a node's hub without its checks: a manifest published before the
    checks existed (still in hubs), or a dishonest node's hub."""
    history = node.hub._history_or_empty(manifest.repository)
    publish = Change.create(repository=manifest.repository, seq=len(history.changes),
                            prev=history.head, signer=signer, version=manifest.version,
                            manifest=manifest.cid)  # fmt: skip
    node.hub._commit(manifest.repository, signer.name, signer.vkey, [publish], manifest)


def _forged(facts: dict[str, Any], name: str, signer: note.Signer, **determinism: Any) -> Manifest:
    changed = {**facts, "determinism": {**facts["determinism"], **determinism}}
    for key, value in determinism.items():
        if value is None:
            del changed["determinism"][key]
    return Manifest.create(changed, repository=name, version="1", model=facts["model"],
                           signer=signer)  # fmt: skip


def _publish_over_http(url: str, model: bytes, name: str, signer: note.Signer,
                       **determinism: Any) -> httpx.Response:  # fmt: skip
    """Client.publish's steps, with the manifest's determinism facts replaced."""
    with httpx.Client(base_url=url, timeout=120) as http:
        model_cid = http.put("/v1/blobs", content=model).json()["cid"]
        facts = http.post(f"/v1/blobs/{model_cid}/analysis").json()
        manifest = _forged({**facts, "model": model_cid}, name, signer, **determinism)
        changes = http.get(f"/v1/repositories/{name}/changes").json()["changes"]
        head = Change.from_bytes(changes[-1].encode()).cid if changes else None
        publish = Change.create(repository=name, seq=len(changes), prev=head, signer=signer,
                                version="1", manifest=manifest.cid)  # fmt: skip
        body = {"manifest": manifest.data.decode(), "changes": [publish.data.decode()]}
        return http.post(f"/v1/repositories/{name}/changes", json=body)


@pytest.fixture(scope="module")
def framed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Framed]:
    tmp = tmp_path_factory.mktemp("framing")
    alice = note.Signer(note.generate_key("alice")[0])
    model = framing_model()
    victim_node = Node(tmp / "victim", name="victim.test")
    victim = Served(victim_node)
    answer = _publish_over_http(victim.url, model, "alice/framing", alice)
    assert answer.status_code == 200, answer.text
    honest = victim_node.hub.resolve("alice/framing@1")
    facts = {key: honest.body[key] for key in honest.body}
    legacy = _forged(facts, "alice/legacy", alice, bit_identical=True, nondeterministic=None)
    _commit(victim_node, legacy, alice)
    witness_node = Node(tmp / "witness", name="witness.test", peers=[victim.url])
    witness = Served(witness_node)
    witness_node.witness.trust(victim_node.log.origin, victim_node.vkey)  # as for a peer
    witness_node.resolve("alice/framing@1")  # it holds the model, to judge evidence about it
    try:
        yield Framed(victim, witness, alice, model, honest, legacy, tmp)
    finally:
        for served in (witness, victim):
            served.stop()
            served.node.close()


def _infer(url: str, vkey: str, ref: str, mode: str = "attested") -> httpx.Response:
    body = {"model": ref, "inputs": tensors.encode_json(HIGH, raw=True), "mode": mode}
    return httpx.post(f"{url}/v1/infer", json=body, timeout=60)


def _answer(framed: Framed, ref: str) -> tuple[dict[str, np.ndarray], Bundle]:
    response = _infer(framed.victim.url, framed.victim.node.vkey, ref)
    assert response.status_code == 200, response.text
    bundle = Bundle.from_json(response.json()["bundle"])
    outputs = tensors.decode_json(response.json()["outputs"])
    verify_bundle(bundle, [framed.victim.node.vkey], inputs=HIGH, outputs=outputs)
    return outputs, bundle


def _fresh_process(model: bytes, tmp: Path) -> dict[str, np.ndarray]:
    """The model run once by a fresh Engine in a new interpreter."""
    (tmp / "fresh.onnx").write_bytes(model)
    (tmp / "fresh-in.npz").write_bytes(tensors.encode_binary(HIGH))
    code = (
        "import sys; from pathlib import Path; from verinfer import tensors, cid;"
        "from verinfer.engine import Engine; d = Path(sys.argv[1]);"
        "m = (d / 'fresh.onnx').read_bytes();"
        "x = tensors.decode_binary((d / 'fresh-in.npz').read_bytes());"
        "y = Engine().run(cid.compute(m), lambda: m, x);"
        "(d / 'fresh-out.npz').write_bytes(tensors.encode_binary(y))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp)], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return tensors.decode_binary((tmp / "fresh-out.npz").read_bytes())


# -- item 1 -----------------------------------------------------------------------------------


def test_static_analysis_finds_random_operators_everywhere() -> None:
    """Main graph, subgraphs and local functions; Dropout only with a training-mode input that
    is not provably false."""
    assert nondeterministic_operators(onnx.load_from_string(framing_model())) == [
        "RandomUniformLike"
    ]
    no = helper.make_tensor("no", TensorProto.BOOL, [], [False])
    yes = helper.make_tensor("yes", TensorProto.BOOL, [], [True])
    ratio = helper.make_tensor("ratio", TensorProto.FLOAT, [], [0.5])

    def dropout(mode: str, **extra: Any) -> list[str]:
        nodes = [helper.make_node("Dropout", ["x", "ratio", mode], ["y"])]
        return nondeterministic_operators(
            onnx.load_from_string(
                _graph_model(nodes, initializer=[ratio, no, yes, *extra.get("more", [])])
            )
        )

    assert dropout("no") == []
    assert dropout("yes") == ["Dropout"]
    inference = [helper.make_node("Dropout", ["x"], ["y"])]
    assert nondeterministic_operators(onnx.load_from_string(_graph_model(inference))) == []
    # a false initializer a caller may override (it is also a graph input) proves nothing
    trains = [helper.make_node("Dropout", ["x", "ratio", "no"], ["y"])]
    overridable = onnx.load_from_string(_graph_model(trains, initializer=[ratio, no]))
    overridable.graph.input.append(helper.make_tensor_value_info("no", TensorProto.BOOL, []))
    assert nondeterministic_operators(overridable) == ["Dropout"]
    # inside an If branch
    branch = helper.make_graph(
        [helper.make_node("RandomNormalLike", ["x"], ["z"])], "then", [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
    )  # fmt: skip
    nested = onnx.load_from_string(_graph_model([
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Cast", ["s"], ["c"], to=TensorProto.BOOL),
        helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch),
    ]))  # fmt: skip
    assert nondeterministic_operators(nested) == ["RandomNormalLike"]
    # in a model-local function
    function = helper.make_function(
        "local", "Noisy", ["a"], ["b"], [helper.make_node("Bernoulli", ["a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )  # fmt: skip
    called = onnx.load_from_string(_graph_model(
        [helper.make_node("Noisy", ["x"], ["y"], domain="local")], functions=[function],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
    ))  # fmt: skip
    assert nondeterministic_operators(called) == ["Bernoulli"]


def test_the_manifest_records_the_model_as_non_reproducible(framed: Framed) -> None:
    """The probe's inputs never reach the random branch; the static analysis does."""
    determinism = framed.honest.body["determinism"]
    assert determinism["bit_identical"] is False
    assert determinism["nondeterministic"] == ["RandomUniformLike"]


def test_an_answer_never_depends_on_earlier_requests(framed: Framed) -> None:
    """The same request twice to a node, and a fresh process, give identical bytes."""
    first, _ = _answer(framed, framed.honest.cid)
    second, _ = _answer(framed, framed.honest.cid)
    fresh = _fresh_process(framed.model, framed.tmp)
    assert tensors.map_digest(first) == tensors.map_digest(second) == tensors.map_digest(fresh)
    assert float(first["y"].min()) < 1.0  # the random branch was taken: not the input back


def test_an_unseeded_random_operator_answers_alike_in_every_process(tmp_path: Path) -> None:
    """Without a ``seed`` attribute ONNX Runtime draws from a process-wide seed (the clock by
    default): the engine pins it, so runs and processes agree as with a seeded operator."""
    unseeded = _graph_model([helper.make_node("RandomNormalLike", ["x"], ["y"])])
    engine = Engine()
    first = engine.run(cid.compute(unseeded), lambda: unseeded, HIGH)
    second = engine.run(cid.compute(unseeded), lambda: unseeded, HIGH)
    fresh = _fresh_process(unseeded, tmp_path)
    assert tensors.map_digest(first) == tensors.map_digest(second) == tensors.map_digest(fresh)


def test_framing_evidence_is_refused_offline_by_nodes_and_by_clients(framed: Framed) -> None:
    """Evidence from the node's second answer, under a manifest that (wrongly) records the
    model as bit-reproducible, with a correct fresh re-execution as the 'true' outputs."""
    _answer(framed, framed.legacy.cid)
    _, bundle = _answer(framed, framed.legacy.cid)
    framed.victim.node.archive.flush()
    rerun = Engine().run(framed.honest.model, lambda: framed.model, HIGH)
    claimed = (
        rerun
        if tensors.map_digest(rerun) != bundle.receipt["outputs"]
        else {"y": rerun["y"] + np.float32(0.5)}
    )  # today's node answers the fresh draw: the attacker claims any other outputs
    evidence = fraud(bundle, framed.legacy.data, tensors.encode_binary(HIGH),
                     tensors.encode_binary(claimed), Engine().identity)  # fmt: skip
    with pytest.raises(VerificationError, match=r"not a function of their inputs "
                       r"\(RandomUniformLike\)"):  # fmt: skip
        verify_evidence(json.dumps(evidence), model=framed.model)
    answer = httpx.post(f"{framed.witness.url}/v1/evidence", json=evidence, timeout=60)
    assert answer.status_code == 422, answer.text
    assert "RandomUniformLike" in answer.json()["message"]
    assert evidence not in httpx.get(f"{framed.witness.url}/v1/evidence").json()
    # a node that serves it anyway (dishonest, or older) convicts nobody
    framed.witness.node.witness.record(evidence)
    assert evidence in httpx.get(f"{framed.witness.url}/v1/evidence").json()
    network_file = framed.tmp / "network.json"
    nodes = [{"url": s.url, "vkey": s.node.vkey} for s in (framed.victim, framed.witness)]
    network_file.write_text(json.dumps({"nodes": nodes}))
    with Network(network_file) as network:
        assert network.check_evidence() == {}


def test_auditors_report_the_model_as_not_comparable(framed: Framed) -> None:
    """An auditor re-running the node's answers about the model finds them ``incomparable``
    (from the model's bytes, whatever the manifest says), never ``fraud``."""
    for ref in (framed.legacy.cid, framed.honest.cid, framed.legacy.cid):
        _answer(framed, ref)
    framed.victim.node.archive.flush()
    seen: list[Finding] = []
    with Auditor([(framed.victim.url, framed.victim.node.vkey)], rate=1.0, seed=3) as auditor:
        auditor.round(seen.append)
    assert len(seen) >= 3
    assert {finding.verdict for finding in seen} == {"incomparable"}
    assert all("(RandomUniformLike)" in finding.detail for finding in seen)
    assert all(finding.evidence is None for finding in seen)


def test_manifests_state_the_operators_consistently(framed: Framed) -> None:
    """A manifest naming random operators cannot claim bit-reproducibility, and its
    ``determinism`` holds only the documented fields."""
    facts = {key: framed.honest.body[key] for key in framed.honest.body}
    with pytest.raises(VerificationError, match="malformed manifest: field 'determinism'"):
        _forged(facts, "alice/x", framed.alice, bit_identical=True)
    with pytest.raises(VerificationError, match="malformed manifest: field 'determinism'"):
        _forged(facts, "alice/x", framed.alice, nondeterministic=["Z", "A"])
    with pytest.raises(VerificationError, match="malformed manifest: field 'determinism'"):
        _forged(facts, "alice/x", framed.alice, trusted=True)
    for bad in ({"runs": "4"}, {"threads": [1, True]}, {"engine": 1}, {"seed": 1.5}):
        with pytest.raises(VerificationError, match="malformed manifest: field 'determinism'"):
            _forged(facts, "alice/x", framed.alice, **bad)


def test_the_node_refuses_modes_that_would_judge_the_model(framed: Framed) -> None:
    for mode in ("optimistic", "optimistic:60", "replicated:2"):
        for ref in (framed.honest.cid, framed.legacy.cid):  # its own analysis, not the manifest
            answer = _infer(framed.victim.url, framed.victim.node.vkey, ref, mode)
            assert answer.status_code == 400, answer.text
            assert answer.json()["code"] == "bad_input"
            assert "RandomUniformLike" in answer.json()["message"]
            assert "ask for attested" in answer.json()["message"]


def test_a_dispute_about_the_model_cannot_convict(
    framed: Framed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An optimistic answer signed before the node refused such requests: the referee refuses
    the dispute (HTTP 400), the game refuses to start, and a verdict of a game played anyway
    (by a referee without the check) does not verify."""
    node = framed.victim.node
    node._check_judgeable = lambda manifest, mode: None  # type: ignore[method-assign]
    try:
        response = _infer(framed.victim.url, node.vkey, framed.honest.cid, "optimistic")
    finally:
        del node._check_judgeable  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text
    node.archive.flush()
    bundle = Bundle.from_json(response.json()["bundle"])
    third = Node(framed.tmp / "challenger", name="challenger.test", peers=[framed.victim.url])
    served = Served(third)
    try:
        body = {"bundle": bundle.to_dict(), "challenger": served.url,
                "defendant": framed.victim.url, "deadline": 30,
                "inputs": base64.b64encode(tensors.encode_binary(HIGH)).decode()}  # fmt: skip
        answer = httpx.post(f"{framed.witness.url}/v1/disputes", json=body, timeout=120)
    finally:
        served.stop()
        third.close()
    assert answer.status_code == 400, answer.text
    assert "never disputed" in answer.json()["message"]
    referee = note.Signer(note.generate_key("referee.test")[0])
    challenger = note.Signer(note.generate_key("challenger.test")[0])
    dispute = Dispute.create(bundle, challenger=challenger.vkey, referee=referee.vkey)
    with pytest.raises(Exception, match="never disputed"):
        settle(dispute, HIGH, framed.model, defendant=_Nobody(node.vkey),
               challenger=_Nobody(challenger.vkey), signer=referee)  # fmt: skip
    answered = tensors.decode_json(response.json()["outputs"])
    with monkeypatch.context() as patch:
        patch.setattr(dispute_module, "nondeterministic_operators", lambda proto: [])
        played = settle(
            dispute, HIGH, framed.model, signer=referee,
            defendant=LocalParty(node.signer, lambda _: framed.model, lambda d, i: answered,
                                 engine=bundle.receipt["engine"]),
            challenger=LocalParty(challenger, lambda _: framed.model, lambda d, i: None,
                                  engine=bundle.receipt["engine"]),
        )  # fmt: skip
    with pytest.raises(VerificationError, match="never disputed"):
        verify_verdict(played.data, model=framed.model)


class _Nobody:
    """A side that is never asked anything (the game is refused before it starts)."""

    def __init__(self, vkey: str) -> None:
        self.vkey = vkey

    def opening(self, dispute: Any, inputs: Any) -> str:
        raise AssertionError("asked for an opening")

    def state(self, dispute: Any, step: int) -> dict[str, Any]:
        raise AssertionError("asked for a state")

    def reveal(self, dispute: Any, step: int, names: Any) -> Any:
        raise AssertionError("asked for a reveal")


# -- item 2 -----------------------------------------------------------------------------------


def test_a_forged_determinism_verdict_is_refused(framed: Framed) -> None:
    answer = _publish_over_http(framed.victim.url, framed.model, "alice/forged", framed.alice,
                                bit_identical=True, nondeterministic=[])  # fmt: skip
    assert answer.status_code == 422, answer.text
    assert "determinism.bit_identical" in answer.json()["message"]
    answer = _publish_over_http(framed.victim.url, framed.model, "alice/forged", framed.alice,
                                nondeterministic=None)  # fmt: skip
    assert answer.status_code == 422, answer.text
    assert "determinism.nondeterministic" in answer.json()["message"]


def test_an_uncalibrated_tolerance_is_refused(framed: Framed) -> None:
    iris = _graph_model([helper.make_node("Relu", ["x"], ["y"])])
    tolerance = {"abs": 1e300, "observed": 0.0, "margin": 4.0, "classes": ["avx2", "avx512"],
                 "emulated": ["Haswell"], "samples": 3, "seed": 1337}  # fmt: skip
    answer = _publish_over_http(framed.victim.url, iris, "alice/loose", framed.alice,
                                tolerance=tolerance)  # fmt: skip
    assert answer.status_code == 422, answer.text
    assert "determinism.tolerance" in answer.json()["message"]
    assert "has not calibrated" in answer.json()["message"]


def test_a_node_does_not_pull_a_forged_verdict_from_a_peer(framed: Framed) -> None:
    """The legacy manifest sits in the victim's hub (as in a dishonest peer's): a node that
    fetches it compares it with its own analysis and refuses it."""
    fetcher = Node(framed.tmp / "fetcher", name="fetcher.test", peers=[framed.victim.url])
    served = Served(fetcher)
    try:
        answer = _infer(served.url, fetcher.vkey, "alice/legacy@1")
        assert answer.status_code == 404, answer.text
        assert "determinism.bit_identical" in answer.json()["message"]
        assert _infer(served.url, fetcher.vkey, "alice/framing@1").status_code == 200
        # a model the fetcher's own checks refuse is a bad source too (tried like a liar: 404)
        garbage = b"not an onnx model"
        framed.victim.node.hub.blobs.put(garbage)
        facts = {key: framed.honest.body[key] for key in framed.honest.body}
        facts.update(size=len(garbage), model=cid.compute(garbage))
        _commit(framed.victim.node, _forged(facts, "alice/garbage", framed.alice), framed.alice)
        answer = _infer(served.url, fetcher.vkey, "alice/garbage@1")
        assert answer.status_code == 404, answer.text
        assert "malformed ONNX model" in answer.json()["message"]
    finally:
        served.stop()
        fetcher.close()


def test_a_tolerance_other_than_the_measured_one_is_refused(framed: Framed) -> None:
    """Once this node calibrated the model (admin), a declared tolerance must be exactly what it
    measured: 1e300 is refused naming the field, the measured one is published."""
    model = _graph_model([helper.make_node("Sigmoid", ["x"], ["y"])])
    admin = {"authorization": f"Bearer {framed.victim.node.admin_token}"}
    with httpx.Client(base_url=framed.victim.url, timeout=900) as http:
        model_cid = http.put("/v1/blobs", content=model).json()["cid"]
        measured = http.post(f"/v1/blobs/{model_cid}/analysis", params={"calibrate": "true"},
                             headers=admin)  # fmt: skip
        assert measured.status_code == 200, measured.text
    tolerance = measured.json()["determinism"]["tolerance"]
    answer = _publish_over_http(framed.victim.url, model, "alice/calibrated", framed.alice,
                                tolerance={**tolerance, "abs": 1e300})  # fmt: skip
    assert answer.status_code == 422, answer.text
    assert "determinism.tolerance.abs = 1e+300" in answer.json()["message"]
    answer = _publish_over_http(framed.victim.url, model, "alice/calibrated", framed.alice,
                                tolerance=tolerance)  # fmt: skip
    assert answer.status_code == 200, answer.text


def test_re_execution_refuses_to_judge_the_model_in_the_cli_and_the_sdk(
    framed: Framed, tmp_path: Path
) -> None:
    """``verinfer verify --reexecute`` (and ``verify_bundle(reexecute=True)``) on an answer of
    a model with a random operator: not "the outputs differ" or "bit-identical", but a refusal
    naming the operators, whatever the draws here."""
    outputs, bundle = _answer(framed, framed.honest.cid)
    with pytest.raises(VerificationError, match=r"step 6 .*nondeterministic .*RandomUniformLike"):
        verify_bundle(bundle, [framed.victim.node.vkey], inputs=HIGH, outputs=outputs,
                      model=framed.model, reexecute=True)  # fmt: skip
    (tmp_path / "bundle.json").write_text(bundle.to_json())
    (tmp_path / "x.json").write_text(json.dumps(tensors.encode_json(HIGH)))
    (tmp_path / "model.onnx").write_bytes(framed.model)
    (tmp_path / "trust.txt").write_text(framed.victim.node.vkey + "\n")
    done = subprocess.run(
        [sys.executable, "-c", "from verinfer.cli import main; main()", "verify",
         str(tmp_path / "bundle.json"), "--trust", str(tmp_path / "trust.txt"),
         "--inputs", str(tmp_path / "x.json"), "--model", str(tmp_path / "model.onnx"),
         "--reexecute"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "nondeterministic operators (RandomUniformLike)" in done.stderr
    assert "Traceback" not in done.stderr
