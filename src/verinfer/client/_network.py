"""A network of nodes: fail-over, ``replicated:K`` agreement, evidence; one publisher policy."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from verinfer import tensors
from verinfer.client._async import AsyncClient
from verinfer.client._core import NetworkError, Result, json_of
from verinfer.client._options import PublisherTrust, publishers_of
from verinfer.client._sync import Client
from verinfer.client._text import (
    ChatResult,
    EmbedResult,
    chat_agreed,
    chat_request,
    chat_send,
    embed_flow,
)
from verinfer.client._trust import Notify, StaleHistory
from verinfer.errors import (
    DisagreementError,
    Error,
    InputError,
    LimitExceeded,
    NotFound,
    StorageError,
    VerificationError,
)
from verinfer.hub.documents import Manifest
from verinfer.modes.replicated import Agreement, cross_class_bound, within_tolerance
from verinfer.verify import Bundle, replicas_of, verify_bundle
from verinfer.verify.evidence import model_of, verify_evidence

__all__ = ["AsyncNetwork", "Network", "connect"]


C = TypeVar("C", Client, AsyncClient)
T = TypeVar("T")


class _Nodes(Generic[C]):
    """What both network drivers decide without I/O: the network file, its operators and
    witnesses, the order of fail-over, which nodes answer a replicated request, and the
    convicted nodes."""

    clients: list[C]

    def _read(self, path: str | os.PathLike[str]) -> tuple[list[Any], list[tuple[str, str, str]]]:
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
        return nodes, triples

    def _wire(self, nodes: list[Any], triples: list[tuple[str, str, str]]) -> None:
        self._operators = {client.url: operator for client, (*_, operator) in
                           zip(self.clients, triples, strict=True)}  # fmt: skip
        # the witness policy the file states: each node's witness key (if listed), of the node's
        # operator (a log's own operator's witnesses never count toward its quorum)
        self.witnesses = [str(node["witness"]) for node in nodes if node.get("witness")]
        self.operators = {key: operator for (_, vkey, operator), node in zip(triples, nodes,
                          strict=True) for key in (vkey, node.get("witness")) if key}  # fmt: skip
        self.convicted: dict[str, str] = {}  # node vkey -> the verdict of evidence against it
        self._next = 0
        self._lock = threading.Lock()

    def _order(self) -> list[C]:
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % len(self.clients)
        ordered = self.clients[start:] + self.clients[:start]
        return [c for c in ordered if (c.trusted_nodes or [""])[0] not in self.convicted]

    def _candidates(self, mode: str, wanted: int) -> list[C]:
        candidates = self._order()
        operators = {self._operators[c.url] for c in candidates}
        if len(operators) < wanted:
            raise InputError(
                f"{mode} needs {wanted} nodes of distinct operators; the network has "
                f"{len(operators)}"
            )
        return candidates

    def _batch(self, candidates: list[C], answered: set[str], wanted: int) -> list[C]:
        """One untried node per operator still missing (removed from ``candidates``)."""
        used, batch = set(answered), list[C]()
        for client in list(candidates):
            operator = self._operators[client.url]
            if operator not in used and len(answered) + len(batch) < wanted:
                batch.append(client)
                used.add(operator)
                candidates.remove(client)
        return batch

    def vkeys(self) -> list[str]:
        """The node keys the network file lists."""
        return [key for client in self.clients for key in client.trusted_nodes or []]


class Network(_Nodes[Client]):
    """Clients of every node of a network file (``network.json``: ``{"nodes": [{"url", "vkey"}]}``).

    Each node is trusted with exactly the vkey the file lists. Names (``owner/name[@v]``)
    resolve under one :class:`Publishers` policy shared by every node's client:
    ``trusted_publishers`` (vkeys, owner -> vkeys, or a policy), else keys pinned on first use
    in ``known_publishers`` (default ``$VERINFER_HOME/known_publishers.json``; ``on_pin`` is
    told). Calls go to the nodes in turn; a node that is unreachable or overloaded, or serves a
    stale history of a repository, is skipped for the next one (fail-over), while a
    verification failure is raised at once: a node that lies is never papered over.

    ``mode="replicated:K"`` sends the request to K nodes of distinct operators at once (a node's
    optional ``operator`` in the file groups keys; by default each key is its own operator) and
    accepts only if all K verified answers agree; the bundle then carries all K receipts.
    :meth:`chat`, :meth:`generate` and :meth:`embed` do the same for text models (generations
    agree by their tokens and commitments, PROTOCOL.md §16).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 60.0,
        trusted_publishers: PublisherTrust = (),
        known_publishers: str | os.PathLike[str] | None = None,
        on_pin: Notify | None = None,
    ) -> None:
        nodes, triples = self._read(path)
        # one publisher policy for every node: a name means the same key whoever answers
        self.publishers = publishers_of(trusted_publishers, known_publishers, on_pin, None)
        self.clients = [
            Client(
                url,
                trusted_vkeys=[vkey],
                timeout=timeout,
                retries=1,
                trusted_publishers=self.publishers,
            )
            for url, vkey, _ in triples
        ]
        self._wire(nodes, triples)

    def close(self) -> None:
        """Close every client."""
        for client in self.clients:
            client.close()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            found = _equivocation(json_of(response), checkpoint)
            if found is not None:
                return found
        return None

    def check_evidence(self) -> dict[str, str]:
        """Ask every node for the evidence it holds, check each piece here (fraud by
        re-executing the model, fetched by CID and hash-checked), and stop calling the nodes it
        convicts. Returns the convicted node keys with their verdicts."""
        for client in self.clients:
            try:
                found = json_of(client._request("GET", "/v1/evidence"))
            except Error:
                continue  # an unreachable node holds no evidence we can see
            for document in found if isinstance(found, list) else []:
                accused = _accused(document, self.convicted)
                if accused is None:
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
        inputs: Mapping[str, Any],
        *,
        mode: str = "attested",
        nonce: str | None = None,
        audit: str = "private",
        durability: str = "durable",
    ) -> Result:
        """:meth:`Client.infer` on the next node that answers; for ``replicated:K``, on K nodes
        of distinct operators, whose answers must agree (:class:`DisagreementError`, carrying
        every signed answer, if they do not: no majority is ever returned as verified).
        ``durability="promise"`` (one node's modes only): as :meth:`Client.infer`."""
        wanted = replicas_of(mode)
        if wanted > 1 and durability != "durable":
            raise InputError(f"durability {durability!r} is for one node's answer, not {mode!r}")
        if wanted > 1:
            nonce = nonce or secrets.token_hex(16)
            return self._replicated(
                model, inputs, mode=mode, wanted=wanted, nonce=nonce, audit=audit
            )
        failures = []
        for client in self._order():
            try:
                return client.infer(
                    model, inputs, mode=mode, nonce=nonce, audit=audit, durability=durability
                )
            except (NetworkError, LimitExceeded, StorageError, StaleHistory) as exc:
                failures.append(f"{client.url}: {exc}")  # a lie (VerificationError) propagates
        raise NetworkError("no node answered: " + "; ".join(failures))

    def _replicated(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        mode: str,
        wanted: int,
        nonce: str,
        audit: str,
    ) -> Result:
        found = self._gather(
            mode, wanted, lambda c: c._infer(model, inputs, mode=mode, nonce=nonce, audit=audit)
        )
        needed = _manifest_needed([answer.bundle for answer in found])
        return _agreed(mode, found, self.vkeys(), self._manifest(needed) if needed else b"")

    def _gather(self, mode: str, wanted: int, ask: Callable[[Client], T]) -> list[T]:
        """``ask`` ``wanted`` nodes of distinct operators at once, each verifying its own
        answer; a node that fails to answer is replaced, a lie (VerificationError) raised."""
        candidates = self._candidates(mode, wanted)
        answers: dict[str, T] = {}  # by operator
        failures: list[str] = []
        with ThreadPoolExecutor(max_workers=wanted) as pool:
            while len(answers) < wanted:
                batch = self._batch(candidates, set(answers), wanted)
                if not batch:
                    raise NetworkError(
                        f"{mode}: only {len(answers)} of {wanted} operators answered: "
                        + "; ".join(failures)
                    )
                futures = {client: pool.submit(ask, client) for client in batch}
                for client, future in futures.items():
                    try:
                        answers[self._operators[client.url]] = future.result()
                    except (NetworkError, LimitExceeded, StorageError, NotFound,
                            StaleHistory) as exc:  # fmt: skip
                        failures.append(f"{client.url}: {exc}")  # VerificationError propagates
        return list(answers.values())

    def _one(self, ask: Callable[[Client], T]) -> T:
        """``ask`` the next node that answers (fail-over); a lie propagates."""
        failures = []
        for client in self._order():
            try:
                return ask(client)
            except (NetworkError, LimitExceeded, StorageError, StaleHistory) as exc:
                failures.append(f"{client.url}: {exc}")
        raise NetworkError("no node answered: " + "; ".join(failures))

    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, str]],
        *,
        mode: str = "attested",
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        audit: str = "private",
    ) -> ChatResult:
        """:meth:`Client.chat` on the next node that answers; for ``replicated:K``, the same
        request (one nonce, one seed: drawn here if not given) on K nodes of distinct
        operators, each answer verified on its own, whose generations must agree (identical
        tokens; on one engine identity identical records, across kernel classes commitments
        within twice the generation tolerance, PROTOCOL.md §16): else
        :class:`DisagreementError` naming the token where they part, with every signed
        answer. The bundle carries every receipt (and, across classes, every record)."""
        sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed,
                    "max_tokens": max_tokens, "stop": stop}  # fmt: skip
        body = chat_request(model, messages=messages, sampling=sampling, audit=audit, mode=mode)
        return self._chat(mode, body)

    def generate(
        self,
        model: str,
        prompt: str,
        *,
        mode: str = "attested",
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        audit: str = "private",
    ) -> ChatResult:
        """:meth:`Client.generate` (a raw prompt), on the network as :meth:`chat`."""
        sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed,
                    "max_tokens": max_tokens, "stop": stop}  # fmt: skip
        body = chat_request(model, prompt=prompt, sampling=sampling, audit=audit, mode=mode)
        return self._chat(mode, body)

    def _chat(self, mode: str, body: Mapping[str, Any]) -> ChatResult:
        wanted = replicas_of(mode)
        if wanted == 1:
            return self._one(lambda client: client._run(chat_send(client._core, body)))
        found = self._gather(mode, wanted, lambda c: c._run(chat_send(c._core, body)))
        needed = _manifest_needed([answer.bundle for answer in found])
        return chat_agreed(mode, found, self.vkeys(), self._manifest(needed) if needed else b"")

    def embed(
        self, model: str, texts: Sequence[str], *, mode: str = "attested", audit: str = "private"
    ) -> EmbedResult:
        """:meth:`Client.embed` on the next node that answers; for ``replicated:K``, on K nodes
        of distinct operators whose vectors must agree as inference outputs do (bit for bit
        on one engine identity, across kernel classes within the tolerance the model's
        manifest declares): else :class:`DisagreementError`."""
        wanted = replicas_of(mode)
        if wanted == 1:
            return self._one(lambda client: client.embed(model, texts, audit=audit, mode=mode))
        nonce = secrets.token_urlsafe(16)
        found = self._gather(mode, wanted, lambda c: c._run(embed_flow(
            c._core, model, texts, audit=audit, mode=mode, nonce=nonce, single=False)))  # fmt: skip
        needed = _manifest_needed([answer.bundle for answer in found])
        manifest = self._manifest(needed) if needed else b""
        return _embedded(_agreed(mode, _as_results(found), self.vkeys(), manifest))

    def _manifest(self, ref: str) -> bytes:
        """A manifest's bytes from any node (checked against its CID by the caller)."""
        problems = []
        for client in self.clients:
            try:
                return client._request("GET", f"/v1/manifests/{ref}").content
            except Error as exc:
                problems.append(f"{client.url}: {exc}")
        raise NetworkError(f"no node served manifest {ref!r}: " + "; ".join(problems))


