"""The hub's signed documents: manifests, repository changes and whole histories.

Pure document checks first (what :class:`Manifest`, :class:`Change` and :func:`verify_history`
accept and reject, and with which message), then the same guarantees through a :class:`Hub`:
blobs altered on disk, and sources that serve forged or rewritten histories to :meth:`Hub.pull`.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hub_models import sklearn_model, tiny_model

from verinfer import canonical, cid, note
from verinfer.errors import ConflictError, InputError, StorageError, VerificationError
from verinfer.hub import BlobStore, Change, Hub, Limits, Manifest, Sandbox, verify_history
from verinfer.hub.blobs import Progress
from verinfer.hub.documents import CHANGE_TYPE, MANIFEST_TYPE, sign_document
from verinfer.hub.onnxmodel import analyse

T0 = "2026-11-25T12:00:00Z"
TINY = tiny_model().SerializeToString()
M1 = cid.compute(b"manifest of 1.0")
M2 = cid.compute(b"manifest of 1.1")
M3 = cid.compute(b"another manifest")


@functools.cache
def _iris() -> tuple[bytes, dict[str, Any]]:
    """A real model and the facts the hub's analysis finds (determinism probe included)."""
    data = sklearn_model("iris")
    return data, analyse(data, cid.compute(data), Limits())


def _manifest(signer: note.Signer, repository: str = "alice/iris", **fields: Any) -> Manifest:
    data, facts = _iris()
    arguments: dict[str, Any] = {"version": "1.0", "time": T0, **fields}
    return Manifest.create(
        facts, repository=repository, model=cid.compute(data), signer=signer, **arguments
    )


