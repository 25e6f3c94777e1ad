"""Receipts and proof bundles: the wire formats a node answers with. Pure: no I/O.

A *receipt* is the log entry a node writes for one inference, in canonical JSON; the log leaf is
exactly its bytes. A *bundle* carries the receipt's bytes, their inclusion proof and the signed
checkpoint the proof leads to, so anyone holding the node's vkey can check it offline. See
docs/PROTOCOL.md §10 for every field and what covers it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from verinfer import canonical, cid, modes
from verinfer.errors import InputError, VerificationError
from verinfer.modes import NO_EVIDENCE, Evidence
from verinfer.modes._base import encodable
from verinfer.modes.optimistic import Optimistic
from verinfer.modes.replicated import Agreement
from verinfer.modes.zk import ZkProof

__all__ = [
    "AUDITS",
    "BUNDLE_TYPE",
    "MODES",
    "RECEIPT_TYPE",
    "Bundle",
    "Receipt",
    "mode_matches",
    "replicas_of",
    "window_of",
]

RECEIPT_TYPE = "verinfer.receipt/v1"
BUNDLE_TYPE = "verinfer.bundle/v1"
MODES = modes.MODES
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{1,128}")
# a JSON string of these characters is its own canonical form: nothing to escape
_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_RECEIPT_TEMPLATE = (
    '{"engine":"%s","inputs":"%s","log":"%s","manifest":%s,"mode":"%s","model":"%s",'
    '"node":"%s","nonce":%s,"outputs":"%s","time":"%s","type":"%s"}'
)  # the fields in RFC 8785 order (ASCII keys sort by their bytes)
_PUBLIC_PREFIX = '{"audit":"public",'  # "audit" sorts before "engine": a public receipt's head
AUDITS = ("private", "public")  # who may read a receipt's tensors: see docs/PROTOCOL.md §10
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
MAX_BUNDLE_BYTES = 1 << 20


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate object key")
    return out


def _parse_json(data: str | bytes, what: str) -> Any:
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise VerificationError(f"malformed {what}: {exc}") from exc


def replicas_of(mode: object) -> int:
    """How many nodes must answer in ``mode``: 1 for ``attested``, ``optimistic`` and ``zk``, K
    for ``replicated:K``; :class:`InputError` for anything else."""
    return modes.parse(mode).nodes


def window_of(mode: object, *, receipt: bool = True) -> int | None:
    """The challenge window in seconds of an ``optimistic:S`` mode, ``None`` for other modes.

    A request may say plain ``optimistic`` (the node's default window, returned as 0 when
    ``receipt`` is false); a receipt must state its window: :class:`InputError` otherwise."""
    found = Optimistic.parse(mode, receipt=receipt) if isinstance(mode, str) else None
    return None if found is None else found.window


def mode_matches(requested: str, stated: str) -> bool:
    """Whether a receipt's mode answers the mode a client asked for (plain ``optimistic``
    accepts any window the node states)."""
    try:
        return modes.parse(requested).answers(modes.parse(stated, receipt=True))
    except InputError:
        return False


def check_nonce(nonce: object) -> str | None:
    """A client nonce: ``None`` or 1-128 of ``A-Za-z0-9_-`` (hex and base64url fit)."""
    if nonce is not None and (not isinstance(nonce, str) or not _NONCE.fullmatch(nonce)):
        raise InputError(f"malformed nonce {nonce!r}: use 1-128 of A-Z a-z 0-9 _ -")
    return nonce


@dataclass(frozen=True)
class Receipt:
    """What a node states about one inference. ``data`` are the exact logged bytes."""

    data: bytes
    body: dict[str, Any] = field(repr=False)

    _FIELDS = (
        "type",
        "log",
        "node",
        "model",
        "manifest",
        "inputs",
        "outputs",
        "mode",
        "engine",
        "time",
        "nonce",
    )

    @classmethod
    def create(
        cls,
        *,
        log: str,
        node: str,
        model: str,
        manifest: str | None,
        inputs: str,
        outputs: str,
        mode: str,
        engine: str,
        time: str,
        nonce: str | None,
        audit: str = "private",
    ) -> Receipt:
        """A new receipt; its bytes are the RFC 8785 form. ``audit="public"`` states that the
        requester let anyone read its tensors (the field ``"audit": "public"``); a private
        receipt has no ``audit`` field."""
        if audit not in AUDITS:
            raise InputError(f"audit {audit!r} is not one of {', '.join(AUDITS)}")
        body: dict[str, str | None] = {
            "type": RECEIPT_TYPE,
            "log": log,
            "node": node,
            "model": model,
            "manifest": manifest,
            "inputs": inputs,
            "outputs": outputs,
            "mode": mode,
            "engine": engine,
            "time": time,
            "nonce": check_nonce(nonce),
        }
        if audit == "public":
            body = {"audit": audit, **body}
        parts = [log, node, model, inputs, outputs, mode, engine, time]
        parts += [v for v in (manifest, nonce) if v is not None]
        if all(type(v) is str for v in parts) and _PLAIN.fullmatch("".join(parts)):
            # the hot path of every answer: the RFC 8785 bytes without the general encoder
            data = (
                _RECEIPT_TEMPLATE
                % (
                    engine,
                    inputs,
                    log,
                    "null" if manifest is None else f'"{manifest}"',
                    mode,
                    model,
                    node,
                    "null" if nonce is None else f'"{nonce}"',
                    outputs,
                    time,
                    RECEIPT_TYPE,
                )
            ).encode()
            if audit == "public":
                data = _PUBLIC_PREFIX.encode() + data[1:]
            return cls(data, body)
        return cls(canonical.dumps_flat(body), dict(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> Receipt:
        """Parse a receipt; raise :class:`VerificationError` naming the malformed field."""
        body = _parse_json(data, "receipt")
        if not isinstance(body, dict) or set(body) - {"audit"} != set(cls._FIELDS):
            fields = sorted(body) if isinstance(body, dict) else type(body).__name__
            raise VerificationError(f"malformed receipt: fields {fields!r}")
        if "audit" in body and body["audit"] != "public":  # private: no field, one encoding
            raise VerificationError(f"malformed receipt: audit {body['audit']!r}")
        if body["type"] != RECEIPT_TYPE:
            raise VerificationError(f"unsupported receipt type {body['type']!r}")
        for name in ("log", "node", "engine"):
            if not isinstance(body[name], str) or not body[name]:
                raise VerificationError(f"malformed receipt: {name} {body[name]!r}")
        try:
            cid.digest(body["model"])
            if body["manifest"] is not None:
                cid.digest(body["manifest"])
            check_nonce(body["nonce"])
        except InputError as exc:
            raise VerificationError(f"malformed receipt: {exc}") from exc
        for name in ("inputs", "outputs"):
            if not isinstance(body[name], str) or not _DIGEST.fullmatch(body[name]):
                raise VerificationError(f"malformed receipt: {name} digest {body[name]!r}")
        try:
            modes.parse(body["mode"], receipt=True)
        except InputError:
            raise VerificationError(f"malformed receipt: unknown mode {body['mode']!r}") from None
        if not isinstance(body["time"], str) or not _TIME.fullmatch(body["time"]):
            raise VerificationError(f"malformed receipt: time {body['time']!r}")
        return cls(bytes(data), body)

    def __getitem__(self, name: str) -> Any:
        if name == "audit":  # a private receipt states it by having no audit field
            return self.body.get("audit", "private")
        return self.body[name]


@dataclass(frozen=True)
class Bundle:
    """A receipt with everything needed to verify it offline.

    ``index``, ``proof`` and ``checkpoint`` prove the receipt is in the node's signed log;
    ``cosignatures`` are witness cosignature lines on that checkpoint (none yet). ``replicas``
    (in the JSON form, ``evidence.replicas``) are, for ``replicated:K``, the bundles of the K-1
    other nodes that answered the same request; ``attested`` has no evidence.

    ``promise`` (a node's signed promise, :mod:`verinfer.verify.promise`) makes the bundle a
    *promise*: the receipt is not yet in a signed checkpoint, so ``checkpoint`` is empty,
    ``index`` is the promised entry and ``proof`` the receipt's path in the promised batch.
    The verifier accepts it only under :class:`~verinfer.verify.AcceptPromise`; an upgrade
    replaces it with the logged bundle.
    """

    receipt: Receipt
    index: int
    proof: tuple[bytes, ...]
    checkpoint: str
    cosignatures: tuple[str, ...] = ()
    evidence: Evidence = NO_EVIDENCE  # what the receipt's mode adds (verinfer.modes)
    promise: str = ""  # a signed promise: the receipt is not logged yet (no checkpoint)

    @property
    def promised(self) -> bool:
        """Whether this is a promise, not yet a logged receipt."""
        return bool(self.promise)

    # the evidence of each mode, read through the bundle (empty when the mode has none)
    @property
    def replicas(self) -> tuple[Bundle, ...]:
        """``replicated:K``: the K-1 other nodes' bundles."""
        return self.evidence.replicas if isinstance(self.evidence, Agreement) else ()

    @property
    def compared(self) -> tuple[bytes, ...]:
        """``replicated:K`` across engine classes: each receipt's outputs (``.npz``)."""
        return self.evidence.compared if isinstance(self.evidence, Agreement) else ()

    @property
    def manifest(self) -> bytes:
        """``replicated:K`` across engine classes: the manifest declaring the tolerance."""
        return self.evidence.manifest if isinstance(self.evidence, Agreement) else b""

    @property
    def deviation(self) -> float:
        """``replicated:K`` across engine classes: the largest deviation observed."""
        return self.evidence.deviation if isinstance(self.evidence, Agreement) else 0.0

    @property
    def zk_addendum(self) -> str:
        """``zk``: the CID of the publisher's circuit endorsement."""
        return self.evidence.addendum if isinstance(self.evidence, ZkProof) else ""

    @property
    def zk_proof(self) -> str:
        """``zk``: the proof (ezkl's JSON), public instances included."""
        return self.evidence.proof if isinstance(self.evidence, ZkProof) else ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object form (``promise`` only in a promise)."""
        out = {
            "type": BUNDLE_TYPE,
            "receipt": self.receipt.data.decode(),
            "index": self.index,
            "proof": [base64.b64encode(h).decode() for h in self.proof],
            "checkpoint": self.checkpoint,
            "cosignatures": list(self.cosignatures),
            "evidence": self.evidence.to_dict(),
        }
        if self.promise:
            out["promise"] = self.promise
        return out

    def to_json(self) -> str:
        """The canonical JSON text of the bundle."""
        return canonical.dumps(self.to_dict()).decode()

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any], *, replica: bool = False) -> Bundle:
        """Parse a bundle; raise :class:`VerificationError` naming the malformed field.

        Parsing checks the structure only; :func:`verinfer.verify.verify_bundle` checks the
        proofs and signatures. ``replica``: one node's own bundle of a ``replicated:K`` request,
        before the other nodes' bundles are gathered into its evidence.
        """
        if isinstance(data, str):
            try:
                data = data.encode()
            except UnicodeEncodeError as exc:
                raise VerificationError("malformed bundle: not valid Unicode") from exc
        if isinstance(data, bytes) and len(data) > MAX_BUNDLE_BYTES:
            raise VerificationError(f"malformed bundle: larger than {MAX_BUNDLE_BYTES} bytes")
        value = data if isinstance(data, dict) else _parse_json(data, "bundle")
        expected = {"type", "receipt", "index", "proof", "checkpoint", "cosignatures", "evidence"}
        if isinstance(value, dict) and "promise" in value:
            expected.add("promise")
        if not isinstance(value, dict) or set(value) != expected:
            fields = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise VerificationError(f"malformed bundle: fields {fields!r}")
        if value["type"] != BUNDLE_TYPE:
            raise VerificationError(f"unsupported bundle type {value['type']!r}")
        if not isinstance(value["receipt"], str):
            raise VerificationError("malformed bundle: receipt must be its JSON text")
        index = value["index"]
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise VerificationError(f"malformed bundle: index {index!r}")
        proof = value["proof"]
        if not isinstance(proof, list) or len(proof) > 64:
            raise VerificationError("malformed bundle: proof must be a list of at most 64 hashes")
        hashes = []
        for position, item in enumerate(proof):
            try:
                raw = base64.b64decode(item, validate=True)
            except (TypeError, ValueError, binascii.Error) as exc:
                raise VerificationError(f"malformed bundle: proof hash {position}") from exc
            if len(raw) != 32 or base64.b64encode(raw).decode() != item:
                raise VerificationError(
                    f"malformed bundle: proof hash {position} is not 32 bytes in canonical base64"
                )
            hashes.append(raw)
        if not isinstance(value["checkpoint"], str):
            raise VerificationError("malformed bundle: checkpoint must be a signed note")
        cosignatures = value["cosignatures"]
        if not isinstance(cosignatures, list) or not all(
            isinstance(c, str) and c.removesuffix("\n").isprintable() and encodable(c)
            for c in cosignatures
        ):
            raise VerificationError("malformed bundle: cosignatures must be a list of lines")
        if not encodable(value["receipt"]):
            raise VerificationError("malformed bundle: the receipt is not valid Unicode")
        promise = value.get("promise", "")
        if "promise" in value and (
            not isinstance(promise, str) or not promise or value["checkpoint"] or cosignatures
        ):
            raise VerificationError(
                "malformed bundle: a promise is a signed note, with no checkpoint and no "
                "cosignatures (its proof is the receipt's path in the promised batch)"
            )
        receipt = Receipt.from_bytes(value["receipt"].encode())
        evidence = modes.parse(receipt["mode"], receipt=True).evidence(
            value["evidence"], replica=replica
        )
        return cls(
            receipt,
            index,
            tuple(hashes),
            value["checkpoint"],
            tuple(cosignatures),
            evidence,
            promise,
        )
