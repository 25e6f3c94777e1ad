"""Evidence of misbehaviour: self-contained documents anyone can check offline, with no trust in
whoever found them. Pure: no I/O.

- ``equivocation``: one log key signed two checkpoints of the same origin and size with
  different roots, i.e. two different histories (a split view).
- ``fraud``: a node's signed, logged receipt (a bundle) states outputs that its model does not
  give on its inputs: the evidence holds the bundle, the inputs and the correct outputs; anyone
  with the model's bytes re-executes and sees it (on the receipt's engine identity, since low
  bits may differ across CPU kernel classes).
- ``broken-promise``: a node's signed promise (:mod:`verinfer.verify.promise`) that a receipt
  would be entry ``i`` of its log (the batch's note, the receipt's leaf hash and its path in the
  batch), and a checkpoint it signed that proves otherwise: of size > i,
  with an inclusion proof of another leaf at ``i`` (conclusive at any time: the log is
  append-only). A tree too small to hold ``i`` proves nothing, whoever cosigned it when: a
  witness's timestamp dates its own signature, and an old checkpoint cosigned late would frame
  a node that kept the promise.
- ``dispute``: a referee's verdict that convicts a defendant by its own signed trace; anyone
  with the model's bytes replays the verdict and re-runs the disputed step.
- ``generation-fraud``: a node's signed, logged text-generation receipt, the record's tensors it
  names (docs/PROTOCOL.md §16) and a position where the record is false: the sampler replayed on
  the committed candidates does not pick the token there, or the model's teacher-forced pass
  deviates from the committed logits beyond the calibrated tolerance. Honest decoding stays
  within it on every CPU kernel class, so it is judged on any machine.

Checking fraud, generation and dispute evidence runs ONNX Runtime (imported only then); the
rest is pure.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from verinfer import merkle, note, tensors
from verinfer.errors import Error, InputError, VerificationError
from verinfer.verify.bundle import Bundle
from verinfer.verify.promise import Promise, open_promise_of
from verinfer.verify.verifier import verify_bundle

if TYPE_CHECKING:  # the dispute game needs ONNX Runtime: loaded only to check its evidence
    from verinfer.modes.dispute import Verdict

__all__ = [
    "EVIDENCE_TYPE",
    "broken_promise",
    "dispute",
    "equivocation",
    "fraud",
    "generation_fraud",
    "model_of",
    "verify_evidence",
]

EVIDENCE_TYPE = "verinfer.evidence/v1"
_MAX_BYTES = 256 << 20
MAX_TENSOR_BYTES = 64 << 20  # what a piece of evidence may make a verifier decode


def equivocation(origin: str, vkey: str, first: str, second: str) -> dict[str, Any]:
    """Equivocation evidence: two signed checkpoints of ``origin`` of one size, two roots."""
    return {
        "type": EVIDENCE_TYPE,
        "kind": "equivocation",
        "log": origin,
        "vkey": vkey,
        "checkpoints": [first, second],
    }


def fraud(
    bundle: Bundle, manifest: bytes, inputs: bytes, outputs: bytes, engine: str
) -> dict[str, Any]:
    """Fraud evidence: the node's ``bundle``, the manifest its receipt names (which must record
    the model as bit-reproducible), the inputs (``.npz``) its receipt names, and the outputs
    (``.npz``) the model gives on them on ``engine``."""
    return _judged("fraud", bundle, manifest, inputs, outputs, engine=engine)


def generation_fraud(
    bundle: Bundle, manifest: bytes, inputs: bytes, outputs: bytes, position: int
) -> dict[str, Any]:
    """Generation fraud evidence: the node's ``bundle`` of a text generation, the chat model's
    manifest its receipt names, the record's tensors (``.npz``) its receipt names, and the
    ``position`` (0 = the first generated token) where the record is false."""
    return _judged("generation-fraud", bundle, manifest, inputs, outputs, position=position)


def _judged(
    kind: str, bundle: Bundle, manifest: bytes, inputs: bytes, outputs: bytes, **rest: Any
) -> dict[str, Any]:
    """Evidence judged by re-running the model: the node's bundle, its manifest and tensors."""
    return {
        "type": EVIDENCE_TYPE,
        "kind": kind,
        "log": bundle.receipt["log"],
        "vkey": bundle.receipt["node"],
        "bundle": bundle.to_dict(),
        "manifest": manifest.decode(),
        "inputs": base64.b64encode(inputs).decode(),
        "outputs": base64.b64encode(outputs).decode(),
        **rest,
    }


