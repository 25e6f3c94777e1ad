"""The inputs and outputs of logged receipts, kept by their map digest for auditors.

An auditor re-executes a sample of a node's receipts; for that the node serves the tensors a
receipt's digests name (``GET /v1/tensors/{digest}``), for ``retention`` seconds. A read decodes
what is kept and checks its map digest before serving, so a damaged record is reported (a
:class:`StorageError` naming the digest), never served.

**Storage: append-only segments.** Every answer keeps two tensor maps, so keeping one must cost a
few microseconds of the answer's CPU. A file per map (``mkstemp`` + a zip + ``os.replace``) cost
~130-150 us of CPU for an iris row (a record costs ~4-7 us), and its file creations slowed the
log's ``fdatasync`` (ext4 commits the metadata with it). So maps are records appended to
``root/segments/<ms>.seg`` (named by the time it was opened, in ms); a new segment is opened
every hour, past 1 GiB or 2**20 records, and at every start (a run never appends to a file an
earlier run may have left torn). A record::

    header  "VIAR" | u8 version (1) | 3 zero bytes | 32-byte raw map digest | u64le payload
            length | u32le CRC-32 of the 48 bytes before it
    payload u32le count, then per tensor: u32le name length | UTF-8 name | u8 dtype (index in
            tensors.DTYPES) | u8 rank | rank x u64le dims | the little-endian row-major bytes

Not ``.npz``: zip framing costs more than the whole record of a small map; a read (rare: audits,
disputes) builds the ``.npz`` it serves from the record. The header's CRC lets a scan tell a torn
or damaged header from a record (and find the next intact one: a damaged header loses one
record, not the rest of its segment); the payload needs none, since a read checks the map digest.

**No fsync**, as before: archiving is best effort (a power cut may lose the last seconds of
records; a full disk drops records, and the next answer naming the same map tries again). A
record torn by a crash is skipped by the scan at the next start, and its segment is never
appended to again. A failed write is cut off (``ftruncate``) so it never hides the records
after it; if that fails too, the segment is abandoned for a new one.

**The answer path** (:meth:`TensorArchive.put`) makes no system call: it encodes the map's record
(a few microseconds: small tensors copied into one buffer, large ones referenced) and adds it to
a pending dict under a lock. Encoding there, not on the writer thread, is deliberate: the
writer's bursts of per-map Python held the GIL that the answers' threads wait for, and a loaded
node lost a third of its throughput to that (the CPU moved, the stalls went). The writer thread
only hands buffers to the kernel; it looks for pending maps every
``_GATHER`` seconds (a flush or close cuts that short) and writes all of them with one
``os.writev`` (large tensors are handed to the kernel without a copy); so under load it wakes at
most ~100 times a second however many answers there are, and no answer wakes it. Only after
``_NAP`` seconds without a map does it sleep until a put wakes it (waking a thread cost the
answer ~15 us, five times the rest of a put). Maps not yet written are served from memory, so
a read right after an answer never misses.

**The index**, in memory. The current segment's is a dict, raw digest -> offset and payload
length (~155 bytes an entry, measured: a 32-byte ``bytes`` key, an int, the dict slot; a segment
is sealed past ``_SEGMENT_RECORDS`` records, so at most ~160 MB). A sealed segment's is two
sorted numpy arrays, the first 8 bytes of each digest and the record's offset: 16 bytes an entry
(a million maps kept ~16 MB, against ~95 bytes of disk for an iris row's record); a read
binary-searches each sealed segment, newest first, and checks the full digest in the record's
header (a shared prefix, 1 in 2**64, just moves on). Rebuilt at every start from the record
headers, read through ``mmap`` (1.2 us a record from the page cache: ~1.2 s per million); a node
keeping billions of maps would want that index on disk (sorted files written at sealing), which
is not done.

**Retention**: :meth:`TensorArchive.prune` deletes a segment once its newest record (its mtime)
is older than the retention period plus ``_TOUCH_EVERY``. A map named again is re-appended to the
current segment (from the arrays in hand, which heals a damaged older copy too) at most once
per ``_TOUCH_EVERY``, so it stays for the retention period from its last naming, as before; a
map whose newest record is in the current segment already costs nothing more (the segment is
re-dated if that drain appended nothing).

**Overload**: at most ``_MAX_PENDING_BYTES`` (and ``_MAX_PENDING`` maps) wait to be written;
beyond that a put is dropped, since serving beats archiving. A map alone is always taken, however
large (its large tensors are referenced, not copied): else a model with large outputs would never
be kept at all.

Tensors are private to their requester unless a *public* receipt names them (the requester
asked for a public audit): then a marker file ``root/<hex[:2]>/<hex>.public`` records it (made
before the answer is sent, so a reader of the public receipt never finds them private), for the
retention period from the last public receipt that named them. Public audits are opt-in, so a
file per marker (re-dated at most every ``_TOUCH_EVERY``) costs little. Refusing anyone the
tensors of a public receipt within the retention period is a fault an auditor reports; who else
may read private ones is :mod:`verinfer.node.access`'s decision.

Earlier versions kept a map as ``root/<hex[:2]>/<hex>.npz``: those are still read (when no
record names the digest) and pruned by their mtime.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from verinfer import tensors
from verinfer.errors import InputError, NotFound, StorageError

__all__ = ["DEFAULT_RETENTION", "TensorArchive"]

DEFAULT_RETENTION = 7 * 86400.0
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_PRUNE_EVERY = 3600.0
# a kept map named again is re-appended at most this often, not with work per answer
_TOUCH_EVERY = 600.0
_MAX_TOUCHED = 1 << 16
_MAX_PENDING_BYTES = 256 << 20
_MAX_PENDING = 1 << 16
_GATHER = 0.01  # seconds the writer lets answers' maps gather before one write
_NAP = 1.0  # seconds without a map before the writer sleeps until a put wakes it
_SEGMENT_SECONDS = 3600.0
_SEGMENT_BYTES = 1 << 30
_SMALL = 1 << 16  # tensors below this are copied into the write's buffer, larger ones are not
_IOV_MAX = 1024  # buffers one writev may take (Linux)

_MAGIC = b"VIAR"
_VERSION = 1
_HEADER = struct.Struct("<4sB3x32sQ")  # then the CRC-32 of these 48 bytes
_CRC = struct.Struct("<I")
_HEADER_SIZE = _HEADER.size + _CRC.size
_COUNT = struct.Struct("<I")
_CODES = {np.dtype(name): code for code, name in enumerate(tensors.DTYPES)}
_TYPES = [np.dtype(name).newbyteorder("<") for name in tensors.DTYPES]
_DIMS = [struct.Struct(f"<{rank}Q") for rank in range(65)]  # numpy allows rank <= 64
_SEGMENT_RECORDS = 1 << 20  # the current segment's index is a dict: at most ~160 MB
# an entry of the current segment's index: record offset << 48 | payload length
_FIELD = (1 << 48) - 1


class _Sealed(NamedTuple):
    """The index of a segment no longer written: the first 8 bytes of each record's digest
    (sorted, as a big-endian u64) and the record's offset, 16 bytes an entry."""

    number: int
    prefixes: np.ndarray
    offsets: np.ndarray


