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
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import numpy as np

from verinfer.errors import InputError

__all__ = [
    "DTYPES",
    "MAX_NPZ_DIRECTORY",
    "MAX_NPZ_MEMBERS",
    "decode_binary",
    "decode_json",
    "deviation",
    "digest",
    "encode_binary",
    "encode_json",
    "from_plain",
    "is_plain",
    "map_digest",
    "map_digest_of",
    "raw_digest",
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
_MAX_EXTENT = 2**63 - 1  # bytes an array's dims (zeros left out) may span: numpy's intp
MAX_NPZ_MEMBERS = 1024  # tensors in one .npz
MAX_NPZ_DIRECTORY = 1 << 20  # bytes of an .npz's zip directory (at least 46 per member)
_DIGEST_PREFIX = "sha256:"


_NAMES = {np.dtype(name): name for name in DTYPES}  # dtype.name is slow (computed in Python)
_SHAPES = [struct.Struct(f">I{rank}Q") for rank in range(65)]  # numpy allows rank <= 64


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
            _SHAPES[array.ndim].pack(array.ndim, *array.shape),
        ]
    )
    hasher = hashlib.sha256(header)
    hasher.update(_little_endian(array).data)
    return hasher.digest()


def digest(array: np.ndarray) -> str:
    """The digest of one tensor: dtype, shape and little-endian row-major bytes."""
    return _DIGEST_PREFIX + _digest(array).hex()


def _map_digest(names: Sequence[str], tensor_digest: Callable[[str], bytes]) -> str:
    hasher = hashlib.sha256(_MAP_DOMAIN + struct.pack(">I", len(names)))
    for name in sorted(names, key=lambda n: n.encode()):
        encoded = name.encode()
        hasher.update(struct.pack(">I", len(encoded)) + encoded + tensor_digest(name))
    return _DIGEST_PREFIX + hasher.hexdigest()


def map_digest(tensors: Mapping[str, np.ndarray]) -> str:
    """The digest of a named map of tensors (names sorted by their UTF-8 bytes)."""
    return _map_digest(list(tensors), lambda name: _digest(tensors[name]))


def raw_digest(text: str) -> bytes:
    """The 32 bytes of a ``sha256:<hex>`` digest; :class:`InputError` if malformed."""
    if not isinstance(text, str) or not text.startswith(_DIGEST_PREFIX) or len(text) != 71:
        raise InputError(f"malformed digest {text!r}: want sha256:<64 hex digits>")
    try:
        raw = bytes.fromhex(text[len(_DIGEST_PREFIX) :])
    except ValueError:
        raise InputError(f"malformed digest {text!r}: want sha256:<64 hex digits>") from None
    if raw.hex() != text[len(_DIGEST_PREFIX) :]:
        raise InputError(f"malformed digest {text!r}: use lower-case hex")
    return raw


def map_digest_of(digests: Mapping[str, str]) -> str:
    """The map digest of tensors known only by their digests (``name -> sha256:...``)."""
    return _map_digest(list(digests), lambda name: raw_digest(digests[name]))


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


def _check_extent(name: str, shape: tuple[int, ...], itemsize: int) -> None:
    """Refuse a shape no array can have: numpy (like every 64-bit runtime) needs the product of
    the dims, zeros left out, times the element size to fit in a signed 64-bit byte count, so
    ``[0, 2**70]`` holds no data and still cannot be made (nor digested: dims are u64)."""
    extent = itemsize
    for dim in shape:
        if dim < 0:  # only an .npy header can say so: the JSON form is checked before
            raise InputError(
                f"tensor {name!r}: malformed .npy/.npz data: shape {list(shape)} has a negative dim"
            )
        extent *= max(dim, 1)
        if extent > _MAX_EXTENT:
            raise InputError(
                f"tensor {name!r}: shape {list(shape)} is too large to represent (its dims, "
                f"zeros left out, times the {itemsize}-byte element exceed 2**63 - 1 bytes)"
            )


