"""Optimistic mode: a challenged answer is settled by bisection down to one operator.

An ``optimistic:S`` receipt may be challenged for S seconds after its time. A *dispute* names the
receipt's bundle, the challenger, the referee, when it opened and each round's deadline; its ID is
the SHA-256 of that header's canonical JSON (docs/PROTOCOL.md §13):

1. *Openings*: the defendant (the node that signed the receipt) and the challenger each sign,
   over the dispute's ID, their engine identity, their roots of states 0 and N
   (:mod:`verinfer.engine.trace`) with the leaves of state N, and their *trace commitment*: the
   Merkle root over all their N+1 state roots. Both must commit state 0 to the receipt's inputs;
   the defendant's state N must be the receipt's outputs; the challenger's must differ.
2. *Rounds*: the referee asks both for their root of the state at the midpoint of the interval
   where they last agreed (initially 0) and disagreed (initially N), each with its inclusion proof
   in the trace the side signed: ⌈log2 N⌉ rounds, one signature per side in all. On one engine
   identity two states agree when their roots are equal; across identities (AVX-512 and AVX2
   kernels round differently) the referee compares the two states' tensors, each within
   ``STATE_TOLERANCE`` of its largest magnitude.
3. *Judgement*: at the step k where the defendant's agreed state k-1 turns into disputed state k,
   the defendant reveals both states' computed leaves and the tensors step k reads and writes.
   The referee checks them against the committed roots, re-executes step k alone and compares
   the defendant's outputs with its own within :func:`verinfer.engine.trace.bound`. Within: the
   challenger loses; otherwise, or on anything that does not check, the defendant does.

A side that does not answer within the deadline loses. The *verdict* is signed by the referee and
holds the header, every message and the revealed tensors: :func:`verify_verdict` checks it offline
with the model's bytes (running one operator). What rests on the referee's word alone: agreement
across engine identities, and failures to answer (missed deadlines).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import concurrent.futures
import functools
import hashlib
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from verinfer import canonical, cid, merkle, note, tensors
from verinfer.engine.nondeterminism import nondeterministic_operators
from verinfer.engine.trace import Leaf, Steps, Trace, bound, run_step
from verinfer.errors import InputError, VerificationError
from verinfer.verify.bundle import Bundle, window_of
from verinfer.verify.verifier import kernel_class_of, verify_bundle

__all__ = [
    "DISPUTE_TYPE",
    "MESSAGE_TYPE",
    "STATE_TOLERANCE",
    "VERDICT_TYPE",
    "Dispute",
    "LocalParty",
    "Party",
    "Reveal",
    "Verdict",
    "decode_npz",
    "encode_npz",
    "open_message",
    "open_state",
    "seconds_of",
    "settle",
    "verify_verdict",
]

DISPUTE_TYPE = "verinfer.dispute/v1"
MESSAGE_TYPE = "verinfer.dispute.message/v1"
VERDICT_TYPE = "verinfer.dispute.verdict/v1"
STATE_TOLERANCE = 1e-4  # across engine identities: |a - b| <= tol * max|b| for every tensor
MAX_DEADLINE = 3600.0
MIN_DEADLINE = 1.0  # seconds per round: a side must have time to answer over a network
OPENING_FACTOR, MIN_OPENING = 10, 60.0  # openings trace the model: 10 rounds' time, >= 60 s
_MAX_VERDICT_BYTES = 512 << 20


def _time(seconds: float) -> str:
    whole = int(seconds)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{stamp}.{int((seconds - whole) * 1000):03d}Z"


def seconds_of(stamp: str) -> float:
    """Seconds since the epoch of a ``YYYY-MM-DDTHH:MM:SS.mmmZ`` time (ValueError if not)."""
    if len(stamp) != 24 or stamp[19] != "." or stamp[23] != "Z":
        raise ValueError(f"time {stamp!r} is not YYYY-MM-DDTHH:MM:SS.mmmZ")
    whole = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    return float(whole) + int(stamp[20:23]) / 1000


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hex(root: bytes) -> str:
    return root.hex()


def decode_npz(text: object, what: str, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Tensors from base64 ``.npz`` (``""`` for none); :class:`InputError` naming ``what``."""
    if text == "":
        return {}
    try:
        raw = base64.b64decode(str(text), validate=True)
        return tensors.decode_binary(raw, max_bytes=max_bytes)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"malformed {what}: {exc}") from exc


def _npz(data: object, what: str) -> dict[str, np.ndarray]:
    try:
        return decode_npz(data, what, max_bytes=_MAX_VERDICT_BYTES)
    except InputError as exc:
        raise VerificationError(str(exc)) from exc


class _Base64(str):
    """A string this module base64-encoded itself (so JSON has nothing to escape in it)."""

    __slots__ = ()


def encode_npz(arrays: Mapping[str, np.ndarray]) -> str:
    """Tensors as base64 ``.npz``, how disputes carry them in JSON (``""`` for none)."""
    return _Base64(base64.b64encode(tensors.encode_binary(arrays)).decode() if arrays else "")


