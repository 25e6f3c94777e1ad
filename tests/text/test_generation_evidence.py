"""Re-execution, audits and fraud evidence for text-generation receipts, through their real
interfaces: ``verinfer verify-generation --reexecute`` and ``verinfer evidence verify`` as
processes, the :class:`~verinfer.audit.Auditor` against the node on loopback, and a second node
judging submitted evidence (``POST /v1/evidence``). A dishonest node is the real node signing a
forged record (what a lying operator's node can do); the forgeries are built from an honest
record as the detection tests build them."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from text_support import TextNode

from verinfer import tensors
from verinfer.audit import Auditor, Finding
from verinfer.errors import VerificationError
from verinfer.modes.generation import commitment_fault
from verinfer.node import Node
from verinfer.node.app import create_app
from verinfer.node.text import Finished, TextModels
from verinfer.text.generation import Generation
from verinfer.text.gguf import Converted
from verinfer.text.sampler import Sampling
from verinfer.verify.evidence import generation_fraud, verify_evidence

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VERINFER, *args], check=False, capture_output=True, text=True, timeout=300
    )


@dataclasses.dataclass
class Records:
    """An honest generation and the forgeries the node signed, each logged publicly."""

    honest: Finished
    replaced: Finished  # one generated token replaced, the commitments left as computed
    perturbed: Finished  # one committed logit lowered beyond the tolerance (sampler replay holds)
    seed: Finished  # another seed claimed
    cut: Finished  # the output truncated, still claiming "length"
    position: int  # the replaced token's / the perturbed logit's position


@pytest.fixture(scope="module")
def records(text_node: TextNode) -> Records:
    texts = TextModels(text_node.node)
    chat = texts.chat_model("alice/smollm2")
    prompt = texts.prompt(chat, messages=[{"role": "user", "content": "Tell me a story."}])
    sampling = Sampling(temperature=1.0, seed=5, max_tokens=6)
    finished = list(texts.generate(chat, prompt, sampling, audit="public"))[-1]
    assert isinstance(finished, Finished)
    g = finished.generation

    def signed(forged: Generation) -> Finished:  # the same node signs and logs a forged record
        return texts._log(finished.manifest, forged, "", None, "public")

    position = next(i for i in range(1, len(g.tokens)) if int(g.top_ids[i, 3]) != g.tokens[i])
    tokens = list(g.tokens)
    tokens[position] = int(g.top_ids[position, 3])
    values = g.top_logits.copy()
    values[position, 7] -= np.float16(1.0)  # still the lowest: the row stays highest first
    perturbed = dataclasses.replace(g, top_logits=values)
    assert all(commitment_fault(perturbed, p) is None for p in range(len(g.tokens)))
    cut = dataclasses.replace(
        g, tokens=g.tokens[:4], top_ids=g.top_ids[:4], top_logits=g.top_logits[:4]
    )
    return Records(
        honest=finished,
        replaced=signed(dataclasses.replace(g, tokens=tuple(tokens))),
        perturbed=signed(perturbed),
        seed=signed(dataclasses.replace(g, sampling=dataclasses.replace(g.sampling, seed=6))),
        cut=signed(cut),
        position=position,
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory, converted: Converted) -> Path:
    path = tmp_path_factory.mktemp("model") / "smollm2.onnx"
    path.write_bytes(converted.model)
    return path


def _answer(path: Path, finished: Finished) -> Path:
    path.write_text(json.dumps({"bundle": finished.bundle.to_dict(),
                                "generation": finished.generation.to_json()}))  # fmt: skip
    return path


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    return tensors.encode_binary(arrays)


def _evidence(text_node: TextNode, finished: Finished, position: int) -> dict[str, object]:
    g = finished.generation
    manifest = text_node.node.hub.blobs.get(finished.manifest.cid)
    return generation_fraud(finished.bundle, manifest, _npz(g.inputs()), _npz(g.outputs()),
                            position)  # fmt: skip


# -- re-execution from the command line -------------------------------------------------------


def test_verify_generation_reexecutes_an_honest_answer_with_the_model_from_the_node(
    text_node: TextNode, records: Records, tmp_path: Path
) -> None:
    answer = _answer(tmp_path / "answer.json", records.honest)
    result = run("verify-generation", str(answer), "--node-key", text_node.node.vkey,
                 "--reexecute", "--node", text_node.url)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "6. re-executed here in one teacher-forced pass over 6 tokens" in result.stdout
    assert "verified 6 generated tokens" in result.stdout


def test_verify_generation_reexecute_names_the_position_a_perturbed_logit_is_at(
    text_node: TextNode, records: Records, tmp_path: Path, model_file: Path
) -> None:
    answer = _answer(tmp_path / "answer.json", records.perturbed)
    offline = run("verify-generation", str(answer), "--node-key", text_node.node.vkey)
    assert offline.returncode == 0, offline.stderr  # self-consistent: only the model tells
    result = run("verify-generation", str(answer), "--node-key", text_node.node.vkey,
                 "--reexecute", "--model", str(model_file))  # fmt: skip
    assert result.returncode == 1
    assert f"step 6 (re-execution): at position {records.position} a committed logit" in (
        result.stderr
    )


def test_verify_generation_reexecute_refuses_without_the_right_model(
    text_node: TextNode, records: Records, tmp_path: Path, model_file: Path
) -> None:
    answer = _answer(tmp_path / "answer.json", records.honest)
    key = text_node.node.vkey
    missing = run("verify-generation", str(answer), "--node-key", key, "--reexecute")
    assert missing.returncode == 1
    assert "--reexecute needs the model: --model FILE or --node URL" in missing.stderr
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not the model")
    wrong = run("verify-generation", str(answer), "--node-key", key, "--reexecute",
                "--model", str(other))  # fmt: skip
    assert wrong.returncode == 1
    assert "step 3 (model)" in wrong.stderr
    # the ONNX path's re-execution refuses a generation record with the reason, not an ORT error
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(records.honest.bundle.to_dict()))
    inputs = tmp_path / "inputs.npz"
    inputs.write_bytes(_npz(records.honest.generation.inputs()))
    keys = tmp_path / "keys.txt"
    keys.write_text(key + "\n")
    onnx_path = run("verify", str(bundle), "--trust", str(keys), "--inputs", str(inputs),
                    "--model", str(model_file), "--reexecute")  # fmt: skip
    assert onnx_path.returncode == 1
    assert "step 6 (re-execution): these are a generation record's tensors" in onnx_path.stderr


# -- audits -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def findings(text_node: TextNode, records: Records) -> dict[int, Finding]:
    seen: dict[int, Finding] = {}
    with Auditor([(text_node.url, text_node.node.vkey)], rate=1.0, seed=1) as auditor:
        auditor.round(on_finding=lambda finding: seen.__setitem__(finding.index, finding))
    return seen


def test_an_audit_passes_an_honest_generation(
    findings: dict[int, Finding], records: Records
) -> None:
    found = findings[records.honest.bundle.index]
    assert (found.verdict, found.evidence) == ("ok", None), found.detail
    assert "generation within the tolerance" in found.detail


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("replaced", "step G2 (sampler): at position {position}"),
        ("perturbed", "re-executed, position {position} is"),
        ("seed", "step G2 (sampler)"),
    ],
)
def test_an_audit_convicts_a_dishonest_generation_with_evidence(
    findings: dict[int, Finding], records: Records, converted: Converted, name: str, detail: str
) -> None:
    finished: Finished = getattr(records, name)
    found = findings[finished.bundle.index]
    assert found.verdict == "fraud", found
    assert detail.format(position=records.position) in found.detail
    assert found.evidence is not None
    verdict = verify_evidence(json.dumps(found.evidence), model=converted.model)
    assert f"signed a generation of model {finished.bundle.receipt['model']}" in verdict


def test_an_audit_reports_a_truncated_generation(
    findings: dict[int, Finding], records: Records
) -> None:
    found = findings[records.cut.bundle.index]
    assert found.verdict == "fraud"
    assert "step G3 (end)" in found.detail
    assert "cut short" in found.detail


# -- fraud evidence ---------------------------------------------------------------------------


def test_evidence_convicts_a_perturbed_logit_from_the_command_line(
    text_node: TextNode, records: Records, tmp_path: Path, model_file: Path
) -> None:
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps(_evidence(text_node, records.perturbed, records.position)))
    result = run("evidence", "verify", str(path), "--model", str(model_file))
    assert result.returncode == 0, result.stderr
    assert f"false at position {records.position}" in result.stdout
    assert "times the tolerance" in result.stdout


def test_evidence_cannot_frame_an_honest_node(
    text_node: TextNode, records: Records, converted: Converted, tmp_path: Path, model_file: Path
) -> None:
    model = converted.model
    honest = _evidence(text_node, records.honest, 2)
    # (a) pointing at a position of an honest generation: within the tolerance
    with pytest.raises(VerificationError, match=r"at position 2 .* within the tolerance"):
        verify_evidence(json.dumps(honest), model=model)
    # (b) archived tensors altered: a token changed, or a committed logit
    g = records.honest.generation
    tokens = list(g.tokens)
    tokens[1] = int(g.top_ids[1, 4])
    altered = dict(honest, outputs=base64.b64encode(_npz(dataclasses.replace(
        g, tokens=tuple(tokens)).outputs())).decode(), position=1)  # fmt: skip
    with pytest.raises(VerificationError, match="the outputs are not the receipt's"):
        verify_evidence(json.dumps(altered), model=model)
    values = g.top_logits.copy()
    values[2, 7] -= np.float16(1.0)
    bent = dataclasses.replace(g, top_logits=values).outputs()
    altered = dict(honest, outputs=base64.b64encode(_npz(bent)).decode())
    with pytest.raises(VerificationError, match="the outputs are not the receipt's"):
        verify_evidence(json.dumps(altered), model=model)
    prompt = dataclasses.replace(g, prompt=(*g.prompt[:-2], g.prompt[-1])).inputs()
    altered = dict(honest, inputs=base64.b64encode(_npz(prompt)).decode())
    with pytest.raises(VerificationError, match="the inputs are not the receipt's"):
        verify_evidence(json.dumps(altered), model=model)
    # (c) the receipt altered (its digests pointed at the altered tensors): the signature fails
    forged = json.loads(json.dumps(honest))
    receipt = json.loads(forged["bundle"]["receipt"])
    receipt["outputs"] = tensors.map_digest(bent)
    forged["bundle"]["receipt"] = json.dumps(receipt, separators=(",", ":"), sort_keys=True)
    forged["outputs"] = base64.b64encode(_npz(bent)).decode()
    with pytest.raises(VerificationError, match="evidence does not verify"):
        verify_evidence(json.dumps(forged), model=model)
    # (d) another model than the receipt's
    with pytest.raises(VerificationError, match="step 3"):
        verify_evidence(json.dumps(honest), model=model + b"\x00")
    # ... and from the command line, the same refusal for the honest node's generation
    path = tmp_path / "framing.json"
    path.write_text(json.dumps(honest))
    result = run("evidence", "verify", str(path), "--model", str(model_file))
    assert result.returncode == 1
    assert "within the tolerance" in result.stderr


def test_malformed_or_truncated_evidence_is_refused_with_the_reason(
    text_node: TextNode, records: Records, converted: Converted, tmp_path: Path
) -> None:
    evidence = _evidence(text_node, records.perturbed, records.position)
    text = json.dumps(evidence)
    with pytest.raises(VerificationError, match="malformed evidence: "):
        verify_evidence(text[: len(text) // 2], model=converted.model)
    missing = {k: v for k, v in evidence.items() if k != "position"}
    with pytest.raises(VerificationError, match=r"malformed evidence: fields \["):
        verify_evidence(json.dumps(missing), model=converted.model)
    for position in (-1, True, "2"):
        with pytest.raises(VerificationError, match="is not a position"):
            verify_evidence(json.dumps(dict(evidence, position=position)), model=converted.model)
    with pytest.raises(VerificationError, match="position 99 is not one of the 6 generated"):
        verify_evidence(json.dumps(dict(evidence, position=99)), model=converted.model)
    with pytest.raises(VerificationError, match="malformed evidence: outputs"):
        verify_evidence(json.dumps(dict(evidence, outputs="not base64!")), model=converted.model)
    with pytest.raises(VerificationError, match="needs the bytes of model"):
        verify_evidence(text)
    path = tmp_path / "cut.json"
    path.write_text(text[:1000])
    result = run("evidence", "verify", str(path))
    assert result.returncode == 1
    assert "malformed evidence" in result.stderr


# -- a node judging submitted evidence --------------------------------------------------------


@pytest.fixture(scope="module")
def judge(
    tmp_path_factory: pytest.TempPathFactory, text_node: TextNode, converted: Converted
) -> Iterator[str]:
    """A second node holding the model, witnessing the text node's log, on loopback."""
    with Node(tmp_path_factory.mktemp("judge") / "node") as node:
        node.hub.publish(
            converted.model, repository="alice/smollm2", version="1", signer=text_node.publisher,
            text=converted.text, tokenizer=converted.tokenizer,
        )  # fmt: skip
        node.witness.trust(text_node.node.log.origin, text_node.node.vkey)
        config = uvicorn.Config(create_app(node), host="127.0.0.1", port=0, log_level="error")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def test_a_node_keeps_generation_evidence_only_when_it_convicts(
    text_node: TextNode, records: Records, judge: str
) -> None:
    convicting = _evidence(text_node, records.replaced, records.position)
    framing = _evidence(text_node, records.honest, records.position)
    with httpx.Client(base_url=judge, timeout=300) as http:
        kept = http.post("/v1/evidence", json=convicting)
        assert kept.status_code == 200, kept.text
        assert kept.json()["kept"] is True
        assert f"false at position {records.position}" in kept.json()["verdict"]
        refused = http.post("/v1/evidence", json=framing)
        assert refused.status_code == 422, refused.text
        assert "within the tolerance" in refused.json()["message"]
        truncated = http.post("/v1/evidence", content=json.dumps(convicting)[:500])
        assert truncated.status_code == 400
        assert "not JSON" in truncated.json()["message"]
        assert convicting in http.get("/v1/evidence").json()
        assert framing not in http.get("/v1/evidence").json()
