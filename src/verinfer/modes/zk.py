"""``zk``: the node proves, in zero knowledge, that the circuit its publisher endorsed maps
exactly these inputs to exactly these outputs (ezkl; :mod:`verinfer.zk` builds and runs the
circuits). The proof rides in the bundle; checking it needs the circuit materials by CID."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from verinfer import cid
from verinfer.errors import Error, InputError, VerificationError
from verinfer.modes._base import Claims, Context, Evidence, Mode, Report, _evidence_is, encodable

if TYPE_CHECKING:
    from verinfer.verify.bundle import Bundle

__all__ = ["Zk", "ZkProof"]


@dataclass(frozen=True)
class ZkProof(Evidence):
    """The evidence of ``zk``: the CID of the publisher's circuit endorsement (the addendum)
    and the proof (ezkl's JSON), public instances included."""

    addendum: str
    proof: str = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"zk": {"addendum": self.addendum, "proof": self.proof}}


@dataclass(frozen=True)
class Zk(Mode):
    """``zk``."""

    syntax = "zk"
    proven = True

    def evidence(self, value: object, *, replica: bool) -> Evidence:
        """``{"zk": {"addendum": CID, "proof": text}}``, nothing else."""
        zk = value.get("zk") if isinstance(value, dict) and set(value) == {"zk"} else None
        if not isinstance(zk, dict) or set(zk) != {"addendum", "proof"}:
            raise VerificationError(
                "malformed bundle: zk evidence must hold an addendum and a proof"
            )
        addendum, proof = zk["addendum"], zk["proof"]
        try:
            cid.digest(addendum)
        except InputError as exc:
            raise VerificationError(f"malformed bundle: zk addendum: {exc}") from exc
        if not isinstance(proof, str) or not proof or not encodable(proof):
            raise VerificationError("malformed bundle: the zk proof must be its JSON text")
        return ZkProof(addendum, proof)

    def check_evidence(self, bundle: Bundle, trusted: list[str], say: Report) -> None:
        _evidence_is(bundle, self, ZkProof)

    def check_claims(self, bundle: Bundle, claims: Claims, context: Context) -> None:
        _check_proof(bundle, claims, context)
        context.say(
            "7. the zero-knowledge proof verifies under the circuit the publisher endorsed, for "
            "exactly these inputs and outputs"
        )


def _check_proof(bundle: Bundle, claims: Claims, context: Context) -> None:
    """(7) zk: the addendum is the manifest publisher's endorsement of this circuit; the
    settings, key and SRS are the ones it names; the proof verifies with public instances that
    are exactly the inputs and outputs. Runs ezkl (imported only here)."""
    from verinfer import zk  # noqa: PLC0415 - only zk bundles need ezkl
    from verinfer.hub.documents import Manifest, ZkAddendum  # noqa: PLC0415

    receipt = bundle.receipt
    evidence = bundle.evidence
    inputs, outputs, materials = claims.inputs, claims.outputs, claims.materials
    if inputs is None or outputs is None or materials is None:
        raise VerificationError(
            "step 7 (zk) needs the inputs, the outputs and the circuit materials (the addendum, "
            "the manifest, the settings, the verification key and the SRS, by CID)"
        )
    if not isinstance(evidence, ZkProof):  # parsing gives a zk receipt nothing else
        raise VerificationError("step 7 (zk): the bundle carries no zk proof")

    def material(name: str) -> bytes:
        data = materials.get(name)
        if data is None:
            raise VerificationError(f"step 7 (zk): missing material {name!r}")
        try:
            cid.verify(name, data)
        except VerificationError as exc:
            raise VerificationError(f"step 7 (zk): {exc}") from exc
        return data

    if not context.trust.publishers:
        raise VerificationError(
            "step 7 (zk) needs the publisher keys you trust for this model: the endorsement "
            "of a circuit is only as good as its signer"
        )
    try:
        manifest = Manifest.from_bytes(material(str(receipt["manifest"])), receipt["manifest"])
        if manifest.model != receipt["model"]:
            raise VerificationError("the receipt's manifest is of another model")
        if manifest.publisher not in context.trust.publishers_of(manifest.repository):
            raise VerificationError(
                f"the manifest is signed by {manifest.publisher!r}, not a trusted publisher"
            )
        addendum = ZkAddendum.from_bytes(material(evidence.addendum), manifest)
        ordered = []
        for given, specs in (
            (inputs, manifest.body["inputs"]),
            (outputs, manifest.body["outputs"]),
        ):
            names = [spec["name"] for spec in specs]
            if sorted(given) != sorted(names):
                raise VerificationError(
                    f"the tensors must be exactly {names!r}, got {sorted(given)!r}"
                )
            ordered.append([given[name] for name in names])  # the model's order
        zk.verify(
            evidence.proof.encode(),
            material(addendum.body["settings"]),
            material(addendum.body["vk"]),
            material(addendum.body["srs"]),
            ordered[0],
            ordered[1],
            trusted_srs=context.trust.srs,
            allow_insecure_srs=context.insecure_srs,
        )
    except (VerificationError, Error) as exc:
        raise VerificationError(f"step 7 (zk): {exc}") from exc