@dataclass(frozen=True)
class Dispute:
    """A challenge of one optimistic receipt: ``header`` is what every message is signed over."""

    header: dict[str, Any]

    @functools.cached_property
    def id(self) -> str:
        return _sha256(canonical.dumps(self.header))

    @functools.cached_property
    def bundle(self) -> Bundle:
        return Bundle.from_json(self.header["bundle"])

    @property
    def receipt(self) -> dict[str, Any]:
        return self.bundle.receipt.body

    @property
    def defendant(self) -> str:
        return str(self.header["defendant"])

    @property
    def challenger(self) -> str:
        return str(self.header["challenger"])

    @property
    def deadline(self) -> float:
        """Seconds each side has to answer a round."""
        return int(self.header["deadline_ms"]) / 1000

    @property
    def opening_deadline(self) -> float:
        """Seconds each side has to open: it traces the whole model first."""
        return max(OPENING_FACTOR * self.deadline, MIN_OPENING)

    @classmethod
    def create(
        cls,
        bundle: Bundle,
        *,
        challenger: str,
        referee: str,
        deadline: float = 30.0,
        opened: float | None = None,
    ) -> Dispute:
        """Open a dispute of ``bundle``'s receipt (checked: see :meth:`from_header`)."""
        header = {
            "type": DISPUTE_TYPE,
            "bundle": bundle.to_dict(),
            "defendant": bundle.receipt["node"],
            "challenger": challenger,
            "referee": referee,
            "opened": _time(time.time() if opened is None else opened),
            "deadline_ms": round(deadline * 1000),
        }
        return cls.from_header(header)

    @classmethod
    def from_header(cls, header: object) -> Dispute:
        """A dispute from its header: a well-formed bundle of an optimistic receipt, signed and
        logged by the defendant, challenged within its window by a distinct key."""
        if not isinstance(header, dict) or header.get("type") != DISPUTE_TYPE:
            raise VerificationError(f"malformed dispute: not a {DISPUTE_TYPE} header")
        fields = {"type", "bundle", "defendant", "challenger", "referee", "opened", "deadline_ms"}
        if set(header) != fields:
            raise VerificationError(f"malformed dispute: fields {sorted(header)}")
        bundle = Bundle.from_json(header["bundle"])
        receipt = bundle.receipt
        try:
            for name in ("challenger", "referee"):
                note.VerifierKey.parse(header[name])
            window = window_of(receipt["mode"])
            opened = seconds_of(str(header["opened"]))
            answered = seconds_of(str(receipt["time"]))
        except (InputError, ValueError, TypeError) as exc:
            raise VerificationError(f"malformed dispute: {exc}") from exc
        if window is None:
            raise VerificationError(
                f"the receipt's mode is {receipt['mode']!r}: only optimistic answers are disputed"
            )
        if header["defendant"] != receipt["node"]:
            raise VerificationError("the dispute's defendant is not the node that signed it")
        if header["challenger"] == receipt["node"]:
            raise VerificationError("a node cannot challenge its own receipt")
        if header["referee"] in (header["challenger"], receipt["node"]):
            raise VerificationError("the referee cannot be one of the sides")
        deadline = header["deadline_ms"]
        if (
            not isinstance(deadline, int)
            or isinstance(deadline, bool)
            or not MIN_DEADLINE * 1000 <= deadline <= MAX_DEADLINE * 1000
        ):
            raise VerificationError(f"malformed dispute: deadline {deadline!r} ms")
        verify_bundle(bundle, [receipt["node"]])  # logged by the defendant
        if opened > answered + window:
            raise VerificationError(
                f"the challenge window of {window} s after {receipt['time']} has closed "
                f"(challenged at {header['opened']})"
            )
        return cls(dict(header))


def _message(body: dict[str, Any], signer: note.Signer) -> str:
    return note.sign_json({"type": MESSAGE_TYPE, "party": signer.vkey, **body}, signer).decode()


def open_message(
    data: object, dispute: Dispute, party: str, kind: str, step: int
) -> dict[str, Any]:
    """A party's signed message, checked: signed by ``party``, for this dispute, of this kind
    and step (so a message replayed from another dispute or round, or re-signed, is refused)."""
    if not isinstance(data, str):
        raise VerificationError(f"malformed {kind} message: {type(data).__name__}")
    body, signer = note.open_json(data.encode(), f"{kind} message", MESSAGE_TYPE, "party")
    if signer != party:
        raise VerificationError(f"the {kind} message is signed by {signer}, not {party}")
    if body.get("dispute") != dispute.id:
        raise VerificationError(f"the {kind} message belongs to another dispute")
    if body.get("kind") != kind or body.get("step") != step:
        raise VerificationError(
            f"expected a {kind} message for step {step}, got {body.get('kind')!r} for step "
            f"{body.get('step')!r} (replayed?)"
        )
    return body


def _root(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
        raise VerificationError(f"malformed message: {name} {value!r}")
    return value


def _leaves(value: object, what: str) -> list[Leaf]:
    if not isinstance(value, list):
        raise VerificationError(f"malformed {what}: not a list of leaves")
    out: list[Leaf] = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2  # (name, digest)
            or not all(isinstance(part, str) for part in item)
        ):
            raise VerificationError(f"malformed {what}: leaf {item!r}")
        out.append((item[0], item[1]))
    return out


# ---------------------------------------------------------------------------------------------
# Parties


@dataclass(frozen=True)
class Reveal:
    """A state's leaves and some of its tensors (those a step reads or writes); ``encoded``:
    the tensors' base64 ``.npz`` as they came over the wire, if they did."""

    leaves: list[Leaf]
    tensors: dict[str, np.ndarray]
    encoded: str | None = None

    def npz(self) -> str:
        """The tensors as base64 ``.npz`` (the received bytes when there are some)."""
        return _Base64(self.encoded) if self.encoded is not None else encode_npz(self.tensors)


