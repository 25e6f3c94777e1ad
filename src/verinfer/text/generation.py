"""A generation: the record a receipt binds, and the decoding loop that produces it.

A :class:`Generation` is what a node states about one text generation: the prompt's token IDs,
the sampling parameters (seed included), the generated token IDs, at each generated position
the committed top-``TOP`` candidates (token IDs and float16 logits), and why it ended. Its
:meth:`~Generation.inputs` and :meth:`~Generation.outputs` are tensor maps whose map digests
(docs/PROTOCOL.md §9) are the receipt's ``inputs`` and ``outputs``: the receipt, signed into
the node's log, binds every field, and the record travels beside the bundle as outputs do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from verinfer import canonical, tensors
from verinfer.errors import InputError, VerificationError
from verinfer.text.sampler import TOP, Sampling, choose, commit

__all__ = ["FINISHES", "Decoder", "Generation", "empty_cache", "stop_reached"]

FINISHES = ("length", "stop")


@dataclass(frozen=True)
class Generation:
    """One generation's record (see the module docstring)."""

    prompt: tuple[int, ...]
    sampling: Sampling
    tokens: tuple[int, ...]
    top_ids: np.ndarray  # [len(tokens), TOP] uint16, highest logit first
    top_logits: np.ndarray  # [len(tokens), TOP] float16
    finish: str

    def inputs(self) -> dict[str, np.ndarray]:
        """The tensor map the receipt's ``inputs`` digest covers."""
        sampling = canonical.dumps(self.sampling.to_json())
        return {
            "prompt": np.array(self.prompt, dtype=np.int64),
            "sampling": np.frombuffer(sampling, dtype=np.uint8).copy(),
        }

    def outputs(self) -> dict[str, np.ndarray]:
        """The tensor map the receipt's ``outputs`` digest covers."""
        return {
            "tokens": np.array(self.tokens, dtype=np.int64),
            "top_ids": np.ascontiguousarray(self.top_ids, dtype=np.uint16),
            "top_logits": np.ascontiguousarray(self.top_logits, dtype=np.float16),
            "finish": np.frombuffer(self.finish.encode(), dtype=np.uint8).copy(),
        }

    def commitment_bytes(self) -> int:
        """Bytes of the per-position commitments (IDs and logits)."""
        return int(self.top_ids.nbytes + self.top_logits.nbytes)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (float16 logits as exact decimal doubles)."""
        return {
            "prompt": list(self.prompt),
            "sampling": self.sampling.to_json(),
            "tokens": list(self.tokens),
            "top_ids": self.top_ids.astype(np.int64).tolist(),
            "top_logits": self.top_logits.astype(np.float64).tolist(),
            "finish": self.finish,
        }

    @classmethod
    def from_json(cls, body: object) -> Generation:
        """Parse the JSON form; raise :class:`VerificationError` naming a malformed field."""
        fields = {"prompt", "sampling", "tokens", "top_ids", "top_logits", "finish"}
        if not isinstance(body, Mapping) or set(body) != fields:
            found = sorted(body) if isinstance(body, Mapping) else type(body).__name__
            raise VerificationError(f"malformed generation: fields {found!r}")
        try:
            sampling = Sampling.from_json(body["sampling"])
        except InputError as exc:
            raise VerificationError(f"malformed generation: {exc}") from exc

        def ids(name: str) -> tuple[int, ...]:
            value = body[name]
            if not isinstance(value, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1 << 31 for i in value
            ):
                raise VerificationError(f"malformed generation: {name} must be token IDs")
            return tuple(value)

        prompt, tokens = ids("prompt"), ids("tokens")
        try:
            top_ids = np.array(body["top_ids"], dtype=np.int64).reshape(len(tokens), TOP)
            top_logits = np.array(body["top_logits"], dtype=np.float64).reshape(len(tokens), TOP)
        except (ValueError, TypeError) as exc:
            raise VerificationError(
                f"malformed generation: top_ids and top_logits must be {len(tokens)} rows of {TOP}"
            ) from exc
        if top_ids.size and (top_ids.min() < 0 or top_ids.max() >= 1 << 16):
            raise VerificationError("malformed generation: a top_ids entry is out of range")
        halves = top_logits.astype(np.float16)
        if not np.array_equal(halves.astype(np.float64), top_logits, equal_nan=True):
            raise VerificationError("malformed generation: top_logits must be float16 values")
        if body["finish"] not in FINISHES:
            raise VerificationError(f"malformed generation: finish {body['finish']!r}")
        return cls(prompt, sampling, tokens, top_ids.astype(np.uint16), halves, body["finish"])

    @classmethod
    def from_tensors(
        cls, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
    ) -> Generation:
        """Rebuild the record from its tensor maps (:meth:`inputs`, :meth:`outputs`: what a
        node archives by the receipt's digests); raise :class:`VerificationError` if they are
        not exactly a record's tensors, so a record rebuilt here has the maps' digests."""
        names = ({"prompt", "sampling"}, {"tokens", "top_ids", "top_logits", "finish"})
        if set(inputs) != names[0] or set(outputs) != names[1]:
            raise VerificationError(
                f"malformed generation: tensors {sorted(inputs)!r} and {sorted(outputs)!r} are "
                "not a generation record's"
            )
        try:
            sampling = json.loads(np.asarray(inputs["sampling"], dtype=np.uint8).tobytes())
            finish = np.asarray(outputs["finish"], dtype=np.uint8).tobytes().decode()
            count = int(np.asarray(outputs["tokens"]).size)
            record = cls.from_json({
                "prompt": np.asarray(inputs["prompt"]).reshape(-1).tolist(),
                "sampling": sampling,
                "tokens": np.asarray(outputs["tokens"]).reshape(-1).tolist(),
                "top_ids": np.asarray(outputs["top_ids"]).astype(np.int64).reshape(count, TOP)
                .tolist(),
                "top_logits": np.asarray(outputs["top_logits"]).astype(np.float64)
                .reshape(count, TOP).tolist(),
                "finish": finish,
            })  # fmt: skip
        except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as exc:
            raise VerificationError(f"malformed generation: {exc}") from exc
        if tensors.map_digest(record.inputs()) != tensors.map_digest(inputs) or (
            tensors.map_digest(record.outputs()) != tensors.map_digest(outputs)
        ):
            raise VerificationError(
                "malformed generation: the tensors are not in a record's exact form (dtypes, "
                "shapes, canonical sampling JSON)"
            )
        return record

    @classmethod
    def from_text(cls, text: str | bytes) -> Generation:
        """Parse the JSON text form."""
        try:
            return cls.from_json(json.loads(text))
        except ValueError as exc:
            raise VerificationError(f"malformed generation: {exc}") from exc


def stop_reached(text: str, stop: Sequence[str]) -> int | None:
    """Where the first stop string begins in ``text``, or ``None``."""
    found = [index for s in stop if (index := text.find(s)) >= 0]
    return min(found) if found else None


def empty_cache(blocks: int, kv_heads: int, head_dim: int) -> dict[str, np.ndarray]:
    """The inputs of an empty key/value cache."""
    empty = np.zeros((1, kv_heads, 0, head_dim), dtype=np.float32)
    return {f"past_{part}.{i}": empty for i in range(blocks) for part in ("key", "value")}


Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class Decoder:
    """Decodes one generation with a key/value cache: iterate for the tokens as they come;
    :attr:`generation` holds the record once the iteration ends.

    ``run`` runs the model graph (:mod:`verinfer.text.graph`) on named inputs; ``ends`` are the
    token IDs that end a turn; ``detokenize`` turns IDs into text (for stop strings)."""

    def __init__(
        self,
        run: Run,
        cache: Mapping[str, np.ndarray],
        prompt: Sequence[int],
        sampling: Sampling,
        *,
        ends: Sequence[int],
        detokenize: Callable[[Sequence[int]], str],
    ) -> None:
        if not prompt:
            raise InputError("the prompt has no tokens")
        self._run, self._cache = run, dict(cache)
        self._prompt, self._sampling = tuple(prompt), sampling
        self._ends, self._detokenize = frozenset(ends), detokenize
        self.generation: Generation | None = None

    def __iter__(self) -> Iterator[int]:
        sampling = self._sampling
        feed = {"input_ids": np.array([self._prompt], dtype=np.int64), **self._cache}
        tokens: list[int] = []
        ids: list[np.ndarray] = []
        values: list[np.ndarray] = []
        finish = "length"
        while len(tokens) < sampling.max_tokens:
            result = self._run(feed)
            top, logits = commit(result["logits"][0, -1])
            token = choose(top.tolist(), logits.astype(np.float64).tolist(), sampling, len(tokens))
            tokens.append(token)
            ids.append(top)
            values.append(logits)
            yield token
            if token in self._ends or (
                sampling.stop and stop_reached(self._detokenize(tokens), sampling.stop) is not None
            ):
                finish = "stop"
                break
            feed = {"input_ids": np.array([[token]], dtype=np.int64)}
            feed.update(
                (name.replace("present_", "past_"), value)
                for name, value in result.items()
                if name.startswith("present_")
            )
        self.generation = Generation(
            self._prompt,
            sampling,
            tuple(tokens),
            np.array(ids, dtype=np.uint16).reshape(len(tokens), TOP),
            np.array(values, dtype=np.float16).reshape(len(tokens), TOP),
            finish,
        )
