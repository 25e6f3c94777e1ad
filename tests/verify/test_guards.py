"""The offline verifier's guards, one test per guard: each fails if its check is removed or
weakened (found by deleting guard clauses one at a time; see scripts/mutation.py). Receipts
are signed and logged by real keys in one-leaf trees; a replicated bundle is what a client
would assemble, and what a lying node could assemble instead."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from typing import Any

import numpy as np
import pytest

from verinfer import cid, merkle, note, tensors
from verinfer.errors import VerificationError
from verinfer.hub.documents import Manifest
from verinfer.modes.replicated import Agreement
from verinfer.verify import Bundle, Receipt, verify_bundle, verify_bundles
from verinfer.verify.verifier import KERNEL_CLASSES, cross_class_bound, kernel_class_of

MODEL = cid.compute(b"the model")
X = {"x": np.ones(3, np.float32)}
Y = {"y": np.array([1.0, 2.0, 3.0], np.float32)}
STEP = 2.0**-10  # exactly representable near 3 in float32: deviations below are exact
RUNTIME = "onnxruntime-1.0/CPUExecutionProvider/opt-all/"


def signer(name: str) -> note.Signer:
    return note.Signer(note.generate_key(name)[0])


def receipt_for(key: note.Signer, **changes: Any) -> Receipt:
    fields: dict[str, Any] = {
        "log": key.name, "node": key.vkey, "model": MODEL, "manifest": None,
        "inputs": tensors.map_digest(X), "outputs": tensors.map_digest(Y),
        "mode": "replicated:2", "engine": RUNTIME + "avx2",
        "time": "2026-01-01T00:00:00.000Z", "nonce": "n1",
    }  # fmt: skip
    fields.update(changes)
    return Receipt.create(**fields)


def bundle_for(key: note.Signer, receipt: Receipt) -> Bundle:
    root = merkle.root([merkle.leaf_hash(receipt.data)])
    return Bundle(receipt, 0, (), key.sign(f"{key.name}\n1\n{base64.b64encode(root).decode()}\n"))


def replicated(primary: Bundle, *replicas: Bundle) -> Bundle:
    built = Bundle(primary.receipt, 0, (), primary.checkpoint, (), Agreement(replicas))
    return Bundle.from_json(built.to_json())


# -- replicated agreement: every receipt must name the same mode, model, inputs and nonce ------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("mode", "replicated:3"),
        ("model", cid.compute(b"another model")),
        ("inputs", tensors.map_digest({"x": np.zeros(3, np.float32)})),
        ("nonce", "n2"),
        ("audit", "public"),
    ],
)
def test_replicas_must_answer_one_request(name: str, value: str) -> None:
    """Two nodes that agree on outputs for different requests (another model, other inputs,
    another mode or nonce) are not a replicated answer: the outputs would be the same by chance
    or by collusion, never by agreement on this request. One request has one tensor access: a
    replica that signed it otherwise (public, of a private request) did not answer it."""
    a, b = signer("a.test"), signer("b.test")
    keys = [a.vkey, b.vkey]
    first = bundle_for(a, receipt_for(a))
    verify_bundle(replicated(first, bundle_for(b, receipt_for(b))), keys)  # the honest pair
    other = bundle_for(b, receipt_for(b, **{name: value}))
    with pytest.raises(VerificationError, match=f"replica 1 has {name} .*, the first receipt"):
        verify_bundle(replicated(first, other), keys)


def test_replicas_must_come_from_distinct_trusted_nodes() -> None:
    a, b = signer("a.test"), signer("b.test")
    first = bundle_for(a, receipt_for(a))
    again = bundle_for(a, receipt_for(a, time="2026-01-01T00:00:01.000Z"))
    with pytest.raises(VerificationError, match=r"comes from node .* again"):
        verify_bundle(replicated(first, again), [a.vkey, b.vkey])
    with pytest.raises(VerificationError, match=r"replica 1: step 1 .* is not a trusted key"):
        verify_bundle(replicated(first, bundle_for(b, receipt_for(b))), [a.vkey])


# -- across kernel classes: within the manifest's calibrated bound, and not a bit more ----------


def manifest(tolerance: float | None, classes: list[str]) -> Manifest:
    determinism: dict[str, object] = {"bit_identical": True}
    if tolerance is not None:
        determinism["tolerance"] = {"abs": tolerance, "classes": classes}
    facts = {"size": 1, "format": "onnx", "ir_version": 8, "opsets": {"ai.onnx": 17},
             "producer": "x", "inputs": [{"name": "x", "dtype": "float32", "shape": [3]}],
             "outputs": [{"name": "y", "dtype": "float32", "shape": [3]}], "parameters": 0,
             "operators": [], "determinism": determinism}  # fmt: skip
    owner = signer("owner")
    return Manifest.create(facts, repository="owner/m", version="1", model=MODEL, signer=owner)


def across(outputs: list[dict[str, np.ndarray]], engines: list[str], declared: Manifest) -> Bundle:
    """A replicated bundle of one answer per (outputs, engine), as a client assembles it."""
    keys = [signer(f"n{i}.test") for i in range(len(outputs))]
    bundles = [
        bundle_for(key, receipt_for(key, outputs=tensors.map_digest(out), engine=engine,
                                    manifest=declared.cid, mode=f"replicated:{len(keys)}"))
        for key, out, engine in zip(keys, outputs, engines, strict=True)
    ]  # fmt: skip
    deviation = max(tensors.deviation(outputs[0], o) or 0.0 for o in outputs[1:])
    compared = tuple(tensors.encode_binary(o) for o in outputs)
    built = Bundle(bundles[0].receipt, 0, (), bundles[0].checkpoint, (),
                   Agreement(tuple(bundles[1:]), compared, declared.data, deviation))  # fmt: skip
    return Bundle.from_json(built.to_json())


def off_by(delta: float) -> dict[str, np.ndarray]:
    return {"y": Y["y"] + np.array([0.0, 0.0, delta], np.float32)}


def trust(bundle: Bundle) -> list[str]:
    return [bundle.receipt["node"], *(r.receipt["node"] for r in bundle.replicas)]


def test_the_tolerance_is_the_bound_exactly() -> None:
    declared = manifest(STEP, ["avx2", "avx512"])
    engines = [RUNTIME + "avx512", RUNTIME + "avx2"]
    at = across([Y, off_by(STEP)], engines, declared)  # exactly the bound: agreement
    lines: list[str] = []
    verify_bundle(at, trust(at), report=lines.append)
    assert any("within the declared tolerance 0.000977" in line for line in lines)
    beyond = across([Y, off_by(1.5 * STEP)], engines, declared)  # half a bound more: a lie
    with pytest.raises(VerificationError, match=r"beyond the declared tolerance 0\.000977"):
        verify_bundle(beyond, trust(beyond))
    three = across([Y, off_by(STEP), off_by(-1.5 * STEP)],
                   [RUNTIME + "avx512", RUNTIME + "avx2", RUNTIME + "avx2"], declared)  # fmt: skip
    with pytest.raises(VerificationError, match="on the same engine: the nodes disagree"):
        verify_bundle(three, trust(three))


@pytest.mark.parametrize(
    ("engines", "classes", "message"),
    [
        ([RUNTIME + "avx512", RUNTIME + "quantum"], ["avx512", "quantum"],
         "replica 1's engine .* names kernel class 'quantum', which is not one verinfer knows"),
        (["onnxruntime-1.0/CPUExecutionProvider/opt-all/avx512", "onnxruntime-9.9/"
          "CPUExecutionProvider/opt-all/avx2"], ["avx2", "avx512"],
         "differ in more than their kernel class"),
        ([RUNTIME + "avx512", RUNTIME + "sse4"], ["avx2", "avx512"],
         "calibrated on kernel classes avx2, avx512, not sse4"),
    ],
)  # fmt: skip
def test_a_claimed_kernel_class_buys_no_more_than_the_calibration(
    engines: list[str], classes: list[str], message: str
) -> None:
    """A node names its own kernel class. Naming a class verinfer does not know, another
    runtime, or a class the calibration never measured would buy a comparison within a
    tolerance nobody measured for it: refused, however small the difference."""
    declared = manifest(1.0, classes)
    bundle = across([Y, off_by(STEP)], engines, declared)
    with pytest.raises(VerificationError, match=message):
        verify_bundle(bundle, trust(bundle))


def test_an_unknown_kernel_class_is_refused_even_when_the_outputs_agree() -> None:
    a, b = signer("a.test"), signer("b.test")
    first = bundle_for(a, receipt_for(a, engine=RUNTIME + "quantum"))
    with pytest.raises(VerificationError, match=r"the first receipt's engine .* 'quantum'"):
        verify_bundle(replicated(first, bundle_for(b, receipt_for(b))), [a.vkey, b.vkey])
    with pytest.raises(VerificationError, match="names kernel class 'avx2 '"):
        kernel_class_of(RUNTIME + "avx2 ")
    with pytest.raises(VerificationError, match="names kernel class 'avx2'"):
        kernel_class_of("avx2")  # a class alone is no engine identity


def test_cross_class_bound() -> None:
    tolerance = {"abs": 0.5, "classes": ["avx2", "avx512"]}
    assert cross_class_bound([RUNTIME + "avx2"] * 3, None) == 0.0  # one identity: bit for bit
    assert cross_class_bound([RUNTIME + "avx2", RUNTIME + "avx512"], tolerance) == 0.5
    with pytest.raises(VerificationError, match="differ and no tolerance is declared"):
        cross_class_bound([RUNTIME + "avx2", RUNTIME + "avx512"], None)


def test_the_verifier_knows_the_engines_kernel_classes() -> None:
    from verinfer import engine  # noqa: PLC0415 - the verifier itself must not need ORT

    assert frozenset(engine.KERNEL_CLASSES) == KERNEL_CLASSES
    assert engine.kernel_class() in KERNEL_CLASSES


# -- the witness quorum counts distinct witnesses of distinct operators, never the log's own ---


def checkpoint_of(node: note.Signer) -> tuple[str, str]:
    receipt = receipt_for(node, mode="attested", nonce=None)
    bundle = bundle_for(node, receipt)
    return bundle.to_json(), bundle.checkpoint.split("\n\n")[0] + "\n"


def cosigned(node: note.Signer, witnesses: list[note.Signer]) -> Bundle:
    text, body = checkpoint_of(node)
    bundle = Bundle.from_json(text)
    lines = tuple(w.signature_line(body, timestamp=1_700_000_000) for w in witnesses)
    return Bundle(bundle.receipt, 0, (), bundle.checkpoint, lines)


def cosigner(name: str) -> note.Signer:
    return note.Signer(note.generate_key(name, cosigner=True)[0])


def renamed(key: note.Signer, skey: str, name: str) -> note.Signer:
    """The same private key under another name (C2SP key ID: SHA-256 of name, type, key)."""
    seed = skey.split("+", 4)[4]
    key_id = hashlib.sha256(name.encode() + b"\n" + bytes([key.key.algorithm]) + key.key.public)
    return note.Signer(f"PRIVATE+KEY+{name}+{key_id.hexdigest()[:8]}+{seed}")


def test_one_witness_key_under_two_names_is_one_witness() -> None:
    node = signer("node-1.test")
    first = cosigner("w")
    skey = note.generate_key("w", cosigner=True)[0]
    one = note.Signer(skey)
    again = renamed(one, skey, "w-again")  # its holder can sign under any name
    assert one.key.public == again.key.public
    assert one.vkey != again.vkey
    keys = [one.vkey, again.vkey]
    with pytest.raises(VerificationError, match="needs as many trusted witness keys"):
        verify_bundle(cosigned(node, [one, again]), [node.vkey], witnesses=keys, quorum=2)
    with pytest.raises(VerificationError, match="1 trusted witnesses of distinct operators"):
        verify_bundle(cosigned(node, [one, again]), [node.vkey],
                      witnesses=[*keys, first.vkey], quorum=2)  # fmt: skip
    verify_bundle(cosigned(node, [one, first]), [node.vkey],
                  witnesses=[one.vkey, first.vkey], quorum=2)  # fmt: skip


def test_the_logs_own_witness_never_counts() -> None:
    node = signer("node-1.test")
    own = cosigner("node-1.test/witness")
    other, third = cosigner("node-2.test/witness"), cosigner("node-3.test/witness")
    everyone = [own.vkey, other.vkey, third.vkey]
    lines: list[str] = []
    verify_bundle(cosigned(node, [other, third]), [node.vkey], witnesses=everyone, quorum=2,
                  report=lines.append)  # fmt: skip
    assert any(line.startswith("1+. 2 trusted witnesses cosigned") for line in lines)
    with pytest.raises(
        VerificationError,
        match=r"1 trusted witnesses of distinct operators other than the log's cosigned the "
        r"checkpoint, the policy needs 2 \(not counted: node-1.test/witness, the log's own",
    ):
        verify_bundle(cosigned(node, [own, other]), [node.vkey], witnesses=everyone, quorum=2)
    # its name is its holder's choice: the caller's operator map is what excludes it
    disguised = cosigner("independent/witness")
    keys = [disguised.vkey, other.vkey]
    bundle = cosigned(node, [disguised, other])
    verify_bundle(bundle, [node.vkey], witnesses=keys, quorum=2)  # nothing says it is the log's
    for operators in (
        {disguised.vkey: "acme", node.vkey: "acme"},  # one label for both
        {disguised.vkey: node.vkey},  # a label that is a key: that key's operator
    ):
        with pytest.raises(VerificationError, match="needs as many trusted witness keys"):
            verify_bundle(bundle, [node.vkey], witnesses=keys, quorum=2, operators=operators)
    # two witnesses of one operator count once
    acme = {disguised.vkey: "acme", other.vkey: "acme"}
    with pytest.raises(VerificationError, match="needs as many trusted witness keys"):
        verify_bundle(bundle, [node.vkey], witnesses=keys, quorum=2, operators=acme)
    with pytest.raises(VerificationError, match="1 trusted witnesses of distinct operators"):
        verify_bundle(bundle, [node.vkey], witnesses=[*keys, third.vkey], quorum=2,
                      operators=acme)  # fmt: skip
    with pytest.raises(VerificationError, match="step 1\\+ \\(witnesses\\): the operators map"):
        verify_bundle(bundle, [node.vkey], witnesses=keys, quorum=1, operators={"nope": "x"})


def test_a_quorum_needs_cosignatures_with_timestamps_from_trusted_cosigner_keys() -> None:
    node = signer("node-1.test")
    a, b = cosigner("a/witness"), cosigner("b/witness")
    bundle = cosigned(node, [a, b])
    with pytest.raises(VerificationError, match="needs as many trusted witness keys"):
        verify_bundle(bundle, [node.vkey], witnesses=[a.vkey, node.vkey], quorum=2)
    verify_bundle(bundle, [node.vkey], witnesses=[a.vkey, b.vkey], quorum=2)
    with pytest.raises(VerificationError, match="note is not signed by any trusted key"):
        verify_bundle(cosigned(node, []), [node.vkey], witnesses=[a.vkey, b.vkey], quorum=1)


def test_known_kernel_classes_are_the_engines() -> None:
    assert "avx2" in KERNEL_CLASSES
    assert "quantum" not in KERNEL_CLASSES


def test_the_node_keys_own_material_as_a_witness_never_counts() -> None:
    """A log's operator can make a cosigner key of its own node key's material: under any
    operator label the caller gave the node, that witness is still the log's own."""
    skey = note.generate_key("node-1.test")[0]
    node = note.Signer(skey)
    raw = bytearray(base64.b64decode(skey.split("+", 4)[4]))
    raw[0] = note.ALG_COSIGNATURE_V1
    seed = base64.b64encode(bytes(raw)).decode()
    key_id = hashlib.sha256(b"mirror\n" + bytes([raw[0]]) + node.key.public).hexdigest()[:8]
    mirror = note.Signer(f"PRIVATE+KEY+mirror+{key_id}+{seed}")
    other, third = cosigner("node-2.test/witness"), cosigner("node-3.test/witness")
    keys = [mirror.vkey, other.vkey, third.vkey]
    with pytest.raises(VerificationError, match="not counted: mirror, the log's own"):
        verify_bundle(cosigned(node, [mirror, other]), [node.vkey], witnesses=keys, quorum=2,
                      operators={node.vkey: "acme"})  # fmt: skip