class Party(Protocol):
    """What the referee asks of each side (in process, or over HTTP)."""

    vkey: str

    def opening(self, dispute: Dispute, inputs: Mapping[str, np.ndarray]) -> str: ...

    def state(self, dispute: Dispute, step: int) -> dict[str, Any]: ...

    def reveal(self, dispute: Dispute, step: int, names: Sequence[str]) -> Reveal: ...


class LocalParty:
    """A side of disputes that computes its trace here, once per dispute, when first asked.

    ``model(cid)`` gives the model's bytes; ``answered(dispute, inputs)`` the outputs this side
    stands by (a defendant: what it answered; a challenger: what it computes), or ``None`` to
    stand by the trace's own. ``engine`` is the identity its traces run on.
    """

    def __init__(
        self,
        signer: note.Signer,
        model: Callable[[str], bytes],
        answered: Callable[[Dispute, Mapping[str, np.ndarray]], Mapping[str, np.ndarray] | None],
        *,
        engine: str,
        threads: int = 1,
        keep: int = 8,
    ) -> None:
        self.signer = signer
        self.vkey = signer.vkey
        self.engine = engine
        self._model = model
        self._answered = answered
        self._threads = threads
        self._keep = keep
        self._steps: dict[str, Steps] = {}
        self._traces: dict[str, Trace] = {}

    def steps(self, model: str) -> Steps:
        found = self._steps.get(model)
        if found is None:
            found = Steps(self._model(model))
            self._steps = {model: found}  # one model's steps at a time: they can be large
        return found

    def trace(self, dispute: Dispute, inputs: Mapping[str, np.ndarray] | None = None) -> Trace:
        found = self._traces.get(dispute.id)
        if found is not None:
            return found
        if inputs is None:
            raise InputError(f"dispute {dispute.id} was not opened with this party")
        if tensors.map_digest(inputs) != dispute.receipt["inputs"]:
            raise InputError("these inputs are not the receipt's")
        steps = self.steps(dispute.receipt["model"])
        found = steps.trace(inputs, answered=self._answered(dispute, inputs), threads=self._threads)
        while len(self._traces) >= self._keep:
            self._traces.pop(next(iter(self._traces)))
        self._traces[dispute.id] = found
        return found

    def opening(self, dispute: Dispute, inputs: Mapping[str, np.ndarray]) -> str:
        trace = self.trace(dispute, inputs)
        count = trace.steps.count
        body = {
            "dispute": dispute.id,
            "kind": "opening",
            "step": 0,
            "engine": self.engine,
            "steps": count,
            "initial": _hex(trace.root(0)),
            "final": _hex(trace.root(count)),
            "trace": _hex(merkle.root(trace.commitment())),
            "outputs": [list(leaf) for leaf in trace.leaves(count)],
        }
        return _message(body, self.signer)

    def state(self, dispute: Dispute, step: int) -> dict[str, Any]:
        trace = self.trace(dispute)
        proof = merkle.inclusion_proof(step, trace.commitment())
        return {"step": step, "state": _hex(trace.root(step)), "proof": [_hex(h) for h in proof]}

    def reveal(self, dispute: Dispute, step: int, names: Sequence[str]) -> Reveal:
        trace = self.trace(dispute)
        computed = set(trace.steps.computed(step))
        unknown = [name for name in names if name not in computed]
        if unknown:
            raise InputError(f"{unknown[0]!r} is not a computed tensor of state {step}")
        return Reveal(trace.computed(step), {name: trace.value(name) for name in names})


def open_state(answer: object, trace: str, count: int, step: int) -> str:
    """A side's root of state ``step``, checked against the trace root its opening signed;
    :class:`VerificationError` otherwise (a root it did not commit to, or another step's)."""
    if not isinstance(answer, dict) or answer.get("step") != step:
        raise VerificationError(f"expected the state of step {step}, got {answer!r:.80}")
    root = _root(answer, "state")
    proof = answer.get("proof")
    if not isinstance(proof, list) or not all(isinstance(h, str) for h in proof):
        raise VerificationError("malformed state: proof")
    try:
        hashes = [bytes.fromhex(h) for h in proof]
        leaf = merkle.leaf_hash(bytes.fromhex(root))
        merkle.verify_inclusion(leaf, step, count + 1, hashes, bytes.fromhex(trace))
    except ValueError as exc:
        raise VerificationError(f"malformed state: {exc}") from exc
    except VerificationError as exc:
        raise VerificationError(f"its state {step} is not in the trace it signed: {exc}") from exc
    return root


# ---------------------------------------------------------------------------------------------
# The referee


class _Lost(Exception):  # noqa: N818 - control flow inside settle, never escapes
    def __init__(self, role: str, reason: str) -> None:
        super().__init__(reason)
        self.role = role
        self.reason = reason


