"""Forgeries a lying node could try against replicated bundles and evidence (found in review):
each is refused by the offline verifier."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import numpy as np
import pytest

from verinfer import cid, merkle, note, tensors
from verinfer.errors import VerificationError
from verinfer.hub.documents import Manifest
from verinfer.modes.replicated import Agreement
from verinfer.verify import Bundle, Receipt, verify_bundle
from verinfer.verify.evidence import verify_evidence

MODEL = cid.compute(b"the model")
X = {"x": np.ones(3, np.float32)}
GOOD = {"y": np.array([1.0, 2.0, 3.0], np.float32)}
BAD = {"y": np.array([1e6, -5.0, 42.0], np.float32)}
ENGINE = "onnxruntime-1.0/CPUExecutionProvider/opt-all/"


def signer(name: str) -> note.Signer:
    return note.Signer(note.generate_key(name)[0])


def bundle_for(key: note.Signer, outputs: dict[str, np.ndarray], engine: str,
               manifest: str | None, mode: str = "replicated:2") -> Bundle:  # fmt: skip
    receipt = Receipt.create(
        log=key.name, node=key.vkey, model=MODEL, manifest=manifest,
        inputs=tensors.map_digest(X), outputs=tensors.map_digest(outputs), mode=mode,
        engine=engine, time="2026-01-01T00:00:00.000Z", nonce="n1",
    )  # fmt: skip
    root = merkle.root([merkle.leaf_hash(receipt.data)])
    text = f"{key.name}\n1\n{base64.b64encode(root).decode()}\n"
    return Bundle(receipt, 0, (), key.sign(text))


def manifest(owner: note.Signer, model: str, tolerance: float | None) -> Manifest:
    determinism: dict[str, object] = {"bit_identical": True}
    if tolerance is not None:
        determinism["tolerance"] = {"abs": tolerance, "classes": ["avx2", "avx512"]}
    facts = {"size": 1, "format": "onnx", "ir_version": 8, "opsets": {"ai.onnx": 17},
             "producer": "x", "inputs": [{"name": "x", "dtype": "float32", "shape": [3]}],
             "outputs": [{"name": "y", "dtype": "float32", "shape": [3]}], "parameters": 0,
             "operators": [], "determinism": determinism}  # fmt: skip
    return Manifest.create(facts, repository=f"{owner.name}/m", version="1", model=model,
                           signer=owner)  # fmt: skip


def combined(primary: Bundle, replicas: list[Bundle], outputs: list[dict[str, np.ndarray]],
             manifest_data: bytes) -> Bundle:  # fmt: skip
    deviation = max(tensors.deviation(outputs[0], o) or 0.0 for o in outputs[1:])
    compared = tuple(tensors.encode_binary(o) for o in outputs)
    built = Bundle(primary.receipt, 0, (), primary.checkpoint, (),
                   Agreement(tuple(replicas), compared, manifest_data, deviation))  # fmt: skip
    return Bundle.from_json(built.to_json())


def test_a_liar_cannot_bring_its_own_tolerance() -> None:
    honest, liar, mallory = signer("honest.test"), signer("liar.test"), signer("mallory")
    keys = [honest.vkey, liar.vkey]
    own = manifest(mallory, cid.compute(b"another model"), 1e300)
    replica = bundle_for(honest, GOOD, ENGINE + "avx512", None)
    primary = bundle_for(liar, BAD, ENGINE + "avx2", own.cid)
    with pytest.raises(VerificationError, match="every receipt must name one manifest"):
        verify_bundle(combined(primary, [replica], [BAD, GOOD], own.data), keys)
    replica = bundle_for(honest, GOOD, ENGINE + "avx512", own.cid)
    with pytest.raises(VerificationError, match="manifest is of another model"):
        verify_bundle(combined(primary, [replica], [BAD, GOOD], own.data), keys)
    real = manifest(mallory, MODEL, 1e-6)  # the right model, a real bound: the lie exceeds it
    primary = bundle_for(liar, BAD, ENGINE + "avx2", real.cid)
    replica = bundle_for(honest, GOOD, ENGINE + "avx512", real.cid)
    with pytest.raises(VerificationError, match="beyond the declared tolerance"):
        verify_bundle(combined(primary, [replica], [BAD, GOOD], real.data), keys)


def test_nothing_unchecked_rides_along_and_same_engines_agree_pairwise() -> None:
    a, b, c = signer("a.test"), signer("b.test"), signer("c.test")
    first = bundle_for(a, GOOD, ENGINE + "avx2", None, "replicated:3")
    second = bundle_for(b, GOOD, ENGINE + "avx2", None, "replicated:3")
    text = json.loads(
        Bundle(first.receipt, 0, (), first.checkpoint, (), Agreement((second,))).to_json()
    )
    text["evidence"] = {"replicas": [second.to_dict(), second.to_dict()]}
    third = bundle_for(c, GOOD, ENGINE + "avx2", None, "replicated:3")
    garbage = json.loads(Bundle(first.receipt, 0, (), first.checkpoint, (),
                                Agreement((second, third))).to_json())  # fmt: skip
    garbage["evidence"].update(outputs=["AAAA"] * 3, manifest="anything", deviation=12345)
    with pytest.raises(VerificationError, match="nothing unchecked rides along"):
        verify_bundle(Bundle.from_json(garbage), [a.vkey, b.vkey, c.vkey])
    # b and c share an engine but disagree, while the primary runs on another class
    real = manifest(signer("owner"), MODEL, 1e9)
    p = bundle_for(a, GOOD, ENGINE + "avx512", real.cid, "replicated:3")
    q = bundle_for(b, GOOD, ENGINE + "avx2", real.cid, "replicated:3")
    r = bundle_for(c, BAD, ENGINE + "avx2", real.cid, "replicated:3")
    with pytest.raises(VerificationError, match="on the same engine: the nodes disagree"):
        verify_bundle(combined(p, [q, r], [GOOD, GOOD, BAD], real.data),
                      [a.vkey, b.vkey, c.vkey])  # fmt: skip
    huge = json.loads(combined(p, [q, r], [GOOD, GOOD, BAD], real.data).to_json())
    huge["evidence"]["deviation"] = 10**400
    with pytest.raises(VerificationError, match="evidence deviation"):
        Bundle.from_json(huge)


def _bomb() -> bytes:
    """A small .npz whose member declares 200 MB."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("y.npy", "w", force_zip64=True) as member,
    ):
        np.lib.format.write_array(member, np.zeros(50_000_000, np.float32))
    return buffer.getvalue()