def _body(document: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(document.split(b"\n", 1)[0])
    return body


def _with_body(document: bytes, text: str) -> bytes:
    """``document`` with its body line replaced by ``text`` and its signature lines kept."""
    _, signatures = document.split(b"\n\n", 1)
    return text.encode() + b"\n\n" + signatures


# ---------------------------------------------------------------------------------------------
# Manifests


def test_manifest_round_trip(alice: note.Signer) -> None:
    data, facts = _iris()
    manifest = _manifest(alice, description="Iris", license="MIT", tags=("tabular", "iris", "iris"))
    assert manifest.cid == cid.compute(manifest.data)
    again = Manifest.from_bytes(manifest.data, expected_cid=cid.compute(manifest.data))
    assert again == manifest
    assert again.body == manifest.body
    assert (again.repository, again.version) == ("alice/iris", "1.0")
    assert again.model == cid.compute(data)
    assert again.publisher == alice.vkey
    body = again.body
    assert {key: body[key] for key in facts} == facts
    assert body["determinism"]["bit_identical"] is True
    assert body["tags"] == ["iris", "tabular"]
    assert (body["type"], body["description"], body["license"], body["time"]) == (
        MANIFEST_TYPE,
        "Iris",
        "MIT",
        T0,
    )
    # the bytes: one line of canonical JSON, a blank line, alice's signature over that line
    text, signature = manifest.data.split(b"\n\n")
    assert text == canonical.dumps(body)
    assert signature.startswith("— alice ".encode())
    assert note.verify(manifest.data, [alice.vkey]).text == text.decode() + "\n"


def test_manifest_signature_does_not_verify_under_another_key_of_the_same_name(
    alice: note.Signer, mallory: note.Signer
) -> None:
    manifest = _manifest(alice)
    with pytest.raises(VerificationError, match="not signed by any trusted key"):
        note.verify(manifest.data, [mallory.vkey])


@pytest.mark.parametrize("mask", [0x01, 0x20, 0x80])
def test_every_flipped_byte_of_a_manifest_is_rejected(alice: note.Signer, mask: int) -> None:
    """Each byte of the body, the separator and the signature line, flipped in turn."""
    data = _manifest(alice).data
    for position in range(len(data)):
        mutant = bytearray(data)
        mutant[position] ^= mask
        with pytest.raises(VerificationError, match=r"^(malformed manifest|manifest signature): "):
            Manifest.from_bytes(bytes(mutant))


def _changed(name: str, value: Any, other: note.Signer) -> Any:
    """A different value of the same type for a manifest field."""
    if name == "publisher":
        return other.vkey
    if name == "model":
        return M3
    if name == "time":
        return "2026-11-25T12:00:01Z"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "2" if value else "x"
    if isinstance(value, list):
        return [*value, value[0]] if value else ["x"]
    assert isinstance(value, dict)
    return {**value, "extra": 1}


def test_every_field_changed_under_the_original_signature_is_rejected(
    alice: note.Signer, mallory: note.Signer
) -> None:
    data = _manifest(alice, tags=("iris",)).data
    body = _body(data)
    for name, value in body.items():
        changed = {**body, name: _changed(name, value, mallory)}
        assert changed != body
        forged = _with_body(data, canonical.dumps(changed).decode())
        expected = {
            "type": "not a verinfer.manifest/v1 document",
            "publisher": "manifest signature: note is not signed by any trusted key",
        }.get(name, "manifest signature: invalid signature by trusted key alice")
        with pytest.raises(VerificationError, match=expected):
            Manifest.from_bytes(forged)


def test_signature_line_altered_is_rejected(alice: note.Signer) -> None:
    data = _manifest(alice).data
    text, line = data.split(b"\n\n")
    prefix, encoded = line.rstrip(b"\n").rsplit(b" ", 1)
    raw = bytearray(base64.b64decode(encoded))
    raw[-1] ^= 0x01  # the last byte of the Ed25519 signature
    altered = prefix + b" " + base64.b64encode(bytes(raw)) + b"\n"
    with pytest.raises(VerificationError, match="invalid signature by trusted key alice"):
        Manifest.from_bytes(text + b"\n\n" + altered)
    with pytest.raises(VerificationError, match="no signature lines"):
        Manifest.from_bytes(text + b"\n\n")


def test_mallory_resigning_a_modified_manifest_under_alices_key_is_rejected(
    alice: note.Signer, mallory: note.Signer
) -> None:
    """Same key name, different key: her signature is not by the publisher key the body names."""
    body = _body(_manifest(alice).data)
    body["description"] = "now with a backdoor"
    forged = sign_document(body, mallory)
    assert body["publisher"] == alice.vkey
    with pytest.raises(
        VerificationError, match=r"manifest signature: note is not signed by any trusted key"
    ):
        Manifest.from_bytes(forged)


def test_a_manifest_proves_only_the_owner_name(alice: note.Signer, mallory: note.Signer) -> None:
    """Mallory's key is named alice, so her own manifest for alice/iris verifies by itself.

    Which *key* owns alice is settled by the repository history and the hub's pin (below).
    """
    manifest = _manifest(mallory)
    assert manifest.publisher == mallory.vkey != alice.vkey
    assert Manifest.from_bytes(manifest.data) == manifest


def test_publisher_whose_name_is_not_the_owner_is_rejected(alice: note.Signer) -> None:
    with pytest.raises(VerificationError, match=r"whose name is not the repository owner 'bob'"):
        _manifest(alice, repository="bob/iris")
    body = _body(_manifest(alice).data)
    body["repository"] = "bob/iris"
    with pytest.raises(VerificationError, match=r"not the repository owner 'bob'"):
        Manifest.from_bytes(sign_document(body, alice))


@pytest.mark.parametrize(
    "spell",
    [
        lambda body: json.dumps(body, sort_keys=True),  # ", " and ": " separators
        lambda body: json.dumps(body, separators=(",", ":")),  # keys in insertion order
        lambda body: json.dumps(body, sort_keys=True, indent=1),  # several lines
        lambda body: canonical.dumps(body).decode() + " ",  # trailing space
        lambda body: canonical.dumps(body).decode().replace('"1.0"', '"\\u0031.0"'),  # escape
        lambda body: canonical.dumps(body).decode().replace('"runs":4', '"runs":4.0'),
    ],
    ids=["spaces", "key-order", "indented", "trailing-space", "escaped", "float"],
)
def test_non_canonical_json_body_is_rejected(
    alice: note.Signer, spell: Callable[[dict[str, Any]], str]
) -> None:
    """Validly signed by alice, but not the one canonical spelling of the body."""
    body = _body(_manifest(alice).data)
    text = spell({key: body[key] for key in reversed(list(body))})
    assert text != canonical.dumps(body).decode()
    assert json.loads(text) == body  # the same JSON value
    signed = alice.sign(text + "\n").encode()
    with pytest.raises(VerificationError, match="malformed manifest: malformed canonical JSON"):
        Manifest.from_bytes(signed)


def test_unknown_extra_field_is_rejected(alice: note.Signer) -> None:
    body = _body(_manifest(alice).data)
    body["homepage"] = "https://example.com"
    with pytest.raises(VerificationError, match=r"unknown fields \['homepage'\]"):
        Manifest.from_bytes(sign_document(body, alice))


@pytest.mark.parametrize(
    "name",
    [
        "repository",
        "version",
        "model",
        "size",
        "format",
        "ir_version",
        "opsets",
        "producer",
        "inputs",
        "outputs",
        "parameters",
        "operators",
        "determinism",
        "description",
        "license",
        "tags",
        "time",
    ],
)
def test_missing_field_is_rejected(alice: note.Signer, name: str) -> None:
    body = _body(_manifest(alice).data)
    del body[name]
    with pytest.raises(VerificationError, match=rf"malformed manifest: .*{name!r}.* None"):
        Manifest.from_bytes(sign_document(body, alice))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("size", "518"),
        ("size", True),
        ("parameters", 1.5),
        ("ir_version", None),
        ("inputs", {}),
        ("determinism", []),
        ("tags", "iris"),
        ("time", "2026-11-25 12:00:00"),
        ("repository", "Alice/Iris"),
        ("version", ""),
        ("model", "bafy-not-a-cid"),
        ("model", 7),
        # nested shapes, not just top-level types
        ("tags", [1, "bad tag"]),
        ("inputs", [1, 2]),
        ("inputs", [{"name": "X", "dtype": "string", "shape": [None, 4]}]),
        ("inputs", [{"name": "X", "dtype": "float32", "shape": [-1, 4]}]),
        ("outputs", [{"name": "y", "dtype": "float32"}]),
        ("opsets", {"ai.onnx": "x"}),
        ("operators", [None]),
        ("determinism", {"bit_identical": "yes"}),
    ],
)
def test_field_of_the_wrong_type_or_form_is_rejected(
    alice: note.Signer, name: str, value: Any
) -> None:
    body = _body(_manifest(alice).data)
    body[name] = value
    with pytest.raises(VerificationError, match="malformed manifest"):
        Manifest.from_bytes(sign_document(body, alice))