def _equivocation(answer: object, checkpoint: str) -> dict[str, Any] | None:
    """The equivocation evidence in a node's answer to gossip, checked here, if it is about
    the log of ``checkpoint``."""
    found = answer.get("equivocation") if isinstance(answer, dict) else None
    if isinstance(found, dict) and found:
        verify_evidence(found)  # and it must be about the log of this checkpoint
        if found.get("log") == checkpoint.split("\n", 1)[0]:
            return dict(found)
    return None


def _accused(document: object, convicted: Mapping[str, str]) -> str | None:
    """The node a piece of evidence accuses, unless it is malformed or already convicted."""
    accused = document.get("vkey") if isinstance(document, dict) else None
    return accused if isinstance(accused, str) and accused not in convicted else None


def _as_results(found: list[EmbedResult]) -> list[Result]:
    return [Result({"embeddings": e.embeddings}, e.bundle, e.manifest, e.capabilities)
            for e in found]  # fmt: skip


def _embedded(agreed: Result) -> EmbedResult:
    return EmbedResult(
        agreed.outputs["embeddings"], agreed.bundle, agreed.manifest, agreed.capabilities
    )


def _manifest_needed(bundles: list[Bundle]) -> str | None:
    """The manifest CID agreement needs to compare the answers within a tolerance (outputs
    and engines differ), else ``None``."""
    first = bundles[0].receipt
    if len({b.receipt["outputs"] for b in bundles}) == 1:
        return None
    if all(b.receipt["engine"] == first["engine"] for b in bundles):
        return None
    return str(first["manifest"])


