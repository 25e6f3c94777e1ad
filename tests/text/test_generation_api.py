"""Generation over HTTP: the real ``openai`` client against a node on loopback, streaming
included; the bundle verifies offline; bad input gets a 4xx JSON answer."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from text_support import TextNode

from verinfer.client import AsyncClient, ChatResult, Client
from verinfer.errors import VerificationError
from verinfer.modes.generation import verify_generation
from verinfer.text.chat import Tokenizer
from verinfer.text.generation import Generation
from verinfer.verify import Bundle

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def _verify(node: TextNode, evidence: dict) -> Generation:  # type: ignore[type-arg]
    generation = Generation.from_json(evidence["generation"])
    tokenizer_cid = node.manifest.text["tokenizer"]  # type: ignore[index]
    tokenizer = Tokenizer(node.node.hub.blobs.get(tokenizer_cid))
    verify_generation(
        Bundle.from_json(evidence["bundle"]), generation, [node.node.vkey],
        ends=[tokenizer.token_id("<|im_end|>")], detokenize=tokenizer.decode,
        manifest=node.manifest, tokenizer_cid=tokenizer_cid,
    )  # fmt: skip
    return generation


def test_openai_client_chat_answers_paris_with_a_verifiable_bundle(
    openai_client: Any, text_node: TextNode
) -> None:
    client = openai_client("/openai/v1")
    assert "alice/smollm2@1" in [m.id for m in client.models.list()]
    answer = client.chat.completions.create(
        model="alice/smollm2",
        messages=FRANCE,
        temperature=0,
        max_tokens=12,  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.content == "The capital of France is Paris."
    assert answer.choices[0].finish_reason == "stop"
    evidence = answer.model_extra["verinfer"]  # type: ignore[index]
    generation = _verify(text_node, evidence)
    assert answer.usage is not None
    assert answer.usage.completion_tokens == len(generation.tokens)
    # the record can be fetched again by its receipt's digest, with the requester's capability
    outputs = Bundle.from_json(evidence["bundle"]).receipt["outputs"]
    kept = httpx.get(
        f"{text_node.url}/v1/tensors/{outputs}",
        headers={"Authorization": f"Bearer {evidence['capabilities'][outputs]}"},
    )
    assert kept.status_code == 200


def test_completion_without_a_system_turn_answers_paris(
    openai_client: Any, text_node: TextNode
) -> None:
    client = openai_client("/v1")
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    answer = client.completions.create(
        model="alice/smollm2", prompt=prompt, temperature=0, max_tokens=12
    )
    assert answer.choices[0].text == "The capital of France is Paris."
    _verify(text_node, answer.model_extra["verinfer"])  # type: ignore[index]


def test_openai_client_streams_tokens_and_the_bundle_comes_last(
    openai_client: Any, text_node: TextNode
) -> None:
    client = openai_client("/openai/v1")
    stream = client.chat.completions.create(
        model="alice/smollm2", messages=[{"role": "user", "content": "Say hello."}],
        temperature=0.7, seed=11, max_tokens=6, stream=True,
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    evidence = last.model_extra["verinfer"]  # type: ignore[index]
    generation = _verify(text_node, evidence)
    assert generation.sampling.seed == 11
    assert generation.sampling.temperature == 0.7
    tokenizer = Tokenizer(text_node.node.hub.blobs.get(text_node.manifest.text["tokenizer"]))  # type: ignore[index]
    assert text == tokenizer.decode(generation.tokens)
    assert all(c.model_extra.get("verinfer") is None for c in chunks[:-1])  # type: ignore[union-attr]


def test_generate_route_and_stop_strings(text_node: TextNode) -> None:
    answer = httpx.post(
        f"{text_node.url}/v1/generate",
        json={"model": "alice/smollm2", "messages": FRANCE, "temperature": 0,
              "max_tokens": 12, "stop": " Paris"},
        timeout=60,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["text"] == "The capital of France is"
    assert body["finish_reason"] == "stop"
    _verify(text_node, body)


@pytest.mark.parametrize(
    ("body", "status", "match"),
    [
        ({"model": "alice/nothing", "messages": FRANCE}, 404, "nothing"),
        ({"model": "alice/smollm2", "messages": FRANCE, "temperature": 5}, 400, "temperature"),
        ({"model": "alice/smollm2", "messages": FRANCE, "top_k": 50}, 400, "top_k"),
        ({"model": "alice/smollm2", "messages": []}, 400, "messages"),
        ({"model": "alice/smollm2", "messages": [{"role": "x"}]}, 400, r"messages\[0\]"),
        ({"model": "alice/smollm2", "messages": FRANCE, "max_tokens": 9000}, 400, "max_tokens"),
        ({"model": "alice/smollm2", "messages": FRANCE, "max_tokens": 2040}, 400, "node's limit"),
        ({"model": "alice/smollm2", "messages": FRANCE, "stop": 3}, 400, "stop"),
        ({"model": "alice/smollm2", "messages": FRANCE, "n": 2}, 400, "n must be 1"),
        ({"messages": FRANCE}, 400, "model must be"),
    ],
)
def test_bad_requests_get_4xx_json(
    text_node: TextNode, body: dict, status: int, match: str
) -> None:  # type: ignore[type-arg]
    answer = httpx.post(f"{text_node.url}/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == status, answer.text
    assert re.search(match, answer.json()["message"]), answer.text


class _Tampering(httpx.BaseTransport):
    """Forwards to the real node and lets a test change the generation answer on the way."""

    def __init__(self, change: Any) -> None:
        self._inner = httpx.HTTPTransport()
        self._change = change

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.url.path != "/v1/generate":
            return response
        body = json.loads(response.read())
        self._change(body)
        return httpx.Response(response.status_code, json=body)

    def close(self) -> None:
        self._inner.close()


def test_sdk_chat_is_verified_and_decodes_the_text_itself(
    text_node: TextNode, tmp_path: Path
) -> None:
    def lie_in_text(body: dict[str, Any]) -> None:
        body["text"] = "Lyon."  # the text field is never trusted: the SDK decodes the tokens

    with Client(text_node.url, known_nodes=tmp_path / "k.json",
                transport=_Tampering(lie_in_text)) as client:  # fmt: skip
        answer = client.chat("alice/smollm2", FRANCE, temperature=0, max_tokens=12)
    assert answer.text == "The capital of France is Paris."
    assert answer.bundle.receipt["manifest"] == text_node.manifest.cid


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda b: b["generation"]["tokens"].__setitem__(0, 100), "step 5"),
        (lambda b: b["generation"]["prompt"].pop(3), "prompt is not the prompt"),
        (lambda b: b["generation"]["sampling"].__setitem__("seed", 99), "asked for sampling"),
    ],
)
def test_sdk_refuses_a_changed_generation(
    text_node: TextNode, tmp_path: Path, change: Any, match: str
) -> None:
    with (
        Client(text_node.url, known_nodes=tmp_path / "k.json",
               transport=_Tampering(change)) as client,
        pytest.raises(VerificationError, match=match),
    ):  # fmt: skip
        client.chat("alice/smollm2", FRANCE, temperature=0, max_tokens=3, seed=1)


def test_async_sdk_generate_and_embed(text_node: TextNode, embedding_manifest: object,
                                      tmp_path: Path) -> None:  # fmt: skip
    async def go() -> tuple[str, np.ndarray]:
        async with AsyncClient(text_node.url, known_nodes=tmp_path / "k.json") as client:
            prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n" \
                "<|im_start|>assistant\n"  # fmt: skip
            generated = await client.generate("alice/smollm2", prompt, temperature=0,
                                              max_tokens=12)  # fmt: skip
            embedded = await client.embed("alice/minilm", ["a cat", "a kitten", "tax law"])
            pieces: list[str] = []
            async for piece in client.chat_stream("alice/smollm2", FRANCE, temperature=0,
                                                  max_tokens=12):  # fmt: skip
                if isinstance(piece, ChatResult):
                    assert piece.text == "".join(pieces)  # the verified text, streamed before
                    assert piece.bundle.receipt["node"] == text_node.node.vkey
                else:
                    pieces.append(piece)
            assert "".join(pieces) == "The capital of France is Paris."
            return generated.text, embedded.embeddings

    text, vectors = asyncio.run(go())
    assert text == "The capital of France is Paris."
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2]
