"""Named tensors: digest vectors, the JSON and binary forms, and checks against a signature.

The digest vectors in ``tests/vectors/tensors.json`` are produced by :func:`_generate` from a
reference implementation written here with ``hashlib`` and ``struct`` only (no numpy, no
verinfer), following docs/PROTOCOL.md §9. Regenerate them with ``python tests/test_tensors.py``;
``test_vector_file_is_reproducible`` fails if the stored file drifts from the generator.

Tests named ``test_bug_*`` are regression tests for defects this file found in
src/verinfer/tensors.py (all fixed).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from vectors import VECTORS_DIR, load_vectors

from verinfer import tensors
from verinfer.errors import InputError

# ---------------------------------------------------------------------------------------------
# Reference implementation (hashlib + struct only), independent of verinfer.tensors

_STRUCT_CODES = {
    "float16": "e",
    "float32": "f",
    "float64": "d",
    "int8": "b",
    "int16": "h",
    "int32": "i",
    "int64": "q",
    "uint8": "B",
    "uint16": "H",
    "uint32": "I",
    "uint64": "Q",
    "bool": "?",
}


def _ref_tensor_digest(dtype: str, shape: Sequence[int], data: bytes) -> bytes:
    """The raw 32-byte tensor digest of little-endian C-order element bytes."""
    assert len(data) == math.prod(shape) * struct.calcsize("<" + _STRUCT_CODES[dtype])
    hasher = hashlib.sha256(b"verinfer/tensor/v1\x00")
    hasher.update(dtype.encode("ascii") + b"\x00")
    hasher.update(struct.pack(">I", len(shape)))
    for dim in shape:
        hasher.update(struct.pack(">Q", dim))
    hasher.update(data)
    return hasher.digest()


def _ref_map_digest(named: Mapping[str, bytes]) -> bytes:
    """The raw map digest of ``name -> raw 32-byte tensor digest``."""
    hasher = hashlib.sha256(b"verinfer/tensors/v1\x00" + struct.pack(">I", len(named)))
    for encoded in sorted(name.encode("utf-8") for name in named):
        hasher.update(struct.pack(">I", len(encoded)) + encoded)
        hasher.update(named[encoded.decode("utf-8")])
    return hasher.digest()


def _written(raw: bytes) -> str:
    return "sha256:" + raw.hex()


def _pack(dtype: str, values: Sequence[float | int | bool]) -> bytes:
    return struct.pack("<" + _STRUCT_CODES[dtype] * len(values), *values)


def _ref_json_tensor(tensor: Mapping[str, Any]) -> bytes:
    """The raw digest of a vector's ``{"dtype", "shape", "base64"}`` tensor."""
    data = base64.b64decode(tensor["base64"], validate=True)
    return _ref_tensor_digest(tensor["dtype"], tensor["shape"], data)


# ---------------------------------------------------------------------------------------------
# Vector generation

_NAN = float("nan")
_INF = float("inf")
_F32 = [0.0, 1.5, -2.25, 0.1, 3.4028234663852886e38, 1e-45]

# name, dtype, shape, element values (or raw little-endian bytes), layout to present it in
_TENSOR_CASES: list[tuple[str, str, list[int], list[Any] | bytes, str | None]] = [
    ("float16", "float16", [3], [1.0, -2.5, 65504.0], None),
    ("float16 NaN, -0.0, inf, subnormal", "float16", [4], [_NAN, -0.0, _INF, 2.0**-24], None),
    ("float32", "float32", [2, 3], _F32, None),
    ("float32 same bytes, shape [6]", "float32", [6], _F32, None),
    ("float32 NaN, -0.0, inf, -inf", "float32", [2, 2], [_NAN, -0.0, _INF, -_INF], None),
    ("float32 0.0", "float32", [1], [0.0], None),
    ("float32 -0.0", "float32", [1], [-0.0], None),
    ("float32 NaN with payload 1", "float32", [1], b"\x01\x00\xc0\x7f", None),
    ("float32 scalar", "float32", [], [3.5], None),
    ("float32 empty [0, 3]", "float32", [0, 3], [], None),
    ("float32 empty [3, 0]", "float32", [3, 0], [], None),
    ("float32 strided view", "float32", [3, 2], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "strided"),
    ("float32 transposed view", "float32", [2, 3, 4], [float(i) for i in range(24)], "transposed"),
    ("float64", "float64", [2, 2], [1.0, 0.1, -1e300, 5e-324], None),
    ("float64 big-endian", "float64", [3], [1.0, -0.5, 1e-300], "big-endian"),
    ("int8", "int8", [4], [-128, -1, 0, 127], None),
    ("int16", "int16", [2, 2], [-32768, -2, 2, 32767], None),
    ("int16 transposed view", "int16", [3, 2], [1, -2, 3, -4, 5, -6], "transposed"),
    ("int32", "int32", [3], [-(2**31), -7, 2**31 - 1], None),
    ("int32 big-endian", "int32", [2, 3], [1, -1, 256, -256, 65536, 2**31 - 1], "big-endian"),
    ("int64", "int64", [2], [-(2**63), 2**63 - 1], None),
    ("int64 scalar", "int64", [], [-7], None),
    ("uint8", "uint8", [2, 2, 2], [0, 1, 2, 127, 128, 200, 254, 255], None),
    ("uint8 rank 5", "uint8", [1, 1, 1, 1, 1], [42], None),
    ("uint16", "uint16", [3], [0, 1, 65535], None),
    ("uint32", "uint32", [2], [0, 2**32 - 1], None),
    ("uint64", "uint64", [2], [0, 2**64 - 1], None),
    ("bool", "bool", [2, 2], [True, False, False, True], None),
    ("bool scalar", "bool", [], [True], None),
]

# name, {tensor name: tensor case name}
_MAP_CASES: list[tuple[str, dict[str, str]]] = [
    ("empty map", {}),
    ("one tensor", {"x": "float32"}),
    ("case matters: 'B' (0x42) sorts before 'a' (0x61)", {"a": "int8", "B": "bool"}),
    ("a name and its prefix", {"ab": "int8", "a": "int8"}),
    ("the empty name", {"": "float32 scalar", "input": "float32"}),
    (
        "UTF-8 byte order (UTF-16 order would put U+1F600 before U+FF61)",
        {
            "\U0001f600": "uint8",
            "\uff61": "int16",
            "日本": "int32",
            "é": "float16",
            "z": "bool scalar",
        },
    ),
    ("one tensor under two names", {"y": "float64", "x": "float64"}),
    ("every dtype", {dtype: dtype for dtype in _STRUCT_CODES}),
]

_ABOUT = (
    "verinfer tensor digests (docs/PROTOCOL.md §9). tensor digest = SHA-256('verinfer/tensor/v1' "
    "00 || dtype 00 || u32be(rank) || u64be(dim)... || element bytes, little-endian, C order); "
    "map digest = SHA-256('verinfer/tensors/v1' 00 || u32be(count) || for each name in UTF-8 "
    "byte order: u32be(len(name)) || name || raw tensor digest). 'base64' holds the element "
    "bytes; 'layout' asks the test to also present the tensor as a big-endian, transposed or "
    "strided numpy view, which must not change the digest. Generated by tests/test_tensors.py."
)