def _seal(number: int, entries: list[tuple[bytes, int]]) -> _Sealed:
    """The sealed index of segment ``number`` from its (raw digest, offset) entries."""
    prefixes = np.frombuffer(b"".join(raw[:8] for raw, _ in entries), ">u8").astype(np.uint64)
    offsets = np.fromiter((offset for _, offset in entries), np.uint64, len(entries))
    order = np.argsort(prefixes, kind="stable")
    return _Sealed(number, prefixes[order], offsets[order])


def _header(raw: bytes, length: int) -> bytes:
    head = _HEADER.pack(_MAGIC, _VERSION, raw, length)
    return head + _CRC.pack(zlib.crc32(head))


_METAS: dict[tuple[str, np.dtype[Any], tuple[int, ...]], bytes] = {}  # a tensor's record prefix


def _meta(name: str, array: np.ndarray) -> bytes:
    """A tensor's prefix in a record (name, dtype, shape): the same for every answer of a model,
    so it is built once per (name, dtype, shape)."""
    key = (name, array.dtype, array.shape)
    meta = _METAS.get(key)
    if meta is None:
        code = _CODES.get(array.dtype)
        if code is None:
            raise InputError(f"tensor {name!r}: unsupported dtype {array.dtype.name!r}")
        encoded = name.encode()
        meta = b"".join(
            (
                _COUNT.pack(len(encoded)),
                encoded,
                bytes((code, array.ndim)),
                _DIMS[array.ndim].pack(*array.shape),
            )
        )
        if len(_METAS) >= 4096:
            _METAS.clear()
        _METAS[key] = meta
    return meta