# -- found by mutation testing (scripts/mutation.py): each kills a mutant that weakened a check --


def test_every_replica_is_another_node_not_just_another_than_the_first() -> None:
    a, b = signer("a.test"), signer("b.test")
    mode = "replicated:3"
    first = bundle_for(a, receipt_for(a, mode=mode))
    second = bundle_for(b, receipt_for(b, mode=mode))
    again = bundle_for(b, receipt_for(b, mode=mode, time="2026-01-01T00:00:01.000Z"))
    with pytest.raises(VerificationError, match=r"replica 2 comes from node .* again"):
        verify_bundle(replicated(first, second, again), [a.vkey, b.vkey])


def test_one_node_key_under_two_names_is_one_node() -> None:
    skey = note.generate_key("b.test")[0]
    b = note.Signer(skey)
    alias = renamed(b, skey, "b-alias.test")  # the same key material, another name and key ID
    a = signer("a.test")
    first = bundle_for(a, receipt_for(a))
    with pytest.raises(VerificationError, match=r"replica 1 comes from node .*b-alias.* again"):
        verify_bundle(replicated(bundle_for(b, receipt_for(b)), bundle_for(alias,
                      receipt_for(alias))), [b.vkey, alias.vkey])  # fmt: skip
    verify_bundle(replicated(first, bundle_for(alias, receipt_for(alias))), [a.vkey, alias.vkey])


