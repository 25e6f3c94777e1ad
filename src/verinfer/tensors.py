"""Named tensors: their digests, their JSON and binary forms, and checks against a signature.

Pure: no I/O beyond the bytes handed in. The digest encoding (docs/PROTOCOL.md §9)::

    tensor digest = SHA-256("verinfer/tensor/v1" 0x00 || dtype 0x00 || u32be(rank)
                            || u64be(dim) for each dim || element bytes, little-endian, C order)
    map digest    = SHA-256("verinfer/tensors/v1" 0x00 || u32be(count)
                            || for each name in UTF-8 byte order:
                               u32be(len(name)) || name || tensor digest)

Digests are written ``sha256:<64 hex digits>``. ``bool`` elements are one byte, 0 or 1.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from verinfer.errors import InputError

__all__ = [
    "DTYPES",
    "decode_binary",
    "decode_json",
    "digest",
    "encode_binary",
    "encode_json",
    "map_digest",
    "validate",
]

DTYPES = (
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)
_TENSOR_DOMAIN = b"verinfer/tensor/v1\x00"
_MAP_DOMAIN = b"verinfer/tensors/v1\x00"
_MAX_RANK = 32
_DIGEST_PREFIX = "sha256:"


_NAMES = {np.dtype(name): name for name in DTYPES}  # dtype.name is slow (computed in Python)


def _dtype_name(array: np.ndarray) -> str:
    name = _NAMES.get(array.dtype) or array.dtype.name
    if name not in DTYPES:
        raise InputError(f"unsupported tensor dtype {name!r}; supported: {', '.join(DTYPES)}")
    return name


def _little_endian(array: np.ndarray) -> np.ndarray:
    order = array.dtype.byteorder
    if order == ">" or (order == "=" and not np.little_endian):
        array = array.astype(array.dtype.newbyteorder("<"))
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def _digest(array: np.ndarray) -> bytes:
    name = _dtype_name(array)
    header = b"".join(
        [
            _TENSOR_DOMAIN,
            name.encode(),
            b"\x00",
            struct.pack(f">I{array.ndim}Q", array.ndim, *array.shape),
        ]
    )
    hasher = hashlib.sha256(header)
    hasher.update(_little_endian(array).data)
    return hasher.digest()


def digest(array: np.ndarray) -> str:
    """The digest of one tensor: dtype, shape and little-endian row-major bytes."""
    return _DIGEST_PREFIX + _digest(array).hex()


def map_digest(tensors: Mapping[str, np.ndarray]) -> str:
    """The digest of a named map of tensors (names sorted by their UTF-8 bytes)."""
    hasher = hashlib.sha256(_MAP_DOMAIN + struct.pack(">I", len(tensors)))
    for name in sorted(tensors, key=lambda n: n.encode()):
        encoded = name.encode()
        hasher.update(struct.pack(">I", len(encoded)) + encoded + _digest(tensors[name]))
    return _DIGEST_PREFIX + hasher.hexdigest()


# ---------------------------------------------------------------------------------------------
# JSON form: {"name": {"dtype": "float32", "shape": [2, 3], "data": [[...], [...]]}}
#        or  {"name": {"dtype": "float32", "shape": [2, 3], "base64": "<little-endian bytes>"}}


def _shape(value: object, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > _MAX_RANK:
        raise InputError(f"tensor {name!r}: shape must be a list of at most {_MAX_RANK} dims")
    for dim in value:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise InputError(f"tensor {name!r}: shape {value!r} must hold integers >= 0")
    return tuple(value)


def decode_json(value: object, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Named tensors from their JSON form; raises :class:`InputError` naming the bad tensor."""
    if not isinstance(value, dict) or not value:
        raise InputError("tensors must be a non-empty JSON object of name -> tensor")
    out = {}
    total = 0
    for name, item in value.items():
        if not isinstance(item, dict):
            raise InputError(f"tensor {name!r} must be an object with dtype, shape and data")
        extra = set(item) - {"dtype", "shape", "data", "base64"}
        if extra or ("data" in item) == ("base64" in item):
            raise InputError(
                f"tensor {name!r} needs dtype, shape and exactly one of data or base64 "
                f"(got {sorted(item)!r})"
            )
        dtype = item.get("dtype")
        if dtype not in DTYPES:
            raise InputError(f"tensor {name!r}: unsupported dtype {dtype!r}")
        shape = _shape(item.get("shape"), name)
        count = math.prod(shape)
        size = count * np.dtype(dtype).itemsize
        total += size
        if max_bytes is not None and total > max_bytes:
            raise InputError(f"tensor {name!r}: the inputs exceed {max_bytes} bytes")
        if "base64" in item:
            try:
                raw = base64.b64decode(item["base64"], validate=True)
            except (TypeError, ValueError) as exc:
                raise InputError(f"tensor {name!r}: base64 is malformed") from exc
            if len(raw) != size:
                raise InputError(
                    f"tensor {name!r}: {len(raw)} bytes of data for shape {list(shape)} of "
                    f"{dtype} ({size} bytes expected)"
                )
            array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
            out[name] = array.astype(dtype, copy=True)
            continue
        try:
            array = np.array(item["data"], dtype=dtype if dtype != "bool" else object)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"tensor {name!r}: data does not fit dtype {dtype}: {exc}") from exc
        if array.shape != shape:
            raise InputError(
                f"tensor {name!r}: data has shape {list(array.shape)}, declared {list(shape)}"
            )
        if dtype == "bool":
            if not all(isinstance(x, bool) for x in array.flat):
                raise InputError(f"tensor {name!r}: bool data must be true or false")
            array = array.astype(np.bool_)
        elif array.dtype.kind in "iu":
            # reject silent wrap-around and float truncation: the values must be exact integers
            original: Any = np.array(item["data"], dtype=object).reshape(-1) if count else []
            if any(isinstance(x, bool) or not isinstance(x, int) for x in original):
                raise InputError(f"tensor {name!r}: {dtype} data must be integers")
        out[name] = array
    return out


