"""GGUF (llama.cpp's file format) to an ONNX model, a tokenizer and a chat template.

:func:`convert_gguf` reads a Llama-architecture GGUF file with ``gguf`` (llama.cpp's own
reader), dequantizes every tensor to float32 exactly as llama.cpp defines its block formats,
undoes the row permutation llama.cpp's converter applies to the query and key weights (it
reorders each head's rows so that rotary embedding pairs adjacent dimensions; the graph pairs
dimension ``j`` with ``j + head_dim / 2``, the layout the weights were trained in), and builds
the graph of :mod:`verinfer.text.graph`. The tokenizer is rebuilt with ``tokenizers`` from the
GGUF's byte-level BPE vocabulary and merges. Everything is a function of the file's bytes: the
same file gives the same model, tokenizer and manifest ``text`` section, byte for byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from verinfer import cid
from verinfer.errors import InputError
from verinfer.text.graph import Blockwise, LlamaConfig, LlamaWeights, build_llama

__all__ = ["CONVERTER", "Converted", "convert_gguf", "unpermute"]

CONVERTER = "verinfer-gguf/1"  # bump when the same file would convert to other bytes

# llama.cpp's "smollm" / GPT-2 style pre-tokenizer: single digits, then the GPT-2 pattern
_PRE_TOKENIZERS = ("gpt2", "smollm", "default")
_CONTROL = 3  # llama.cpp's token type of a control (special) token


@dataclass(frozen=True)
class Converted:
    """What an import produces: the ONNX bytes, the tokenizer (``tokenizers`` JSON) and the
    ``text`` section's facts that do not name blobs (the caller adds the CIDs)."""

    model: bytes
    tokenizer: bytes
    text: dict[str, Any]
    config: LlamaConfig


def unpermute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's converter's reordering of a query or key weight (``[out, in]``): it
    moved each head's row ``j + half`` next to row ``j``; this puts them back."""
    out = weight.shape[0]
    half = out // heads // 2
    return weight.reshape(heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _fields(reader: Any) -> dict[str, Any]:
    found = {}
    for name, field in reader.fields.items():
        try:
            found[name] = field.contents()
        except Exception:  # noqa: S112 - a field gguf cannot decode is not one we read
            continue
    return found


def _need(fields: dict[str, Any], name: str, kind: type) -> Any:
    value = fields.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(f"the GGUF file has no usable {name!r} (found {value!r})")
    return value


def _tokenizer(fields: dict[str, Any]) -> bytes:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers  # noqa: PLC0415

    if fields.get("tokenizer.ggml.model") != "gpt2":
        raise InputError(
            f"only byte-level BPE (GGUF tokenizer model 'gpt2') is supported, not "
            f"{fields.get('tokenizer.ggml.model')!r}"
        )
    pre = fields.get("tokenizer.ggml.pre", "default")
    if pre not in _PRE_TOKENIZERS:
        raise InputError(f"unsupported GGUF pre-tokenizer {pre!r}; known: {_PRE_TOKENIZERS!r}")
    tokens = _need(fields, "tokenizer.ggml.tokens", list)
    kinds = _need(fields, "tokenizer.ggml.token_type", list)
    merges = [tuple(m.split(" ", 1)) for m in _need(fields, "tokenizer.ggml.merges", list)]
    vocabulary = {token: index for index, token in enumerate(tokens)}
    if len(vocabulary) != len(tokens):
        raise InputError("the GGUF vocabulary has duplicate tokens")
    tokenizer = Tokenizer(models.BPE(vocabulary, merges, fuse_unk=False, byte_fallback=False))
    steps: list[Any] = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if pre == "smollm":
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [
            AddedToken(token, special=True, normalized=False)
            for token, kind in zip(tokens, kinds, strict=True)
            if kind == _CONTROL
        ]
    )
    return tokenizer.to_str().encode()


