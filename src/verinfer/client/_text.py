"""Text flows (chat, generate, embed), written once for both drivers; no network I/O here.

A chat answer is accepted only if: the bundle verifies under a trusted node key
(:func:`verinfer.modes.generation.verify_generation`: signature, inclusion, the record's
digests, the sampler replayed on the committed values, the end); the record's prompt is the
prompt this client builds itself from its messages with the manifest's chat template and
tokenizer (fetched by CID, hash-checked); its sampling parameters are exactly the ones sent
(every one is sent, the seed drawn here unless given: none is the node's to choose); the nonce
is the one sent; and the model is the one asked for (a named ref through the owner's signed
history, or a manifest CID). The text returned is decoded here from the verified tokens, not
taken from the node; a stream's pieces must add up to it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from verinfer import tensors
from verinfer.client._core import Call, Core, Flow, Work, json_of
from verinfer.errors import DisagreementError, InputError, VerificationError
from verinfer.hub.documents import Manifest
from verinfer.modes.generation import MAX_REEXECUTED, verify_generation
from verinfer.modes.replicated import Agreement, generations_agree
from verinfer.text.chat import Tokenizer, check_messages
from verinfer.text.generation import Generation, stop_reached
from verinfer.text.sampler import Sampling
from verinfer.verify import Bundle, mode_matches, replicas_of, verify_bundle

__all__ = [
    "ChatResult",
    "EmbedResult",
    "chat_agreed",
    "chat_answer",
    "chat_flow",
    "chat_request",
    "chat_send",
    "embed_flow",
    "sse_event",
    "stream_request",
]


@dataclass(frozen=True)
class ChatResult:
    """A verified generation: the text (decoded here from the verified tokens, cut before a
    stop string), the record, its bundle, the manifest's CID and the capabilities."""

    text: str
    generation: Generation
    bundle: Bundle
    manifest: str
    capabilities: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EmbedResult:
    """Verified embeddings (``[texts, dimensions]`` float32) and their bundle."""

    embeddings: np.ndarray
    bundle: Bundle
    manifest: str
    capabilities: dict[str, str] = field(default_factory=dict)


def _text_section(manifest: Manifest, kind: str) -> dict[str, Any]:
    text = manifest.text
    if text is None or text.get("kind") != kind:
        raise VerificationError(
            f"the answer's manifest {manifest.cid} has no {kind} section: not a {kind} model"
        )
    return text


def _named_or_cid(core: Core, model: str, bundle: Bundle) -> Flow[Manifest]:
    """The answer's manifest, when it is the one asked for: by name (a trusted publisher's
    current version) or by manifest CID. Not by model CID: a text model's manifest carries the
    chat template and tokenizer that shape the prompt and the answer, and any publisher may
    sign one for the same weights, so the node would choose it."""
    receipt = bundle.receipt
    if "/" in model:
        yield from core.named(model, bundle)
    elif model == receipt["model"] and model != receipt["manifest"]:
        raise VerificationError(
            f"asked by model CID {model!r}: the node chose the manifest, whose chat template "
            "and tokenizer shape the prompt and the answer; ask by owner/name or manifest CID"
        )
    elif model != receipt["manifest"]:
        raise VerificationError(f"asked for {model!r}, the receipt names {receipt['model']!r}")
    if receipt["manifest"] is None:
        raise VerificationError("a text answer must name its manifest")
    manifest = yield from core.manifest(str(receipt["manifest"]))
    if manifest.model != receipt["model"]:
        raise VerificationError("the receipt's manifest is of another model")
    return manifest


def _claims(bundle: Bundle, nonce: str, audit: str, mode: str) -> None:
    receipt = bundle.receipt
    if receipt["nonce"] != nonce:
        raise VerificationError(f"the receipt carries nonce {receipt['nonce']!r}, not {nonce!r}")
    if receipt["audit"] != audit:
        raise VerificationError(f"asked for {audit} tensors, the receipt states otherwise")
    if not mode_matches(mode, receipt["mode"]):
        raise VerificationError(f"asked for mode {mode!r}, the receipt states {receipt['mode']!r}")


