"""all-MiniLM-L6-v2 from its sentence-transformers zip: an independent numpy reference, the
ranking of related and unrelated sentences, and ``/v1/embeddings`` through the openai client
with a bundle that verifies offline."""

from __future__ import annotations

import json
from math import erf
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from safetensors.numpy import load
from text_support import TextNode, minilm_path
from tokenizers import Tokenizer

from verinfer import cid, note
from verinfer.client import Client
from verinfer.errors import InputError, NotFound
from verinfer.hub import Hub, Manifest
from verinfer.text.bert import convert_sentence_transformer, read_zip_member
from verinfer.verify import Bundle, verify_bundle

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The stock market fell sharply today.",
]


def _reference(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """BERT in float64 from the safetensors weights, mean pooling over the mask, L2 norm:
    written apart from the converter."""
    stored = load(read_zip_member(minilm_path(), "model.safetensors"))
    w = {k: v.astype(np.float64) for k, v in stored.items()}

    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))

    def layer_norm(x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * w[name + ".weight"] + w[name + ".bias"]

    def linear(x: np.ndarray, name: str) -> np.ndarray:
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    batch, length = ids.shape
    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][:length]
         + w["embeddings.token_type_embeddings.weight"][0])  # fmt: skip
    x = layer_norm(x, "embeddings.LayerNorm")
    hidden = np.where(mask[:, None, None, :] == 1, 0.0, -1e30)
    for i in range(6):
        p = f"encoder.layer.{i}."

        def heads(v: np.ndarray) -> np.ndarray:
            return v.reshape(batch, length, 12, 32).transpose(0, 2, 1, 3)

        q, k, v = (heads(linear(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(32) + hidden
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, 384)
        x = layer_norm(linear(context, p + "attention.output.dense") + x,
                       p + "attention.output.LayerNorm")  # fmt: skip
        x = layer_norm(linear(gelu(linear(x, p + "intermediate.dense")), p + "output.dense") + x,
                       p + "output.LayerNorm")  # fmt: skip
    pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_embeddings_match_a_numpy_reference_and_rank_related_sentences(
    minilm: tuple[bytes, bytes, dict[str, object]],
) -> None:
    model, tokenizer_bytes, text = minilm
    assert text["pooling"] == "mean"
    assert text["normalize"] is True
    assert text["dimensions"] == 384
    # the original tokenizer (pads to 128), as sentence-transformers would feed the model
    original = Tokenizer.from_str(read_zip_member(minilm_path(), "tokenizer.json").decode())
    encoded = original.encode_batch(SENTENCES)
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    ours = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    # the stored tokenizer pads only to the longest sentence: the same embeddings
    stored = Tokenizer.from_str(tokenizer_bytes.decode()).encode_batch(SENTENCES)
    short_ids = np.array([e.ids for e in stored], dtype=np.int64)
    short_mask = np.array([e.attention_mask for e in stored], dtype=np.int64)
    short = session.run(None, {"input_ids": short_ids, "attention_mask": short_mask})[0]
    np.testing.assert_allclose(short, ours, atol=1e-5)
    np.testing.assert_allclose(short, _reference(short_ids, short_mask), atol=1e-4, rtol=0)
    similarity = ours @ ours.T
    assert similarity[0, 1] > 0.6 > similarity[0, 2]  # eating food ~ eating bread
    assert similarity[0, 1] > max(similarity[0, 2], similarity[0, 3], similarity[1, 3])


def test_the_same_zip_converts_to_the_same_model(
    minilm: tuple[bytes, bytes, dict[str, object]],
) -> None:
    again = convert_sentence_transformer(minilm_path())
    assert cid.compute(again[0]) == cid.compute(minilm[0])
    assert again[1:] == minilm[1:]
    assert minilm[2]["source"] == cid.compute(minilm_path().read_bytes())


def test_a_folder_without_pooling_is_refused(tmp_path: object) -> None:
    folder = Path(str(tmp_path))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InputError, match="lacks"):
        convert_sentence_transformer(folder)


def test_openai_client_embeddings_with_a_verifiable_bundle(
    openai_client: Any, text_node: TextNode, embedding_manifest: Manifest
) -> None:
    client = openai_client("/openai/v1")
    assert "alice/minilm@1" in [m.id for m in client.models.list()]
    answer = client.embeddings.create(model="alice/minilm", input=SENTENCES[:3])
    vectors = np.array([d.embedding for d in answer.data], dtype=np.float32)
    listed = client.embeddings.create(
        model="alice/minilm", input=SENTENCES[:3], encoding_format="float"
    )
    assert np.array_equal(np.array([d.embedding for d in listed.data], np.float32), vectors)
    assert vectors.shape == (3, 384)
    assert (vectors @ vectors.T)[0, 1] > (vectors @ vectors.T)[0, 2]
    evidence = answer.model_extra["verinfer"]  # type: ignore[index]
    bundle = Bundle.from_json(evidence["bundle"])
    assert bundle.receipt["manifest"] == embedding_manifest.cid
    inputs = {name: np.array(v, dtype=np.int64) for name, v in evidence["inputs"].items()}
    verify_bundle(bundle, [text_node.node.vkey], inputs=inputs, outputs={"embeddings": vectors})
    with pytest.raises(Exception, match="step 5"):
        verify_bundle(bundle, [text_node.node.vkey], outputs={"embeddings": vectors[::-1].copy()})


def test_bad_embedding_requests_get_4xx_json(
    text_node: TextNode, embedding_manifest: Manifest
) -> None:
    for body, status, match in [
        ({"model": "alice/minilm", "input": []}, 400, "input must be"),
        ({"model": "alice/minilm", "input": ["x"] * 65}, 400, "input must be"),
        ({"model": "alice/smollm2", "input": "x"}, 400, "not an embedding model"),
        ({"model": "alice/minilm", "input": "x", "encoding_format": "int8"}, 400, "float or"),
    ]:
        answer = httpx.post(f"{text_node.url}/v1/embeddings", json=body, timeout=60)
        assert answer.status_code == status, answer.text
        assert match in answer.json()["message"]


def test_a_text_model_is_published_over_http_with_its_tokenizer(
    text_node: TextNode, minilm: tuple[bytes, bytes, dict[str, object]], tmp_path: Path
) -> None:
    model, tokenizer, text = minilm
    with Client(text_node.url, known_nodes=tmp_path / "k.json") as client:
        manifest = client.publish(
            model, repository="alice/minilm-http", version="1", signer=text_node.publisher,
            text=text, tokenizer=tokenizer,
        )  # fmt: skip
        assert manifest.text is not None
        assert manifest.text["tokenizer"] == cid.compute(tokenizer)
        embedded = client.embed("alice/minilm-http", ["a cat", "a kitten"])
    assert embedded.embeddings.shape == (2, 384)
    # a manifest naming a tokenizer the node does not hold is refused, not published
    body = dict(manifest.body)
    body["version"] = "2"
    body["text"] = {**manifest.text, "tokenizer": cid.compute(b"not uploaded")}
    forged = Manifest.from_bytes(note.sign_json(body, text_node.publisher))
    with pytest.raises(NotFound, match=r"tokenizer .* is not stored here"):
        text_node.node.hub.accept(forged.data, [])


def test_a_pulled_text_model_brings_its_tokenizer(
    text_node: TextNode, embedding_manifest: Manifest, tmp_path: Path
) -> None:
    with Hub(tmp_path / "hub") as other:
        pulled = other.pull("alice/minilm", text_node.node.hub)
        assert pulled.cid == embedding_manifest.cid
        tokenizer = embedding_manifest.text["tokenizer"]  # type: ignore[index]
        assert other.blobs.get(tokenizer) == text_node.node.hub.blobs.get(tokenizer)
        assert tokenizer not in {blob for blob, _, _ in other.unpublished()}