@pytest.mark.parametrize("rider", ["compared", "manifest", "deviation"])
def test_nothing_rides_along_a_bitwise_agreement(rider: str) -> None:
    """A bundle built in process (not parsed) with any one tolerance field: refused."""
    a, b = signer("a.test"), signer("b.test")
    first = bundle_for(a, receipt_for(a))
    riding: dict[str, Any] = {
        "compared": (tensors.encode_binary(Y),) * 2, "manifest": b"x", "deviation": 0.5,
    }  # fmt: skip
    replica = bundle_for(b, receipt_for(b))
    bundle = Bundle(first.receipt, 0, (), first.checkpoint, (),
                    Agreement((replica,), **{rider: riding[rider]}))  # fmt: skip
    with pytest.raises(VerificationError, match="nothing unchecked rides along"):
        verify_bundle(bundle, [a.vkey, b.vkey])


def test_the_evidence_manifest_is_the_one_the_receipts_name() -> None:
    """A liar carries another manifest of the same model, with a huge tolerance, while every
    receipt names the real one: the manifest's bytes must be the CID the receipts name."""
    real = manifest(STEP, ["avx2", "avx512"])
    bundle = across([Y, off_by(1.0)], [RUNTIME + "avx512", RUNTIME + "avx2"], real)
    loose = manifest(10.0, ["avx2", "avx512"])
    swapped = Bundle(bundle.receipt, 0, (), bundle.checkpoint, (), Agreement(
        bundle.replicas, bundle.compared, loose.data, bundle.deviation))  # fmt: skip
    with pytest.raises(VerificationError, match=r"the evidence manifest: .*CID"):
        verify_bundle(swapped, trust(bundle))
    short = Bundle(bundle.receipt, 0, (), bundle.checkpoint, (), Agreement(
        bundle.replicas, bundle.compared[:1], real.data, bundle.deviation))  # fmt: skip
    with pytest.raises(ValueError, match="zip"):
        verify_bundle(short, trust(bundle))