def _case_bytes(dtype: str, values: list[Any] | bytes) -> bytes:
    return values if isinstance(values, bytes) else _pack(dtype, values)


def _generate() -> dict[str, Any]:
    """The vector file's content, from the reference implementation alone."""
    tensor_vectors = []
    by_name: dict[str, dict[str, Any]] = {}
    for name, dtype, shape, values, layout in _TENSOR_CASES:
        data = _case_bytes(dtype, values)
        tensor = {"dtype": dtype, "shape": shape, "base64": base64.b64encode(data).decode()}
        vector: dict[str, Any] = {"name": name, "tensor": tensor}
        vector["digest"] = _written(_ref_tensor_digest(dtype, shape, data))
        if layout is not None:
            vector["layout"] = layout
        tensor_vectors.append(vector)
        by_name[name] = tensor
    map_vectors = []
    for name, members in _MAP_CASES:
        named = {key: by_name[case] for key, case in members.items()}
        raw = _ref_map_digest({key: _ref_json_tensor(t) for key, t in named.items()})
        map_vectors.append({"name": name, "tensors": named, "digest": _written(raw)})
    return {"about": _ABOUT, "tensors": tensor_vectors, "maps": map_vectors}


def _dump(content: Mapping[str, Any]) -> str:
    """One vector per line, like the other vector files."""

    def line(value: object) -> str:
        return json.dumps(value, ensure_ascii=False)

    lines = ["{", f' "about": {line(content["about"])},']
    for key in ("tensors", "maps"):
        items = [f"  {line(vector)}" for vector in content[key]]
        lines.append(f' "{key}": [')
        lines.append(",\n".join(items))
        lines.append(" ]," if key == "tensors" else " ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # regenerate: .venv/bin/python tests/test_tensors.py
    (VECTORS_DIR / "tensors.json").write_text(_dump(_generate()), encoding="utf-8")

VECTORS = load_vectors("tensors.json")
TENSOR_VECTORS = VECTORS["tensors"]
MAP_VECTORS = VECTORS["maps"]


# ---------------------------------------------------------------------------------------------
# Helpers


def _array(tensor: Mapping[str, Any]) -> np.ndarray:
    """A vector's tensor as numpy, decoded without verinfer."""
    dtype = np.dtype(tensor["dtype"]).newbyteorder("<")
    raw = base64.b64decode(tensor["base64"], validate=True)
    return np.frombuffer(raw, dtype=dtype).reshape(tensor["shape"])


def _in_layout(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "big-endian":
        out = array.astype(array.dtype.newbyteorder(">"))
        assert out.dtype.byteorder == ">"
        assert out.tobytes() != array.tobytes()
    elif layout == "transposed":
        out = np.ascontiguousarray(array.T).T
        assert not out.flags.c_contiguous
    else:
        assert layout == "strided"
        big = np.ones((2 * array.shape[0], *array.shape[1:]), dtype=array.dtype)
        big[::2] = array
        out = big[::2]
        assert not out.flags.c_contiguous
    np.testing.assert_array_equal(out, array)
    return out


def _le_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"))).tobytes()


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    """Equal in dtype, shape and bytes (so NaN payloads and -0.0 count)."""
    assert isinstance(got, np.ndarray)
    assert got.dtype.name == want.dtype.name
    assert got.shape == want.shape
    assert _le_bytes(got) == _le_bytes(want)


def _through_json_text(value: object) -> Any:
    """What a peer receives: strict JSON text (no NaN) parsed back."""
    return json.loads(json.dumps(value, allow_nan=False))


def _npy(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _npy_with_header(header: str) -> bytes:
    """A version 1.0 .npy file with a hand-written header dict and no data."""
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1")


# ---------------------------------------------------------------------------------------------
# 1. Digest vectors


def test_vector_file_is_reproducible() -> None:
    assert _generate() == VECTORS
    assert (VECTORS_DIR / "tensors.json").read_text(encoding="utf-8") == _dump(_generate())


def test_vectors_cover_every_dtype_and_layout() -> None:
    assert {v["tensor"]["dtype"] for v in TENSOR_VECTORS} == set(tensors.DTYPES)
    assert set(_STRUCT_CODES) == set(tensors.DTYPES)
    assert {v.get("layout") for v in TENSOR_VECTORS} == {
        None,
        "big-endian",
        "transposed",
        "strided",
    }
    shapes = [v["tensor"]["shape"] for v in TENSOR_VECTORS]
    assert [] in shapes
    assert [0, 3] in shapes


@pytest.mark.parametrize("vector", TENSOR_VECTORS, ids=lambda v: v["name"])
def test_reference_digest_matches_every_tensor_vector(vector: dict[str, Any]) -> None:
    assert _written(_ref_json_tensor(vector["tensor"])) == vector["digest"]


@pytest.mark.parametrize("vector", MAP_VECTORS, ids=lambda v: v["name"])
def test_reference_map_digest_matches_every_map_vector(vector: dict[str, Any]) -> None:
    named = {name: _ref_json_tensor(t) for name, t in vector["tensors"].items()}
    assert _written(_ref_map_digest(named)) == vector["digest"]


@pytest.mark.parametrize("vector", TENSOR_VECTORS, ids=lambda v: v["name"])
def test_digest_matches_every_tensor_vector(vector: dict[str, Any]) -> None:
    array = _array(vector["tensor"])
    assert tensors.digest(array) == vector["digest"]
    assert tensors.digest(array.astype(array.dtype.name)) == vector["digest"]  # native order
    decoded = tensors.decode_json({"t": vector["tensor"]})["t"]
    assert tensors.digest(decoded) == vector["digest"]
    if "layout" in vector:
        assert tensors.digest(_in_layout(array, vector["layout"])) == vector["digest"]


@pytest.mark.parametrize("vector", TENSOR_VECTORS, ids=lambda v: v["name"])
def test_encode_json_raw_reproduces_every_tensor_vector(vector: dict[str, Any]) -> None:
    array = _array(vector["tensor"])
    if "layout" in vector:
        array = _in_layout(array, vector["layout"])
    assert tensors.encode_json({"t": array}, raw=True) == {"t": vector["tensor"]}


@pytest.mark.parametrize("vector", MAP_VECTORS, ids=lambda v: v["name"])
def test_map_digest_matches_every_map_vector(vector: dict[str, Any]) -> None:
    arrays = {name: _array(t) for name, t in vector["tensors"].items()}
    assert tensors.map_digest(arrays) == vector["digest"]
    if arrays:
        assert tensors.map_digest(tensors.decode_json(vector["tensors"])) == vector["digest"]
    # insertion order never matters
    assert tensors.map_digest(dict(reversed(arrays.items()))) == vector["digest"]


@pytest.mark.parametrize(
    ("name", "dtype", "shape", "values"),
    [(n, d, s, v) for n, d, s, v, _ in _TENSOR_CASES if not isinstance(v, bytes)],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_struct_packing_agrees_with_numpy(
    name: str, dtype: str, shape: list[int], values: list[Any]
) -> None:
    """The generator's struct packing gives the same bytes numpy stores for those values."""
    array = np.array(values, dtype=dtype).reshape(shape)
    assert _le_bytes(array) == _pack(dtype, values), name


def test_digest_distinguishes_dtype_shape_and_zero_sign() -> None:
    by_name = {v["name"]: v["digest"] for v in TENSOR_VECTORS}
    assert by_name["float32"] != by_name["float32 same bytes, shape [6]"]
    assert by_name["float32 empty [0, 3]"] != by_name["float32 empty [3, 0]"]
    assert by_name["float32 0.0"] != by_name["float32 -0.0"]
    assert len(set(by_name.values())) == len(by_name)
    same = np.arange(4, dtype=np.int32)
    assert tensors.digest(same) != tensors.digest(same.view(np.uint32))
    assert tensors.digest(same) != tensors.digest(same.view(np.float32))


def test_map_digest_binds_names() -> None:
    x = np.arange(3, dtype=np.int8)
    assert tensors.map_digest({"x": x}) != tensors.map_digest({"y": x})
    # the length prefix separates the name from the digest that follows it
    assert tensors.map_digest({"ab": x, "c": x}) != tensors.map_digest({"a": x, "bc": x})


@pytest.mark.parametrize(
    "array",
    [
        np.zeros(2, dtype=np.complex64),
        np.array(["a"]),
        np.array([1, None], dtype=object),
        np.zeros(2, dtype="datetime64[s]"),
    ],
    ids=lambda a: a.dtype.name,
)
def test_digest_refuses_unsupported_dtypes(array: np.ndarray) -> None:
    match = re.escape(f"unsupported tensor dtype {array.dtype.name!r}; supported: float16,")
    with pytest.raises(InputError, match=match):
        tensors.digest(array)
    with pytest.raises(InputError, match="unsupported tensor dtype"):
        tensors.map_digest({"x": array})
    with pytest.raises(InputError, match="unsupported tensor dtype"):
        tensors.encode_json({"x": array})


# ---------------------------------------------------------------------------------------------
# 2. JSON form


def _sample(dtype: str) -> np.ndarray:
    """A [2, 3] array of the dtype's extreme values."""
    if dtype == "bool":
        return np.array([[True, False, True], [False, False, True]])
    kind = np.dtype(dtype)
    if kind.kind == "f":
        info = np.finfo(kind)
        values = [0.0, -0.0, 1.5, float(info.max), float(info.min), float(info.smallest_subnormal)]
    else:
        iinfo = np.iinfo(kind)
        values = [iinfo.min, iinfo.max, 0, 1, iinfo.max // 3, 7]
    return np.array(values, dtype=dtype).reshape(2, 3)


@pytest.mark.parametrize("raw", [False, True], ids=["data", "base64"])
@pytest.mark.parametrize("dtype", tensors.DTYPES)
def test_json_round_trip_of_every_dtype(dtype: str, raw: bool) -> None:
    array = _sample(dtype)
    encoded = _through_json_text(tensors.encode_json({"x": array}, raw=raw))
    assert encoded["x"]["dtype"] == dtype
    assert encoded["x"]["shape"] == [2, 3]
    assert set(encoded["x"]) == {"dtype", "shape", "base64" if raw else "data"}
    if not raw:
        assert encoded["x"]["data"] == array.tolist()
    _assert_same(tensors.decode_json(encoded)["x"], array)


def test_json_data_of_small_floats_is_their_exact_float64_value() -> None:
    encoded = tensors.encode_json({"x": np.array([0.1], dtype=np.float32)})
    assert encoded["x"]["data"] == [0.10000000149011612]
    encoded = tensors.encode_json({"x": np.array([0.1], dtype=np.float16)})
    assert encoded["x"]["data"] == [0.0999755859375]


def test_json_of_a_scalar_and_of_big_endian_and_strided_arrays() -> None:
    scalar = np.array(7, dtype=np.int16)
    assert tensors.encode_json({"s": scalar}) == {"s": {"dtype": "int16", "shape": [], "data": 7}}
    _assert_same(tensors.decode_json(tensors.encode_json({"s": scalar}))["s"], scalar)
    big = np.arange(6, dtype=">i4").reshape(2, 3)
    for form in (tensors.encode_json({"b": big}), tensors.encode_json({"b": big}, raw=True)):
        decoded = tensors.decode_json(form)["b"]
        assert decoded.dtype == np.dtype("int32")  # native order
        _assert_same(decoded, big)
    strided = np.arange(12.0).reshape(3, 4)[::2, ::-1]
    _assert_same(tensors.decode_json(tensors.encode_json({"v": strided}, raw=True))["v"], strided)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("bad", [_NAN, _INF, -_INF])
def test_non_finite_floats_switch_to_base64(dtype: str, bad: float) -> None:
    array = np.array([1.0, bad, -0.0], dtype=dtype)
    encoded = tensors.encode_json({"x": array, "n": np.array([1, 2], dtype=np.int8)})
    assert "base64" in encoded["x"]
    assert "data" not in encoded["x"]
    assert encoded["n"] == {"dtype": "int8", "shape": [2], "data": [1, 2]}
    _assert_same(tensors.decode_json(_through_json_text(encoded))["x"], array)


def test_json_keeps_the_names_and_their_order() -> None:
    arrays = {"z": np.zeros(1, np.uint8), "": np.ones(2, np.bool_), "日本": np.arange(2.0)}
    decoded = tensors.decode_json(_through_json_text(tensors.encode_json(arrays)))
    assert list(decoded) == list(arrays)
    assert tensors.map_digest(decoded) == tensors.map_digest(arrays)


_DTYPES_ANY_ORDER = [np.dtype(d) for d in tensors.DTYPES] + [
    np.dtype(f">{c}") for c in ("f2", "f4", "f8", "i2", "i4", "i8", "u2", "u4", "u8")
]


def _round_trips_as_data(shape: tuple[int, ...]) -> bool:
    """Every shape round-trips as nested lists (a zero dim before the last once did not)."""
    return True


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from(_DTYPES_ANY_ORDER),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3),
    ),
    st.booleans(),
)
def test_json_round_trip_of_arbitrary_arrays(array: np.ndarray, raw: bool) -> None:
    if not _round_trips_as_data(array.shape):
        raw = True
    encoded = _through_json_text(tensors.encode_json({"a": array}, raw=raw))
    decoded = tensors.decode_json(encoded)["a"]
    _assert_same(decoded, array)
    assert tensors.digest(decoded) == tensors.digest(array)


_OK = {"dtype": "float32", "shape": [2], "data": [1.0, 2.0]}
_B64_8 = base64.b64encode(bytes(8)).decode()


def _one(item: object) -> dict[str, object]:
    return {"x": item}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        pytest.param([], "non-empty JSON object", id="list"),
        pytest.param(None, "non-empty JSON object", id="null"),
        pytest.param("x", "non-empty JSON object", id="string"),
        pytest.param({}, "non-empty JSON object", id="empty-object"),
        pytest.param(_one(5), "tensor 'x' must be an object", id="tensor-not-object"),
        pytest.param(_one([1, 2]), "tensor 'x' must be an object", id="tensor-is-list"),
        pytest.param(
            _one({"shape": [2], "data": [1, 2]}),
            "tensor 'x': unsupported dtype None",
            id="no-dtype",
        ),
        pytest.param(
            _one({"dtype": "float32", "data": [1, 2]}), "tensor 'x': shape must be", id="no-shape"
        ),
        pytest.param(
            _one({"dtype": "float32", "shape": [2]}), "tensor 'x' needs dtype", id="no-data"
        ),
        pytest.param(
            _one({**_OK, "base64": _B64_8}), "exactly one of data or base64", id="data-and-base64"
        ),
        pytest.param(_one({**_OK, "order": "C"}), "tensor 'x' needs dtype", id="extra-key"),
        pytest.param(
            _one({**_OK, "dtype": "float128"}), "unsupported dtype 'float128'", id="float128"
        ),
        pytest.param(_one({**_OK, "dtype": "string"}), "unsupported dtype 'string'", id="string"),
        pytest.param(
            _one({**_OK, "dtype": "complex64"}), "unsupported dtype 'complex64'", id="complex64"
        ),
        pytest.param(
            _one({**_OK, "dtype": "Float32"}), "unsupported dtype 'Float32'", id="capitalised"
        ),
        pytest.param(_one({**_OK, "dtype": "<f4"}), "unsupported dtype '<f4'", id="numpy-code"),
        pytest.param(_one({**_OK, "dtype": ["float32"]}), "unsupported dtype", id="dtype-list"),
        pytest.param(_one({**_OK, "shape": [-1]}), r"tensor 'x': shape \[-1\]", id="negative-dim"),
        pytest.param(_one({**_OK, "shape": [2.0]}), r"shape \[2.0\] must hold", id="float-dim"),
        pytest.param(_one({**_OK, "shape": ["2"]}), "must hold integers >= 0", id="string-dim"),
        pytest.param(_one({**_OK, "shape": [None]}), "must hold integers >= 0", id="null-dim"),
        pytest.param(_one({**_OK, "shape": [True]}), r"shape \[True\] must hold", id="bool-dim"),
        pytest.param(_one({**_OK, "shape": 2}), "shape must be a list", id="shape-int"),
        pytest.param(_one({**_OK, "shape": None}), "shape must be a list", id="shape-null"),
        pytest.param(_one({**_OK, "shape": [1] * 33}), "at most 32 dims", id="rank-33"),
        pytest.param(
            _one({**_OK, "shape": [2, 1]}),
            r"tensor 'x': data has shape \[2\], declared \[2, 1\]",
            id="shape-mismatch",
        ),
        pytest.param(_one({**_OK, "shape": [3]}), r"data has shape \[2\]", id="too-few"),
        pytest.param(_one({**_OK, "shape": []}), r"data has shape \[2\]", id="list-for-scalar"),
        pytest.param(
            _one({"dtype": "float32", "shape": [2, 2], "data": [[1, 2], [3]]}),
            "tensor 'x': data has shape",
            id="ragged-float",
        ),
        pytest.param(
            _one({"dtype": "int8", "shape": [2, 2], "data": [[1, 2], [3]]}),
            "tensor 'x': data has shape",
            id="ragged-int",
        ),
        pytest.param(
            _one({"dtype": "bool", "shape": [2, 2], "data": [[True, False], [True]]}),
            "tensor 'x': data has shape",
            id="ragged-bool",
        ),
        pytest.param(
            _one({"dtype": "float32", "shape": [2], "data": [1.0, [2.0]]}),
            "tensor 'x': data does not fit",
            id="nested-element",
        ),
        pytest.param(
            _one({"dtype": "float32", "shape": [1], "data": [{"v": 1}]}),
            "tensor 'x': data does not fit",
            id="object-element",
        ),
        pytest.param(
            _one({"dtype": "int64", "shape": [2], "data": [1, 1.5]}),
            "tensor 'x': data does not fit dtype int64: need integers",
            id="int-with-float",
        ),
        pytest.param(
            _one({"dtype": "int32", "shape": [2], "data": [1, 2.0]}),
            "data does not fit dtype int32: need integers",
            id="int-with-integral-float",
        ),
        pytest.param(
            _one({"dtype": "uint8", "shape": [2], "data": [1, True]}),
            "data does not fit dtype uint8: need integers",
            id="int-with-bool",
        ),
        pytest.param(
            _one({"dtype": "int16", "shape": [1], "data": ["3"]}),
            "data does not fit dtype int16: need integers",
            id="int-with-string",
        ),
        pytest.param(
            _one({"dtype": "int8", "shape": [], "data": 1.5}),
            "data does not fit dtype int8: need integers",
            id="int-scalar-float",
        ),
        pytest.param(
            _one({"dtype": "uint8", "shape": [1], "data": [300]}),
            "tensor 'x': data does not fit dtype uint8",
            id="uint8-300",
        ),
        pytest.param(
            _one({"dtype": "uint8", "shape": [1], "data": [-1]}),
            "data does not fit dtype uint8",
            id="uint8-negative",
        ),
        pytest.param(
            _one({"dtype": "int8", "shape": [1], "data": [-129]}),
            "data does not fit dtype int8",
            id="int8-underflow",
        ),
        pytest.param(
            _one({"dtype": "int64", "shape": [1], "data": [2**63]}),
            "data does not fit dtype int64",
            id="int64-overflow",
        ),
        pytest.param(
            _one({"dtype": "uint64", "shape": [1], "data": [2**64]}),
            "data does not fit dtype uint64",
            id="uint64-overflow",
        ),
        pytest.param(
            _one({"dtype": "int64", "shape": [1], "data": [1e30]}),
            "data does not fit dtype int64",
            id="int64-huge-float",
        ),
        pytest.param(
            _one({"dtype": "float64", "shape": [1], "data": [10**400]}),
            "data does not fit dtype float64",
            id="float64-huge-int",
        ),
        pytest.param(
            _one({"dtype": "float32", "shape": [1], "data": ["one"]}),
            "data does not fit dtype float32",
            id="float-word",
        ),
        pytest.param(
            _one({"dtype": "bool", "shape": [2], "data": [True, 1]}),
            "tensor 'x': data does not fit dtype bool: need true or false",
            id="bool-with-int",
        ),
        pytest.param(
            _one({"dtype": "bool", "shape": [1], "data": ["true"]}),
            "data does not fit dtype bool: need true or false",
            id="bool-with-string",
        ),
        pytest.param(
            _one({"dtype": "bool", "shape": [1], "data": [None]}),
            "data does not fit dtype bool: need true or false",
            id="bool-with-null",
        ),
        pytest.param(
            _one({"dtype": "float32", "shape": [2], "base64": "!!!!!!!!"}),
            "tensor 'x': base64 is malformed",
            id="base64-alphabet",
        ),
        pytest.param(
            _one({"dtype": "float32", "shape": [2], "base64": "AAAAAAAAAAA"}),
            "base64 is malformed",
            id="base64-padding",
        ),
        pytest.param(
            _one({"dtype": "float32", "shape": [2], "base64": _B64_8 + "\n"}),
            "base64 is malformed",
            id="base64-newline",
        ),
        pytest.param(
            _one({"dtype": "uint8", "shape": [3], "base64": "-_-_"}),
            "base64 is malformed",
            id="base64-urlsafe",
        ),
        pytest.param(
            _one({"dtype": "float32", "shape": [2], "base64": "AAAAAAAAAAé="}),
            "base64 is malformed",
            id="base64-non-ascii",
        ),
        pytest.param(
            _one({"dtype": "float32", "shape": [2], "base64": 12345678}),
            "base64 is malformed",
            id="base64-number",
        ),
        pytest.param(
            _one({"dtype": "float32", "shape": [2], "base64": [_B64_8]}),
            "base64 is malformed",
            id="base64-list",
        ),
        pytest.param(
            _one({"dtype": "float32", "shape": [3], "base64": _B64_8}),
            re.escape("tensor 'x': 8 bytes of data for shape [3] of float32 (12 bytes expected)"),
            id="base64-too-short",
        ),
        pytest.param(
            _one({"dtype": "int8", "shape": [], "base64": "AAA="}),
            re.escape("2 bytes of data for shape [] of int8 (1 bytes expected)"),
            id="base64-too-long",
        ),
        pytest.param(
            {"ok": _OK, "bad": {"dtype": "float32", "shape": [2], "data": [1.0]}},
            "tensor 'bad'",
            id="names-the-bad-one",
        ),
    ],
)
def test_decode_json_errors_name_the_tensor(value: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        tensors.decode_json(value)


def test_decode_json_max_bytes_counts_every_tensor_before_decoding() -> None:
    two = {"x": {"dtype": "float32", "shape": [2], "data": [1.0, 2.0]}}
    assert tensors.decode_json(two, max_bytes=8)["x"].nbytes == 8
    with pytest.raises(InputError, match="tensor 'x': the inputs exceed 7 bytes"):
        tensors.decode_json(two, max_bytes=7)
    both = {**two, "y": {"dtype": "uint8", "shape": [1], "base64": "AA=="}}
    assert set(tensors.decode_json(both, max_bytes=9)) == {"x", "y"}
    with pytest.raises(InputError, match="tensor 'y': the inputs exceed 8 bytes"):
        tensors.decode_json(both, max_bytes=8)
    # the declared shape is checked before any data is looked at
    huge = {"h": {"dtype": "float64", "shape": [2**40, 2**20], "data": []}}
    with pytest.raises(InputError, match="tensor 'h': the inputs exceed 1000000 bytes"):
        tensors.decode_json(huge, max_bytes=10**6)


def test_decoded_arrays_are_writable_copies() -> None:
    raw = tensors.decode_json({"x": {"dtype": "int32", "shape": [2], "base64": _B64_8}})["x"]
    assert raw.flags.writeable
    assert raw.flags.c_contiguous
    assert raw.dtype == np.dtype("int32")


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=24,
)


