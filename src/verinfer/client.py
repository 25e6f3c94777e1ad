"""The Python SDK: call a node over HTTP and get answers that were verified before you see them.

``Client.infer`` checks every bundle against the node keys it trusts (given explicitly, or
recorded on first use in ``$VERINFER_HOME/known_nodes.json``) and that the receipt carries the
nonce it sent; a user never receives an unverified answer by accident. HTTP failures become
verinfer errors at one boundary (:meth:`Client._request`).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from verinfer import cid, keys, merkle, note, tensors
from verinfer.errors import (
    AuthError,
    ConflictError,
    DisagreementError,
    Error,
    InputError,
    LimitExceeded,
    NotFound,
    StorageError,
    VerificationError,
)
from verinfer.hub.documents import (
    Change,
    Manifest,
    check_repository,
    check_version,
    parse_ref,
    verify_history,
)
from verinfer.modes.dispute import Verdict, verify_verdict
from verinfer.verify import Bundle, mode_matches, replicas_of, verify_bundle
from verinfer.verify.evidence import model_of, verify_evidence

__all__ = ["AsyncClient", "Client", "Network", "NetworkError", "Result", "connect"]


class NetworkError(Error):
    """The node could not be reached, or kept failing after the retries."""


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
_BINARY_FROM = 64 << 10  # inputs of this many bytes or more are sent as .npz


def _file_cid(path: Path) -> str:
    hasher = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                hasher.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc.strerror}") from exc
    return cid.from_digest(hasher.digest())


class _Policy:
    """Which node keys to accept: the given ones, or whatever was pinned on first use."""

    def __init__(self, trusted: Iterable[str] | None, known: str | os.PathLike[str] | None) -> None:
        self.trusted = None if trusted is None else list(trusted)
        for vkey in self.trusted or []:
            note.VerifierKey.parse(vkey)
        self.known = Path(known) if known else keys.home() / "known_nodes.json"


def _read_known(path: Path) -> dict[str, str]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read known nodes {str(path)!r}: {exc}") from exc
    if not isinstance(value, dict):
        raise InputError(f"{str(path)!r} is not a JSON object of url -> vkey")
    return {str(k): str(v) for k, v in value.items()}


def _trust(url: str, vkey: object, policy: _Policy) -> str:
    """Check a node's key against the policy (pinning it on first use); return it."""
    if not isinstance(vkey, str):
        raise VerificationError(f"node {url} sent no key")
    if policy.trusted is not None:
        if vkey not in policy.trusted:
            raise VerificationError(f"node {url} has key {vkey!r}, which is not trusted")
        return vkey
    known = _read_known(policy.known)
    pinned = known.get(url)
    if pinned is None:
        known[url] = vkey
        policy.known.parent.mkdir(parents=True, exist_ok=True)
        temp = policy.known.with_suffix(".tmp")
        temp.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
        os.replace(temp, policy.known)
    elif pinned != vkey:
        raise VerificationError(
            f"node {url} now presents key {vkey!r}, but {pinned!r} was pinned on first use "
            f"({policy.known}); remove that entry only if the change is expected"
        )
    return vkey


_MAX_RETRY_DELAY = 5.0


def _retry_after(response: httpx.Response, default: float) -> float:
    """The server's Retry-After in seconds, capped: a node cannot park its clients."""
    value = response.headers.get("retry-after", "")
    if value.isascii() and value.isdigit():
        return min(float(value), _MAX_RETRY_DELAY)
    return default


def _checked(response: httpx.Response, url: str) -> httpx.Response:
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


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise NetworkError(f"{response.url} answered something that is not JSON") from exc


def _peers(response: httpx.Response) -> list[str]:
    answer = _json(response)
    peers = answer.get("peers") if isinstance(answer, dict) else None
    if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
        raise NetworkError(f"{response.url} answered a malformed peer list")
    return peers