class _Record(NamedTuple):
    """A map waiting to be written: its record's buffers (small parts joined into one), the
    record's length with its header, its raw digest, and the tensors (served until written)."""

    buffers: list[bytes | memoryview]
    length: int
    raw: bytes
    arrays: dict[str, np.ndarray]


def _record(raw: bytes, arrays: dict[str, np.ndarray]) -> _Record:
    """The record of ``arrays`` (map digest ``raw``), encoded on the answer's own thread: the
    writer then only hands buffers to the kernel, holding the GIL for no Python per map (its
    bursts of per-map Python stalled every other thread of a loaded node). Small tensors are
    copied into the record's one buffer; a large one is referenced, not copied."""
    parts: list[bytes | memoryview] = [_COUNT.pack(len(arrays))]
    length = _COUNT.size
    large = False
    for name, value in arrays.items():
        array = value if type(value) is np.ndarray else np.asarray(value)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        meta = _meta(name, array)
        if array.nbytes < _SMALL:
            data: bytes | memoryview = array.tobytes()  # row-major, whatever its layout
        else:
            data = np.ascontiguousarray(array).reshape(-1).view(np.uint8).data
            large = True
        parts += (meta, data)
        length += len(meta) + (len(data) if isinstance(data, bytes) else data.nbytes)
    head = _header(raw, length)
    if not large:
        return _Record([head + b"".join(parts)], _HEADER_SIZE + length, raw, arrays)
    buffers: list[bytes | memoryview] = []
    small: list[bytes | memoryview] = [head]
    for part in parts:
        if type(part) is memoryview:
            buffers += (b"".join(small), part)
            small = []
        else:
            small.append(part)
    if small:
        buffers.append(b"".join(small))
    return _Record(buffers, _HEADER_SIZE + length, raw, arrays)


def _decode(payload: bytes) -> dict[str, np.ndarray]:
    """The tensor map of a record's payload; ValueError (or struct.error) if malformed."""
    (count,) = _COUNT.unpack_from(payload, 0)
    at = _COUNT.size
    arrays: dict[str, np.ndarray] = {}
    for _ in range(count):
        (size,) = _COUNT.unpack_from(payload, at)
        at += _COUNT.size
        name = payload[at : at + size].decode()
        at += size
        code, rank = payload[at], payload[at + 1]
        at += 2
        if code >= len(_TYPES) or rank >= len(_DIMS):
            raise ValueError("bad dtype or rank")
        shape = _DIMS[rank].unpack_from(payload, at)
        at += _DIMS[rank].size
        dtype = _TYPES[code]
        items = 1
        for dim in shape:
            items *= dim
        end = at + items * dtype.itemsize
        if end > len(payload) or name in arrays:
            raise ValueError("tensor past the payload's end, or named twice")
        arrays[name] = np.frombuffer(payload, dtype, items, at).reshape(shape)
        at = end
    if at != len(payload):
        raise ValueError("bytes after the last tensor")
    return arrays


def _intact(data: mmap.mmap, offset: int, end: int) -> int:
    """Where the record whose header is at ``offset`` ends, or -1 if no intact header is there."""
    if offset > end - _HEADER_SIZE:
        return -1
    magic, version, _, length = _HEADER.unpack_from(data, offset)
    (crc,) = _CRC.unpack_from(data, offset + _HEADER.size)
    stop = offset + _HEADER_SIZE + int(length)
    if (
        magic == _MAGIC
        and version == _VERSION
        and stop <= end
        and crc == zlib.crc32(data[offset : offset + _HEADER.size])
    ):
        return stop
    return -1