@pytest.mark.parametrize("publisher", [None, 42, "alice", "alice+00000000+AAAA"])
def test_malformed_publisher_key_is_rejected(alice: note.Signer, publisher: Any) -> None:
    body = _body(_manifest(alice).data)
    body["publisher"] = publisher
    with pytest.raises(VerificationError, match="malformed manifest: bad publisher key"):
        Manifest.from_bytes(sign_document(body, alice))


def test_expected_cid_mismatch_is_rejected(alice: note.Signer) -> None:
    manifest = _manifest(alice)
    other = _manifest(alice, version="1.1")
    with pytest.raises(VerificationError, match="does not match CID"):
        Manifest.from_bytes(manifest.data, expected_cid=other.cid)
    assert Manifest.from_bytes(manifest.data, expected_cid=manifest.cid) == manifest


def test_documents_are_not_interchangeable(alice: note.Signer) -> None:
    manifest = _manifest(alice)
    change = Change.create(
        repository="alice/iris", seq=0, prev=None, signer=alice, version="1.0", manifest=M1
    )
    with pytest.raises(VerificationError, match=f"not a {MANIFEST_TYPE} document"):
        Manifest.from_bytes(change.data)
    with pytest.raises(VerificationError, match=f"not a {CHANGE_TYPE} document"):
        Change.from_bytes(manifest.data)


