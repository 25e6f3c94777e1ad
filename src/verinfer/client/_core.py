"""The client core: every SDK call written once, as a flow that does no network I/O.

A flow is a generator. It yields :class:`Call` (an HTTP request; the driver sends back the
:class:`httpx.Response`, or the :class:`httpx.HTTPError` it raised), :class:`Sleep` (the driver
waits) or :class:`Work` (blocking local work such as hashing a file or checking a zk proof; the
driver runs it, in a thread if it is async), and returns the call's verified result. Every
decision that needs no I/O is made here, so :class:`~verinfer.client.Client` and
:class:`~verinfer.client.AsyncClient` only drive flows and cannot drift apart (httpx's
``Auth.auth_flow`` has the same shape).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

from verinfer import cid, merkle, modes, note, tensors
from verinfer.client._trust import NodeKeys, Publishers
from verinfer.errors import (
    AuthError,
    ConflictError,
    Error,
    InputError,
    LimitExceeded,
    NotFound,
    StorageError,
    VerificationError,
)
from verinfer.hub.documents import (
    Manifest,
    check_repository,
    check_text,
    check_version,
    parse_ref,
    verify_history,
)
from verinfer.modes.dispute import Verdict, verify_verdict
from verinfer.verify import AcceptPromise, Bundle, mode_matches, replicas_of, verify_bundle
from verinfer.verify.evidence import broken_promise, verify_evidence
from verinfer.verify.promise import Promise, open_promise

__all__ = ["BrokenPromiseError", "Call", "Core", "Flow", "NetworkError", "Result", "Sleep", "Work"]

T = TypeVar("T")


class BrokenPromiseError(VerificationError):
    """A node broke a signed promise: ``evidence`` is the document that proves it offline
    (``verinfer evidence verify``; submit it to witnesses and auditors)."""

    def __init__(self, message: str, evidence: dict[str, Any]) -> None:
        super().__init__(message)
        self.evidence = evidence


class NetworkError(Error):
    """The node could not be reached, or kept failing after the retries."""


@dataclass(frozen=True)
class Call:
    """An HTTP request a flow asks its driver to send (``upload``: a file streamed as the body)."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    upload: Path | None = None
    headers: Mapping[str, str] | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Sleep:
    """Wait this many seconds."""

    seconds: float


@dataclass(frozen=True)
class Work:
    """Blocking local work; the driver sends back what ``function()`` returns."""

    function: Callable[[], Any]


Step = Call | Sleep | Work
Flow = Generator[Step, Any, T]
"""A call written once: yields steps for a driver, returns the verified result."""


@dataclass(frozen=True)
class Result:
    """A verified answer: the outputs, the bundle that proves them, the manifest's CID, and the
    capabilities the node returned to read its stored tensors (digest -> token; may be empty)."""

    outputs: dict[str, np.ndarray]
    bundle: Bundle
    manifest: str
    capabilities: dict[str, str] = field(default_factory=dict)


_BY_CODE: dict[str, type[Error]] = {
    "unauthorized": AuthError,
    "not_found": NotFound,
    "conflict": ConflictError,
    "over_limit": LimitExceeded,
    "verification_failed": VerificationError,
    "bad_input": InputError,
    "invalid_request": InputError,
    "storage_unavailable": StorageError,
}
_RETRY_STATUS = {502, 503, 504}
_MAX_RETRY_DELAY = 5.0
_BINARY_FROM = 64 << 10  # inputs of this many bytes or more are sent as .npz
_KEPT_BLOBS = 16  # zk materials kept by CID (an SRS is megabytes)
_KEPT_MANIFESTS = 256


def file_cid(path: Path) -> str:
    """The CID of a file's bytes, read in chunks."""
    hasher = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                hasher.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc.strerror}") from exc
    return cid.from_digest(hasher.digest())


def _retry_after(response: httpx.Response, default: float) -> float:
    """The server's Retry-After in seconds, capped: a node cannot park its clients."""
    value = response.headers.get("retry-after", "")
    if value.isascii() and value.isdigit():
        return min(float(value), _MAX_RETRY_DELAY)
    return default