def _agreed(mode: str, answers: list[Result], trusted: list[str], manifest: bytes) -> Result:
    """One bundle of K agreeing answers, or a :class:`DisagreementError` with all of them.

    Answers agree bit for bit; from different engine classes, within the tolerance the model's
    manifest declares (the bundle then carries every answer's outputs and the manifest)."""
    bundles = tuple(answer.bundle for answer in answers)
    first = bundles[0]
    compared: tuple[bytes, ...] = ()
    observed = 0.0
    if len({b.receipt["outputs"] for b in bundles}) > 1:
        same_engine = all(b.receipt["engine"] == first.receipt["engine"] for b in bundles)
        tolerance = None
        if not same_engine:
            declared = Manifest.from_bytes(manifest, first.receipt["manifest"])
            tolerance = declared.body["determinism"].get("tolerance")
            if tolerance is None:
                raise VerificationError(
                    f"{mode}: the nodes run on different CPU kernel classes and "
                    f"{declared.repository}@{declared.version} declares no tolerance to compare "
                    "their outputs: publish it calibrated (verinfer model publish --calibrate)"
                )
        bound = 0.0
        if tolerance is not None:  # the one rule: the calibrated bound, for measured classes
            try:
                bound = cross_class_bound([b.receipt["engine"] for b in bundles], tolerance)
            except VerificationError:  # the verifier below names why, as it does offline
                bound = float(tolerance["abs"])
        verdicts = [within_tolerance(answers[0].outputs, a.outputs, bound) for a in answers[1:]]
        if tolerance is None or not all(agrees for agrees, _ in verdicts):
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
        observed = max(d for _, d in verdicts if d is not None)
    combined = Bundle(
        first.receipt,
        first.index,
        first.proof,
        first.checkpoint,
        first.cosignatures,
        Agreement(bundles[1:], compared, manifest if compared else b"", observed),
    )
    verify_bundle(combined, trusted)  # agreement of model, inputs, nonce and outputs again
    return Result(answers[0].outputs, combined, answers[0].manifest, answers[0].capabilities)