# ---------------------------------------------------------------------------------------------
# Repository changes and histories


def _publish(
    signer: note.Signer,
    seq: int,
    prev: str | None,
    version: str,
    manifest: str,
    repository: str = "alice/x",
) -> Change:
    return Change.create(
        repository=repository,
        seq=seq,
        prev=prev,
        signer=signer,
        version=version,
        manifest=manifest,
        time=T0,
    )


def _tag(
    signer: note.Signer,
    seq: int,
    prev: str | None,
    version: str,
    tag: str = "latest",
    repository: str = "alice/x",
) -> Change:
    return Change.create(
        repository=repository, seq=seq, prev=prev, signer=signer, version=version, tag=tag, time=T0
    )


def _chain(signer: note.Signer, repository: str = "alice/x") -> list[Change]:
    """Publish 1.0, tag latest, publish 1.1, tag latest."""
    c0 = _publish(signer, 0, None, "1.0", M1, repository)
    c1 = _tag(signer, 1, c0.cid, "1.0", repository=repository)
    c2 = _publish(signer, 2, c1.cid, "1.1", M2, repository)
    c3 = _tag(signer, 3, c2.cid, "1.1", repository=repository)
    return [c0, c1, c2, c3]


def _data(changes: list[Change]) -> list[bytes]:
    return [change.data for change in changes]


def test_valid_history_verifies_and_resolves(alice: note.Signer) -> None:
    chain = _chain(alice)
    history = verify_history("alice/x", _data(chain))
    assert history.repository == "alice/x"
    assert history.owner == alice.vkey
    assert history.changes == tuple(chain)
    assert history.head == chain[-1].cid
    assert list(history.versions.items()) == [("1.0", M1), ("1.1", M2)]
    assert history.tags == {"latest": "1.1"}
    assert history.resolve(None) == ("1.1", M2)
    assert history.resolve("latest") == ("1.1", M2)
    assert history.resolve("1.0") == ("1.0", M1)
    with pytest.raises(LookupError, match=r"^2\.0$"):
        history.resolve("2.0")
    assert verify_history("alice/x", _data(chain), owner=alice.vkey) == history


def test_every_prefix_of_a_valid_history_verifies(alice: note.Signer) -> None:
    chain = _chain(alice)
    heads = [verify_history("alice/x", _data(chain[:n])).head for n in range(len(chain) + 1)]
    assert heads == [None, *(change.cid for change in chain)]
    assert verify_history("alice/x", _data(chain[:2])).resolve(None) == ("1.0", M1)
    with pytest.raises(LookupError, match=r"^latest$"):
        verify_history("alice/x", _data(chain[:1])).resolve(None)  # no latest tag yet


def test_each_change_names_its_predecessor(alice: note.Signer) -> None:
    chain = _chain(alice)
    assert [change.body["prev"] for change in chain] == [None, *(c.cid for c in chain[:-1])]
    assert [change.body["seq"] for change in chain] == [0, 1, 2, 3]


def _rejected(changes: list[Change] | list[bytes], match: str, owner: str | None = None) -> None:
    data = [c.data if isinstance(c, Change) else c for c in changes]
    with pytest.raises(VerificationError, match=match):
        verify_history("alice/x", data, owner)


def test_reordered_changes_are_rejected(alice: note.Signer) -> None:
    c0, c1, c2, c3 = _chain(alice)
    _rejected([c1, c0, c2, c3], r"change 0 of 'alice/x' is out of place: seq 1.*reordered or cut")
    _rejected([c0, c1, c3, c2], r"change 2 of 'alice/x' is out of place: seq 3")