def _json_list(array: np.ndarray) -> Any:
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise InputError("NaN and infinity have no JSON number: use the base64 form")
        return array.astype(np.float64).tolist()  # exact: every float16/32 is a float64
    return array.tolist()


def encode_json(tensors: Mapping[str, np.ndarray], *, raw: bool = False) -> dict[str, Any]:
    """The JSON form; ``raw`` (or a non-finite float) selects base64 of the bytes."""
    out: dict[str, Any] = {}
    for name, array in tensors.items():
        dtype = _dtype_name(array)
        item: dict[str, Any] = {"dtype": dtype, "shape": list(array.shape)}
        if raw or (array.dtype.kind == "f" and not np.isfinite(array).all()):
            item["base64"] = base64.b64encode(_little_endian(array).tobytes()).decode()
        else:
            item["data"] = _json_list(array)
        out[name] = item
    return out


# ---------------------------------------------------------------------------------------------
# Binary form: .npz (a named map) or .npy (one tensor, named by the caller)


def decode_binary(
    data: bytes, *, name: str | None = None, max_bytes: int | None = None
) -> dict[str, np.ndarray]:
    """Named tensors from ``.npz`` bytes, or one ``.npy`` tensor called ``name``."""
    if max_bytes is not None and len(data) > max_bytes:
        raise InputError(f"the tensor file is {len(data)} bytes, above the limit of {max_bytes}")
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"malformed .npy/.npz data: {exc}") from exc
    if isinstance(loaded, np.ndarray):
        if name is None:
            raise InputError("a .npy file holds one unnamed tensor: give its input name")
        arrays = {name: loaded}
    else:
        with loaded:
            try:
                arrays = {key: loaded[key] for key in loaded.files}
            except (ValueError, OSError, EOFError) as exc:
                raise InputError(f"malformed .npz data: {exc}") from exc
    for key, array in arrays.items():
        if array.dtype.name not in DTYPES:
            raise InputError(f"tensor {key!r}: unsupported dtype {array.dtype.name!r}")
    return arrays


def encode_binary(tensors: Mapping[str, np.ndarray]) -> bytes:
    """The ``.npz`` bytes of a named map (uncompressed, no pickles)."""
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **dict(tensors))
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Checks against a manifest's signature


def validate(
    tensors: Mapping[str, np.ndarray],
    signature: Sequence[Mapping[str, Any]],
    *,
    role: str = "input",
    max_bytes: int | None = None,
    allow_nan: bool = False,
) -> dict[str, np.ndarray]:
    """Check tensors against a manifest's ``inputs`` (or ``outputs``); return them in order.

    Names must match exactly; dtypes and ranks must be equal; fixed dims equal; a symbolic dim
    the same size wherever it appears. NaN and infinities are refused unless ``allow_nan``.
    """
    expected = [spec["name"] for spec in signature]
    missing = [n for n in expected if n not in tensors]
    unexpected = [n for n in tensors if n not in expected]
    if missing or unexpected:
        raise InputError(
            f"{role}s do not match the model: missing {missing!r}, unexpected {unexpected!r} "
            f"(expected {expected!r})"
        )
    total = sum(int(array.nbytes) for array in tensors.values())
    if max_bytes is not None and total > max_bytes:
        raise InputError(f"the {role}s are {total} bytes, above the limit of {max_bytes}")
    symbols: dict[str, tuple[int, str]] = {}
    out = {}
    for spec in signature:
        name = spec["name"]
        array = tensors[name]
        if not isinstance(array, np.ndarray):
            raise InputError(f"{role} {name!r} is a {type(array).__name__}, not a numpy array")
        dtype = _NAMES.get(array.dtype) or array.dtype.name
        if dtype != spec["dtype"]:
            raise InputError(f"{role} {name!r} has dtype {dtype}, expected {spec['dtype']}")
        shape = spec["shape"]
        if shape is not None:
            if array.ndim != len(shape):
                raise InputError(
                    f"{role} {name!r} has rank {array.ndim} (shape {list(array.shape)}), "
                    f"expected rank {len(shape)} ({shape!r})"
                )
            for axis, (dim, want) in enumerate(zip(array.shape, shape, strict=True)):
                if isinstance(want, int) and dim != want:
                    raise InputError(
                        f"{role} {name!r} has size {dim} on axis {axis}, expected {want}"
                    )
                if isinstance(want, str):
                    seen = symbols.setdefault(want, (dim, name))
                    if seen[0] != dim:
                        raise InputError(
                            f"{role} {name!r} has {want}={dim} on axis {axis}, but {seen[1]!r} "
                            f"has {want}={seen[0]}"
                        )
        if not allow_nan and array.dtype.kind == "f" and not np.isfinite(array).all():
            where = np.argwhere(~np.isfinite(array))[0].tolist()
            raise InputError(f"{role} {name!r} holds NaN or infinity at index {where}")
        out[name] = array
    return out