def _q4_1(data: np.ndarray, shape: tuple[int, ...]) -> Blockwise:
    """llama.cpp's Q4_1 blocks as they are: per 32 elements a float16 scale ``d``, a float16
    minimum ``m`` and 16 bytes of nibbles (elements 0-15 low, 16-31 high)."""
    rows, width = shape
    blocks = np.asarray(data, dtype=np.uint8).reshape(rows, width // 32, 20)
    scale = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    minimum = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    nibbles = blocks[..., 4:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).reshape(rows, width)
    return Blockwise(q, scale, minimum)


def _dequantized(reader: Any, weights: str) -> dict[str, Any]:
    from gguf import GGMLQuantizationType, dequantize  # noqa: PLC0415 - optional, heavy

    found: dict[str, Any] = {}
    for tensor in reader.tensors:
        kind = GGMLQuantizationType(tensor.tensor_type)
        shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists dims innermost first
        if weights == "int4" and kind == GGMLQuantizationType.Q4_1:
            found[tensor.name] = _q4_1(tensor.data, shape)
            continue
        values = dequantize(np.asarray(tensor.data), kind)
        found[tensor.name] = np.ascontiguousarray(values.reshape(shape), dtype=np.float32)
    return found


def convert_gguf(path: str | os.PathLike[str], *, weights: str = "fp32") -> Converted:
    """Convert a Llama-architecture GGUF file; raise :class:`InputError` naming what is not
    supported. ``weights``: ``fp32`` (every tensor dequantized; the published form, chosen by
    measurement, docs/PROTOCOL.md §16) or ``int4`` (Q4_1 tensors kept as their 4-bit blocks
    behind ``DequantizeLinear``; for the measurement)."""
    if weights not in ("fp32", "int4"):
        raise InputError(f"weights must be fp32 or int4, got {weights!r}")
    from gguf import GGUFReader  # noqa: PLC0415 - optional, heavy

    with open(path, "rb") as handle:
        source = cid.compute(handle.read())
    try:
        reader = GGUFReader(os.fspath(path))
    except Exception as exc:  # gguf raises ValueError, struct.error, ...
        raise InputError(f"not a readable GGUF file: {exc}") from exc
    fields = _fields(reader)
    arch = fields.get("general.architecture")
    if arch != "llama":
        raise InputError(f"only the llama architecture is supported, not {arch!r}")
    config = LlamaConfig(
        blocks=_need(fields, "llama.block_count", int),
        width=_need(fields, "llama.embedding_length", int),
        heads=_need(fields, "llama.attention.head_count", int),
        kv_heads=_need(fields, "llama.attention.head_count_kv", int),
        ffn=_need(fields, "llama.feed_forward_length", int),
        vocabulary=len(_need(fields, "tokenizer.ggml.tokens", list)),
        context=_need(fields, "llama.context_length", int),
        rope_base=float(fields.get("llama.rope.freq_base", 10000.0)),
        norm_eps=float(_need(fields, "llama.attention.layer_norm_rms_epsilon", float)),
    )
    if fields.get("llama.rope.dimension_count", config.head_dim) != config.head_dim:
        raise InputError("partial rotary embedding is not supported")
    tensors = _dequantized(reader, weights)

    def layer(name: str) -> list[Any]:
        return [tensors[f"blk.{i}.{name}.weight"] for i in range(config.blocks)]

    def rows(weight: Any, heads: int) -> Any:
        if isinstance(weight, Blockwise):
            return weight.rows(lambda part: unpermute(part, heads))
        return unpermute(weight, heads)

    parts = LlamaWeights(
        embedding=tensors["token_embd.weight"],
        attn_norm=layer("attn_norm"),
        q=[rows(w, config.heads) for w in layer("attn_q")],
        k=[rows(w, config.kv_heads) for w in layer("attn_k")],
        v=layer("attn_v"),
        o=layer("attn_output"),
        ffn_norm=layer("ffn_norm"),
        gate=layer("ffn_gate"),
        up=layer("ffn_up"),
        down=layer("ffn_down"),
        norm=tensors["output_norm.weight"],
        output=tensors.get("output.weight"),
    )
    model = build_llama(config, parts, producer=CONVERTER)
    tokenizer = _tokenizer(fields)
    tokens = fields["tokenizer.ggml.tokens"]

    def special(name: str) -> str | None:
        index = fields.get(f"tokenizer.ggml.{name}_token_id")
        return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else None

    text = {
        "kind": "chat",
        "chat_template": str(fields.get("tokenizer.chat_template", "")),
        "special_tokens": {
            name: value
            for name in ("bos", "eos", "unknown", "padding")
            if (value := special(name)) is not None
        },
        "context_length": config.context,
        "source": source,
        "converter": CONVERTER,
    }
    return Converted(model, tokenizer, text, config)
