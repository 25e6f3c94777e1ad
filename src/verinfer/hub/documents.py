"""The hub's signed documents: model manifests and repository changes. Pure: no I/O.

Both are *signed JSON documents*: a C2SP signed note whose text is one line of RFC 8785 canonical
JSON, signed by the publisher's Ed25519 key; the document's CID is the CID of the whole note's
bytes, so a CID names the body and its signature together. The JSON names its type and the
publisher's vkey; the note must carry a valid signature by exactly that key, and the key's name
must be the repository's owner. See docs/PROTOCOL.md §8.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from verinfer import cid, note
from verinfer.errors import InputError, VerificationError

__all__ = [
    "CHANGE_TYPE",
    "MANIFEST_TYPE",
    "ZK_TYPE",
    "Change",
    "History",
    "Manifest",
    "ZkAddendum",
    "check_repository",
    "check_text",
    "check_version",
    "now",
    "parse_ref",
    "sign_document",
    "verify_history",
]

MANIFEST_TYPE = "verinfer.manifest/v1"
CHANGE_TYPE = "verinfer.repository-change/v1"
ZK_TYPE = "verinfer.zk-addendum/v1"
_PART = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def now() -> str:
    """The current UTC time as the documents write it (RFC 3339, seconds, ``Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_repository(name: object) -> tuple[str, str]:
    """``(owner, model)`` of a repository name ``owner/model``; raise if malformed."""
    parts = name.split("/") if isinstance(name, str) else []
    if len(parts) != 2 or not all(_PART.fullmatch(p) for p in parts):
        raise InputError(
            f"malformed repository name {name!r}: expected owner/name, each 1-64 of a-z 0-9 . _ - "
            f"starting with a letter or digit"
        )
    return parts[0], parts[1]


def check_version(version: object, what: str = "version") -> str:
    """A version or tag string: 1-128 of ``A-Za-z0-9._+-``, starting with a letter or digit."""
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise InputError(f"malformed {what} {version!r}: use 1-128 of A-Z a-z 0-9 . _ + -")
    return version


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``owner/name[@version-or-tag]`` into ``(repository, selector or None)``."""
    repository, _, selector = ref.partition("@")
    check_repository(repository)
    if "@" in ref:
        check_version(selector, "version or tag")
        return repository, selector
    return repository, None


def sign_document(body: Mapping[str, Any], signer: note.Signer) -> bytes:
    """The signed-note bytes of a JSON document."""
    return note.sign_json(body, signer)


def _open_document(data: bytes, kind: str, expected_type: str) -> tuple[dict[str, Any], str]:
    """Parse and verify a signed JSON document: ``(body, publisher vkey)``."""
    return note.open_json(data, kind, expected_type, "publisher")


def _field(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise VerificationError(f"malformed {what}: field {name!r} is {value!r}")
    return value


def _owner_check(repository: str, publisher: str, what: str) -> None:
    owner, _ = check_repository(repository)
    if note.VerifierKey.parse(publisher).name != owner:
        raise VerificationError(
            f"{what} for {repository!r} is signed by {publisher!r}, whose name is not the "
            f"repository owner {owner!r}"
        )


# ---------------------------------------------------------------------------------------------
# Manifests


@dataclass(frozen=True)
class _Document:
    """A verified signed document: ``data`` are its exact bytes and ``cid`` names them."""

    data: bytes
    body: dict[str, Any] = field(repr=False)

    @functools.cached_property
    def cid(self) -> str:
        """The document's CID."""
        return cid.compute(self.data)


@dataclass(frozen=True)
class Manifest(_Document):
    """A verified, signed model card. ``data`` are its exact bytes and ``cid`` names them."""

    @property
    def repository(self) -> str:
        """``owner/name``."""
        return str(self.body["repository"])

    @property
    def version(self) -> str:
        """The version this manifest publishes."""
        return str(self.body["version"])

    @property
    def model(self) -> str:
        """The CID of the model bytes."""
        return str(self.body["model"])

    @property
    def publisher(self) -> str:
        """The vkey that signed the manifest."""
        return str(self.body["publisher"])

    @classmethod
    def create(
        cls,
        facts: Mapping[str, Any],
        *,
        repository: str,
        version: str,
        model: str,
        signer: note.Signer,
        description: str = "",
        license: str = "",
        tags: Sequence[str] = (),
        time: str | None = None,
        text: Mapping[str, Any] | None = None,
        finite_inputs: bool = False,
    ) -> Manifest:
        """Sign a new manifest for ``model`` from the facts the hub's analysis found.

        ``text`` is the section of a text model (tokenizer, chat template, ...; see
        :func:`check_text`). ``finite_inputs``: the publisher asks nodes to refuse inputs
        holding NaN or infinity (by default they are data like any other value); written only
        when set."""
        check_repository(repository)
        check_version(version)
        for tag in tags:
            check_version(tag, "tag")
        body = {
            "type": MANIFEST_TYPE,
            "repository": repository,
            "version": version,
            "model": model,
            **{key: facts[key] for key in _FACTS},
            **{key: facts[key] for key in _OPTIONAL_FACTS if key in facts},
            **({"finite_inputs": True} if finite_inputs else {}),
            "description": description,
            "license": license,
            "tags": sorted(set(tags)),
            "publisher": signer.vkey,
            "time": time or now(),
        }
        if text is not None:
            body["text"] = dict(text)
        return cls.from_bytes(sign_document(body, signer))

    @property
    def text(self) -> dict[str, Any] | None:
        """The ``text`` section of a text model, or ``None``."""
        found = self.body.get("text")
        return dict(found) if isinstance(found, dict) else None

    @classmethod
    def from_bytes(cls, data: bytes, expected_cid: str | None = None) -> Manifest:
        """Parse and verify a signed manifest; raise :class:`VerificationError` on any flaw.

        Checks, in order: (1) the bytes match ``expected_cid`` if given; (2) they are a signed
        note of canonical JSON of type ``verinfer.manifest/v1``; (3) signed by the publisher key
        the body names; (4) that key's name is the repository owner; (5) every field is present
        with the right type.
        """
        if expected_cid is not None:
            cid.verify(expected_cid, data)
        body, publisher = _open_document(data, "manifest", MANIFEST_TYPE)
        what = "manifest"
        try:
            check_repository(_field(body, "repository", str, what))
            check_version(_field(body, "version", str, what))
            cid.digest(_field(body, "model", str, what))
        except InputError as exc:
            raise VerificationError(f"malformed manifest: {exc}") from exc
        _owner_check(body["repository"], publisher, "manifest")
        for name, kind in _FIELD_TYPES.items():
            _field(body, name, kind, what)
        if not _TIME.fullmatch(body["time"]):
            raise VerificationError(f"malformed manifest: time {body['time']!r}")
        for name, kind in _OPTIONAL_TYPES.items():
            if name in body:
                _field(body, name, kind, what)
        if body.get("finite_inputs", True) is not True:  # absent, or true: one way to say it
            raise VerificationError(
                f"malformed manifest: field 'finite_inputs' is {body['finite_inputs']!r}"
            )
        _check_facts(body)
        if "text" in body:
            try:
                check_text(body["text"])
            except InputError as exc:
                raise VerificationError(f"malformed manifest: {exc}") from exc
        extra = (
            set(body)
            - set(_FIELD_TYPES)
            - set(_OPTIONAL_TYPES)
            - {"type", "repository", "version", "model"}
        )
        if extra:
            raise VerificationError(f"malformed manifest: unknown fields {sorted(extra)!r}")
        return cls(data, body)


_DTYPES = {
    "float16", "float32", "float64", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool",
}  # fmt: skip


def _check_facts(body: Mapping[str, Any]) -> None:
    """The nested fields of a manifest have the shapes the hub writes (not just the types)."""

    def bad(name: str) -> VerificationError:
        return VerificationError(f"malformed manifest: field {name!r} is {body[name]!r}")

    for name in ("inputs", "outputs"):
        for spec in body[name]:
            if (
                not isinstance(spec, dict)
                or set(spec) != {"name", "dtype", "shape"}
                or not isinstance(spec["name"], str)
                or spec["dtype"] not in _DTYPES
                or not (
                    spec["shape"] is None
                    or (
                        isinstance(spec["shape"], list)
                        and all(
                            d is None
                            or isinstance(d, str)
                            or (isinstance(d, int) and not isinstance(d, bool) and d >= 0)
                            for d in spec["shape"]
                        )
                    )
                )
            ):
                raise bad(name)
    if not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
        for k, v in body["opsets"].items()
    ):
        raise bad("opsets")
    if not all(isinstance(op, str) for op in body["operators"]):
        raise bad("operators")
    analysis = body.get("analysis")
    if analysis is not None and not (
        analysis and set(analysis) <= {"checker"} and isinstance(analysis.get("checker"), str)
    ):
        raise bad("analysis")
    if not all(isinstance(tag, str) and _VERSION.fullmatch(tag) for tag in body["tags"]):
        raise bad("tags")
    determinism = body["determinism"]
    if set(determinism) - _DETERMINISM or determinism.get("bit_identical") not in (
        True,
        False,
        None,
    ):
        raise bad("determinism")
    if any(
        key in determinism
        and (not isinstance(determinism[key], kind) or isinstance(determinism[key], bool))
        for key, kind in _DETERMINISM_TYPES.items()
    ) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in determinism.get("threads", [])
    ):
        raise bad("determinism")
    found = determinism.get("nondeterministic", [])
    if (
        not isinstance(found, list)
        or not all(isinstance(op, str) for op in found)
        or found != sorted(set(found))
        or (found and determinism.get("bit_identical") is not False)
    ):  # a model with a random operator is never bit-reproducible, whatever a probe saw
        raise bad("determinism")
    tolerance = determinism.get("tolerance")
    if tolerance is not None and not (
        isinstance(tolerance, dict)
        and isinstance(tolerance.get("abs"), int | float)
        and not isinstance(tolerance["abs"], bool)
        and math.isfinite(tolerance["abs"])
        and tolerance["abs"] >= 0
        and isinstance(tolerance.get("classes"), list)
        and all(isinstance(c, str) for c in tolerance["classes"])
    ):
        raise bad("determinism")


