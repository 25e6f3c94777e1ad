"""Other nodes as sources of models: a model asked for but missing here is fetched from a peer.

Nothing fetched is trusted: the repository history must verify (under the owner key pinned here,
or pinned now on first sight), the manifest must verify and belong to that history, and every
blob is checked against its CID while it streams in (:meth:`verinfer.hub.Hub.pull`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import httpx

from verinfer.errors import InputError, NotFound, StorageError, VerificationError
from verinfer.hub.blobs import BlobStore, Progress

__all__ = ["HttpSource", "check_peers"]

_MAX_DOCUMENT_BYTES = 16 << 20  # a repository history or a manifest; models stream separately
_PEER_URL = re.compile(
    r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?/?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?/?"
)
_MAX_PEERS = 64


def check_peers(urls: Iterable[object]) -> list[str]:
    """Node URLs (peers, dispute sides), checked: ``http(s)://host[:port]`` with no path, at
    most 64, no repeats."""
    found: list[str] = []
    for url in urls:
        if not isinstance(url, str) or not _PEER_URL.fullmatch(url):
            raise InputError(f"node URL {url!r} is not an http(s)://host[:port] URL")
        if url.rstrip("/") not in found:
            found.append(url.rstrip("/"))
    if len(found) > _MAX_PEERS:
        raise InputError(f"{len(found)} peers: at most {_MAX_PEERS}")
    return found


class _Stream:
    """``read(n)`` over an httpx byte iterator."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = chunks

    def read(self, size: int = -1) -> bytes:
        return next(self._chunks, b"")


class HttpSource:
    """A peer node's hub, read over HTTP (a :class:`verinfer.hub.Source`)."""

    def __init__(self, url: str, *, timeout: float = 30.0, max_bytes: int = 1 << 30) -> None:
        self.url = url.rstrip("/")
        self.max_bytes = max_bytes  # the most a blob from this peer may be
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _get(self, path: str) -> httpx.Response:
        try:
            response = self._http.get(path)
        except httpx.HTTPError as exc:
            raise StorageError(f"peer {self.url} is unreachable: {exc}") from exc
        if response.status_code == 404:
            raise NotFound(f"peer {self.url} has no {path}")
        if not response.is_success:
            raise StorageError(f"peer {self.url} answered {response.status_code} for {path}")
        if len(response.content) > _MAX_DOCUMENT_BYTES:
            raise StorageError(f"peer {self.url} sent more than {_MAX_DOCUMENT_BYTES} bytes")
        return response

    def change_blobs(self, repository: str) -> list[bytes]:
        """The peer's changes of a repository (verified by the caller)."""
        response = self._get(f"/v1/repositories/{repository}/changes")
        try:
            changes = response.json()["changes"]
            if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
                raise TypeError("changes must be a list of strings")
            return [change.encode() for change in changes]
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"peer {self.url} sent a malformed history: {exc}") from exc

    def manifest(self, ref: str) -> bytes:
        """The peer's manifest for a CID or name (verified by the caller)."""
        return self._get(f"/v1/manifests/{ref}").content

    def copy_blob(self, blob: str, into: BlobStore, progress: Progress | None = None) -> None:
        """Stream a blob from the peer into ``into``, which checks it against ``blob``."""
        try:
            with self._http.stream("GET", f"/v1/blobs/{blob}") as response:
                if response.status_code == 404:
                    raise NotFound(f"peer {self.url} has no blob {blob!r}")
                if not response.is_success:
                    raise StorageError(f"peer {self.url} answered {response.status_code}")
                into.put_stream(
                    _Stream(response.iter_bytes(1 << 20)),
                    expected=blob,
                    max_bytes=self.max_bytes,
                    progress=progress,
                )
        except httpx.HTTPError as exc:
            raise StorageError(f"peer {self.url} failed while sending {blob!r}: {exc}") from exc
        except (InputError, VerificationError) as exc:  # too large, or not the bytes named
            raise StorageError(f"peer {self.url} sent a bad blob {blob!r}: {exc}") from exc
