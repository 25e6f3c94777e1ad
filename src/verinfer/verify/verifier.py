"""The offline verifier: checks a bundle with nothing but trusted keys and, optionally, the
tensors and the model. Pure except for the optional local re-execution."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from verinfer import cid, merkle, note, tensors
from verinfer.errors import Error, VerificationError
from verinfer.note import Checkpoint
from verinfer.verify.bundle import Bundle

__all__ = [
    "KERNEL_CLASSES",
    "Report",
    "cross_class_bound",
    "kernel_class_of",
    "verify_bundle",
    "verify_bundles",
]

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
Report = Callable[[str], None]
"""Called with a line describing each step that passed."""


def _checkpoint(bundle: Bundle, trusted: Sequence[str]) -> Checkpoint:
    # (1) the checkpoint is signed by a trusted node key, the one the receipt names
    receipt = bundle.receipt
    if receipt["node"] not in trusted:
        raise VerificationError(
            f"step 1 (checkpoint): the receipt's node {receipt['node']!r} is not a trusted key"
        )
    try:
        checkpoint, _ = note.verify_checkpoint(bundle.checkpoint, [receipt["node"]])
    except (VerificationError, Error) as exc:
        raise VerificationError(f"step 1 (checkpoint): {exc}") from exc
    if checkpoint.origin != receipt["log"]:
        raise VerificationError(
            f"step 1 (checkpoint): checkpoint of log {checkpoint.origin!r}, receipt names "
            f"{receipt['log']!r}"
        )
    return checkpoint


def _inclusion(bundle: Bundle, checkpoint: Checkpoint) -> None:
    # (2) the receipt's exact bytes are a leaf of the tree the checkpoint signs
    try:
        merkle.verify_inclusion(
            merkle.leaf_hash(bundle.receipt.data),
            bundle.index,
            checkpoint.size,
            list(bundle.proof),
            checkpoint.root,
        )
    except VerificationError as exc:
        raise VerificationError(f"step 2 (inclusion): {exc}") from exc


def verify_bundle(
    bundle: Bundle,
    trusted_vkeys: Iterable[str],
    inputs: Mapping[str, np.ndarray] | None = None,
    outputs: Mapping[str, np.ndarray] | None = None,
    model: bytes | None = None,
    *,
    reexecute: bool = False,
    report: Report | None = None,
    witnesses: Iterable[str] = (),
    quorum: int = 0,
    operators: Mapping[str, str] | None = None,
    zk_materials: Mapping[str, bytes] | None = None,
    zk_publishers: Iterable[str] = (),
    trusted_srs: Iterable[str] = (),
    allow_insecure_srs: bool = False,
) -> None:
    """Verify a bundle offline; return ``None`` or raise :class:`VerificationError`.

    Steps: (1) the checkpoint is signed by a trusted node key, the one the receipt names, for
    the receipt's log; (2) the receipt is included in that checkpoint's tree; (3) the model
    bytes, if given, are the receipt's model; (4) the inputs and (5) the outputs, if given,
    have the receipt's digests; (6) with ``reexecute``, running the model on the inputs here
    gives the receipt's outputs bit for bit (meaningful on the same engine identity).

    With ``quorum``, step (1+): at least ``quorum`` of the trusted ``witnesses``, of as many
    distinct operators other than the log's own, cosigned the checkpoint. ``operators`` maps
    keys (node vkeys and witness vkeys) to their operator, the caller's trust decision; a key
    it does not name is its own operator, and a witness named ``<the node key's name>/witness``
    (how every node names its own) is taken as the log's own witness whatever the mapping says.
    """
    say = report or (lambda _: None)
    trusted = list(trusted_vkeys)
    receipt = bundle.receipt
    checkpoint = _checkpoint(bundle, trusted)
    say(f"1. checkpoint of size {checkpoint.size} is signed by trusted node {receipt['node']}")
    if quorum > 0:
        count = _cosigned(bundle, list(witnesses), quorum, operators or {})
        say(
            f"1+. {count} trusted witnesses cosigned that checkpoint, each of another operator "
            f"and none the log's own (quorum {quorum})"
        )
    _inclusion(bundle, checkpoint)
    say(f"2. receipt is entry {bundle.index} of that log ({len(bundle.proof)}-hash proof)")
    if bundle.replicas:
        how = _agreement(bundle, trusted)
        say(
            f"2+. {len(bundle.replicas) + 1} receipts from distinct trusted nodes, each in its "
            f"node's signed log, agree on model, inputs and outputs ({how})"
        )
    if model is not None:
        try:
            cid.verify(receipt["model"], model)
        except VerificationError as exc:
            raise VerificationError(f"step 3 (model): {exc}") from exc
        say(f"3. model bytes are {receipt['model']}")
    for step, name, given in ((4, "inputs", inputs), (5, "outputs", outputs)):
        if given is None:
            continue
        try:
            found = tensors.map_digest(given)
        except Error as exc:
            raise VerificationError(f"step {step} ({name}): {exc}") from exc
        if found != receipt[name]:
            raise VerificationError(
                f"step {step} ({name}): the given {name} have digest {found}, the receipt says "
                f"{receipt[name]}"
            )
        say(f"{step}. {name} match the receipt's digest {found}")
    if reexecute:
        if model is None or inputs is None:
            raise VerificationError("step 6 (re-execution) needs the model and the inputs")
        _reexecute(bundle, model, inputs, say)
    if receipt["mode"] == "zk":
        _zk_proof(bundle, inputs, outputs, zk_materials,
                  (list(zk_publishers), list(trusted_srs), allow_insecure_srs))  # fmt: skip
        say("7. the zero-knowledge proof verifies under the circuit the publisher endorsed, for "
            "exactly these inputs and outputs")  # fmt: skip


def _zk_proof(
    bundle: Bundle,
    inputs: Mapping[str, np.ndarray] | None,
    outputs: Mapping[str, np.ndarray] | None,
    materials: Mapping[str, bytes] | None,
    policy: tuple[list[str], list[str], bool],
) -> None:
    """(7) zk: the addendum is the manifest publisher's endorsement of this circuit; the
    settings, key and SRS are the ones it names; the proof verifies with public instances that
    are exactly the inputs and outputs. Runs ezkl (imported only here)."""
    from verinfer import zk  # noqa: PLC0415 - only zk bundles need ezkl
    from verinfer.hub.documents import Manifest, ZkAddendum  # noqa: PLC0415

    receipt = bundle.receipt
    if inputs is None or outputs is None or materials is None:
        raise VerificationError(
            "step 7 (zk) needs the inputs, the outputs and the circuit materials (the addendum, "
            "the manifest, the settings, the verification key and the SRS, by CID)"
        )

    def material(name: str) -> bytes:
        data = materials.get(name)
        if data is None:
            raise VerificationError(f"step 7 (zk): missing material {name!r}")
        try:
            cid.verify(name, data)
        except VerificationError as exc:
            raise VerificationError(f"step 7 (zk): {exc}") from exc
        return data

    publishers, trusted_srs, allow_insecure_srs = policy
    if not publishers:
        raise VerificationError(
            "step 7 (zk) needs the publisher keys you trust for this model: the endorsement "
            "of a circuit is only as good as its signer"
        )
    try:
        manifest = Manifest.from_bytes(material(str(receipt["manifest"])), receipt["manifest"])
        if manifest.model != receipt["model"]:
            raise VerificationError("the receipt's manifest is of another model")
        if manifest.publisher not in publishers:
            raise VerificationError(
                f"the manifest is signed by {manifest.publisher!r}, not a trusted publisher"
            )
        addendum = ZkAddendum.from_bytes(material(bundle.zk_addendum), manifest)
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
            bundle.zk_proof.encode(),
            material(addendum.body["settings"]),
            material(addendum.body["vk"]),
            material(addendum.body["srs"]),
            ordered[0],
            ordered[1],
            trusted_srs=trusted_srs,
            allow_insecure_srs=allow_insecure_srs,
        )
    except (VerificationError, Error) as exc:
        raise VerificationError(f"step 7 (zk): {exc}") from exc


def _operator_of(key: note.VerifierKey, operators: Mapping[str, str]) -> str:
    """The operator of ``key``: the label the caller gave it (a label that is itself a vkey
    stands for that key's operator), else the key itself, by its key material (one key under
    two names is one operator)."""
    seen: set[str] = set()
    while True:
        given = operators.get(key.vkey)
        if given is None:
            return "key:" + key.public.hex()
        if given in seen:
            return "cycle:" + min(seen)
        seen.add(given)
        try:
            key = note.VerifierKey.parse(given)
        except Error:
            return "operator:" + given


def _operators(operators: Mapping[str, str]) -> dict[str, str]:
    """The caller's mapping with every key in its normal text form."""
    normal = {}
    for vkey, operator in operators.items():
        try:
            normal[note.VerifierKey.parse(vkey).vkey] = str(operator)
        except Error as exc:
            raise VerificationError(f"step 1+ (witnesses): the operators map: {exc}") from exc
    return normal