def _infer_request(
    model: str, inputs: Mapping[str, np.ndarray], mode: str, nonce: str | None
) -> tuple[str, dict[str, Any], str]:
    """The path and request arguments of an inference, and its nonce. Large inputs travel as
    an ``.npz`` body instead of base64 inside JSON."""
    nonce = nonce or secrets.token_hex(16)
    if sum(np.asarray(a).nbytes for a in inputs.values()) < _BINARY_FROM:
        body = {
            "model": model,
            "inputs": tensors.encode_json(inputs, raw=True),
            "mode": mode,
            "nonce": nonce,
        }
        return "/v1/infer", {"json": body}, nonce
    return (
        "/v1/infer/npz",
        {
            "params": {"model": model, "mode": mode, "nonce": nonce},
            "content": tensors.encode_binary(inputs),
            "headers": {"content-type": "application/x-npz"},
        },
        nonce,
    )


def _verified_answer(
    response: httpx.Response,
    url: str,
    *,
    vkey: str,
    model: str,
    inputs: Mapping[str, np.ndarray],
    nonce: str,
    mode: str,
    zk: Callable[[Bundle], dict[str, Any]] | None = None,
) -> Result:
    """The answer to an inference, verified: bundle, digests of these tensors, nonce, mode;
    for ``zk``, the proof too (``zk`` gives the circuit materials and the SRS policy)."""
    try:
        answer = response.json()
        bundle = Bundle.from_json(answer["bundle"], replica=replicas_of(mode) > 1)
        outputs = tensors.decode_json(answer["outputs"])
    except (ValueError, KeyError, TypeError, InputError) as exc:
        raise VerificationError(f"malformed answer from {url}: {exc}") from exc
    if bundle.receipt["mode"] == "zk" and zk is None:
        raise VerificationError("a zk answer needs its circuit materials to be verified")
    policy = zk(bundle) if zk is not None and bundle.receipt["mode"] == "zk" else {}
    verify_bundle(bundle, [vkey], inputs=inputs, outputs=outputs, **policy)
    receipt = bundle.receipt
    if "/" not in model and model not in (receipt["model"], receipt["manifest"]):
        raise VerificationError(
            f"asked for {model!r}, but the receipt names model {receipt['model']!r} "
            f"(manifest {receipt['manifest']!r}): another model answered"
        )
    if bundle.receipt["nonce"] != nonce:
        raise VerificationError(
            f"the receipt carries nonce {bundle.receipt['nonce']!r}, not the {nonce!r} sent: "
            f"a replayed answer"
        )
    if not mode_matches(mode, bundle.receipt["mode"]):
        raise VerificationError(f"asked for mode {mode!r}, got {bundle.receipt['mode']!r}")
    return Result(outputs, bundle, str(receipt["manifest"] or ""))


def _check_named(model: str, result: Result, data: bytes, policy: _Policy) -> None:
    """The answer to ``owner/name[@v]`` came from a signed manifest of that repository; with
    trust on first use, by the owner key pinned for the owner name, like node keys."""
    repository, _ = parse_ref(model)
    try:
        manifest = Manifest.from_bytes(data, result.manifest or None)
    except VerificationError as exc:
        raise VerificationError(f"the manifest of the answer does not verify: {exc}") from exc
    receipt = result.bundle.receipt
    if manifest.repository != repository or manifest.model != receipt["model"]:
        raise VerificationError(
            f"asked for {model!r}, but the answer comes from {manifest.repository}@"
            f"{manifest.version} (model {receipt['model']!r}): another model answered"
        )
    if policy.trusted is None:  # trust on first use: the owner's key is pinned like nodes'
        _trust(f"owner:{repository.split('/')[0]}", manifest.publisher, policy)
    # (a tag other than the version names what the node reads from the signed history)


@dataclass(frozen=True)
class Result:
    """A verified answer: the outputs, the bundle that proves them, the manifest's CID."""

    outputs: dict[str, np.ndarray]
    bundle: Bundle
    manifest: str


