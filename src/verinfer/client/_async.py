"""The asyncio client: drives the same flows as :class:`~verinfer.client.Client`, awaited."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from verinfer import note
from verinfer.client._core import Call, Flow, NetworkError, Result, Sleep, Step, Work, checked
from verinfer.client._options import PublisherTrust, make_core
from verinfer.client._sync import _arguments
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

__all__ = ["AsyncClient"]

T = TypeVar("T")


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    """A file's bytes in 1 MiB chunks, read off the event loop."""
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, 1 << 20):
            yield chunk
    finally:
        handle.close()


class AsyncClient:
    """:class:`Client` for asyncio: the same options, and the very same flows (so the same
    trust policy, verification and error mapping), awaited. Blocking local work (hashing a file,
    checking a zk proof) runs in a thread."""

    def __init__(
        self,
        url: str,
        *,
        trusted_vkeys: Iterable[str] | None = None,
        known_nodes: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
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
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, transport=transport)

    @property
    def trusted_nodes(self) -> list[str] | None:
        """The node keys this client accepts answers from (``None``: the node's own key,
        pinned on first use)."""
        return self._core.nodes.trusted

    @property
    def publishers(self) -> Publishers:
        """The publisher policy this client resolves names and checks endorsements with."""
        return self._core.publishers

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the driver -----------------------------------------------------------------------------

    async def _step(self, step: Step) -> Any:
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        if isinstance(step, Work):
            return await asyncio.to_thread(step.function)
        arguments = _arguments(step)
        if step.upload is not None:
            arguments["content"] = _chunks(step.upload)
        try:
            return await self._http.request(step.method, step.path, **arguments)
        except httpx.HTTPError as exc:
            return exc

    async def _run(self, flow: Flow[T]) -> T:
        """Drive a flow to its result."""
        try:
            step = next(flow)
            while True:
                step = flow.send(await self._step(step))
        except StopIteration as done:
            result: T = done.value
            return result

    async def _request(self, method: str, path: str, **arguments: Any) -> httpx.Response:
        """One request with the core's retries and error mapping."""
        return await self._run(self._core.send(Call(method, path, **arguments)))

    # -- calls: see Client for what each verifies ------------------------------------------------

    async def node_vkey(self) -> str:
        """:meth:`Client.node_vkey`, awaited."""
        return await self._run(self._core.node_vkey())

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        mode: str = "attested",
        nonce: str | None = None,
        audit: str = "private",
        durability: str = "durable",
    ) -> Result:
        """:meth:`Client.infer`, awaited (``replicated:K`` needs a Network: ``InputError``)."""
        flow = self._core.infer(
            model, inputs, mode=mode, nonce=nonce, audit=audit, durability=durability
        )
        return await self._run(flow)

    async def upgrade(
        self,
        bundle: Bundle,
        *,
        timeout: float = 15.0,
        witnesses: Iterable[str] = (),
        quorum: int = 0,
        operators: Mapping[str, str] | None = None,
    ) -> Bundle:
        """:meth:`Client.upgrade`, awaited."""
        flow = self._core.upgrade(
            bundle, timeout=timeout, witnesses=witnesses, quorum=quorum, operators=operators
        )
        return await self._run(flow)

    async def chat(
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
        return await self._run(chat_flow(self._core, model, messages=messages, sampling=sampling,
                                   audit=audit, mode=mode))  # fmt: skip

    async def generate(
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
        return await self._run(chat_flow(self._core, model, prompt=prompt, sampling=sampling,
                                   audit=audit, mode=mode))  # fmt: skip

    async def chat_stream(
        self,
        model: str,
        messages: Sequence[Mapping[str, str]],
        *,
        temperature: float | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> AsyncIterator[str | ChatResult]:
        """:meth:`Client.chat_stream`, as an async iterator: text pieces as they come
        (unverified until the end), then the verified :class:`ChatResult`; raises if the
        pieces are not its verified text."""
        sampling = {"temperature": temperature, "seed": seed, "max_tokens": max_tokens,
                    "stop": stop}  # fmt: skip
        body = stream_request(model, messages, sampling)
        await self.node_vkey()
        last: Any = None
        pieces: list[str] = []
        try:
            async with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    checked(response, self.url)
                async for line in response.aiter_lines():
                    piece, evidence = sse_event(line)
                    if piece:
                        pieces.append(piece)
                        yield piece
                    last = evidence if evidence is not None else last
        except httpx.HTTPError as exc:
            raise NetworkError(f"POST {self.url}/v1/chat/completions failed: {exc}") from exc
        if last is None:
            raise VerificationError(f"the stream from {self.url} ended without its bundle")
        yield streamed(pieces, await self._run(chat_answer(self._core, body, last)))

    async def embed(
        self, model: str, texts: Sequence[str], *, audit: str = "private", mode: str = "attested"
    ) -> EmbedResult:
        """Embeddings of ``texts``, verified: the bundle proves these vectors for the inputs
        this client tokenised itself with the manifest's tokenizer (``replicated:K``: use an
        :class:`AsyncNetwork`)."""
        return await self._run(embed_flow(self._core, model, texts, audit=audit, mode=mode))

    async def _infer(
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
        return await self._run(flow)

    async def publish(
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
        """:meth:`Client.publish`, awaited."""
        source = model if isinstance(model, bytes) else Path(model)
        return await self._run(
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

    async def models(
        self, *, owner: str | None = None, tag: str | None = None, text: str | None = None
    ) -> list[dict[str, Any]]:
        """:meth:`Client.models`, awaited."""
        return await self._run(self._core.models(owner=owner, tag=tag, text=text))

    async def checkpoint(self, since: str | None = None) -> str:
        """:meth:`Client.checkpoint`, awaited."""
        return await self._run(self._core.checkpoint(since))

    async def publish_zk(self, addendum: bytes, materials: Iterable[bytes]) -> str:
        """:meth:`Client.publish_zk`, awaited."""
        return await self._run(self._core.publish_zk(addendum, materials))

    async def zk_materials(self, bundle: Bundle) -> dict[str, bytes]:
        """:meth:`Client.zk_materials`, awaited."""
        return await self._run(self._core.zk_materials(bundle))

    async def peers(self) -> list[str]:
        """:meth:`Client.peers`, awaited."""
        return await self._run(self._core.peers())

    async def set_peers(self, peers: Iterable[str]) -> list[str]:
        """:meth:`Client.set_peers`, awaited."""
        return await self._run(self._core.set_peers(peers))

    async def delete_blob(self, blob: str) -> None:
        """:meth:`Client.delete_blob`, awaited."""
        await self._run(self._core.delete_blob(blob))

    def upgrade_in_background(
        self,
        bundle: Bundle,
        *,
        timeout: float = 15.0,
        witnesses: Iterable[str] = (),
        quorum: int = 0,
        operators: Mapping[str, str] | None = None,
    ) -> asyncio.Task[Bundle]:
        """:meth:`upgrade` as a task on the running loop: await it for the logged bundle."""
        return asyncio.ensure_future(
            self.upgrade(
                bundle, timeout=timeout, witnesses=witnesses, quorum=quorum, operators=operators
            )
        )

    async def cosigned(
        self,
        bundle: Bundle,
        witnesses: Iterable[str],
        quorum: int,
        *,
        timeout: float = 15.0,
        operators: Mapping[str, str] | None = None,
    ) -> Bundle:
        """:meth:`Client.cosigned`, awaited."""
        return await self._run(
            self._core.cosigned(bundle, witnesses, quorum, timeout=timeout, operators=operators)
        )

    async def challenge(
        self,
        bundle: Bundle,
        inputs: Mapping[str, Any],
        *,
        challenger: str,
        defendant: str | None = None,
        deadline: float = 30.0,
        model: bytes | None = None,
    ) -> Verdict:
        """:meth:`Client.challenge`, awaited."""
        return await self._run(
            self._core.challenge(
                bundle,
                inputs,
                challenger=challenger,
                defendant=defendant,
                deadline=deadline,
                model=model,
            )
        )

    async def verdict(self, dispute: str) -> bytes:
        """:meth:`Client.verdict`, awaited."""
        return await self._run(self._core.verdict(dispute))

    async def blob(self, blob: str) -> bytes:
        """:meth:`Client.blob`, awaited."""
        return await self._run(self._core.blob(blob))

    async def manifest(self, manifest: str) -> Manifest:
        """:meth:`Client.manifest`, awaited."""
        return await self._run(self._core.manifest(manifest))
