"""The modes are one family: each is parsed and asked, never compared as a string; adding a
mode is adding a module; the verifier takes a trust root from one file and policy objects."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from verinfer import cid, merkle, modes, note, tensors
from verinfer.errors import InputError, VerificationError
from verinfer.modes import Claims, Evidence, Mode
from verinfer.verify import (
    AllOf,
    Bundle,
    Receipt,
    RequireMode,
    TrustRoot,
    Verifier,
    WitnessQuorum,
    verify_bundle,
)

SRC = Path(__file__).resolve().parents[2] / "src" / "verinfer"
X = {"x": np.ones(3, np.float32)}
Y = {"y": np.array([1.0, 2.0, 3.0], np.float32)}


def signer(name: str, *, cosigner: bool = False) -> note.Signer:
    return note.Signer(note.generate_key(name, cosigner=cosigner)[0])


def logged(
    key: note.Signer, mode: str, evidence: dict[str, Any] | None = None, *, replica: bool = False
) -> Bundle:
    """A receipt in ``mode``, signed and logged by ``key`` in a one-leaf tree, as JSON parsed
    back (so the mode's own evidence parser runs)."""
    receipt = Receipt.create(
        log=key.name, node=key.vkey, model=cid.compute(b"model"), manifest=None,
        inputs=tensors.map_digest(X), outputs=tensors.map_digest(Y), mode=mode,
        engine="onnxruntime-1.0/CPUExecutionProvider/opt-all/avx2",
        time="2026-01-01T00:00:00.000Z", nonce="n1",
    )  # fmt: skip
    root = merkle.root([merkle.leaf_hash(receipt.data)])
    checkpoint = key.sign(f"{key.name}\n1\n{base64.b64encode(root).decode()}\n")
    value = Bundle(receipt, 0, (), checkpoint).to_dict() | {"evidence": evidence or {}}
    return Bundle.from_json(value, replica=replica)


def test_no_mode_string_is_compared_outside_the_modes() -> None:
    pattern = re.compile(
        r"""mode"?\]? *[!=]= *f?["']|[!=]= *"(zk|attested|optimistic)|"""
        r"""mode\w*\]?\.startswith\(|mode\w*\]? +(not )?in \(["']"""
    )
    found = [
        f"{path.relative_to(SRC)}:{number}"
        for path in SRC.rglob("*.py")
        if "modes" not in path.relative_to(SRC).parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


@pytest.mark.parametrize(
    ("text", "family", "nodes", "window"),
    [
        ("attested", modes.Attested, 1, None),
        ("replicated:3", modes.Replicated, 3, None),
        ("optimistic", modes.Optimistic, 1, 0),
        ("optimistic:600", modes.Optimistic, 1, 600),
        ("zk", modes.Zk, 1, None),
    ],
)
def test_every_mode_parses_into_its_family(
    text: str, family: type[Mode], nodes: int, window: int | None
) -> None:
    mode = modes.parse(text)
    assert type(mode) is family
    assert (mode.nodes, mode.window) == (nodes, window)
    assert family in modes.FAMILY
    assert family.syntax in modes.MODES


def test_the_modes_say_what_a_node_must_do() -> None:
    assert modes.parse("optimistic").stated(86400) == "optimistic:86400"
    assert modes.parse("optimistic:600").stated(86400) == "optimistic:600"
    family = [modes.parse(t) for t in ("attested", "replicated:2", "optimistic", "zk")]
    assert [mode.rerun_judged for mode in family] == [False, True, True, False]
    assert [mode.proven for mode in family] == [False, False, False, True]
    assert modes.parse("optimistic").answers(modes.parse("optimistic:60", receipt=True))
    assert not modes.parse("optimistic:61").answers(modes.parse("optimistic:60", receipt=True))


@pytest.mark.parametrize(
    ("text", "receipt", "message"),
    [
        ("replicated:1", False, "not available"),
        ("replicated:17", False, "not available"),
        ("Attested", False, "not available"),
        ("optimistic", True, "must state its window"),
        ("optimistic:99999999", False, "longer than"),
        (7, False, "not available"),
    ],
)
def test_a_malformed_mode_is_named(text: object, receipt: bool, message: str) -> None:
    with pytest.raises(InputError, match=message):
        modes.parse(text, receipt=receipt)


# -- adding a mode is adding a module: a toy "countersigned" mode, defined here --------------


@dataclass(frozen=True)
class Countersignature(Evidence):
    line: str

    def to_dict(self) -> dict[str, Any]:
        return {"countersignature": self.line}


@dataclass(frozen=True)
class Countersigned(Mode):
    """A toy mode: a second key (the countersigner) signs the receipt's bytes as a note."""

    syntax = "countersigned"

    def evidence(self, value: object, *, replica: bool) -> Evidence:
        if not isinstance(value, dict) or set(value) != {"countersignature"}:
            raise VerificationError("malformed bundle: countersigned needs a countersignature")
        return Countersignature(str(value["countersignature"]))

    def check_evidence(self, bundle: Bundle, trusted: list[str], say: Any) -> None:
        evidence = bundle.evidence
        assert isinstance(evidence, Countersignature)
        text = base64.b64encode(bundle.receipt.data).decode() + "\n"
        try:
            note.verify(text + "\n" + evidence.line, [k for k in trusted if "counter" in k])
        except VerificationError as exc:
            raise VerificationError(f"step 2+ (countersignature): {exc}") from exc
        say("2+. the receipt is countersigned")


def test_adding_a_mode_is_adding_a_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modes, "FAMILY", (*modes.FAMILY, Countersigned))
    node, counter = signer("node.test"), signer("counter.test")
    receipt_text = base64.b64encode(logged(node, "countersigned", {"countersignature": "x"})
                                    .receipt.data).decode() + "\n"  # fmt: skip
    line = counter.sign(receipt_text).split("\n\n", 1)[1]
    bundle = logged(node, "countersigned", {"countersignature": line})
    assert isinstance(bundle.evidence, Countersignature)
    assert Bundle.from_json(bundle.to_json()) == bundle  # its evidence round-trips
    said: list[str] = []
    verify_bundle(bundle, [node.vkey, counter.vkey], X, Y, report=said.append)
    assert "2+. the receipt is countersigned" in said
    forged = signer("counter.test").sign(receipt_text).split("\n\n", 1)[1]  # another key
    with pytest.raises(VerificationError, match=r"step 2\+ \(countersignature\)"):
        verify_bundle(logged(node, "countersigned", {"countersignature": forged}),
                      [node.vkey, counter.vkey])  # fmt: skip
    with pytest.raises(VerificationError, match="needs a countersignature"):
        logged(node, "countersigned")
    monkeypatch.setattr(modes, "FAMILY", modes.FAMILY[:-1])
    with pytest.raises(VerificationError, match="unknown mode 'countersigned'"):
        Bundle.from_json(bundle.to_json())  # a verifier without the module refuses it


# -- trust and policy as objects -------------------------------------------------------------


def test_a_trust_root_is_one_file_for_every_role(tmp_path: Path) -> None:
    node, publisher = signer("node.test"), signer("alice")
    witness = signer("w.test", cosigner=True)
    root = TrustRoot.of(
        [node.vkey], witnesses=[witness.vkey], operators={witness.vkey: "acme"},
        publishers=[publisher.vkey], srs=[cid.compute(b"srs")],
    )  # fmt: skip
    path = tmp_path / "trust.json"
    path.write_text(root.to_json())
    assert TrustRoot.from_file(path) == root
    assert root.publishers_of("alice/iris") == (publisher.vkey,)
    assert root.publishers_of("bob/iris") == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "other"}, "not a verinfer.trust/v1"),
        ({"nodes": ["not a key"]}, "nodes"),
        ({"nodes": "k"}, "nodes must be a list"),
        ({"srs": ["sha256:00"]}, "srs"),
        ({"extra": 1}, "unknown fields"),
        ({"operators": {"k": 1}}, "operators must map"),
    ],
)
def test_a_malformed_trust_root_is_named(change: dict[str, Any], message: str) -> None:
    import json  # noqa: PLC0415

    value = json.loads(TrustRoot.of([signer("n.test").vkey]).to_json()) | change
    with pytest.raises(InputError, match=message):
        TrustRoot.from_json(json.dumps(value))


