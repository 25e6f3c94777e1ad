"""A node's text generation: resolve a chat model, tokenize, decode with a KV cache, log.

A generation runs step by step on the node's engine (one ONNX Runtime run per token, each on
the calling thread, so concurrent generations interleave on the cores instead of queueing
behind one another). When it ends, the receipt binding the :class:`~verinfer.text.generation.
Generation` record is appended to the node's log like any other, and the record is archived by
its digests, so the requester (capabilities) and auditors can fetch it again by receipt.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from verinfer import modes, tensors
from verinfer.errors import InputError
from verinfer.hub import Manifest
from verinfer.text.chat import Tokenizer, check_messages
from verinfer.text.generation import Decoder, Generation, empty_cache, stop_reached
from verinfer.text.sampler import Sampling
from verinfer.verify import Bundle

if TYPE_CHECKING:
    from verinfer.node.service import Node

__all__ = ["MAX_EMBEDDINGS", "MAX_SEQUENCE", "Delta", "Finished", "TextModels"]

MAX_EMBEDDINGS = 64  # texts in one embeddings request
# prompt plus output tokens of one generation on this node, whatever the model's context: a
# pass over n tokens allocates n x vocabulary logits and heads x n x n attention scores
# (SmolLM2 at 2,048: about 0.6 GB), which must fit the per-process run memory cap (1 GiB by
# default, PROTOCOL.md §14) with room for other runs
MAX_SEQUENCE = 2048


@dataclass(frozen=True)
class Delta:
    """A piece of streamed text and the token that completed it."""

    token: int
    text: str


@dataclass(frozen=True)
class Finished:
    """The end of a generation: its text (cut before any stop string), record and bundle."""

    text: str
    generation: Generation
    bundle: Bundle
    manifest: Manifest
    capabilities: dict[str, str]


@dataclass(frozen=True)
class _Chat:
    manifest: Manifest
    tokenizer: Tokenizer
    ends: tuple[int, ...]
    blocks: int
    kv_heads: int
    head_dim: int


class TextModels:
    """Text generation over a node (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._chats: dict[str, _Chat] = {}  # by manifest CID (immutable)
        self._tokenizers: dict[str, Tokenizer] = {}  # embedding tokenizers by CID
        self._lock = threading.Lock()

    def chat_model(self, ref: str) -> _Chat:
        """The chat model ``ref`` names; :class:`InputError` if it is not one."""
        manifest = self._node.resolve(ref)
        with self._lock:
            found = self._chats.get(manifest.cid)
        if found is not None:
            return found
        text = manifest.text
        if text is None or text.get("kind") != "chat":
            raise InputError(f"{ref!r} is not a chat model (its manifest has no chat section)")
        tokenizer = Tokenizer(self._node.hub.blobs.get(text["tokenizer"]))
        ends = tokenizer.ends(text["special_tokens"])
        shapes = {spec["name"]: spec["shape"] for spec in manifest.body["inputs"]}
        blocks = sum(1 for name in shapes if name.startswith("past_key."))
        key = shapes.get("past_key.0")
        if not blocks or not isinstance(key, list) or len(key) != 4:
            raise InputError(f"{ref!r} has no key/value cache inputs")
        chat = _Chat(manifest, tokenizer, ends, blocks, int(key[1]), int(key[3]))
        with self._lock:
            self._chats[manifest.cid] = chat
        return chat

    def embedding_inputs(self, ref: str, texts: object) -> tuple[Manifest, dict[str, np.ndarray]]:
        """The manifest of embedding model ``ref`` and the tensors of ``texts`` (a string or
        1-64 strings), tokenized with its tokenizer (truncated, padded to the longest)."""
        manifest = self._node.resolve(ref)
        text = manifest.text
        if text is None or text.get("kind") != "embedding":
            raise InputError(f"{ref!r} is not an embedding model (no embedding section)")
        if isinstance(texts, str):
            texts = [texts]
        if (
            not isinstance(texts, list)
            or not 0 < len(texts) <= MAX_EMBEDDINGS
            or not all(isinstance(t, str) and t for t in texts)
        ):
            raise InputError(
                f"input must be a non-empty string or 1-{MAX_EMBEDDINGS} non-empty strings"
            )
        with self._lock:
            tokenizer = self._tokenizers.get(text["tokenizer"])
        if tokenizer is None:
            tokenizer = Tokenizer(self._node.hub.blobs.get(text["tokenizer"]))
            with self._lock:
                self._tokenizers[text["tokenizer"]] = tokenizer
        ids, mask = tokenizer.encode_padded(texts)
        inputs = {
            "input_ids": np.array(ids, dtype=np.int64),
            "attention_mask": np.array(mask, dtype=np.int64),
        }
        return manifest, inputs

    def prompt(self, chat: _Chat, messages: object = None, prompt: object = None) -> list[int]:
        """The prompt's token IDs from chat ``messages`` (rendered with the model's template)
        or a raw ``prompt`` text (control tokens in it are matched)."""
        text = chat.manifest.text or {}
        if messages is not None:
            checked = check_messages(messages)
            return chat.tokenizer.encode_chat(
                text["chat_template"], checked, text["special_tokens"]
            )
        if not isinstance(prompt, str) or not prompt:
            raise InputError(f"prompt must be a non-empty string, got {prompt!r}")
        return chat.tokenizer.encode(prompt)

    def generate(
        self,
        chat: _Chat,
        prompt: Sequence[int],
        sampling: Sampling,
        *,
        nonce: str | None = None,
        audit: str = "private",
        mode: str = "attested",
    ) -> Iterator[Delta | Finished]:
        """Decode, yielding text as it comes and, last, the :class:`Finished` answer; the
        receipt states ``mode`` (``replicated:K``: this node's answer is one of K)."""
        node = self._node
        asked = modes.parse(mode)
        if not asked.serves_text:
            raise InputError(f"mode {mode!r} is not available for text generation")
        node._check_judgeable(chat.manifest, asked)  # a model with random operators: refused
        context = min((chat.manifest.text or {})["context_length"], MAX_SEQUENCE)
        if len(prompt) + sampling.max_tokens > context:
            raise InputError(
                f"the prompt ({len(prompt)} tokens) and max_tokens ({sampling.max_tokens}) "
                f"exceed the {context} tokens this node generates over (the model's context "
                f"and the node's limit of {MAX_SEQUENCE})"
            )
        model = chat.manifest.model
        load = lambda: node._model_bytes(chat.manifest)  # noqa: E731 - node's loader
        node.engine.session(model, load)

        def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return node.engine.run(model, load, feed)

        cache = empty_cache(chat.blocks, chat.kv_heads, chat.head_dim)
        decoder = Decoder(
            run, cache, prompt, sampling, ends=chat.ends, detokenize=chat.tokenizer.decode
        )
        hold = max((len(s) for s in sampling.stop), default=1) - 1
        tokens: list[int] = []
        sent = 0
        for token in decoder:
            tokens.append(token)
            text = chat.tokenizer.decode(tokens)
            cut = stop_reached(text, sampling.stop)
            ready = cut if cut is not None else len(text) - hold
            while ready > sent and text[ready - 1] == "\ufffd":  # an incomplete UTF-8 sequence
                ready -= 1
            if ready > sent:
                yield Delta(token, text[sent:ready])
                sent = ready
        generation = decoder.generation
        assert generation is not None
        text = chat.tokenizer.decode(generation.tokens)
        cut = stop_reached(text, sampling.stop)
        final = text if cut is None else text[:cut]
        if len(final) > sent:
            yield Delta(generation.tokens[-1], final[sent:])
        yield self._log(chat.manifest, generation, final, nonce, audit, mode=asked.text)

    def _log(
        self,
        manifest: Manifest,
        generation: Generation,
        text: str,
        nonce: str | None,
        audit: str,
        *,
        mode: str = "attested",
    ) -> Finished:
        node = self._node
        inputs, outputs = generation.inputs(), generation.outputs()
        receipt = node.receipt_for(manifest, (inputs, tensors.map_digest(inputs)), outputs,
                                   mode=mode, nonce=nonce, audit=audit)  # fmt: skip
        inputs_digest, outputs_digest = receipt["inputs"], receipt["outputs"]
        committed = node.sequencer.append(receipt.data)
        bundle = Bundle(
            receipt, committed.index, tuple(committed.proof), committed.signed_checkpoint
        )
        capabilities = {d: node.access.capability(d) for d in (inputs_digest, outputs_digest)}
        return Finished(text, generation, bundle, manifest, capabilities)


def sampling_of(body: Mapping[str, Any], *, default_max: int = 16) -> Sampling:
    """Sampling parameters from a request body (OpenAI names); a missing seed is drawn here."""
    import secrets  # noqa: PLC0415

    stop = body.get("stop")
    if stop is None:
        stop = ()
    elif isinstance(stop, str):
        stop = (stop,)
    elif isinstance(stop, list):
        stop = tuple(stop)
    else:
        raise InputError(f"stop must be a string or a list of strings, got {stop!r}")
    seed = body.get("seed")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    return Sampling(
        temperature=1.0 if body.get("temperature") is None else body["temperature"],
        top_p=1.0 if body.get("top_p") is None else body["top_p"],
        top_k=8 if body.get("top_k") is None else body["top_k"],
        seed=secrets.randbelow(1 << 53) if seed is None else seed,
        max_tokens=default_max if max_tokens is None else max_tokens,
        stop=stop,
    )