@dataclass(frozen=True)
class Verdict:
    """A referee's verdict: ``data`` is the canonical JSON document ``{"signature": note,
    "verdict": body}``, where ``note`` is the referee's signed note over the SHA-256 of the
    body's canonical JSON with its tensor blobs (``inputs``, ``judgement.read`` and
    ``judgement.written``) emptied: those are bound by their digests instead (the receipt's
    inputs digest; the leaves the defendant signed), so nobody hashes megabytes twice."""

    data: bytes
    body: dict[str, Any]

    @classmethod
    def create(cls, body: dict[str, Any], signer: note.Signer) -> Verdict:
        seal = {"type": VERDICT_TYPE, "referee": signer.vkey, "verdict": _seal(body)}
        signature = note.sign_json(seal, signer).decode()
        encoded = _dumps(body)
        data = b'{"signature":' + canonical.dumps(signature) + b',"verdict":' + encoded + b"}"
        return cls(data, body)

    @classmethod
    def from_bytes(cls, data: bytes | str) -> tuple[Verdict, str]:
        """A verdict whose referee signature checks, and the referee's vkey."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        if len(raw) > _MAX_VERDICT_BYTES:
            raise VerificationError(f"a verdict of {len(raw)} bytes is too large")
        try:
            document = canonical.loads(raw) if raw[:1] == b"{" else None
        except (InputError, VerificationError) as exc:
            raise VerificationError(f"malformed verdict: {exc}") from exc
        if not isinstance(document, dict) or set(document) != {"verdict", "signature"}:
            raise VerificationError('malformed verdict: want {"verdict": ..., "signature": ...}')
        body, signature = document["verdict"], document["signature"]
        if not isinstance(body, dict) or not isinstance(signature, str):
            raise VerificationError("malformed verdict: verdict or signature")
        seal, referee = note.open_json(signature.encode(), "verdict", VERDICT_TYPE, "referee")
        if seal.get("verdict") != _seal(body):
            raise VerificationError("the verdict's body is not the one its referee signed")
        if body.get("referee") != referee:
            raise VerificationError("the verdict's body names another referee than its signer")
        return cls(raw, body), referee

    @property
    def winner(self) -> str:
        return str(self.body["winner"])

    @property
    def loser(self) -> str:
        return str(self.body["loser"])

    @property
    def reason(self) -> str:
        return str(self.body["reason"])

    @property
    def cid(self) -> str:
        return cid.compute(self.data)


def _dumps(body: dict[str, Any]) -> bytes:
    """``canonical.dumps(body)``, with its megabytes of base64 (tensors) spliced in instead of
    escaped character by character: base64 has nothing to escape, so the bytes are the same."""
    blobs: dict[bytes, str] = {}

    def stand_in(value: object) -> object:
        if not isinstance(value, _Base64):  # only what _b64 made here is known to be base64
            return value
        marker = f"\x00{secrets.token_hex(16)}"  # unguessable: no party can send it
        blobs[canonical.dumps(marker)] = value
        return marker

    encoded = canonical.dumps(_blobs(body, stand_in))
    for marker, value in blobs.items():
        encoded = encoded.replace(marker, b'"' + value.encode() + b'"', 1)
    return encoded


def _blobs(body: dict[str, Any], change: Callable[[object], object]) -> dict[str, Any]:
    """The body with each tensor blob replaced by ``change(blob)``."""
    judgement = body.get("judgement")
    light = {**body, "inputs": change(body.get("inputs"))}
    if isinstance(judgement, dict):
        light["judgement"] = {**judgement, **{key: change(judgement.get(key))
                                              for key in ("read", "written")}}  # fmt: skip
    return light


def _seal(body: dict[str, Any]) -> str:
    """What the referee signs: the body's canonical JSON, tensor blobs emptied."""
    return _sha256(canonical.dumps(_blobs(body, lambda _: "")))


def _non_initializers(steps: Steps, names: Sequence[str]) -> list[str]:
    """The computed tensors among ``names``, each once (``Mul(x, x)`` reads ``x`` twice)."""
    return [name for name in dict.fromkeys(names) if name not in steps.initializers]


def _judge(
    steps: Steps, k: int, before: Reveal, after: Reveal, roots: tuple[str, str]
) -> tuple[bool, str, dict[str, Any]]:
    """Whether the defendant's step k holds, why, and the judgement's record."""
    step = steps.step(k)
    record: dict[str, Any] = {
        "step": k,
        "op": step.op,
        "before": [list(leaf) for leaf in before.leaves],
        "after": [list(leaf) for leaf in after.leaves],
        "read": before.npz(),
        "written": after.npz(),
    }
    digests_before = dict(before.leaves)
    for index, revealed, root in ((k - 1, before, roots[0]), (k, after, roots[1])):
        if [name for name, _ in revealed.leaves] != steps.computed(index):
            return False, f"its state {index} does not hold the live tensors", record
        if _state_root(steps, index, revealed.leaves) != root:
            return False, f"its revealed state {index} does not match its signed root", record
    written = set(step.outputs)
    for name, digest in after.leaves:
        if name not in written and digests_before.get(name) != digest:
            return False, f"its state {k} changes {name!r}, which step {k} does not write", record
    reads = _non_initializers(steps, step.inputs)
    digests_after = dict(after.leaves)
    for name, shown, digests in [
        *((n, before.tensors, digests_before) for n in reads),
        *((n, after.tensors, digests_after) for n, _ in after.leaves if n in written),
    ]:
        if name not in shown or tensors.digest(shown[name]) != digests[name]:
            return False, f"the tensor {name!r} it revealed is not the one its state names", record
    try:
        reference = run_step(steps, k, {name: before.tensors[name] for name in reads})
    except InputError as exc:
        return False, str(exc), record
    shapes = {name: tuple(before.tensors[name].shape) for name in reads}
    shapes.update({name: tuple(steps.initializers[name].dims) for name in step.inputs
                   if name in steps.initializers})  # fmt: skip
    worst, limit = 0.0, 0.0

    def constant(name: str) -> np.ndarray | None:
        return steps.initializer(name) if name in steps.initializers else None

    for name, _ in after.leaves:
        if name not in written:
            continue
        claimed, correct = after.tensors[name], reference[name]
        if claimed.dtype != correct.dtype or claimed.shape != correct.shape:
            return False, f"step {k} ({step.op}) gives {name!r} another dtype or shape", record
        allowed = bound(step, shapes, correct, constant)
        deviation = _deviation(claimed, correct)
        if deviation > allowed:
            record.update(deviation=repr(deviation), bound=repr(allowed), tensor=name)
            return (
                False,
                f"step {k} ({step.op}) gives {name!r} off by {deviation:.3g}, beyond the "
                f"bound {allowed:.3g}",
                record,
            )
        if allowed and deviation / allowed >= worst / max(limit, 1e-300):
            worst, limit = deviation, allowed
    record.update(deviation=repr(worst), bound=repr(limit))
    return True, f"step {k} ({step.op}) re-executed: within the bound", record


