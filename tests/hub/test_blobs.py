"""The blob store: content addressing, atomic writes, dedup, hash checks on every read and copy."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import pytest

from verinfer import cid
from verinfer.errors import InputError, NotFound, StorageError, VerificationError
from verinfer.hub import BlobStore


def test_put_get_and_dedup(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    blob = store.put(b"hello")
    assert blob == cid.compute(b"hello")
    assert store.get(blob) == b"hello"
    assert store.put(b"hello") == blob  # deduplicated
    assert list(store) == [blob]
    assert store.size(blob) == 5
    assert store.path(blob).parent.name == blob[-2:]
    assert not [p for p in store.path(blob).parent.iterdir() if p.name.startswith(".tmp")]


def test_a_blob_whose_bytes_changed_is_reported_and_never_served(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    blob = store.put(b"model weights" * 1000)
    path = store.path(blob)
    data = bytearray(path.read_bytes())
    data[500] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match=f"blob '{blob}' is corrupt"):
        store.get(blob)
    with pytest.raises(StorageError, match="is corrupt"):
        store.check(blob)
    with pytest.raises(StorageError, match="is corrupt"):
        store.copy_to(blob, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()  # nothing half-written is left either
    other = BlobStore(tmp_path / "other")
    with pytest.raises(StorageError, match="is corrupt"):
        store.copy_into(blob, other)
    assert list(other) == []
    assert store.corrupt() == [blob]
    # publishing the right bytes again repairs it
    assert store.put(b"model weights" * 1000) == blob
    assert store.corrupt() == []
    assert store.get(blob) == b"model weights" * 1000


def test_a_truncated_blob_is_reported(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    blob = store.put(b"x" * 10_000)
    with open(store.path(blob), "r+b") as handle:
        handle.truncate(10)
    with pytest.raises(StorageError, match="is corrupt"):
        store.get(blob)


def test_expected_cid_is_enforced_and_nothing_is_kept_on_mismatch(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    wrong = cid.compute(b"something else")
    with pytest.raises(VerificationError, match=f"does not match CID '{wrong}'"):
        store.put_stream(io.BytesIO(b"payload"), expected=wrong)
    assert list(store) == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_size_limit_stops_the_stream_early(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    consumed = []

    class Endless:
        def read(self, size: int = -1) -> bytes:
            consumed.append(size)
            return b"\0" * size

    with pytest.raises(InputError, match="larger than the limit of 3000000"):
        store.put_stream(Endless(), max_bytes=3_000_000)
    assert len(consumed) <= 4  # it stopped as soon as it passed the limit
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    big = tmp_path / "big.bin"
    big.write_bytes(b"\1" * 5000)
    with pytest.raises(InputError, match="above the limit of 4000"):
        store.put_file(big, max_bytes=4000)


def test_large_files_stream_without_being_held_in_memory(tmp_path: Path) -> None:
    """A 64 MiB file goes in and out in 1 MiB chunks: peak Python allocation stays small."""
    source = tmp_path / "large.onnx"
    chunk = os.urandom(1 << 20)
    with open(source, "wb") as handle:
        for _ in range(64):
            handle.write(chunk)
    store = BlobStore(tmp_path / "blobs")
    progress: list[int] = []
    tracemalloc.start()
    try:
        blob = store.put_file(source, progress=progress.append)
        store.copy_to(blob, tmp_path / "copy.onnx")
        store.check(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(progress) == 64 << 20
    assert peak < 8 << 20
    assert (tmp_path / "copy.onnx").stat().st_size == 64 << 20
    assert blob == store.put_file(tmp_path / "copy.onnx")


def test_malformed_cids_never_become_paths(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    for bad in ["../../etc/passwd", "b" + "a" * 58 + "/..", "", "bafk"]:
        with pytest.raises(InputError, match="CID"):
            store.get(bad)
    with pytest.raises(NotFound, match="no blob"):
        store.get(cid.compute(b"absent"))
    with pytest.raises(InputError, match="cannot read"):
        store.put_file(tmp_path / "missing.onnx")


def test_an_interrupted_write_leaves_no_blob(tmp_path: Path) -> None:
    """A stream that fails half-way (a dropped upload) leaves nothing behind."""
    store = BlobStore(tmp_path)

    class Dropped:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise ConnectionResetError("peer went away")
            return b"\7" * size

    with pytest.raises(InputError, match="reading the content failed: peer went away"):
        store.put_stream(Dropped())
    assert list(store) == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