def _scan(path: str) -> list[tuple[bytes, int, int]]:
    """(raw digest, offset, payload length) of each record of a segment, following the records
    from the start. After a torn or damaged header (a crash's torn tail, a flipped bit) nothing
    can tell where the next record starts, so from there on every intact header is indexed,
    wherever it is: a caller's tensor bytes may hold a header with a valid CRC naming any digest
    and a length that spans the records after it, and following it would lose them. A forged
    header indexed this way costs a failed read at most: a read checks the map digest of what it
    serves, and tries the next record naming the digest."""
    found: list[tuple[bytes, int, int]] = []
    with open(path, "rb") as stream:
        end = os.fstat(stream.fileno()).st_size
        if end < _HEADER_SIZE:
            return found
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
            offset, damaged = 0, False
            while 0 <= offset <= end - _HEADER_SIZE:
                stop = _intact(data, offset, end)
                if stop >= 0:
                    _, _, raw, length = _HEADER.unpack_from(data, offset)
                    found.append((raw, offset, length))
                damaged |= stop < 0
                offset = data.find(_MAGIC, offset + 1) if damaged else stop
    return found


def _names(arrays: Mapping[str, np.ndarray], digest: str) -> bool:
    """Whether ``arrays`` are the tensors ``digest`` names."""
    try:
        return tensors.map_digest(arrays) == digest
    except InputError:
        return False


