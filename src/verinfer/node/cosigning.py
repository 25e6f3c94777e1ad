"""A node gathers cosignatures for its log from its peers' witnesses (C2SP ``tlog-witness``).

A background thread, every ``interval`` seconds while the log grows: for each peer, learn the
peer's log and witness keys (``GET /v1/node``; the peer's log is then witnessed here too), send
the latest checkpoint with a consistency proof from the size that witness last cosigned
(``POST /add-checkpoint``; a 409 names that size, and the request is made again), and keep the
cosignature lines that verify under the peer's witness key. Peers are chosen by the node's admin,
so their keys are taken from them on first contact and pinned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import httpx

from verinfer import note
from verinfer.errors import ConflictError, Error, VerificationError
from verinfer.witness import add_checkpoint_body

if TYPE_CHECKING:
    from verinfer.node.service import Node

__all__ = ["Cosigner"]

_KEEP = 1024  # cosigned checkpoints remembered
_RETRY_FIRST, _RETRY_MOST = 2.0, 60.0  # seconds before a refused checkpoint is offered again
_log = logging.getLogger("verinfer.cosigning")


class Cosigner:
    """Gathers cosignatures for ``node``'s checkpoints in a background thread."""

    def __init__(self, node: Node, *, interval: float = 0.25) -> None:
        self._node = node
        self._interval = interval
        self._peers: dict[str, dict[str, str]] = {}  # url -> {"vkey", "origin", "witness"}
        self._sizes: dict[str, int] = {}  # url -> the size its witness last cosigned for us
        self._gossiped: set[tuple[str, str]] = set()  # (peer url, checkpoint) already told
        # url -> (the checkpoint size its witness refused, why, when to offer it again, the
        # wait after that): a refused checkpoint is offered again after a wait that doubles up
        # to a minute (a peer that lists this node back later must not wait for the log to
        # grow), and a refusal is logged once per witness and reason, not every round (a peer
        # that does not list this node back refuses every checkpoint, four times a second)
        self._refused: dict[str, tuple[int, str, float, float]] = {}
        self._cosigned: OrderedDict[int, tuple[str, dict[str, str]]] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="verinfer-cosign", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._thread.join(timeout=10)  # a round in flight ends within its request timeout

    def cosigned(self, min_size: int = 0) -> str | None:
        """The newest checkpoint of size >= ``min_size`` with the cosignatures gathered for it,
        as one signed note, or ``None``."""
        with self._lock:
            for size in reversed(self._cosigned):
                if size < min_size:
                    break
                signed, lines = self._cosigned[size]
                if lines:
                    return note.attach(signed, lines.values())
        return None

    def _run(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(5.0, connect=2.0)) as http:
            while not self._stop.wait(self._interval):
                try:
                    self.round(http)
                except Exception:  # a round must never end the thread; the next one retries
                    _log.exception("cosigning round failed")

    def round(self, http: httpx.Client) -> None:
        """One round: the latest checkpoint to every peer's witness."""
        log = self._node.log
        signed = log.signed_checkpoint
        checkpoint = note.Checkpoint.from_text(note.parse(signed)[0])  # our own note: no re-check
        held = self._node.witness.held()  # what this witness cosigned for others: gossiped
        for url in list(self._node.peers):
            self._gossip(http, url, held)
            peer = self._peer(http, url)
            if peer is None or self._sizes.get(url, -1) == checkpoint.size:
                continue
            refused = self._refused.get(url)
            if refused and refused[0] == checkpoint.size and time.monotonic() < refused[2]:
                continue  # refused lately: offered again after a wait, or when the log grows
            line = self._submit(http, url, signed, checkpoint.size)
            if line is None:
                continue
            try:
                note.verify(note.attach(signed, [line]), [peer["witness"]])
            except (VerificationError, Error) as exc:
                _log.warning("witness %s answered a cosignature that does not verify: %s", url, exc)
                continue
            with self._lock:
                entry = self._cosigned.setdefault(checkpoint.size, (signed, {}))
                entry[1][peer["witness"]] = line
                while len(self._cosigned) > _KEEP:
                    self._cosigned.popitem(last=False)

    def _gossip(self, http: httpx.Client, url: str, held: list[str]) -> None:
        """Send a peer the checkpoints of other logs this node's witness holds, each once."""
        for signed in held:
            key = (url, signed)
            if key in self._gossiped:
                continue
            try:
                answer = http.post(f"{url}/v1/gossip", content=signed.encode())
            except httpx.HTTPError:
                return
            if answer.status_code in (200, 404):  # 404: the peer does not witness that log
                self._gossiped.add(key)
            try:
                found = answer.json().get("equivocation") if answer.status_code == 200 else None
            except (ValueError, AttributeError):
                found = None  # a peer that answers nonsense does not stop the round
            if found:
                _log.warning("peer %s holds equivocation evidence against a log", url)
        if len(self._gossiped) > 65536:
            self._gossiped.clear()

    def _peer(self, http: httpx.Client, url: str) -> dict[str, str] | None:
        known = self._peers.get(url)
        if known is not None:
            return known
        try:
            answer: Any = http.get(f"{url}/v1/node").json()
            peer = {key: str(answer[key]) for key in ("vkey", "origin", "witness")}
            self._node.witness.trust(peer["origin"], peer["vkey"])  # we witness its log too
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            _log.info("peer %s is not reachable as a witness yet: %s", url, exc)
            return None
        except (ConflictError, Error) as exc:
            _log.warning("peer %s: %s", url, exc)
            return None
        self._peers[url] = peer
        return peer

    def _submit(self, http: httpx.Client, url: str, signed: str, size: int) -> str | None:
        for _ in range(2):  # a 409 tells the size the witness holds: once more from there
            old = min(self._sizes.get(url, 0), size)
            proof = self._node.log.consistency_proof(old, size) if 0 < old < size else []
            try:
                answer = http.post(
                    f"{url}/add-checkpoint", content=add_checkpoint_body(old, proof, signed)
                )
            except httpx.HTTPError as exc:
                _log.info("witness %s is not reachable: %s", url, exc)
                return None
            if answer.status_code == 200:
                self._sizes[url] = size
                self._refused.pop(url, None)
                return answer.text
            if answer.status_code == 409 and answer.text.strip().isdigit():
                held = int(answer.text.strip())
                if held > size or held == self._sizes.get(url):
                    self._refusal(
                        url, size, f"it holds size {held}: it may have seen another tree of "
                        "our log",
                    )  # fmt: skip
                    return None
                self._sizes[url] = held
                continue
            final = 400 <= answer.status_code < 500 and answer.status_code != 429
            self._refusal(url, size if final else -1, f"{answer.status_code} {answer.text[:200]}")
            return None
        return None

    def _refusal(self, url: str, size: int, why: str) -> None:
        """Remember a refused checkpoint (``size`` -1: a transient refusal, 5xx or 429, which
        the next round retries); the same checkpoint is offered again after a wait that
        doubles with each refusal of it. Log a witness's refusal when its reason is new."""
        previous = self._refused.get(url)
        wait = _RETRY_FIRST
        if previous is not None and previous[0] == size:
            wait = min(previous[3] * 2, _RETRY_MOST)
        self._refused[url] = (size, why, time.monotonic() + wait, wait)
        if previous is None or previous[1] != why:
            _log.warning(
                "witness %s refused our checkpoint: %s (logged once per reason; offered again "
                "with each new checkpoint, and after a wait)", url, why,
            )  # fmt: skip
        else:
            _log.debug("witness %s refused our checkpoint again: %s", url, why)