def _single(mode: str, single: bool) -> None:
    if replicas_of(mode) > 1 and single:
        raise InputError(f"mode {mode!r} asks several nodes: use a Network (--network)")


def chat_flow(
    core: Core,
    model: str,
    *,
    messages: Sequence[Mapping[str, str]] | None = None,
    prompt: str | None = None,
    sampling: Mapping[str, Any],
    audit: str = "private",
    mode: str = "attested",
) -> Flow[ChatResult]:
    """``POST /v1/generate`` and the checks of the module docstring (one node's modes: a
    :class:`~verinfer.client.Network` asks several nodes)."""
    _single(mode, True)
    body = chat_request(model, messages=messages, prompt=prompt, sampling=sampling, audit=audit)
    return (yield from chat_send(core, body))


def chat_send(core: Core, body: Mapping[str, Any]) -> Flow[ChatResult]:
    """Send the generation request ``body`` (:func:`chat_request`) to the node and verify
    its answer (for ``replicated:K``, this node's answer, one of the K)."""
    yield from core.node_vkey()
    answer = json_of((yield from core.send(Call("POST", "/v1/generate", json=body))))
    return (yield from chat_answer(core, body, answer))


def chat_request(
    model: str,
    *,
    messages: Sequence[Mapping[str, str]] | None = None,
    prompt: str | None = None,
    sampling: Mapping[str, Any],
    audit: str = "private",
    mode: str = "attested",
) -> dict[str, Any]:
    """The JSON body of a generation request, with a fresh nonce; ``replicated:K`` (one body
    for the K nodes): with a seed drawn here if none is given, so that every node samples
    with the same one."""
    if (messages is None) == (prompt is None):
        raise InputError("give either messages or a prompt")
    given = {k: v for k, v in sampling.items() if v is not None}
    given.setdefault("seed", secrets.randbelow(1 << 53))  # never the node's to choose
    # every parameter is sent: one left out would be the node's to state (PROTOCOL.md §16)
    asked = Sampling(**_sampling_fields(given)).to_json()
    body: dict[str, Any] = {"model": model, "nonce": secrets.token_urlsafe(16), "audit": audit}
    if replicas_of(mode) > 1:
        body["mode"] = mode
        asked.setdefault("seed", secrets.randbelow(1 << 53))
    body.update(asked)
    if messages is not None:
        body["messages"] = check_messages(list(messages))
    else:
        body["prompt"] = prompt
    return body


def streamed(pieces: Sequence[str], result: ChatResult) -> ChatResult:
    """The verified ``result`` of a stream whose text ``pieces`` were shown as they came;
    :class:`VerificationError` if they are not its verified text (the node streamed one text
    and proved another: what was shown must be taken back)."""
    shown = "".join(pieces)
    if shown != result.text:
        raise VerificationError(
            f"the streamed text is not the verified text: shown {shown!r}, the verified tokens "
            f"say {result.text!r}"
        )
    return result


def sse_event(line: str) -> tuple[str | None, Any]:
    """``(text piece, verinfer evidence)`` of one line of a streamed chat answer (either may
    be ``None``); :class:`VerificationError` for a malformed chunk."""
    if not line.startswith("data: ") or line == "data: [DONE]":
        return None, None
    try:
        chunk = json.loads(line[6:])
        piece = chunk["choices"][0].get("delta", {}).get("content")
        return (piece or None), chunk.get("verinfer")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise VerificationError(f"malformed stream chunk: {exc}") from exc


def stream_request(
    model: str, messages: Sequence[Mapping[str, str]], sampling: Mapping[str, Any]
) -> dict[str, Any]:
    """The body of a streamed chat request (``chat_request`` with ``stream``)."""
    return {**chat_request(model, messages=messages, sampling=sampling), "stream": True}


