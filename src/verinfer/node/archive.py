"""The inputs and outputs of logged receipts, kept by their map digest for auditors.

An auditor re-executes a sample of a node's receipts; for that the node serves the tensors a
receipt's digests name (``GET /v1/tensors/{digest}``), for ``retention`` seconds. Writes happen
on a background thread, off the request path; a read decodes the file and checks its digest
before serving, so a damaged file is reported, never served.

Tensors are private to their requester unless a *public* receipt names them (the requester
asked for a public audit): then a marker ``<digest>.public`` beside the ``.npz`` records it, for
the retention period from the last public receipt that named them. Refusing anyone the tensors
of a public receipt within the retention period is a fault an auditor reports; who else may read
private ones is :mod:`verinfer.node.access`'s decision.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from verinfer import tensors
from verinfer.errors import InputError, NotFound, StorageError

__all__ = ["DEFAULT_RETENTION", "TensorArchive"]

DEFAULT_RETENTION = 7 * 86400.0
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_PRUNE_EVERY = 3600.0
# a kept map named again is re-dated at most this often, not with a syscall per answer
_TOUCH_EVERY = 600.0
_MAX_TOUCHED = 1 << 16
_MAX_QUEUED_BYTES = 256 << 20


class TensorArchive:
    """Named tensor maps stored as ``.npz`` files under ``root``, by map digest."""

    def __init__(self, root: str | os.PathLike[str], *, retention: float = DEFAULT_RETENTION):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self.retention = retention
        self._queue: queue.Queue[tuple[str, dict[str, np.ndarray]] | None] = queue.Queue(4096)
        self._pruned = 0.0
        self._queued = 0  # bytes waiting to be written
        self._touched: dict[str, float] = {}  # digest -> when it was last re-dated or queued
        self._marked: dict[str, float] = {}  # digest -> when its public marker was re-dated
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="verinfer-archive", daemon=True)
        self._thread.start()

    def path(self, digest: str) -> Path:
        """Where the tensors of ``digest`` are kept."""
        return Path(self._file(digest))

    def _file(self, digest: str) -> str:
        # a string, not a Path: this runs on every answer, and pathlib costs ~15 us a join
        found = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
        if found is None:
            raise InputError(f"malformed tensor digest {digest!r}: expected sha256:<64 hex>")
        hexdigest = found.group(1)
        return f"{self._root}{os.sep}{hexdigest[:2]}{os.sep}{hexdigest}.npz"

    def put(self, digest: str, arrays: Mapping[str, np.ndarray], *, public: bool = False) -> None:
        """Keep ``arrays`` (whose map digest is ``digest``), written in the background; a
        tensor map kept already is kept for another retention period from now. ``public``: a
        public receipt names them, so anyone may read them for the retention period."""
        now = time.monotonic()
        if public:
            self._mark_public(digest, now)
        if now - self._touched.get(digest, -_TOUCH_EVERY) < _TOUCH_EVERY:
            return  # re-dated (or queued) moments ago: prune() allows for the difference
        self._file(digest)  # checks the digest before it is remembered
        if len(self._touched) >= _MAX_TOUCHED:
            self._touched.clear()
        # kept already (re-dated) or new (written): the writer thread finds out, so the answer
        # path makes no system call (a failed utime of a new digest cost ~10-60 us an answer)
        size = sum(np.asarray(a).nbytes for a in arrays.values())
        with self._lock:
            if self._queued + size > _MAX_QUEUED_BYTES:
                return  # under overload, serving beats archiving
            self._queued += size
        try:
            self._queue.put_nowait((digest, dict(arrays)))
            self._touched[digest] = now  # forgotten again if the write fails
        except queue.Full:
            with self._lock:
                self._queued -= size

    def _mark_public(self, digest: str, now: float) -> None:
        """Create or re-date ``digest``'s public marker (before its answer is sent, so a reader
        of the public receipt never finds the tensors private)."""
        if now - self._marked.get(digest, -_TOUCH_EVERY) < _TOUCH_EVERY:
            return
        marker = self._file(digest)[: -len(".npz")] + ".public"
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
        return os.path.exists(self._file(digest)[: -len(".npz")] + ".public")

    def get(self, digest: str) -> bytes:
        """The ``.npz`` bytes of ``digest``'s tensors, checked against the digest."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no tensors {digest!r} are kept here") from None
        except OSError as exc:
            raise StorageError(f"cannot read {str(path)!r}: {exc}") from exc
        try:
            intact = tensors.map_digest(tensors.decode_binary(data)) == digest
        except InputError:
            intact = False
        if not intact:
            raise StorageError(f"the kept tensors {digest!r} are damaged; not served")
        return data

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything put so far is written."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:  # close()
                    return
                try:
                    self._write(*item)
                finally:
                    with self._lock:
                        self._queued -= sum(np.asarray(a).nbytes for a in item[1].values())
                if time.monotonic() - self._pruned > _PRUNE_EVERY:
                    self.prune()
            except (OSError, InputError):  # best effort: a full disk must not stop inference,
                if item is not None:  # but the next answer naming these tensors tries again
                    self._touched.pop(item[0], None)
            finally:
                self._queue.task_done()

    def _write(self, digest: str, arrays: dict[str, np.ndarray]) -> None:
        path = self.path(digest)
        try:
            os.utime(path)  # kept already, and named by a new receipt: retained from now
            return
        except (FileNotFoundError, NotADirectoryError):
            pass
        path.parent.mkdir(exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(tensors.encode_binary(arrays))
            os.replace(temp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def prune(self) -> int:
        """Delete what is older than the retention period (files are re-dated at most every
        ten minutes, so that much longer); return how many files."""
        self._pruned = time.monotonic()
        cutoff = time.time() - self.retention - _TOUCH_EVERY
        removed = 0
        for pattern in ("*/*.npz", "*/*.public"):  # a marker lapses with its public receipts
            for path in self.root.glob(pattern):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += pattern.endswith(".npz")
        return removed