def checked(response: httpx.Response, url: str) -> httpx.Response:
    """The response if it succeeded; otherwise the verinfer error its JSON body names."""
    if response.is_success:
        return response
    try:
        body = response.json()
        code, message = str(body["code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:200]
    kind = _BY_CODE.get(code, NetworkError)
    raise kind(f"{message} (HTTP {response.status_code} from {url})")


def json_of(response: httpx.Response) -> Any:
    """The response's JSON; :class:`NetworkError` if it is not JSON."""
    try:
        return response.json()
    except ValueError as exc:
        raise NetworkError(f"{response.url} answered something that is not JSON") from exc


def _peers(response: httpx.Response) -> list[str]:
    answer = json_of(response)
    peers = answer.get("peers") if isinstance(answer, dict) else None
    if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
        raise NetworkError(f"{response.url} answered a malformed peer list")
    return peers


def _infer_request(
    model: str,
    inputs: Mapping[str, Any],
    mode: str,
    nonce: str | None,
    audit: str,
    *,
    durability: str = "durable",
) -> tuple[Call, str]:
    """The request of an inference, and its nonce. Large inputs travel as an ``.npz`` body
    instead of base64 inside JSON; plain lists travel as they are, typed by the node from the
    model's signature. ``audit`` and ``durability`` are sent only when they are not the
    default."""
    nonce = nonce or secrets.token_hex(16)
    extra = {} if audit == "private" else {"audit": audit}
    if durability != "durable":
        extra["durability"] = durability
    arrays = {k: v for k, v in inputs.items() if isinstance(v, np.ndarray)}
    if len(arrays) < len(inputs) or sum(a.nbytes for a in arrays.values()) < _BINARY_FROM:
        body = {
            "model": model,
            "inputs": {
                name: tensors.encode_json({name: value}, raw=True)[name]
                if isinstance(value, np.ndarray)
                else value
                for name, value in inputs.items()
            },
            "mode": mode,
            "nonce": nonce,
            **extra,
        }
        return Call("POST", "/v1/infer", json=body), nonce
    return Call(
        "POST",
        "/v1/infer/npz",
        params={"model": model, "mode": mode, "nonce": nonce, **extra},
        content=tensors.encode_binary(inputs),
        headers={"content-type": "application/x-npz"},
    ), nonce


def _parse_answer(
    response: httpx.Response, url: str, mode: str
) -> tuple[Bundle, dict[str, np.ndarray], dict[str, str]]:
    """The bundle, outputs and capabilities of an answer (not yet verified)."""
    try:
        answer = response.json()
        bundle = Bundle.from_json(answer["bundle"], replica=replicas_of(mode) > 1)
        outputs = tensors.decode_json(answer["outputs"])
        capabilities = answer.get("capabilities", {})
        if not isinstance(capabilities, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in capabilities.items()
        ):
            raise ValueError(f"capabilities {capabilities!r} are not digest -> token strings")
    except (ValueError, KeyError, TypeError, AttributeError, InputError) as exc:
        raise VerificationError(f"malformed answer from {url}: {exc}") from exc
    return bundle, outputs, dict(capabilities)


def _check_claims(model: str, bundle: Bundle, nonce: str, mode: str, audit: str) -> None:
    """The receipt answers this request: the content asked for (by CID), the nonce, the mode,
    and who may read its tensors (a node that signed a public request as private would escape
    the audits its requester asked for; one that signed a private request as public would
    publish the requester's data)."""
    receipt = bundle.receipt
    if receipt["audit"] != audit:
        raise VerificationError(
            f"asked for {audit} tensors, but the receipt states {receipt['audit']!r}"
        )
    if "/" not in model and model not in (receipt["model"], receipt["manifest"]):
        raise VerificationError(
            f"asked for {model!r}, but the receipt names model {receipt['model']!r} "
            f"(manifest {receipt['manifest']!r}): another model answered"
        )
    if receipt["nonce"] != nonce:
        raise VerificationError(
            f"the receipt carries nonce {receipt['nonce']!r}, not the {nonce!r} sent: "
            f"a replayed answer"
        )
    if not mode_matches(mode, receipt["mode"]):
        raise VerificationError(f"asked for mode {mode!r}, got {receipt['mode']!r}")


def check_named(model: str, history_owner: str, version: str, manifest: Manifest,
                bundle: Bundle) -> None:  # fmt: skip
    """(named refs) the receipt's manifest is the signed manifest the owner's history resolves
    ``model`` to: that repository, that version, that publisher, the receipt's model."""
    repository, _ = parse_ref(model)
    receipt = bundle.receipt
    if (
        manifest.repository != repository
        or manifest.version != version
        or manifest.publisher != history_owner
        or manifest.model != receipt["model"]
    ):
        raise VerificationError(
            f"asked for {model!r} ({repository}@{version}), but the answer's manifest is "
            f"{manifest.repository}@{manifest.version} by {manifest.publisher!r} (model "
            f"{receipt['model']!r}): another model answered"
        )


class Core:
    """The state and the flows of a client of one node; drivers send what the flows yield."""

    def __init__(
        self,
        url: str,
        *,
        nodes: NodeKeys,
        publishers: Publishers,
        retries: int = 3,
        admin_token: str | None = None,
        trusted_srs: Iterable[str] = (),
        allow_insecure_srs: bool = False,
        timeout: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.nodes = nodes
        self.publishers = publishers
        self.retries = retries
        self.timeout = timeout
        self.admin = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self.trusted_srs = list(trusted_srs)  # SRS CIDs zk proofs may rest on
        self.allow_insecure_srs = allow_insecure_srs  # development: a locally made SRS
        self.vkey: str | None = None
        self.blobs: dict[str, bytes] = {}  # zk materials by CID, hash-checked when fetched
        self.manifests: dict[str, bytes] = {}  # signed manifests by CID, checked when used

    # -- the one place where HTTP outcomes become verinfer errors --------------------------------

    def attempt(self, call: Call) -> Flow[httpx.Response]:
        """One try, whatever its status; a transport failure is a :class:`NetworkError`."""
        outcome = yield call
        if isinstance(outcome, httpx.HTTPError):
            raise NetworkError(
                f"{call.method} {self.url}{call.path} failed: {outcome}"
            ) from outcome
        response: httpx.Response = outcome
        return response

    def send(self, call: Call) -> Flow[httpx.Response]:
        """``call`` with retries on transport failures and 502/503/504 (after the server's
        Retry-After, capped), then the response, or the error its JSON body names."""
        delay = 0.1
        attempt = 0
        while True:
            outcome = yield call
            if isinstance(outcome, httpx.HTTPError):
                if attempt == self.retries:
                    raise NetworkError(
                        f"{call.method} {self.url}{call.path} failed: {outcome}"
                    ) from outcome
            else:
                response: httpx.Response = outcome
                if response.status_code not in _RETRY_STATUS or attempt == self.retries:
                    return checked(response, self.url)
                delay = _retry_after(response, delay)
            yield Sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_DELAY)
            attempt += 1

    # -- trust ----------------------------------------------------------------------------------

    def node_vkey(self) -> Flow[str]:
        """The node's key, checked against the trusted keys or pinned on first use."""
        if self.vkey is None:
            answer = json_of((yield from self.send(Call("GET", "/v1/node"))))
            vkey = answer.get("vkey") if isinstance(answer, dict) else None
            self.vkey = self.nodes.check(self.url, vkey)
        return self.vkey

    def manifest(self, manifest_cid: str) -> Flow[Manifest]:
        """A signed manifest by CID (kept: a CID names one document forever)."""
        data = self.manifests.get(manifest_cid)
        if data is None:
            data = (yield from self.send(Call("GET", f"/v1/manifests/{manifest_cid}"))).content
        try:
            manifest = Manifest.from_bytes(data, manifest_cid)
        except VerificationError as exc:
            raise VerificationError(f"the manifest of the answer does not verify: {exc}") from exc
        if len(self.manifests) >= _KEPT_MANIFESTS:
            self.manifests.pop(next(iter(self.manifests)))
        self.manifests[manifest_cid] = data
        return manifest

    def named(self, model: str, bundle: Bundle) -> Flow[None]:
        """(named refs) Resolve ``model`` here, from the repository's signed history verified
        under a publisher key this client trusts for the owner, and require the receipt's
        manifest to be exactly the one it resolves to: a version asked for is that version; no
        version (or a tag) is what the owner's verified history says now."""
        repository, selector = parse_ref(model)
        found = json_of(
            (yield from self.send(Call("GET", f"/v1/repositories/{repository}/changes")))
        )
        try:
            changes = [str(c).encode() for c in found["changes"]]
        except (KeyError, TypeError) as exc:
            raise VerificationError(f"malformed history of {repository!r} from {self.url}") from exc
        history = self.publishers.history(repository, changes)
        try:
            version, manifest_cid = history.resolve(selector)
        except LookupError:
            raise VerificationError(
                f"asked for {model!r}, but the owner's signed history of {repository!r} has no "
                f"version or tag {selector or 'latest'!r}: the node answered something else"
            ) from None
        receipt = bundle.receipt
        if receipt["manifest"] != manifest_cid:
            raise VerificationError(
                f"asked for {model!r}, which the owner's signed history resolves to "
                f"{repository}@{version} (manifest {manifest_cid}), but the receipt names manifest "
                f"{receipt['manifest']!r}: another model answered"
            )
        manifest = yield from self.manifest(manifest_cid)
        check_named(model, history.owner, version, manifest, bundle)

    # -- inference ------------------------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        mode: str,
        nonce: str | None,
        audit: str = "private",
        single: bool = True,
        durability: str = "durable",
    ) -> Flow[Result]:
        """Run ``model`` on the node; return outputs whose bundle has been verified here: under
        a trusted node key, for exactly these inputs and outputs, the nonce sent and the mode
        asked; a ref by CID answered by that content; a named ref answered by the manifest the
        owner's signed history resolves it to (under a trusted publisher key); for ``zk``, the
        proof under the circuit a trusted publisher endorsed. ``single``: refuse modes that
        need several nodes (a :class:`~verinfer.client.Network` asks each node for its part).
        ``audit="public"`` lets anyone read this request's tensors (by default only the
        requester, through the answer's capabilities, and the operator's auditors).
        ``durability="promise"``: the node may answer with its signed promise to log the
        receipt (verified as such); :meth:`upgrade` turns it into the logged bundle."""
        if replicas_of(mode) > 1 and single:
            raise InputError(f"mode {mode!r} asks several nodes: use a Network (--network)")
        if durability not in ("durable", "promise"):
            raise InputError(f"durability {durability!r} is not one of durable, promise")
        vkey = yield from self.node_vkey()
        for name, value in inputs.items():
            if not isinstance(value, np.ndarray) and not tensors.is_plain(value):
                raise InputError(
                    f"input {name!r} is a {type(value).__name__}: give a numpy array or nested "
                    "lists (typed by the model's signature)"
                )
        call, nonce = _infer_request(model, inputs, mode, nonce, audit, durability=durability)
        response = yield from self.send(call)
        bundle, outputs, capabilities = _parse_answer(response, self.url, mode)
        if bundle.promised and durability != "promise":
            raise VerificationError(
                "asked for a durable answer, but the node answered a promise: its receipt is "
                "not in its log"
            )
        accept = AcceptPromise() if durability == "promise" else None
        if not all(isinstance(value, np.ndarray) for value in inputs.values()):
            # plain lists: typed here as the node typed them, by the signature of the manifest
            # the receipt names (checked below to be the model asked for); the digest in the
            # signed receipt must then be of exactly these tensors
            if bundle.receipt["manifest"] is None:
                raise VerificationError(
                    "the receipt names no manifest, so the plain lists sent cannot be typed"
                )
            typed = yield from self.manifest(str(bundle.receipt["manifest"]))
            inputs = tensors.from_plain(inputs, typed.body["inputs"])
        if modes.parse(bundle.receipt["mode"], receipt=True).proven:
            policy = yield from self.zk_policy(bundle)
            yield Work(
                lambda: verify_bundle(
                    bundle, [vkey], inputs, outputs, accept_promise=accept, **policy
                )
            )
        else:
            verify_bundle(bundle, [vkey], inputs=inputs, outputs=outputs, accept_promise=accept)
        _check_claims(model, bundle, nonce, mode, audit)
        if "/" in model:
            yield from self.named(model, bundle)
        elif bundle.receipt["manifest"] is not None:  # a ref by CID: the manifest the receipt
            # names is of the model it names (asked by manifest CID, the receipt could name
            # that manifest and another model's answer)
            manifest = yield from self.manifest(str(bundle.receipt["manifest"]))
            if manifest.model != bundle.receipt["model"]:
                raise VerificationError(
                    f"the receipt names manifest {bundle.receipt['manifest']!r}, which is of "
                    f"model {manifest.model!r}, and model {bundle.receipt['model']!r}: another "
                    "model answered"
                )
        return Result(outputs, bundle, str(bundle.receipt["manifest"] or ""), capabilities)

    # -- zero knowledge -------------------------------------------------------------------------

    def kept(self, blob: str) -> Flow[bytes]:
        """:meth:`blob`, remembered: a few materials (an SRS is megabytes) serve many answers."""
        data = self.blobs.get(blob)
        if data is None:
            data = yield from self.blob(blob)
            if len(self.blobs) >= _KEPT_BLOBS:
                self.blobs.pop(next(iter(self.blobs)))
            self.blobs[blob] = data
        return data

    def zk_materials(self, bundle: Bundle) -> Flow[dict[str, bytes]]:
        """The circuit materials a zk bundle names (addendum, manifest, settings, verification
        key, SRS), fetched by CID and hash-checked (and kept: content never changes under its
        CID); the verifier checks what they are."""
        manifest = str(bundle.receipt["manifest"])
        found = {manifest: (yield from self.manifest(manifest)).data}
        found[bundle.zk_addendum] = yield from self.kept(bundle.zk_addendum)
        try:
            addendum = json.loads(note.parse(found[bundle.zk_addendum])[0])
            names = [addendum[name] for name in ("settings", "vk", "srs")]
        except (ValueError, KeyError, TypeError, VerificationError) as exc:
            raise VerificationError(f"malformed zk addendum from {self.url}: {exc}") from exc
        for name in names:
            found[name] = yield from self.kept(name)
        return found

    def zk_policy(self, bundle: Bundle) -> Flow[dict[str, Any]]:
        """What :func:`verify_bundle` needs for a zk answer: the materials, and the publisher
        keys this client trusts for the manifest's owner (who may endorse its circuit)."""
        materials = yield from self.zk_materials(bundle)
        try:
            manifest = Manifest.from_bytes(
                materials[str(bundle.receipt["manifest"])], bundle.receipt["manifest"]
            )
        except VerificationError as exc:
            raise VerificationError(f"the manifest of the answer does not verify: {exc}") from exc
        owner = manifest.repository.split("/")[0]
        return {
            "zk_materials": materials,
            "zk_publishers": self.publishers.keys_for(owner, manifest.publisher),
            "trusted_srs": self.trusted_srs,
            "allow_insecure_srs": self.allow_insecure_srs,
        }

    def publish_zk(self, addendum: bytes, materials: Iterable[bytes]) -> Flow[str]:
        """Publish a zk addendum signed elsewhere, after uploading its materials (settings,
        verification key, SRS); returns the addendum's CID as the node stored it."""
        for data in materials:
            uploaded = json_of((yield from self.send(Call("PUT", "/v1/blobs", content=data))))
            if uploaded.get("cid") != cid.compute(data):
                raise VerificationError(
                    f"the node stored {uploaded.get('cid')!r} for a zk material"
                )
        answer = json_of((yield from self.send(Call("POST", "/v1/zk/addenda", content=addendum))))
        if answer.get("addendum") != cid.compute(addendum):
            raise VerificationError("the node did not keep the zk addendum sent")
        return str(answer["addendum"])

    # -- the hub --------------------------------------------------------------------------------

    def publish(
        self,
        model: str | Path | bytes,
        *,
        repository: str,
        version: str,
        signer: note.Signer,
        description: str = "",
        license: str = "",  # the manifest's field name
        tags: tuple[str, ...] = (),
        calibrate: bool = False,
        text: Mapping[str, Any] | None = None,
        tokenizer: bytes | None = None,
        finite_inputs: bool = False,
    ) -> Flow[Manifest]:
        """Upload a model and publish it as ``repository@version``, signed here by ``signer``.

        The node checks the model in its sandbox and answers the facts; the manifest and the
        repository changes are signed locally (the key never leaves this process) on top of the
        node's history, which must verify under ``signer``'s key.
        """
        owner, _ = check_repository(repository)
        check_version(version)
        if signer.name != owner:
            raise InputError(
                f"repository {repository!r} belongs to owner {owner!r}, but the signing key is "
                f"named {signer.name!r}"
            )
        # (1) upload, streamed from disk; the node must name the bytes we hashed
        if isinstance(model, bytes):
            expected = cid.compute(model)
            upload = Call("PUT", "/v1/blobs", content=model)
        else:
            path = Path(model)
            expected = yield Work(lambda: file_cid(path))
            upload = Call("PUT", "/v1/blobs", upload=path)
        uploaded = json_of((yield from self.send(upload))).get("cid")
        if uploaded != expected:
            raise VerificationError(f"the node stored {uploaded!r} for a model of CID {expected!r}")
        # (2) the node's analysis, (3) documents signed here, (4) on top of the node's history
        params = {"calibrate": "true"} if calibrate else {}
        facts = json_of(
            (
                yield from self.send(  # calibrating needs the node's admin token
                    Call(
                        "POST", f"/v1/blobs/{expected}/analysis", params=params, headers=self.admin
                    )
                )
            )
        )
        if (text is None) != (tokenizer is None):
            raise InputError("a text model is published with both its text section and tokenizer")
        if text is not None and tokenizer is not None:  # (2+) the tokenizer blob, by CID
            stored = json_of((yield from self.send(Call("PUT", "/v1/blobs", content=tokenizer))))
            if stored.get("cid") != cid.compute(tokenizer):
                raise VerificationError(f"the node stored {stored.get('cid')!r} for the tokenizer")
            text = check_text({**text, "tokenizer": stored["cid"]})
        manifest = Manifest.create(
            facts,
            repository=repository,
            version=version,
            model=expected,
            signer=signer,
            description=description,
            license=license,
            tags=tags,
            text=text,
            finite_inputs=finite_inputs,
        )
        found = json_of(
            (yield from self.send(Call("GET", f"/v1/repositories/{repository}/changes")))
        )["changes"]
        history = verify_history(repository, [c.encode() for c in found], signer.vkey)
        published, latest = history.publication(signer, version, manifest.cid)
        body = {
            "manifest": manifest.data.decode(),
            "changes": [published.data.decode(), latest.data.decode()],
        }
        answer = yield from self.send(
            Call("POST", f"/v1/repositories/{repository}/changes", json=body)
        )
        if json_of(answer).get("manifest") != manifest.cid:
            raise VerificationError(f"the node did not publish manifest {manifest.cid!r}")
        return manifest

    def models(
        self, *, owner: str | None = None, tag: str | None = None, text: str | None = None
    ) -> Flow[list[dict[str, Any]]]:
        """The node's published models, newest first (as the node lists them: not verified)."""
        params = {k: v for k, v in {"owner": owner, "tag": tag, "q": text}.items() if v}
        found = json_of((yield from self.send(Call("GET", "/v1/models", params=params))))
        if not isinstance(found, list):
            raise NetworkError(f"{self.url} answered a malformed model list")
        return found

    def blob(self, blob: str) -> Flow[bytes]:
        """A blob (a model's bytes) by CID, checked against the CID here."""
        cid.digest(blob)  # a malformed CID is an InputError before any request
        data = (yield from self.send(Call("GET", f"/v1/blobs/{blob}"))).content
        cid.verify(blob, data)
        return data

    # -- the log --------------------------------------------------------------------------------

    def checkpoint(self, since: str | None = None) -> Flow[str]:
        """The node's latest signed checkpoint, verified against its key; with ``since`` (an
        earlier signed checkpoint of this node), also proven to extend it."""
        vkey = yield from self.node_vkey()
        signed = (yield from self.send(Call("GET", "/v1/log/checkpoint"))).text
        new, _ = note.verify_checkpoint(signed, [vkey])
        if since is None:
            return signed
        old, _ = note.verify_checkpoint(since, [vkey])
        if old.origin != new.origin or old.size > new.size:
            raise VerificationError(
                f"{self.url} answered checkpoint {new.origin} size {new.size}, which cannot "
                f"extend {old.origin} size {old.size}"
            )
        answer = json_of(
            (
                yield from self.send(
                    Call(
                        "GET",
                        "/v1/log/proof/consistency",
                        params={"old": old.size, "size": new.size},
                    )
                )
            )
        )
        try:
            proof = [base64.b64decode(h, validate=True) for h in answer["proof"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise VerificationError(f"malformed consistency proof from {self.url}: {exc}") from exc
        merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
        return signed

    def cosigned(
        self,
        bundle: Bundle,
        witnesses: Iterable[str],
        quorum: int,
        *,
        timeout: float,
        operators: Mapping[str, str] | None = None,
    ) -> Flow[Bundle]:
        """``bundle`` proven against a checkpoint that ``quorum`` of ``witnesses`` of distinct
        operators other than the log's cosigned (``operators``: whose each key is, as in
        ``verify_bundle``), polling until the node has gathered the cosignatures
        (:class:`LimitExceeded` after ``timeout`` seconds)."""
        vkey, keys = (yield from self.node_vkey()), list(witnesses)
        deadline = time.monotonic() + timeout
        while True:
            response = yield from self.attempt(
                Call("GET", "/v1/log/cosigned", params={"size": bundle.index + 1})
            )
            if response.status_code == 200:
                candidate = yield from self._rebased(bundle, response.text, vkey)
                try:
                    verify_bundle(
                        candidate, [vkey], witnesses=keys, quorum=quorum, operators=operators
                    )
                except VerificationError:
                    if time.monotonic() > deadline:
                        raise
                else:
                    return candidate
            elif response.status_code != 404:
                checked(response, self.url)
            if time.monotonic() > deadline:
                raise LimitExceeded(
                    f"{self.url}: no checkpoint covering entry {bundle.index} was cosigned by "
                    f"{quorum} of the given witnesses within {timeout:g} s"
                )
            yield Sleep(0.1)

    def upgrade(
        self,
        bundle: Bundle,
        *,
        timeout: float,
        witnesses: Iterable[str] = (),
        quorum: int = 0,
        operators: Mapping[str, str] | None = None,
    ) -> Flow[Bundle]:
        """A promise turned into the logged bundle: the node's latest checkpoint, once it covers
        the promised index, and the receipt's inclusion proof against it (with ``quorum``,
        against a checkpoint that many ``witnesses`` cosigned, as :meth:`cosigned`). A logged
        bundle is verified and returned as it is (or cosigned). Raises
        :class:`BrokenPromiseError`, with the evidence, if the log holds another receipt at the
        promised index; :class:`LimitExceeded` if the log has not reached it within ``timeout``
        seconds (past the deadline, the node is overdue: a fault, but no evidence, §15)."""
        vkey = yield from self.node_vkey()
        if bundle.receipt["node"] != vkey:
            raise VerificationError(
                f"the bundle's receipt names node {bundle.receipt['node']!r}, not the key of "
                f"{self.url} ({vkey!r})"
            )
        logged = bundle
        if not bundle.promised:
            verify_bundle(bundle, [vkey])  # a logged bundle is returned only if it holds
        else:
            verify_bundle(bundle, [vkey], accept_promise=AcceptPromise())  # the node's own word
            promise = open_promise(
                bundle.promise,
                [vkey],
                receipt=bundle.receipt.data,
                index=bundle.index,
                path=bundle.proof,
            )
            until = time.monotonic() + timeout
            while True:
                signed = (yield from self.send(Call("GET", "/v1/log/checkpoint"))).text
                checkpoint, _ = note.verify_checkpoint(signed, [vkey], origin=promise.log)
                if checkpoint.size > promise.index:
                    break
                if time.monotonic() > until:
                    overdue = time.time() > promise.deadline
                    raise LimitExceeded(
                        f"{self.url}: the log has {checkpoint.size} entries, not yet the "
                        f"promised entry {promise.index} (due by {promise.when}"
                        + ("; OVERDUE: a fault to report, but not evidence" if overdue else "")
                        + ")"
                    )
                yield Sleep(0.05)
            logged = yield from self._rebased(dataclasses.replace(bundle, promise=""), signed, vkey)
            try:
                verify_bundle(logged, [vkey])
            except VerificationError:
                yield from self._broken(promise, logged)
                raise
        if quorum > 0:
            logged = yield from self.cosigned(
                logged, witnesses, quorum, timeout=timeout, operators=operators
            )
        return logged

    def _broken(self, promise: Promise, logged: Bundle) -> Flow[None]:
        """Raise :class:`BrokenPromiseError` if the log holds another entry where ``logged`` (the
        promise, proven against a checkpoint) was promised; return if it cannot be shown."""
        there = (yield from self.send(Call("GET", f"/v1/log/entries/{logged.index}"))).content
        evidence = broken_promise(
            promise, logged.checkpoint, merkle.leaf_hash(there), list(logged.proof)
        )
        try:
            verdict = verify_evidence(evidence)
        except VerificationError:
            return  # the node answered a bad proof or entry: not evidence, a failed upgrade
        raise BrokenPromiseError(f"{self.url} broke its promise: {verdict}", evidence)

    def _rebased(self, bundle: Bundle, cosigned: str, vkey: str) -> Flow[Bundle]:
        """The bundle with the node's note of the cosigned checkpoint, the witnesses' lines
        apart, and an inclusion proof against it."""
        checkpoint, _ = note.verify_checkpoint(cosigned, [vkey])
        signed = (yield from self.send(Call("GET", f"/v1/log/checkpoint/{checkpoint.size}"))).text
        if not cosigned.startswith(signed):
            raise VerificationError(f"{self.url} answered two notes for size {checkpoint.size}")
        others = tuple(cosigned[len(signed) :].splitlines(keepends=True))
        answer = json_of(
            (
                yield from self.send(
                    Call(
                        "GET",
                        "/v1/log/proof/inclusion",
                        params={"index": bundle.index, "size": checkpoint.size},
                    )
                )
            )
        )
        try:
            proof = tuple(base64.b64decode(h, validate=True) for h in answer["proof"])
        except (ValueError, KeyError, TypeError) as exc:
            raise VerificationError(f"malformed inclusion proof from {self.url}: {exc}") from exc
        return dataclasses.replace(bundle, proof=proof, checkpoint=signed, cosignatures=others)

    # -- disputes -------------------------------------------------------------------------------

    def challenge(
        self,
        bundle: Bundle,
        inputs: Mapping[str, np.ndarray],
        *,
        challenger: str,
        defendant: str | None,
        deadline: float,
        model: bytes | None,
    ) -> Flow[Verdict]:
        """Challenge an optimistic answer with this node as the referee; the verdict is checked
        here (signed by this node's trusted key, replayed on the model) before it is returned."""
        referee = yield from self.node_vkey()
        body = {
            "bundle": bundle.to_dict(),
            "inputs": base64.b64encode(tensors.encode_binary(inputs)).decode(),
            "challenger": challenger,
            "defendant": defendant,
            "deadline": deadline,
        }
        # the game: two traces, then up to ~log2(steps) rounds and a reveal, each bounded
        limit = max(self.timeout, 64 * deadline)
        response = yield from self.send(Call("POST", "/v1/disputes", json=body, timeout=limit))
        data = model if model is not None else (yield from self.blob(bundle.receipt["model"]))
        found = response.content
        verdict: Verdict = yield Work(lambda: verify_verdict(found, model=data, referees=[referee]))
        return verdict

    def verdict(self, dispute: str) -> Flow[bytes]:
        """A verdict the node signed as a referee, by dispute ID (not checked here)."""
        return (yield from self.send(Call("GET", f"/v1/disputes/{dispute}"))).content

    # -- administration -------------------------------------------------------------------------

    def peers(self) -> Flow[list[str]]:
        """The node URLs this node fetches missing models from."""
        return _peers((yield from self.send(Call("GET", "/v1/peers"))))

    def set_peers(self, peers: Iterable[str]) -> Flow[list[str]]:
        """Replace the node's peers (needs the admin token)."""
        call = Call("PUT", "/v1/peers", json={"peers": list(peers)}, headers=self.admin)
        return _peers((yield from self.send(call)))

    def delete_blob(self, blob: str) -> Flow[None]:
        """Delete a blob no published document names (needs the admin token)."""
        cid.digest(blob)
        yield from self.send(Call("DELETE", f"/v1/blobs/{blob}", headers=self.admin))