def _check_decoded(value: object, decoded: dict[str, np.ndarray]) -> None:
    assert isinstance(value, dict)
    assert list(decoded) == list(value)
    for name, array in decoded.items():
        assert isinstance(array, np.ndarray)
        assert array.dtype.name == value[name]["dtype"]
        assert list(array.shape) == value[name]["shape"]
        again = tensors.decode_json(tensors.encode_json({name: array}, raw=True))[name]
        _assert_same(again, array)


@settings(max_examples=300, deadline=None)
@given(_JSON_VALUES)
def test_decode_json_of_arbitrary_json_is_tensors_or_input_error(value: object) -> None:
    try:
        decoded = tensors.decode_json(value)
    except InputError:
        return
    _check_decoded(value, decoded)


def _nest(flat: list[Any], shape: Sequence[int]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


# Element values stay inside float16's range and text holds no digits: out-of-range numbers
# and zero-size shapes with huge dims have their own regression tests below.
_ELEMENTS = [
    st.integers(-3, 3),
    st.integers(-300, 300),
    st.integers(-60000, 60000),
    st.floats(-6e4, 6e4),
    st.booleans(),
    st.none(),
    st.text(alphabet="aefinx -", max_size=3),
]
_JUNK_DTYPES = st.sampled_from(["float128", "string", "", "Float32", "<f4", "complex64"])


def _fitting(dtype: str) -> st.SearchStrategy[Any]:
    """Element values that suit ``dtype`` (in range, of the right JSON type)."""
    if dtype == "bool":
        return st.booleans()
    if np.dtype(dtype).kind == "f":
        return st.floats(-6e4, 6e4) | st.integers(-100, 100)
    info = np.iinfo(dtype)
    return st.integers(int(info.min), int(info.max))


@st.composite
def _tensor_like(draw: st.DrawFn) -> object:
    """Mostly well-formed tensors, each field made wrong now and then."""
    item: dict[str, Any] = {}
    valid = tensors.DTYPES
    wild = draw(st.booleans())  # half of them are well-formed throughout

    def rarely() -> bool:
        return wild and draw(st.integers(0, 3)) == 2

    dtype = draw(_JUNK_DTYPES | _JSON_VALUES if rarely() else st.sampled_from(valid))
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    count = math.prod(shape)
    form = draw(st.sampled_from(["both", "neither"] if rarely() else ["data", "base64"]))
    if form in ("data", "both"):
        fits = dtype in valid and not rarely()
        elements = _fitting(dtype) if fits else st.one_of(_ELEMENTS)
        flat = draw(st.lists(elements, min_size=count, max_size=count))
        item["data"] = _nest(flat, shape) if count else draw(st.sampled_from([[], [[]], 0]))
    if form in ("base64", "both"):
        size = count * np.dtype(dtype).itemsize if dtype in valid else 4
        size = max(0, size + (draw(st.sampled_from([-1, 1])) if rarely() else 0))
        encoded = st.binary(min_size=size, max_size=size).map(
            lambda b: base64.b64encode(b).decode()
        )
        item["base64"] = draw(st.text(max_size=6) if rarely() else encoded)
    if not rarely():
        item["dtype"] = dtype
    if not rarely():
        junk = st.lists(st.integers(-1, 3) | st.booleans() | st.floats(0, 3), max_size=3)
        item["shape"] = draw(junk | _JSON_VALUES) if rarely() else shape
    if rarely():
        item["extra"] = draw(_JSON_VALUES)
    return item


@settings(max_examples=250, deadline=None)
@given(
    st.dictionaries(st.text(max_size=3), _tensor_like(), min_size=1, max_size=2),
    st.none() | st.integers(0, 64),
)
def test_decode_json_of_tensor_like_values_is_tensors_or_input_error(
    value: dict[str, Any], max_bytes: int | None
) -> None:
    try:
        decoded = tensors.decode_json(value, max_bytes=max_bytes)
    except InputError:
        return
    _check_decoded(value, decoded)
    if max_bytes is not None:
        assert sum(a.nbytes for a in decoded.values()) <= max_bytes


# ---------------------------------------------------------------------------------------------
# 3. Binary form

_MIXED = {
    "x": np.arange(6, dtype=np.float32).reshape(2, 3),
    "mask": np.array([True, False]),
    "ids": np.array([[-(2**63), 2**63 - 1]], dtype=np.int64),
    "scalar": np.array(2.5, dtype=np.float16),
    "empty": np.zeros((0, 3), dtype=np.uint16),
    "nan": np.array([np.nan, -0.0, np.inf]),
    "": np.array([255], dtype=np.uint8),
    "日本": np.array([1, 2], dtype=np.uint64),
}


def test_npz_round_trip_of_several_named_arrays() -> None:
    data = tensors.encode_binary(_MIXED)
    assert data[:4] == b"PK\x03\x04"
    decoded = tensors.decode_binary(data)
    assert set(decoded) == set(_MIXED)
    for name, array in _MIXED.items():
        _assert_same(decoded[name], array)
    assert tensors.map_digest(decoded) == tensors.map_digest(_MIXED)
    assert tensors.decode_binary(data, name="ignored").keys() == decoded.keys()


@pytest.mark.parametrize("dtype", tensors.DTYPES)
def test_npz_round_trip_of_every_dtype(dtype: str) -> None:
    array = _sample(dtype)
    _assert_same(tensors.decode_binary(tensors.encode_binary({"t": array}))["t"], array)


def test_npz_written_by_numpy_is_read() -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, a=np.arange(4), b=np.eye(2, dtype=np.float32))
    decoded = tensors.decode_binary(buffer.getvalue())
    _assert_same(decoded["a"], np.arange(4))
    _assert_same(decoded["b"], np.eye(2, dtype=np.float32))


