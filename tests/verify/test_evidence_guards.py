"""Fraud evidence convicts only the liar, and only for what it signed: each test fails if one
of ``verify_evidence``'s guards is removed (the accused log is the bundle's; the inputs are
the receipt's; the claimed outputs differ from the receipt's; the receipt's engine identity is
this machine's). Real nodes, a real dishonest one, real re-execution here."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from verinfer import engine, note, tensors
from verinfer.engine import Engine
from verinfer.errors import VerificationError
from verinfer.examples import sklearn_model
from verinfer.hub.documents import Manifest
from verinfer.node import Node
from verinfer.testing import FalsifyingEngine
from verinfer.verify.evidence import equivocation, fraud, verify_evidence

MODEL = sklearn_model("iris")
X = {"X": np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)}
OTHER_X = {"X": np.array([[6.7, 3.0, 5.2, 2.3]], np.float32)}


def another_class() -> str:
    """An engine identity of another CPU kernel class than this machine's."""
    here = engine.kernel_class()
    return engine.identity().rsplit("/", 1)[0] + "/" + ("avx2" if here != "avx2" else "sse4")


class OtherClassEngine(Engine):
    """An honest node on another kernel class: the low bits of its float outputs differ."""

    @property
    def identity(self) -> str:
        return another_class()

    def run(self, model: str, load: Any, inputs: Mapping[str, np.ndarray], **options: Any
            ) -> dict[str, np.ndarray]:  # fmt: skip
        outputs = super().run(model, load, inputs, **options)
        return {
            name: np.nextafter(value, np.inf) if value.dtype.kind == "f" else value
            for name, value in outputs.items()
        }


@dataclass
class Nodes:
    honest: Node
    liar: Node
    elsewhere: Node
    manifests: dict[str, bytes]  # by node vkey: the manifest each node's receipts name

    def manifest(self, answer: Any) -> bytes:
        return self.manifests[answer.bundle.receipt["node"]]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    tmp = tmp_path_factory.mktemp("evidence")
    alice = note.Signer(note.generate_key("alice")[0])
    honest = Node(tmp / "honest", name="honest.test")
    liar = Node(tmp / "liar", name="liar.test", engine=FalsifyingEngine(share=1.0))
    elsewhere = Node(tmp / "elsewhere", name="elsewhere.test", engine=OtherClassEngine())
    try:
        manifests = {
            node.vkey: node.hub.publish(
                MODEL, repository="alice/iris", version="1", signer=alice
            ).data
            for node in (honest, liar, elsewhere)
        }
        yield Nodes(honest, liar, elsewhere, manifests)
    finally:
        for node in (honest, liar, elsewhere):
            node.close()


def npz(values: Mapping[str, np.ndarray]) -> bytes:
    return tensors.encode_binary(values)


