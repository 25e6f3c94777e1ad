"""A sentence-embedding model (BERT encoder + pooling, sentence-transformers layout) to ONNX.

:func:`convert_sentence_transformer` reads a sentence-transformers folder or zip
(``model.safetensors``, ``config.json``, ``tokenizer.json``, ``modules.json``,
``1_Pooling/config.json``) with ``safetensors`` and builds a graph of standard operators:
``input_ids`` and ``attention_mask`` (int64, ``[batch, sequence]``) in, ``embeddings`` (float32,
``[batch, dimensions]``) out, pooled as the pooling config says (mean over the unmasked tokens,
or the first token) and L2-normalised when the modules list a ``Normalize`` step. The stored
tokenizer truncates at ``max_seq_length`` and pads a batch to its longest sentence.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper

from verinfer import cid
from verinfer.errors import InputError
from verinfer.text.graph import OPSET, _Builder

__all__ = ["CONVERTER", "convert_sentence_transformer"]

CONVERTER = "verinfer-bert/1"


def _files(path: Path) -> dict[str, bytes]:
    wanted = ("model.safetensors", "config.json", "tokenizer.json", "modules.json",
              "1_Pooling/config.json", "sentence_bert_config.json")  # fmt: skip
    found: dict[str, bytes] = {}
    if path.is_dir():
        for name in wanted:
            if (path / name).is_file():
                found[name] = (path / name).read_bytes()
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                for name in wanted:
                    if name in names:
                        found[name] = archive.read(name)
        except zipfile.BadZipFile as exc:
            raise InputError(f"{os.fspath(path)!r} is neither a folder nor a zip: {exc}") from exc
    missing = [n for n in wanted[:5] if n not in found]
    if missing:
        raise InputError(f"the sentence-transformers model lacks {missing!r}")
    return found


def _json(files: dict[str, bytes], name: str) -> Any:
    try:
        return json.loads(files[name])
    except ValueError as exc:
        raise InputError(f"{name} is not JSON: {exc}") from exc


def _build(  # noqa: PLR0915 - one graph, written top to bottom
    weights: dict[str, np.ndarray], config: dict[str, Any], pooling: str,
           normalize: bool) -> bytes:  # fmt: skip
    b = _Builder()
    width, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim, layers = width // heads, int(config["num_hidden_layers"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    if config.get("hidden_act") != "gelu" or config.get("position_embedding_type",
                                                          "absolute") != "absolute":  # fmt: skip
        raise InputError("only BERT with exact GELU and absolute positions is supported")

    def w(name: str, transpose: bool = False) -> str:
        value = weights[name]
        return b.const(name, np.ascontiguousarray(value.T if transpose else value, np.float32))

    def norm(x: str, prefix: str) -> str:
        return b.one("LayerNormalization", [x, w(prefix + ".weight"), w(prefix + ".bias")],
                     axis=-1, epsilon=eps)  # fmt: skip

    def dense(x: str, prefix: str) -> str:
        return b.one("Add", [b.one("MatMul", [x, w(prefix + ".weight", True)]),
                             w(prefix + ".bias")])  # fmt: skip

    one = b.const("one_i", np.array(1, np.int64))
    sequence = b.one("Gather", [b.one("Shape", ["input_ids"]), one], axis=0)
    # the first ``sequence`` rows of the position table (a Slice with 1-D bounds: ONNX
    # Runtime's embedding fusion rewrites a Gather of a Range into a Slice it then refuses)
    ends = b.one("Unsqueeze", [sequence, b.const("axis0", np.array([0], np.int64))])
    rows = b.one("Slice", [w("embeddings.position_embeddings.weight"),
                           b.const("start0", np.array([0], np.int64)), ends,
                           b.const("axis0s", np.array([0], np.int64))])  # fmt: skip
    types = weights["embeddings.token_type_embeddings.weight"][0]  # every token has type 0
    x = b.one("Add", [
        b.one("Add", [b.one("Gather", [w("embeddings.word_embeddings.weight"), "input_ids"]),
                      rows]),
        b.const("token_type_0", np.ascontiguousarray(types, np.float32)),
    ])  # fmt: skip
    x = norm(x, "embeddings.LayerNorm")
    mask = b.one("Cast", ["attention_mask"], to=TensorProto.FLOAT)  # [batch, sequence]
    axes12 = b.const("axes12", np.array([1, 2], np.int64))
    # masked keys get the float32 minimum added, as the reference implementation does
    lowest = b.const("mask_min", np.array(np.finfo(np.float32).min, np.float32))
    masked = b.one("Sub", [b.const("one_f", np.array(1, np.float32)),
                           b.one("Unsqueeze", [mask, axes12])])  # fmt: skip
    bias = b.one("Mul", [masked, lowest])
    split = b.const("shape_heads", np.array([0, 0, heads, head_dim], np.int64))
    merged = b.const("shape_width", np.array([0, 0, width], np.int64))
    scale = b.const("attn_scale", np.array(1 / np.sqrt(head_dim), np.float32))
    half = b.const("half", np.array(0.5, np.float32))
    root2 = b.const("sqrt2", np.array(np.sqrt(2.0), np.float32))
    one_f = b.const("one_gelu", np.array(1.0, np.float32))
    for i in range(layers):
        p = f"encoder.layer.{i}."

        def heads_of(name: str, x: str = x, p: str = p) -> str:
            return b.one("Transpose", [b.one("Reshape", [dense(x, p + name), split])],
                         perm=[0, 2, 1, 3])  # fmt: skip

        q, k, v = (heads_of(f"attention.self.{n}") for n in ("query", "key", "value"))
        scores = b.one("Add", [b.one("Mul", [b.one("MatMul", [
            q, b.one("Transpose", [k], perm=[0, 1, 3, 2])]), scale]), bias])  # fmt: skip
        context = b.one("MatMul", [b.one("Softmax", [scores], axis=-1), v])
        context = b.one("Reshape", [b.one("Transpose", [context], perm=[0, 2, 1, 3]), merged])
        x = norm(b.one("Add", [dense(context, p + "attention.output.dense"), x]),
                 p + "attention.output.LayerNorm")  # fmt: skip
        h = dense(x, p + "intermediate.dense")
        erf = b.one("Erf", [b.one("Div", [h, root2])])
        gelu = b.one("Mul", [b.one("Mul", [h, half]), b.one("Add", [one_f, erf])])
        x = norm(b.one("Add", [dense(gelu, p + "output.dense"), x]), p + "output.LayerNorm")
    if pooling == "mean":
        weight = b.one("Unsqueeze", [mask, b.const("axis_last", np.array([-1], np.int64))])
        axis1 = b.const("axis1", np.array([1], np.int64))
        total = b.one("ReduceSum", [b.one("Mul", [x, weight]), axis1], keepdims=0)
        count = b.one("Max", [b.one("ReduceSum", [weight, axis1], keepdims=0),
                              b.const("min_count", np.array(1e-9, np.float32))])  # fmt: skip
        pooled = b.one("Div", [total, count])
    else:
        pooled = b.one("Gather", [x, b.const("zero_i", np.array(0, np.int64))], axis=1)
    if normalize:
        length = b.one("ReduceL2", [pooled, b.const("axis_1", np.array([-1], np.int64))],
                       keepdims=1)  # fmt: skip
        length = b.one("Max", [length, b.const("min_length", np.array(1e-12, np.float32))])
        b.named("Div", [pooled, length], "embeddings")
    else:
        b.named("Identity", [pooled], "embeddings")
    graph = helper.make_graph(
        b.nodes, "sentence-embedding",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                       ["batch", "sequence"])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", width])],
        b.initializers,
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=CONVERTER
    )
    model.ir_version = 10
    return bytes(model.SerializeToString(deterministic=True))


def convert_sentence_transformer(
    path: str | os.PathLike[str],
) -> tuple[bytes, bytes, dict[str, Any]]:
    """``(ONNX bytes, tokenizer JSON bytes, text section without the tokenizer CID)`` of a
    sentence-transformers folder or zip; :class:`InputError` naming what is not supported."""
    from safetensors.numpy import load  # noqa: PLC0415 - optional
    from tokenizers import Tokenizer  # noqa: PLC0415

    path = Path(path)
    files = _files(path)
    config = _json(files, "config.json")
    if config.get("model_type") != "bert":
        raise InputError(f"only BERT encoders are supported, not {config.get('model_type')!r}")
    pooling_config = _json(files, "1_Pooling/config.json")
    if pooling_config.get("pooling_mode_mean_tokens"):
        pooling = "mean"
    elif pooling_config.get("pooling_mode_cls_token"):
        pooling = "cls"
    else:
        raise InputError(f"unsupported pooling {pooling_config!r}: mean or cls only")
    modules = _json(files, "modules.json")
    normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
    settings = _json(files, "sentence_bert_config.json") if "sentence_bert_config.json" in files \
        else {}  # fmt: skip
    max_length = int(settings.get("max_seq_length", config.get("max_position_embeddings", 512)))
    try:
        weights = load(files["model.safetensors"])
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise InputError(f"model.safetensors does not load: {exc}") from exc
    weights = {name.removeprefix("bert."): value for name, value in weights.items()}
    model = _build(weights, config, pooling, normalize)
    tokenizer = Tokenizer.from_str(files["tokenizer.json"].decode())
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a token, not a secret
    source = cid.compute(path.read_bytes()) if path.is_file() else cid.compute(
        files["model.safetensors"])  # fmt: skip
    text = {
        "kind": "embedding",
        "pooling": pooling,
        "normalize": normalize,
        "max_length": max_length,
        "dimensions": int(config["hidden_size"]),
        "source": source,
        "converter": CONVERTER,
    }
    return model, tokenizer.to_str().encode(), text


def read_zip_member(path: Path, name: str) -> bytes:
    """One file of a zip (tests read the reference weights with it)."""
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as archive:
        return archive.read(name)