def test_npy_is_one_tensor_named_by_the_caller() -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4)
    decoded = tensors.decode_binary(_npy(array), name="input_ids")
    assert list(decoded) == ["input_ids"]
    _assert_same(decoded["input_ids"], array)


def test_npy_without_a_name_is_refused() -> None:
    with pytest.raises(InputError, match="give its input name"):
        tensors.decode_binary(_npy(np.zeros(2)))


def test_big_endian_and_fortran_npy_digest_like_their_native_twins() -> None:
    native = np.arange(6, dtype=np.float64).reshape(2, 3)
    for stored in (native.astype(">f8"), np.asfortranarray(native)):
        decoded = tensors.decode_binary(_npy(stored), name="x")["x"]
        _assert_same(decoded, native)
        assert tensors.digest(decoded) == tensors.digest(native)


_EXECUTED: list[str] = []


def _record(what: str) -> str:
    _EXECUTED.append(what)
    return what


class _Payload:
    """Unpickling this calls ``_record``: stands in for arbitrary code execution."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_record, ("unpickled",))


def test_pickled_object_arrays_are_refused_without_running_them() -> None:
    npy = _npy(np.array([_Payload(), 1], dtype=object), allow_pickle=True)
    np.load(io.BytesIO(npy), allow_pickle=True)  # the control: this payload is live
    assert _EXECUTED == ["unpickled"]
    _EXECUTED.clear()
    buffer = io.BytesIO()
    np.savez(buffer, evil=np.array([_Payload()], dtype=object))
    plain_pickle = pickle.dumps(_Payload())
    with pytest.raises(InputError, match="Object arrays cannot be loaded"):
        tensors.decode_binary(npy, name="x")
    with pytest.raises(InputError, match=r"Object arrays cannot be loaded"):
        tensors.decode_binary(buffer.getvalue())
    with pytest.raises(InputError, match=r"malformed \.npy/\.npz data"):
        tensors.decode_binary(plain_pickle, name="x")
    assert _EXECUTED == []


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"garbage bytes", id="garbage"),
        pytest.param(b"\x93NUMPY", id="magic-only"),
        pytest.param(b"\x93NUMPY\x09\x00\x10\x00", id="unknown-version"),
        pytest.param(_npy(np.arange(8))[:-1], id="one-byte-short"),
        pytest.param(_npy_with_header("{'descr': '<i4', 'shape': (2,), }"), id="no-order"),
        pytest.param(_npy_with_header("{'descr': '<i4' 'fortran_order': }"), id="header-syntax"),
        pytest.param(
            _npy_with_header("{'descr': '<i4', 'fortran_order': False, 'shape': (-1,), }"),
            id="negative-dim",
        ),
        pytest.param(
            _npy_with_header("{'descr': 'O', 'fortran_order': False, 'shape': (1,), }"),
            id="object-descr",
        ),
        pytest.param(
            _npy_with_header("{'descr': '<i4', 'fortran_order': False, 'shape': (3, 4), }"),
            id="header-without-data",
        ),
    ],
)
def test_malformed_npy_is_an_input_error(data: bytes) -> None:
    with pytest.raises(InputError, match=r"malformed \.npy/\.npz data"):
        tensors.decode_binary(data, name="x")


def test_every_truncation_of_an_npy_is_an_input_error() -> None:
    data = _npy(np.arange(20, dtype=np.int16).reshape(4, 5))
    for length in range(len(data)):
        with pytest.raises(InputError, match="malformed"):
            tensors.decode_binary(data[:length], name="x")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64).filter(lambda b: not b.startswith((b"PK", b"\x93NUMPY"))))
def test_arbitrary_bytes_are_an_input_error(data: bytes) -> None:
    with pytest.raises(InputError, match="malformed"):
        tensors.decode_binary(data, name="x")


@pytest.mark.parametrize(
    "array",
    [
        np.zeros(3, dtype=np.complex64),
        np.array(["ab", "c"]),
        np.zeros(2, dtype="datetime64[s]"),
        np.zeros(2, dtype=[("a", "<i4"), ("b", "<f4")]),
    ],
    ids=lambda a: a.dtype.name,
)
def test_unsupported_binary_dtypes_are_refused(array: np.ndarray) -> None:
    match = f"tensor 'x': unsupported dtype {array.dtype.name!r}"
    with pytest.raises(InputError, match=re.escape(match)):
        tensors.decode_binary(_npy(array), name="x")
    buffer = io.BytesIO()
    np.savez(buffer, ok=np.zeros(1), x=array)
    with pytest.raises(InputError, match=re.escape(match)):
        tensors.decode_binary(buffer.getvalue())


def test_binary_max_bytes_limits_the_file() -> None:
    data = tensors.encode_binary({"x": np.zeros(100)})
    assert tensors.decode_binary(data, max_bytes=len(data))["x"].shape == (100,)
    with pytest.raises(InputError, match=f"is {len(data)} bytes, above the limit of 100"):
        tensors.decode_binary(data, max_bytes=100)
    npy = _npy(np.zeros(100))
    with pytest.raises(InputError, match="above the limit"):
        tensors.decode_binary(npy, name="x", max_bytes=len(npy) - 1)


# ---------------------------------------------------------------------------------------------
# 4. validate()

_SIGNATURE = [
    {"name": "x", "dtype": "float32", "shape": ["batch", 3]},
    {"name": "k", "dtype": "int64", "shape": [1, 3]},
]


def _inputs(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "x": np.zeros((5, 3), dtype=np.float32),
        "k": np.zeros((1, 3), dtype=np.int64),
    }
    base.update(changes)
    return base


def test_validate_returns_the_tensors_in_signature_order() -> None:
    supplied = _inputs()
    checked = tensors.validate(dict(reversed(supplied.items())), _SIGNATURE)
    assert list(checked) == ["x", "k"]
    assert checked["x"] is supplied["x"]
    assert checked["k"] is supplied["k"]


@pytest.mark.parametrize(
    ("supplied", "match"),
    [
        pytest.param(
            {"x": np.zeros((5, 3), np.float32)},
            re.escape("inputs do not match the model: missing ['k'], unexpected []"),
            id="missing",
        ),
        pytest.param(
            _inputs(q=np.zeros(1)),
            re.escape("missing [], unexpected ['q'] (expected ['x', 'k'])"),
            id="unexpected",
        ),
        pytest.param(
            {"X": np.zeros((5, 3), np.float32), "k": np.zeros((1, 3), np.int64)},
            re.escape("missing ['x'], unexpected ['X']"),
            id="both-case-differs",
        ),
        pytest.param({}, re.escape("missing ['x', 'k']"), id="nothing"),
        pytest.param(
            _inputs(x=np.zeros((5, 3), np.float64)),
            "input 'x' has dtype float64, expected float32",
            id="dtype",
        ),
        pytest.param(
            _inputs(k=np.zeros((1, 3), np.int32)),
            "input 'k' has dtype int32, expected int64",
            id="dtype-width",
        ),
        pytest.param(
            _inputs(x=np.zeros(3, np.float32)),
            re.escape("input 'x' has rank 1 (shape [3]), expected rank 2 (['batch', 3])"),
            id="rank-low",
        ),
        pytest.param(
            _inputs(k=np.zeros((1, 1, 3), np.int64)),
            "input 'k' has rank 3",
            id="rank-high",
        ),
        pytest.param(
            _inputs(x=np.zeros((), np.float32)),
            re.escape("input 'x' has rank 0 (shape [])"),
            id="scalar",
        ),
        pytest.param(
            _inputs(k=np.zeros((1, 4), np.int64)),
            "input 'k' has size 4 on axis 1, expected 3",
            id="fixed-dim",
        ),
        pytest.param(
            _inputs(k=np.zeros((2, 3), np.int64)),
            "input 'k' has size 2 on axis 0, expected 1",
            id="fixed-dim-0",
        ),
        pytest.param(
            _inputs(x=np.zeros((5, 4), np.float32)),
            "input 'x' has size 4 on axis 1, expected 3",
            id="fixed-dim-beside-symbol",
        ),
    ],
)
def test_validate_refusals_name_the_tensor(supplied: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        tensors.validate(supplied, _SIGNATURE)


def test_validate_takes_the_dtype_whatever_the_byte_order() -> None:
    supplied = _inputs(x=np.zeros((2, 3), dtype=">f4"), k=np.zeros((1, 3), dtype=">i8"))
    checked = tensors.validate(supplied, _SIGNATURE)
    # the checked tensors are in native order, so what runs is what is hashed
    assert checked["x"].dtype == np.dtype("<f4")
    np.testing.assert_array_equal(checked["x"], supplied["x"])
    assert tensors.digest(checked["x"]) == tensors.digest(supplied["x"])
    with pytest.raises(InputError, match="input 'x' has dtype float64, expected float32"):
        tensors.validate(_inputs(x=np.zeros((2, 3), dtype=">f8")), _SIGNATURE)


def test_validate_role_names_outputs() -> None:
    with pytest.raises(InputError, match="outputs do not match the model"):
        tensors.validate({}, _SIGNATURE, role="output")
    with pytest.raises(InputError, match="output 'k' has dtype"):
        tensors.validate(_inputs(k=np.zeros((1, 3))), _SIGNATURE, role="output")


def test_symbolic_dims_must_agree_across_tensors() -> None:
    signature = [
        {"name": "x", "dtype": "float32", "shape": ["batch", 3]},
        {"name": "m", "dtype": "bool", "shape": ["batch", "seq"]},
        {"name": "s", "dtype": "int64", "shape": ["seq"]},
    ]
    ok = {
        "x": np.zeros((5, 3), np.float32),
        "m": np.zeros((5, 7), np.bool_),
        "s": np.zeros(7, np.int64),
    }
    assert list(tensors.validate(ok, signature)) == ["x", "m", "s"]
    with pytest.raises(InputError, match="input 'm' has batch=2 on axis 0, but 'x' has batch=5"):
        tensors.validate({**ok, "m": np.zeros((2, 7), np.bool_)}, signature)
    with pytest.raises(InputError, match="input 's' has seq=6 on axis 0, but 'm' has seq=7"):
        tensors.validate({**ok, "s": np.zeros(6, np.int64)}, signature)
    one = [{"name": "sq", "dtype": "float32", "shape": ["n", "n"]}]
    assert tensors.validate({"sq": np.zeros((4, 4), np.float32)}, one)
    with pytest.raises(InputError, match="input 'sq' has n=3 on axis 1, but 'sq' has n=2"):
        tensors.validate({"sq": np.zeros((2, 3), np.float32)}, one)


def test_unknown_shapes_and_dims_accept_anything() -> None:
    any_shape = [{"name": "x", "dtype": "uint8", "shape": None}]
    for shape in [(), (0,), (2, 3), (1, 1, 1, 1, 1)]:
        assert tensors.validate({"x": np.zeros(shape, np.uint8)}, any_shape)
    any_dim = [{"name": "x", "dtype": "uint8", "shape": [None, 2]}]
    assert tensors.validate({"x": np.zeros((9, 2), np.uint8)}, any_dim)
    assert tensors.validate({"x": np.zeros((0, 2), np.uint8)}, any_dim)
    with pytest.raises(InputError, match="input 'x' has size 3 on axis 1, expected 2"):
        tensors.validate({"x": np.zeros((9, 3), np.uint8)}, any_dim)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("bad", [_NAN, _INF, -_INF])
def test_non_finite_values_are_data_unless_the_publisher_declared_finite_inputs(
    dtype: str, bad: float
) -> None:
    signature = [{"name": "x", "dtype": dtype, "shape": [2, 3]}]
    array = np.zeros((2, 3), dtype=dtype)
    array[1, 2] = bad
    array[1, 1] = bad
    assert tensors.validate({"x": array}, signature)["x"] is array
    with pytest.raises(
        InputError, match=re.escape("input 'x' holds NaN or infinity at index [1, 1], and the")
    ):
        tensors.validate({"x": array}, signature, finite_only=True)
    scalar = [{"name": "x", "dtype": dtype, "shape": []}]
    with pytest.raises(InputError, match=re.escape("at index []")):
        tensors.validate({"x": np.array(bad, dtype=dtype)}, scalar, finite_only=True)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_json_data_keeps_nan_and_infinity_but_refuses_overflow(dtype: str) -> None:
    """Python's json writes and reads NaN and Infinity; those stay what they are, while a
    finite number beyond the dtype's range is refused, not turned into infinity."""
    value = json.loads(json.dumps({"x": {"dtype": dtype, "shape": [3], "data": [_NAN, _INF, 1]}}))
    decoded = tensors.decode_json(value)["x"]
    assert np.isnan(decoded[0])
    assert decoded[1] == np.inf
    assert decoded[2] == 1
    if dtype != "float64":
        with pytest.raises(InputError, match=f"data does not fit dtype {dtype}: out of range"):
            tensors.decode_json({"x": {"dtype": dtype, "shape": [1], "data": [1e300]}})
    with pytest.raises(InputError, match=f"data does not fit dtype {dtype}: int too large"):
        tensors.decode_json({"x": {"dtype": dtype, "shape": [1], "data": [10**400]}})