class AsyncNetwork(_Nodes[AsyncClient]):
    """:class:`Network`, awaited: the same network file, fail-over, ``replicated:K`` agreement
    (the K requests run concurrently) and evidence checks, over :class:`AsyncClient` drivers.
    Use ``async with AsyncNetwork(path) as network``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 60.0,
        trusted_publishers: PublisherTrust = (),
        known_publishers: str | os.PathLike[str] | None = None,
        on_pin: Notify | None = None,
    ) -> None:
        nodes, triples = self._read(path)
        self.publishers = publishers_of(trusted_publishers, known_publishers, on_pin, None)
        self.clients = [
            AsyncClient(
                url,
                trusted_vkeys=[vkey],
                timeout=timeout,
                retries=1,
                trusted_publishers=self.publishers,
            )
            for url, vkey, _ in triples
        ]
        self._wire(nodes, triples)

    async def aclose(self) -> None:
        """Close every client."""
        for client in self.clients:
            await client.aclose()

    async def __aenter__(self) -> AsyncNetwork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

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
        """:meth:`Network.infer`, awaited."""
        wanted = replicas_of(mode)
        if wanted > 1 and durability != "durable":
            raise InputError(f"durability {durability!r} is for one node's answer, not {mode!r}")
        if wanted > 1:
            nonce = nonce or secrets.token_hex(16)
            return await self._replicated(model, inputs, mode, wanted, nonce, audit)
        failures = []
        for client in self._order():
            try:
                return await client.infer(
                    model, inputs, mode=mode, nonce=nonce, audit=audit, durability=durability
                )
            except (NetworkError, LimitExceeded, StorageError, StaleHistory) as exc:
                failures.append(f"{client.url}: {exc}")  # a lie (VerificationError) propagates
        raise NetworkError("no node answered: " + "; ".join(failures))

    async def _replicated(  # noqa: PLR0917 - one request's fields
        self,
        model: str,
        inputs: Mapping[str, Any],
        mode: str,
        wanted: int,
        nonce: str,
        audit: str,
    ) -> Result:
        agreeing = await self._gather(
            mode, wanted, lambda c: c._infer(model, inputs, mode=mode, nonce=nonce, audit=audit)
        )
        needed = _manifest_needed([answer.bundle for answer in agreeing])
        manifest = await self._manifest(needed) if needed else b""
        return await asyncio.to_thread(_agreed, mode, agreeing, self.vkeys(), manifest)

    async def _gather(
        self, mode: str, wanted: int, ask: Callable[[AsyncClient], Awaitable[T]]
    ) -> list[T]:
        """:meth:`Network._gather`, the K requests run concurrently."""
        candidates = self._candidates(mode, wanted)
        answers: dict[str, T] = {}  # by operator
        failures: list[str] = []
        while len(answers) < wanted:
            batch = self._batch(candidates, set(answers), wanted)
            if not batch:
                raise NetworkError(
                    f"{mode}: only {len(answers)} of {wanted} operators answered: "
                    + "; ".join(failures)
                )
            found = await asyncio.gather(*(ask(c) for c in batch), return_exceptions=True)
            for client, answer in zip(batch, found, strict=True):
                if isinstance(answer, NetworkError | LimitExceeded | StorageError | NotFound
                              | StaleHistory):  # fmt: skip
                    failures.append(f"{client.url}: {answer}")
                elif isinstance(answer, BaseException):
                    raise answer  # VerificationError propagates
                else:
                    answers[self._operators[client.url]] = answer
        return list(answers.values())

    async def _one(self, ask: Callable[[AsyncClient], Awaitable[T]]) -> T:
        failures = []
        for client in self._order():
            try:
                return await ask(client)
            except (NetworkError, LimitExceeded, StorageError, StaleHistory) as exc:
                failures.append(f"{client.url}: {exc}")
        raise NetworkError("no node answered: " + "; ".join(failures))

    async def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, str]],
        *,
        mode: str = "attested",
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        audit: str = "private",
    ) -> ChatResult:
        """:meth:`Network.chat`, awaited."""
        sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed,
                    "max_tokens": max_tokens, "stop": stop}  # fmt: skip
        body = chat_request(model, messages=messages, sampling=sampling, audit=audit, mode=mode)
        return await self._chat(mode, body)

    async def generate(
        self,
        model: str,
        prompt: str,
        *,
        mode: str = "attested",
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        audit: str = "private",
    ) -> ChatResult:
        """:meth:`Network.generate`, awaited."""
        sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed,
                    "max_tokens": max_tokens, "stop": stop}  # fmt: skip
        body = chat_request(model, prompt=prompt, sampling=sampling, audit=audit, mode=mode)
        return await self._chat(mode, body)

    async def _chat(self, mode: str, body: Mapping[str, Any]) -> ChatResult:
        wanted = replicas_of(mode)
        if wanted == 1:
            return await self._one(lambda client: client._run(chat_send(client._core, body)))
        found = await self._gather(mode, wanted, lambda c: c._run(chat_send(c._core, body)))
        needed = _manifest_needed([answer.bundle for answer in found])
        manifest = await self._manifest(needed) if needed else b""
        return await asyncio.to_thread(chat_agreed, mode, found, self.vkeys(), manifest)

    async def embed(
        self, model: str, texts: Sequence[str], *, mode: str = "attested", audit: str = "private"
    ) -> EmbedResult:
        """:meth:`Network.embed`, awaited."""
        wanted = replicas_of(mode)
        if wanted == 1:
            return await self._one(lambda c: c.embed(model, texts, audit=audit, mode=mode))
        nonce = secrets.token_urlsafe(16)
        found = await self._gather(mode, wanted, lambda c: c._run(embed_flow(
            c._core, model, texts, audit=audit, mode=mode, nonce=nonce, single=False)))  # fmt: skip
        needed = _manifest_needed([answer.bundle for answer in found])
        manifest = await self._manifest(needed) if needed else b""
        agreed = await asyncio.to_thread(_agreed, mode, _as_results(found), self.vkeys(), manifest)
        return _embedded(agreed)

    async def _manifest(self, ref: str) -> bytes:
        problems = []
        for client in self.clients:
            try:
                return (await client._request("GET", f"/v1/manifests/{ref}")).content
            except Error as exc:
                problems.append(f"{client.url}: {exc}")
        raise NetworkError(f"no node served manifest {ref!r}: " + "; ".join(problems))

    async def gossip(self, checkpoint: str) -> dict[str, Any] | None:
        """:meth:`Network.gossip`, awaited."""
        for client in self.clients:
            try:
                response = await client._http.post("/v1/gossip", content=checkpoint.encode())
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                found = _equivocation(json_of(response), checkpoint)
                if found is not None:
                    return found
        return None

    async def check_evidence(self) -> dict[str, str]:
        """:meth:`Network.check_evidence`, awaited (re-execution runs on a worker thread)."""
        for client in self.clients:
            try:
                found = json_of(await client._request("GET", "/v1/evidence"))
            except Error:
                continue
            for document in found if isinstance(found, list) else []:
                accused = _accused(document, self.convicted)
                if accused is None:
                    continue
                try:
                    model_cid = model_of(document)
                    model = await client.blob(model_cid) if model_cid is not None else None
                    verdict = await asyncio.to_thread(verify_evidence, document, model=model)
                    self.convicted[accused] = verdict
                except (Error, ValueError, KeyError, TypeError):
                    continue
        return dict(self.convicted)


def connect(target: str | os.PathLike[str], **options: Any) -> Client | Network:
    """A :class:`Client` for a node URL, or a :class:`Network` for a network file."""
    text = os.fspath(target)
    if text.startswith(("http://", "https://")):
        return Client(text, **options)
    return Network(text, **options)