_TEXT_KINDS = {
    # kind -> required fields (besides kind) with their types
    "chat": {"tokenizer": str, "chat_template": str, "special_tokens": dict,
             "context_length": int, "source": str, "converter": str},
    "embedding": {"tokenizer": str, "pooling": str, "normalize": bool, "max_length": int,
                  "dimensions": int, "source": str, "converter": str},
}  # fmt: skip
_TEXT_LIMIT = 64 << 10  # characters of a chat template


def check_text(text: object) -> dict[str, Any]:
    """A manifest's ``text`` section (PROTOCOL.md §16): ``kind`` ``chat`` (tokenizer CID, chat
    template, special tokens, context length, source file CID, converter) or ``embedding``
    (tokenizer CID, pooling ``mean`` or ``cls``, normalize, max length, dimensions, source,
    converter). Raise :class:`InputError` naming the bad field."""
    if not isinstance(text, Mapping) or text.get("kind") not in _TEXT_KINDS:
        kind = text.get("kind") if isinstance(text, Mapping) else text
        raise InputError(f"text section: kind {kind!r} is not one of {sorted(_TEXT_KINDS)!r}")
    fields = _TEXT_KINDS[text["kind"]]
    if set(text) != {"kind", *fields}:
        raise InputError(f"text section: fields {sorted(text)!r}, expected {sorted(fields)!r}")
    for name, kind in fields.items():
        value = text[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InputError(f"text section: field {name!r} is {value!r}")
        if isinstance(value, int) and kind is int and not 0 < value <= 1 << 20:
            raise InputError(f"text section: field {name!r} is {value!r}")
    cid.digest(text["tokenizer"])
    cid.digest(text["source"])
    if text["kind"] == "chat":
        if len(text["chat_template"]) > _TEXT_LIMIT:
            raise InputError(f"text section: chat_template above {_TEXT_LIMIT} characters")
        special = text["special_tokens"]
        if set(special) - {"bos", "eos", "unknown", "padding"} or not all(
            isinstance(v, str) and 0 < len(v) <= 256 for v in special.values()
        ):
            raise InputError(f"text section: special_tokens {special!r}")
        if "eos" not in special:
            raise InputError("text section: special_tokens has no eos")
    elif text["pooling"] not in ("mean", "cls"):
        raise InputError(f"text section: pooling {text['pooling']!r} is not mean or cls")
    return dict(text)


# what ``determinism`` may hold (PROTOCOL.md §8); ``nondeterministic`` is absent only in
# manifests written before it existed, and verifiers recompute it from the model's bytes anyway
_DETERMINISM = frozenset(
    {
        "bit_identical", "nondeterministic", "runs", "threads", "seed", "engine", "error",
        "tolerance", "inputs",
    }
)  # fmt: skip
_DETERMINISM_TYPES: dict[str, type] = {
    "runs": int, "threads": list, "seed": int, "engine": str, "error": str, "inputs": str,
}  # fmt: skip
_FACTS = (
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
)
# facts the analysis writes only when there is something to say: ``analysis.checker`` is the
# ``onnx.checker`` finding the hub overrode (a failure inside a function body that ONNX Runtime
# accepts; see verinfer.hub.onnxmodel)
_OPTIONAL_FACTS = ("analysis",)
# optional fields: the optional facts, and the publisher's own declarations
_OPTIONAL_TYPES: dict[str, type] = {"analysis": dict, "finite_inputs": bool, "text": dict}
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "size": int,
    "format": str,
    "ir_version": int,
    "opsets": dict,
    "producer": str,
    "inputs": list,
    "outputs": list,
    "parameters": int,
    "operators": list,
    "determinism": dict,
    "description": str,
    "license": str,
    "tags": list,
    "publisher": str,
    "time": str,
}