Signature = Sequence[Mapping[str, Any]]


def is_plain(item: object) -> bool:
    """Whether a JSON value is a tensor written as people type it: nested lists or a number."""
    return isinstance(item, list | int | float) and not isinstance(item, bool)


def decode_json(
    value: object,
    *,
    max_bytes: int | None = None,
    signature: Signature | Callable[[], Signature] | None = None,
) -> dict[str, np.ndarray]:
    """Named tensors from their JSON form; raises :class:`InputError` naming the bad tensor.

    A tensor may also be given plainly, as nested lists (or a number for rank 0), when
    ``signature`` (a manifest's ``inputs``, or a function that returns them, called only if
    needed) declares its dtype and shape: see :func:`from_plain`.
    """
    if not isinstance(value, dict) or not value:
        raise InputError("tensors must be a non-empty JSON object of name -> tensor")
    out = {}
    total = 0
    specs: dict[str, Mapping[str, Any]] | None = None
    for name, item in value.items():
        try:
            name.encode()
        except UnicodeEncodeError:
            raise InputError(f"tensor name {name!r} is not valid Unicode") from None
        if is_plain(item) and signature is not None:
            if specs is None:
                found = signature() if callable(signature) else signature
                specs = {spec["name"]: spec for spec in found}
            array = _from_plain(name, item, specs)
            total += array.nbytes
            if max_bytes is not None and total > max_bytes:
                raise InputError(f"tensor {name!r}: the inputs exceed {max_bytes} bytes")
            out[name] = array
            continue
        if not isinstance(item, dict):
            raise InputError(
                f"tensor {name!r} must be an object with dtype, shape and data"
                + (" (a plain list needs the model's signature)" if is_plain(item) else "")
            )
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
        _check_extent(name, shape, np.dtype(dtype).itemsize)  # [0, 2**70]: no bytes, no array
        if "base64" in item:
            out[name] = _from_base64(name, item["base64"], dtype, shape, size)
        else:
            out[name] = _from_lists(name, item["data"], dtype, shape, count)
    return out


def _from_plain(name: str, data: object, specs: Mapping[str, Mapping[str, Any]]) -> np.ndarray:
    spec = specs.get(name)
    if spec is None:
        raise InputError(f"input {name!r} is not an input of the model (inputs: {list(specs)!r})")
    declared = spec["shape"]
    if declared is None:
        raise InputError(
            f"input {name!r}: the model does not declare its shape, so a plain list cannot "
            f"say it: give {{'dtype': {spec['dtype']!r}, 'shape': [...], 'data': [...]}}"
        )
    try:
        cells = np.array(data, dtype=object)
    except (TypeError, ValueError) as exc:
        raise InputError(f"input {name!r}: data is not a regular nested list: {exc}") from exc
    if any(isinstance(cell, list) for cell in cells.reshape(-1)):
        raise InputError(
            f"input {name!r}: data is not a regular nested list (its rows differ in length)"
        )
    found = cells.shape
    if 0 in found and len(found) < len(declared):  # [] or [[]]: lists stop at a zero dim
        found += tuple(d if isinstance(d, int) else 0 for d in declared[len(found) :])
    shape = tuple(int(d) for d in found)
    if len(shape) != len(declared) or any(
        isinstance(want, int) and dim != want for dim, want in zip(shape, declared, strict=False)
    ):
        example = "a number" if not declared else "[" * len(declared) + "..." + "]" * len(declared)
        raise InputError(
            f"input {name!r} is a plain list of shape {list(shape)}, but the model expects "
            f"shape {list(declared)!r} of {spec['dtype']} (rank {len(declared)}: {example})"
        )
    dtype = spec["dtype"]
    _check_extent(name, shape, np.dtype(dtype).itemsize)
    return _from_lists(name, data, dtype, shape, math.prod(shape))


