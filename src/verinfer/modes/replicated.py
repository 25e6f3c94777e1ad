"""``replicated:K``: K nodes of distinct keys answer the same request, each receipt in its own
node's signed log, and the answers agree: bit for bit on one engine identity, or, across CPU
kernel classes, within the tolerance the model's manifest declares — the one
:func:`within_tolerance` rule of verinfer, which auditors and the SDK's agreement use too."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from verinfer import tensors
from verinfer.errors import Error, VerificationError
from verinfer.modes._base import NO_EVIDENCE, Evidence, Mode, Report, _evidence_is, encodable
from verinfer.text.sampler import TOP

if TYPE_CHECKING:
    from verinfer.verify.bundle import Bundle

__all__ = [
    "KERNEL_CLASSES",
    "Agreement",
    "Replicated",
    "cross_class_bound",
    "generations_agree",
    "kernel_class_of",
    "within_tolerance",
]

_REPLICATED = re.compile(r"replicated:([2-9]|1[0-6])")
MAX_TENSOR_BYTES = 64 << 20  # what evidence may make a verifier decode
# the CPU kernel classes an engine identity may name (its last part): verinfer.engine's
# KERNEL_CLASSES, repeated here so that the verifier needs no ONNX Runtime (a test keeps the two
# equal)
KERNEL_CLASSES = frozenset(
    (
        "avx512vnni",
        "avx512",
        "avxvnni",
        "avx2",
        "avx",
        "sse4",
        "x86_64",
        "aarch64",
        "arm64",
        "unknown",
    )
)


@dataclass(frozen=True)
class Agreement(Evidence):
    """The evidence of ``replicated:K``: the K-1 other nodes' bundles and, when the nodes ran
    on different engine classes, every receipt's outputs (``.npz``), the manifest that declares
    the tolerance and the largest deviation observed (the verifier recomputes it)."""

    replicas: tuple[Bundle, ...]
    compared: tuple[bytes, ...] = ()
    manifest: bytes = b""
    deviation: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"replicas": [replica.to_dict() for replica in self.replicas]}
        if self.compared:
            found["outputs"] = [base64.b64encode(npz).decode() for npz in self.compared]
            found["manifest"] = self.manifest.decode()
            found["deviation"] = self.deviation
        return found


@dataclass(frozen=True)
class Replicated(Mode):
    """``replicated:K``, K = 2..16."""

    syntax = "replicated:K"
    rerun_judged = True  # agreement compares re-runs bit for bit
    serves_text = True  # generations agree by their tokens and commitments (_across_classes)

    @classmethod
    def parse(cls, text: str, *, receipt: bool) -> Mode | None:
        return cls(text) if _REPLICATED.fullmatch(text) else None

    @property
    def nodes(self) -> int:
        return int(self.text.partition(":")[2])

    def complete(self, bundle: Bundle) -> bool:
        evidence = bundle.evidence
        return isinstance(evidence, Agreement) and len(evidence.replicas) == self.nodes - 1

    def evidence(self, value: object, *, replica: bool) -> Evidence:
        if replica:
            return super().evidence(value, replica=replica)
        return _agreement_of(value, self.text, self.nodes - 1)

    def check_evidence(self, bundle: Bundle, trusted: list[str], say: Report) -> None:
        _evidence_is(bundle, self, Agreement, type(NO_EVIDENCE))
        if not isinstance(bundle.evidence, Agreement):
            return  # one node's own bundle, before the others are gathered
        if len(bundle.evidence.replicas) != self.nodes - 1:
            raise VerificationError(
                f"step 2+ (agreement): {self.text} needs {self.nodes - 1} replica bundles, the "
                f"bundle carries {len(bundle.evidence.replicas)}"
            )
        how = _agreement(bundle, bundle.evidence, trusted)
        say(
            f"2+. {len(bundle.evidence.replicas) + 1} receipts from distinct trusted nodes, each "
            f"in its node's signed log, agree on model, inputs and outputs ({how})"
        )


def _agreement_of(evidence: object, mode: str, wanted: int) -> Agreement:
    """Parse the evidence of ``replicated:K``; nothing unchecked rides along."""
    from verinfer.verify.bundle import Bundle  # noqa: PLC0415 - a bundle holds bundles

    if not isinstance(evidence, dict) or set(evidence) not in (
        {"replicas"},
        {"replicas", "outputs", "manifest", "deviation"},
    ):
        raise VerificationError(
            f"malformed bundle: evidence of {mode} must hold only 'replicas' (and, across "
            "engine classes, 'outputs', 'manifest' and 'deviation')"
        )
    items = evidence["replicas"]
    if not isinstance(items, list) or len(items) != wanted:
        raise VerificationError(
            f"malformed bundle: {mode} needs {wanted} replica bundles in its evidence"
        )
    found = []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise VerificationError(f"malformed bundle: replica {position} is not an object")
        try:
            found.append(Bundle.from_json(item, replica=True))
        except VerificationError as exc:
            raise VerificationError(f"replica {position}: {exc}") from exc
    if "outputs" not in evidence:
        return Agreement(tuple(found))
    outputs, manifest = evidence["outputs"], evidence["manifest"]
    if not isinstance(outputs, list) or len(outputs) != wanted + 1:
        raise VerificationError(f"malformed bundle: evidence outputs must be {wanted + 1} .npz")
    compared = []
    for position, text in enumerate(outputs):
        try:
            compared.append(base64.b64decode(text, validate=True))
        except (TypeError, ValueError, binascii.Error) as exc:
            raise VerificationError(f"malformed bundle: evidence outputs {position}") from exc
    if not isinstance(manifest, str) or not encodable(manifest):
        raise VerificationError("malformed bundle: evidence manifest must be its text")
    deviation = evidence["deviation"]  # canonical JSON writes 2.0 as 2: ints are numbers too
    try:
        value = float(deviation) if isinstance(deviation, int | float) else -1.0
    except OverflowError:
        value = -1.0
    if isinstance(deviation, bool) or not 0 <= value < float("inf"):
        raise VerificationError(f"malformed bundle: evidence deviation {deviation!r}")
    return Agreement(tuple(found), tuple(compared), manifest.encode(), value)


def kernel_class_of(engine: str) -> str:
    """The CPU kernel class an engine identity names (its last part); :class:`VerificationError`
    if it is not one of :data:`KERNEL_CLASSES` (a node could name any string, and an unknown
    class must not buy a comparison within a tolerance)."""
    prefix, _, kernel = engine.rpartition("/")
    if not prefix or kernel not in KERNEL_CLASSES:
        raise VerificationError(
            f"engine {engine!r} names kernel class {kernel!r}, which is not one verinfer knows "
            f"({', '.join(sorted(KERNEL_CLASSES))})"
        )
    return kernel


def cross_class_bound(engines: Iterable[str], tolerance: Mapping[str, Any] | None) -> float:
    """How far apart outputs computed on the engine identities ``engines`` may be: ``0.0``
    (bit for bit) when they are all one identity; otherwise the calibrated bound
    ``tolerance["abs"]`` of the manifest (signed with it), and only when every identity names a
    kernel class verinfer knows, they differ in nothing but that class (one runtime, provider
    and optimization level: what the calibration varied), and the calibration covered every one
    of those classes (``tolerance["classes"]``). Raises :class:`VerificationError` naming what
    cannot be compared.

    A node's kernel class is its own claim; this is what bounds the claim: claiming another
    class buys a comparison within ``tolerance["abs"]``, never more, and never for a class the
    calibration did not measure."""
    distinct = sorted(set(engines))
    classes = _kernel_classes(distinct)
    if len(distinct) <= 1:
        return 0.0
    if tolerance is None:
        raise VerificationError(
            f"kernel classes {', '.join(sorted(classes))} differ and no tolerance is declared"
        )
    covered = {str(c) for c in tolerance.get("classes", ())}
    missing = sorted(classes - covered)
    if missing:
        raise VerificationError(
            f"the tolerance was calibrated on kernel classes {', '.join(sorted(covered))}, not "
            f"{', '.join(missing)}: outputs from there cannot be compared within it"
        )
    return float(tolerance["abs"])


def _kernel_classes(distinct: list[str]) -> set[str]:
    """The kernel classes of distinct engine identities that differ in nothing else."""
    classes = {kernel_class_of(engine) for engine in distinct}
    if len({engine.rpartition("/")[0] for engine in distinct}) > 1:
        raise VerificationError(
            f"engines {', '.join(distinct)} differ in more than their kernel class; the "
            "tolerance was calibrated across kernel classes only"
        )
    return classes


def within_tolerance(
    reference: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray], bound: float
) -> tuple[bool, float | None]:
    """Whether ``other`` agrees with ``reference`` within ``bound`` (the one agreement rule of
    verinfer: same names, shapes and dtypes, identical integers and booleans, finite floats at
    most ``bound`` apart), and the deviation found (``None``: not comparable at all)."""
    found = tensors.deviation(reference, other)
    return found is not None and found <= bound, found


def _agreement(bundle: Bundle, evidence: Agreement, trusted: list[str]) -> str:
    """Each replica proven in its own node's log, K distinct node keys, one model, one input;
    and one output: bit for bit, or, where engine classes differ, within the tolerance the
    receipt's manifest declares (checked on the outputs the evidence carries). Returns how they
    agreed."""
    from verinfer.verify.steps import checkpoint_of, inclusion, public_key  # noqa: PLC0415

    primary = bundle.receipt
    keys = {public_key(primary["node"])}
    receipts = [primary]
    try:  # an unknown kernel class is refused, whatever the outputs
        kernel_class_of(primary["engine"])
    except VerificationError as exc:
        raise VerificationError(f"step 2+ (agreement): the first receipt's {exc}") from exc
    for position, replica in enumerate(evidence.replicas, 1):
        try:
            inclusion(replica, checkpoint_of(replica, trusted))
        except VerificationError as exc:
            raise VerificationError(f"replica {position}: {exc}") from exc
        receipt = replica.receipt
        key = public_key(receipt["node"])
        if key in keys:
            raise VerificationError(
                f"step 2+ (agreement): replica {position} comes from node {receipt['node']!r} "
                f"again; {primary['mode']} needs distinct nodes"
            )
        keys.add(key)
        try:
            kernel_class_of(receipt["engine"])
        except VerificationError as exc:
            raise VerificationError(f"step 2+ (agreement): replica {position}'s {exc}") from exc
        for name in ("mode", "model", "inputs", "nonce", "audit"):
            if receipt[name] != primary[name]:
                raise VerificationError(
                    f"step 2+ (agreement): replica {position} has {name} {receipt[name]!r}, the "
                    f"first receipt {primary[name]!r}"
                )
        receipts.append(receipt)
    if len({r["outputs"] for r in receipts}) == 1:
        if evidence.compared or evidence.manifest or evidence.deviation:
            raise VerificationError(
                "step 2+ (agreement): the outputs agree bit for bit, yet the bundle carries "
                "outputs for a tolerance comparison: nothing unchecked rides along"
            )
        return "bit for bit"
    by_engine: dict[str, Any] = {}
    for receipt in receipts:  # within one engine identity: bit for bit, every pair
        first = by_engine.setdefault(receipt["engine"], receipt)
        if receipt["outputs"] != first["outputs"]:
            raise VerificationError(
                f"step 2+ (agreement): node {receipt['node']!r} answered outputs "
                f"{receipt['outputs']}, node {first['node']!r} {first['outputs']} on the "
                "same engine: the nodes disagree"
            )
    return _across_classes(evidence, receipts)


def _across_classes(evidence: Agreement, receipts: list[Any]) -> str:
    from verinfer.hub.documents import Manifest  # noqa: PLC0415 - pure, only needed here

    primary = receipts[0]
    if not evidence.compared:
        raise VerificationError(
            "step 2+ (agreement): the nodes ran on different engine classes "
            f"({', '.join(sorted({r['engine'] for r in receipts}))}) and gave different outputs; "
            "the bundle carries no outputs and manifest to compare them within a tolerance"
        )
    if primary["manifest"] is None or any(r["manifest"] != primary["manifest"] for r in receipts):
        raise VerificationError(
            "step 2+ (agreement): across engine classes every receipt must name one manifest "
            "(the one that declares the tolerance)"
        )
    try:
        manifest = Manifest.from_bytes(evidence.manifest, primary["manifest"])
    except (VerificationError, Error) as exc:
        raise VerificationError(f"step 2+ (agreement): the evidence manifest: {exc}") from exc
    if manifest.model != primary["model"]:
        raise VerificationError("step 2+ (agreement): the evidence manifest is of another model")
    if (manifest.text or {}).get("kind") == "chat":  # a generation: PROTOCOL.md §16
        return _generations(evidence, receipts)
    tolerance = manifest.body["determinism"].get("tolerance")
    if tolerance is None:
        raise VerificationError(
            f"step 2+ (agreement): {manifest.repository}@{manifest.version} declares no tolerance "
            "across engine classes: outputs from different classes cannot be compared"
        )
    try:
        bound = cross_class_bound([r["engine"] for r in receipts], tolerance)
    except VerificationError as exc:
        raise VerificationError(f"step 2+ (agreement): {exc}") from exc
    outputs = _compared(evidence, receipts)
    worst = 0.0
    for receipt, other in zip(receipts[1:], outputs[1:], strict=True):
        agrees, found = within_tolerance(outputs[0], other, bound)
        if not agrees or found is None:
            raise VerificationError(
                f"step 2+ (agreement): node {receipt['node']!r} answered outputs "
                + ("that differ in kind" if found is None else f"{found:.3g} away")
                + f" from node {primary['node']!r}'s, beyond the declared tolerance "
                f"{bound:.3g}: the nodes disagree"
            )
        worst = max(worst, found)
    if worst != evidence.deviation:
        raise VerificationError(
            f"step 2+ (agreement): the bundle records deviation {evidence.deviation!r}, the "
            f"outputs it carries give {worst!r}"
        )
    return f"within the declared tolerance {bound:.3g} (largest deviation {worst:.3g})"


def _compared(evidence: Agreement, receipts: list[Any]) -> list[dict[str, np.ndarray]]:
    """The outputs the evidence carries, each the one its receipt names."""
    outputs = []
    for receipt, npz in zip(receipts, evidence.compared, strict=True):
        try:
            decoded = tensors.decode_binary(npz, max_bytes=MAX_TENSOR_BYTES)
        except Error as exc:
            raise VerificationError(f"step 2+ (agreement): evidence outputs: {exc}") from exc
        if tensors.map_digest(decoded) != receipt["outputs"]:
            raise VerificationError(
                f"step 2+ (agreement): the evidence outputs of {receipt['node']!r} are not the "
                "ones its receipt names"
            )
        outputs.append(decoded)
    return outputs


def _generations(evidence: Agreement, receipts: list[Any]) -> str:
    """Generations of a chat model from different kernel classes agree by
    :func:`generations_agree`, each against the first receipt's."""
    primary = receipts[0]
    try:
        _kernel_classes(sorted({r["engine"] for r in receipts}))
    except VerificationError as exc:
        raise VerificationError(f"step 2+ (agreement): {exc}") from exc
    outputs = _compared(evidence, receipts)
    worst = 0.0
    for receipt, other in zip(receipts[1:], outputs[1:], strict=True):
        try:
            worst = max(worst, generations_agree(outputs[0], other))
        except VerificationError as exc:
            raise VerificationError(
                f"step 2+ (agreement): node {receipt['node']!r} against node "
                f"{primary['node']!r}: {exc}"
            ) from exc
    if worst != evidence.deviation:
        raise VerificationError(
            f"step 2+ (agreement): the bundle records deviation {evidence.deviation!r}, the "
            f"generations it carries give {worst!r}"
        )
    return (
        "generations with identical tokens, their committed logits within twice the "
        f"generation tolerance (largest difference {worst:.3g})"
    )