def chat_answer(core: Core, body: Mapping[str, Any], answer: Any) -> Flow[ChatResult]:
    """Verify the answer (``bundle``, ``generation``, ``capabilities``) to request ``body``."""
    model, nonce, audit = body["model"], body["nonce"], body["audit"]
    mode = body.get("mode", "attested")
    checked, prompt = body.get("messages"), body.get("prompt")
    asked = {k: body[k] for k in ("temperature", "top_p", "top_k", "seed", "max_tokens", "stop")
             if k in body}  # fmt: skip
    vkey = yield from core.node_vkey()
    try:
        bundle = Bundle.from_json(answer["bundle"], replica=replicas_of(mode) > 1)
        generation = Generation.from_json(answer["generation"])
        capabilities = dict(answer.get("capabilities") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError(f"malformed answer from {core.url}: {exc}") from exc
    manifest = yield from _named_or_cid(core, model, bundle)
    text = _text_section(manifest, "chat")
    tokenizer = Tokenizer((yield from core.kept(text["tokenizer"])))
    if checked is not None:
        expected = tokenizer.encode_chat(text["chat_template"], checked, text["special_tokens"])
    else:
        expected = tokenizer.encode(str(prompt))
    if list(generation.prompt) != expected:
        raise VerificationError("the record's prompt is not the prompt this client sent")
    if len(generation.prompt) + len(generation.tokens) > MAX_REEXECUTED:
        raise VerificationError(
            f"the record holds {len(generation.prompt) + len(generation.tokens)} tokens, more "
            f"than the {MAX_REEXECUTED} a judge re-executes: a lie in it could never be shown"
        )
    wanted = Sampling(**_sampling_fields(asked))
    if wanted != generation.sampling:
        raise VerificationError(
            f"asked for sampling {asked!r}, the record states {generation.sampling.to_json()!r}"
        )
    yield Work(
        lambda: verify_generation(
            bundle,
            generation,
            [vkey],
            ends=tokenizer.ends(text["special_tokens"]),
            detokenize=tokenizer.decode,
            manifest=manifest,
            tokenizer_cid=text["tokenizer"],
        )
    )
    _claims(bundle, nonce, audit, mode)
    decoded = tokenizer.decode(generation.tokens)
    cut = stop_reached(decoded, generation.sampling.stop)
    return ChatResult(
        decoded if cut is None else decoded[:cut], generation, bundle, manifest.cid, capabilities
    )


def _sampling_fields(asked: Mapping[str, Any]) -> dict[str, Any]:
    found = {k: asked[k] for k in ("temperature", "top_p", "top_k", "seed", "max_tokens")
             if k in asked}  # fmt: skip
    if "stop" in asked:
        stop = asked["stop"]
        found["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    return found


def embed_flow(
    core: Core,
    model: str,
    texts: Sequence[str],
    *,
    audit: str = "private",
    mode: str = "attested",
    nonce: str | None = None,
    single: bool = True,
) -> Flow[EmbedResult]:
    """``POST /v1/embeddings``; the bundle must prove the inputs this client tokenised itself
    (with the manifest's tokenizer) and exactly the vectors returned. ``single``: refuse
    modes that need several nodes (a :class:`~verinfer.client.Network` asks each node for its
    part, with one ``nonce``)."""
    _single(mode, single)
    if isinstance(texts, str) or not texts:
        raise InputError("texts must be a non-empty list of strings")
    vkey = yield from core.node_vkey()
    nonce = nonce or secrets.token_urlsafe(16)
    body = {"model": model, "input": list(texts), "encoding_format": "float", "nonce": nonce,
            "audit": audit, "mode": mode}  # fmt: skip
    answer = json_of((yield from core.send(Call("POST", "/v1/embeddings", json=body))))
    try:
        evidence = answer["verinfer"]
        bundle = Bundle.from_json(evidence["bundle"], replica=replicas_of(mode) > 1)
        vectors = np.array([d["embedding"] for d in answer["data"]], dtype=np.float32)
        capabilities = dict(evidence.get("capabilities") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError(f"malformed answer from {core.url}: {exc}") from exc
    manifest = yield from _named_or_cid(core, model, bundle)
    text = _text_section(manifest, "embedding")
    tokenizer = Tokenizer((yield from core.kept(text["tokenizer"])))
    ids, mask = tokenizer.encode_padded(list(texts))
    inputs = {
        "input_ids": np.array(ids, dtype=np.int64),
        "attention_mask": np.array(mask, dtype=np.int64),
    }
    verify_bundle(bundle, [vkey], inputs=inputs, outputs={"embeddings": vectors})
    _claims(bundle, nonce, audit, mode)
    return EmbedResult(vectors, bundle, manifest.cid, capabilities)


def chat_agreed(
    mode: str, results: Sequence[ChatResult], trusted: list[str], manifest: bytes
) -> ChatResult:
    """One answer from K verified answers to one generation request (``replicated:K``), or a
    :class:`DisagreementError` carrying every signed answer, naming where they part.

    One manifest; on one engine identity, the records are identical; across kernel classes,
    they agree by :func:`~verinfer.modes.replicated.generations_agree` (identical tokens,
    commitments within twice the generation tolerance). The bundle then carries every
    receipt, and, across classes, every record's outputs and the ``manifest`` (its bytes):
    :func:`~verinfer.verify.verify_bundle` re-judges the agreement offline, here first."""
    bundles = tuple(result.bundle for result in results)
    first = results[0]
    for result in results[1:]:
        if result.manifest != first.manifest:
            raise DisagreementError(
                f"{mode}: the nodes answered from manifests {first.manifest} and "
                f"{result.manifest}: one request, one manifest",
                bundles,
            )
    compared: tuple[bytes, ...] = ()
    observed = 0.0
    if len({bundle.receipt["outputs"] for bundle in bundles}) > 1:
        by_engine: dict[str, ChatResult] = {}
        for result in results:  # on one engine identity: identical, every pair
            same = by_engine.setdefault(result.bundle.receipt["engine"], result)
            if result.bundle.receipt["outputs"] != same.bundle.receipt["outputs"]:
                raise DisagreementError(
                    f"{mode}: node {result.bundle.receipt['node']!r} and node "
                    f"{same.bundle.receipt['node']!r}, on one engine: "
                    + _first_difference(same.generation, result.generation),
                    bundles,
                )
        reference = first.generation.outputs()
        for result in results[1:]:
            if result.bundle.receipt["engine"] == first.bundle.receipt["engine"]:
                continue
            try:
                observed = max(observed, generations_agree(reference, result.generation.outputs()))
            except VerificationError as exc:
                raise DisagreementError(
                    f"{mode}: node {result.bundle.receipt['node']!r} and node "
                    f"{first.bundle.receipt['node']!r}, on engines "
                    f"{result.bundle.receipt['engine']} and {first.bundle.receipt['engine']}: "
                    f"{exc}",
                    bundles,
                ) from exc
        compared = tuple(tensors.encode_binary(r.generation.outputs()) for r in results)
    head = first.bundle
    evidence = Agreement(bundles[1:], compared, manifest if compared else b"", observed)
    combined = Bundle(
        head.receipt, head.index, head.proof, head.checkpoint, head.cosignatures, evidence
    )
    verify_bundle(combined, trusted)  # the agreement, as an offline verifier judges it
    return ChatResult(first.text, first.generation, combined, first.manifest, first.capabilities)


def _first_difference(one: Generation, other: Generation) -> str:
    """Where two records that must be identical part."""
    for position in range(min(len(one.tokens), len(other.tokens))):
        if one.tokens[position] != other.tokens[position]:
            return (
                f"the nodes disagree at token {position}: token {one.tokens[position]} "
                f"against {other.tokens[position]}"
            )
        if not (
            np.array_equal(one.top_ids[position], other.top_ids[position])
            and one.top_logits[position].tobytes() == other.top_logits[position].tobytes()
        ):
            return (
                f"the nodes disagree at token {position}: the same token, other committed "
                "logits (on one engine they must be identical)"
            )
    return (
        f"the nodes disagree at token {min(len(one.tokens), len(other.tokens))}: one "
        f"generation ends there ({len(one.tokens)} tokens against {len(other.tokens)})"
    )