class Client:
    """A client of one node.

    ``trusted_vkeys``: the node keys to accept. Without them, the node's key is trusted on
    first use and pinned in ``known_nodes`` (default ``$VERINFER_HOME/known_nodes.json``); a node
    that later answers with another key is refused. ``admin_token`` (the node's
    ``DATA/admin.token``) is sent only with administrative calls: peers and blob deletion.
    """

    def __init__(
        self,
        url: str,
        *,
        trusted_vkeys: Iterable[str] | None = None,
        known_nodes: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        admin_token: str | None = None,
        trusted_srs: Iterable[str] = (),
        allow_insecure_srs: bool = False,
        trusted_publishers: Iterable[str] = (),
    ) -> None:
        self.url = url.rstrip("/")
        self._trusted_publishers = list(trusted_publishers)  # zk: who may endorse circuits
        self._blobs: dict[str, bytes] = {}  # zk materials by CID, hash-checked when fetched
        self._trusted_srs = list(trusted_srs)  # SRS CIDs zk proofs may rest on
        self._allow_insecure_srs = allow_insecure_srs  # development: a locally made SRS
        self._policy = _Policy(trusted_vkeys, known_nodes)
        self._trusted = self._policy.trusted
        self._retries = retries
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        self._vkey: str | None = None
        self._admin = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one boundary where HTTP becomes verinfer errors -------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        delay = 0.1
        for attempt in range(self._retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                if attempt == self._retries:
                    raise NetworkError(f"{method} {self.url}{path} failed: {exc}") from exc
            else:
                if response.status_code not in _RETRY_STATUS or attempt == self._retries:
                    break
                delay = _retry_after(response, delay)
            time.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_DELAY)
        return _checked(response, self.url)

    # -- trust ----------------------------------------------------------------------------------

    def node_vkey(self) -> str:
        """The node's key, checked against the trusted keys or pinned on first use."""
        if self._vkey is not None:
            return self._vkey
        answer = _json(self._request("GET", "/v1/node"))
        vkey = answer.get("vkey") if isinstance(answer, dict) else None
        self._vkey = _trust(self.url, vkey, self._policy)
        return self._vkey

    # -- calls ----------------------------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        mode: str = "attested",
        nonce: str | None = None,
    ) -> Result:
        """Run ``model`` on the node; return outputs whose bundle has been verified here.

        Raises :class:`VerificationError` if the bundle does not prove exactly these inputs and
        outputs, under a trusted node key, with the nonce sent.
        """
        if replicas_of(mode) > 1:
            raise InputError(f"mode {mode!r} asks several nodes: use a Network (--network)")
        return self._infer(model, inputs, mode=mode, nonce=nonce)

    def _infer(
        self, model: str, inputs: Mapping[str, np.ndarray], *, mode: str, nonce: str | None
    ) -> Result:
        """One node's verified answer (for ``replicated:K``, one of the K)."""
        vkey = self.node_vkey()
        path, request, nonce = _infer_request(model, inputs, mode, nonce)
        response = self._request("POST", path, **request)
        result = _verified_answer(
            response, self.url, vkey=vkey, model=model, inputs=inputs, nonce=nonce, mode=mode,
            zk=self._zk_policy,
        )  # fmt: skip
        if "/" in model:  # a name: the receipt's manifest must be a signed card of that name
            data = self._request("GET", f"/v1/manifests/{result.manifest}").content
            _check_named(model, result, data, self._policy)
        return result

    def publish(
        self,
        model: str | os.PathLike[str] | bytes,
        *,
        repository: str,
        version: str,
        signer: note.Signer,
        description: str = "",
        license: str = "",  # the manifest's field name
        tags: tuple[str, ...] = (),
        calibrate: bool = False,
    ) -> Manifest:
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
            uploaded = _json(self._request("PUT", "/v1/blobs", content=model)).get("cid")
        else:
            expected = _file_cid(Path(model))
            with open(model, "rb") as handle:
                uploaded = _json(self._request("PUT", "/v1/blobs", content=handle)).get("cid")
        if uploaded != expected:
            raise VerificationError(f"the node stored {uploaded!r} for a model of CID {expected!r}")
        # (2) the node's analysis, (3) documents signed here, (4) on top of the node's history
        params = {"calibrate": "true"} if calibrate else {}
        facts = self._request(  # calibrating needs the node's admin token
            "POST", f"/v1/blobs/{expected}/analysis", params=params, headers=self._admin
        ).json()
        manifest = Manifest.create(
            facts,
            repository=repository,
            version=version,
            model=expected,
            signer=signer,
            description=description,
            license=license,
            tags=tags,
        )
        found = self._request("GET", f"/v1/repositories/{repository}/changes").json()["changes"]
        history = verify_history(repository, [c.encode() for c in found], signer.vkey)
        published = Change.create(
            repository=repository,
            seq=len(history.changes),
            prev=history.head,
            signer=signer,
            version=version,
            manifest=manifest.cid,
        )
        latest = Change.create(
            repository=repository,
            seq=len(history.changes) + 1,
            prev=published.cid,
            signer=signer,
            version=version,
            tag="latest",
        )
        body = {
            "manifest": manifest.data.decode(),
            "changes": [published.data.decode(), latest.data.decode()],
        }
        answer = self._request("POST", f"/v1/repositories/{repository}/changes", json=body)
        if answer.json().get("manifest") != manifest.cid:
            raise VerificationError(f"the node did not publish manifest {manifest.cid!r}")
        return manifest

    def models(
        self, *, owner: str | None = None, tag: str | None = None, text: str | None = None
    ) -> list[dict[str, Any]]:
        """The node's published models, newest first."""
        params = {k: v for k, v in {"owner": owner, "tag": tag, "q": text}.items() if v}
        found: list[dict[str, Any]] = self._request("GET", "/v1/models", params=params).json()
        return found

    def checkpoint(self, since: str | None = None) -> str:
        """The node's latest signed checkpoint, verified against its key.

        With ``since`` (an earlier signed checkpoint of this node), the new one is also proven
        to extend it: a consistency proof from the node, checked here. A node that rewrote its
        log, or signed two different trees of one size, raises :class:`VerificationError`.
        """
        vkey = self.node_vkey()
        signed = self._request("GET", "/v1/log/checkpoint").text
        new, _ = note.verify_checkpoint(signed, [vkey])
        if since is None:
            return signed
        old, _ = note.verify_checkpoint(since, [vkey])
        if old.origin != new.origin or old.size > new.size:
            raise VerificationError(
                f"{self.url} answered checkpoint {new.origin} size {new.size}, which cannot "
                f"extend {old.origin} size {old.size}"
            )
        answer = _json(
            self._request(
                "GET", "/v1/log/proof/consistency", params={"old": old.size, "size": new.size}
            )
        )
        try:
            proof = [base64.b64decode(h, validate=True) for h in answer["proof"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise VerificationError(f"malformed consistency proof from {self.url}: {exc}") from exc
        merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
        return signed

    def publish_zk(self, addendum: bytes, materials: Iterable[bytes]) -> str:
        """Publish a zk addendum signed elsewhere, after uploading its materials (settings,
        verification key, SRS); returns the addendum's CID as the node stored it."""
        for data in materials:
            uploaded = _json(self._request("PUT", "/v1/blobs", content=data)).get("cid")
            if uploaded != cid.compute(data):
                raise VerificationError(f"the node stored {uploaded!r} for a zk material")
        answer = _json(self._request("POST", "/v1/zk/addenda", content=addendum))
        if answer.get("addendum") != cid.compute(addendum):
            raise VerificationError("the node did not keep the zk addendum sent")
        return str(answer["addendum"])

    def zk_materials(self, bundle: Bundle) -> dict[str, bytes]:
        """The circuit materials a zk bundle names (addendum, manifest, settings, verification
        key, SRS), fetched by CID and hash-checked (and kept: content never changes under its
        CID); the verifier checks what they are."""
        manifest = str(bundle.receipt["manifest"])
        found = {manifest: self._request("GET", f"/v1/manifests/{manifest}").content}
        found[bundle.zk_addendum] = self._kept(bundle.zk_addendum)
        try:
            addendum = json.loads(note.parse(found[bundle.zk_addendum])[0])
            names = [addendum[name] for name in ("settings", "vk", "srs")]
        except (ValueError, KeyError, TypeError, VerificationError) as exc:
            raise VerificationError(f"malformed zk addendum from {self.url}: {exc}") from exc
        for name in names:
            found[name] = self._kept(name)
        return found

    def _kept(self, blob: str) -> bytes:
        """:meth:`blob`, remembered: a few materials (an SRS is megabytes) serve many answers."""
        data = self._blobs.get(blob)
        if data is None:
            data = self.blob(blob)
            if len(self._blobs) >= 16:
                self._blobs.pop(next(iter(self._blobs)))
            self._blobs[blob] = data
        return data

    def _zk_policy(self, bundle: Bundle) -> dict[str, Any]:
        materials = self.zk_materials(bundle)
        publishers = list(self._trusted_publishers)
        if not publishers:  # trust on first use, pinned per owner name like node keys
            if self._policy.trusted is not None:
                raise VerificationError(
                    "a zk answer is only as good as the publisher who endorsed its circuit: "
                    "give trusted_publishers= (with explicit node keys there is no first use)"
                )
            manifest = Manifest.from_bytes(
                materials[str(bundle.receipt["manifest"])], bundle.receipt["manifest"]
            )
            owner = manifest.repository.split("/")[0]
            publishers = [_trust(f"owner:{owner}", manifest.publisher, self._policy)]
        return {
            "zk_materials": materials,
            "zk_publishers": publishers,
            "trusted_srs": self._trusted_srs,
            "allow_insecure_srs": self._allow_insecure_srs,
        }

    def peers(self) -> list[str]:
        """The node URLs this node fetches missing models from."""
        return _peers(self._request("GET", "/v1/peers"))

    def set_peers(self, peers: Iterable[str]) -> list[str]:
        """Replace the node's peers (needs ``admin_token``); returns them as the node kept them."""
        body = {"peers": list(peers)}
        return _peers(self._request("PUT", "/v1/peers", json=body, headers=self._admin))

    def delete_blob(self, blob: str) -> None:
        """Delete a blob no published document names (needs ``admin_token``)."""
        cid.digest(blob)
        self._request("DELETE", f"/v1/blobs/{blob}", headers=self._admin)

    def cosigned(
        self,
        bundle: Bundle,
        witnesses: Iterable[str],
        quorum: int,
        *,
        timeout: float = 15.0,
    ) -> Bundle:
        """``bundle`` proven against a checkpoint that ``quorum`` of ``witnesses`` cosigned.

        Waits (up to ``timeout`` seconds) until the node has gathered the cosignatures for a
        checkpoint that covers the receipt, then fetches the inclusion proof against it; the
        returned bundle verifies under the witness policy (:func:`verify_bundle` with
        ``witnesses`` and ``quorum``). :class:`LimitExceeded` if the witnesses do not cosign in
        time.
        """
        vkey, keys = self.node_vkey(), list(witnesses)
        deadline = time.monotonic() + timeout
        while True:
            response = self._http.get("/v1/log/cosigned", params={"size": bundle.index + 1})
            if response.status_code == 200:
                candidate = self._rebased(bundle, response.text, vkey)
                try:
                    verify_bundle(candidate, [vkey], witnesses=keys, quorum=quorum)
                except VerificationError:
                    if time.monotonic() > deadline:
                        raise
                else:
                    return candidate
            elif response.status_code != 404:
                _checked(response, self.url)
            if time.monotonic() > deadline:
                raise LimitExceeded(
                    f"{self.url}: no checkpoint covering entry {bundle.index} was cosigned by "
                    f"{quorum} of the given witnesses within {timeout:g} s"
                )
            time.sleep(0.1)

    def _rebased(self, bundle: Bundle, cosigned: str, vkey: str) -> Bundle:
        """The bundle with the node's note of the cosigned checkpoint, the witnesses' lines
        apart, and an inclusion proof against it."""
        checkpoint, _ = note.verify_checkpoint(cosigned, [vkey])
        signed = self._request("GET", f"/v1/log/checkpoint/{checkpoint.size}").text
        if not cosigned.startswith(signed):
            raise VerificationError(f"{self.url} answered two notes for size {checkpoint.size}")
        others = tuple(cosigned[len(signed) :].splitlines(keepends=True))
        answer = _json(
            self._request(
                "GET", "/v1/log/proof/inclusion",
                params={"index": bundle.index, "size": checkpoint.size},
            )
        )  # fmt: skip
        try:
            proof = tuple(base64.b64decode(h, validate=True) for h in answer["proof"])
        except (ValueError, KeyError, TypeError) as exc:
            raise VerificationError(f"malformed inclusion proof from {self.url}: {exc}") from exc
        return dataclasses.replace(bundle, proof=proof, checkpoint=signed, cosignatures=others)

    def challenge(
        self,
        bundle: Bundle,
        inputs: Mapping[str, np.ndarray],
        *,
        challenger: str,
        defendant: str | None = None,
        deadline: float = 30.0,
        model: bytes | None = None,
    ) -> Verdict:
        """Challenge an optimistic answer, with this client's node as the referee of the game
        between the node at ``challenger`` and the one that answered (at ``defendant``, or found
        among the referee's peers). The verdict is checked here before it is returned: signed
        by this node's (trusted) key, and replayed on the model (fetched by CID unless given).
        """
        referee = self.node_vkey()
        body = {
            "bundle": bundle.to_dict(),
            "inputs": base64.b64encode(tensors.encode_binary(inputs)).decode(),
            "challenger": challenger,
            "defendant": defendant,
            "deadline": deadline,
        }
        # the game: two traces, then up to ~log2(steps) rounds and a reveal, each bounded
        limit = self._http.timeout.read or 60.0
        response = self._request(
            "POST", "/v1/disputes", json=body, timeout=max(limit, 64 * deadline)
        )
        data = model if model is not None else self.blob(bundle.receipt["model"])
        return verify_verdict(response.content, model=data, referees=[referee])

    def verdict(self, dispute: str) -> bytes:
        """A verdict the node signed as a referee, by dispute ID (not checked: see
        :func:`verinfer.modes.dispute.verify_verdict`)."""
        return self._request("GET", f"/v1/disputes/{dispute}").content

    def blob(self, blob: str) -> bytes:
        """A blob (a model's bytes) by CID, checked against the CID here."""
        cid.digest(blob)  # a malformed CID is an InputError before any request
        data = self._request("GET", f"/v1/blobs/{blob}").content
        cid.verify(blob, data)
        return data


class Network:
    """Clients of every node of a network file (``network.json``: ``{"nodes": [{"url", "vkey"}]}``).

    Each node is trusted with exactly the vkey the file lists. Calls go to the nodes in turn;
    a node that is unreachable or overloaded is skipped for the next one (fail-over), while a
    verification failure is raised at once: a node that lies is never papered over.

    ``mode="replicated:K"`` sends the request to K nodes of distinct operators at once (a node's
    optional ``operator`` in the file groups keys; by default each key is its own operator) and
    accepts only if all K verified answers agree; the bundle then carries all K receipts.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
        try:
            nodes = json.loads(Path(path).read_text())["nodes"]
            triples = [
                (str(node["url"]), str(node["vkey"]), str(node.get("operator") or node["vkey"]))
                for node in nodes
            ]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"cannot read network file {os.fspath(path)!r}: {exc}") from exc
        if not triples:
            raise InputError(f"network file {os.fspath(path)!r} lists no nodes")
        self.clients = [
            Client(url, trusted_vkeys=[vkey], timeout=timeout, retries=1)
            for url, vkey, _ in triples
        ]
        self._operators = {client.url: operator for client, (*_, operator) in
                           zip(self.clients, triples, strict=True)}  # fmt: skip
        self.convicted: dict[str, str] = {}  # node vkey -> the verdict of evidence against it
        self._next = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every client."""
        for client in self.clients:
            client.close()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _order(self) -> list[Client]:
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % len(self.clients)
        ordered = self.clients[start:] + self.clients[:start]
        return [c for c in ordered if (c._trusted or [""])[0] not in self.convicted]

    def gossip(self, checkpoint: str) -> dict[str, Any] | None:
        """Tell every node's witness a signed checkpoint seen elsewhere (e.g. a bundle's); if a
        node saw another tree of that size from the same log, return its equivocation evidence
        (checked here). Nodes that do not witness that log are skipped."""
        for client in self.clients:
            try:
                response = client._http.post("/v1/gossip", content=checkpoint.encode())
            except httpx.HTTPError:
                continue
            if response.status_code != 200:
                continue
            answer = _json(response)
            found = answer.get("equivocation") if isinstance(answer, dict) else None
            if isinstance(found, dict) and found:
                verify_evidence(found)  # and it must be about the log of this checkpoint
                if found.get("log") == checkpoint.split("\n", 1)[0]:
                    return dict(found)
        return None

    def check_evidence(self) -> dict[str, str]:
        """Ask every node for the evidence it holds, check each piece here (fraud by
        re-executing the model, fetched by CID and hash-checked), and stop calling the nodes it
        convicts. Returns the convicted node keys with their verdicts."""
        for client in self.clients:
            try:
                found = _json(client._request("GET", "/v1/evidence"))
            except Error:
                continue  # an unreachable node holds no evidence we can see
            for document in found if isinstance(found, list) else []:
                accused = document.get("vkey") if isinstance(document, dict) else None
                if not isinstance(accused, str) or accused in self.convicted:
                    continue
                try:
                    model_cid = model_of(document)  # fraud and disputes re-run the model
                    model = client.blob(model_cid) if model_cid is not None else None
                    self.convicted[accused] = verify_evidence(document, model=model)
                except (Error, ValueError, KeyError, TypeError):
                    continue  # evidence that does not hold convicts nobody
        return dict(self.convicted)

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        mode: str = "attested",
        nonce: str | None = None,
    ) -> Result:
        """:meth:`Client.infer` on the next node that answers; for ``replicated:K``, on K nodes
        of distinct operators, whose answers must agree (:class:`DisagreementError`, carrying
        every signed answer, if they do not: no majority is ever returned as verified)."""
        wanted = replicas_of(mode)
        if wanted > 1:
            return self._replicated(model, inputs, mode, wanted, nonce or secrets.token_hex(16))
        failures = []
        for client in self._order():
            try:
                return client.infer(model, inputs, mode=mode, nonce=nonce)
            except (NetworkError, LimitExceeded, StorageError) as exc:
                failures.append(f"{client.url}: {exc}")
        raise NetworkError("no node answered: " + "; ".join(failures))

    def _replicated(
        self, model: str, inputs: Mapping[str, np.ndarray], mode: str, wanted: int, nonce: str
    ) -> Result:
        candidates = self._order()
        operators = {self._operators[c.url] for c in candidates}
        if len(operators) < wanted:
            raise InputError(
                f"{mode} needs {wanted} nodes of distinct operators; the network has "
                f"{len(operators)}"
            )
        answers: dict[str, Result] = {}  # by operator
        failures: list[str] = []
        with ThreadPoolExecutor(max_workers=wanted) as pool:
            while len(answers) < wanted:
                used = set(answers)
                batch: list[Client] = []
                for client in list(candidates):  # one untried node per missing operator
                    operator = self._operators[client.url]
                    if operator not in used and len(answers) + len(batch) < wanted:
                        batch.append(client)
                        used.add(operator)
                        candidates.remove(client)
                if not batch:
                    raise NetworkError(
                        f"{mode}: only {len(answers)} of {wanted} operators answered: "
                        + "; ".join(failures)
                    )
                futures = {
                    client: pool.submit(client._infer, model, inputs, mode=mode, nonce=nonce)
                    for client in batch
                }
                for client, future in futures.items():
                    try:
                        answers[self._operators[client.url]] = future.result()
                    except (NetworkError, LimitExceeded, StorageError, NotFound) as exc:
                        failures.append(f"{client.url}: {exc}")  # VerificationError propagates
        return _agreed(mode, list(answers.values()), self.vkeys(), self._manifest)

    def _manifest(self, ref: str) -> bytes:
        """A manifest's bytes from any node (checked against its CID by the caller)."""
        problems = []
        for client in self.clients:
            try:
                return client._request("GET", f"/v1/manifests/{ref}").content
            except Error as exc:
                problems.append(f"{client.url}: {exc}")
        raise NetworkError(f"no node served manifest {ref!r}: " + "; ".join(problems))

    def vkeys(self) -> list[str]:
        """The node keys the network file lists."""
        return [key for client in self.clients for key in client._trusted or []]


def _agreed(
    mode: str, answers: list[Result], trusted: list[str], manifest_of: Callable[[str], bytes]
) -> Result:
    """One bundle of K agreeing answers, or a :class:`DisagreementError` with all of them.

    Answers agree bit for bit; from different engine classes, within the tolerance the model's
    manifest declares (the bundle then carries every answer's outputs and the manifest)."""
    bundles = tuple(answer.bundle for answer in answers)
    first = bundles[0]
    compared: tuple[bytes, ...] = ()
    manifest = b""
    observed = 0.0
    if len({b.receipt["outputs"] for b in bundles}) > 1:
        same_engine = all(b.receipt["engine"] == first.receipt["engine"] for b in bundles)
        tolerance = None
        if not same_engine:
            manifest = manifest_of(str(first.receipt["manifest"]))
            declared = Manifest.from_bytes(manifest, first.receipt["manifest"])
            tolerance = declared.body["determinism"].get("tolerance")
            if tolerance is None:
                raise VerificationError(
                    f"{mode}: the nodes run on different CPU kernel classes and "
                    f"{declared.repository}@{declared.version} declares no tolerance to compare "
                    "their outputs: publish it calibrated (verinfer model publish --calibrate)"
                )
        deviations = [tensors.deviation(answers[0].outputs, a.outputs) for a in answers[1:]]
        if tolerance is None or any(d is None or d > tolerance["abs"] for d in deviations):
            said: dict[str, list[str]] = {}
            for bundle in bundles:
                said.setdefault(str(bundle.receipt["outputs"]), []).append(
                    str(bundle.receipt["node"])
                )
            raise DisagreementError(
                f"{mode}: the nodes disagree: "
                + "; ".join(f"{', '.join(n)} answered {digest}" for digest, n in said.items()),
                bundles,
            )
        compared = tuple(tensors.encode_binary(a.outputs) for a in answers)
        observed = max(d for d in deviations if d is not None)
    combined = Bundle(
        first.receipt, first.index, first.proof, first.checkpoint, first.cosignatures,
        replicas=bundles[1:], compared=compared, manifest=manifest,
        deviation=observed,
    )  # fmt: skip
    verify_bundle(combined, trusted)  # agreement of model, inputs, nonce and outputs again
    return Result(answers[0].outputs, combined, answers[0].manifest)


def connect(target: str | os.PathLike[str], **options: Any) -> Client | Network:
    """A :class:`Client` for a node URL, or a :class:`Network` for a network file."""
    text = os.fspath(target)
    if text.startswith(("http://", "https://")):
        return Client(text, **options)
    return Network(text, **options)


class AsyncClient:
    """:class:`Client` for asyncio: the same trust policy, verification and error mapping."""

    def __init__(
        self,
        url: str,
        *,
        trusted_vkeys: Iterable[str] | None = None,
        known_nodes: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._policy = _Policy(trusted_vkeys, known_nodes)
        self._retries = retries
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, transport=transport)
        self._vkey: str | None = None

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        delay = 0.1
        for attempt in range(self._retries + 1):
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                if attempt == self._retries:
                    raise NetworkError(f"{method} {self.url}{path} failed: {exc}") from exc
            else:
                if response.status_code not in _RETRY_STATUS or attempt == self._retries:
                    break
                delay = _retry_after(response, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_DELAY)
        return _checked(response, self.url)

    async def node_vkey(self) -> str:
        """The node's key, checked against the trusted keys or pinned on first use."""
        if self._vkey is None:
            answer = _json(await self._request("GET", "/v1/node"))
            vkey = answer.get("vkey") if isinstance(answer, dict) else None
            self._vkey = _trust(self.url, vkey, self._policy)
        return self._vkey

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        mode: str = "attested",
        nonce: str | None = None,
    ) -> Result:
        """:meth:`Client.infer`, awaited."""
        vkey = await self.node_vkey()
        path, request, nonce = _infer_request(model, inputs, mode, nonce)
        response = await self._request("POST", path, **request)
        result = _verified_answer(
            response, self.url, vkey=vkey, model=model, inputs=inputs, nonce=nonce, mode=mode
        )
        if "/" in model:  # a name: the receipt's manifest must be a signed card of that name
            data = (await self._request("GET", f"/v1/manifests/{result.manifest}")).content
            _check_named(model, result, data, self._policy)
        return result
