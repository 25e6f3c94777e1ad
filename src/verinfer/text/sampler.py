"""The sampler: which token a generation picks, as a pure function anyone can replay.

A node commits, at each generated position, the ``TOP`` highest logits with their token IDs
(:func:`commit`); the sampler chooses among exactly those committed values with the request's
parameters and a pseudo-random number derived from the seed and the position. So given the
commitments, the parameters and the seed, every token is determined, and a verifier without
the model replays the choice (docs/PROTOCOL.md §16). Only Python's ``float`` (IEEE double),
``math.exp`` and SHA-256 are involved.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from verinfer.errors import InputError

__all__ = ["MAX_TOKENS", "TOP", "Sampling", "choose", "commit", "uniform"]

TOP = 8  # candidates committed per position (and the most the sampler ever considers)
MAX_TOKENS = 4096  # the most tokens one request may generate
_MAX_SEED = (1 << 53) - 1  # an exact JSON number (RFC 8785)
_DOMAIN = b"verinfer/sampler/v1\x00"


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters. ``temperature`` 0 is greedy; ``top_k`` is at most :data:`TOP`."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = TOP
    seed: int = 0
    max_tokens: int = 16
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def number(name: str, value: object) -> float:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise InputError(f"{name} must be a number, got {value!r}")
            try:  # JSON integers have no size limit: one beyond a double is refused by name
                as_float = float(value)
            except OverflowError:
                raise InputError(f"{name} must be finite, got an integer too large") from None
            if not math.isfinite(as_float):
                raise InputError(f"{name} must be finite, got {value!r}")
            return as_float

        if not 0 <= number("temperature", self.temperature) <= 2:
            raise InputError(f"temperature must be in [0, 2], got {self.temperature!r}")
        if not 0 < number("top_p", self.top_p) <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p!r}")
        for name, value, low, high in (
            ("top_k", self.top_k, 1, TOP),
            ("seed", self.seed, 0, _MAX_SEED),
            ("max_tokens", self.max_tokens, 1, MAX_TOKENS),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise InputError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if not isinstance(self.stop, tuple) or len(self.stop) > 4:
            raise InputError(f"stop must be at most 4 strings, got {self.stop!r}")
        for text in self.stop:
            if not isinstance(text, str) or not 0 < len(text) <= 64:
                raise InputError(f"a stop string must have 1-64 characters, got {text!r}")

    def to_json(self) -> dict[str, Any]:
        """The JSON object a receipt's input digest covers (floats as given, canonical)."""
        return {
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "stop": list(self.stop),
            "temperature": float(self.temperature),
            "top_k": self.top_k,
            "top_p": float(self.top_p),
        }

    @classmethod
    def from_json(cls, body: object) -> Sampling:
        """Parse the JSON form; raise :class:`InputError` naming the bad field."""
        fields = {"max_tokens", "seed", "stop", "temperature", "top_k", "top_p"}
        if not isinstance(body, dict) or set(body) != fields:
            raise InputError(f"malformed sampling parameters: {body!r}")
        stop = body["stop"]
        if not isinstance(stop, list):
            raise InputError(f"stop must be a list of strings, got {stop!r}")
        return cls(
            temperature=body["temperature"],
            top_p=body["top_p"],
            top_k=body["top_k"],
            seed=body["seed"],
            max_tokens=body["max_tokens"],
            stop=tuple(stop),
        )


def commit(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The committed candidates of one position's logits (``[vocabulary]``): the ``TOP`` token
    IDs with the highest logits, highest first, ties to the lower ID (uint16), and their logits
    rounded to float16. Vocabularies above 65,536 tokens are not supported."""
    if logits.ndim != 1 or not 0 < logits.shape[0] <= 1 << 16:
        raise InputError(f"logits must be one vector of at most 65536, got {logits.shape!r}")
    count = min(TOP, logits.shape[0])
    pool = _candidates(logits, count)
    if pool is None:  # a small vocabulary, or NaN in the way of the block filter
        part = np.argpartition(-logits, count - 1)[:count] if logits.shape[0] > count else None
        pool = part if part is not None else np.arange(logits.shape[0])
    elif pool.size > count:
        pool = pool[np.argpartition(-logits[pool], count - 1)[:count]]
    # every ID whose logit equals the cut-off competes, so ties resolve to the lower ID
    cut = logits[pool].min()
    pool = np.union1d(pool, np.flatnonzero(logits == cut))
    order = sorted(pool.tolist(), key=lambda i: (-float(logits[i]), i))[:count]
    ids = np.array(order, dtype=np.uint16)
    return ids, logits[ids.astype(np.int64)].astype(np.float16)


_BLOCK = 128


def _candidates(logits: np.ndarray, count: int) -> np.ndarray | None:
    """IDs that hold the ``count`` highest logits, and usually few others: those at least the
    ``count``-th highest of the maxima of 128-wide blocks (the blocks of the ``count`` highest
    maxima hold ``count`` logits that high, so the ``count``-th highest logit is no lower).
    A pass over block maxima and one comparison cost a tenth of an ``argpartition`` over a
    49,152-token vocabulary, once per generated token. ``None`` where it does not apply."""
    blocks = logits.shape[0] // _BLOCK
    if blocks < 4 * count:
        return None
    maxima = logits[: blocks * _BLOCK].reshape(blocks, _BLOCK).max(axis=1)
    floor = np.partition(maxima, blocks - count)[blocks - count]
    picked = np.flatnonzero(logits >= floor)
    return picked if count <= picked.size <= 64 * count else None


def uniform(seed: int, position: int) -> float:
    """The number in [0, 1) that position ``position`` (0 = first generated token) draws:
    the first 8 bytes of SHA-256("verinfer/sampler/v1" 0x00 || seed u64 BE || position u32 BE)
    as a big-endian integer, divided by 2**64 (seeds are at most 2**53 - 1)."""
    digest = hashlib.sha256(_DOMAIN + seed.to_bytes(8, "big") + position.to_bytes(4, "big"))
    return int.from_bytes(digest.digest()[:8], "big") / 18446744073709551616.0


def choose(ids: Sequence[int], values: Sequence[float], sampling: Sampling, position: int) -> int:
    """The token the sampler picks from one position's committed candidates (highest first).

    Greedy (temperature 0): the first candidate. Otherwise: the first ``top_k`` candidates,
    softmax of ``(value - first) / temperature`` in double precision (``math.exp``, sums left
    to right), the shortest prefix whose probability reaches ``top_p``, renormalised; the
    token is the first whose cumulative probability exceeds ``uniform(seed, position)``."""
    if not ids or len(ids) != len(values):
        raise InputError("no candidates to choose from")
    if sampling.temperature == 0:
        return int(ids[0])
    count = min(sampling.top_k, len(ids))
    first = float(values[0])
    weights = [math.exp((float(v) - first) / sampling.temperature) for v in values[:count]]
    total = 0.0
    for w in weights:
        total += w
    kept, mass = 0, 0.0
    while kept < count:
        mass += weights[kept] / total
        kept += 1
        if mass >= sampling.top_p:
            break
    kept_total = 0.0
    for w in weights[:kept]:
        kept_total += w
    draw = uniform(sampling.seed, position)
    cumulative = 0.0
    for index in range(kept):
        cumulative += weights[index] / kept_total
        if draw < cumulative:
            return int(ids[index])
    return int(ids[kept - 1])  # rounding left the sum just below the draw