def _zero_signs_differ(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether a zero of one sign stands where the other tensor has the other sign's zero."""
    zeros = (x == 0) & (y == 0)
    return bool((np.signbit(x) != np.signbit(y))[zeros].any())


def _deviation(claimed: np.ndarray, correct: np.ndarray) -> float:
    """The largest absolute difference (NaN where the referee has NaN counts as equal; NaN or
    infinity against a number as infinitely far; any difference of exact dtypes too)."""
    if correct.dtype.kind == "f" and _zero_signs_differ(claimed, correct):
        return math.inf  # -0.0 for 0.0 is no rounding: 1/x turns it into -inf for inf
    if np.array_equal(claimed, correct, equal_nan=correct.dtype.kind == "f"):
        return 0.0
    if correct.dtype.kind != "f":
        return math.inf
    gap = np.abs(claimed - correct)  # in the tensor's own dtype: its rounding is far below a bound
    undefined = np.isnan(gap)
    if undefined.any():
        if (np.isnan(claimed) != np.isnan(correct)).any() or (claimed != correct)[
            undefined & ~np.isnan(correct)
        ].any():
            return math.inf
        gap = np.where(undefined, 0, gap)
    return float(np.max(gap))


def _agree_within(a: Reveal, b: Reveal) -> bool:
    for (name, left), (_, right) in zip(a.leaves, b.leaves, strict=True):  # names: checked
        if left == right:
            continue
        x, y = a.tensors[name], b.tensors[name]
        if x.dtype != y.dtype or x.shape != y.shape or x.dtype.kind != "f":
            return False
        if _zero_signs_differ(x, y):
            return False
        finite = np.isfinite(y)
        if not np.array_equal(finite, np.isfinite(x)):  # infinities and NaNs where the other has
            return False
        if not np.array_equal(x[~finite], y[~finite], equal_nan=True):  # ...the same ones
            return False
        scale = float(np.max(np.abs(y[finite]), initial=0.0))
        gap = np.abs(x[finite].astype(np.float64) - y[finite])
        if not np.all(gap <= STATE_TOLERANCE * scale):
            return False
    return True


def _state_root(steps: Steps, index: int, leaves: Sequence[Leaf]) -> str | None:
    """The root of a revealed state (its computed leaves), ``None`` if they are malformed."""
    try:
        return _hex(steps.root(index, dict(leaves)))
    except InputError:
        return None


def _checked_reveal(steps: Steps, index: int, reveal: Reveal, root: str) -> Reveal:
    names = steps.computed(index)
    what = f"state {index}"
    if [name for name, _ in reveal.leaves] != names:
        raise VerificationError(f"its {what} does not hold the live tensors")
    if _state_root(steps, index, reveal.leaves) != root:
        raise VerificationError(f"its {what} does not match its signed root")
    digests = dict(reveal.leaves)
    for name in names:
        if name not in reveal.tensors or tensors.digest(reveal.tensors[name]) != digests.get(name):
            raise VerificationError(f"the tensor {name!r} of its {what} is not the one it names")
    return reveal


Ask = Callable[..., dict[str, Any]]  # (calls by role, opening=False) -> answers by role


def _calls(
    parties: Mapping[str, Party], call: Callable[[Party], Any]
) -> dict[str, Callable[[], Any]]:
    return {role: functools.partial(call, party) for role, party in parties.items()}


def settle(
    dispute: Dispute,
    inputs: Mapping[str, np.ndarray],
    model: bytes,
    *,
    defendant: Party,
    challenger: Party,
    signer: note.Signer,
    steps: Steps | None = None,
    encoded_inputs: str | None = None,
) -> Verdict:
    """Play the game between ``defendant`` and ``challenger`` as the referee ``signer`` and
    return the signed verdict. ``steps`` may be given from a cache (it is the model's);
    ``encoded_inputs``: the inputs' base64 ``.npz`` as received, if they were (it must decode
    to ``inputs``), kept in the verdict as is."""
    if signer.vkey != dispute.header["referee"]:
        raise InputError("the dispute names another referee")
    if defendant.vkey != dispute.defendant or challenger.vkey != dispute.challenger:
        raise InputError("the parties' keys are not the dispute's defendant and challenger")
    steps, digests = _receipts(dispute, inputs, model, steps)
    parties = {"defendant": defendant, "challenger": challenger}
    record: dict[str, Any] = {"openings": {}, "rounds": [], "judgement": None}
    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="verinfer-referee")

    def ask(calls: Mapping[str, Callable[[], Any]], opening: bool = False) -> dict[str, Any]:
        futures = {role: pool.submit(call) for role, call in calls.items()}
        answers: dict[str, Any] = {}
        failures: dict[str, str] = {}
        limit = dispute.opening_deadline if opening else dispute.deadline
        ends = time.monotonic() + limit
        for role, future in futures.items():
            try:
                answers[role] = future.result(timeout=max(0.0, ends - time.monotonic()))
            except concurrent.futures.TimeoutError:
                failures[role] = f"no answer within the {limit:g} s deadline"
            except Exception as exc:  # any failure to answer loses the game
                failures[role] = f"could not answer: {exc}"
        if failures:  # both failed: the challenger, who must pursue its challenge, loses
            role = "challenger" if "challenger" in failures else "defendant"
            raise _Lost(role, failures[role])
        return answers

    def agree_across(mid: int, roots: tuple[str, str]) -> bool:
        names = steps.computed(mid)
        reveals = ask(_calls(parties, lambda party: party.reveal(dispute, mid, names)))
        checked = []
        for role, root in zip(("defendant", "challenger"), roots, strict=True):
            try:
                checked.append(_checked_reveal(steps, mid, reveals[role], root))
            except VerificationError as exc:
                raise _Lost(role, str(exc)) from exc
        return _agree_within(checked[0], checked[1])

    try:
        game = _Game(dispute, inputs, digests, steps, parties, ask, agree_across, record)
        winner, loser, reason = game.play()
    except _Lost as lost:
        winner, loser, reason = _outcome(lost)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    body = {
        "type": VERDICT_TYPE,
        "referee": signer.vkey,
        "dispute": dispute.header,
        "inputs": _Base64(encoded_inputs) if encoded_inputs else encode_npz(inputs),
        "steps": steps.count,
        **record,
        "winner": winner,
        "loser": loser,
        "reason": reason,
        "time": _time(time.time()),
    }
    return Verdict.create(body, signer)