def test_verify_bundles_checks_replicated_agreement() -> None:
    a, b = signer("a.test"), signer("b.test")
    first = bundle_for(a, receipt_for(a))
    agreeing = replicated(first, bundle_for(b, receipt_for(b)))
    other = {"y": np.zeros(3, np.float32)}
    disagreeing = replicated(
        first, bundle_for(b, receipt_for(b, outputs=tensors.map_digest(other)))
    )
    verify_bundles([agreeing, agreeing], [a.vkey, b.vkey])
    with pytest.raises(VerificationError, match=r"bundle 1: step 2\+ \(agreement\)"):
        verify_bundles([agreeing, disagreeing], [a.vkey, b.vkey])


def test_operator_labels_that_name_each_other_are_one_operator() -> None:
    node = signer("node-1.test")
    mirror, other = cosigner("mirror"), cosigner("node-2.test/witness")
    keys = [mirror.vkey, other.vkey]
    bundle = cosigned(node, [mirror, other])
    cycle = {mirror.vkey: node.vkey, node.vkey: mirror.vkey}  # each names the other's operator
    with pytest.raises(VerificationError, match="needs as many trusted witness keys"):
        verify_bundle(bundle, [node.vkey], witnesses=keys, quorum=2, operators=cycle)
    verify_bundle(bundle, [node.vkey], witnesses=keys, quorum=1, operators=cycle)


