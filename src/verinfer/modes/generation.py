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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from verinfer import tensors
from verinfer.errors import Error, VerificationError
from verinfer.modes.replicated import MAX_TENSOR_BYTES, Agreement
from verinfer.text.generation import Generation, empty_cache, stop_reached
from verinfer.text.sampler import TOP, choose
from verinfer.verify import Bundle, verify_bundle

__all__ = ["TOLERANCE", "Deviation", "reexecute", "verify_generation"]


@dataclass(frozen=True)
class Tolerance:
    """``|committed - recomputed| <= absolute + relative * |recomputed|``."""

    absolute: float
    relative: float

    def bound(self, value: np.ndarray) -> np.ndarray:
        """The allowed deviation at each recomputed value."""
        return np.asarray(self.absolute + self.relative * np.abs(value))


# float16 rounding of the commitment is at most 2**-11 relative; the rest covers a cached
# decode against one full pass and other CPU kernel classes (measured: PROTOCOL.md §16)
TOLERANCE = Tolerance(absolute=0.02, relative=2e-3)


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
    report: Callable[[str], None] | None = None,
    **options: Any,
) -> None:
    """Verify a generation's bundle offline; return ``None`` or raise :class:`VerificationError`.

    ``ends`` (the IDs that end a turn) and ``detokenize`` (the model's tokenizer) let step G3
    check why the generation ended; ``manifest`` (a :class:`verinfer.hub.Manifest`) must be the
    receipt's, and ``tokenizer_cid`` the tokenizer it names. ``options`` go to
    :func:`verinfer.verify.verify_bundle` (witness policy, ...)."""
    say = report or (lambda _: None)
    verify_bundle(
        bundle,
        trusted_vkeys,
        inputs=generation.inputs(),
        outputs=generation.outputs(),
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
        row = generation.top_ids[position]
        values = generation.top_logits[position].astype(np.float64)
        if len(set(row.tolist())) != TOP or not np.all(np.isfinite(values)):
            raise VerificationError(f"step G1 (commitments): position {position} is malformed")
        if np.any(np.diff(values) > 0):
            raise VerificationError(
                f"step G1 (commitments): position {position}'s logits are not highest first"
            )
    say(f"G1. {count} positions each commit {TOP} candidates, highest first")
    # (G2) the sampler, replayed on the committed values, picks every token
    sampling = generation.sampling
    for position, token in enumerate(generation.tokens):
        picked = choose(
            generation.top_ids[position].tolist(),
            generation.top_logits[position].astype(np.float64).tolist(),
            sampling,
            position,
        )
        if picked != token:
            raise VerificationError(
                f"step G2 (sampler): at position {position} the sampler picks token {picked}, "
                f"the generation has {token}"
            )
    say(f"G2. replaying the sampler (seed {sampling.seed}) gives every generated token")
    # (G3) it ended where it had to
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
    elif ends is not None and detokenize is not None:
        last_ends = count > 0 and generation.tokens[-1] in set(ends)
        stopped = stop_reached(detokenize(generation.tokens), sampling.stop) is not None
        if not (last_ends or stopped):
            raise VerificationError(
                "step G3 (end): finish 'stop', but the last token neither ends the turn nor "
                "completes a stop string: the output was cut short"
            )
    say(f"G3. the generation ended as its parameters require ({generation.finish})")
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


@dataclass(frozen=True)
class Deviation:
    """What re-execution measured: the largest deviation relative to the tolerance (1 = at
    the bound), at which position, and the largest absolute deviation."""

    ratio: float
    position: int
    absolute: float


def reexecute(
    generation: Generation,
    run: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
    cache: Mapping[str, np.ndarray],
    *,
    tolerance: Tolerance = TOLERANCE,
) -> Deviation:
    """Re-check a generation with one teacher-forced forward pass (``run`` runs the model
    graph; ``cache`` is its empty key/value cache); raise :class:`VerificationError` if a
    committed logit is off by more than ``tolerance`` or an uncommitted token beats the
    committed ones; else return the deviation measured."""
    count = len(generation.tokens)
    if count == 0:
        return Deviation(0.0, -1, 0.0)
    sequence = list(generation.prompt) + list(generation.tokens[:-1])
    result = run({"input_ids": np.array([sequence], dtype=np.int64), **cache})
    logits = np.asarray(result["logits"])[0, len(generation.prompt) - 1 :]
    worst = Deviation(0.0, -1, 0.0)
    for position in range(count):
        row = logits[position].astype(np.float64)
        ids = generation.top_ids[position].astype(np.int64)
        committed = generation.top_logits[position].astype(np.float64)
        recomputed = row[ids]
        gap = np.abs(committed - recomputed)
        ratio = float(np.max(gap / tolerance.bound(recomputed)))
        if ratio > worst.ratio:
            worst = Deviation(ratio, position, float(gap.max()))
        if ratio > 1:
            raise VerificationError(
                f"re-execution: at position {position} a committed logit is off by "
                f"{gap.max():.4g}, beyond the tolerance: another model, prompt or output"
            )
        others = np.delete(row, ids)
        floor = float(recomputed.min())
        if others.size and float(others.max()) > floor + float(tolerance.bound(np.asarray(floor))):
            raise VerificationError(
                f"re-execution: at position {position} a token outside the committed "
                f"{TOP} has logit {others.max():.4g} above theirs: the commitment hid it"
            )
    return worst


def empty_cache_of(config: Any) -> dict[str, np.ndarray]:
    """The empty cache for a :class:`verinfer.text.graph.LlamaConfig`."""
    return empty_cache(config.blocks, config.kv_heads, config.head_dim)