def _cosigned(
    bundle: Bundle, witnesses: list[str], quorum: int, operators: Mapping[str, str]
) -> int:
    """Witness policy: at least ``quorum`` trusted witness keys of distinct operators, none of
    them the log's own operator, cosigned the checkpoint (tlog-cosignature/v1: each over the
    checkpoint text, with a timestamp). A log's own witness proves nothing about the history
    it showed others: it is the same party as the log."""
    mapping = _operators(operators)
    receipt = bundle.receipt
    node = note.VerifierKey.parse(receipt["node"])
    own = _operator_of(node, mapping)
    own_names = {f"{node.name}/witness", f"{receipt['log']}/witness"}
    cosigners = [
        key
        for key in map(note.VerifierKey.parse, witnesses)
        if key.algorithm == note.ALG_COSIGNATURE_V1
    ]

    # (a) the log's own witness: by the operator the caller gave, by its key material, or by
    # the name every node gives its own witness (a name its holder chose: it only ever
    # excludes, never admits)
    def is_own(key: note.VerifierKey) -> bool:
        return (
            _operator_of(key, mapping) == own or key.public == node.public or key.name in own_names
        )

    independent = {_operator_of(k, mapping) for k in cosigners if not is_own(k)}
    if len(independent) < quorum:
        raise VerificationError(
            f"step 1+ (witnesses): a quorum of {quorum} needs as many trusted witness keys "
            f"(cosigner keys) of distinct operators other than the log's, {len(independent)} "
            "given"
        )
    try:
        signed = note.attach(bundle.checkpoint, bundle.cosignatures)
        verified = note.verify(signed, cosigners).verified
    except (VerificationError, Error) as exc:
        raise VerificationError(f"step 1+ (witnesses): {exc}") from exc
    by_id = {(k.name, k.key_id): k for k in cosigners}
    counted, ignored = set(), []
    for signature in verified:
        key = by_id[(signature.name, signature.key_id)]
        if signature.timestamp is None:
            continue
        if is_own(key):
            ignored.append(key.name)
        else:
            counted.add(_operator_of(key, mapping))
    # (b) distinct operators: two keys of one operator, or one key under two names, count once
    if len(counted) < quorum:
        why = (
            f" (not counted: {', '.join(sorted(set(ignored)))}, the log's own operator's; a "
            "log's own witness never counts toward its quorum)"
            if ignored
            else ""
        )
        raise VerificationError(
            f"step 1+ (witnesses): {len(counted)} trusted witnesses of distinct operators other "
            f"than the log's cosigned the checkpoint, the policy needs {quorum}{why}"
        )
    return len(counted)


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
    classes = {kernel_class_of(engine) for engine in distinct}
    if len(distinct) <= 1:
        return 0.0
    if len({engine.rpartition("/")[0] for engine in distinct}) > 1:
        raise VerificationError(
            f"engines {', '.join(distinct)} differ in more than their kernel class; the "
            "tolerance was calibrated across kernel classes only"
        )
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