def _receipts(
    dispute: Dispute, inputs: Mapping[str, np.ndarray], model: bytes, steps: Steps | None
) -> tuple[Steps, dict[str, str]]:
    """The model's steps and the inputs' digests, both checked to be the receipt's; the model
    and the inputs are hashed once each (:class:`InputError` if they are not the receipt's)."""
    receipt = dispute.receipt
    if steps is None:  # checked before parsing: other bytes get this error, not a parse error
        if cid.compute(model) != receipt["model"]:
            raise InputError("these model bytes are not the disputed receipt's model")
        steps = Steps(model)
    elif steps.cid != receipt["model"]:
        raise InputError("these model bytes are not the disputed receipt's model")
    random = nondeterministic_operators(steps.proto)  # a step that draws at random has no
    if random:  # correct output to judge it by: such a model is never disputed
        raise InputError(
            f"the model has operators whose output is not a function of their inputs "
            f"({', '.join(random)}): its answers are never disputed"
        )
    digests = {name: tensors.digest(value) for name, value in inputs.items()}
    if tensors.map_digest_of(digests) != receipt["inputs"]:
        raise InputError("these inputs are not the disputed receipt's: their digest differs")
    return steps, digests


def _initial_root(steps: Steps, digests: Mapping[str, str]) -> str:
    """State 0's root, from the inputs' digests (the graph's live inputs among them)."""
    return _hex(steps.root(0, {name: digests[name] for name in steps.computed(0)}))


def _opened(
    dispute: Dispute, steps: Steps, initial: str, role: str, message: object
) -> dict[str, Any]:
    try:
        party = dispute.defendant if role == "defendant" else dispute.challenger
        body = open_message(message, dispute, party, "opening", 0)
        outputs = _leaves(body.get("outputs"), "opening outputs")
        final = _root(body, "final")
        if _root(body, "initial") != initial:
            raise _Lost(role, "committed state 0 to other inputs than the receipt's")
        if body.get("steps") != steps.count or not isinstance(body.get("engine"), str):
            raise _Lost(role, f"counts {body.get('steps')!r} steps, not {steps.count}")
        kernel_class_of(body["engine"])  # an unknown class buys no comparison within a bound
        if role == "defendant" and body["engine"] != dispute.receipt["engine"]:
            raise _Lost(role, "traced on another engine than the one its receipt names")
        if [name for name, _ in outputs] != steps.live(steps.count):
            raise _Lost(role, "opened with final leaves that are not the graph's outputs")
        _root(body, "trace")
        model = steps.initializer_digests
        if any(model[name] != digest for name, digest in outputs if name in model):
            raise _Lost(role, "opened with final leaves that change an initializer")
        computed = [(name, digest) for name, digest in outputs if name not in model]
        if _state_root(steps, steps.count, computed) != final:
            raise _Lost(role, "opened with final leaves that do not match its final root")
        if role == "defendant":
            try:
                stated = tensors.map_digest_of(dict(outputs))
            except InputError as exc:
                raise _Lost(role, f"opened with malformed final leaves: {exc}") from exc
            if stated != dispute.receipt["outputs"]:
                raise _Lost(role, "committed its final state to other outputs than its receipt")
    except VerificationError as exc:
        raise _Lost(role, f"sent a bad opening: {exc}") from exc
    return body


