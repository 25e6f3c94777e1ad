"""Tampering with real proof bundles: every change must make verification fail.

A real node (hub, engine, log, sequencer) answers a series of requests; each test changes one
thing in a resulting bundle, or in what the bundle is checked against, and expects the offline
verifier to refuse it at the right step. The only changes that still verify are unauthenticated
hints: signature lines by unknown keys (PROTOCOL.md §4), and, for now, ``cosignatures`` and
``evidence``, which the verifier does not read (not yet listed in PROTOCOL.md §7).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from verinfer import canonical, cid, engine, merkle, note, tensors
from verinfer.errors import VerificationError
from verinfer.node.service import Node
from verinfer.verify import Bundle, Receipt, verify_bundle, verify_bundles
from verinfer.verify.bundle import MAX_BUNDLE_BYTES

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
from hub_models import multi_io_model, sklearn_model

IRIS = "alice/iris@1"
MULTI = "alice/multi@1"
# the model of each request, in log order; every request is committed with its own checkpoint
PLAN = ("iris",) * 2 + ("multi",) + ("iris",) * 6 + ("multi",) + ("iris",) * 3
TARGET = 7  # a real answer: entry 7 under the checkpoint of size 8 (a 3-hash proof)
LATE = 2  # entry 2 re-proven under the final checkpoint of size 13 (a 4-hash proof)
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
OTHER_VKEY = note.generate_key("node.verinfer.local")[1]  # same name as the node, other key


@dataclass(frozen=True)
class Call:
    """One answered request."""

    index: int
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    bundle: Bundle
    model: bytes


@dataclass(frozen=True)
class World:
    """A node after len(PLAN) requests, and everything the tests compare against."""

    node: Node
    calls: list[Call]
    size: int
    checkpoints: dict[int, str]
    late: list[Bundle]  # every receipt proven against the final checkpoint
    iris: bytes
    multi: bytes

    @property
    def vkey(self) -> str:
        return self.node.vkey

    @property
    def target(self) -> Call:
        return self.calls[TARGET]

    def proof(self, index: int, size: int) -> tuple[bytes, ...]:
        return tuple(self.node.log.inclusion_proof(index, size))


def _inputs(kind: str, i: int) -> dict[str, np.ndarray]:
    if kind == "iris":  # the last feature is 0.0, so it can be turned into -0.0
        return {"X": np.array([[4.5 + 0.25 * i, 3.0 + 0.1 * i, 1.0 + 0.3 * i, 0.0]], np.float32)}
    return {
        "x": np.arange(6, dtype=np.float32).reshape(2, 3) - i,
        "k": np.array([[1, -2, i]], dtype=np.int64),
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    iris, multi = sklearn_model("iris"), multi_io_model()
    alice = note.Signer(note.generate_key("alice")[0])
    with Node(tmp_path_factory.mktemp("tamper") / "node") as node:
        node.hub.publish(iris, repository="alice/iris", version="1", signer=alice)
        node.hub.publish(multi, repository="alice/multi", version="1", signer=alice)
        calls = []
        for i, kind in enumerate(PLAN):
            inputs = _inputs(kind, i)
            nonce = f"nonce-{i}" if i % 2 else None
            result = node.infer(IRIS if kind == "iris" else MULTI, inputs, nonce=nonce)
            model = iris if kind == "iris" else multi
            calls.append(Call(i, inputs, result.outputs, result.bundle, model))
        size = node.log.size
        checkpoints = {s: node.log.checkpoint_at(s) for s in node.log.checkpoint_sizes()}
        late = [
            Bundle(
                c.bundle.receipt,
                c.index,
                tuple(node.log.inclusion_proof(c.index, size)),
                checkpoints[size],
            )
            for c in calls
        ]
        yield World(node, calls, size, checkpoints, late, iris, multi)


# ---------------------------------------------------------------------------------------------
# helpers


def bundle_json(bundle: Bundle, **fields: Any) -> str:
    """The bundle's JSON with some top-level fields replaced (bundles need not be canonical)."""
    value = bundle.to_dict()
    value.update(fields)
    return json.dumps(value)


