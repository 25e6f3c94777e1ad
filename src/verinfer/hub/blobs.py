"""A content-addressed blob store on the filesystem.

A blob lives at ``<root>/<last two characters of its CID>/<CID>``. Writes go to a temporary file
in the store, are fsynced, then renamed into place (and the directory fsynced), so a crash leaves
either the whole blob or nothing. Every read and every copy recomputes the SHA-256 and compares it
with the CID: a blob whose bytes changed on disk is reported (:class:`StorageError`) and never
served. Large blobs are streamed in chunks and never held in memory whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from verinfer import cid
from verinfer.errors import InputError, NotFound, StorageError, VerificationError

__all__ = ["CHUNK", "BlobStore", "BlobWriter", "Progress", "Readable"]

CHUNK = 1 << 20
Progress = Callable[[int], None]
"""Called with the number of bytes just processed."""


class Readable(Protocol):
    """Anything with ``read(n) -> bytes`` (a file, a socket stream, a response body)."""

    def read(self, size: int = -1, /) -> bytes: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(source: Readable) -> bytes:
    try:
        return source.read(CHUNK)
    except OSError as exc:  # a dropped upload is the source's failure, not the store's
        raise InputError(f"reading the content failed: {exc}") from exc


class BlobStore:
    """Blobs addressed by CID under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create blob directory {str(self.root)!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"BlobStore({str(self.root)!r})"

    def path(self, blob: str) -> Path:
        """Where the blob named ``blob`` lives (whether or not it exists)."""
        cid.digest(blob)  # a malformed CID never becomes a path
        return self.root / blob[-2:] / blob

    def has(self, blob: str) -> bool:
        """Whether a blob with this CID is stored (its content is checked when read)."""
        return self.path(blob).is_file()

    def size(self, blob: str) -> int:
        """The stored size of the blob in bytes."""
        try:
            return self.path(blob).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"no blob {blob!r}") from None

    def __iter__(self) -> Iterator[str]:
        """The CIDs of every stored blob."""
        for shard in sorted(self.root.iterdir()):
            if shard.is_dir() and len(shard.name) == 2:
                for item in sorted(shard.iterdir()):
                    if item.name.startswith("b") and not item.name.startswith(".tmp"):
                        yield item.name

    # -- writing ------------------------------------------------------------------------------

    def put(self, data: bytes) -> str:
        """Store ``data``; return its CID. Idempotent: an intact copy is not rewritten."""
        return self.put_stream(_BytesReader(data))

    def put_stream(
        self,
        source: Readable,
        *,
        expected: str | None = None,
        max_bytes: int | None = None,
        progress: Progress | None = None,
    ) -> str:
        """Store everything ``source`` yields, streaming; return the CID.

        With ``expected``, the content must hash to that CID (:class:`VerificationError`
        otherwise, and nothing is stored). With ``max_bytes``, a longer stream is refused with
        :class:`InputError` as soon as it passes the limit.
        """
        with self.writer(expected=expected, max_bytes=max_bytes) as writer:
            while chunk := _read(source):
                writer.write(chunk)
                if progress is not None:
                    progress(len(chunk))
            return writer.commit()

    def writer(self, *, expected: str | None = None, max_bytes: int | None = None) -> BlobWriter:
        """A blob written chunk by chunk (e.g. from a network stream), hashed as it is written;
        :meth:`BlobWriter.commit` stores it. Use as a context manager: what is not committed is
        removed."""
        if expected is not None:
            cid.digest(expected)
        return BlobWriter(self, expected, max_bytes)

    def _adopt(self, temp: str, blob: str) -> None:
        """Move a complete, fsynced temporary file into place as ``blob``."""
        target = self.path(blob)
        if target.is_file() and self._intact(blob):
            return  # deduplicated
        target.parent.mkdir(exist_ok=True)
        os.replace(temp, target)  # atomic; also repairs a corrupt copy
        _fsync_dir(target.parent)

    def put_file(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        progress: Progress | None = None,
    ) -> str:
        """Store the file at ``path``, streaming; return its CID."""
        try:
            size = os.stat(path).st_size
            if max_bytes is not None and size > max_bytes:
                raise InputError(
                    f"{os.fspath(path)!r} is {size} bytes, above the limit of {max_bytes}"
                )
            with open(path, "rb") as source:
                return self.put_stream(source, max_bytes=max_bytes, progress=progress)
        except OSError as exc:
            raise InputError(f"cannot read {os.fspath(path)!r}: {exc.strerror}") from exc

    def delete(self, blob: str) -> None:
        """Remove a blob (an administrative operation; blobs are otherwise immutable)."""
        try:
            self.path(blob).unlink()
        except FileNotFoundError:
            raise NotFound(f"no blob {blob!r}") from None

    # -- reading ------------------------------------------------------------------------------

    def _chunks(self, blob: str) -> Iterator[bytes]:
        try:
            with open(self.path(blob), "rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk
        except FileNotFoundError:
            raise NotFound(f"no blob {blob!r}") from None
        except OSError as exc:
            raise StorageError(f"cannot read blob {blob!r}: {exc.strerror}") from exc

    def _intact(self, blob: str) -> bool:
        hasher = hashlib.sha256()
        for chunk in self._chunks(blob):
            hasher.update(chunk)
        return cid.from_digest(hasher.digest()) == blob

    def _corrupt(self, blob: str) -> StorageError:
        return StorageError(
            f"blob {blob!r} is corrupt: its bytes no longer hash to its CID; it will not be "
            f"served (publish or pull it again to repair it)"
        )

    def get(self, blob: str) -> bytes:
        """The blob's bytes, checked against its CID."""
        data = b"".join(self._chunks(blob))
        if cid.from_digest(hashlib.sha256(data).digest()) != blob:
            raise self._corrupt(blob)
        return data

    def check(self, blob: str) -> None:
        """Return ``None`` if the blob is present and intact; raise otherwise."""
        if not self._intact(blob):
            raise self._corrupt(blob)

    def copy_to(
        self,
        blob: str,
        destination: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
    ) -> None:
        """Write the blob to ``destination``, streaming; the file appears only if it is intact."""
        destination = Path(destination)
        hasher = hashlib.sha256()
        fd, temp = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in self._chunks(blob):
                    hasher.update(chunk)
                    handle.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
                handle.flush()
                os.fsync(handle.fileno())
            if cid.from_digest(hasher.digest()) != blob:
                raise self._corrupt(blob)
            os.replace(temp, destination)
        except OSError as exc:
            raise StorageError(f"cannot write {str(destination)!r}: {exc.strerror}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def copy_into(self, blob: str, other: BlobStore, *, progress: Progress | None = None) -> None:
        """Copy the blob into another store, streaming; it is checked on both sides."""
        try:
            other.put_stream(_ChunkReader(self._chunks(blob)), expected=blob, progress=progress)
        except VerificationError:
            raise self._corrupt(blob) from None  # the bytes were wrong on this side

    def corrupt(self) -> list[str]:
        """The CIDs of every stored blob whose bytes no longer match (a full scan)."""
        return [blob for blob in self if not self._intact(blob)]


class _BytesReader:
    """``read(n)`` over bytes without copying them into a BytesIO."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else self._position + size
        chunk = bytes(self._view[self._position : end])
        self._position += len(chunk)
        return chunk


class _ChunkReader:
    """``read(n)`` over an iterator of chunks (sizes need not match)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def read(self, size: int = -1) -> bytes:
        return next(self._chunks, b"")


class BlobWriter:
    """A blob being written: a temporary file in the store and a running SHA-256."""

    def __init__(self, store: BlobStore, expected: str | None, max_bytes: int | None) -> None:
        self._store, self._expected, self._max = store, expected, max_bytes
        self._hasher = hashlib.sha256()
        self.size = 0
        try:
            fd, self._temp = tempfile.mkstemp(prefix=".tmp-", dir=store.root)
        except OSError as exc:
            raise StorageError(
                f"cannot write to the blob store {str(store.root)!r}: {exc}"
            ) from exc
        self._handle = os.fdopen(fd, "wb")

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; :class:`InputError` once the content passes the size limit."""
        self.size += len(chunk)
        if self._max is not None and self.size > self._max:
            raise InputError(f"content is larger than the limit of {self._max} bytes")
        self._hasher.update(chunk)
        try:
            self._handle.write(chunk)
        except OSError as exc:
            raise StorageError(f"cannot write to the blob store: {exc}") from exc

    def commit(self) -> str:
        """Make the content durable and store it under its CID; return the CID."""
        blob = cid.from_digest(self._hasher.digest())
        if self._expected is not None and blob != self._expected:
            raise VerificationError(f"content does not match CID {self._expected!r} (got {blob!r})")
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._store._adopt(self._temp, blob)
        except OSError as exc:
            raise StorageError(
                f"cannot write to the blob store {str(self._store.root)!r}: {exc}"
            ) from exc
        return blob

    def close(self) -> None:
        """Remove what was not committed."""
        self._handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)