def test_dropped_middle_change_is_rejected(alice: note.Signer) -> None:
    c0, c1, _, c3 = _chain(alice)
    _rejected([c0, c1, c3], r"change 2 of 'alice/x' is out of place: seq 3, prev .*cut")


def test_repeated_change_is_rejected(alice: note.Signer) -> None:
    c0, *_ = _chain(alice)
    _rejected([c0, c0], r"change 1 of 'alice/x' is out of place: seq 0")


def test_change_from_another_repository_is_rejected(alice: note.Signer) -> None:
    """Even correctly numbered and linked, a change of alice/y is no change of alice/x."""
    c0, c1, _, _ = _chain(alice)
    foreign = _publish(alice, 2, c1.cid, "1.1", M2, repository="alice/y")
    _rejected([c0, c1, foreign], r"change 2 belongs to 'alice/y', not 'alice/x'")
    other = _chain(alice, "alice/y")
    _rejected([c0, c1, other[2]], r"change 2 belongs to 'alice/y'")


def test_change_linked_to_another_branch_is_rejected(alice: note.Signer) -> None:
    """Right seq, but ``prev`` names a change that is not the one before it."""
    c0, c1, c2, _ = _chain(alice)
    branch = _tag(alice, 3, c1.cid, "1.0", tag="stable")
    _rejected([c0, c1, c2, branch], r"change 3 of 'alice/x' is out of place")


def test_change_signed_by_mallory_is_rejected(alice: note.Signer, mallory: note.Signer) -> None:
    chain = _chain(alice)
    appended = _tag(mallory, 4, chain[-1].cid, "1.0")
    _rejected(
        [*chain, appended],
        re.escape(
            f"change 4 of 'alice/x' is signed by '{mallory.vkey}', not by the owner's key "
            f"'{alice.vkey}'"
        ),
    )


def test_history_written_entirely_by_mallory_verifies_only_without_a_pin(
    alice: note.Signer, mallory: note.Signer
) -> None:
    forged = _data(_chain(mallory))
    assert verify_history("alice/x", forged).owner == mallory.vkey
    _rejected(forged, r"change 0 of 'alice/x' is signed by .* not by the owner's key", alice.vkey)


def test_pinned_owner_key_must_sign_the_chain(alice: note.Signer, mallory: note.Signer) -> None:
    _rejected(
        _chain(alice),
        re.escape(
            f"change 0 of 'alice/x' is signed by '{alice.vkey}', not by the owner's key "
            f"'{mallory.vkey}'"
        ),
        owner=mallory.vkey,
    )


@pytest.mark.parametrize("manifest", [M3, M1], ids=["different-manifest", "same-manifest"])
def test_republished_version_is_rejected(alice: note.Signer, manifest: str) -> None:
    chain = _chain(alice)
    again = _publish(alice, 4, chain[-1].cid, "1.0", manifest)
    _rejected(
        [*chain, again],
        r"change 4 republishes version '1.0' of 'alice/x': published versions are immutable",
    )


def test_tag_pointing_at_an_unpublished_version_is_rejected(alice: note.Signer) -> None:
    chain = _chain(alice)
    _rejected(
        [*chain, _tag(alice, 4, chain[-1].cid, "2.0")],
        r"change 4 points tag 'latest' at unpublished version '2.0'",
    )
    _rejected([_tag(alice, 0, None, "1.0")], "unpublished version '1.0'")


def test_tampered_change_is_rejected(alice: note.Signer) -> None:
    chain = _chain(alice)
    body = _body(chain[2].data)
    body["manifest"] = M3
    _rejected(
        [chain[0], chain[1], _with_body(chain[2].data, canonical.dumps(body).decode())],
        "repository change signature: invalid signature by trusted key alice",
    )