def receipt_text(bundle: Bundle, **changes: Any) -> str:
    """The canonical JSON of the bundle's receipt with some fields replaced."""
    return canonical.dumps({**bundle.receipt.body, **changes}).decode()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def flips(raw: bytes) -> Iterator[tuple[int, bytes]]:
    """Every single-bit change of ``raw``, with the bit's position."""
    for bit in range(len(raw) * 8):
        changed = bytearray(raw)
        changed[bit // 8] ^= 1 << (bit % 8)
        yield bit, bytes(changed)


def parse_or_error(data: str | bytes | dict[str, Any]) -> Bundle | str:
    """The parsed bundle, or the message of the :class:`VerificationError` raised."""
    try:
        return Bundle.from_json(data)
    except VerificationError as exc:
        return str(exc)


def outcome(data: str | bytes | dict[str, Any], trusted: Iterable[str], **kwargs: Any) -> str:
    """``"verified"``, or the message of the :class:`VerificationError` raised."""
    try:
        verify_bundle(Bundle.from_json(data), list(trusted), **kwargs)
    except VerificationError as exc:
        return str(exc)
    return "verified"


def misjudged(
    variants: Iterable[tuple[object, str | bytes | dict[str, Any]]],
    trusted: Iterable[str],
    pattern: str,
) -> list[tuple[object, str]]:
    """The variants that verify, or fail for a reason not matching ``pattern`` (want: none)."""
    trusted = list(trusted)
    wrong = []
    count = 0
    for label, data in variants:
        count += 1
        message = outcome(data, trusted)
        if not re.search(pattern, message) or message == "verified":
            wrong.append((label, message))
    assert count, "no variants: the test is vacuous"
    return wrong


def split_checkpoint(signed: str) -> tuple[str, note.Signature]:
    text, signatures = note.parse(signed)
    assert len(signatures) == 1
    return text, signatures[0]


# ---------------------------------------------------------------------------------------------
# 1. the untouched bundles verify


def test_log_has_one_checkpoint_per_request(world: World) -> None:
    assert world.size == len(PLAN)
    assert sorted(world.checkpoints) == list(range(world.size + 1))
    assert len(world.target.bundle.proof) == 3
    assert len(world.late[LATE].proof) == 4
    assert [c.bundle.index for c in world.calls] == list(range(world.size))


def test_real_bundle_verifies_with_reexecution(world: World) -> None:
    call = world.target
    lines: list[str] = []
    verify_bundle(
        call.bundle,
        [world.vkey],
        call.inputs,
        call.outputs,
        call.model,
        reexecute=True,
        report=lines.append,
    )
    assert [line.split(".")[0] for line in lines] == ["1", "2", "3", "4", "5", "6"]
    assert "bit-identical" in lines[-1]


@pytest.mark.parametrize("index", range(len(PLAN)))
def test_every_answer_verifies_fresh_and_late(world: World, index: int) -> None:
    call = world.calls[index]
    for bundle in (call.bundle, world.late[index]):
        verify_bundle(
            bundle, [OTHER_VKEY, world.vkey], call.inputs, call.outputs, call.model, reexecute=True
        )


def test_bundle_round_trips(world: World) -> None:
    for bundle in [c.bundle for c in world.calls] + world.late:
        text = bundle.to_json()
        assert Bundle.from_json(text) == bundle
        assert Bundle.from_json(text.encode()) == bundle
        assert Bundle.from_json(bundle.to_dict()) == bundle
        assert canonical.dumps(json.loads(text)).decode() == text
        assert Receipt.from_bytes(bundle.receipt.data) == bundle.receipt
        assert bundle.receipt.data == canonical.dumps(bundle.receipt.body)


def test_verify_bundles_over_all_bundles(world: World) -> None:
    verify_bundles([c.bundle for c in world.calls] + world.late, [world.vkey])


@pytest.mark.parametrize("position", [0, 5, 12])
def test_verify_bundles_names_the_bad_bundle(world: World, position: int) -> None:
    bundles = [c.bundle for c in world.calls]
    good = bundles[position]
    bundles[position] = Bundle(good.receipt, good.index, good.proof[::-1], good.checkpoint)
    if len(good.proof) < 2:
        bundles[position] = Bundle(good.receipt, good.index + 1, good.proof, good.checkpoint)
    with pytest.raises(VerificationError, match=rf"^bundle {position}: step 2 \(inclusion\)"):
        verify_bundles(bundles, [world.vkey])
    with pytest.raises(VerificationError, match=r"^bundle 0: step 1 .*not a trusted key"):
        verify_bundles(bundles, [OTHER_VKEY])


# ---------------------------------------------------------------------------------------------
# 2. every field of the receipt


RECEIPT_CHANGES = [
    ("type", "verinfer.receipt/v2", r"^unsupported receipt type"),
    ("type", "verinfer.bundle/v1", r"^unsupported receipt type"),
    ("log", "other.log.example", r"^step 1 \(checkpoint\): checkpoint of log"),
    ("log", "", r"^malformed receipt: log"),
    ("node", OTHER_VKEY, r"^step 1 \(checkpoint\): .*not a trusted key"),
    ("node", "not-a-vkey", r"^step 1 \(checkpoint\): .*not a trusted key"),
    ("model", cid.compute(b"another model"), r"^step 2 \(inclusion\)"),
    ("model", cid.compute(b"")[:-1] + "v", r"^malformed receipt: .*CID"),
    ("model", None, r"^malformed receipt: .*CID"),
    ("manifest", cid.compute(b"another manifest"), r"^step 2 \(inclusion\)"),
    ("manifest", None, r"^step 2 \(inclusion\)"),
    ("manifest", "sha256:" + "0" * 64, r"^malformed receipt: .*CID"),
    ("inputs", "sha256:" + "0" * 64, r"^step 2 \(inclusion\)"),
    ("inputs", "sha256:" + "A" * 64, r"^malformed receipt: inputs digest"),
    ("outputs", "sha256:" + "f" * 64, r"^step 2 \(inclusion\)"),
    ("outputs", None, r"^malformed receipt: outputs digest"),
    ("mode", "verified", r"^malformed receipt: unknown mode"),
    ("mode", "ATTESTED", r"^malformed receipt: unknown mode"),
    ("engine", "onnxruntime-0.0.0/CPUExecutionProvider/opt-all/avx2", r"^step 2 \(inclusion\)"),
    ("engine", "", r"^malformed receipt: engine"),
    ("time", "2000-01-01T00:00:00.000Z", r"^step 2 \(inclusion\)"),
    ("time", "2026-01-01T00:00:00Z", r"^malformed receipt: time"),
    ("time", 1764000000, r"^malformed receipt: time"),
    ("nonce", None, r"^step 2 \(inclusion\)"),
    ("nonce", "nonce-8", r"^step 2 \(inclusion\)"),
    ("nonce", "bad nonce!", r"^malformed receipt: malformed nonce"),
]


def test_receipt_changes_cover_every_field() -> None:
    assert {name for name, _, _ in RECEIPT_CHANGES} == set(Receipt._FIELDS)


@pytest.mark.parametrize(("name", "value", "match"), RECEIPT_CHANGES)
@pytest.mark.parametrize("which", ["fresh", "late"])
def test_changed_receipt_field_is_rejected(
    world: World, which: str, name: str, value: object, match: str
) -> None:
    bundle = world.target.bundle if which == "fresh" else world.late[TARGET]
    assert bundle.receipt[name] != value
    data = bundle_json(bundle, receipt=receipt_text(bundle, **{name: value}))
    with pytest.raises(VerificationError, match=match):
        verify_bundle(Bundle.from_json(data), [world.vkey])


def test_receipt_naming_another_trusted_key_is_rejected(world: World) -> None:
    bundle = world.target.bundle
    data = bundle_json(bundle, receipt=receipt_text(bundle, node=OTHER_VKEY))
    with pytest.raises(VerificationError, match=r"^step 1 .*not signed by any trusted key"):
        verify_bundle(Bundle.from_json(data), [world.vkey, OTHER_VKEY])


@pytest.mark.parametrize("name", Receipt._FIELDS)
def test_receipt_field_missing_is_malformed(world: World, name: str) -> None:
    body = dict(world.target.bundle.receipt.body)
    del body[name]
    data = bundle_json(world.target.bundle, receipt=canonical.dumps(body).decode())
    with pytest.raises(VerificationError, match=r"^malformed receipt: fields"):
        Bundle.from_json(data)


def test_receipt_extra_field_is_malformed(world: World) -> None:
    bundle = world.target.bundle
    data = bundle_json(bundle, receipt=receipt_text(bundle, extra="x"))
    with pytest.raises(VerificationError, match=r"^malformed receipt: fields"):
        Bundle.from_json(data)


@pytest.mark.parametrize(
    "spelling",
    [
        lambda body: json.dumps(body, sort_keys=True),  # whitespace
        lambda body: json.dumps(body, separators=(",", ":")),  # key order
        lambda body: json.dumps(body, sort_keys=True, separators=(",", ":"), indent=0),
        lambda body: canonical.dumps(body).decode() + " ",
        lambda body: canonical.dumps(body).decode().replace("sha256:", "sha256\\u003a"),
    ],
)
def test_receipt_spelled_differently_is_not_the_logged_leaf(world: World, spelling: Any) -> None:
    bundle = world.target.bundle
    text = spelling(bundle.receipt.body)
    assert text.encode() != bundle.receipt.data
    assert json.loads(text) == bundle.receipt.body
    with pytest.raises(VerificationError, match=r"^step 2 \(inclusion\)"):
        verify_bundle(Bundle.from_json(bundle_json(bundle, receipt=text)), [world.vkey])


@pytest.mark.parametrize("which", ["fresh", "late"])
def test_every_character_of_the_receipt_changed(world: World, which: str) -> None:
    bundle = world.target.bundle if which == "fresh" else world.late[TARGET]
    text = bundle.receipt.data.decode()

    def variants() -> Iterator[tuple[object, str]]:
        for p, char in enumerate(text):
            yield p, bundle_json(bundle, receipt=text[:p] + chr(ord(char) ^ 1) + text[p + 1 :])
            yield -p, bundle_json(bundle, receipt=text[:p] + text[p + 1 :])

    pattern = r"^(malformed receipt|unsupported receipt type|step [12] )"
    assert not misjudged(variants(), [world.vkey], pattern)


@pytest.mark.parametrize("name", ["inputs", "outputs"])
def test_every_bit_of_a_tensor_digest(world: World, name: str) -> None:
    bundle = world.target.bundle
    raw = bytes.fromhex(bundle.receipt[name].removeprefix("sha256:"))
    variants = (
        (bit, bundle_json(bundle, receipt=receipt_text(bundle, **{name: f"sha256:{d.hex()}"})))
        for bit, d in flips(raw)
    )
    assert not misjudged(variants, [world.vkey], r"^step 2 \(inclusion\)")


@pytest.mark.parametrize("name", ["model", "manifest"])
def test_every_bit_of_a_cid_digest(world: World, name: str) -> None:
    bundle = world.target.bundle
    raw = cid.digest(bundle.receipt[name])
    variants = (
        (bit, bundle_json(bundle, receipt=receipt_text(bundle, **{name: cid.from_digest(d)})))
        for bit, d in flips(raw)
    )
    assert not misjudged(variants, [world.vkey], r"^step 2 \(inclusion\)")


def test_receipt_of_another_answer_in_a_bundle(world: World) -> None:
    """Each receipt put in each other answer's bundle (also receipts of the other model)."""
    bundles = [c.bundle for c in world.calls] + world.late
    variants = (
        ((i, j), bundle_json(a, receipt=b.receipt.data.decode()))
        for (i, a), (j, b) in itertools.product(enumerate(bundles), repeat=2)
        if a.index != b.index
    )
    assert not misjudged(variants, [world.vkey], r"^step 2 \(inclusion\)")


# ---------------------------------------------------------------------------------------------
# 2. index and proof


@pytest.mark.parametrize("which", ["fresh", "late"])
def test_every_other_index_is_rejected(world: World, which: str) -> None:
    bundle = world.target.bundle if which == "fresh" else world.late[LATE]
    size = note.verify_checkpoint(bundle.checkpoint, [world.vkey])[0].size
    indices = [i for i in range(size + 2) if i != bundle.index] + [2**31, 2**63, 2**64 + 7]
    variants = ((i, bundle_json(bundle, index=i)) for i in indices)
    assert not misjudged(variants, [world.vkey], r"^step 2 \(inclusion\)")


@pytest.mark.parametrize("index", [-1, True, False, "7", 7.0, None, [7], float("nan")])
def test_index_of_the_wrong_type_is_malformed(world: World, index: object) -> None:
    with pytest.raises(VerificationError, match=r"^malformed bundle: index"):
        Bundle.from_json(bundle_json(world.target.bundle, index=index))


@pytest.mark.parametrize("which", ["fresh", "late"])
def test_every_bit_of_every_proof_hash(world: World, which: str) -> None:
    bundle = world.target.bundle if which == "fresh" else world.late[LATE]
    proof = [b64(h) for h in bundle.proof]

    def variants() -> Iterator[tuple[object, str]]:
        for position, value in enumerate(bundle.proof):
            for bit, changed in flips(value):
                hashes = list(proof)
                hashes[position] = b64(changed)
                yield (position, bit), bundle_json(bundle, proof=hashes)

    assert not misjudged(variants(), [world.vkey], r"^step 2 \(inclusion\)")


@pytest.mark.parametrize("which", ["fresh", "late"])
def test_proof_truncated_extended_reordered(world: World, which: str) -> None:
    bundle = world.target.bundle if which == "fresh" else world.late[LATE]
    proof = [b64(h) for h in bundle.proof]
    extras = [
        bytes(32),
        b"\xff" * 32,
        merkle.leaf_hash(bundle.receipt.data),
        note.Checkpoint.from_text(note.parse(bundle.checkpoint)[0]).root,
        *bundle.proof,
    ]
    variants: list[tuple[object, list[str]]] = []
    variants += [(("prefix", n), proof[:n]) for n in range(len(proof))]
    variants += [(("suffix", n), proof[n:]) for n in range(1, len(proof))]
    variants += [(("drop", n), proof[:n] + proof[n + 1 :]) for n in range(len(proof))]
    variants += [
        (("insert", n, e), [*proof[:n], b64(extra), *proof[n:]])
        for n in range(len(proof) + 1)
        for e, extra in enumerate(extras)
    ]
    variants += [
        (("permute", order), [proof[i] for i in order])
        for order in itertools.permutations(range(len(proof)))
        if [proof[i] for i in order] != proof
    ]
    variants += [("twice", proof * 2)]
    variants += [("other proof", [b64(h) for h in world.calls[TARGET - 1].bundle.proof])]
    assert len(set(proof)) == len(proof)  # so every permutation is a change
    assert not misjudged(
        ((label, bundle_json(bundle, proof=p)) for label, p in variants),
        [world.vkey],
        r"^step 2 \(inclusion\): inclusion proof",
    )


@pytest.mark.parametrize(
    "proof",
    [
        "AAAA",
        {"0": b64(bytes(32))},
        [b64(bytes(31))],
        [b64(bytes(33))],
        [b64(bytes(32))[:-1]],
        [b64(bytes(32)).rstrip("=")],
        [b64(bytes(32)) + "\n"],
        ["!" + b64(bytes(32))[1:]],
        [bytes(32).hex()],
        [32],
        [None],
        [b64(bytes(32))] * 65,
    ],
)
def test_malformed_proof(world: World, proof: object) -> None:
    with pytest.raises(VerificationError, match=r"^malformed bundle: proof"):
        Bundle.from_json(bundle_json(world.target.bundle, proof=proof))


def test_proof_hash_base64_has_one_meaning(world: World) -> None:
    """A proof hash's base64 with non-zero padding bits is another spelling of the same hash.

    verinfer's notes and CIDs insist on one spelling per value; bundle proofs currently accept
    the non-canonical spellings (``base64.b64decode(validate=True)`` ignores the padding bits).
    That is harmless for soundness: such a bundle decodes to the very same proof, so it proves
    exactly what the original does. Either outcome is accepted here; nothing else is.
    """
    bundle = world.late[LATE]
    for position, value in enumerate(bundle.proof):
        canonical_b64 = b64(value)
        last = canonical_b64[-2]  # 32 bytes: 43 characters and '='; the last carries 2 zero bits
        for pad in (1, 2, 3):
            spelled = canonical_b64[:-2] + B64[B64.index(last) + pad] + "="
            hashes = [b64(h) for h in bundle.proof]
            hashes[position] = spelled
            parsed = parse_or_error(bundle_json(bundle, proof=hashes))
            # rejected as malformed, or the same proof: nothing else can be proven with it
            assert parsed == bundle or str(parsed).startswith("malformed bundle: proof")


# ---------------------------------------------------------------------------------------------
# 2. checkpoint


@pytest.mark.parametrize("which", ["fresh", "late"])
def test_every_bit_of_the_checkpoint_signature(world: World, which: str) -> None:
    bundle = world.target.bundle if which == "fresh" else world.late[LATE]
    text, sig = split_checkpoint(bundle.checkpoint)
    raw = sig.key_id.to_bytes(4, "big") + sig.signature

    def variants() -> Iterator[tuple[object, str]]:
        for bit, changed in flips(raw):
            line = f"— {sig.name} {b64(changed)}\n"
            yield bit, bundle_json(bundle, checkpoint=text + "\n" + line)

    assert not misjudged(variants(), [world.vkey], r"^step 1 \(checkpoint\)")


@pytest.mark.parametrize("which", ["fresh", "late"])
def test_every_bit_of_the_checkpoint_root(world: World, which: str) -> None:
    bundle = world.target.bundle if which == "fresh" else world.late[LATE]
    origin, size, root_b64, _ = bundle.checkpoint.split("\n", 3)
    rest = bundle.checkpoint[len(origin) + len(size) + len(root_b64) + 3 :]
    root = base64.b64decode(root_b64)
    variants = (
        (bit, bundle_json(bundle, checkpoint=f"{origin}\n{size}\n{b64(r)}\n{rest}"))
        for bit, r in flips(root)
    )
    assert not misjudged(variants, [world.vkey], r"^step 1 \(checkpoint\): invalid signature")


@pytest.mark.parametrize("which", ["fresh", "late"])
def test_every_character_of_the_checkpoint_changed(world: World, which: str) -> None:
    """Every base64 character of the root and signature replaced by each of the other 63; every
    other character changed and deleted."""
    bundle = world.target.bundle if which == "fresh" else world.late[LATE]
    signed = bundle.checkpoint
    lines = signed.split("\n")
    root_start = len(lines[0]) + len(lines[1]) + 2
    base64_spans = [
        range(root_start, root_start + len(lines[2])),
        range(signed.rindex(" ") + 1, len(signed) - 1),
    ]
    in_base64 = {p for span in base64_spans for p in span}
    assert len(in_base64) == 44 + 92

    def variants() -> Iterator[tuple[object, str]]:
        for p, char in enumerate(signed):
            others = [c for c in B64 if c != char] if p in in_base64 else [chr(ord(char) ^ 1)]
            for other in [*others, ""]:
                yield (
                    (p, other),
                    bundle_json(bundle, checkpoint=signed[:p] + other + signed[p + 1 :]),
                )

    assert not misjudged(variants(), [world.vkey], r"^step 1 \(checkpoint\)")


@pytest.mark.parametrize(
    "change",
    [
        ("origin", "other.log.example"),
        ("origin", "node.verinfer.local "),
        ("origin", "Node.verinfer.local"),
        ("size", "+1"),
        ("size", "-1"),
        ("size", "0"),
        ("size", "leading zero"),
        ("size", ""),
        ("extension", "ext"),
    ],
)
def test_checkpoint_origin_or_size_changed(world: World, change: tuple[str, str]) -> None:
    bundle = world.target.bundle
    text, sig = split_checkpoint(bundle.checkpoint)
    origin, size, root, *_ = text.split("\n")
    what, value = change
    if what == "origin":
        origin = value
    elif what == "size" and value in ("+1", "-1"):
        size = str(int(size) + int(value))
    elif what == "size":
        size = "0" + size if value == "leading zero" else value
    else:
        root += "\n" + value
    forged = f"{origin}\n{size}\n{root}\n\n{sig.line}"
    assert forged != bundle.checkpoint
    with pytest.raises(VerificationError, match=r"^step 1 \(checkpoint\)"):
        verify_bundle(Bundle.from_json(bundle_json(bundle, checkpoint=forged)), [world.vkey])


def test_checkpoint_signed_by_the_node_for_another_log(world: World) -> None:
    """A genuine signature by the trusted key, but over a checkpoint of another origin."""
    bundle = world.target.bundle
    real = note.verify_checkpoint(bundle.checkpoint, [world.vkey])[0]
    other = note.Checkpoint("other.log.example", real.size, real.root)
    signed = world.node.signer.sign(other.text)
    with pytest.raises(VerificationError, match=r"^step 1 \(checkpoint\): checkpoint of log"):
        verify_bundle(Bundle.from_json(bundle_json(bundle, checkpoint=signed)), [world.vkey])


@pytest.mark.parametrize(
    "checkpoint",
    [
        lambda signed: signed.split("\n\n")[0] + "\n",  # no signature block
        lambda signed: signed.split("\n\n")[0] + "\n\n",  # no signature line
        lambda signed: signed.rstrip("\n"),
        lambda signed: signed + "\n",
        lambda signed: signed.replace("\n", "\r\n"),
        lambda signed: signed + signed.split("\n\n")[1],  # the same signature twice
        lambda signed: "",
    ],
)
def test_checkpoint_structure_broken(world: World, checkpoint: Any) -> None:
    bundle = world.target.bundle
    data = bundle_json(bundle, checkpoint=checkpoint(bundle.checkpoint))
    with pytest.raises(VerificationError, match=r"^step 1 \(checkpoint\): malformed"):
        verify_bundle(Bundle.from_json(data), [world.vkey])


def test_checkpoint_not_text_is_malformed(world: World) -> None:
    for value in (None, 8, ["a"], {"a": 1}):
        with pytest.raises(VerificationError, match=r"^malformed bundle: checkpoint"):
            Bundle.from_json(bundle_json(world.target.bundle, checkpoint=value))


def test_signatures_by_unknown_keys_are_ignored(world: World) -> None:
    """Documented (PROTOCOL §4, C2SP signed-note): a signature line by a key the verifier does
    not trust is ignored, so adding one to the checkpoint does not change the verdict."""
    bundle = world.target.bundle
    text, _ = split_checkpoint(bundle.checkpoint)
    stranger = note.Signer(note.generate_key("stranger.example")[0])
    signed = bundle.checkpoint + stranger.signature_line(text)
    verify_bundle(Bundle.from_json(bundle_json(bundle, checkpoint=signed)), [world.vkey])
    # it is not even checked: one over other text is ignored just the same, because only the
    # receipt's node key is trusted for the checkpoint
    invalid = bundle.checkpoint + stranger.signature_line(text.replace("\n", " \n", 1))
    verify_bundle(Bundle.from_json(bundle_json(bundle, checkpoint=invalid)), [world.vkey])
    # a second line in the node's own name and key ID is refused, whatever it signs
    _, sig = split_checkpoint(bundle.checkpoint)
    twin = note.Signature(sig.name, sig.key_id, bytes(64)).line
    with pytest.raises(
        VerificationError, match=r"^step 1 \(checkpoint\): malformed note: duplicate"
    ):
        verify_bundle(Bundle.from_json(bundle_json(bundle, checkpoint=signed + twin)), [world.vkey])


# ---------------------------------------------------------------------------------------------
# 2. cosignatures, evidence and the bundle type


def test_cosignatures_are_unauthenticated_hints_and_evidence_must_be_empty(world: World) -> None:
    """The verifier does not read ``cosignatures`` yet (there are no witness policies): they are
    an unauthenticated hint, listed as such in PROTOCOL.md §10, and anything line-shaped
    verifies. ``evidence`` must be empty, since the ``attested`` mode defines none."""
    bundle = world.target.bundle
    text, _ = split_checkpoint(bundle.checkpoint)
    witness = note.Signer(note.generate_key("witness.example", cosigner=True)[0])
    hints = [
        {"cosignatures": ["garbage"]},
        {"cosignatures": ["— witness.example AAAAAAAA\n", ""]},
        {"cosignatures": [witness.signature_line(text, timestamp=1)]},  # a genuine one
        {"cosignatures": [witness.signature_line("other\n1\n" + text.split("\n")[2] + "\n")]},
    ]
    call = world.target
    for fields in hints:
        parsed = Bundle.from_json(bundle_json(bundle, **fields))
        assert parsed != bundle
        verify_bundle(parsed, [world.vkey], call.inputs, call.outputs, call.model)
        verify_bundles([parsed], [world.vkey])
    for evidence in ({"tee": "quote", "n": [1, 2, 3]}, {"": None}):
        with pytest.raises(VerificationError, match="evidence must be empty"):
            Bundle.from_json(bundle_json(bundle, evidence=evidence))
    with pytest.raises(VerificationError, match="cosignatures must be a list of lines"):
        Bundle.from_json(bundle_json(bundle, cosignatures=["two\nlines\n"]))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"cosignatures": "— witness AAAA"}, r"^malformed bundle: cosignatures"),
        ({"cosignatures": [1]}, r"^malformed bundle: cosignatures"),
        ({"cosignatures": None}, r"^malformed bundle: cosignatures"),
        ({"cosignatures": {}}, r"^malformed bundle: cosignatures"),
        ({"evidence": []}, r"^malformed bundle: evidence"),
        ({"evidence": {"a": 1}}, r"^malformed bundle: evidence"),
        ({"evidence": None}, r"^malformed bundle: evidence"),
        ({"evidence": "x"}, r"^malformed bundle: evidence"),
        ({"type": "verinfer.bundle/v2"}, r"^unsupported bundle type"),
        ({"type": "verinfer.receipt/v1"}, r"^unsupported bundle type"),
        ({"type": None}, r"^unsupported bundle type"),
        ({"receipt": None}, r"^malformed bundle: receipt"),
        ({"receipt": {}}, r"^malformed bundle: receipt"),
    ],
)
def test_hint_and_type_fields_of_the_wrong_type(
    world: World, fields: dict[str, Any], match: str
) -> None:
    with pytest.raises(VerificationError, match=match):
        Bundle.from_json(bundle_json(world.target.bundle, **fields))