# ---------------------------------------------------------------------------------------------
# Repository changes


@dataclass(frozen=True)
class Change(_Document):
    """One verified, signed change of a repository: a published version or a moved tag. The
    next change names its ``cid`` as ``prev``."""

    @classmethod
    def create(
        cls,
        *,
        repository: str,
        seq: int,
        prev: str | None,
        signer: note.Signer,
        version: str,
        manifest: str | None = None,
        tag: str | None = None,
        time: str | None = None,
    ) -> Change:
        """Sign a change: ``manifest`` publishes ``version``; ``tag`` points a tag at it."""
        if (manifest is None) == (tag is None):
            raise InputError("a change either publishes a version (manifest) or moves a tag")
        body: dict[str, Any] = {
            "type": CHANGE_TYPE,
            "repository": repository,
            "seq": seq,
            "prev": prev,
            "publisher": signer.vkey,
            "time": time or now(),
            "version": check_version(version),
        }
        if manifest is not None:
            body["action"], body["manifest"] = "publish", manifest
        else:
            body["action"], body["tag"] = "tag", check_version(tag, "tag")
        return cls.from_bytes(sign_document(body, signer))

    @classmethod
    def from_bytes(cls, data: bytes) -> Change:
        """Parse and verify one signed change (its place in a history is checked separately)."""
        body, publisher = _open_document(data, "repository change", CHANGE_TYPE)
        what = "repository change"
        try:
            check_repository(_field(body, "repository", str, what))
            check_version(_field(body, "version", str, what))
            _field(body, "seq", int, what)
            _field(body, "time", str, what)
            if body.get("prev") is not None:
                cid.digest(body["prev"])
            action = body.get("action")
            if action == "publish":
                cid.digest(_field(body, "manifest", str, what))
                expected = {"manifest"}
            elif action == "tag":
                check_version(_field(body, "tag", str, what), "tag")
                expected = {"tag"}
            else:
                raise VerificationError(f"malformed repository change: action {action!r}")
        except InputError as exc:
            raise VerificationError(f"malformed repository change: {exc}") from exc
        common = {"type", "repository", "seq", "prev", "publisher", "time", "version", "action"}
        if set(body) != common | expected:
            raise VerificationError(f"malformed repository change: fields {sorted(body)!r}")
        _owner_check(body["repository"], publisher, "repository change")
        return cls(data, body)