def _agreement(bundle: Bundle, trusted: Sequence[str]) -> str:
    """``replicated:K``: each replica proven in its own node's log, K distinct node keys, one
    model, one input; and one output: bit for bit, or, where engine classes differ, within the
    tolerance the receipt's manifest declares (checked on the outputs the evidence carries).
    Returns how they agreed."""
    primary = bundle.receipt
    keys = {_public_key(primary["node"])}
    receipts = [primary]
    try:  # an unknown kernel class is refused, whatever the outputs
        kernel_class_of(primary["engine"])
    except VerificationError as exc:
        raise VerificationError(f"step 2+ (agreement): the first receipt's {exc}") from exc
    for position, replica in enumerate(bundle.replicas, 1):
        try:
            _inclusion(replica, _checkpoint(replica, trusted))
        except VerificationError as exc:
            raise VerificationError(f"replica {position}: {exc}") from exc
        receipt = replica.receipt
        key = _public_key(receipt["node"])
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
        if bundle.compared or bundle.manifest or bundle.deviation:
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
    return _within_tolerance(bundle, receipts)


def _within_tolerance(bundle: Bundle, receipts: list[Any]) -> str:
    from verinfer.hub.documents import Manifest  # noqa: PLC0415 - pure, only needed here

    primary = receipts[0]
    if not bundle.compared:
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
        manifest = Manifest.from_bytes(bundle.manifest, primary["manifest"])
    except (VerificationError, Error) as exc:
        raise VerificationError(f"step 2+ (agreement): the evidence manifest: {exc}") from exc
    if manifest.model != primary["model"]:
        raise VerificationError("step 2+ (agreement): the evidence manifest is of another model")
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
    outputs = []
    for receipt, npz in zip(receipts, bundle.compared, strict=True):
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
    worst = 0.0
    for receipt, other in zip(receipts[1:], outputs[1:], strict=True):
        found = tensors.deviation(outputs[0], other)
        if found is None or found > bound:
            raise VerificationError(
                f"step 2+ (agreement): node {receipt['node']!r} answered outputs "
                + ("that differ in kind" if found is None else f"{found:.3g} away")
                + f" from node {primary['node']!r}'s, beyond the declared tolerance "
                f"{bound:.3g}: the nodes disagree"
            )
        worst = max(worst, found)
    if worst != bundle.deviation:
        raise VerificationError(
            f"step 2+ (agreement): the bundle records deviation {bundle.deviation!r}, the "
            f"outputs it carries give {worst!r}"
        )
    return f"within the declared tolerance {bound:.3g} (largest deviation {worst:.3g})"