def test_change_signed_by_a_key_not_named_after_the_owner_is_rejected(alice: note.Signer) -> None:
    with pytest.raises(VerificationError, match=r"not the repository owner 'bob'"):
        _publish(alice, 0, None, "1.0", M1, repository="bob/x")


@pytest.mark.parametrize(
    ("action", "edit", "match"),
    [
        ("publish", {"seq": True}, r"field 'seq' is True"),  # True == 1 in Python, not here
        ("publish", {"seq": "0"}, r"field 'seq' is '0'"),
        ("publish", {"prev": "not-a-cid"}, r"malformed repository change: malformed CID"),
        ("publish", {"action": "delete"}, r"action 'delete'"),
        ("publish", {"extra": 1}, r"malformed repository change: fields"),
        ("publish", {"tag": "latest"}, r"malformed repository change: fields"),
        ("publish", {"manifest": None}, r"field 'manifest' is None"),
        ("publish", {"version": "../1"}, r"malformed version '../1'"),
        ("publish", {"time": 0}, r"field 'time' is 0"),
        ("tag", {"manifest": M1}, r"malformed repository change: fields"),
        ("tag", {"tag": ""}, r"malformed tag ''"),
    ],
)
def test_malformed_change_is_rejected(
    alice: note.Signer, action: str, edit: dict[str, Any], match: str
) -> None:
    """Validly signed by alice, but not a well-formed change."""
    change = _publish(alice, 0, None, "1.0", M1) if action == "publish" else _tag(alice, 1, M1, "1")
    body = {**_body(change.data), **edit}
    with pytest.raises(VerificationError, match=match):
        Change.from_bytes(sign_document(body, alice))


def test_change_needs_exactly_one_of_manifest_and_tag(alice: note.Signer) -> None:
    with pytest.raises(InputError, match="either publishes a version"):
        Change.create(repository="alice/x", seq=0, prev=None, signer=alice, version="1")
    with pytest.raises(InputError, match="either publishes a version"):
        Change.create(
            repository="alice/x",
            seq=0,
            prev=None,
            signer=alice,
            version="1",
            manifest=M1,
            tag="latest",
        )


# ---------------------------------------------------------------------------------------------
# Through the hub: blobs altered on disk


@pytest.fixture
def published(hub: Hub, alice: note.Signer) -> Manifest:
    """alice/x@1 (TINY), published in ``hub`` by alice."""
    return hub.publish(TINY, repository="alice/x", version="1", signer=alice)


def test_clean_hub_verifies(hub: Hub, published: Manifest) -> None:
    assert hub.verify() == []
    assert hub.verify("alice/x") == []
    assert hub.resolve("alice/x") == published
    assert hub.resolve(published.cid) == published
    assert hub.resolve(published.model) == published


def test_altered_manifest_blob_is_never_served(
    hub: Hub, published: Manifest, alice: note.Signer
) -> None:
    """Even a manifest validly signed by alice does not pass for the one the history names."""
    body = _body(published.data)
    body["description"] = "rewritten on disk"
    hub.blobs.path(published.cid).write_bytes(sign_document(body, alice))
    for ref in ("alice/x", "alice/x@1", "alice/x@latest", published.cid, published.model):
        with pytest.raises(StorageError, match=rf"blob '{published.cid}' is corrupt"):
            hub.resolve(ref)
    problems = hub.verify()
    assert [problem.subject for problem in problems] == [published.cid]
    assert "is corrupt" in problems[0].message


def test_altered_change_blob_breaks_the_history(
    hub: Hub, published: Manifest, mallory: note.Signer
) -> None:
    """Replace the first change with mallory's own, validly signed, publish of the same version."""
    history = hub.history("alice/x")
    first = history.changes[0]
    forged = _publish(mallory, 0, None, "1", published.cid)
    hub.blobs.path(first.cid).write_bytes(forged.data)
    with pytest.raises(StorageError, match=rf"blob '{first.cid}' is corrupt"):
        hub.history("alice/x")
    with pytest.raises(StorageError, match=rf"blob '{first.cid}' is corrupt"):
        hub.resolve("alice/x")
    problems = hub.verify()
    assert [problem.subject for problem in problems] == ["alice/x"]
    assert f"blob {first.cid!r} is corrupt" in problems[0].message