def from_plain(values: Mapping[str, Any], signature: Signature) -> dict[str, np.ndarray]:
    """Tensors as people type them, typed by a manifest's ``inputs``: each value that is nested
    lists or a number takes its dtype and shape from the signature (the lists' shape must fit
    it: equal rank, equal fixed dims); numpy arrays pass unchanged. The conversion is exact
    and deterministic (the JSON form's rules for ``data``), so a client and a node that convert
    the same lists hash the same tensors."""
    specs = {spec["name"]: spec for spec in signature}
    out = {}
    for name, value in values.items():
        if isinstance(value, np.ndarray):
            out[name] = value
        elif is_plain(value):
            out[name] = _from_plain(name, value, specs)
        else:
            raise InputError(
                f"input {name!r} is a {type(value).__name__}: give a numpy array or nested lists"
            )
    return out


def _from_base64(name: str, text: object, dtype: str, shape: tuple[int, ...], size: int) -> Any:
    try:
        raw = base64.b64decode(text, validate=True)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InputError(f"tensor {name!r}: base64 is malformed") from exc
    if len(raw) != size:
        raise InputError(
            f"tensor {name!r}: {len(raw)} bytes of data for shape {list(shape)} of "
            f"{dtype} ({size} bytes expected)"
        )
    if dtype == "bool" and raw.strip(b"\x00\x01"):
        raise InputError(f"tensor {name!r}: bool bytes must be 0 or 1")
    try:
        array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
    except ValueError as exc:
        raise InputError(f"tensor {name!r}: shape {list(shape)} is not representable") from exc
    return array.astype(dtype, copy=True)


def _from_lists(
    name: str, data: object, dtype: str, shape: tuple[int, ...], count: int
) -> np.ndarray:
    if count == 0:  # nested lists cannot spell a zero dim before the last one
        flat = np.array(data, dtype=object).reshape(-1) if isinstance(data, list) else [data]
        if len(flat):
            raise InputError(f"tensor {name!r}: shape {list(shape)} holds no data")
        return np.zeros(shape, dtype=dtype)
    try:
        values = np.array(data, dtype=object)
    except (TypeError, ValueError) as exc:
        raise InputError(f"tensor {name!r}: data is not a regular nested list: {exc}") from exc
    if values.shape != shape:
        raise InputError(
            f"tensor {name!r}: data has shape {list(values.shape)}, declared {list(shape)}"
        )
    flat = values.reshape(-1)
    if dtype == "bool":
        kinds: tuple[type, ...] = (bool,)
    elif np.dtype(dtype).kind in "iu":
        kinds = (int,)  # exact integers: no 2.0, no silent truncation
    else:
        kinds = (int, float)
    if not all(type(x) in kinds for x in flat):  # type(): bools are not numbers here
        wanted = {"bool": "true or false"}.get(dtype, "numbers" if float in kinds else "integers")
        raise InputError(f"tensor {name!r}: data does not fit dtype {dtype}: need {wanted}")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            array = flat.astype(dtype).reshape(shape)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"tensor {name!r}: data does not fit dtype {dtype}: {exc}") from exc
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        # NaN and infinity written as such (Python's json reads NaN, Infinity) stay; a finite
        # number too large for the dtype does not silently become infinity
        given = np.array([float(x) for x in flat], dtype=np.float64).reshape(shape)
        if (np.isfinite(given) & ~np.isfinite(array)).any():
            raise InputError(f"tensor {name!r}: data does not fit dtype {dtype}: out of range")
    return array


def _json_list(array: np.ndarray) -> Any:
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise InputError("NaN and infinity have no JSON number: use the base64 form")
        return array.astype(np.float64).tolist()  # exact: every float16/32 is a float64
    return array.tolist()