def _public_key(vkey: str) -> str:
    """The key material of a vkey (its name could be chosen freely)."""
    return vkey.rsplit("+", 1)[-1]


def _reexecute(bundle: Bundle, model: bytes, inputs: Mapping[str, np.ndarray], say: Report) -> None:
    # (6) run it here; imported lazily so the verifier needs ONNX Runtime only for this step
    from verinfer import engine  # noqa: PLC0415
    from verinfer.engine.nondeterminism import nondeterministic_operators_of  # noqa: PLC0415

    receipt = bundle.receipt
    try:
        random = nondeterministic_operators_of(model)
    except ValueError as exc:
        raise VerificationError(f"step 6 (re-execution): {exc}") from exc
    if random:  # a different draw here would prove nothing, and a same one nothing either
        raise VerificationError(
            f"step 6 (re-execution): the model holds nondeterministic operators "
            f"({', '.join(random)}): its outputs are not a function of its inputs, so "
            "re-execution cannot judge them"
        )
    try:
        computed = engine.Engine(memory=None).run(receipt["model"], lambda: model, inputs)
    except Error as exc:
        raise VerificationError(f"step 6 (re-execution): {exc}") from exc
    found = tensors.map_digest(computed)
    if found != receipt["outputs"]:
        here = engine.identity()
        hint = (
            ""
            if here == receipt["engine"]
            else f" (engines differ: here {here}, node {receipt['engine']}; low bits may differ "
            f"across CPU kernel classes)"
        )
        raise VerificationError(
            f"step 6 (re-execution): outputs here have digest {found}, the receipt says "
            f"{receipt['outputs']}{hint}"
        )
    say(f"6. re-executed here on {engine.identity()}: outputs are bit-identical")


def verify_bundles(bundles: Iterable[Bundle], trusted_vkeys: Iterable[str]) -> None:
    """Verify many bundles (steps 1-2); each distinct checkpoint is verified once.

    Returns ``None`` or raises :class:`VerificationError` naming the first bad bundle.
    """
    trusted = list(trusted_vkeys)
    seen: dict[tuple[str, str, str], Checkpoint] = {}
    for position, bundle in enumerate(bundles):
        receipt = bundle.receipt
        key = (bundle.checkpoint, receipt["node"], receipt["log"])
        try:
            checkpoint = seen.get(key)
            if checkpoint is None:
                checkpoint = seen[key] = _checkpoint(bundle, trusted)
            _inclusion(bundle, checkpoint)
            if bundle.replicas:
                _agreement(bundle, trusted)
        except VerificationError as exc:
            raise VerificationError(f"bundle {position}: {exc}") from exc