def test_altered_model_blob_is_reported_and_not_exported(
    hub: Hub, published: Manifest, tmp_path: Path
) -> None:
    hub.blobs.path(published.model).write_bytes(tiny_model("Sigmoid").SerializeToString())
    assert [problem.subject for problem in hub.verify()] == [published.model]
    assert [problem.subject for problem in hub.verify("alice/x")] == [published.model]
    target = tmp_path / "exported.onnx"
    with pytest.raises(StorageError, match="is corrupt"):
        hub.export("alice/x", target)
    assert not target.exists()


# ---------------------------------------------------------------------------------------------
# Through the hub: pulls from sources that lie


class ForgedSource:
    """A source (a malicious mirror) serving a chosen history, and blobs from a real hub.

    With ``substitute``, it answers requests for that CID with other bytes.
    """

    def __init__(
        self,
        changes: list[bytes],
        blobs_from: Hub,
        substitute: tuple[str, bytes] | None = None,
    ) -> None:
        self.changes = changes
        self.blobs_from = blobs_from
        self.substitute = substitute
        self.copied: list[str] = []

    def change_blobs(self, repository: str) -> list[bytes]:
        del repository
        return list(self.changes)

    def copy_blob(self, blob: str, into: BlobStore, progress: Progress | None = None) -> None:
        self.copied.append(blob)
        if self.substitute is not None and self.substitute[0] == blob:
            into.put_stream(io.BytesIO(self.substitute[1]), expected=blob, progress=progress)
        else:
            self.blobs_from.copy_blob(blob, into, progress)


@pytest.fixture
def mirror(tmp_path: Path, sandbox: Sandbox) -> Iterator[Hub]:
    with Hub(tmp_path / "mirror", sandbox=sandbox) as opened:
        yield opened


@pytest.fixture
def third(tmp_path: Path, sandbox: Sandbox) -> Iterator[Hub]:
    with Hub(tmp_path / "third", sandbox=sandbox) as opened:
        yield opened


def _state(hub: Hub) -> tuple[list[str], list[str], list[bytes]]:
    changes = [blob for repository in hub.repositories() for blob in hub.change_blobs(repository)]
    return sorted(hub.blobs), hub.repositories(), changes


def test_pull_copies_and_extends_a_genuine_history(
    hub: Hub, mirror: Hub, published: Manifest, alice: note.Signer
) -> None:
    """The control for the forgeries below: an honest source is followed."""
    assert mirror.pull("alice/x", hub) == published
    assert mirror.pinned_owner("alice") == alice.vkey
    assert mirror.history("alice/x") == hub.history("alice/x")
    assert mirror.blobs.get(published.model) == TINY
    second = hub.publish(
        tiny_model("Sigmoid").SerializeToString(), repository="alice/x", version="2", signer=alice
    )
    assert mirror.pull("alice/x", hub) == second
    assert mirror.history("alice/x").head == hub.history("alice/x").head
    assert mirror.verify() == []


def test_pull_of_a_history_forged_by_mallory_is_refused(
    hub: Hub,
    mirror: Hub,
    third: Hub,
    published: Manifest,
    alice: note.Signer,
    mallory: note.Signer,
) -> None:
    """Mallory runs a mirror where *her* key published alice/x; alice's key is pinned here."""
    forged = mirror.publish(TINY, repository="alice/x", version="1", signer=mallory)
    assert forged.publisher == mallory.vkey
    before = _state(hub)
    with pytest.raises(
        VerificationError, match=r"change 0 of 'alice/x' is signed by .*not by the owner's key"
    ):
        hub.pull("alice/x", mirror)
    with pytest.raises(ConflictError, match=r"owner 'alice' is pinned here"):
        hub.pull("alice/x", mirror, trusted_owner=mallory.vkey)
    assert _state(hub) == before
    assert hub.resolve("alice/x") == published
    # a hub without a pin that is told alice's key refuses it too, and keeps nothing
    with pytest.raises(VerificationError, match=r"not by the owner's key"):
        third.pull("alice/x", mirror, trusted_owner=alice.vkey)
    assert _state(third) == ([], [], [])
    assert third.pinned_owner("alice") is None