def test_the_verifier_takes_policies_as_objects() -> None:
    node = signer("node.test")
    w1, w2 = signer("w1.test", cosigner=True), signer("w2.test", cosigner=True)
    bundle = logged(node, "attested")
    body = bundle.checkpoint.split("\n\n")[0] + "\n"
    lines = tuple(w.signature_line(body, timestamp=1_700_000_000) for w in (w1, w2))
    cosigned = Bundle(bundle.receipt, 0, (), bundle.checkpoint, lines)
    verifier = Verifier(TrustRoot.of([node.vkey], witnesses=[w1.vkey, w2.vkey]))
    said: list[str] = []
    verifier.verify(cosigned, Claims(X, Y), AllOf([WitnessQuorum(2), RequireMode("attested")]),
                    report=said.append)  # fmt: skip
    assert said[1].startswith("1+. 2 trusted witnesses")
    assert said[-1] == "the receipt's mode attested is the one required"
    with pytest.raises(VerificationError, match="the policy needs 3"):
        Verifier(TrustRoot.of([node.vkey], witnesses=[w1.vkey, w2.vkey, signer(
            "w3.test", cosigner=True).vkey])).verify(cosigned, policy=WitnessQuorum(3))  # fmt: skip
    with pytest.raises(VerificationError, match="the policy requires 'zk'"):
        verifier.verify(cosigned, policy=RequireMode("zk"))
    with pytest.raises(VerificationError, match=r"step 1 .* not a trusted key"):
        Verifier(TrustRoot.of([signer("other.test").vkey])).verify(cosigned)


