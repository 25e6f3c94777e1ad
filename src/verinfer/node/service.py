"""A node's inference pipeline, in process: resolve, check, run, digest, log, prove.

``Node.infer`` is what the HTTP API (and every SDK call) ends in: the model is resolved through
the hub (and its bytes hash-checked before a session is built), the inputs are checked against
the manifest's signature, ONNX Runtime runs them, and the receipt naming the model, the input and
output digests, the engine and the client's nonce goes into the node's log by group commit. The
answer carries its inclusion proof against a signed checkpoint that covers it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from verinfer import cid, keys, modes, note, tensors
from verinfer.engine import Engine
from verinfer.errors import (
    ConflictError,
    InputError,
    LimitExceeded,
    NotFound,
    StorageError,
    VerificationError,
)
from verinfer.hub import Hub, Manifest
from verinfer.hub.documents import ZkAddendum, parse_ref
from verinfer.log import Log
from verinfer.log.sequencer import MAX_BATCH, Committed, Sequencer
from verinfer.modes import NO_EVIDENCE, Evidence
from verinfer.modes.zk import ZkProof
from verinfer.node.access import TensorAccess
from verinfer.node.archive import DEFAULT_RETENTION, TensorArchive
from verinfer.node.cosigning import Cosigner
from verinfer.node.disputes import Disputes
from verinfer.node.peers import HttpSource, check_peers
from verinfer.node.pipeline import Pipeline
from verinfer.verify import Bundle, Receipt
from verinfer.verify.bundle import AUDITS, check_nonce
from verinfer.verify.evidence import model_of, verify_evidence
from verinfer.verify.promise import sign_promise
from verinfer.witness import Witness

if TYPE_CHECKING:
    from verinfer import zk

__all__ = [
    "ADMIN_TOKEN_FILE",
    "DEFAULT_MAX_INPUT_BYTES",
    "NODE_KEY_FILE",
    "PEERS_FILE",
    "Node",
    "Result",
    "check_peers",
    "load_or_create_key",
    "load_or_create_token",
]

_logger = logging.getLogger(__name__)

NODE_KEY_FILE = "node.skey"
ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name, not a secret
PEERS_FILE = "peers.json"
WITNESS_KEY_FILE = "witness.skey"
DEFAULT_MAX_INPUT_BYTES = 64 << 20
DEFAULT_WINDOW = 86400  # seconds an optimistic answer may be challenged
# seconds a promise gives the node to log its receipt (its maximum merge delay): far above a
# commit's milliseconds, so only a crash or a failing disk breaks one
DEFAULT_MERGE_DELAY = 60
DURABILITIES = ("durable", "promise")
_MISS_SECONDS = 10.0  # a model no peer had is not looked for again this soon
_OVERLAP_BYTES = 256 << 10  # below this, handing the hashing to a thread costs more than it saves
# runs this short (CPU seconds) are worth batching: a handoff between threads costs as much
_SHORT_SECONDS = 200e-6


def _secret(path: Path, make: Callable[[], str]) -> str:
    """A secret kept in ``path`` (mode 0600), created on first use. Never printed."""
    if not path.exists():
        with contextlib.suppress(ConflictError):  # another process created it meanwhile
            keys.write_secret(path, make() + "\n")
    if path.stat().st_mode & 0o077:
        raise InputError(f"{str(path)!r} is readable by others: chmod 600 it")
    return path.read_text().strip()


def load_or_create_key(data: Path, name: str) -> note.Signer:
    """The node's signing key in ``data`` (mode 0600), created on first use. Never printed."""
    return note.Signer(_secret(data / NODE_KEY_FILE, lambda: note.generate_key(name)[0]))


def load_or_create_witness_key(data: Path, name: str) -> note.Signer:
    """The node's witness (cosigner) key in ``data`` (mode 0600), created on first use."""
    make = lambda: note.generate_key(f"{name}/witness", cosigner=True)[0]  # noqa: E731
    return note.Signer(_secret(data / WITNESS_KEY_FILE, make))