def test_fraud_evidence_cannot_bomb_or_convict_a_non_reproducible_model() -> None:
    node = signer("node.test")
    owner = signer("owner")
    reproducible = manifest(owner, MODEL, None)
    bundle = bundle_for(node, GOOD, ENGINE + "avx2", reproducible.cid, "attested")
    document = {
        "type": "verinfer.evidence/v1", "kind": "fraud", "log": node.name, "vkey": node.vkey,
        "bundle": bundle.to_dict(), "manifest": reproducible.data.decode(),
        "inputs": base64.b64encode(tensors.encode_binary(X)).decode(),
        "outputs": base64.b64encode(_bomb()).decode(), "engine": ENGINE + "avx2",
    }  # fmt: skip
    model = b"the model"
    with pytest.raises(VerificationError, match=r"above the limit|holds more than"):
        verify_evidence(json.dumps(document), model=model)
    owner_facts = dict(reproducible.body)
    owner_facts["determinism"] = {"bit_identical": False}
    unrepro = Manifest.create(owner_facts, repository="owner/m", version="2", model=MODEL,
                              signer=owner)  # fmt: skip
    bundle = bundle_for(node, GOOD, ENGINE + "avx2", unrepro.cid, "attested")
    document.update(bundle=bundle.to_dict(), manifest=unrepro.data.decode(),
                    outputs=base64.b64encode(tensors.encode_binary(BAD)).decode())  # fmt: skip
    with pytest.raises(VerificationError, match="not record the model as bit-reproducible"):
        verify_evidence(json.dumps(document), model=model)