def encode_json(
    tensors: Mapping[str, np.ndarray], *, raw: bool = False, raw_from: int | None = None
) -> dict[str, Any]:
    """The JSON form; ``raw``, a tensor of ``raw_from`` elements or more, or a non-finite float
    selects base64 of the bytes (nested lists of many numbers are slow to write and read)."""
    out: dict[str, Any] = {}
    for name, array in tensors.items():
        dtype = _dtype_name(array)
        item: dict[str, Any] = {"dtype": dtype, "shape": list(array.shape)}
        large = raw_from is not None and array.size >= raw_from
        if raw or large or (array.dtype.kind == "f" and not np.isfinite(array).all()):
            item["base64"] = base64.b64encode(_little_endian(array).tobytes()).decode()
        else:
            item["data"] = _json_list(array)
        out[name] = item
    return out


# ---------------------------------------------------------------------------------------------
# Binary form: .npz (a named map) or .npy (one tensor, named by the caller)


def _read_npy(name: str, stream: IO[bytes], max_bytes: int | None) -> np.ndarray:
    """One ``.npy`` array, its declared size checked before anything is allocated."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = fmt.read_array_header_2_0(stream)
        if dtype.name not in DTYPES:  # also refuses object arrays: nothing is unpickled
            why = " (malformed .npy/.npz data: Object arrays cannot be loaded)"
            raise InputError(
                f"tensor {name!r}: unsupported dtype {dtype.name!r}{why if dtype.hasobject else ''}"
            )
        _check_extent(name, shape, dtype.itemsize)
        size = math.prod(shape) * dtype.itemsize
        if max_bytes is not None and size > max_bytes:
            raise InputError(f"tensor {name!r} declares {size} bytes, above {max_bytes}")
        raw = stream.read(size)
        if len(raw) != size:
            raise InputError(f"tensor {name!r}: malformed .npy/.npz data: truncated")
        order = "F" if fortran else "C"
        array = np.frombuffer(raw, dtype=dtype).reshape(shape, order=order)  # type: ignore[call-overload]
        return np.asarray(array.astype(dtype.name))
    except InputError:
        raise
    except Exception as exc:  # hostile headers raise anything from ValueError to SyntaxError
        raise InputError(f"tensor {name!r}: malformed .npy/.npz data: {exc}") from exc


def _check_directory(data: bytes) -> None:
    """Refuse an ``.npz`` whose zip directory is too large to read, before :mod:`zipfile`
    reads it: opening an archive builds an object per directory entry, so a 63 MiB file that
    lists 1.3M members took 19 s and 900 MB. The sizes come from zipfile's own end-of-archive
    reader, so they describe the very directory it would read; it parses entries while fewer
    than the declared directory size bytes were consumed, at least 46 per entry."""
    end = zipfile._EndRecData(io.BytesIO(data))  # type: ignore[attr-defined]
    if not end:
        raise InputError("malformed .npy/.npz data: File is not a zip file")
    entries = end[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]
    size = end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    if entries > MAX_NPZ_MEMBERS:
        raise InputError(f"the .npz lists {entries} members, above the limit of {MAX_NPZ_MEMBERS}")
    if size > MAX_NPZ_DIRECTORY:
        raise InputError(
            f"the .npz's zip directory is {size} bytes, above the limit of {MAX_NPZ_DIRECTORY}"
        )


def decode_binary(
    data: bytes, *, name: str | None = None, max_bytes: int | None = None
) -> dict[str, np.ndarray]:
    """Named tensors from ``.npz`` bytes, or one ``.npy`` tensor called ``name``.

    Sizes declared in headers (and the uncompressed sizes of ``.npz`` members) count against
    ``max_bytes`` before anything is read, an ``.npz`` holds at most :data:`MAX_NPZ_MEMBERS`
    members in a directory of at most :data:`MAX_NPZ_DIRECTORY` bytes, and pickles are never
    loaded.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise InputError(f"the tensor file is {len(data)} bytes, above the limit of {max_bytes}")
    if data.startswith(b"\x93NUMPY"):
        if name is None:
            raise InputError("a .npy file holds one unnamed tensor: give its input name")
        return {name: _read_npy(name, io.BytesIO(data), max_bytes)}
    arrays = {}
    try:
        _check_directory(data)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            if len(members) > MAX_NPZ_MEMBERS:
                raise InputError(
                    f"the .npz holds {len(members)} members, above the limit of {MAX_NPZ_MEMBERS}"
                )
            total = sum(info.file_size for info in members)  # declared: checked before reading
            if max_bytes is not None and total > max_bytes:
                raise InputError(
                    f"the .npz declares {total} bytes of members, above the limit of {max_bytes}"
                )
            for info in members:
                if not info.filename.endswith(".npy"):
                    raise InputError(f"member {info.filename!r} of the .npz is not a .npy")
                key = info.filename.removesuffix(".npy")
                with archive.open(info) as member:
                    arrays[key] = _read_npy(key, member, max_bytes)
    except InputError:
        raise
    except Exception as exc:  # BadZipFile, NotImplementedError, zlib errors, ...
        raise InputError(f"malformed .npy/.npz data: {exc}") from exc
    if not arrays:
        raise InputError("the .npz holds no tensors")
    return arrays