@dataclass
class _Game:
    """One play of the game; ``ask`` reaches the parties, ``agree_across`` decides agreement
    of two different roots across engine identities, ``record`` collects the transcript."""

    dispute: Dispute
    inputs: Mapping[str, np.ndarray]
    digests: Mapping[str, str]  # the inputs' (checked against the receipt)
    steps: Steps
    parties: Mapping[str, Party]
    ask: Ask
    agree_across: Callable[[int, tuple[str, str]], bool]
    record: dict[str, Any]

    def play(self) -> tuple[str, str, str]:
        dispute, steps, parties, inputs = self.dispute, self.steps, self.parties, self.inputs
        initial = _initial_root(steps, self.digests)
        openings = self.ask(
            _calls(parties, lambda party: party.opening(dispute, inputs)), opening=True
        )
        self.record["openings"] = openings
        bodies = {role: _opened(dispute, steps, initial, role, openings[role]) for role in parties}
        self._openings = bodies
        engines = (bodies["defendant"]["engine"], bodies["challenger"]["engine"])
        # states are compared within STATE_TOLERANCE only across kernel classes: identities that
        # differ in anything else (runtime, provider, optimization) are compared by root
        same = engines[0] == engines[1] or (
            engines[0].rpartition("/")[0] != engines[1].rpartition("/")[0]
        )
        roots = {0: (initial, initial)}
        roots[steps.count] = (bodies["defendant"]["final"], bodies["challenger"]["final"])
        if roots[steps.count][0] == roots[steps.count][1]:
            return "defendant", "challenger", "the challenger's final state is the receipt's"
        lo, hi = 0, steps.count
        while hi - lo > 1:
            mid = (lo + hi) // 2
            roots[mid] = pair = self._states(mid)
            agree = pair[0] == pair[1] or (not same and self.agree_across(mid, pair))
            self.record["rounds"].append({
                "step": mid, **self._last, "agree": agree,
                "basis": "root" if same or pair[0] == pair[1] else "tolerance",
            })  # fmt: skip
            lo, hi = (mid, hi) if agree else (lo, mid)
        return self._judge(hi, roots)

    def _states(self, mid: int) -> tuple[str, str]:
        dispute = self.dispute
        answers = self.ask(_calls(self.parties, lambda party: party.state(dispute, mid)))
        self._last = {role: answers[role] for role in ("defendant", "challenger")}
        pair = []
        for role in ("defendant", "challenger"):
            trace = self._openings[role]["trace"]
            try:
                pair.append(open_state(answers[role], trace, self.steps.count, mid))
            except VerificationError as exc:
                raise _Lost(role, f"sent a bad state: {exc}") from exc
        return pair[0], pair[1]

    def _judge(self, k: int, roots: Mapping[int, tuple[str, str]]) -> tuple[str, str, str]:
        dispute, steps, defendant = self.dispute, self.steps, self.parties["defendant"]
        step = steps.step(k)
        reads = _non_initializers(steps, step.inputs)
        writes = [name for name in step.outputs if name in set(steps.live(k))]
        answers = self.ask({
            "defendant": lambda: (defendant.reveal(dispute, k - 1, reads),
                                  defendant.reveal(dispute, k, writes)),
        })  # fmt: skip
        before, after = answers["defendant"]
        holds, why, judgement = _judge(steps, k, before, after, (roots[k - 1][0], roots[k][0]))
        self.record["judgement"] = judgement
        if holds:
            return "defendant", "challenger", f"the challenger disputed a correct step: {why}"
        return "challenger", "defendant", f"the defendant's {why}"


# ---------------------------------------------------------------------------------------------
# Offline check of a verdict


def verify_verdict(
    data: bytes | str, *, model: bytes, referees: Sequence[str] | None = None
) -> Verdict:
    """Re-check a verdict offline: the referee's signature (by one of ``referees`` if given),
    the dispute and the bundle it names, every party message, the bisection and the judgement
    (re-executing its one step on ``model``). Returns the verdict or raises
    :class:`VerificationError`."""
    verdict, referee = Verdict.from_bytes(data)
    body = verdict.body
    if referees is not None and referee not in referees:
        raise VerificationError(f"the verdict is signed by {referee}, not a trusted referee")
    dispute = Dispute.from_header(body.get("dispute"))
    if dispute.header["referee"] != referee:
        raise VerificationError("the verdict is signed by another referee than the dispute's")
    inputs = _npz(body.get("inputs"), "verdict inputs")
    try:
        steps, digests = _receipts(dispute, inputs, model, None)
    except InputError as exc:
        raise VerificationError(f"the verdict does not hold: {exc}") from exc
    if body.get("type") != VERDICT_TYPE or body.get("steps") != steps.count:
        raise VerificationError(f"malformed verdict: type, or {body.get('steps')!r} steps")
    try:
        _replay(dispute, inputs, digests, steps, body)
    except (TypeError, KeyError, AttributeError, ValueError, IndexError) as exc:
        raise VerificationError(f"malformed verdict: {type(exc).__name__}: {exc}") from exc
    return verdict