def load_or_create_token(data: Path) -> str:
    """The node's admin token in ``data`` (mode 0600), created on first use. Never printed."""
    return _secret(data / ADMIN_TOKEN_FILE, lambda: secrets.token_urlsafe(32))


def _read_peers(data: Path) -> list[str]:
    try:
        return check_peers(json.loads((data / PEERS_FILE).read_text())["peers"])
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError, InputError) as exc:
        raise InputError(f"{str(data / PEERS_FILE)!r} is malformed: {exc}") from exc


def _write_peers(data: Path, peers: list[str]) -> None:
    """Replace the peers file atomically (temporary file, fsync, rename)."""
    temp = data / f".{PEERS_FILE}.tmp"
    with open(temp, "w") as handle:
        handle.write(json.dumps({"peers": peers}, indent=1) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, data / PEERS_FILE)


_second: tuple[int, str] = (-1, "")


def _now() -> str:
    """UTC now as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (the seconds part is formatted once a second)."""
    global _second  # noqa: PLW0603 - a one-entry cache; a race only recomputes it
    now = time.time()
    whole = int(now)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole)))
    return f"{_second[1]}{int((now - whole) * 1000):03d}Z"


def _check_request(mode: str, nonce: str | None, audit: str, durability: str = "durable") -> None:
    asked = modes.parse(mode)  # a node answers each replica of a replicated request on its own
    check_nonce(nonce)
    if audit not in AUDITS:
        raise InputError(f"audit {audit!r} is not one of {', '.join(AUDITS)}")
    if durability not in DURABILITIES:
        raise InputError(f"durability {durability!r} is not one of {', '.join(DURABILITIES)}")
    if durability == "promise" and asked.nodes > 1:
        raise InputError(
            f"durability 'promise' is for one node's answer, not mode {mode!r}: its replicas "
            "are checked against each other's logged receipts"
        )


@dataclass(frozen=True)
class Result:
    """An answer: the outputs, and the bundle that proves what the node stated about them."""

    outputs: dict[str, np.ndarray]
    bundle: Bundle
    manifest: Manifest


_Computed = tuple[Manifest, dict[str, np.ndarray], Receipt, Evidence, bool]


def _finish(computed: _Computed, committed: Committed) -> Result:
    manifest, outputs, receipt, evidence, _ = computed
    bundle = Bundle(
        receipt,
        committed.index,
        tuple(committed.proof),
        committed.signed_checkpoint,
        evidence=evidence,
    )
    return Result(outputs, bundle, manifest)


