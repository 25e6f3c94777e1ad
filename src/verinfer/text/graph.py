"""A decoder-only transformer (Llama architecture) as an ONNX graph of standard operators.

The graph takes ``input_ids`` (int64, ``[1, sequence]``) and, per block ``i``, the key/value
cache ``past_key.i`` / ``past_value.i`` (float32, ``[1, kv_heads, past, head_dim]``; ``past``
may be 0), and answers ``logits`` (float32, ``[1, sequence, vocabulary]``) and the extended
cache ``present_key.i`` / ``present_value.i``. Positions are ``past .. past + sequence - 1``,
so one graph serves prefill (the prompt), decoding (one token, with the cache) and
re-execution (prompt and output at once, teacher-forced).

Only ``ai.onnx`` operators: the hub's default allow-list, nothing to extend. Rotary position
embedding reads a precomputed cos/sin table (computed in float64, stored as float32) with
``Gather``, so no trigonometric kernel (whose vectorised rounding may differ between CPU kernel
classes) is on the path. Rotary uses the *rotate-half* pairing (dimension ``j`` with ``j +
head_dim / 2``); the caller gives the query and key weights in that layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["OPSET", "Blockwise", "LlamaConfig", "LlamaWeights", "build_llama"]

OPSET = 21


@dataclass(frozen=True)
class LlamaConfig:
    """The shape of a Llama-architecture model."""

    blocks: int
    width: int
    heads: int
    kv_heads: int
    ffn: int
    vocabulary: int
    context: int
    rope_base: float
    norm_eps: float

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.width // self.heads


@dataclass(frozen=True)
class Blockwise:
    """A ``[out, in]`` weight kept as its source's 4-bit blocks (llama.cpp's Q4_1): element
    ``= scale * q + minimum``, one scale and minimum per ``block`` elements along ``in``. In the
    graph: ``DequantizeLinear`` (uint4, blocked) then ``Add`` of the minimum."""

    q: np.ndarray  # uint8 [out, in], values 0..15
    scale: np.ndarray  # float32 [out, in // block]
    minimum: np.ndarray  # float32 [out, in // block]
    block: int = 32

    def rows(self, order: Any) -> Blockwise:
        """The same weight with rows reordered by ``order`` (a function of a row array)."""
        return Blockwise(order(self.q), order(self.scale), order(self.minimum), self.block)


Linear = Any  # np.ndarray ([out, in] float32) or Blockwise


@dataclass(frozen=True)
class LlamaWeights:
    """fp32 weights, PyTorch ``Linear`` layout (``[out, in]``), query/key rows in rotate-half
    order. ``output`` is ``None`` when the output projection is the token embedding (tied)."""

    embedding: np.ndarray  # [vocabulary, width]
    attn_norm: list[np.ndarray]
    q: list[Linear]
    k: list[Linear]
    v: list[Linear]
    o: list[Linear]
    ffn_norm: list[np.ndarray]
    gate: list[Linear]
    up: list[Linear]
    down: list[Linear]
    norm: np.ndarray
    output: np.ndarray | None


def rope_table(config: LlamaConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, ``[context, head_dim]``, for rotate-half rotary (float64 math, float32)."""
    half = config.head_dim // 2
    inv = config.rope_base ** (-np.arange(half, dtype=np.float64) * 2 / config.head_dim)
    angles = np.arange(config.context, dtype=np.float64)[:, None] * inv[None, :]
    angles = np.concatenate([angles, angles], axis=1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        # np.array, not np.ascontiguousarray: that one turns a scalar into a 1-element vector
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def op(self, kind: str, inputs: list[str], outputs: int = 1, **attrs: Any) -> list[str]:
        self._count += 1
        names = [f"{kind.lower()}_{self._count}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(kind, inputs, names, **attrs))
        return names

    def one(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        return self.op(kind, inputs, 1, **attrs)[0]

    def linear(self, name: str, weight: Linear) -> str:
        """``[in, out]`` float32: a stored transposed weight, or dequantized blocks."""
        if isinstance(weight, np.ndarray):
            return self.const(name, np.ascontiguousarray(weight.T))
        out, width = weight.q.shape
        flat = weight.q.astype(np.uint8).reshape(-1)
        packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)  # low nibble first
        self.initializers.append(helper.make_tensor(
            name + ".q", TensorProto.UINT4, [out, width], packed.tobytes(), raw=True))  # fmt: skip
        scale = self.const(name + ".scale", weight.scale.astype(np.float32))
        values = self.one("DequantizeLinear", [name + ".q", scale], axis=1,
                          block_size=weight.block)  # fmt: skip
        blocks = self.const(name + ".blocks", np.array([out, -1, weight.block], np.int64))
        minimum = self.const(name + ".minimum", weight.minimum.astype(np.float32)[..., None])
        shifted = self.one("Add", [self.one("Reshape", [values, blocks]), minimum])
        shape = self.const(name + ".shape", np.array([out, width], np.int64))
        return self.one("Transpose", [self.one("Reshape", [shifted, shape])], perm=[1, 0])

    def named(self, kind: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(kind, inputs, [output], **attrs))
        return output


def _rms_norm(b: _Builder, x: str, weight: str, eps: str, axes: str) -> str:
    mean = b.one("ReduceMean", [b.one("Mul", [x, x]), axes], keepdims=1)
    scale = b.one("Reciprocal", [b.one("Sqrt", [b.one("Add", [mean, eps])])])
    return b.one("Mul", [b.one("Mul", [x, scale]), weight])


def build_llama(  # noqa: PLR0915 - one graph, written top to bottom
    config: LlamaConfig, weights: LlamaWeights, *, producer: str
) -> bytes:
    """The serialized ONNX model (deterministic: same weights, same bytes)."""
    b = _Builder()
    hd, kvh, heads = config.head_dim, config.kv_heads, config.heads
    group = heads // kvh
    eps = b.const("norm_eps", np.array(config.norm_eps, np.float32))
    last = b.const("axis_last", np.array([-1], np.int64))
    cos, sin = rope_table(config)
    cos_table = b.const("rope_cos", cos)
    sin_table = b.const("rope_sin", sin)
    scale = b.const("attn_scale", np.array(1.0 / np.sqrt(hd), np.float32))
    neg_inf = b.const("neg_inf", np.array(-np.inf, np.float32))
    zero_f = b.const("zero_f", np.array(0.0, np.float32))
    one_i = b.const("one_i", np.array(1, np.int64))
    zero_i = b.const("zero_i", np.array(0, np.int64))
    halves = b.const("rope_halves", np.array([hd // 2, hd // 2], np.int64))
    shape_q = b.const("shape_q", np.array([1, 0, heads, hd], np.int64))
    shape_kv = b.const("shape_kv", np.array([1, 0, kvh, hd], np.int64))
    shape_group = b.const("shape_group", np.array([1, kvh, group, -1, hd], np.int64))
    shape_kv5 = b.const("shape_kv5", np.array([1, kvh, 1, -1, hd], np.int64))
    shape_heads = b.const("shape_heads", np.array([1, heads, -1, hd], np.int64))
    shape_width = b.const("shape_width", np.array([1, -1, config.width], np.int64))
    shape_flat = b.const("shape_flat", np.array([-1, config.width], np.int64))
    shape_logits = b.const("shape_logits", np.array([1, -1, config.vocabulary], np.int64))
    embedding = b.const("token_embedding", weights.embedding)

    # positions past .. past + sequence - 1, and the causal mask over past + sequence keys
    sequence = b.one("Gather", [b.one("Shape", ["input_ids"]), one_i], axis=0)
    past = b.one("Gather", [b.one("Shape", ["past_key.0"]), b.const("two_i", np.array(2))], axis=0)
    total = b.one("Add", [past, sequence])
    positions = b.one("Range", [past, total, one_i])
    keys = b.one("Range", [zero_i, total, one_i])
    allowed = b.one(
        "LessOrEqual",
        [b.one("Unsqueeze", [keys, b.const("axis0", np.array([0], np.int64))]),
         b.one("Unsqueeze", [positions, last])],
    )  # fmt: skip
    mask = b.one("Where", [allowed, zero_f, neg_inf])  # [sequence, total]
    cos_now = b.one("Gather", [cos_table, positions], axis=0)  # [sequence, head_dim]
    sin_now = b.one("Gather", [sin_table, positions], axis=0)

    def rotate(x: str) -> str:  # x: [1, h, sequence, head_dim]
        first, second = b.op("Split", [x, halves], 2, axis=-1)
        turned = b.one("Concat", [b.one("Neg", [second]), first], axis=-1)
        return b.one("Add", [b.one("Mul", [x, cos_now]), b.one("Mul", [turned, sin_now])])

    x = b.one("Gather", [embedding, "input_ids"], axis=0)  # [1, sequence, width]
    for i in range(config.blocks):
        w = {
            "attn_norm": b.const(f"blk.{i}.attn_norm", weights.attn_norm[i]),
            "ffn_norm": b.const(f"blk.{i}.ffn_norm", weights.ffn_norm[i]),
        }
        for name, value in (
            ("q", weights.q[i]),
            ("k", weights.k[i]),
            ("v", weights.v[i]),
            ("o", weights.o[i]),
            ("gate", weights.gate[i]),
            ("up", weights.up[i]),
            ("down", weights.down[i]),
        ):
            w[name] = b.linear(f"blk.{i}.{name}", value)
        h = _rms_norm(b, x, w["attn_norm"], eps, last)
        perm = [0, 2, 1, 3]
        q = b.one("Transpose", [b.one("Reshape", [b.one("MatMul", [h, w["q"]]), shape_q])],
                  perm=perm)  # fmt: skip
        k = b.one("Transpose", [b.one("Reshape", [b.one("MatMul", [h, w["k"]]), shape_kv])],
                  perm=perm)  # fmt: skip
        v = b.one("Transpose", [b.one("Reshape", [b.one("MatMul", [h, w["v"]]), shape_kv])],
                  perm=perm)  # fmt: skip
        q, k = rotate(q), rotate(k)
        key = b.named("Concat", [f"past_key.{i}", k], f"present_key.{i}", axis=2)
        value = b.named("Concat", [f"past_value.{i}", v], f"present_value.{i}", axis=2)
        # grouped-query attention by broadcasting: query head j reads key/value head j // group
        q5 = b.one("Reshape", [q, shape_group])
        k5 = b.one("Transpose", [b.one("Reshape", [key, shape_kv5])], perm=[0, 1, 2, 4, 3])
        v5 = b.one("Reshape", [value, shape_kv5])
        scores = b.one("Add", [b.one("Mul", [b.one("MatMul", [q5, k5]), scale]), mask])
        attended = b.one("MatMul", [b.one("Softmax", [scores], axis=-1), v5])
        merged = b.one("Reshape", [b.one("Transpose", [b.one("Reshape", [attended, shape_heads])],
                                         perm=perm), shape_width])  # fmt: skip
        x = b.one("Add", [x, b.one("MatMul", [merged, w["o"]])])
        h = _rms_norm(b, x, w["ffn_norm"], eps, last)
        gate = b.one("MatMul", [h, w["gate"]])
        up = b.one("MatMul", [h, w["up"]])
        silu = b.one("Mul", [gate, b.one("Sigmoid", [gate])])
        x = b.one("Add", [x, b.one("MatMul", [b.one("Mul", [silu, up]), w["down"]])])
    h = _rms_norm(b, x, b.const("output_norm", weights.norm), eps, last)
    flat = b.one("Reshape", [h, shape_flat])
    if weights.output is None:  # tied: the embedding, transposed by Gemm, not stored twice
        projected = b.one("Gemm", [flat, embedding], transB=1)
    else:
        projected = b.one("Gemm", [flat, b.const("output", weights.output)], transB=1)
    b.named("Reshape", [projected, shape_logits], "logits")

    cache_in, cache_out = [], []
    for i in range(config.blocks):
        for part in ("key", "value"):
            cache_in.append(helper.make_tensor_value_info(
                f"past_{part}.{i}", TensorProto.FLOAT, [1, kvh, "past", hd]))  # fmt: skip
            cache_out.append(helper.make_tensor_value_info(
                f"present_{part}.{i}", TensorProto.FLOAT, [1, kvh, "total", hd]))  # fmt: skip
    graph = helper.make_graph(
        b.nodes,
        "llama",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "sequence"]),
         *cache_in],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       [1, "sequence", config.vocabulary]), *cache_out],
        b.initializers,
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer
    )
    model.ir_version = 10
    return bytes(model.SerializeToString(deterministic=True))