# ---------------------------------------------------------------------------------------------
# 3. untrusted keys


@pytest.mark.parametrize("trusted", [[OTHER_VKEY], [], [note.generate_key("x")[1]] * 3])
def test_untrusted_key(world: World, trusted: list[str]) -> None:
    call = world.target
    with pytest.raises(VerificationError, match=r"^step 1 \(checkpoint\): .*not a trusted key"):
        verify_bundle(call.bundle, trusted, call.inputs, call.outputs, call.model)


@pytest.fixture
def other_node(world: World, tmp_path: Path) -> Iterator[Node]:
    """A second node with its own key (and the same name), serving the same hub."""
    with Node(tmp_path / "other", hub=world.node.hub) as node:
        yield node


def test_bundle_from_another_node(world: World, other_node: Node) -> None:
    call = world.target
    bundle = other_node.infer(IRIS, call.inputs).bundle
    assert other_node.vkey != world.vkey
    assert bundle.receipt["log"] == call.bundle.receipt["log"]  # same origin: only keys differ
    verify_bundle(bundle, [other_node.vkey], call.inputs, call.outputs, call.model)
    with pytest.raises(VerificationError, match=r"^step 1 \(checkpoint\): .*not a trusted key"):
        verify_bundle(bundle, [world.vkey], call.inputs, call.outputs, call.model)
    # claiming to be the trusted node does not help: its key did not sign the checkpoint
    claimed = bundle_json(bundle, receipt=receipt_text(bundle, node=world.vkey))
    with pytest.raises(VerificationError, match=r"^step 1 .*not signed by any trusted key"):
        verify_bundle(Bundle.from_json(claimed), [world.vkey, other_node.vkey])
    # and the trusted node's checkpoint cannot carry the other node's entry
    mixed = bundle_json(bundle, checkpoint=world.checkpoints[bundle.index + 1])
    with pytest.raises(VerificationError, match=r"^step 1 .*not signed by any trusted key"):
        verify_bundle(Bundle.from_json(mixed), [other_node.vkey])