def test_validate_max_bytes_counts_every_tensor() -> None:
    total = 5 * 3 * 4 + 3 * 8
    assert tensors.validate(_inputs(), _SIGNATURE, max_bytes=total)
    with pytest.raises(InputError, match=f"the inputs are {total} bytes, above the limit of 83"):
        tensors.validate(_inputs(), _SIGNATURE, max_bytes=total - 1)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        pytest.param(np.float32(1.0), "float32", id="numpy-scalar"),
        pytest.param(memoryview(b"abc"), "memoryview", id="memoryview"),
    ],
)
def test_validate_refuses_values_that_are_not_arrays(value: object, kind: str) -> None:
    signature = [{"name": "x", "dtype": "float32", "shape": None}]
    with pytest.raises(InputError, match=f"input 'x' is a {kind}, not a numpy array"):
        tensors.validate({"x": value}, signature)


# ---------------------------------------------------------------------------------------------
# Regression tests for the defects this file found


@pytest.mark.parametrize("shape", [(0, 3), (2, 0, 4), (0, 1, 1)])
def test_bug_empty_tensor_data_form_round_trips(shape: tuple[int, ...]) -> None:
    array = np.zeros(shape, dtype=np.float32)
    _assert_same(tensors.decode_json(tensors.encode_json({"e": array}))["e"], array)