def encode_binary(tensors: Mapping[str, np.ndarray]) -> bytes:
    """The ``.npz`` bytes of a named map (uncompressed, no pickles)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in tensors.items():
            _dtype_name(array)
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Checks against a manifest's signature


def validate(
    tensors: Mapping[str, np.ndarray],
    signature: Sequence[Mapping[str, Any]],
    *,
    role: str = "input",
    max_bytes: int | None = None,
    finite_only: bool = False,
) -> dict[str, np.ndarray]:
    """Check tensors against a manifest's ``inputs`` (or ``outputs``); return them in order.

    Names must match exactly; dtypes and ranks must be equal; fixed dims equal; a symbolic dim
    the same size wherever it appears. NaN and infinities are data like any other value (the
    digests cover their exact bytes; tree ensembles read NaN as "missing"), refused only if
    ``finite_only`` (a manifest whose publisher declared ``finite_inputs``).
    """
    expected = [spec["name"] for spec in signature]
    missing = [n for n in expected if n not in tensors]
    unexpected = [n for n in tensors if n not in expected]
    if missing or unexpected:
        raise InputError(
            f"{role}s do not match the model: missing {missing!r}, unexpected {unexpected!r} "
            f"(expected {expected!r})"
        )
    for name, array in tensors.items():
        if not isinstance(array, np.ndarray):
            raise InputError(f"{role} {name!r} is a {type(array).__name__}, not a numpy array")
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
        if finite_only and array.dtype.kind == "f" and not np.isfinite(array).all():
            where = np.argwhere(~np.isfinite(array))[0].tolist()
            raise InputError(
                f"{role} {name!r} holds NaN or infinity at index {where}, and the model's "
                "publisher declared finite inputs only"
            )
        if array.dtype.byteorder == ">":  # what runs is what is hashed: native order
            array = array.astype(array.dtype.newbyteorder("<"))
        out[name] = array
    return out


def deviation(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float | None:
    """The largest absolute difference between two named maps' float tensors, if they are
    comparable: the same names, shapes and dtypes, finite floats, and identical integer and
    boolean tensors. ``None`` if they are not."""
    if set(a) != set(b):
        return None
    worst = 0.0
    for name, left in a.items():
        right = b[name]
        if left.shape != right.shape or left.dtype != right.dtype:
            return None
        if left.dtype.kind != "f":
            if not np.array_equal(left, right):
                return None
            continue
        if not (np.isfinite(left).all() and np.isfinite(right).all()):
            return None
        diff = np.abs(left.astype(np.float64) - right.astype(np.float64))
        worst = max(worst, float(diff.max(initial=0.0)))
    return worst