def test_forged_checkpoint_over_forged_receipt(world: World) -> None:
    """Mallory has a key with the node's name; she logs a receipt with made-up outputs."""
    call = world.target
    origin = call.bundle.receipt["log"]
    mallory = note.Signer(note.generate_key(origin)[0])
    fake_outputs = {**call.outputs, "label": np.array([2], dtype=np.int64)}
    assert tensors.map_digest(fake_outputs) != call.bundle.receipt["outputs"]
    entries = [b.receipt.data for b in world.late]

    def forge(node_vkey: str) -> Bundle:
        body = {
            **call.bundle.receipt.body,
            "node": node_vkey,
            "outputs": tensors.map_digest(fake_outputs),
        }
        receipt = Receipt.from_bytes(canonical.dumps(body))
        leaves = merkle.leaf_hashes([*entries[:TARGET], receipt.data, *entries[TARGET + 1 :]])
        checkpoint = note.Checkpoint(origin, len(leaves), merkle.root(leaves))
        proof = tuple(merkle.inclusion_proof(TARGET, leaves))
        return Bundle(receipt, TARGET, proof, mallory.sign(checkpoint.text))

    # well formed: under her own key it verifies, so only the key stops it below
    verify_bundle(forge(mallory.vkey), [mallory.vkey], call.inputs, fake_outputs, call.model)
    forged = forge(world.vkey)
    with pytest.raises(VerificationError, match=r"^step 1 .*not signed by any trusted key"):
        verify_bundle(forged, [world.vkey], call.inputs, fake_outputs, call.model)
    with pytest.raises(VerificationError, match=r"^step 1 .*not a trusted key"):
        verify_bundle(forge(mallory.vkey), [world.vkey], call.inputs, fake_outputs, call.model)
    # grafting the forged receipt onto the real checkpoint fails the inclusion instead
    grafted = Bundle(forged.receipt, TARGET, world.late[TARGET].proof, world.checkpoints[13])
    with pytest.raises(VerificationError, match=r"^step 2 \(inclusion\)"):
        verify_bundle(grafted, [world.vkey])
    with pytest.raises(VerificationError, match=r"^bundle 1: step 1 .*not signed by any trusted"):
        verify_bundles([world.late[TARGET], forged], [world.vkey])