@dataclass(frozen=True)
class ZkAddendum(_Document):
    """A publisher's endorsement of a zero-knowledge circuit for one manifest: the CIDs of the
    circuit settings, the verification key and the SRS, signed by the manifest's publisher, so
    a verifier fetches exactly the key the publisher endorsed. Bundles name its ``cid``."""

    @staticmethod
    def manifest_named(data: bytes) -> str:
        """The manifest CID a signed addendum names (signature not yet checked: the caller
        looks the manifest up, then verifies the addendum against it)."""
        body, _ = _open_document(data, "zk addendum", ZK_TYPE)
        return str(body.get("manifest"))

    @classmethod
    def create(
        cls,
        manifest: Manifest,
        *,
        settings: str,
        vk: str,
        srs: str,
        logrows: int,
        signer: note.Signer,
        time: str | None = None,
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> ZkAddendum:
        """Sign an addendum to ``manifest`` (the signer must be its publisher). ``shapes``: the
        input shapes the circuit is built for, when the model's inputs have dimensions that
        are not fixed (bound at setup; requests of other shapes are refused)."""
        if signer.vkey != manifest.publisher:
            raise InputError("only the manifest's publisher can endorse a circuit for it")
        body = {
            "type": ZK_TYPE,
            "manifest": manifest.cid,
            "model": manifest.model,
            "settings": settings,
            "vk": vk,
            "srs": srs,
            "logrows": logrows,
            "publisher": signer.vkey,
            "time": time or now(),
            **({"shapes": {k: list(v) for k, v in shapes.items()}} if shapes else {}),
        }
        return cls.from_bytes(sign_document(body, signer), manifest)

    @classmethod
    def from_bytes(
        cls, data: bytes, manifest: Manifest, expected_cid: str | None = None
    ) -> ZkAddendum:
        """Parse and verify an addendum: signed by ``manifest``'s publisher, naming it."""
        if expected_cid is not None:
            cid.verify(expected_cid, data)
        body, publisher = _open_document(data, "zk addendum", ZK_TYPE)
        what = "zk addendum"
        fields = {"type", "manifest", "model", "settings", "vk", "srs", "logrows", "publisher",
                  "time"}  # fmt: skip
        if set(body) - {"shapes"} != fields:
            raise VerificationError(f"malformed zk addendum: fields {sorted(body)!r}")
        shapes = body.get("shapes", {})
        if (
            not isinstance(shapes, dict)
            or ("shapes" in body and not shapes)
            or not all(
                isinstance(shape, list)
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
                for shape in shapes.values()
            )
        ):
            raise VerificationError(f"malformed zk addendum: shapes {shapes!r}")
        try:
            for name in ("manifest", "model", "settings", "vk", "srs"):
                cid.digest(_field(body, name, str, what))
        except InputError as exc:
            raise VerificationError(f"malformed zk addendum: {exc}") from exc
        _field(body, "logrows", int, what)
        if publisher != manifest.publisher or body["manifest"] != manifest.cid:
            raise VerificationError(
                "the zk addendum is not endorsed by this manifest's publisher for this manifest"
            )
        if body["model"] != manifest.model:
            raise VerificationError("the zk addendum names another model than its manifest")
        return cls(data, body)


@dataclass(frozen=True)
class History:
    """A repository's verified state: who owns it, its versions and its tags."""

    repository: str
    owner: str  # the vkey every change is signed by
    changes: tuple[Change, ...]
    versions: dict[str, str]  # version -> manifest CID, in publication order
    tags: dict[str, str]  # tag -> version

    @property
    def head(self) -> str | None:
        """The CID of the latest change, or ``None`` for an empty history."""
        return self.changes[-1].cid if self.changes else None

    def publication(
        self, signer: note.Signer, version: str, manifest: str
    ) -> tuple[Change, Change]:
        """The two changes that publish ``version`` (manifest CID ``manifest``) on top of this
        history, signed by ``signer``: the version, then the ``latest`` tag moved to it."""
        published = Change.create(
            repository=self.repository, seq=len(self.changes), prev=self.head, signer=signer,
            version=version, manifest=manifest,
        )  # fmt: skip
        latest = Change.create(
            repository=self.repository, seq=len(self.changes) + 1, prev=published.cid,
            signer=signer, version=version, tag="latest",
        )  # fmt: skip
        return published, latest

    def resolve(self, selector: str | None) -> tuple[str, str]:
        """``(version, manifest CID)`` for a version or tag (default: the ``latest`` tag)."""
        selector = selector or "latest"
        version = selector if selector in self.versions else self.tags.get(selector)
        if version is None:
            raise LookupError(selector)
        return version, self.versions[version]


def verify_history(repository: str, changes: Sequence[bytes], owner: str | None = None) -> History:
    """Verify a repository's whole chain of changes; raise :class:`VerificationError`.

    (1) each change is a valid signed document for this repository; (2) change ``i`` has
    ``seq == i`` and names the CID of change ``i - 1`` as ``prev``; (3) every change is signed
    by the same key, the one in change 0, which must be ``owner`` if given (a pinned key);
    (4) a version is published once and never changes; (5) a tag points at a published version.
    """
    check_repository(repository)
    parsed: list[Change] = []
    versions: dict[str, str] = {}
    tags: dict[str, str] = {}
    prev: str | None = None
    for seq, data in enumerate(changes):
        change = Change.from_bytes(data)
        body = change.body
        if body["repository"] != repository:
            raise VerificationError(
                f"change {seq} belongs to {body['repository']!r}, not {repository!r}"
            )
        if body["seq"] != seq or body["prev"] != prev:
            raise VerificationError(
                f"change {seq} of {repository!r} is out of place: seq {body['seq']!r}, prev "
                f"{body['prev']!r} (expected {prev!r}): the history was reordered or cut"
            )
        signer = owner if owner is not None else parsed[0].body["publisher"] if parsed else None
        if signer is not None and body["publisher"] != signer:
            raise VerificationError(
                f"change {seq} of {repository!r} is signed by {body['publisher']!r}, not by the "
                f"owner's key {signer!r}"
            )
        version = body["version"]
        if body["action"] == "publish":
            if version in versions:
                raise VerificationError(
                    f"change {seq} republishes version {version!r} of {repository!r}: "
                    f"published versions are immutable"
                )
            versions[version] = body["manifest"]
        else:
            if version not in versions:
                raise VerificationError(
                    f"change {seq} points tag {body['tag']!r} at unpublished version {version!r}"
                )
            tags[body["tag"]] = version
        parsed.append(change)
        prev = change.cid
    first_owner = parsed[0].body["publisher"] if parsed else (owner or "")
    return History(repository, first_owner, tuple(parsed), versions, tags)
