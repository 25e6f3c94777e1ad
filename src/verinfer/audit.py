"""Audits: re-execute a random share of the nodes' logged receipts and convict the ones that lied.

For each node of a network, an :class:`Auditor` reads the entries its log gained since the last
round (each proven included in a checkpoint signed by the node's key), picks each with
probability ``rate``, fetches the inputs the receipt names (``GET /v1/tensors/{digest}``,
checked against the digest) and the model (by CID, hash-checked), runs it here, and compares.
A mismatch on the same engine identity is **fraud evidence** anyone with the model can check
(:func:`verinfer.verify.evidence.verify_evidence`). A node that cannot serve the inputs of a
receipt it logged is reported as a fault (``unavailable``); a receipt from another engine class
is compared within the tolerance its manifest declares (``deviation`` beyond it), or reported
``incomparable`` if none is declared. A text generation's receipt (docs/PROTOCOL.md §16) is
judged from its archived record: steps G1-G4 and one teacher-forced pass within the generation
tolerance, on any kernel class.

A receipt's tensors are its requester's data: a node serves them to anyone only if the receipt
says ``"audit": "public"``, else only to the requester and to auditors its operator issued a
token (``tokens``, by node URL, sent as ``Authorization: Bearer``). A refused public receipt is
``unavailable`` (a fault); a refused private one is ``private``, not a fault, and not audited.
With dishonest share ``f`` of the answers this auditor can read and rate ``p``, a node that
answered ``n`` of them escapes with probability ``(1 - p*f)**n``: over public receipts for
anyone, over all receipts for an auditor the operator authorized.

An auditor also looks for **broken promises** (docs/PROTOCOL.md §15): a promise handed to it
(:meth:`Auditor.watch`: a caller's bundle in promise mode, or the promise's note) is checked in
every round against the node's signed checkpoint. Once the tree covers the promised index, the
entry there either is the promised receipt (kept, forgotten) or is another one: a finding
``broken-promise`` with the evidence (the promise, the checkpoint, the leaf there and its
inclusion proof) that anyone checks offline with no clock. Past the deadline, a tree too small to
hold the index is ``overdue``: a fault, without self-contained evidence (a too-small tree proves
nothing, whoever cosigned it when: PROTOCOL.md §15).
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from verinfer import cid, engine, merkle, modes, note, tensors
from verinfer.engine.nondeterminism import nondeterministic_operators_of
from verinfer.errors import Error, InputError, VerificationError
from verinfer.hub.documents import Manifest
from verinfer.modes.replicated import cross_class_bound, within_tolerance
from verinfer.text.generation import Generation
from verinfer.verify import Bundle, Receipt
from verinfer.verify.evidence import (
    MAX_TENSOR_BYTES,
    broken_promise,
    fraud,
    generation_fraud,
    verify_evidence,
)
from verinfer.verify.promise import Promise, open_promise

_GENERATION_INPUTS = frozenset({"prompt", "sampling"})  # a generation record's (PROTOCOL.md §16)

__all__ = ["Auditor", "Finding", "read_tokens"]


def read_tokens(path: Path) -> dict[str, str]:
    """Auditor tokens by node URL, from a JSON file ``{"<node url>": "<token>"}`` that only
    its owner may read (mode 0600: the tokens open callers' private tensors)."""
    try:
        if path.stat().st_mode & 0o077:
            raise InputError(f"token file {str(path)!r} is readable by others: chmod 600 it")
        parsed = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read token file {str(path)!r}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InputError(f"token file {str(path)!r} is not JSON: {exc}") from exc
    if not isinstance(parsed, dict) or not all(
        isinstance(url, str) and url.startswith(("http://", "https://"))
        and isinstance(token, str) and token
        for url, token in parsed.items()
    ):  # fmt: skip
        raise InputError(
            f'token file {str(path)!r} must be an object {{"<node url>": "<token>", ...}}'
        )
    return {url.rstrip("/"): token for url, token in parsed.items()}


@dataclass(frozen=True)
class Finding:
    """The outcome of auditing one receipt: ``ok``, ``fraud`` (with ``evidence``),
    ``misreported`` (the receipt names another engine than the node runs, or a manifest of
    another model), ``unavailable`` (the node did not serve what its receipt names: for a
    public receipt, refusing this auditor counts), ``private`` (a private receipt whose tensors
    this auditor may not read: not audited, not a fault),
    ``deviation`` (another kernel class, beyond the manifest's tolerance: no self-contained
    evidence) or ``incomparable`` (another kernel class, and no tolerance declared). A text
    generation's receipt is ``fraud`` (with ``generation-fraud`` evidence) at a position where
    its record is false, or (without evidence) if it ended where its parameters forbid. A
    watched promise gives ``broken-promise`` (with ``evidence``), ``overdue`` (past its deadline
    and not logged: a fault, no evidence), or ``ok`` once kept; its ``index`` is the promised
    one."""

    node: str
    index: int
    verdict: str
    detail: str = ""
    evidence: dict[str, Any] | None = None


class Auditor:
    """Audits the nodes ``(url, vkey)`` at ``rate`` (0..1); ``seed`` makes the sample
    reproducible. ``tokens`` maps a node URL to the auditor token its operator issued (or its
    admin token): with one, the node's private receipts are audited too."""

    def __init__(
        self,
        nodes: Iterable[tuple[str, str]],
        rate: float,
        *,
        seed: int | None = None,
        timeout: float = 60.0,
        tokens: Mapping[str, str] | None = None,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"audit rate {rate!r} is not in [0, 1]")
        self.nodes = [(url.rstrip("/"), vkey) for url, vkey in nodes]
        self._tokens = {url.rstrip("/"): token for url, token in (tokens or {}).items()}
        unknown = sorted(set(self._tokens) - {url for url, _ in self.nodes})
        if unknown:  # a token is sent only to the node it was issued for
            raise ValueError(f"tokens for nodes not audited: {', '.join(unknown)}")
        self.rate = rate
        self._random = random.Random(seed)  # noqa: S311 - sampling, not secrecy
        self._sizes: dict[str, int] = {}  # vkey -> log size audited up to
        self._models: dict[str, bytes] = {}
        self._tokenizers: dict[str, Any] = {}  # chat models' tokenizers by CID
        self._runners: dict[str, Any] = {}  # chat models' teacher-forced runners by model CID
        self._randoms: dict[str, list[str]] = {}  # nondeterministic operators by model CID
        self._engines: dict[str, str] = {}  # url -> the engine identity the node advertises
        self._engine = engine.Engine(memory=None)
        self._identity = engine.identity()
        self._http = httpx.Client(timeout=timeout)
        self.audited = 0  # entries judged (private ones this auditor may not read excluded)
        self.private = 0  # sampled private entries this auditor was refused
        self._watched: dict[str, dict[str, Promise]] = {}  # vkey -> promises by index and note
        self._reported: set[tuple[str, str]] = set()  # (promise, verdict) reported already

    def watch(self, promised: Bundle) -> Promise:
        """Look for a broken promise in the rounds to come: ``promised`` is a bundle in promise
        mode by one of the audited nodes (checked now: a forged or foreign promise, or one that
        does not cover the bundle's receipt, is refused with :class:`VerificationError`). Kept
        promises are forgotten; broken and overdue ones are reported once."""
        if not isinstance(promised, Bundle):
            raise VerificationError(
                f"watch a promise's bundle (its receipt, index and path), not a "
                f"{type(promised).__name__}"
            )
        if not promised.promise:
            raise VerificationError("not a promise: the bundle is logged already")
        promise = open_promise(
            promised.promise,
            [vkey for _, vkey in self.nodes],
            receipt=promised.receipt.data,
            index=promised.index,
            path=promised.proof,
        )
        key = f"{promise.index} {promise.signed}"  # one note covers a batch of entries
        self._watched.setdefault(promise.node, {})[key] = promise
        return promise

    @property
    def watching(self) -> int:
        """How many promises are still being watched."""
        return sum(len(held) for held in self._watched.values())

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Auditor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def round(self, on_finding: Callable[[Finding], None] | None = None) -> list[Finding]:
        """Audit what every node logged since the last round; return the findings (not ``ok``
        or ``private`` ones, counted in :attr:`private`, unless ``on_finding`` wants to see
        everything)."""
        findings = []
        for url, vkey in self.nodes:
            for finding in self._audit_node(url, vkey):
                if on_finding is not None:
                    on_finding(finding)
                if finding.verdict not in ("ok", "private"):
                    findings.append(finding)
        return findings

    def _audit_node(self, url: str, vkey: str) -> list[Finding]:
        try:
            signed = self._http.get(f"{url}/v1/log/checkpoint").text
            checkpoint, _ = note.verify_checkpoint(signed, [vkey])
        except (httpx.HTTPError, VerificationError, Error) as exc:
            return [Finding(vkey, -1, "unavailable", f"no signed checkpoint from {url}: {exc}")]
        start = self._sizes.get(vkey, 0)
        self._sizes[vkey] = checkpoint.size
        picked = [i for i in range(start, checkpoint.size) if self._random.random() < self.rate]
        found = self._promises(url, vkey, signed, checkpoint)
        for index in picked:
            try:
                finding = self._audit_entry(url, vkey, signed, checkpoint, index)
            except (httpx.HTTPError, VerificationError, Error) as exc:
                finding = Finding(vkey, index, "unavailable", str(exc))
            except Exception as exc:  # one entry never ends a round
                finding = Finding(vkey, index, "unavailable", f"this entry could not be "
                                  f"audited: {type(exc).__name__}: {exc}")  # fmt: skip
            if finding.verdict == "private":
                self.private += 1
            else:
                self.audited += 1
            found.append(finding)
        return found

    def _promises(
        self, url: str, vkey: str, signed: str, checkpoint: note.Checkpoint
    ) -> list[Finding]:
        """Judge the watched promises of ``vkey`` against its latest ``checkpoint``: kept or
        broken once the tree covers the index; overdue past the deadline before it does. A
        promise is forgotten once kept or broken; an overdue one, or one the node would not
        let this auditor check, is reported once and still watched (another receipt at its
        index later is evidence)."""
        found = []
        for text, promise in list(self._watched.get(vkey, {}).items()):
            try:
                finding = self._promise(url, vkey, signed, checkpoint, promise)
            except (httpx.HTTPError, VerificationError, Error) as exc:
                finding = Finding(vkey, promise.index, "unavailable", f"promise: {exc}")
            if finding is None:
                continue
            if finding.verdict in ("ok", "broken-promise", "misreported"):
                del self._watched[vkey][text]
            elif (text, finding.verdict) in self._reported:
                continue
            self._reported.add((text, finding.verdict))
            found.append(finding)
        return found

    def _promise(
        self, url: str, vkey: str, signed: str, checkpoint: note.Checkpoint, promise: Promise
    ) -> Finding | None:
        index = promise.index
        if promise.log != checkpoint.origin:
            return Finding(vkey, index, "misreported", f"the promise names log {promise.log!r}, "
                           f"the node's log is {checkpoint.origin!r}")  # fmt: skip
        if checkpoint.size > index:  # the tree covers the index: the entry there decides
            data, proof = self._entry(url, checkpoint, index)
            leaf = merkle.leaf_hash(data)
            if leaf == promise.leaf:
                return Finding(vkey, index, "ok", "the promise was kept")
            evidence = broken_promise(promise, signed, leaf, list(proof))
            verdict = verify_evidence(evidence)  # conclusive, and checked before it is filed
            return Finding(vkey, index, "broken-promise", verdict, evidence)
        if time.time() <= promise.deadline:
            return None  # not due yet: watched again next round
        return Finding(vkey, index, "overdue", f"entry {index} was due by {promise.when}; the "
                       f"log holds {checkpoint.size} entries (a fault; no evidence until the "
                       "index holds another receipt)")  # fmt: skip

    def _entry(
        self, url: str, checkpoint: note.Checkpoint, index: int
    ) -> tuple[bytes, tuple[bytes, ...]]:
        """Entry ``index`` and its inclusion proof in ``checkpoint``, checked."""
        path = f"{url}/v1/log/proof/inclusion?index={index}&size={checkpoint.size}"
        try:  # the entry and its proof in one answer; the proof checks the entry
            answer = json.loads(self._get(path))
            data = base64.b64decode(answer["entry"], validate=True)
            proof = tuple(base64.b64decode(h, validate=True) for h in answer["proof"])
        except (ValueError, KeyError, TypeError) as exc:
            raise VerificationError(f"malformed inclusion proof from {url}: {exc}") from exc
        merkle.verify_inclusion(merkle.leaf_hash(data), index, checkpoint.size, list(proof),
                                checkpoint.root)  # fmt: skip
        return data, proof

    def _get(self, url: str) -> bytes:
        response = self._http.get(url)
        if response.status_code != 200:
            raise VerificationError(f"{url} answered {response.status_code}")
        return response.content

    def _tensors(self, url: str, receipt: Receipt, name: str) -> bytes | None:
        """The receipt's ``inputs`` or ``outputs`` as the node serves them; ``None`` if the
        receipt is private and this auditor may not read them (a refused public receipt
        raises: the node withholds what it promised everyone)."""
        headers = {}
        token = self._tokens.get(url)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = self._http.get(f"{url}/v1/tensors/{receipt[name]}", headers=headers)
        if response.status_code == 403 and receipt["audit"] == "private":
            return None
        if response.status_code != 200:
            raise VerificationError(
                f"{url} answered {response.status_code} for the {name} of a "
                f"{receipt['audit']} receipt"
            )
        return response.content

    def _audit_entry(
        self, url: str, vkey: str, signed: str, checkpoint: note.Checkpoint, index: int
    ) -> Finding:
        data, proof = self._entry(url, checkpoint, index)
        receipt = Receipt.from_bytes(data)
        if receipt["node"] != vkey:
            return Finding(vkey, index, "unavailable", "the entry names another node")
        if modes.parse(receipt["mode"], receipt=True).proven:  # its own proof is the check
            return Finding(vkey, index, "incomparable", "a zk receipt: its proof is the check")
        advertised = self._advertised(url)
        if advertised.rsplit("/", 1)[-1] not in engine.KERNEL_CLASSES:
            return Finding(vkey, index, "misreported", f"the node claims an unknown engine "
                           f"{advertised!r}")  # fmt: skip
        if receipt["engine"] != advertised:
            return Finding(vkey, index, "misreported", f"the receipt names engine "
                           f"{receipt['engine']}, the node runs {advertised}")  # fmt: skip
        manifest_data, manifest = None, None
        if receipt["manifest"] is not None:
            manifest_data = self._get(f"{url}/v1/manifests/{receipt['manifest']}")
            manifest = Manifest.from_bytes(manifest_data, receipt["manifest"])
            if manifest.model != receipt["model"]:
                return Finding(vkey, index, "misreported", "the receipt's manifest is of "
                               "another model")  # fmt: skip
        model = self._model(url, receipt["model"])  # judged nondeterministic before any tensor
        drawn = self._nondeterministic(receipt["model"], model)  # from the bytes, not the manifest
        if drawn:
            return Finding(vkey, index, "incomparable", "the model has operators whose output "
                           f"is not a function of their inputs ({', '.join(drawn)})")  # fmt: skip
        chat = manifest is not None and (manifest.text or {}).get("kind") == "chat"
        fetched = self._audit_chat(url, Bundle(receipt, index, proof, signed), manifest_data or
                                   b"", manifest, model) if chat and manifest else None  # fmt: skip
        if isinstance(fetched, Finding):
            return fetched
        tolerance, bound = None, 0.0
        if receipt["engine"] != self._identity:  # another kernel class: only within a bound
            if manifest is not None:
                tolerance = manifest.body["determinism"].get("tolerance")
            if tolerance is None:
                return Finding(vkey, index, "incomparable", f"ran on {receipt['engine']}, and "
                               "the model declares no tolerance across classes")  # fmt: skip
            try:  # a claimed class buys the calibrated bound at most, and only where measured
                bound = cross_class_bound([receipt["engine"], self._identity], tolerance)
            except VerificationError as exc:
                return Finding(vkey, index, "incomparable", f"ran on {receipt['engine']}: {exc}")
        fetched = fetched or self._served(url, vkey, index, receipt, "inputs")
        if isinstance(fetched, Finding):
            return fetched
        inputs_npz, inputs = fetched
        outputs = self._engine.run(receipt["model"], lambda: model, inputs)
        if tensors.map_digest(outputs) == receipt["outputs"]:
            return Finding(vkey, index, "ok")
        if tolerance is not None:
            served = self._served(url, vkey, index, receipt, "outputs")
            if isinstance(served, Finding):
                return served
            claimed = served[1]
            agrees, found = within_tolerance(outputs, claimed, bound)
            if agrees and found is not None:
                return Finding(vkey, index, "ok", f"within the tolerance ({found:.3g})")
            return Finding(vkey, index, "deviation", "outputs beyond the declared tolerance "
                           f"across classes ({receipt['engine']} vs {self._identity})")  # fmt: skip
        if manifest_data is None or receipt["manifest"] is None:
            return Finding(vkey, index, "deviation", "outputs differ, but the receipt names no "
                           "manifest to judge by")  # fmt: skip
        if manifest is not None and manifest.body["determinism"].get("bit_identical") is not True:
            return Finding(vkey, index, "incomparable", "outputs differ, but the manifest does "
                           "not record the model as bit-reproducible")  # fmt: skip
        bundle = Bundle(receipt, index, proof, signed)
        evidence = fraud(bundle, manifest_data, inputs_npz, tensors.encode_binary(outputs),
                         self._identity)  # fmt: skip
        return Finding(vkey, index, "fraud", f"model gives {tensors.map_digest(outputs)}, the "
                       f"receipt says {receipt['outputs']}", evidence)  # fmt: skip

    def _served(
        self, url: str, vkey: str, index: int, receipt: Receipt, name: str
    ) -> tuple[bytes, dict[str, Any]] | Finding:
        """The receipt's ``inputs`` or ``outputs`` as served (``.npz`` and decoded), or the
        finding if they are private to this auditor or not the receipt's."""
        served = self._tensors(url, receipt, name)
        if served is None:
            return self._private(url, vkey, index)
        decoded = tensors.decode_binary(served, max_bytes=MAX_TENSOR_BYTES)
        if tensors.map_digest(decoded) != receipt[name]:
            return Finding(vkey, index, "unavailable", f"served {name} that are not the receipt's")
        return served, decoded

    def _audit_chat(
        self, url: str, bundle: Bundle, manifest_data: bytes, manifest: Manifest, model: bytes
    ) -> tuple[bytes, dict[str, Any]] | Finding:
        """A chat model's receipt: a generation's is judged here; raw inference on its graph
        gets its inputs back, to be judged like any other."""
        fetched = self._served(url, bundle.receipt["node"], bundle.index, bundle.receipt, "inputs")
        if isinstance(fetched, Finding) or set(fetched[1]) != _GENERATION_INPUTS:
            return fetched
        return self._audit_generation(url, bundle, manifest_data, manifest, model, *fetched)

    def _audit_generation(  # noqa: PLR0917 - what the entry's audit already holds
        self,
        url: str,
        bundle: Bundle,
        manifest_data: bytes,
        manifest: Manifest,
        model: bytes,
        inputs_npz: bytes,
        inputs: dict[str, Any],
    ) -> Finding:
        """A text generation's receipt (PROTOCOL.md §16): rebuild the record from the archived
        tensors, run steps G1-G4 and the teacher-forced pass (within the tolerance, on any
        kernel class); a position where the record is false is fraud with evidence."""
        from verinfer.modes.generation import (  # noqa: PLC0415 - the text extra
            commitment_fault,
            deviations,
            model_runner,
            verify_generation,
        )
        from verinfer.text.chat import Tokenizer  # noqa: PLC0415

        receipt = bundle.receipt
        vkey, index = receipt["node"], bundle.index
        served = self._served(url, vkey, index, receipt, "outputs")
        if isinstance(served, Finding):
            return served
        outputs_npz, outputs = served
        try:
            generation = Generation.from_tensors(inputs, outputs)
        except VerificationError as exc:
            return Finding(vkey, index, "misreported", f"its signed record is no generation: "
                           f"{exc}")  # fmt: skip
        text = manifest.text or {}
        tokenizer = self._tokenizers.get(text["tokenizer"])
        if tokenizer is None:
            blob = self._get(f"{url}/v1/blobs/{text['tokenizer']}")
            cid.verify(text["tokenizer"], blob)
            tokenizer = self._tokenizers[text["tokenizer"]] = Tokenizer(blob)
        offline = None  # (G1-G4) the record by itself, with the tokenizer for where it ended
        try:
            verify_generation(bundle, generation, [vkey],
                              ends=tokenizer.ends(text["special_tokens"]),
                              detokenize=tokenizer.decode, manifest=manifest)  # fmt: skip
        except VerificationError as exc:
            offline = str(exc)
        runner = self._runners.get(receipt["model"])
        if runner is None:  # the graph's cache shapes, and its operators judged, once a model
            runner = self._runners[receipt["model"]] = model_runner(
                model, receipt["model"], runner=self._engine
            )
        run, cache = runner
        count = len(generation.tokens)  # a record false by itself needs no model (G1, G2)
        faults = [p for p in range(count) if commitment_fault(generation, p) is not None]
        ratios = [] if faults else deviations(generation, run, cache)  # (6) the pass
        beyond = [p for p, ratio in enumerate(ratios) if ratio > 1]
        if faults or beyond:
            position = (faults or beyond)[0]
            why = offline or (f"re-executed, position {position} is {ratios[position]:.3g} "
                              "times the tolerance away from its committed logits")  # fmt: skip
            evidence = generation_fraud(bundle, manifest_data, inputs_npz, outputs_npz, position)
            return Finding(vkey, index, "fraud", why, evidence)
        if offline is not None:  # where it ended (G3): no self-contained evidence kind yet
            return Finding(vkey, index, "fraud", offline)
        worst = max(ratios, default=0.0)
        return Finding(vkey, index, "ok", f"generation within the tolerance ({worst:.3f} of it)")

    def _private(self, url: str, vkey: str, index: int) -> Finding:
        why = "refused this auditor's token" if url in self._tokens else "no auditor token"
        return Finding(vkey, index, "private", f"a private receipt; its tensors are its "
                       f"requester's ({why})")  # fmt: skip

    def _advertised(self, url: str) -> str:
        """The engine identity the node advertises (``GET /v1/node``), asked once."""
        known = self._engines.get(url)
        if known is None:
            known = str(json.loads(self._get(f"{url}/v1/node")).get("engine"))
            self._engines[url] = known
        return known

    def _nondeterministic(self, model: str, data: bytes) -> list[str]:
        """The model's nondeterministic operators (static analysis, once per model)."""
        known = self._randoms.get(model)
        if known is None:
            try:
                known = self._randoms[model] = nondeterministic_operators_of(data)
            except ValueError as exc:
                raise VerificationError(f"model {model!r}: {exc}") from exc
        return known

    def _model(self, url: str, model: str) -> bytes:
        known = self._models.get(model)
        if known is None:
            known = self._get(f"{url}/v1/blobs/{model}")
            cid.verify(model, known)
            self._models[model] = known
        return known