@pytest.mark.parametrize(
    ("dtype", "data"),
    [
        pytest.param("float32", ["1.5"], id="string"),
        pytest.param("float64", "nan", id="string-nan-scalar"),
        pytest.param("float32", [None], id="null"),
        pytest.param("float16", [True], id="bool"),
        pytest.param("float32", [1e300], id="float32-overflow"),
        pytest.param("float16", [1e6], id="float16-overflow"),
    ],
)
def test_bug_float_data_must_be_finite_json_numbers_in_range(dtype: str, data: Any) -> None:
    shape = [] if isinstance(data, str) else [len(data)]
    with pytest.raises(InputError, match="tensor 'x'"):
        tensors.decode_json({"x": {"dtype": dtype, "shape": shape, "data": data}})


@pytest.mark.parametrize("shape", [[0, 2**64], [0, 2**62, 2**62]], ids=["2^64", "2^124"])
def test_bug_zero_size_shape_with_huge_dims_is_an_input_error(shape: list[int]) -> None:
    with pytest.raises(InputError, match="tensor 'x'"):
        tensors.decode_json({"x": {"dtype": "float32", "shape": shape, "base64": ""}})


def test_bug_bool_base64_bytes_are_zero_or_one() -> None:
    item = {"dtype": "bool", "shape": [1], "base64": base64.b64encode(b"\x02").decode()}
    try:
        array = tensors.decode_json({"x": item})["x"]
    except InputError:
        return  # refusing the byte is a fix
    assert tensors.digest(array) == tensors.digest(np.array([True]))  # so is normalising it