def test_pull_of_a_genuine_history_extended_by_mallory_is_refused(
    hub: Hub, published: Manifest, mallory: note.Signer
) -> None:
    genuine = hub.change_blobs("alice/x")
    head = Change.from_bytes(genuine[-1]).cid
    appended = _tag(mallory, len(genuine), head, "1", tag="stable")
    source = ForgedSource([*genuine, appended.data], hub)
    before = _state(hub)
    with pytest.raises(
        VerificationError, match=r"change 2 of 'alice/x' is signed by .*not by the owner's key"
    ):
        hub.pull("alice/x@stable", source)
    assert _state(hub) == before
    assert source.copied == []


def test_pull_of_a_rewritten_history_is_a_fork(
    hub: Hub, published: Manifest, alice: note.Signer
) -> None:
    """Same owner key, a valid chain, but a different change at seq 1 than the one here."""
    genuine = hub.change_blobs("alice/x")
    first = Change.from_bytes(genuine[0])
    rewritten = _tag(alice, 1, first.cid, "1", tag="stable")
    latest = _tag(alice, 2, rewritten.cid, "1")
    source = ForgedSource([genuine[0], rewritten.data, latest.data], hub)
    verify_history("alice/x", source.change_blobs("alice/x"), alice.vkey)  # valid in itself
    before = _state(hub)
    with pytest.raises(
        ConflictError,
        match=rf"history of 'alice/x' differs from this hub's at change 1 .*there "
        rf"'{rewritten.cid}'\): one of them was forked",
    ):
        hub.pull("alice/x", source)
    assert _state(hub) == before


def test_pull_between_hubs_that_diverged_is_a_fork(
    hub: Hub, mirror: Hub, published: Manifest, alice: note.Signer
) -> None:
    mirror.pull("alice/x", hub)
    hub.tag("alice/x", "stable", "1", alice)
    mirror.tag("alice/x", "beta", "1", alice)
    with pytest.raises(ConflictError, match=r"differs from this hub's at change 2"):
        hub.pull("alice/x", mirror)
    with pytest.raises(ConflictError, match=r"differs from this hub's at change 2"):
        mirror.pull("alice/x", hub)
    assert hub.history("alice/x").tags == {"latest": "1", "stable": "1"}
    assert mirror.history("alice/x").tags == {"latest": "1", "beta": "1"}


def test_pull_of_a_truncated_history_is_refused(
    hub: Hub, published: Manifest, alice: note.Signer
) -> None:
    """A source serving an older state cannot roll this hub back."""
    stale = hub.change_blobs("alice/x")
    hub.tag("alice/x", "stable", "1", alice)
    before = _state(hub)
    with pytest.raises(ConflictError, match=r"at change 2 .*there None"):
        hub.pull("alice/x", ForgedSource(stale, hub))
    assert _state(hub) == before


def test_pull_of_a_substituted_manifest_is_refused(
    hub: Hub, third: Hub, published: Manifest, alice: note.Signer
) -> None:
    """The history is genuine, but the source answers for the manifest with other bytes."""
    body = _body(published.data)
    body["description"] = "substituted"
    source = ForgedSource(
        hub.change_blobs("alice/x"), hub, substitute=(published.cid, sign_document(body, alice))
    )
    with pytest.raises(VerificationError, match=rf"content does not match CID '{published.cid}'"):
        third.pull("alice/x", source, trusted_owner=alice.vkey)
    assert _state(third) == ([], [], [])
