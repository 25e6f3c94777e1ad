"""The blocking client: drives the core's flows with :class:`httpx.Client`."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx

from verinfer import note
from verinfer.client._core import Call, Flow, NetworkError, Result, Sleep, Step, Work, checked
from verinfer.client._options import PublisherTrust, make_core
from verinfer.client._text import (
    ChatResult,
    EmbedResult,
    chat_answer,
    chat_flow,
    embed_flow,
    sse_event,
    stream_request,
    streamed,
)
from verinfer.client._trust import Notify, Publishers
from verinfer.errors import VerificationError
from verinfer.hub.documents import Manifest
from verinfer.modes.dispute import Verdict
from verinfer.verify import Bundle
from verinfer.verify.trust import TrustRoot

__all__ = ["Client"]

T = TypeVar("T")


def _arguments(call: Call) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in ("params", "json", "content", "headers", "timeout"):
        value = getattr(call, name)
        if value is not None:
            found[name] = value
    return found


class Client:
    """A client of one node; every answer is verified before it is returned.

    ``trusted_vkeys``: the node keys to accept. Without them, the node's key is trusted on
    first use and pinned in ``known_nodes`` (default ``$VERINFER_HOME/known_nodes.json``); a node
    that later answers with another key is refused.

    ``trusted_publishers``: who may stand behind an owner name (named refs such as
    ``alice/iris@2``, and the endorsement of zk circuits): vkeys (each key's name is its owner),
    a mapping owner -> vkeys, or a :class:`Publishers` policy shared with other clients. Without
    them, the first key seen for an owner is pinned in ``known_publishers`` (default: beside
    ``known_nodes``, else ``$VERINFER_HOME/known_publishers.json``) and ``on_pin`` is told
    (default: a warning on the ``verinfer.client`` logger).

    ``admin_token`` (the node's ``DATA/admin.token``) is sent only with administrative calls:
    peers, blob deletion, calibration. ``trusted_srs``, ``allow_insecure_srs``: the zk SRS policy.

    ``trust``: a :class:`~verinfer.verify.TrustRoot` (``TrustRoot.from_file("trust.json")``, the
    file the CLI and the explorer read) for the node keys, publisher keys and SRS not given
    above.
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
        trusted_publishers: PublisherTrust = (),
        known_publishers: str | os.PathLike[str] | None = None,
        on_pin: Notify | None = None,
        trust: TrustRoot | None = None,
    ) -> None:
        self._core = make_core(
            url,
            trusted_vkeys=trusted_vkeys,
            known_nodes=known_nodes,
            trusted_publishers=trusted_publishers,
            known_publishers=known_publishers,
            on_pin=on_pin,
            retries=retries,
            admin_token=admin_token,
            trusted_srs=trusted_srs,
            allow_insecure_srs=allow_insecure_srs,
            timeout=timeout,
            trust=trust,
        )
        self.url = self._core.url
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        self._upgrades: ThreadPoolExecutor | None = None  # made by the first background upgrade
        self._upgrades_lock = threading.Lock()

    @property
    def trusted_nodes(self) -> list[str] | None:
        """The node keys this client accepts answers from (``None``: the node's own key,
        pinned on first use)."""
        return self._core.nodes.trusted

    @property
    def publishers(self) -> Publishers:
        """The publisher policy this client resolves names and checks endorsements with."""
        return self._core.publishers

    def close(self) -> None:
        """Finish the background upgrades (each is bounded by its timeout), then close the
        connection pool."""
        if self._upgrades is not None:
            self._upgrades.shutdown(wait=True)
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the driver -----------------------------------------------------------------------------

    def _step(self, step: Step) -> Any:
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        if isinstance(step, Work):
            return step.function()
        arguments = _arguments(step)
        try:
            if step.upload is None:
                return self._http.request(step.method, step.path, **arguments)
            with open(step.upload, "rb") as handle:
                return self._http.request(step.method, step.path, content=handle, **arguments)
        except httpx.HTTPError as exc:
            return exc

    def _run(self, flow: Flow[T]) -> T:
        """Drive a flow to its result."""
        try:
            step = next(flow)
            while True:
                step = flow.send(self._step(step))
        except StopIteration as done:
            result: T = done.value
            return result

    def _request(self, method: str, path: str, **arguments: Any) -> httpx.Response:
        """One request with the core's retries and error mapping."""
        return self._run(self._core.send(Call(method, path, **arguments)))

    # -- calls ----------------------------------------------------------------------------------

    def node_vkey(self) -> str:
        """The node's key, checked against the trusted keys or pinned on first use."""
        return self._run(self._core.node_vkey())

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        mode: str = "attested",
        nonce: str | None = None,
        audit: str = "private",
        durability: str = "durable",
    ) -> Result:
        """Run ``model`` (``owner/name[@version|tag]`` or a CID) on the node; return outputs
        whose bundle has been verified here.

        ``durability="promise"``: the node answers as soon as the outputs exist, with its signed
        promise to log the receipt at a stated index by a deadline (verified here as a promise:
        :class:`~verinfer.verify.AcceptPromise`); :meth:`upgrade` fetches the logged bundle.

        Raises :class:`~verinfer.errors.VerificationError` unless the bundle proves exactly
        these inputs and outputs under a trusted node key with the nonce sent, and the model is
        the one asked for: a named version exactly that version, a name without one (or with a
        tag) the manifest the owner's signed history resolves it to, under a publisher key this
        client trusts for the owner. ``replicated:K`` needs a :class:`Network`
        (:class:`~verinfer.errors.InputError` here).
        """
        flow = self._core.infer(
            model, inputs, mode=mode, nonce=nonce, audit=audit, durability=durability
        )
        return self._run(flow)

    def upgrade(
        self,
        bundle: Bundle,
        *,
        timeout: float = 15.0,
        witnesses: Iterable[str] = (),
        quorum: int = 0,
        operators: Mapping[str, str] | None = None,
    ) -> Bundle:
        """The logged bundle of a promise: the receipt's inclusion proof against a checkpoint of
        the node that covers the promised index (with ``quorum``: one that many ``witnesses``
        cosigned, as :meth:`cosigned`), verified here. Raises
        :class:`~verinfer.client.BrokenPromiseError` (its ``evidence`` proves it offline) if
        the log holds another receipt there; ``LimitExceeded`` after ``timeout``. A logged
        bundle is verified and returned as it is (or cosigned)."""
        flow = self._core.upgrade(
            bundle, timeout=timeout, witnesses=witnesses, quorum=quorum, operators=operators
        )
        return self._run(flow)

    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, str]],
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        audit: str = "private",
        mode: str = "attested",
    ) -> ChatResult:
        """Chat with a text model; the answer is verified here (see
        :mod:`verinfer.client._text`): text decoded from verified tokens, the record, the bundle.
        ``replicated:K`` needs a :class:`Network` (:class:`~verinfer.errors.InputError` here)."""
        sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed,
                    "max_tokens": max_tokens, "stop": stop}  # fmt: skip
        return self._run(chat_flow(self._core, model, messages=messages, sampling=sampling,
                                   audit=audit, mode=mode))  # fmt: skip

    def generate(
        self,
        model: str,
        prompt: str,
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        audit: str = "private",
        mode: str = "attested",
    ) -> ChatResult:
        """Continue a raw ``prompt`` (no chat template); verified as :meth:`chat`."""
        sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed,
                    "max_tokens": max_tokens, "stop": stop}  # fmt: skip
        return self._run(chat_flow(self._core, model, prompt=prompt, sampling=sampling,
                                   audit=audit, mode=mode))  # fmt: skip

    def chat_stream(
        self,
        model: str,
        messages: Sequence[Mapping[str, str]],
        *,
        temperature: float | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> Iterator[str | ChatResult]:
        """:meth:`chat`, streamed: yields the node's text pieces as they come (unverified
        until the end), then the verified :class:`ChatResult`; raises if it does not verify,
        or if the pieces are not its verified text (what was shown must then be withdrawn)."""
        sampling = {"temperature": temperature, "seed": seed, "max_tokens": max_tokens,
                    "stop": stop}  # fmt: skip
        body = stream_request(model, messages, sampling)
        self.node_vkey()
        last: Any = None
        pieces: list[str] = []
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    checked(response, self.url)
                for line in response.iter_lines():
                    piece, evidence = sse_event(line)
                    if piece:
                        pieces.append(piece)
                        yield piece
                    last = evidence if evidence is not None else last
        except httpx.HTTPError as exc:
            raise NetworkError(f"POST {self.url}/v1/chat/completions failed: {exc}") from exc
        if last is None:
            raise VerificationError(f"the stream from {self.url} ended without its bundle")
        yield streamed(pieces, self._run(chat_answer(self._core, body, last)))

    def embed(
        self, model: str, texts: Sequence[str], *, audit: str = "private", mode: str = "attested"
    ) -> EmbedResult:
        """Embeddings of ``texts``, verified: the bundle proves these vectors for the inputs
        this client tokenised itself with the manifest's tokenizer (``replicated:K``: use a
        :class:`Network`)."""
        return self._run(embed_flow(self._core, model, texts, audit=audit, mode=mode))

    def _infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        mode: str,
        nonce: str | None,
        audit: str = "private",
    ) -> Result:
        """One node's verified answer (for ``replicated:K``, one of the K)."""
        flow = self._core.infer(model, inputs, mode=mode, nonce=nonce, audit=audit, single=False)
        return self._run(flow)

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
        text: Mapping[str, Any] | None = None,
        tokenizer: bytes | None = None,
        finite_inputs: bool = False,
    ) -> Manifest:
        """Upload a model and publish it as ``repository@version``, signed here by ``signer``.

        The node checks the model in its sandbox and answers the facts; the manifest and the
        repository changes are signed locally (the key never leaves this process) on top of the
        node's history, which must verify under ``signer``'s key. ``text`` and ``tokenizer``:
        a text model's section and tokenizer blob (:mod:`verinfer.text`), uploaded first.
        """
        source = model if isinstance(model, bytes) else Path(model)
        return self._run(
            self._core.publish(
                source,
                repository=repository,
                version=version,
                signer=signer,
                description=description,
                license=license,
                tags=tags,
                calibrate=calibrate,
                text=text,
                tokenizer=tokenizer,
                finite_inputs=finite_inputs,
            )
        )

    def models(
        self, *, owner: str | None = None, tag: str | None = None, text: str | None = None
    ) -> list[dict[str, Any]]:
        """The node's published models, newest first."""
        return self._run(self._core.models(owner=owner, tag=tag, text=text))

    def checkpoint(self, since: str | None = None) -> str:
        """The node's latest signed checkpoint, verified against its key.

        With ``since`` (an earlier signed checkpoint of this node), the new one is also proven
        to extend it: a consistency proof from the node, checked here. A node that rewrote its
        log, or signed two different trees of one size, raises ``VerificationError``.
        """
        return self._run(self._core.checkpoint(since))

    def publish_zk(self, addendum: bytes, materials: Iterable[bytes]) -> str:
        """Publish a zk addendum signed elsewhere, after uploading its materials (settings,
        verification key, SRS); returns the addendum's CID as the node stored it."""
        return self._run(self._core.publish_zk(addendum, materials))

    def zk_materials(self, bundle: Bundle) -> dict[str, bytes]:
        """The circuit materials a zk bundle names (addendum, manifest, settings, verification
        key, SRS), fetched by CID and hash-checked (and kept: content never changes under its
        CID); the verifier checks what they are."""
        return self._run(self._core.zk_materials(bundle))

    def peers(self) -> list[str]:
        """The node URLs this node fetches missing models from."""
        return self._run(self._core.peers())

    def set_peers(self, peers: Iterable[str]) -> list[str]:
        """Replace the node's peers (needs ``admin_token``); returns them as the node kept them."""
        return self._run(self._core.set_peers(peers))

    def delete_blob(self, blob: str) -> None:
        """Delete a blob no published document names (needs ``admin_token``)."""
        self._run(self._core.delete_blob(blob))

    def upgrade_in_background(
        self,
        bundle: Bundle,
        *,
        timeout: float = 15.0,
        witnesses: Iterable[str] = (),
        quorum: int = 0,
        operators: Mapping[str, str] | None = None,
    ) -> Future[Bundle]:
        """:meth:`upgrade` on a background thread: the future holds the logged bundle (or the
        error, such as :class:`~verinfer.client.BrokenPromiseError` with its evidence)."""
        with self._upgrades_lock:
            if self._upgrades is None:
                self._upgrades = ThreadPoolExecutor(2, thread_name_prefix="verinfer-upgrade")
        return self._upgrades.submit(
            self.upgrade,
            bundle,
            timeout=timeout,
            witnesses=witnesses,
            quorum=quorum,
            operators=operators,
        )

    def cosigned(
        self,
        bundle: Bundle,
        witnesses: Iterable[str],
        quorum: int,
        *,
        timeout: float = 15.0,
        operators: Mapping[str, str] | None = None,
    ) -> Bundle:
        """``bundle`` proven against a checkpoint that ``quorum`` of ``witnesses`` cosigned.

        Waits (up to ``timeout`` seconds) until the node has gathered the cosignatures for a
        checkpoint that covers the receipt, then fetches the inclusion proof against it; the
        returned bundle verifies under the witness policy (``verify_bundle`` with ``witnesses``
        and ``quorum``): witnesses of distinct operators, never the log's own, by ``operators``
        (node and witness vkeys to their operator: the caller's trust decision) and by the name
        every node gives its own witness. ``LimitExceeded`` if the witnesses do not cosign in
        time.
        """
        return self._run(
            self._core.cosigned(bundle, witnesses, quorum, timeout=timeout, operators=operators)
        )

    def challenge(
        self,
        bundle: Bundle,
        inputs: Mapping[str, Any],
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
        return self._run(
            self._core.challenge(
                bundle,
                inputs,
                challenger=challenger,
                defendant=defendant,
                deadline=deadline,
                model=model,
            )
        )

    def verdict(self, dispute: str) -> bytes:
        """A verdict the node signed as a referee, by dispute ID (not checked: see
        :func:`verinfer.modes.dispute.verify_verdict`)."""
        return self._run(self._core.verdict(dispute))

    def blob(self, blob: str) -> bytes:
        """A blob (a model's bytes) by CID, checked against the CID here."""
        return self._run(self._core.blob(blob))

    def manifest(self, manifest: str) -> Manifest:
        """A signed manifest by its CID, checked against the CID here (its publisher's key
        is not judged: see :class:`~verinfer.client.Publishers`)."""
        return self._run(self._core.manifest(manifest))