class _Recorded:
    """A party that answers from a verdict's record; a missing answer is a failure to answer."""

    def __init__(self, role: str, vkey: str, body: Mapping[str, Any]) -> None:
        self.role = role
        self.vkey = vkey
        self._openings = body.get("openings") or {}
        self._rounds = {r.get("step"): r for r in body.get("rounds") or [] if isinstance(r, dict)}
        self._judgement = body.get("judgement")

    def _found(self, value: object) -> str:
        if not isinstance(value, str):
            raise InputError("no answer on record")
        return value

    def opening(self, dispute: Dispute, inputs: Mapping[str, np.ndarray]) -> str:
        return self._found(self._openings.get(self.role))

    def state(self, dispute: Dispute, step: int) -> dict[str, Any]:
        found = self._rounds.get(step, {}).get(self.role)
        if not isinstance(found, dict):
            raise InputError("no answer on record")
        return found

    def reveal(self, dispute: Dispute, step: int, names: Sequence[str]) -> Reveal:
        judgement = self._judgement
        if not isinstance(judgement, dict) or self.role != "defendant":
            raise InputError("no reveal on record")
        before = step == judgement.get("step") - 1  # type: ignore[operator]
        blob = judgement.get("read" if before else "written")
        revealed = _npz(blob, "judgement tensors")
        key = "before" if before else "after"
        leaves = _leaves(judgement.get(key), f"judgement {key}")
        shown = {name: revealed[name] for name in names if name in revealed}
        return Reveal(leaves, shown, blob if isinstance(blob, str) else None)


def _replay(
    dispute: Dispute,
    inputs: Mapping[str, np.ndarray],
    digests: Mapping[str, str],
    steps: Steps,
    body: dict[str, Any],
) -> None:
    """Play the game again against the record: every decision must come out as recorded.
    Agreement across engine identities and missed answers are taken on the referee's word."""
    rounds = body.get("rounds")
    if not isinstance(body.get("openings"), dict) or not isinstance(rounds, list):
        raise VerificationError("malformed verdict: openings or rounds")
    for entry in rounds:
        if (
            not isinstance(entry, dict)
            or type(entry.get("step")) is not int
            or not isinstance(entry.get("agree"), bool)
        ):
            raise VerificationError(f"malformed verdict: round {entry!r:.80}")
    if not isinstance(body.get("judgement"), dict | None):
        raise VerificationError("malformed verdict: judgement")
    parties = {role: _Recorded(role, vkey, body) for role, vkey in
               (("defendant", dispute.defendant), ("challenger", dispute.challenger))}  # fmt: skip
    decided = {r.get("step"): r.get("agree") for r in rounds if isinstance(r, dict)}
    record: dict[str, Any] = {"openings": {}, "rounds": [], "judgement": None}
    failed: list[str] = []

    stated = (body.get("winner"), body.get("loser"), body.get("reason"))

    def ask(calls: Mapping[str, Callable[[], Any]], opening: bool = False) -> dict[str, Any]:
        answers, failures = {}, {}
        for role, call in calls.items():
            try:
                answers[role] = call()
            except Exception as exc:  # as in settle: a failure loses
                failures[role] = exc
        if failures:  # the record ends here: the side it names as the loser stopped answering
            role = stated[1] if stated[1] in failures else next(iter(failures))
            failed.append(role)
            raise _Lost(role, f"could not answer: {failures[role]}")
        return answers

    def agree_across(mid: int, roots: tuple[str, str]) -> bool:
        agree = decided.get(mid)
        if not isinstance(agree, bool):
            raise VerificationError(f"malformed verdict: round {mid} has no decision")
        return agree

    try:
        game = _Game(dispute, inputs, digests, steps, parties, ask, agree_across, record)
        outcome = game.play()
    except _Lost as lost:
        outcome = _outcome(lost)
        if failed and failed[-1] == lost.role:  # the record ends where this side stopped
            outcome = (outcome[0], outcome[1], str(stated[2]))
    judged = body.get("judgement")
    if _decision(record["judgement"]) != _decision(judged):
        raise VerificationError("the verdict's judgement is not what its reveal gives")
    if (
        judged is not None
        and outcome[:2] == stated[:2]
        and _figures(outcome[2]) == _figures(str(stated[2]))
    ):
        outcome = (outcome[0], outcome[1], str(stated[2]))  # its figures may round apart here
    if outcome != stated:
        raise VerificationError(
            f"the record gives the {outcome[0]} the win ({outcome[2]}); the verdict says "
            f"{stated[0]} ({stated[2]})"
        )
    if [r["step"] for r in record["rounds"]] != [r["step"] for r in rounds]:
        raise VerificationError("the verdict's rounds do not follow the bisection")
    if [r["agree"] for r in record["rounds"]] != [r["agree"] for r in rounds]:
        raise VerificationError("the verdict's rounds record other decisions than their roots")


def _figures(reason: str) -> str:
    """A reason with its measured figures masked (they may differ in the last digits)."""
    return re.sub(r"(off by|bound) [^ ,]+", r"\1 #", reason)


def _decision(judgement: object) -> object:
    """A judgement without the figures a re-run on another machine may give slightly apart
    (the deviation, the bound, which tensor went past it): the decision and what it rests on."""
    if not isinstance(judgement, dict):
        return judgement
    figures = {"deviation", "bound", "tensor"}
    return {key: value for key, value in judgement.items() if key not in figures} | {
        "beyond": "tensor" in judgement
    }


def _outcome(lost: _Lost) -> tuple[str, str, str]:
    winner = "challenger" if lost.role == "defendant" else "defendant"
    return winner, lost.role, f"the {lost.role} {lost.reason}"