def broken_promise(
    promise: Promise, checkpoint: str, leaf: bytes, proof: Iterable[bytes]
) -> dict[str, Any]:
    """Broken-promise evidence: the node's verified ``promise`` (its signed note, the promised
    receipt's leaf hash and its path in the promised batch) and a ``checkpoint`` the node signed
    that holds another ``leaf`` at the promised index, proven by ``proof``."""
    return {
        "type": EVIDENCE_TYPE,
        "kind": "broken-promise",
        "log": promise.log,
        "vkey": promise.node,
        "promise": promise.signed,
        "index": promise.index,
        "promised": base64.b64encode(promise.leaf).decode(),
        "path": [base64.b64encode(h).decode() for h in promise.path],
        "checkpoint": checkpoint,
        "leaf": base64.b64encode(leaf).decode(),
        "proof": [base64.b64encode(h).decode() for h in proof],
    }


def verify_evidence(document: str | bytes | dict[str, Any], *, model: bytes | None = None) -> str:
    """Check evidence; return the verdict it proves, or raise :class:`VerificationError`.

    Fraud and dispute evidence need ``model`` (the bytes :func:`model_of` names)."""
    if isinstance(document, str | bytes):
        if len(document) > _MAX_BYTES:
            raise VerificationError(f"malformed evidence: larger than {_MAX_BYTES} bytes")
        try:
            document = json.loads(document)
        except (ValueError, RecursionError) as exc:
            raise VerificationError(f"malformed evidence: {exc}") from exc
    kind = document.get("kind") if isinstance(document, dict) else None
    fields = {"type", "kind", "log", "vkey"} | {
        "equivocation": {"checkpoints"},
        "dispute": {"verdict"},
        "broken-promise": {"promise", "index", "promised", "path", "checkpoint", "leaf", "proof"},
        "generation-fraud": {"bundle", "manifest", "inputs", "outputs", "position"},
    }.get(str(kind), {"bundle", "manifest", "inputs", "outputs", "engine"})
    if not isinstance(document, dict) or set(document) != fields:
        found = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise VerificationError(f"malformed evidence: fields {found!r}")
    kinds = ("equivocation", "fraud", "dispute", "broken-promise", "generation-fraud")
    if document["type"] != EVIDENCE_TYPE or kind not in kinds:
        raise VerificationError(f"unsupported evidence {document['type']!r} / {kind!r}")
    if kind == "broken-promise":
        return _broken_promise(document)
    if kind == "fraud":
        return _fraud(document, model)
    if kind == "generation-fraud":
        return _generation_fraud(document, model)
    if kind == "dispute":
        return _dispute(document, model)
    vkey, origin, pair = document["vkey"], document["log"], document["checkpoints"]
    if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(c, str) for c in pair):
        raise VerificationError("malformed evidence: checkpoints must be two signed notes")
    if not isinstance(vkey, str) or not isinstance(origin, str):
        raise VerificationError("malformed evidence: log and vkey must be strings")
    try:
        (a, _), (b, _) = (note.verify_checkpoint(c, [vkey], origin=origin) for c in pair)
    except (VerificationError, InputError) as exc:
        raise VerificationError(f"evidence does not verify: {exc}") from exc
    if a.size != b.size:
        raise VerificationError(f"the checkpoints have sizes {a.size} and {b.size}, not one size")
    if a.root == b.root:
        raise VerificationError(f"the two checkpoints of size {a.size} have the same root")
    return (
        f"log {origin!r} (key {vkey}) signed two different trees of size {a.size}: "
        f"roots {a.root.hex()} and {b.root.hex()}"
    )


