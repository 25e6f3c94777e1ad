"""A node's part in disputes: a side (defendant of its own optimistic receipts, or challenger of
another node's) and a referee that plays the game between two nodes over HTTP.

As a side, the node traces a challenged execution once, when the referee first asks, and answers
from that trace; a defendant stands by the outputs it answered (kept in its tensor archive for
longer than its challenge window). As a referee, it asks both sides for their messages over HTTP
with the dispute's deadline per round and keeps the verdicts it signs in ``DATA/verdicts``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from verinfer import tensors
from verinfer.engine.trace import Steps
from verinfer.errors import InputError, LimitExceeded, NotFound, StorageError
from verinfer.modes.dispute import (
    Dispute,
    LocalParty,
    Reveal,
    Verdict,
    decode_npz,
    encode_npz,
    seconds_of,
    settle,
)
from verinfer.node.peers import check_peers
from verinfer.verify import Bundle
from verinfer.verify.evidence import dispute as dispute_evidence

if TYPE_CHECKING:
    from verinfer.hub import Manifest
    from verinfer.node.service import Node

__all__ = ["Disputes", "RemoteParty"]

_MAX_ANSWER_BYTES = 256 << 20
_FRESH = 600.0  # seconds a dispute header's opening time may be from a side's clock
_REFEREEING = 2  # games this node referees at once


class RemoteParty:
    """A side of a dispute reached over HTTP (``POST /v1/disputes/party/...``); counts the bytes
    it sends and receives."""

    def __init__(self, url: str, vkey: str, *, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.vkey = vkey
        self.sent = 0
        self.received = 0
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        data = json.dumps(body).encode()
        self.sent += len(data)
        headers = {"content-type": "application/json"}
        try:
            with self._http.stream("POST", path, content=data, headers=headers) as response:
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > _MAX_ANSWER_BYTES:  # stop reading: never hold more than this
                        raise StorageError(f"{self.url} sent more than {_MAX_ANSWER_BYTES} bytes")
                    chunks.append(chunk)
        except httpx.TimeoutException as exc:
            raise LimitExceeded(f"{self.url} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise StorageError(f"{self.url} is unreachable: {exc}") from exc
        self.received += size
        try:
            answer = json.loads(b"".join(chunks))
        except ValueError as exc:
            raise StorageError(f"{self.url} answered {response.status_code}, not JSON") from exc
        if not response.is_success:
            message = answer.get("message") if isinstance(answer, dict) else answer
            raise StorageError(f"{self.url} answered {response.status_code}: {message}")
        return answer

    def opening(self, dispute: Dispute, inputs: Mapping[str, np.ndarray]) -> str:
        answer = self._post(
            "/v1/disputes/party/opening", {"dispute": dispute.header, "inputs": encode_npz(inputs)}
        )
        return str(answer["message"])

    def state(self, dispute: Dispute, step: int) -> dict[str, Any]:
        answer = self._post("/v1/disputes/party/state", {"dispute": dispute.id, "step": step})
        if not isinstance(answer, dict):
            raise StorageError(f"{self.url} answered a state that is not an object")
        return answer

    def reveal(self, dispute: Dispute, step: int, names: Sequence[str]) -> Reveal:
        body = {"dispute": dispute.id, "step": step, "names": list(names)}
        answer = self._post("/v1/disputes/party/reveal", body)
        leaves = [(str(name), str(digest)) for name, digest in answer["leaves"]]
        encoded = str(answer["tensors"])
        arrays = decode_npz(encoded, "revealed tensors", max_bytes=_MAX_ANSWER_BYTES)
        if sorted(arrays) != sorted(names):
            raise StorageError(f"{self.url} revealed other tensors than the ones asked for")
        expected = sum(a.nbytes for a in arrays.values()) + 4096 * (len(arrays) + 1) + (1 << 16)
        if len(encoded) * 3 // 4 > expected:  # padding would only bloat the verdict
            raise StorageError(f"{self.url} revealed tensors padded with other bytes")
        return Reveal(leaves, arrays, encoded)


def node_vkey(url: str, timeout: float) -> str:
    """The vkey a node at ``url`` signs with (``GET /v1/node``)."""
    try:
        response = httpx.get(url.rstrip("/") + "/v1/node", timeout=timeout)
        response.raise_for_status()
        return str(response.json()["vkey"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"cannot learn the key of the node at {url}: {exc}") from exc


class Disputes:
    """The disputes a node takes part in, as a side or as the referee."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.party = LocalParty(
            node.signer,
            self._model,
            self._stands_by,
            engine=node.engine.identity,
            threads=node.engine.threads,
        )
        self._disputes: dict[str, Dispute] = {}
        self._tracing = threading.BoundedSemaphore(1)  # one trace at a time: they are large
        self._refereeing = threading.BoundedSemaphore(_REFEREEING)
        self._steps: dict[str, Steps] = {}
        self.verdicts = Path(node.data) / "verdicts"

    # -- as a side

    def _model(self, model: str) -> bytes:
        manifest = self.node.resolve(model)
        return self.node._model_bytes(manifest)

    def _stands_by(self, dispute: Dispute, inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        receipt = dispute.receipt
        if dispute.defendant == self.node.vkey:
            try:  # what it answered, as kept for auditors
                return tensors.decode_binary(self.node.archive.get(receipt["outputs"]))
            except NotFound:
                pass  # past retention: an honest node computes the same bits again
        manifest = self.node.resolve(receipt["manifest"] or receipt["model"])
        return self.node.engine.run(manifest.model, lambda: self._model(manifest.cid), inputs)

    def _known(self, dispute_id: object) -> Dispute:
        found = self._disputes.get(str(dispute_id))
        if found is None:
            raise NotFound(f"no dispute {dispute_id!r} was opened with this node")
        return found

    def opening(self, header: object, inputs: Mapping[str, np.ndarray]) -> str:
        """Open a dispute as one of its sides: trace it and sign the opening."""
        dispute = Dispute.from_header(header)
        if self.node.vkey not in (dispute.defendant, dispute.challenger):
            raise InputError("this node is neither the defendant nor the challenger")
        opened = seconds_of(str(dispute.header["opened"]))
        if abs(time.time() - opened) > _FRESH:
            raise InputError(
                f"the dispute opened at {dispute.header['opened']}, not within {_FRESH:g} s of "
                "now: a referee opens a dispute when it asks"
            )
        # one trace at a time; others queue, but not past the time the referee waits for them
        if not self._tracing.acquire(timeout=dispute.opening_deadline):
            raise LimitExceeded("this node is tracing other disputes; retry")
        try:
            message = self.party.opening(dispute, inputs)
        finally:
            self._tracing.release()
        self._disputes[dispute.id] = dispute
        while len(self._disputes) > 16:
            self._disputes.pop(next(iter(self._disputes)))
        return message

    def state(self, dispute_id: object, step: object) -> dict[str, Any]:
        dispute = self._known(dispute_id)
        return self.party.state(dispute, _step(step))

    def reveal(self, dispute_id: object, step: object, names: object) -> Reveal:
        dispute = self._known(dispute_id)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError("names must be a list of tensor names")
        return self.party.reveal(dispute, _step(step), names)

    # -- as the referee

    def steps(self, manifest: Manifest) -> Steps:
        """The model's steps, kept for the last model refereed (its bytes read and hashed
        once, not once per challenge)."""
        found = self._steps.get(manifest.model)
        if found is None:
            found = Steps(self.node._model_bytes(manifest))
            found.prepare()  # once per model: what depends on the model alone
            self._steps = {manifest.model: found}
        return found

    def referee(
        self,
        bundle: object,
        inputs: str,
        *,
        challenger: str,
        defendant: str | None = None,
        deadline: float = 30.0,
    ) -> Verdict:
        """Settle a challenge of ``bundle`` (on ``inputs``, base64 ``.npz``) between the nodes
        at ``challenger`` and ``defendant`` (if not given, found among this node's peers by the
        receipt's key)."""
        if not self._refereeing.acquire(blocking=False):
            raise LimitExceeded(f"this node referees {_REFEREEING} disputes already; retry")
        try:
            return self._referee(bundle, inputs, challenger, defendant, deadline)
        finally:
            self._refereeing.release()

    def _referee(
        self, bundle: object, inputs: str, challenger: str, defendant: str | None, deadline: float
    ) -> Verdict:
        check_peers([challenger, *([defendant] if defendant else [])])  # 400, not a retry
        arrays = decode_npz(inputs, "inputs", max_bytes=self.node.max_input_bytes)
        parsed = Bundle.from_json(bundle)  # type: ignore[arg-type]
        receipt = parsed.receipt
        challenger_key = node_vkey(challenger, deadline)
        dispute = Dispute.create(
            parsed, challenger=challenger_key, referee=self.node.vkey, deadline=deadline
        )
        url = defendant or self._find(receipt["node"], deadline)
        if node_vkey(url, deadline) != receipt["node"]:
            raise InputError(f"the node at {url} is not the one that signed the receipt")
        manifest = self.node.resolve(receipt["manifest"] or receipt["model"])
        steps = self.steps(manifest)
        sides = [RemoteParty(url, receipt["node"], timeout=deadline),
                 RemoteParty(challenger, challenger_key, timeout=deadline)]  # fmt: skip
        try:
            verdict = settle(
                dispute, arrays, steps.model, defendant=sides[0], challenger=sides[1],
                signer=self.node.signer, steps=steps, encoded_inputs=inputs,
            )  # fmt: skip
        finally:
            for side in sides:
                side.close()
        self._keep(dispute.id, verdict)
        evidence = dispute_evidence(verdict)
        if evidence is not None and receipt["node"] in self.node.witness.logs().values():
            # served at /v1/evidence: clients stop calling it. A full evidence store must not
            # take the verdict, signed and kept already, from the caller.
            with contextlib.suppress(LimitExceeded):
                self.node.witness.record(evidence)
        return verdict

    def _find(self, vkey: str, timeout: float) -> str:
        for url in self.node.peers:
            try:
                if node_vkey(url, timeout) == vkey:
                    return url
            except StorageError:
                continue
        raise NotFound(
            "no peer of this node signs with the receipt's key: name the defendant's URL"
        )

    def _keep(self, dispute_id: str, verdict: Verdict) -> None:
        self.verdicts.mkdir(parents=True, exist_ok=True)
        path = self.verdicts / f"{dispute_id.removeprefix('sha256:')}.json"
        temporary = path.with_suffix(".tmp")
        with temporary.open("wb") as handle:
            handle.write(verdict.data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    def verdict(self, dispute_id: str) -> bytes:
        """A verdict this node signed, by dispute ID (``sha256:<hex>`` or the hex)."""
        name = dispute_id.removeprefix("sha256:")
        if len(name) != 64 or name.strip("0123456789abcdef"):
            raise InputError(f"malformed dispute ID {dispute_id!r}")
        try:
            data = (self.verdicts / f"{name}.json").read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no verdict for dispute {dispute_id!r} here") from None
        verdict, _ = Verdict.from_bytes(data)  # checked on every read, like blobs
        if verdict.body["referee"] != self.node.vkey:
            raise StorageError(f"the kept verdict {dispute_id!r} is not this node's")
        return data


def _step(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError(f"step must be a non-negative integer, got {value!r}")
    return value
