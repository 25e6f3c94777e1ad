"""Text generation receipts: offline verification and re-execution (docs/PROTOCOL.md §16).

A generation's receipt is an ordinary receipt whose ``inputs`` and ``outputs`` are the map
digests of a :class:`verinfer.text.generation.Generation`'s tensors, so steps 1-2 (signature,
inclusion) and 4-5 (digests) are :func:`verinfer.verify.verify_bundle`'s. This module adds
what is particular to generations:

- :func:`verify_generation`, pure and without the model: (G1) the commitments are well formed
  (one row of ``TOP`` distinct IDs per generated token, logits non-increasing); (G2) replaying
  the sampler on the committed values with the committed parameters and seed gives every
  generated token; (G3) the generation ended where the parameters say it must (``length``:
  exactly ``max_tokens`` tokens and no earlier end; ``stop``: the last token ends a turn or
  completes a stop string, and no earlier one did); (G4) the manifest and tokenizer, when
  given, are the receipt's.
- :func:`reexecute`, with the model: one teacher-forced forward pass over the prompt and the
  generated tokens; at each position every committed logit must be within :data:`TOLERANCE`
  of the recomputed one, and no uncommitted token may beat the lowest committed one by more.
  :func:`deviations` measures every position (what fraud evidence points at), and
  ``verify_generation(..., model=, reexecute=True)`` runs the pass on ONNX Runtime here as its
  step 6 (:func:`model_runner`: imported only then).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from verinfer import tensors
from verinfer.errors import Error, VerificationError
from verinfer.modes.replicated import MAX_TENSOR_BYTES, Agreement
from verinfer.text.generation import Generation, empty_cache, stop_reached
from verinfer.text.sampler import TOP, choose
from verinfer.verify import Bundle, verify_bundle

if TYPE_CHECKING:
    from verinfer.engine import Engine

__all__ = [
    "MAX_REEXECUTED",
    "TOLERANCE",
    "Deviation",
    "commitment_fault",
    "deviations",
    "model_runner",
    "reexecute",
    "verify_generation",
]

Run = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Tolerance:
    """``|committed - recomputed| <= absolute + relative * |recomputed|``."""

    absolute: float
    relative: float

    def bound(self, value: np.ndarray) -> np.ndarray:
        """The allowed deviation at each recomputed value."""
        return np.asarray(self.absolute + self.relative * np.abs(value))


# tokens in one teacher-forced pass: its logits and attention scores grow with the square of
# the length, and a node generates over at most 2,048 (verinfer.node.text.MAX_SEQUENCE)
MAX_REEXECUTED = 4096

# float16 rounding of the commitment is at most 2**-11 relative; the rest covers a cached
# decode against one full pass and other CPU kernel classes (measured: PROTOCOL.md §16)
TOLERANCE = Tolerance(absolute=0.01, relative=1e-3)


def _check_replicas(bundle: Bundle, generation: Generation, say: Callable[[str], None],
                    **checks: Any) -> None:  # fmt: skip
    """(G0) a replicated generation (``replicated:K``): every receipt names the first one's
    manifest (one tokenizer and chat template), and each replica's record passes G1-G4 under
    its own node's key (step 2+ proved that key trusted and the receipt in its log, and the
    records agree). A replica's record is the first record's prompt and parameters (their
    digest is every receipt's) with the outputs the evidence carries, or, when the outputs
    agree bit for bit, the first record itself."""
    evidence = bundle.evidence
    if not isinstance(evidence, Agreement):
        return
    first = bundle.receipt["manifest"]
    for position, replica in enumerate(evidence.replicas, 1):
        if replica.receipt["manifest"] != first:
            raise VerificationError(
                f"step G0 (replicas): replica {position} names manifest "
                f"{replica.receipt['manifest']!r}, the first receipt {first!r}"
            )
        record = generation
        if evidence.compared:
            try:
                found = tensors.decode_binary(
                    evidence.compared[position], max_bytes=MAX_TENSOR_BYTES
                )
                record = Generation(
                    generation.prompt,
                    generation.sampling,
                    tuple(int(t) for t in found["tokens"]),
                    found["top_ids"],
                    found["top_logits"],
                    bytes(found["finish"]).decode(),
                )
            except (Error, KeyError, ValueError, TypeError) as exc:
                raise VerificationError(f"step G0 (replicas): replica {position}: {exc}") from exc
        try:
            verify_generation(replica, record, [replica.receipt["node"]], **checks)
        except VerificationError as exc:
            raise VerificationError(f"step G0 (replicas): replica {position}: {exc}") from exc
    say(
        f"G0. {len(evidence.replicas) + 1} receipts of manifest {first}; every replica's record "
        "passes G1-G4 on its own"
    )


def verify_generation(
    bundle: Bundle,
    generation: Generation,
    trusted_vkeys: Iterable[str],
    *,
    ends: Sequence[int] | None = None,
    detokenize: Callable[[Sequence[int]], str] | None = None,
    manifest: Any = None,
    tokenizer_cid: str | None = None,
    model: bytes | None = None,
    reexecute: bool = False,
    report: Callable[[str], None] | None = None,
    **options: Any,
) -> None:
    """Verify a generation's bundle offline; return ``None`` or raise :class:`VerificationError`.

    ``ends`` (the IDs that end a turn) and ``detokenize`` (the model's tokenizer) let step G3
    check why the generation ended; ``manifest`` (a :class:`verinfer.hub.Manifest`) must be the
    receipt's, and ``tokenizer_cid`` the tokenizer it names. ``model`` (bytes) must be the
    receipt's (step 3); with ``reexecute`` (the :class:`verinfer.verify.Reexecute` policy of
    :func:`verinfer.verify.verify_bundle`, for a generation) step 6 runs the model here in one
    teacher-forced pass and compares it with the commitments within :data:`TOLERANCE`, not
    bit for bit (a cached decode and a full pass are not bit-identical). ``options`` go to
    :func:`verinfer.verify.verify_bundle` (witness policy, ...)."""
    say = report or (lambda _: None)
    if reexecute and model is None:
        raise VerificationError("step 6 (re-execution) needs the model's bytes")
    verify_bundle(
        bundle,
        trusted_vkeys,
        inputs=generation.inputs(),
        outputs=generation.outputs(),
        model=model,
        report=say,
        **options,
    )
    receipt = bundle.receipt
    _check_replicas(bundle, generation, say, ends=ends, detokenize=detokenize, manifest=manifest,
                    tokenizer_cid=tokenizer_cid)  # fmt: skip
    # (G1) well-formed commitments
    count = len(generation.tokens)
    if generation.top_ids.shape != (count, TOP) or generation.top_logits.shape != (count, TOP):
        raise VerificationError(f"step G1 (commitments): expected {count} rows of {TOP}")
    for position in range(count):
        malformed = _malformed(generation, position)
        if malformed:
            raise VerificationError(f"step G1 (commitments): {malformed}")
    say(f"G1. {count} positions each commit {TOP} candidates, highest first")
    # (G2) the sampler, replayed on the committed values, picks every token
    sampling = generation.sampling
    for position in range(count):
        misdrawn = _misdrawn(generation, position)
        if misdrawn:
            raise VerificationError(f"step G2 (sampler): {misdrawn}")
    say(f"G2. replaying the sampler (seed {sampling.seed}) gives every generated token")
    _check_end(generation, ends, detokenize, say)  # (G3)
    # (G4) the manifest and tokenizer are the receipt's
    if manifest is not None:
        if manifest.cid != receipt["manifest"] or manifest.model != receipt["model"]:
            raise VerificationError("step G4 (manifest): not the receipt's manifest and model")
        text = manifest.body.get("text") or {}
        if tokenizer_cid is not None and text.get("tokenizer") != tokenizer_cid:
            raise VerificationError(
                f"step G4 (tokenizer): the manifest names tokenizer {text.get('tokenizer')!r}, "
                f"not {tokenizer_cid!r}"
            )
        say(f"G4. manifest {manifest.cid} of model {manifest.model}")
    if reexecute and model is not None:
        # (6) one teacher-forced pass here, within the tolerance
        run, cache = model_runner(model, receipt["model"])
        found, failure = _judge(generation, run, cache, TOLERANCE)
        if failure is not None:
            raise VerificationError(f"step 6 (re-execution): {failure}")
        where = f" at position {found.position}" if found.position >= 0 else ""
        say(
            f"6. re-executed here in one teacher-forced pass over {len(generation.tokens)} "
            f"tokens: largest deviation {found.ratio:.3f} of the tolerance{where} "
            f"({found.absolute:.3g} in logit)"
        )


def _malformed(generation: Generation, position: int) -> str | None:
    row = generation.top_ids[position]
    values = generation.top_logits[position].astype(np.float64)
    if len(set(row.tolist())) != TOP or not np.all(np.isfinite(values)):
        return f"position {position} is malformed"
    if np.any(np.diff(values) > 0):
        return f"position {position}'s logits are not highest first"
    return None


def _misdrawn(generation: Generation, position: int) -> str | None:
    token = generation.tokens[position]
    picked = choose(
        generation.top_ids[position].tolist(),
        generation.top_logits[position].astype(np.float64).tolist(),
        generation.sampling,
        position,
    )
    if picked != token:
        return (
            f"at position {position} the sampler picks token {picked}, the generation has {token}"
        )
    return None


def commitment_fault(generation: Generation, position: int) -> str | None:
    """What is wrong at ``position`` of the record by itself, without the model (step G1: the
    row of candidates is malformed; G2: the sampler replayed on it does not pick the token),
    or ``None``: a record that fails here contradicts itself, whoever signed it."""
    if not 0 <= position < len(generation.tokens):
        raise VerificationError(
            f"position {position} is not one of the {len(generation.tokens)} generated tokens"
        )
    if generation.top_ids.shape != (len(generation.tokens), TOP):
        return f"the record does not commit {TOP} candidates at every position"
    if not generation.prompt:  # every honest generation continues a prompt
        return "the record has no prompt"
    malformed = _malformed(generation, position)
    if malformed:
        return f"step G1 (commitments): {malformed}"
    misdrawn = _misdrawn(generation, position)
    return f"step G2 (sampler): {misdrawn}" if misdrawn else None


def _check_end(
    generation: Generation,
    ends: Sequence[int] | None,
    detokenize: Callable[[Sequence[int]], str] | None,
    say: Callable[[str], None],
) -> None:
    """(G3) The generation ended where its parameters say it must."""
    sampling, count = generation.sampling, len(generation.tokens)
    if count > sampling.max_tokens:
        raise VerificationError(f"step G3 (end): {count} tokens, max_tokens {sampling.max_tokens}")
    if ends is not None:
        early = [i for i, t in enumerate(generation.tokens[:-1]) if t in set(ends)]
        if early:
            raise VerificationError(f"step G3 (end): the turn ended at position {early[0]}")
    if detokenize is not None and sampling.stop:
        for end in range(1, count):
            if stop_reached(detokenize(generation.tokens[:end]), sampling.stop) is not None:
                raise VerificationError(f"step G3 (end): a stop string completed at {end - 1}")
    if generation.finish == "length":
        if count != sampling.max_tokens:
            raise VerificationError(
                f"step G3 (end): finish 'length' after {count} tokens, max_tokens is "
                f"{sampling.max_tokens}: the output was cut short"
            )
    elif ends is None or detokenize is None:  # a 'stop' nothing here can check: not verified
        raise VerificationError(
            "step G3 (end): the record says the generation stopped, and whether it did cannot "
            "be checked without the model's end-of-turn IDs and tokenizer (ends=, detokenize=; "
            "verinfer verify-generation --node URL, or --tokenizer FILE --eos ID): an output "
            "cut short would pass"
        )
    else:
        last_ends = count > 0 and generation.tokens[-1] in set(ends)
        stopped = stop_reached(detokenize(generation.tokens), sampling.stop) is not None
        if not (last_ends or stopped):
            raise VerificationError(
                "step G3 (end): finish 'stop', but the last token neither ends the turn nor "
                "completes a stop string: the output was cut short"
            )
    if ends is None or detokenize is None:
        say(
            f"G3. {count} tokens, max_tokens as stated ({generation.finish}); NOT checked: "
            "an end of turn or stop string before the last token (no tokenizer given)"
        )
    else:
        say(f"G3. the generation ended as its parameters require ({generation.finish})")


@dataclass(frozen=True)
class Deviation:
    """What re-execution measured: the nearest any check came to failing, relative to the
    tolerance (1 = at the bound: a committed logit's gap, an uncommitted token's rise above the
    committed ones, or, greedy, the taken token's fall below the highest), at which position,
    and the committed logit's absolute gap there."""

    ratio: float
    position: int
    absolute: float


def deviations(
    generation: Generation,
    run: Run,
    cache: Mapping[str, np.ndarray],
    *,
    tolerance: Tolerance = TOLERANCE,
) -> list[float]:
    """Re-execute ``generation`` in one teacher-forced pass and return, at every generated
    position, its deviation from the commitment relative to ``tolerance`` (1 = at the bound;
    beyond 1 re-execution fails there): the larger of the worst committed logit's gap and how
    far the best uncommitted token rises above the lowest committed one."""
    return [max(p.ratio, p.hidden, p.behind) for p in _measure(generation, run, cache, tolerance)]


@dataclass(frozen=True)
class _Position:
    ratio: float  # the largest |committed - recomputed| over its bound (inf: see ``why``)
    absolute: float  # that gap in logit
    hidden: float  # (best uncommitted - lowest committed) over its bound (<= 0: none above)
    above: float  # the best uncommitted logit
    behind: float  # greedy: (highest - the generated token's) recomputed logit over its bound
    why: str = ""  # a fault no tolerance covers: a token the model does not have


def _measure(
    generation: Generation, run: Run, cache: Mapping[str, np.ndarray], tolerance: Tolerance
) -> list[_Position]:
    count = len(generation.tokens)
    if count == 0:
        return []
    if not generation.prompt:
        raise VerificationError("re-execution: the record has no prompt")
    sequence = list(generation.prompt) + list(generation.tokens[:-1])
    if len(sequence) > MAX_REEXECUTED:
        raise VerificationError(
            f"re-execution: {len(sequence)} tokens in one pass, more than the "
            f"{MAX_REEXECUTED} re-executed here"
        )
    # a token the model does not have is a false record where it stands: the pass runs up to
    # it (the model cannot read it), and that position and every later one fail
    vocabulary = getattr(run, "vocabulary", None)
    outside = _first_outside(generation, vocabulary) if vocabulary else None
    if vocabulary and outside == 0 and any(t >= vocabulary for t in generation.prompt):
        why = f"the prompt holds a token the model's {vocabulary} do not include"
        return [_Position(np.inf, np.inf, 0.0, -np.inf, 0.0, why)] * count
    fed = count if outside is None else outside + 1
    sequence = sequence[: len(generation.prompt) + fed - 1]
    result = run({"input_ids": np.array([sequence], dtype=np.int64), **cache})
    logits = np.asarray(result["logits"])
    if logits.ndim != 3 or logits.shape[:2] != (1, len(sequence)):
        raise VerificationError(
            f"re-execution: the model gave logits of shape {logits.shape}, not one row per token"
        )
    rows = logits[0, len(generation.prompt) - 1 :]
    greedy = generation.sampling.temperature == 0
    measured: list[_Position] = []
    for position in range(count):
        if position >= fed:  # after a token the model does not have: false from there on
            measured.append(_Position(np.inf, np.inf, 0.0, -np.inf, 0.0, measured[-1].why))
            continue
        row = rows[position].astype(np.float64)
        ids = generation.top_ids[position].astype(np.int64)
        token = generation.tokens[position]
        if ids.max() >= row.size or token >= row.size:
            why = f"token ID {max(int(ids.max()), token)} is not one of the model's {row.size}"
            measured.append(_Position(np.inf, np.inf, 0.0, -np.inf, 0.0, why))
            continue
        committed = generation.top_logits[position].astype(np.float64)
        recomputed = row[ids]
        gap = np.abs(committed - recomputed)
        ratio = float(np.max(gap / tolerance.bound(recomputed)))
        others = np.delete(row, ids)
        floor = float(recomputed.min())
        above = float(others.max()) if others.size else -np.inf
        hidden = (above - floor) / float(tolerance.bound(np.asarray(floor)))
        behind = 0.0
        if greedy:  # the token taken must be the model's highest, up to the tolerance
            top = float(row.max())
            behind = (top - float(row[token])) / float(tolerance.bound(np.asarray(top)))
        measured.append(_Position(ratio, float(gap.max()), hidden, above, behind))
    return measured


def _first_outside(generation: Generation, vocabulary: int) -> int | None:
    """The first position whose token or committed candidates the model does not have (0 for
    the prompt), or ``None``."""
    if any(t >= vocabulary for t in generation.prompt):
        return 0
    for position, token in enumerate(generation.tokens):
        if token >= vocabulary or int(generation.top_ids[position].max()) >= vocabulary:
            return position
    return None


def _judge(
    generation: Generation, run: Run, cache: Mapping[str, np.ndarray], tolerance: Tolerance
) -> tuple[Deviation, str | None]:
    """The largest deviation, and why re-execution fails at the first failing position."""
    worst = Deviation(0.0, -1, 0.0)
    for position, found in enumerate(_measure(generation, run, cache, tolerance)):
        nearest = max(found.ratio, found.hidden, found.behind)  # of the three checks
        if nearest > worst.ratio:
            worst = Deviation(nearest, position, found.absolute)
        if found.why:
            return worst, f"at position {position} {found.why}"
        if found.ratio > 1:
            return worst, (
                f"at position {position} a committed logit is off by {found.absolute:.4g} "
                f"({found.ratio:.3g} times the tolerance): another model, prompt or output"
            )
        if found.hidden > 1:
            return worst, (
                f"at position {position} a token outside the committed {TOP} has logit "
                f"{found.above:.4g} above theirs: the commitment hid it"
            )
        if found.behind > 1:
            return worst, (
                f"at position {position} a greedy generation took token "
                f"{generation.tokens[position]}, {found.behind:.3g} times the tolerance below "
                "the model's highest: a near-tie decided against the model"
            )
    return worst, None


def reexecute(
    generation: Generation,
    run: Run,
    cache: Mapping[str, np.ndarray],
    *,
    tolerance: Tolerance = TOLERANCE,
) -> Deviation:
    """Re-check a generation with one teacher-forced forward pass (``run`` runs the model
    graph; ``cache`` is its empty key/value cache); raise :class:`VerificationError` if a
    committed logit is off by more than ``tolerance`` or an uncommitted token beats the
    committed ones; else return the deviation measured."""
    worst, failure = _judge(generation, run, cache, tolerance)
    if failure is not None:
        raise VerificationError(f"re-execution: {failure}")
    return worst


def model_runner(
    model: bytes, model_cid: str, *, runner: Engine | None = None
) -> tuple[Run, dict[str, np.ndarray]]:
    """Run a chat model's (checked) bytes here on ONNX Runtime: the run function and the empty
    key/value cache its graph's ``past_key.i``/``past_value.i`` inputs take; raise
    :class:`VerificationError` if it is no such graph, or holds operators whose output is not
    a function of their inputs (a re-run of those proves nothing). ``runner``: the
    :class:`verinfer.engine.Engine` to run on (one of its own by default). Imports ONNX
    Runtime."""
    from verinfer import engine  # noqa: PLC0415 - only re-execution runs a model
    from verinfer.engine.nondeterminism import nondeterministic_operators_of  # noqa: PLC0415
    from verinfer.errors import Error  # noqa: PLC0415

    try:
        drawn = nondeterministic_operators_of(model)
    except ValueError as exc:
        raise VerificationError(f"re-execution: the model does not parse: {exc}") from exc
    if drawn:
        raise VerificationError(
            f"re-execution: the model has operators whose output is not a function of their "
            f"inputs ({', '.join(drawn)}): a re-run cannot judge it"
        )
    engine_here = engine.Engine(memory=None, timeout=600.0) if runner is None else runner
    try:
        session = engine_here.session(model_cid, lambda: model)
    except Error as exc:
        raise VerificationError(f"re-execution: {exc}") from exc
    shapes = {spec.name: spec.shape for spec in session.get_inputs()}
    blocks = sum(1 for name in shapes if name.startswith("past_key."))
    key = shapes.get("past_key.0")
    if "input_ids" not in shapes or not blocks or not isinstance(key, list) or len(key) != 4:
        raise VerificationError(
            "re-execution: the model is not a chat graph with a key/value cache"
        )
    kv_heads, head_dim = key[1], key[3]
    if not isinstance(kv_heads, int) or not isinstance(head_dim, int):
        raise VerificationError("re-execution: the model's cache inputs have no fixed shape")

    def run(feed: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        try:
            return engine_here.run(model_cid, lambda: model, feed)
        except Error as exc:
            raise VerificationError(f"re-execution: {exc}") from exc

    logits = next((o.shape for o in session.get_outputs() if o.name == "logits"), None)
    vocabulary = logits[-1] if isinstance(logits, list) and isinstance(logits[-1], int) else None
    return _Vocabulary(run, vocabulary), empty_cache(blocks, kv_heads, head_dim)


class _Vocabulary:
    """A model's run function that knows how many tokens the model has (its logits' last
    dimension), so a pass never feeds it one it does not have."""

    def __init__(self, run: Run, vocabulary: int | None) -> None:
        self._run, self.vocabulary = run, vocabulary

    def __call__(self, feed: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return self._run(feed)


def empty_cache_of(config: Any) -> dict[str, np.ndarray]:
    """The empty cache for a :class:`verinfer.text.graph.LlamaConfig`."""
    return empty_cache(config.blocks, config.kv_heads, config.head_dim)