class TensorArchive:
    """Named tensor maps kept by map digest in append-only segment files under ``root``."""

    def __init__(self, root: str | os.PathLike[str], *, retention: float = DEFAULT_RETENTION):
        self.root = Path(root)
        self._segments_dir = self.root / "segments"
        try:
            self._segments_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the tensor archive {str(self.root)!r}: {exc}"
            ) from exc
        self._root = str(self.root)
        self.retention = retention
        self._lock = threading.Lock()  # pending, index, segments, counters
        self._wake = threading.Condition(self._lock)  # the writer sleeps on it
        self._drained = threading.Condition(self._lock)  # flush() waits on it
        self._io = threading.Lock()  # the current segment: held while writing or pruning
        self._pending: dict[str, _Record] = {}
        self._writing: dict[str, _Record] = {}  # taken by the writer
        self._bytes = 0  # of the maps pending or being written
        self._new_bytes = 0  # of the maps pending
        self._sleeping = False  # the writer waits for a put to wake it
        self._active = -_NAP  # when the writer last took something to write
        self._hurry = False  # a flush or close waits: write now
        self._closing = False
        self._put = 0  # maps put so far
        self._done = 0  # of them, written or dropped
        self._touched: dict[str, float] = {}  # digest -> when it was last put
        self._marked: dict[str, float] = {}  # digest -> when its public marker was re-dated
        self._index: dict[bytes, int] = {}  # of the current segment
        self._sealed: list[_Sealed] = []  # of the others, oldest first
        self._segments: dict[int, str] = {}  # number -> path
        self._next = 0
        self._current: tuple[int, int, float] | None = None  # number, fd, when opened
        self._size = 0  # of the current segment
        for name in sorted(os.listdir(self._segments_dir)):  # oldest first, as they were written
            if name.endswith(".seg"):
                path = os.path.join(self._segments_dir, name)
                with contextlib.suppress(FileNotFoundError):
                    found = [(raw, offset) for raw, offset, _ in _scan(path)]
                    self._sealed.append(_seal(self._number(path), found))
        self._pruned = time.monotonic()
        self.prune()
        self._thread = threading.Thread(target=self._run, name="verinfer-archive", daemon=True)
        self._thread.start()

    def _number(self, path: str) -> int:
        number = self._next
        self._next += 1
        self._segments[number] = path
        return number

    @staticmethod
    def check(digest: str) -> bytes:
        """The raw 32 bytes of ``digest``; :class:`InputError` if it is not ``sha256:<hex>``."""
        found = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
        if found is None:
            raise InputError(f"malformed tensor digest {digest!r}: expected sha256:<64 hex>")
        return bytes.fromhex(found.group(1))

    def _legacy(self, digest: str, suffix: str) -> str:
        """Where an earlier version kept ``digest``'s tensors (``.npz``), and where its public
        marker is (``.public``)."""
        hexdigest = digest[len("sha256:") :]
        return f"{self._root}{os.sep}{hexdigest[:2]}{os.sep}{hexdigest}{suffix}"

    def put(self, digest: str, arrays: Mapping[str, np.ndarray], *, public: bool = False) -> None:
        """Keep ``arrays`` (whose map digest is ``digest``), written in the background; a
        tensor map kept already is kept for another retention period from now. ``public``: a
        public receipt names them, so anyone may read them for the retention period."""
        now = time.monotonic()
        if public:
            self._mark_public(digest, now)
        if now - self._touched.get(digest, -_TOUCH_EVERY) < _TOUCH_EVERY:
            return  # put moments ago: prune() allows for the difference
        raw = self.check(digest)  # a malformed digest is the caller's error
        try:
            record = _record(raw, dict(arrays))
        except InputError:
            return  # not a map this archive can keep (put by mistake): dropped
        size = record.length
        with self._lock:
            if (
                self._closing
                or digest in self._pending
                or (self._bytes and self._bytes + size > _MAX_PENDING_BYTES)  # one always fits
                or len(self._pending) >= _MAX_PENDING
            ):
                return  # under overload, serving beats archiving (and it is not remembered)
            self._bytes += size
            self._new_bytes += size
            self._pending[digest] = record
            self._put += 1
            if len(self._touched) >= _MAX_TOUCHED:
                self._touched.clear()
            self._touched[digest] = now  # forgotten again if the write fails
            if self._sleeping:  # a busy writer finds this map when it next looks
                self._sleeping = False
                self._wake.notify()

    def _mark_public(self, digest: str, now: float) -> None:
        """Create or re-date ``digest``'s public marker (before its answer is sent, so a reader
        of the public receipt never finds the tensors private)."""
        if now - self._marked.get(digest, -_TOUCH_EVERY) < _TOUCH_EVERY:
            return
        self.check(digest)
        marker = self._legacy(digest, ".public")
        if len(self._marked) >= _MAX_TOUCHED:
            self._marked.clear()
        try:
            try:
                os.utime(marker)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(marker), exist_ok=True)
                with open(marker, "ab"):
                    pass
            self._marked[digest] = now
        except OSError:  # best effort, as archiving is: the next public answer tries again
            pass

    def is_public(self, digest: str) -> bool:
        """Whether a public receipt named ``digest`` within the retention period."""
        self.check(digest)
        return os.path.exists(self._legacy(digest, ".public"))

    def where(self, digest: str) -> tuple[Path, int, int] | None:
        """The segment holding ``digest``'s newest record, the record's offset and its length
        (header included); None if no record names it (pending, legacy or not kept)."""
        found = self._locate(digest, self.check(digest))
        return None if found is None else (Path(found[0]), found[1], _HEADER_SIZE + found[2])

    def _locate(self, digest: str, raw: bytes) -> tuple[str, int, int] | None:
        """The segment, offset and payload length of ``digest``'s newest record; None if no
        record names it. A damaged header where the index says it is: :class:`StorageError`."""
        damaged = False
        for found in self._locations(raw):
            if found is not None:
                return found
            damaged = True
        if damaged:
            raise StorageError(f"the kept tensors {digest!r} are damaged; not served")
        return None

    def _locations(self, raw: bytes) -> Iterator[tuple[str, int, int] | None]:
        """Every record that names ``raw``, newest first: (segment, offset, payload length),
        or None where the index points at a damaged header."""
        with self._lock:
            entry = self._index.get(raw)
            current = None if self._current is None else self._segments.get(self._current[0])
            sealed = list(self._sealed)
            paths = dict(self._segments)
        if entry is not None and current is not None:
            yield current, entry >> 48, entry & _FIELD
        key = np.uint64(int.from_bytes(raw[:8], "big"))
        for number, prefixes, offsets in reversed(sealed):  # newest first
            at = int(np.searchsorted(prefixes, key))
            while at < len(prefixes) and prefixes[at] == key:  # 1 in 2**64: another digest
                offset = int(offsets[at])
                at += 1
                try:
                    with open(paths[number], "rb") as stream:
                        head = os.pread(stream.fileno(), _HEADER_SIZE, offset)
                except FileNotFoundError:  # pruned meanwhile
                    break
                except OSError as exc:
                    raise StorageError(f"cannot read {paths[number]!r}: {exc}") from exc
                try:
                    _, _, named, length = _HEADER.unpack_from(head)
                except struct.error:
                    yield None
                    continue
                if head != _header(named, length):
                    yield None
                elif named == raw:
                    yield paths[number], offset, length

    def get(self, digest: str) -> bytes:
        """The ``.npz`` bytes of ``digest``'s tensors, checked against the digest: the newest
        copy that is intact (a damaged record, or a header forged inside a caller's tensors
        that names this digest, never hides an intact older one)."""
        raw = self.check(digest)
        with self._lock:
            record = self._pending.get(digest) or self._writing.get(digest)
        if record is not None and _names(record.arrays, digest):
            return tensors.encode_binary(record.arrays)
        damaged = False
        for found in self._locations(raw):
            if found is None:  # a damaged header: an older copy may be intact
                damaged = True
                continue
            try:
                arrays = self._read(digest, raw, *found)
            except StorageError:  # a damaged record: the same
                damaged = True
                continue
            if arrays is None:  # its segment was pruned meanwhile
                continue
            if _names(arrays, digest):
                return tensors.encode_binary(arrays)
            damaged = True
        try:
            return self._get_legacy(digest)
        except NotFound:
            if damaged:
                raise StorageError(f"the kept tensors {digest!r} are damaged; not served") from None
            raise

    def _read(
        self, digest: str, raw: bytes, path: str, offset: int, length: int
    ) -> dict[str, np.ndarray] | None:
        """The tensors of the record at ``offset`` (None if its segment was pruned meanwhile)."""
        try:
            with open(path, "rb") as stream:
                record = os.pread(stream.fileno(), _HEADER_SIZE + length, offset)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {path!r}: {exc}") from exc
        try:
            if record[:_HEADER_SIZE] != _header(raw, length):
                raise ValueError("the record's header does not name this digest")
            return _decode(record[_HEADER_SIZE:])
        except (ValueError, struct.error, IndexError):
            raise StorageError(f"the kept tensors {digest!r} are damaged; not served") from None

    def _get_legacy(self, digest: str) -> bytes:
        path = self._legacy(digest, ".npz")
        try:
            with open(path, "rb") as stream:
                data = stream.read()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no tensors {digest!r} are kept here") from None
        except OSError as exc:
            raise StorageError(f"cannot read {path!r}: {exc}") from exc
        try:
            intact = tensors.map_digest(tensors.decode_binary(data)) == digest
        except InputError:
            intact = False
        if not intact:
            raise StorageError(f"the kept tensors {digest!r} are damaged; not served")
        return data

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything put so far is written (or dropped, if the write failed)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._put
            self._hurry = True
            self._wake.notify()
            while self._done < target and (left := deadline - time.monotonic()) > 0:
                self._drained.wait(left)

    def close(self) -> None:
        """Write what is pending, then stop."""
        with self._lock:
            self._closing = self._hurry = True
            self._wake.notify()
        self._thread.join(timeout=60)
        with self._io:
            self._close_segment()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closing and not self._hurry:
                    if self._pending:  # written at most every _GATHER seconds: under load a
                        # writer that took whatever was there at once wrote a map or two per
                        # write, and its GIL handoffs cost a loaded node a third of its answers
                        wait = self._active + _GATHER - time.monotonic()
                        if wait <= 0:
                            break
                        self._wake.wait(wait)
                        continue
                    if time.monotonic() - self._active < _NAP:
                        self._wake.wait(_GATHER)  # answers come: it looks, they wake nothing
                        continue
                    self._sleeping = True
                    self._wake.wait(_PRUNE_EVERY)  # idle: the next put wakes it
                    if self._sleeping:  # woken by the clock (or a flush), not by a put
                        self._sleeping = False
                        break
                    if not self._hurry:
                        self._wake.wait(_GATHER)  # the answers after that put join it
                self._hurry = False
                batch, self._pending, self._writing = self._pending, {}, self._pending
                if batch:
                    self._active = time.monotonic()
                size, self._new_bytes = self._new_bytes, 0
                closing = self._closing
            try:
                if batch:
                    self._write(batch)
            except (OSError, InputError):  # best effort: a full disk must not stop inference,
                with self._lock:  # but the next answer naming these tensors tries again
                    for digest in batch:
                        self._touched.pop(digest, None)
            finally:
                with self._lock:
                    self._writing = {}
                    self._bytes -= size
                    self._done += len(batch)
                    self._drained.notify_all()
            if time.monotonic() - self._pruned > _PRUNE_EVERY:
                with contextlib.suppress(OSError):
                    self.prune()
            if closing:
                with self._lock:
                    if not self._pending:
                        return

    def _write(self, batch: Mapping[str, _Record]) -> None:
        """Append the records of ``batch`` (digest -> its encoded record) to the current segment
        with one ``writev`` (a few if it holds more than 1,024 large tensors), then index them:
        the writer thread's work for everything pending."""
        with self._io:
            now = time.time()
            current = self._current
            if (
                current is None
                or now - current[2] > _SEGMENT_SECONDS
                or self._size > _SEGMENT_BYTES
                or len(self._index) >= _SEGMENT_RECORDS
            ):
                self._close_segment()
                current = self._open_segment(now)
            fd = current[1]
            start = offset = self._size
            buffers: list[bytes | memoryview] = []
            small: list[bytes | memoryview] = []
            entries: list[tuple[bytes, int]] = []
            kept = 0
            index = self._index
            for record in batch.values():
                if record.raw in index:
                    kept += 1  # its newest record is in this segment: kept as long
                    continue
                for part in record.buffers:
                    if isinstance(part, memoryview):  # a large tensor, not copied
                        buffers += (b"".join(small), part)
                        small = []
                    else:
                        small.append(part)
                entries.append((record.raw, offset << 48 | (record.length - _HEADER_SIZE)))
                offset += record.length
            if small:
                buffers.append(b"".join(small))
            if not entries:
                if kept:
                    os.utime(fd)  # named again: the segment's mtime is its newest naming
                return
            try:
                for at in range(0, len(buffers), _IOV_MAX):
                    chunk = buffers[at : at + _IOV_MAX]
                    wanted = sum(len(b) if isinstance(b, bytes) else b.nbytes for b in chunk)
                    if os.writev(fd, chunk) != wanted:
                        raise OSError("short write to the archive (is the disk full?)")
            except OSError:
                try:  # cut the torn record off, so it never hides the records after it
                    os.ftruncate(fd, start)
                except OSError:
                    self._close_segment()  # or leave it torn, and append to a new one
                raise
            self._size = offset
            with self._lock:
                self._index.update(entries)

    def _open_segment(self, now: float) -> tuple[int, int, float]:
        stamp = int(now * 1000)
        while True:
            path = os.path.join(self._segments_dir, f"{stamp:014d}.seg")
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
                fd = os.open(path, flags, 0o600)
                break
            except FileExistsError:
                stamp += 1
        with self._lock:
            current = self._current = (self._number(path), fd, now)
        self._size = 0
        return current

    def _close_segment(self) -> None:
        """Stop writing the current segment: its index becomes a sealed one (held: _io)."""
        if self._current is not None:
            with contextlib.suppress(OSError):
                os.close(self._current[1])
            sealed = _seal(self._current[0], [(r, e >> 48) for r, e in self._index.items()])
            with self._lock:
                if self._current[0] in self._segments:  # else pruned
                    self._sealed.append(sealed)
                self._current = None
                self._index = {}

    def prune(self) -> int:
        """Delete segments (and legacy files) whose newest record is older than the retention
        period (a map named again is re-appended at most every ten minutes, so that much
        longer); return how many files of tensors were deleted."""
        self._pruned = time.monotonic()
        cutoff = time.time() - self.retention - _TOUCH_EVERY
        removed = 0
        with self._io:
            with self._lock:
                segments = dict(self._segments)
            gone = set()
            for number, path in segments.items():
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
                        gone.add(number)
            if gone:
                with self._lock:
                    for number in gone:
                        del self._segments[number]
                    self._sealed = [s for s in self._sealed if s.number not in gone]
                if self._current is not None and self._current[0] in gone:
                    self._close_segment()  # its index is dropped, not sealed
        for pattern in ("*/*.npz", "*/*.public"):  # a marker lapses with its public receipts
            for legacy in self.root.glob(pattern):
                with contextlib.suppress(FileNotFoundError):
                    if legacy.stat().st_mtime < cutoff:
                        legacy.unlink()
                        removed += pattern.endswith(".npz")
        return removed