class Node:
    """A node over a data directory: its key, its log, its hub, its engine.

    ``data`` holds ``node.skey``, the log (``log.sqlite``, or ``log`` may name a PostgreSQL URL)
    and the hub (``hub/``). ``merge_delay``: the seconds a promise gives the node to log its
    receipt (``durability="promise"``). ``group_commit=False``: every receipt is committed and
    its checkpoint signed on its own (no batching).
    """

    def __init__(
        self,
        data: str | os.PathLike[str],
        *,
        name: str = "node.verinfer.local",
        log: str | None = None,
        hub: Hub | None = None,
        engine: Engine | None = None,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        workers: int | None = None,
        peers: list[str] | None = None,
        cosign_interval: float = 0.25,
        retention: float = DEFAULT_RETENTION,
        window: int = DEFAULT_WINDOW,
        merge_delay: int = DEFAULT_MERGE_DELAY,
        group_commit: bool = True,
    ) -> None:
        if not 1 <= merge_delay <= 86400:
            raise InputError(f"merge delay {merge_delay} s must be 1 s to a day")
        if not 10 <= window <= retention:
            raise InputError(
                f"challenge window {window} s must be 10 s or more and within the tensor "
                f"retention ({retention:g} s): a challenged node must still hold the tensors"
            )
        self.merge_delay = merge_delay  # what a promise gives the node to log its receipt
        self.promises = 0  # promises made, and those broken (their receipt landed elsewhere,
        self.broken_promises = 0  # or failed): a broken one is evidence against this node
        self._counting = threading.Lock()  # workers and the committer count them
        self.data = Path(data)
        self.data.mkdir(parents=True, exist_ok=True)
        self.signer = load_or_create_key(self.data, name)
        self.admin_token = load_or_create_token(self.data)  # for deletes and peer changes
        self._misses: dict[str, tuple[float, str]] = {}  # refs the peers lacked, and when
        if peers is None:  # as last set (by flags or the admin API), kept in peers.json
            self.peers = _read_peers(self.data)
        else:
            self.set_peers(peers)
        self._manifests: dict[str, Manifest] = {}  # by manifest CID: immutable
        self._random_operators: dict[str, list[str]] = {}  # by model CID, see _check_judgeable
        self._names: dict[str, tuple[str | None, str]] = {}  # ref -> (history head, manifest)
        self._lock = threading.Lock()
        self._fetching = threading.Lock()
        self._zk_lock = threading.Lock()
        self._circuits: dict[str, Any] = {}  # zk circuits by addendum CID
        self._zk_failures: dict[str, str] = {}  # addenda whose circuit could not be built
        self._zk_slot = threading.BoundedSemaphore(1)
        # per (model ref, mode): the largest input (bytes) seen to run short, the average run
        self._runs: dict[tuple[str, str], tuple[int, float]] = {}
        self._ticks = itertools.count()  # a known short model's runs are timed one in eight
        self.max_input_bytes = max_input_bytes
        self.window = window  # how long an optimistic answer may be challenged
        self._open(name, log, hub, engine, group_commit, workers, retention, cosign_interval)

    def _open(  # noqa: PLR0917 - __init__'s arguments, passed on
        self,
        name: str,
        log: str | None,
        hub: Hub | None,
        engine: Engine | None,
        group_commit: bool,
        workers: int | None,
        retention: float,
        cosign_interval: float,
    ) -> None:
        """Open the node's parts; what is opened is closed again if a later step fails."""
        # the log's journal stays locked while it is open: a failed start lets it go
        with contextlib.ExitStack() as undo:
            self.witness = Witness(
                self.data / "witness.sqlite", load_or_create_witness_key(self.data, name)
            )  # this node witnesses its peers' logs (C2SP tlog-witness)
            undo.callback(self.witness.close)
            self.log = Log.open(log or self.data, self.signer)
            undo.callback(self.log.close)
            # group_commit=False: every receipt its own commit and signature (a baseline, and for
            # operators who want no batching at all)
            self.sequencer = Sequencer(self.log, max_batch=MAX_BATCH if group_commit else 1)
            undo.callback(self.sequencer.close)
            self.hub = hub or Hub(self.data / "hub")
            self._own_hub = hub is None
            if self._own_hub:
                undo.callback(self.hub.close)
            self.engine = engine or Engine()
            # the work runs on a few worker threads, however many callers wait: on CPython, dozens
            # of threads running Python at once spend more CPU handing the GIL around than working
            self._pipeline: Pipeline[_Computed, Result] = Pipeline(
                self._compute,
                _finish,
                self.sequencer,
                workers=workers or os.cpu_count() or 2,
                estimate=self._estimate if group_commit else lambda args: None,
                promise=lambda computed: computed[4],
                pledge=self._pledge,
                settle=self._settle,
            )
            undo.callback(self._pipeline.close)
            self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verinfer-hash")
            undo.callback(self._hasher.shutdown)
            self.archive = TensorArchive(self.data / "tensors", retention=retention)  # for audits
            undo.callback(self.archive.close)
            self.access = TensorAccess(self.data, self.admin_token)  # who reads private tensors
            self.cosigner = Cosigner(self, interval=cosign_interval)
            undo.callback(self.cosigner.close)
            self.disputes = Disputes(self)  # a side of its optimistic answers' disputes, a referee
            undo.pop_all()  # started: close() closes them

    @property
    def vkey(self) -> str:
        """The key that signs this node's checkpoints."""
        return self.signer.vkey

    def close(self) -> None:
        """Finish what is running, commit what is queued, then close the log and the hub."""
        self.cosigner.close()
        self._pipeline.close()
        self._hasher.shutdown(wait=True)
        self.sequencer.close()
        self.archive.close()
        self.log.close()
        self.witness.close()
        if self._own_hub:
            self.hub.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_peers(self, peers: Iterable[object]) -> list[str]:
        """Replace the node URLs missing models are fetched from; kept across restarts."""
        checked = check_peers(peers)
        try:
            _write_peers(self.data, checked)
        except OSError as exc:
            raise StorageError(f"cannot write {str(self.data / PEERS_FILE)!r}: {exc}") from exc
        self.peers = checked
        self._misses.clear()  # a model the old peers lacked may be on the new ones
        return checked

    def judge(self, document: bytes) -> tuple[str, bool]:
        """Check submitted evidence and keep it if it holds: ``(verdict, newly kept)``.
        Fraud, generation-fraud and dispute evidence is re-executed on the model, which must be
        here."""
        try:
            parsed = json.loads(document)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"the evidence is not JSON: {exc}") from exc
        accused = parsed.get("vkey") if isinstance(parsed, dict) else None
        if accused not in self.witness.logs().values():
            raise InputError("this node keeps evidence only about the logs it witnesses")
        try:
            model_cid = model_of(parsed)
        except VerificationError as exc:
            raise InputError(str(exc)) from exc
        model = None  # fraud and dispute evidence re-run the model: it must be here
        if model_cid is not None:
            model = self._model_bytes(self._resolve_here(model_cid))  # no peer fetches
        verdict = verify_evidence(document, model=model)
        return verdict, self.witness.record(parsed)

    def resolve(self, ref: str) -> Manifest:
        """The manifest for a model CID, a manifest CID or ``owner/name[@version|tag]``.

        Name lookups are cached until the repository's history moves. A model this node does
        not have is fetched from its peers, verified, and kept.
        """
        try:
            return self._resolve_here(ref)
        except NotFound:
            if not self.peers:
                raise
        missed = self._misses.get(ref)
        if missed is not None and time.monotonic() - missed[0] < _MISS_SECONDS:
            raise NotFound(missed[1])  # asked again too soon: the peers are not asked again
        with self._fetching:  # one fetch at a time; a concurrent one may have done this one
            try:
                return self._resolve_here(ref)
            except NotFound:
                pass
            try:
                return self._fetch(ref)
            except NotFound as exc:
                if len(self._misses) > 4096:
                    self._misses.clear()
                self._misses[ref] = (time.monotonic(), str(exc))
                raise

    def _fetch(self, ref: str) -> Manifest:
        problems = []
        for url in self.peers:
            source = HttpSource(url, max_bytes=self.hub.limits.max_bytes)
            try:
                name = ref
                if "/" not in ref:  # a CID: the peer's manifest names the repository
                    found = Manifest.from_bytes(source.manifest(ref))
                    if ref not in (found.cid, found.model):
                        raise VerificationError(f"peer {url} answered another manifest")
                    name = f"{found.repository}@{found.version}"
                self.hub.pull(name, source)
                return self._resolve_here(ref)
            except (NotFound, StorageError, VerificationError, ConflictError) as exc:
                problems.append(f"{url}: {exc}")  # lacks it, is down, or lied: try the next
            finally:
                source.close()
        raise NotFound(f"no model {ref!r} here or on the peers ({'; '.join(problems)})")

    def _resolve_here(self, ref: str) -> Manifest:
        if "/" not in ref:
            with self._lock:
                cached = self._manifests.get(ref)
            if cached is None:
                cached = self.hub.resolve(ref)
                with self._lock:
                    self._manifests[ref] = cached
            return cached
        repository, _ = parse_ref(ref)
        head = self.hub.head(repository)
        with self._lock:
            known = self._names.get(ref)
        if known is not None and known[0] == head:
            return self._resolve_here(known[1])
        manifest = self.hub.resolve(ref)
        with self._lock:
            self._names[ref] = (head, manifest.cid)
            self._manifests[manifest.cid] = manifest
        return manifest

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        mode: str = "attested",
        nonce: str | None = None,
        timeout: float | None = None,
        audit: str = "private",
        durability: str = "durable",
    ) -> Result:
        """Run ``model`` on ``inputs`` and return the outputs with their proof bundle.

        ``audit="public"``: the requester lets anyone read the inputs and outputs (the receipt
        says so); by default they are private (:mod:`verinfer.node.access`).
        ``durability="promise"``: answer as soon as the outputs exist, with a signed promise to
        log the receipt at the index the sequencer gave it within :attr:`merge_delay` seconds
        (:mod:`verinfer.verify.promise`), instead of after the receipt is durable."""
        _check_request(mode, nonce, audit, durability)
        return self._pipeline.run(model, inputs, mode, nonce, timeout, audit, durability)

    async def ainfer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        mode: str = "attested",
        nonce: str | None = None,
        timeout: float | None = None,
        audit: str = "private",
        durability: str = "durable",
    ) -> Result:
        """:meth:`infer` for asyncio callers: the event loop never blocks on the work."""
        _check_request(mode, nonce, audit, durability)
        return await self._pipeline.arun(model, inputs, mode, nonce, timeout, audit, durability)

    def _pledge(self, batch: list[_Computed], index: int) -> list[Result]:
        """Promises' answers: each receipt, the index it will occupy (``index`` on), and the
        batch's signed promise with the receipt's path in it: one signature for the batch."""
        signed, paths = sign_promise(
            self.signer,
            log=self.log.origin,
            index=index,
            receipts=[computed[2].data for computed in batch],
            deadline=math.ceil(time.time()) + self.merge_delay,
        )
        with self._counting:
            self.promises += len(batch)
        return [
            Result(
                outputs,
                Bundle(receipt, index + k, tuple(path), "", evidence=evidence, promise=signed),
                manifest,
            )
            for k, ((manifest, outputs, receipt, evidence, _), path) in enumerate(
                zip(batch, paths, strict=True)
            )
        ]

    def _settle(self, computed: _Computed, index: int, outcome: Committed | BaseException) -> None:
        """A promised receipt was logged (where promised, or not): called by the thread that
        committed it (the committer, or the worker that promised its batch)."""
        if isinstance(outcome, BaseException) or outcome.index != index:
            with self._counting:
                self.broken_promises += 1
            where = outcome if isinstance(outcome, BaseException) else f"entry {outcome.index}"
            _logger.error("broke the promise of entry %d: %s", index, where)

    def _compute(  # noqa: PLR0917 - the pipeline passes a request's arguments positionally
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        mode: str,
        nonce: str | None,
        timeout: float | None,
        audit: str = "private",
        durability: str = "durable",
    ) -> tuple[bytes, _Computed]:
        """Resolve, check, run, digest (on a worker, or a blocking caller's own thread); the
        receipt's bytes go to the log."""
        manifest = self.resolve(model)
        asked = modes.parse(mode)
        self._check_judgeable(manifest, asked)
        checked = tensors.validate(
            inputs,
            manifest.body["inputs"],
            max_bytes=self.max_input_bytes,
            finite_only=manifest.body.get("finite_inputs", False),
        )
        # a large input is hashed on another core while ONNX Runtime runs (both release the GIL)
        large = sum(array.nbytes for array in checked.values()) >= _OVERLAP_BYTES
        hashing = self._hasher.submit(tensors.map_digest, checked) if large else None
        evidence: Evidence = NO_EVIDENCE
        if asked.proven:  # the circuit's outputs, proven; minutes for big models
            outputs, evidence = self._prove(manifest, checked)
        else:
            load = lambda: self._model_bytes(manifest)  # noqa: E731
            self.engine.session(manifest.model, load)  # built first: not part of the run's time
            known = self._runs.get((model, mode), (-1, math.inf))
            if known[0] < 0 or next(self._ticks) % 8 == 0 or known[1] >= _SHORT_SECONDS:
                # CPU, not wall: waiting for the GIL is not the run's cost. A thread's CPU clock
                # is a system call (~4 us under load), so a model known to be short is timed
                # in one run of eight: a change shows within a few batches all the same
                started = self.engine.cpu_time()
                outputs = self.engine.run(manifest.model, load, checked, timeout=timeout)
                self._timed((model, mode), checked, self.engine.cpu_time() - started)
            else:
                outputs = self.engine.run(manifest.model, load, checked, timeout=timeout)
        inputs_digest = hashing.result() if hashing else tensors.map_digest(checked)
        stated = asked.stated(self.window)
        receipt = self.receipt_for(manifest, (checked, inputs_digest), outputs,
                                   mode=stated, nonce=nonce, audit=audit)  # fmt: skip
        return receipt.data, (manifest, outputs, receipt, evidence, durability == "promise")

    def receipt_for(
        self,
        manifest: Manifest,
        inputs: tuple[Mapping[str, np.ndarray], str],
        outputs: Mapping[str, np.ndarray],
        *,
        mode: str,
        nonce: str | None,
        audit: str,
    ) -> Receipt:
        """Archive the inputs (with their digest, often computed already) and the outputs, and
        state them in a receipt of this node: the one place a receipt is made."""
        checked, inputs_digest = inputs
        outputs_digest = tensors.map_digest(outputs)
        public = audit == "public"  # served to anyone; else to the requester and auditors
        self.archive.put(inputs_digest, checked, public=public)  # kept for the retention period
        self.archive.put(outputs_digest, outputs, public=public)
        return Receipt.create(
            log=self.log.origin,
            node=self.signer.vkey,
            model=manifest.model,
            manifest=manifest.cid,
            inputs=inputs_digest,
            outputs=outputs_digest,
            mode=mode,
            engine=self.engine.identity,
            time=_now(),
            nonce=nonce,
            audit=audit,
        )

    def _timed(self, key: tuple[str, str], inputs: dict[str, np.ndarray], seconds: float) -> None:
        """Learn which requests are short (see :meth:`_estimate`)."""
        size = sum(array.nbytes for array in inputs.values())
        known = self._runs.get(key)
        if known is None:  # a first run also sets ONNX Runtime up: it says little
            if len(self._runs) >= 4096:
                self._runs.clear()
            self._runs[key] = (-1, math.inf)
            return
        bound, average = known
        if average == math.inf or seconds > 10 * _SHORT_SECONDS:
            average = seconds  # new, or far slower than short (another model under this name)
        average += (min(seconds, 4 * average) - average) / 8  # one outlier moves it little
        if seconds < _SHORT_SECONDS:  # one long run (a page fault, a busy core) changes only
            bound = max(bound, size)  # the average: a model whose runs are long goes above it
        self._runs[key] = (bound, average)

    def _estimate(self, args: tuple[Any, ...]) -> float | None:
        """The expected run time of a request for a model whose runs are short, on inputs no
        larger than its short ones; ``None`` otherwise (unknown, long, or zk)."""
        model, inputs, mode = args[0], args[1], args[2]
        try:  # called before the request is checked: anything odd is simply not short
            bound, average = self._runs.get((model, mode), (-1, 0.0))
            if bound < 0 or average >= _SHORT_SECONDS or not isinstance(inputs, Mapping):
                return None
            size = 0
            for array in inputs.values():
                size += array.nbytes if isinstance(array, np.ndarray) else bound + 1
        except Exception:  # an unhashable reference, a mapping that fails: not short
            return None
        return average if size <= bound else None

    def _prove(
        self, manifest: Manifest, inputs: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], Evidence]:
        """zk: run the circuit the publisher endorsed on ``inputs`` and prove it."""
        from verinfer import zk  # noqa: PLC0415 - optional, heavy

        addendum = self.hub.zk_addendum(manifest.cid)
        with self._zk_lock:  # one build per model; the proving key stays in the data dir
            failed = self._zk_failures.get(addendum.cid)
            if failed is not None:  # a build that failed is not retried on every request
                raise StorageError(f"this node cannot build the endorsed circuit: {failed}")
            circuit = self._circuits.get(addendum.cid)
            if circuit is None:
                directory = self.data / "zk" / addendum.cid
                circuit = zk.load(directory) or self._own_circuit(manifest, addendum)
                try:
                    if circuit is None:
                        circuit = zk.build(
                            self._model_bytes(manifest),
                            manifest.body["inputs"],
                            self.hub.blobs.get(addendum.body["settings"]),
                            self.hub.blobs.get(addendum.body["srs"]),
                            directory,
                            shapes=addendum.body.get("shapes"),
                        )
                    if cid.compute(circuit.vk) != addendum.body["vk"]:
                        raise StorageError(
                            "this node's circuit does not reproduce the verification key the "
                            "publisher endorsed"
                        )
                except (InputError, StorageError, LimitExceeded) as exc:
                    self._zk_failures[addendum.cid] = str(exc)
                    raise
                self._circuits[addendum.cid] = circuit
        if not self._zk_slot.acquire(blocking=False):  # proofs take seconds: one at a time,
            raise LimitExceeded("a zk proof is already being made here; retry shortly")  # 503
        try:  # so zk requests never occupy every worker that attested requests need
            outputs, proof = zk.prove(circuit, inputs)
        finally:
            self._zk_slot.release()
        return outputs, ZkProof(addendum.cid, proof.decode())

    def _own_circuit(self, manifest: Manifest, addendum: ZkAddendum) -> zk.Circuit | None:
        """The circuit this node's own hub built for the endorsement (``zk-setup`` run here),
        if it is exactly the endorsed one (settings, verification key, SRS and bound shapes):
        its keys need not be generated twice. ``None`` otherwise."""
        from verinfer import zk  # noqa: PLC0415 - optional, heavy

        circuit = zk.load(self.hub.root / "zk" / manifest.model)
        if circuit is None or circuit.shapes != addendum.body.get("shapes"):
            return None
        if any(
            cid.compute(getattr(circuit, k)) != addendum.body[k] for k in ("settings", "vk", "srs")
        ):
            return None
        return circuit

    def _check_judgeable(self, manifest: Manifest, mode: modes.Mode) -> None:
        """Refuse ``replicated:K`` and ``optimistic`` for a model with operators whose output
        is not a function of their inputs (found here, from the bytes): bitwise agreement and
        disputes would judge answers that no honest re-run has to reproduce."""
        if not mode.rerun_judged:
            return
        found = self._random_operators.get(manifest.model)
        if found is None:
            from verinfer.engine.nondeterminism import (  # noqa: PLC0415 - onnx's parser
                nondeterministic_operators_of,
            )

            try:
                found = nondeterministic_operators_of(self._model_bytes(manifest))
            except ValueError as exc:
                raise StorageError(f"model {manifest.model!r} does not parse here: {exc}") from exc
            self._random_operators[manifest.model] = found
        if found:
            raise InputError(
                f"mode {mode.text!r} is refused for {manifest.repository}@{manifest.version}: the "
                f"model has operators whose output is not a function of their inputs "
                f"({', '.join(found)}), so its answers can be neither compared bit for bit nor "
                "disputed; ask for attested"
            )

    def _model_bytes(self, manifest: Manifest) -> bytes:
        try:
            return self.hub.blobs.get(manifest.model)  # hash-checked before any session exists
        except NotFound:
            raise NotFound(
                f"model {manifest.model!r} of {manifest.repository}@{manifest.version} is not "
                f"stored on this node"
            ) from None