def _corrupt_npz() -> bytes:
    data = bytearray(tensors.encode_binary({"a": np.arange(10.0)}))
    data[data.index(b"\x93NUMPY") + 100] ^= 0xFF  # a byte of the array data: bad CRC-32
    return bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(tensors.encode_binary({"a": np.arange(10.0)})[:-30], id="truncated-npz"),
        pytest.param(b"PK\x03\x04", id="zip-magic-only"),
        pytest.param(_corrupt_npz(), id="npz-bad-crc"),
        pytest.param(
            _npy_with_header("{'descr': '<i4', 'fortran_order': False, 'shape': (3, 4), "),
            id="npy-unclosed-header",
        ),
        pytest.param(
            _npy_with_header("{'descr': ',i4', 'fortran_order': False, 'shape': (3, 4), }"),
            id="npy-descr-syntax",
        ),
    ],
)
def test_bug_damaged_files_are_input_errors(data: bytes) -> None:
    with pytest.raises(InputError, match="malformed"):
        tensors.decode_binary(data, name="x")


def test_bug_npz_member_that_is_not_npy_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.txt", b"not an array")
    with pytest.raises(InputError, match=r"x\.txt"):
        tensors.decode_binary(buffer.getvalue())


def test_bug_npy_header_size_is_checked_before_allocating() -> None:
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000000,), }"
    data = _npy_with_header(header)
    assert len(data) == 128
    with pytest.raises(InputError, match="tensor 'x' declares 8000000000000000 bytes, above 1000"):
        tensors.decode_binary(data, name="x", max_bytes=1000)


def test_bug_compressed_npz_is_limited_by_its_decoded_size() -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, big=np.zeros(2 * 10**6))
    assert len(buffer.getvalue()) < 100_000
    with pytest.raises(InputError, match="above the limit"):
        tensors.decode_binary(buffer.getvalue(), max_bytes=100_000)


@pytest.mark.parametrize("name", ["file", "allow_pickle"])
def test_bug_encode_binary_accepts_any_name(name: str) -> None:
    array = np.arange(3.0)
    _assert_same(tensors.decode_binary(tensors.encode_binary({name: array}))[name], array)


def test_bug_validate_refuses_a_list_as_input_error() -> None:
    with pytest.raises(InputError, match="input 'x' is a list, not a numpy array"):
        tensors.validate(_inputs(x=[[0.0, 0.0, 0.0]]), _SIGNATURE)


def test_bug_names_must_be_utf8_encodable() -> None:
    value = json.loads('{"\\ud800": {"dtype": "int8", "shape": [], "data": 1}}')
    with pytest.raises(InputError, match=r"tensor name '\\ud800' is not valid Unicode"):
        tensors.decode_json(value)