# ---------------------------------------------------------------------------------------------
# 4. a receipt for another model; re-execution against another model


def test_receipt_checked_against_another_model(world: World) -> None:
    iris_call, multi_call = world.target, world.calls[PLAN.index("multi")]
    others = [world.multi, world.iris + b"\x00", world.iris[:-1], b"", sklearn_model("iris")[::-1]]
    for model in others:
        with pytest.raises(VerificationError, match=r"^step 3 \(model\): content does not match"):
            verify_bundle(iris_call.bundle, [world.vkey], iris_call.inputs, model=model)
    with pytest.raises(VerificationError, match=r"^step 3 \(model\)"):
        verify_bundle(multi_call.bundle, [world.vkey], multi_call.inputs, model=world.iris)


def test_reexecution_with_another_model_fails_before_running(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    class NoEngine:
        def __init__(self) -> None:
            raise AssertionError("the model must be checked before anything runs")

    monkeypatch.setattr(engine, "Engine", NoEngine)
    call = world.target
    with pytest.raises(VerificationError, match=r"^step 3 \(model\)"):
        verify_bundle(call.bundle, [world.vkey], call.inputs, model=world.multi, reexecute=True)
    multi_call = world.calls[PLAN.index("multi")]
    with pytest.raises(VerificationError, match=r"^step 3 \(model\)"):
        verify_bundle(
            multi_call.bundle, [world.vkey], multi_call.inputs, model=world.iris, reexecute=True
        )


def test_reexecution_needs_model_and_inputs(world: World) -> None:
    call = world.target
    with pytest.raises(VerificationError, match=r"^step 6 \(re-execution\) needs"):
        verify_bundle(call.bundle, [world.vkey], call.inputs, reexecute=True)
    with pytest.raises(VerificationError, match=r"^step 6 \(re-execution\) needs"):
        verify_bundle(call.bundle, [world.vkey], model=call.model, reexecute=True)


@pytest.mark.parametrize("engine_name", ["here", "onnxruntime-0.0.0/CPUExecutionProvider/x"])
def test_reexecution_catches_a_lying_node(world: World, tmp_path: Path, engine_name: str) -> None:
    """A trusted node logs (and properly proves) a receipt with outputs it did not compute."""
    call = world.target
    fake = {**call.outputs, "probabilities": call.outputs["probabilities"][:, ::-1].copy()}
    with Node(tmp_path / "liar", hub=world.node.hub) as liar:
        honest = liar.infer(IRIS, call.inputs).bundle.receipt.body
        receipt = Receipt.from_bytes(
            canonical.dumps(
                {
                    **honest,
                    "outputs": tensors.map_digest(fake),
                    "engine": engine.identity() if engine_name == "here" else engine_name,
                }
            )
        )
        committed = liar.sequencer.append(receipt.data)
        bundle = Bundle(
            receipt, committed.index, tuple(committed.proof), committed.signed_checkpoint
        )
        vkey = liar.vkey
    verify_bundle(bundle, [vkey], call.inputs, fake, call.model)  # steps 1-5 cannot tell
    with pytest.raises(VerificationError, match=r"^step 5 \(outputs\)"):
        verify_bundle(bundle, [vkey], call.inputs, call.outputs, call.model, reexecute=True)
    with pytest.raises(VerificationError, match=r"^step 6 \(re-execution\): outputs here") as info:
        verify_bundle(bundle, [vkey], call.inputs, fake, call.model, reexecute=True)
    assert ("engines differ" in str(info.value)) == (engine_name != "here")


# ---------------------------------------------------------------------------------------------
# 5. inputs and outputs swapped between requests


def test_outputs_and_inputs_of_another_request(world: World) -> None:
    a, b = world.target, world.calls[TARGET + 1]
    assert PLAN[a.index] == PLAN[b.index] == "iris"
    with pytest.raises(VerificationError, match=r"^step 5 \(outputs\): the given outputs"):
        verify_bundle(a.bundle, [world.vkey], a.inputs, b.outputs, a.model)
    with pytest.raises(VerificationError, match=r"^step 4 \(inputs\): the given inputs"):
        verify_bundle(a.bundle, [world.vkey], b.inputs, a.outputs, a.model)
    with pytest.raises(VerificationError, match=r"^step 4 \(inputs\)"):
        verify_bundle(a.bundle, [world.vkey], b.inputs, b.outputs, a.model, reexecute=True)
    with pytest.raises(VerificationError, match=r"^step 5 \(outputs\)"):
        verify_bundle(a.bundle, [world.vkey], outputs=b.outputs)
    with pytest.raises(VerificationError, match=r"^step 4 \(inputs\)"):
        verify_bundle(a.bundle, [world.vkey], inputs=b.inputs)


def test_every_pair_of_requests_swapped(world: World) -> None:
    for a, b in itertools.permutations(world.calls, 2):
        assert tensors.map_digest(a.inputs) != tensors.map_digest(b.inputs)
        assert tensors.map_digest(a.outputs) != tensors.map_digest(b.outputs)
        with pytest.raises(VerificationError, match=r"^step 5 \(outputs\)"):
            verify_bundle(a.bundle, [world.vkey], a.inputs, b.outputs)
        with pytest.raises(VerificationError, match=r"^step 4 \(inputs\)"):
            verify_bundle(a.bundle, [world.vkey], b.inputs, a.outputs)


# ---------------------------------------------------------------------------------------------
# 6. a checkpoint from a shorter tree


def test_checkpoint_from_a_tree_without_the_entry(world: World) -> None:
    late = world.late[TARGET]
    variants = [
        ((size, which), bundle_json(late, checkpoint=world.checkpoints[size], proof=proof))
        for size in range(TARGET + 1)  # trees of size <= index do not hold the entry
        for which, proof in (("late", [b64(h) for h in late.proof]), ("empty", []))
    ]
    assert not misjudged(variants, [world.vkey], r"^step 2 \(inclusion\): leaf index 7 is outside")


def test_earlier_checkpoint_with_the_later_proof(world: World) -> None:
    late = world.late[TARGET]
    for size in range(TARGET + 1, world.size):
        earlier = Bundle(late.receipt, TARGET, late.proof, world.checkpoints[size])
        with pytest.raises(VerificationError, match=r"^step 2 \(inclusion\)"):
            verify_bundle(earlier, [world.vkey])
        # the earlier checkpoint with its own proof is a genuine bundle
        verify_bundle(
            Bundle(late.receipt, TARGET, world.proof(TARGET, size), world.checkpoints[size]),
            [world.vkey],
        )
        # and the later checkpoint with the earlier proof is not
        mixed = Bundle(late.receipt, TARGET, world.proof(TARGET, size), late.checkpoint)
        with pytest.raises(VerificationError, match=r"^step 2 \(inclusion\)"):
            verify_bundle(mixed, [world.vkey])


def test_every_checkpoint_with_every_proof(world: World) -> None:
    """Only the pairs (checkpoint of size s, proof for size s) verify, for every entry."""
    for index in range(world.size):
        receipt = world.calls[index].bundle.receipt
        proofs = {s: world.proof(index, s) for s in range(index + 1, world.size + 1)}
        for size, proof_size in itertools.product(world.checkpoints, proofs):
            bundle = Bundle(receipt, index, proofs[proof_size], world.checkpoints[size])
            if size == proof_size:
                verify_bundle(bundle, [world.vkey])
            elif proofs[proof_size] == proofs.get(size):
                continue  # the same hashes: the same bundle as the genuine one above
            else:
                with pytest.raises(VerificationError, match=r"^step 2 \(inclusion\)"):
                    verify_bundle(bundle, [world.vkey])


# ---------------------------------------------------------------------------------------------
# 7. malformed bundle JSON


def _evidence(text: str, raw: str) -> str:
    """The bundle text with raw JSON ``raw`` as the evidence."""
    assert '"evidence":{}' in text
    return text.replace('"evidence":{}', f'"evidence":{raw}', 1)


def _receipt(text: str, receipt: str) -> str:
    return json.dumps({**json.loads(text), "receipt": receipt})


MALFORMED: list[tuple[str, Any, str]] = [
    ("not json", lambda t: "not json", "bundle"),
    ("empty", lambda t: "", "bundle"),
    ("empty bytes", lambda t: b"", "bundle"),
    ("truncated", lambda t: t[:-1], "bundle"),
    ("trailing data", lambda t: t + "{}", "bundle"),
    ("a list", lambda t: f"[{t}]", "bundle"),
    ("null", lambda t: "null", "bundle"),
    ("a number", lambda t: "42", "bundle"),
    ("a string", json.dumps, "bundle"),
    ("duplicate key", lambda t: t.replace('{"checkpoint"', '{"index":0,"checkpoint"', 1), "bundle"),
    (
        "same key twice",
        lambda t: t.replace(f'"index":{TARGET}', f'"index":{TARGET},"index":{TARGET}'),
        "bundle",
    ),
    ("duplicate in evidence", lambda t: _evidence(t, '{"a":1,"a":1}'), "bundle"),
    ("NaN index", lambda t: t.replace(f'"index":{TARGET}', '"index":NaN'), "bundle"),
    (
        "invalid UTF-8",
        lambda t: _evidence(t, '{"\udcff":1}').encode("utf-8", "surrogateescape"),
        "bundle",
    ),
    ("deep nesting", lambda t: _evidence(t, "[" * 100_000 + "]" * 100_000), "bundle"),
    ("huge str", lambda t: _evidence(t, json.dumps("x" * MAX_BUNDLE_BYTES)), "bundle"),
    ("huge bytes", lambda t: _evidence(t, json.dumps("x" * MAX_BUNDLE_BYTES)).encode(), "bundle"),
    ("receipt not json", lambda t: _receipt(t, "{"), "receipt"),
    ("receipt empty", lambda t: _receipt(t, ""), "receipt"),
    ("receipt a list", lambda t: _receipt(t, "[]"), "receipt"),
    ("receipt NaN", lambda t: _receipt(t, "NaN"), "receipt"),
    (
        "receipt duplicate key",
        lambda t: _receipt(
            t, json.loads(t)["receipt"].replace('{"engine"', '{"mode":"attested","engine"', 1)
        ),
        "receipt",
    ),
]


@pytest.mark.parametrize(
    ("change", "what"), [(c, w) for _, c, w in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_bundle_json(world: World, change: Any, what: str) -> None:
    text = world.target.bundle.to_json()
    data = change(text)
    assert data != text
    with pytest.raises(VerificationError, match=rf"^malformed {what}"):
        Bundle.from_json(data)


def test_lone_surrogate_is_malformed_or_a_hint(world: World) -> None:
    """JSON may spell a lone surrogate; in the evidence (a hint) that must not crash."""
    text = _evidence(world.target.bundle.to_json(), '{"\\udcff":1}')
    parsed = parse_or_error(text)
    assert isinstance(parsed, Bundle) or parsed.startswith("malformed bundle")


def test_receipt_with_a_lone_surrogate_is_malformed(world: World) -> None:
    # Regression, fixed:
    # (src/verinfer/verify/bundle.py:210): JSON may spell a lone surrogate ("\ud800"); in the
    # receipt string, Bundle.from_json calls value["receipt"].encode(), which raises
    # UnicodeEncodeError instead of VerificationError("malformed receipt ..."), so a caller that
    # catches VerificationError (verify CLI, SDK) crashes on this hostile bundle.
    data = _receipt(world.target.bundle.to_json(), "{}")
    data = data.replace('"receipt": "{}"', '"receipt": "\\ud800{}"')
    assert "\\ud800" in data
    with pytest.raises(VerificationError, match=r"^malformed (receipt|bundle)"):
        Bundle.from_json(data)


def _cosignatures(text: str, raw: str) -> str:
    """The bundle text with raw JSON ``raw`` as the cosignatures."""
    assert '"cosignatures":[]' in text
    return text.replace('"cosignatures":[]', f'"cosignatures":{raw}', 1)


def _padded(text: str, nbytes: int, fill: str = "x") -> str:
    """The bundle text with a cosignature line padding it to exactly ``nbytes`` bytes of UTF-8."""
    room = nbytes - len(_cosignatures(text, '[""]').encode())
    padding = fill * (room // len(fill.encode())) + "x" * (room % len(fill.encode()))
    padded = _cosignatures(text, json.dumps([padding], ensure_ascii=False))
    assert len(padded.encode()) == nbytes
    return padded


def test_size_limit_in_bytes(world: World) -> None:
    text = world.target.bundle.to_json()
    at_limit = _padded(text, MAX_BUNDLE_BYTES)
    for data in (at_limit.encode(), at_limit):
        verify_bundle(Bundle.from_json(data), [world.vkey])  # the padding is in a hint
    over = _padded(text, MAX_BUNDLE_BYTES + 1).encode()
    with pytest.raises(VerificationError, match=r"^malformed bundle: larger than 1048576 bytes"):
        Bundle.from_json(over)


@pytest.mark.parametrize("fill", ["x", "😀"])
def test_size_limit_counts_bytes_of_text_too(world: World, fill: str) -> None:
    # Regression, fixed:
    # (src/verinfer/verify/bundle.py:176): for a str the limit compares len(data), the number
    # of code points, with MAX_BUNDLE_BYTES, so a str bundle of up to 4 MiB of UTF-8 (and one of
    # 1 MiB + 2 bytes here: the checkpoint's em dash) passes the "1048576 bytes" limit that the
    # same bundle as bytes fails. Fix: measure len(data.encode()) (or encode first).
    over = _padded(world.target.bundle.to_json(), MAX_BUNDLE_BYTES + 1, fill)
    with pytest.raises(VerificationError, match=r"^malformed bundle: larger than 1048576 bytes"):
        Bundle.from_json(over.encode())
    with pytest.raises(VerificationError, match=r"^malformed bundle: larger than 1048576 bytes"):
        Bundle.from_json(over)


@pytest.mark.parametrize(
    "name", ["type", "receipt", "index", "proof", "checkpoint", "cosignatures", "evidence"]
)
def test_bundle_field_missing(world: World, name: str) -> None:
    value = world.target.bundle.to_dict()
    del value[name]
    for data in (json.dumps(value), value):
        with pytest.raises(VerificationError, match=r"^malformed bundle: fields"):
            Bundle.from_json(data)


@pytest.mark.parametrize("extra", ["size", "root", "Type", "", "witnesses"])
def test_bundle_extra_field(world: World, extra: str) -> None:
    value = {**world.target.bundle.to_dict(), extra: 8}
    for data in (json.dumps(value), value):
        with pytest.raises(VerificationError, match=r"^malformed bundle: fields"):
            Bundle.from_json(data)


def test_receipt_time_must_be_ascii_digits(world: World) -> None:
    # Regression, fixed:
    # (src/verinfer/verify/bundle.py:28): _TIME uses \d, which in a str pattern matches every
    # Unicode decimal digit, so Receipt.from_bytes accepts a time of full-width or Arabic-Indic
    # digits that is not the documented YYYY-MM-DDTHH:MM:SS.mmmZ. Fix: [0-9] or re.ASCII.
    # (No bypass: such a receipt still has to be in the signed log, so only a node can write it.)
    body = dict(world.target.bundle.receipt.body)
    for time in ("２０２６-11-25T10:46:25.302Z", "٢٠٢٦-11-25T10:46:25.302Z"):
        with pytest.raises(VerificationError, match=r"^malformed receipt: time"):
            Receipt.from_bytes(canonical.dumps({**body, "time": time}))


# ---------------------------------------------------------------------------------------------
# 8. tensors changed by one element, one bit, one dtype or one name


def _changed(arrays: dict[str, np.ndarray], name: str, change: Any) -> dict[str, np.ndarray]:
    out = {key: value.copy() for key, value in arrays.items()}
    out[name] = change(out[name])
    return out


def _set(array: np.ndarray, index: tuple[int, ...], value: Any) -> np.ndarray:
    array[index] = value
    return array


INPUT_CHANGES: list[tuple[str, Any]] = [
    ("next float up", lambda a: _set(a, (0, 1), np.nextafter(a[0, 1], np.float32(np.inf)))),
    ("next float down", lambda a: _set(a, (0, 0), np.nextafter(a[0, 0], np.float32(-np.inf)))),
    ("minus zero", lambda a: _set(a, (0, 3), np.float32(-0.0))),
    ("smallest subnormal", lambda a: _set(a, (0, 3), np.nextafter(np.float32(0), np.float32(1)))),
    ("float64", lambda a: a.astype(np.float64)),
    ("float16", lambda a: a.astype(np.float16)),
    ("rank 1", lambda a: a.reshape(4)),
    ("rank 3", lambda a: a.reshape(1, 1, 4)),
    ("transposed", lambda a: a.T.copy()),
    ("twice", lambda a: np.concatenate([a, a])),
    ("empty", lambda a: a[:0]),
]


@pytest.mark.parametrize("change", [c for _, c in INPUT_CHANGES], ids=[n for n, _ in INPUT_CHANGES])
def test_input_tensor_changed(world: World, change: Any) -> None:
    call = world.target
    inputs = _changed(call.inputs, "X", change)
    with pytest.raises(VerificationError, match=r"^step 4 \(inputs\): the given inputs"):
        verify_bundle(call.bundle, [world.vkey], inputs, call.outputs, call.model, reexecute=True)


def test_every_bit_of_every_input_element(world: World) -> None:
    call = world.target
    raw = call.inputs["X"].tobytes()
    for _, changed in flips(raw):
        inputs = {"X": np.frombuffer(changed, np.float32).reshape(call.inputs["X"].shape)}
        with pytest.raises(VerificationError, match=r"^step 4 \(inputs\)"):
            verify_bundle(call.bundle, [world.vkey], inputs)


@pytest.mark.parametrize(
    ("outputs", "match"),
    [
        (
            lambda o: _changed(
                o, "probabilities", lambda a: _set(a, (0, 0), np.nextafter(a[0, 0], np.float32(0)))
            ),
            r"step 5",
        ),
        (lambda o: _changed(o, "probabilities", lambda a: a[:, ::-1].copy()), r"step 5"),
        (lambda o: _changed(o, "label", lambda a: a + 1), r"step 5"),
        (lambda o: _changed(o, "label", lambda a: a.astype(np.int32)), r"step 5"),
        (lambda o: _changed(o, "label", lambda a: a.astype(np.uint64)), r"step 5"),
        (lambda o: {"label": o["label"]}, r"step 5"),
        (lambda o: {**o, "extra": o["label"]}, r"step 5"),
        (lambda o: {"Label": o["label"], "probabilities": o["probabilities"]}, r"step 5"),
        (lambda o: {"label": o["probabilities"], "probabilities": o["label"]}, r"step 5"),
        (lambda o: {}, r"step 5"),
        (
            lambda o: {**o, "label": o["label"].astype(np.complex64)},
            r"step 5 \(outputs\): unsupported",
        ),
    ],
)
def test_output_tensor_changed(world: World, outputs: Any, match: str) -> None:
    call = world.target
    with pytest.raises(VerificationError, match=rf"^{match}"):
        verify_bundle(call.bundle, [world.vkey], call.inputs, outputs(call.outputs), call.model)


def test_every_bit_of_every_output_element(world: World) -> None:
    call = world.target
    for name, array in call.outputs.items():
        for _, changed in flips(array.tobytes()):
            altered = np.frombuffer(changed, array.dtype).reshape(array.shape)
            with pytest.raises(VerificationError, match=r"^step 5 \(outputs\)"):
                verify_bundle(call.bundle, [world.vkey], outputs={**call.outputs, name: altered})


def test_multi_io_tensors_changed(world: World) -> None:
    call = world.calls[PLAN.index("multi")]
    k = call.inputs["k"]
    for inputs in (
        _changed(call.inputs, "k", lambda a: a.astype(np.int32)),
        _changed(call.inputs, "k", lambda a: _set(a, (0, 0), 2)),
        {"x": call.inputs["x"]},
        {"x": call.inputs["x"], "k": k, "K": k},
    ):
        with pytest.raises(VerificationError, match=r"^step 4 \(inputs\)"):
            verify_bundle(call.bundle, [world.vkey], inputs, call.outputs, call.model)
    for outputs in (
        _changed(call.outputs, "positive", lambda a: ~a),
        _changed(call.outputs, "positive", lambda a: a.astype(np.uint8)),
        _changed(
            call.outputs, "y", lambda a: _set(a, (1, 2), np.nextafter(a[1, 2], np.float32(9)))
        ),
    ):
        with pytest.raises(VerificationError, match=r"^step 5 \(outputs\)"):
            verify_bundle(call.bundle, [world.vkey], call.inputs, outputs, call.model)


def test_same_values_in_another_memory_layout_verify(world: World) -> None:
    """Digests cover dtype, shape and values, not the memory layout: these still verify."""
    iris, multi = world.target, world.calls[PLAN.index("multi")]
    x = iris.inputs["X"]
    for layout in (np.repeat(x, 2, axis=1)[:, ::2], np.flip(np.flip(x, 1).copy(), 1)):
        assert not layout.flags.c_contiguous
        verify_bundle(
            iris.bundle, [world.vkey], {"X": layout}, iris.outputs, iris.model, reexecute=True
        )
    fortran = {**multi.inputs, "x": np.asfortranarray(multi.inputs["x"])}
    assert not fortran["x"].flags.c_contiguous
    verify_bundle(multi.bundle, [world.vkey], fortran, multi.outputs, multi.model, reexecute=True)


def test_big_endian_inputs_reexecute_like_native_ones(world: World) -> None:
    # Regression, fixed:
    # (src/verinfer/engine/__init__.py:189): Engine.run hands arrays to ONNX Runtime as they
    # are, and ORT reads a big-endian float32 array's bytes as little-endian. The digests are over
    # values (tensors.digest converts to little-endian), so step 4 accepts ">f4" inputs with the
    # right values, and then step 6 computes on garbage and rejects a genuine bundle. The node
    # side is worse (next test). Fix: convert inputs to native byte order before session.run.
    call = world.target
    big_endian = {"X": call.inputs["X"].astype(">f4")}
    assert tensors.map_digest(big_endian) == call.bundle.receipt["inputs"]
    verify_bundle(call.bundle, [world.vkey], big_endian, call.outputs, call.model)  # steps 1-5
    verify_bundle(call.bundle, [world.vkey], big_endian, call.outputs, call.model, reexecute=True)


def test_node_answers_big_endian_inputs_like_native_ones(world: World, other_node: Node) -> None:
    # Regression, fixed:
    # (same cause: src/verinfer/engine/__init__.py:189, reached from Node.infer; a ">f4" array
    # passes tensors.validate, whose dtype check compares dtype.name, and tensors.decode_binary
    # keeps the byte order of an uploaded .npy): the node logs a receipt whose inputs digest names
    # the given values but whose outputs were computed from byte-swapped ones - a false statement
    # in its signed log, which re-execution by any verifier then rejects.
    call = world.target
    result = other_node.infer(IRIS, {"X": call.inputs["X"].astype(">f4")})
    assert result.bundle.receipt["inputs"] == call.bundle.receipt["inputs"]
    assert result.bundle.receipt["outputs"] == call.bundle.receipt["outputs"]