def _bomb() -> bytes:
    """A small .npz whose member declares 200 MB."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("y.npy", "w", force_zip64=True) as member,
    ):
        np.lib.format.write_array(member, np.zeros(50_000_000, np.float32))
    return buffer.getvalue()


def test_every_flaw_of_the_tolerance_evidence_is_named() -> None:
    declared = manifest(STEP, ["avx2", "avx512"])
    engines = [RUNTIME + "avx512", RUNTIME + "avx2"]
    good = across([Y, off_by(STEP)], engines, declared)
    keys = trust(good)

    def with_(**changes: Any) -> Bundle:
        fields = {"compared": good.compared, "manifest": good.manifest,
                  "deviation": good.deviation, **changes}  # fmt: skip
        return Bundle(good.receipt, 0, (), good.checkpoint, (), Agreement(good.replicas, **fields))

    with pytest.raises(VerificationError, match=r"ran on different engine classes \(onnxrun"):
        verify_bundle(with_(compared=(), manifest=b"", deviation=0.0), keys)
    with pytest.raises(VerificationError, match=r"evidence outputs: .*(above the limit|more than)"):
        verify_bundle(with_(compared=(_bomb(), good.compared[1])), keys)  # never inflated
    swapped = (good.compared[1], good.compared[0])
    with pytest.raises(VerificationError, match=r"the evidence outputs of 'n0\.test.* are not the"):
        verify_bundle(with_(compared=swapped), keys)
    with pytest.raises(VerificationError, match=r"records deviation 0\.5, the outputs it carries"):
        verify_bundle(with_(deviation=0.5), keys)
    bare = across([Y, off_by(STEP)], engines, manifest(None, []))
    with pytest.raises(VerificationError, match="declares no tolerance across engine classes"):
        verify_bundle(bare, trust(bare))
    kind = {"y": Y["y"].astype(np.float64)}  # another dtype: no deviation is defined
    other = across([Y, kind], engines, declared)
    with pytest.raises(VerificationError, match="answered outputs that differ in kind from node"):
        verify_bundle(other, trust(other))
    beyond = across([Y, off_by(2 * STEP)], engines, declared)
    with pytest.raises(VerificationError, match=r"0\.00195 away from node 'n0\.test"):
        verify_bundle(beyond, trust(beyond))


def test_distinct_keys_whose_base64_shares_a_tail_are_distinct_nodes() -> None:
    """A vkey's base64 may hold "+": two keys must not be judged one by what follows their last
    "+" (that made honest replicated agreements fail now and then)."""
    from verinfer.verify.steps import public_key  # noqa: PLC0415

    one, two = "a.test+0badc0de+AQID+tail", "b.test+0badc0de+BAUG+tail"
    assert public_key(one) != public_key(two)
    assert public_key(one) == public_key("alias.test+0badc0de+AQID+tail")
    found = 0
    while found < 2:  # real keys whose base64 holds a "+": judged by all of it
        key = signer("n.test")
        if key.vkey.count("+") > 2:
            found += 1
            assert public_key(key.vkey) == key.vkey.split("+", 2)[2]