def here(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return Engine().run("iris", lambda: MODEL, inputs)


def test_true_fraud_evidence_convicts_the_liar(nodes: Nodes) -> None:
    answer = nodes.liar.infer("alice/iris", X)
    evidence = fraud(answer.bundle, nodes.manifest(answer), npz(X), npz(here(X)), engine.identity())
    verdict = verify_evidence(evidence, model=MODEL)
    assert verdict.startswith(f"node {nodes.liar.vkey} signed outputs")


@pytest.mark.parametrize("field", ["vkey", "log"])
def test_evidence_about_a_liar_cannot_accuse_another_log(nodes: Nodes, field: str) -> None:
    """The liar's bundle proves the liar lied; relabelled as evidence against an honest node
    (which is whom a client would stop calling), it must convict nobody."""
    answer = nodes.liar.infer("alice/iris", X)
    evidence = fraud(answer.bundle, nodes.manifest(answer), npz(X), npz(here(X)), engine.identity())
    evidence[field] = {"vkey": nodes.honest.vkey, "log": nodes.honest.log.origin}[field]
    with pytest.raises(VerificationError, match="the bundle is not of the accused log"):
        verify_evidence(evidence, model=MODEL)


def test_the_model_on_other_inputs_convicts_nobody(nodes: Nodes) -> None:
    """An honest answer for X; the model's true outputs for other inputs differ from it, and
    re-executing on those other inputs gives them: a framing unless the inputs are checked."""
    answer = nodes.honest.infer("alice/iris", X)
    framing = fraud(answer.bundle, nodes.manifest(answer), npz(OTHER_X), npz(here(OTHER_X)),
                    engine.identity())  # fmt: skip
    assert tensors.map_digest(here(OTHER_X)) != answer.bundle.receipt["outputs"]
    with pytest.raises(VerificationError, match="the inputs are not the receipt's"):
        verify_evidence(framing, model=MODEL)


def test_the_answer_itself_is_no_evidence_against_it(nodes: Nodes) -> None:
    """Evidence whose 'correct' outputs are the receipt's own: re-execution agrees with both."""
    answer = nodes.honest.infer("alice/iris", X)
    framing = fraud(
        answer.bundle, nodes.manifest(answer), npz(X), npz(answer.outputs), engine.identity()
    )
    with pytest.raises(VerificationError, match="its outputs are the receipt's"):
        verify_evidence(framing, model=MODEL)


def test_an_answer_from_another_kernel_class_is_not_judged_here(nodes: Nodes) -> None:
    """An honest node on another kernel class answers with other low bits; re-executed here the
    model gives this machine's bits. Judging it here would convict an honest node."""
    answer = nodes.elsewhere.infer("alice/iris", X)
    assert answer.bundle.receipt["engine"] == another_class()
    ours = here(X)
    assert tensors.map_digest(ours) != answer.bundle.receipt["outputs"]
    framing = fraud(answer.bundle, nodes.manifest(answer), npz(X), npz(ours), engine.identity())
    with pytest.raises(VerificationError, match="cannot judge here: the node ran on"):
        verify_evidence(framing, model=MODEL)


def test_evidence_must_be_the_bundles_own_bytes(nodes: Nodes) -> None:
    answer = nodes.liar.infer("alice/iris", X)
    evidence = fraud(answer.bundle, nodes.manifest(answer), npz(X), npz(here(X)), engine.identity())
    evidence["inputs"] = base64.b64encode(b"not an npz").decode()
    with pytest.raises(VerificationError, match="malformed evidence: inputs"):
        verify_evidence(evidence, model=MODEL)
    with pytest.raises(VerificationError, match="fraud evidence needs the bytes of model"):
        verify_evidence(fraud(answer.bundle, nodes.manifest(answer), npz(X), npz(here(X)), "e"))


# -- found by mutation testing (scripts/mutation.py): the document's shape is checked first ----


def _equivocation() -> dict[str, Any]:
    key = note.Signer(note.generate_key("log.test")[0])
    first, second = (key.sign(f"log.test\n4\n{base64.b64encode(bytes([b]) * 32).decode()}\n")
                     for b in (1, 2))  # fmt: skip
    return equivocation("log.test", key.vkey, first, second)


def test_equivocation_evidence_and_its_shape() -> None:
    document = _equivocation()
    assert "signed two different trees of size 4" in verify_evidence(json.dumps(document))
    with pytest.raises(VerificationError, match=r"malformed evidence: fields \['checkpoints', "):
        verify_evidence({**document, "extra": 1})
    with pytest.raises(VerificationError, match="malformed evidence: fields 'list'"):
        verify_evidence("[]")
    with pytest.raises(VerificationError, match="malformed evidence: Expecting"):
        verify_evidence("{")
    same = dict(document, checkpoints=[document["checkpoints"][0]] * 2)
    with pytest.raises(VerificationError, match="have the same root"):
        verify_evidence(same)


def test_the_evidence_judges_the_receipts_own_model_and_manifest(nodes: Nodes) -> None:
    """Another model's bytes (which give other outputs), or another signed manifest of the
    model, must not stand in for the receipt's: either would let anyone frame an honest node."""
    answer = nodes.honest.infer("alice/iris", X)
    other_model = MODEL + b"\x00"  # other bytes: not the receipt's model CID
    with pytest.raises(VerificationError, match=r"step 3 \(model\)"):
        verify_evidence(fraud(answer.bundle, nodes.manifest(answer), npz(X), npz(here(X)),
                              engine.identity()), model=other_model)  # fmt: skip
    mallory = note.Signer(note.generate_key("alice")[0])
    forged = Manifest.create(Manifest.from_bytes(nodes.manifest(answer)).body, repository=
                             "alice/iris", version="1", model=answer.bundle.receipt["model"],
                             signer=mallory)  # fmt: skip
    evidence = fraud(answer.bundle, forged.data, npz(X), npz(here(X)), engine.identity())
    with pytest.raises(VerificationError, match="evidence does not verify: the manifest"):
        verify_evidence(evidence, model=MODEL)
    evidence = fraud(answer.bundle, nodes.manifest(answer), npz(X), npz(here(X)), "e")
    evidence["bundle"] = json.dumps(evidence["bundle"])
    with pytest.raises(VerificationError, match="bundle must be an object, manifest text"):
        verify_evidence(evidence, model=MODEL)


def test_a_liars_replicated_answer_is_fraud_evidence_too(nodes: Nodes) -> None:
    answer = nodes.liar.infer("alice/iris", X, mode="replicated:2")
    evidence = fraud(answer.bundle, nodes.manifest(answer), npz(X), npz(here(X)),
                     engine.identity())  # fmt: skip
    assert verify_evidence(evidence, model=MODEL).startswith(f"node {nodes.liar.vkey} signed")