def _hashes(values: object, what: str) -> list[bytes]:
    if not isinstance(values, list) or len(values) > 64:
        raise VerificationError(f"malformed evidence: {what} must be a list of at most 64 hashes")
    out = []
    for value in values:
        try:
            raw = base64.b64decode(value, validate=True)
        except (TypeError, ValueError, binascii.Error) as exc:
            raise VerificationError(f"malformed evidence: {what}: not base64") from exc
        if len(raw) != merkle.HASH_SIZE:
            raise VerificationError(f"malformed evidence: {what}: a hash is not 32 bytes")
        out.append(raw)
    return out


def _broken_promise(document: dict[str, Any]) -> str:
    vkey, origin = document["vkey"], document["log"]
    if not isinstance(vkey, str) or not isinstance(origin, str):
        raise VerificationError("malformed evidence: log and vkey must be strings")
    if not isinstance(document["checkpoint"], str):
        raise VerificationError("malformed evidence: checkpoint must be a signed note")
    index = document["index"]
    if (
        not isinstance(index, int)
        or isinstance(index, bool)
        or not isinstance(document["promised"], str)
    ):
        raise VerificationError("malformed evidence: index must be an integer, promised a hash")
    (promised,) = _hashes([document["promised"]], "promised")
    try:
        promise = open_promise_of(
            document["promise"],
            [vkey],
            leaf=promised,
            index=index,
            path=_hashes(document["path"], "path"),
        )
        checkpoint, _ = note.verify_checkpoint(document["checkpoint"], [vkey], origin=origin)
    except (VerificationError, InputError) as exc:
        raise VerificationError(f"evidence does not verify: {exc}") from exc
    if promise.log != origin:
        raise VerificationError(f"the promise is about log {promise.log!r}, not {origin!r}")
    if checkpoint.size <= index:  # proves nothing: the log may have grown past it since
        raise VerificationError(
            f"the checkpoint of size {checkpoint.size} does not reach entry {index}: a tree too "
            "small proves no broken promise, whoever cosigned it when (a witness's timestamp "
            "dates its own signature; an old tree cosigned late would frame an honest node)"
        )
    if not isinstance(document["leaf"], str):
        raise VerificationError("malformed evidence: leaf must be the base64 leaf at the index")
    (leaf,) = _hashes([document["leaf"]], "leaf")
    proof = _hashes(document["proof"], "proof")
    if leaf == promise.leaf:
        raise VerificationError(f"entry {index} is the promised receipt: the promise is kept")
    try:
        merkle.verify_inclusion(leaf, index, checkpoint.size, proof, checkpoint.root)
    except VerificationError as exc:
        raise VerificationError(f"evidence does not verify: {exc}") from exc
    return (
        f"node {vkey} promised receipt leaf {promise.leaf.hex()} as entry {index} of log "
        f"{origin!r} by {promise.when}; its signed tree of size {checkpoint.size} holds "
        f"leaf {leaf.hex()} there"
    )