def test_the_cli_verifies_under_a_trust_root_file(tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    node = signer("node.test")
    w1, w2 = signer("w1.test", cosigner=True), signer("w2.test", cosigner=True)
    bundle = logged(node, "attested")
    body = bundle.checkpoint.split("\n\n")[0] + "\n"
    lines = tuple(w.signature_line(body, timestamp=1_700_000_000) for w in (w1, w2))
    (tmp_path / "bundle.json").write_text(
        Bundle(bundle.receipt, 0, (), bundle.checkpoint, lines).to_json()
    )
    (tmp_path / "trust.json").write_text(
        TrustRoot.of([node.vkey], witnesses=[w1.vkey, w2.vkey]).to_json()
    )
    (tmp_path / "other.json").write_text(TrustRoot.of([signer("other.test").vkey]).to_json())
    command = [sys.executable, "-c", "from verinfer.cli import main; main()", "verify",
               "bundle.json", "--quorum", "2", "--trust"]  # fmt: skip
    good = subprocess.run([*command, "trust.json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert "1+. 2 trusted witnesses cosigned" in good.stdout
    bad = subprocess.run([*command, "other.json"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, check=False)  # fmt: skip
    assert bad.returncode == 1
    assert "needs --witnesses FILE (or witnesses in the trust root)" in bad.stderr
    (tmp_path / "empty.json").write_text(TrustRoot.of(witnesses=[w1.vkey]).to_json())
    empty = subprocess.run([*command, "empty.json"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=120, check=False)  # fmt: skip
    assert empty.returncode == 1
    assert "lists no node keys" in empty.stderr


def test_evidence_of_another_mode_or_short_evidence_is_refused() -> None:
    from verinfer.modes.replicated import Agreement  # noqa: PLC0415
    from verinfer.modes.zk import ZkProof  # noqa: PLC0415
    from verinfer.verify import verify_bundle as check  # noqa: PLC0415

    a, b, c = signer("a.test"), signer("b.test"), signer("c.test")
    keys = [a.vkey, b.vkey, c.vkey]
    attested = logged(a, "attested")
    other = logged(c, "attested")
    built = Bundle(attested.receipt, 0, (), attested.checkpoint, (), Agreement((other,)))
    with pytest.raises(VerificationError, match="attested bundle cannot carry Agreement"):
        check(built, keys)
    parts = [logged(k, "replicated:3", replica=True).to_dict() for k in (b, c)]
    three = logged(a, "replicated:3", {"replicas": parts})
    check(three, keys, X, Y)
    short = Bundle(three.receipt, 0, (), three.checkpoint, (), Agreement(three.replicas[:1]))
    with pytest.raises(VerificationError, match="needs 2 replica bundles, the bundle carries 1"):
        check(short, keys)
    lone = logged(a, "replicated:3", replica=True)
    check(lone, keys)  # one node's part verifies as what it is ...
    with pytest.raises(VerificationError, match="one node's part of a replicated:3 answer"):
        Verifier(TrustRoot.of(keys)).verify(lone, policy=RequireMode("replicated:3"))
    Verifier(TrustRoot.of(keys)).verify(three, policy=RequireMode("replicated:3"))
    zk = logged(a, "zk", {"zk": {"addendum": cid.compute(b"a"), "proof": "{}"}})
    assert isinstance(zk.evidence, ZkProof)
    bare = Bundle(zk.receipt, 0, (), zk.checkpoint)
    with pytest.raises(VerificationError, match="zk bundle cannot carry Evidence"):
        check(bare, keys)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"type": "verinfer.trust/v1", "type": "verinfer.trust/v1"}', "given twice"),
        ('{"type": "verinfer.trust/v1", "nodes": ' + "[" * 5000 + "]" * 5000 + "}", "not JSON"),
    ],
)
def test_a_trust_root_that_is_not_plain_json_is_refused(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        TrustRoot.from_json(text)


def test_a_trust_root_without_nodes_never_falls_back_to_first_use(tmp_path: Path) -> None:
    from verinfer.client import Client  # noqa: PLC0415

    empty = TrustRoot.of(publishers=[signer("alice").vkey])
    with pytest.raises(InputError, match="the trust root lists no node keys"):
        Client("http://127.0.0.1:9", trust=empty, known_nodes=tmp_path / "k.json")