# a generation's outputs map (PROTOCOL.md §16): name -> (dtype, dimensions)
_GENERATION = {
    "tokens": (np.dtype(np.int64), 1),
    "top_ids": (np.dtype(np.uint16), 2),
    "top_logits": (np.dtype(np.float16), 2),
    "finish": (np.dtype(np.uint8), 1),
}


def _generation_record(outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """``tokens``, ``top_ids``, ``top_logits`` (float64) and ``finish`` of a generation's
    outputs; :class:`VerificationError` if the map is not one."""
    if set(outputs) != set(_GENERATION) or any(
        outputs[name].dtype != dtype or outputs[name].ndim != ndim
        for name, (dtype, ndim) in _GENERATION.items()
    ):
        raise VerificationError("the outputs compared are not a generation's")
    tokens, ids, logits = outputs["tokens"], outputs["top_ids"], outputs["top_logits"]
    if ids.shape != logits.shape or ids.shape != (tokens.shape[0], TOP):
        raise VerificationError(
            f"a generation's commitments must be one row of {TOP} candidates per token"
        )
    values = logits.astype(np.float64)
    if not np.all(np.isfinite(values)) or any(len(set(row)) != TOP for row in ids.tolist()):
        raise VerificationError(
            "a generation's commitments must be distinct candidates with finite logits"
        )
    return tokens, ids, values, outputs["finish"]


def generations_agree(
    reference: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray]
) -> float:
    """Whether two generations of one request (the outputs maps of their records), computed
    on different CPU kernel classes, agree; return the largest difference between the two
    commitments of one token's logit, or raise :class:`VerificationError` naming the first
    position where they disagree (``the nodes disagree at token N``).

    The tokens and the finish must be identical. Each commitment is, honestly made, within
    :data:`verinfer.modes.generation.TOLERANCE` of one reference computation (that is what
    re-execution checks, and the calibration measured across kernel classes), so two honest
    commitments to one logit are at most twice that apart (the triangle inequality through the
    reference value ``t``, where ``|t| <= (max(|a|, |b|) + absolute) / (1 - relative)``). A
    token among one node's 8 candidates and not the other's is a near-tie the other broke the
    other way only if its logit is within that same bound of the other's lowest candidate."""
    from verinfer.modes.generation import TOLERANCE  # noqa: PLC0415 - it imports the verifier

    def bound(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
        largest = np.maximum(np.abs(a), np.abs(b))
        truth = (largest + TOLERANCE.absolute) / (1 - TOLERANCE.relative)
        return np.asarray(2 * (TOLERANCE.absolute + TOLERANCE.relative * truth))

    tokens, ids, logits, finish = _generation_record(reference)
    tokens2, ids2, logits2, finish2 = _generation_record(other)
    for position in range(min(len(tokens), len(tokens2))):
        if tokens[position] != tokens2[position]:
            raise VerificationError(
                f"the nodes disagree at token {position}: token {int(tokens[position])} against "
                f"{int(tokens2[position])}"
            )
    if len(tokens) != len(tokens2) or bytes(finish) != bytes(finish2):
        raise VerificationError(
            f"the nodes disagree at token {min(len(tokens), len(tokens2))}: one generation ends "
            f"there ({bytes(finish).decode(errors='replace')!r} after {len(tokens)} tokens, "
            f"{bytes(finish2).decode(errors='replace')!r} after {len(tokens2)})"
        )
    worst = 0.0
    for position in range(len(tokens)):
        mine = dict(zip(ids[position].tolist(), logits[position].tolist(), strict=True))
        theirs = dict(zip(ids2[position].tolist(), logits2[position].tolist(), strict=True))
        for one, two in ((mine, theirs), (theirs, mine)):
            floor = min(two.values())
            for token, value in one.items():
                if token in two:
                    gap = abs(value - two[token])
                    allowed = float(bound(value, two[token]))
                    worst = max(worst, gap)
                    what = f"their commitments to token {token}'s logit are {gap:.3g} apart"
                else:
                    gap, allowed = value - floor, float(bound(value, floor))
                    what = (
                        f"token {token} (logit {value:.4g}) is a candidate of one node and "
                        f"not of the other, whose lowest candidate is {floor:.4g}"
                    )
                if gap > allowed:
                    raise VerificationError(
                        f"the nodes disagree at token {position}: {what}, beyond twice the "
                        f"generation tolerance ({allowed:.3g})"
                    )
    return worst