def model_of(document: object) -> str | None:
    """The model CID a piece of evidence needs to be checked (fraud, generation-fraud and
    dispute evidence re-run it), ``None`` for equivocation and broken promises;
    :class:`VerificationError` if it cannot be read."""
    if not isinstance(document, dict) or document.get("kind") not in (
        "fraud",
        "dispute",
        "generation-fraud",
    ):
        return None
    kind = document["kind"]
    try:
        if kind in ("fraud", "generation-fraud"):
            bundle = document["bundle"]
        else:
            bundle = json.loads(document["verdict"])["verdict"]["dispute"]["bundle"]
        return str(json.loads(bundle["receipt"])["model"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise VerificationError(f"malformed {kind} evidence: {exc}") from exc


def dispute(verdict: Verdict) -> dict[str, Any] | None:
    """Evidence from a dispute's verdict, if it convicts the defendant by its own commitments:
    its revealed state k-1 and state k check against the trace it signed, and re-running step k
    on the first does not give the second within the bound (a loss by deadline, or by a reveal
    that does not check, rests on the referee's word: no evidence)."""
    judgement = verdict.body.get("judgement")
    if verdict.body.get("loser") != "defendant" or not judgement or "tensor" not in judgement:
        return None
    receipt = Bundle.from_json(verdict.body["dispute"]["bundle"]).receipt
    return {
        "type": EVIDENCE_TYPE,
        "kind": "dispute",
        "log": receipt["log"],
        "vkey": receipt["node"],
        "verdict": verdict.data.decode(),
    }


def _dispute(document: dict[str, Any], model: bytes | None) -> str:
    if model is None:
        raise VerificationError("dispute evidence needs the model's bytes to re-run its step")
    if not isinstance(document["verdict"], str):
        raise VerificationError("malformed evidence: the verdict must be a JSON string")
    from verinfer.modes.dispute import verify_verdict  # noqa: PLC0415 - runs ONNX Runtime

    verdict = verify_verdict(document["verdict"], model=model)
    convicting = dispute(verdict)
    if convicting is None:
        raise VerificationError("the verdict does not convict the defendant by its own trace")
    if (convicting["vkey"], convicting["log"]) != (document["vkey"], document["log"]):
        raise VerificationError("the verdict is about another node or log than the evidence")
    judgement = verdict.body["judgement"]
    return (
        f"node {convicting['vkey']} (log {convicting['log']!r}) answered falsely: step "
        f"{judgement['step']} ({judgement['op']}) of its own signed trace is off by "
        f"{float(judgement['deviation']):.3g}, beyond the bound {float(judgement['bound']):.3g}"
    )


def _nondeterministic(model: bytes) -> list[str]:
    """The model's random operators, by static analysis (imports onnx: only judging needs it)."""
    from verinfer.engine.nondeterminism import nondeterministic_operators_of  # noqa: PLC0415

    try:
        return nondeterministic_operators_of(model)
    except ValueError as exc:
        raise VerificationError(f"cannot judge: {exc}") from exc


def _npz(document: dict[str, Any], name: str) -> dict[str, Any]:
    try:
        raw = base64.b64decode(document[name], validate=True)
        return tensors.decode_binary(raw, max_bytes=MAX_TENSOR_BYTES)
    except (TypeError, ValueError, binascii.Error, InputError) as exc:
        raise VerificationError(f"malformed evidence: {name}: {exc}") from exc


def _statement(
    document: dict[str, Any], model: bytes | None, kind: str
) -> tuple[Bundle, Any, bytes]:
    """The accused node's own statement, signed and logged, about ``model`` (checked before
    anything else is decoded), and the manifest its receipt names: ``(bundle, manifest,
    model)``."""
    from verinfer.hub.documents import Manifest  # noqa: PLC0415 - pure, only needed here

    if not isinstance(document["bundle"], dict) or not isinstance(document["manifest"], str):
        raise VerificationError("malformed evidence: bundle must be an object, manifest text")
    bundle = Bundle.from_json(document["bundle"], replica=True)
    receipt = bundle.receipt
    if receipt["node"] != document["vkey"] or receipt["log"] != document["log"]:
        raise VerificationError("malformed evidence: the bundle is not of the accused log")
    if model is None:
        raise VerificationError(f"{kind} evidence needs the bytes of model {receipt['model']!r}")
    try:
        verify_bundle(bundle, [receipt["node"]], model=model)
    except VerificationError as exc:
        raise VerificationError(f"evidence does not verify: {exc}") from exc
    if receipt["manifest"] is None:
        raise VerificationError("cannot judge: the receipt names no manifest")
    try:
        manifest = Manifest.from_bytes(
            document["manifest"].encode("utf-8", "surrogatepass"), receipt["manifest"]
        )
    except (VerificationError, Error) as exc:
        raise VerificationError(f"evidence does not verify: the manifest: {exc}") from exc
    return bundle, manifest, model


def _fraud(document: dict[str, Any], model: bytes | None) -> str:
    bundle, manifest, model = _statement(document, model, "fraud")
    receipt = bundle.receipt
    if (
        manifest.model != receipt["model"]
        or manifest.body["determinism"].get("bit_identical") is not True
    ):
        raise VerificationError(
            "cannot judge: the manifest does not record the model as bit-reproducible, so a "
            "different re-execution proves nothing"
        )
    inputs, claimed = _npz(document, "inputs"), _npz(document, "outputs")
    if tensors.map_digest(inputs) != receipt["inputs"]:
        raise VerificationError("evidence does not verify: the inputs are not the receipt's")
    if tensors.map_digest(claimed) == receipt["outputs"]:
        raise VerificationError("evidence does not verify: its outputs are the receipt's")
    random = _nondeterministic(model)  # from the bytes: the manifest's word is not enough
    if random:
        raise VerificationError(
            f"cannot judge: the model has operators whose output is not a function of their "
            f"inputs ({', '.join(random)}), so a different re-execution proves nothing"
        )
    from verinfer import engine  # noqa: PLC0415 - only judging fraud runs a model

    here = engine.identity()
    if here != receipt["engine"]:
        raise VerificationError(
            f"cannot judge here: the node ran on {receipt['engine']}, this machine is {here}; "
            "low bits may differ across CPU kernel classes"
        )
    try:
        computed = engine.Engine(memory=None).run(receipt["model"], lambda: model, inputs)
    except Error as exc:
        raise VerificationError(f"re-execution failed: {exc}") from exc
    found = tensors.map_digest(computed)
    if found != tensors.map_digest(claimed):
        raise VerificationError(
            f"evidence does not verify: re-executed here the model gives {found}, neither the "
            f"receipt's {receipt['outputs']} nor the evidence's outputs"
        )
    return (
        f"node {receipt['node']} signed outputs {receipt['outputs']} for model "
        f"{receipt['model']} on inputs {receipt['inputs']} (entry {bundle.index} of its log); "
        f"the model gives {found}"
    )


def _generation_fraud(document: dict[str, Any], model: bytes | None) -> str:
    from verinfer.modes.generation import (  # noqa: PLC0415 - numpy and the sampler
        TOLERANCE,
        commitment_fault,
        deviations,
        model_runner,
    )
    from verinfer.text.generation import Generation  # noqa: PLC0415

    position = document["position"]
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise VerificationError(f"malformed evidence: position {position!r} is not a position")
    # (1) the node's own statement, signed and logged, about this model; (2) of a chat model,
    # by the manifest the receipt names
    bundle, manifest, model = _statement(document, model, "generation-fraud")
    receipt = bundle.receipt
    if manifest.model != receipt["model"] or (manifest.text or {}).get("kind") != "chat":
        raise VerificationError("cannot judge: the receipt's manifest is not of a chat model")
    # (3) the record is the one the receipt states: its tensors have the receipt's digests
    inputs, outputs = _npz(document, "inputs"), _npz(document, "outputs")
    for name, given in (("inputs", inputs), ("outputs", outputs)):
        if tensors.map_digest(given) != receipt[name]:
            raise VerificationError(f"evidence does not verify: the {name} are not the receipt's")
    try:
        generation = Generation.from_tensors(inputs, outputs)
    except VerificationError as exc:
        raise VerificationError(f"cannot judge: the receipt is not of a generation: {exc}") from exc
    accused = (
        f"node {receipt['node']} signed a generation of model {receipt['model']} (entry "
        f"{bundle.index} of its log) that is false at position {position}"
    )
    # (4) the record contradicts itself at the position (no model run needed) ...
    try:
        fault = commitment_fault(generation, position)
    except VerificationError as exc:
        raise VerificationError(f"malformed evidence: {exc}") from exc
    if fault is not None:
        return f"{accused}: {fault}"
    # (5) ... or the model's teacher-forced pass there is beyond the tolerance
    run, cache = model_runner(model, receipt["model"])
    ratio = deviations(generation, run, cache)[position]
    if ratio <= 1:
        raise VerificationError(
            f"evidence does not verify: at position {position} the sampler replay gives the "
            f"token and re-execution is within the tolerance ({ratio:.3f} of it): the record "
            "holds there"
        )
    return (
        f"{accused}: re-executed, its committed logits there are {ratio:.3g} times the "
        f"tolerance ({TOLERANCE.absolute} + {TOLERANCE.relative} x |logit|) away"
    )
