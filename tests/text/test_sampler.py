"""The sampler against its vectors (tests/vectors/sampler.json) and its parameter checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from verinfer.errors import InputError
from verinfer.text.sampler import TOP, Sampling, choose, commit, uniform

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "sampler.json").read_text())


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: f"{c['sampling']}@{c['position']}")
def test_sampler_vectors(case: dict) -> None:  # type: ignore[type-arg]
    sampling = Sampling.from_json(case["sampling"])
    assert uniform(sampling.seed, case["position"]) == case["uniform"]
    assert choose(VECTORS["ids"], VECTORS["values"], sampling, case["position"]) == case["token"]


def test_the_vectors_exercise_every_branch() -> None:
    tokens = {c["token"] for c in VECTORS["cases"]}
    assert len(tokens) >= 3  # sampling reaches beyond the top candidate
    greedy = [c for c in VECTORS["cases"] if c["sampling"]["temperature"] == 0]
    assert {c["token"] for c in greedy} == {17}  # a tie goes to the first committed (lower ID)


def test_commit_orders_highest_first_ties_to_the_lower_id() -> None:
    logits = np.zeros(100, dtype=np.float32)
    logits[[5, 9, 3]] = [2.0, 2.0, 3.0]
    ids, values = commit(logits)
    assert ids.tolist()[:3] == [3, 5, 9]
    assert ids.tolist()[3:] == [0, 1, 2, 4, 6]
    assert ids.dtype == np.uint16
    assert values.dtype == np.float16
    assert len(ids) == TOP


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"temperature": -1}, "temperature"),
        ({"temperature": float("nan")}, "temperature must be finite"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": 9}, "top_k"),
        ({"seed": 1 << 53}, "seed"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ("",)}, "stop string"),
        ({"temperature": True}, "temperature must be a number"),
    ],
)
def test_bad_parameters_are_refused(params: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InputError, match=match):
        Sampling(**params)


def _plain_commit(logits: np.ndarray) -> list[int]:
    """The definition: the TOP highest, highest first, ties to the lower ID."""
    return sorted(range(logits.shape[0]), key=lambda i: (-float(logits[i]), i))[:TOP]


@pytest.mark.parametrize("seed", range(40))
def test_commit_is_the_definition_on_large_vocabularies(seed: int) -> None:
    """The block filter that spares a full argpartition picks what the definition picks:
    spread logits, many ties, ties at the cut, the top inside one block, tiny vocabularies."""
    rng = np.random.default_rng(seed)
    size = int(rng.choice([8, 9, 100, 1023, 4096, 49152, 49153]))
    kind = seed % 4
    if kind == 0:
        logits = rng.normal(0, 3, size).astype(np.float32)
    elif kind == 1:  # few distinct values: ties everywhere, and at the cut
        logits = rng.integers(0, 4, size).astype(np.float32)
    elif kind == 2:  # the highest all in one block
        logits = rng.normal(0, 1, size).astype(np.float32)
        logits[: min(size, 20)] += 50
    else:  # float16-close values, as committed
        logits = rng.normal(0, 1, size).astype(np.float16).astype(np.float32)
    ids, values = commit(logits)
    assert ids.tolist() == _plain_commit(logits)
    assert values.tolist() == logits[ids.astype(np.int64)].astype(np.float16).tolist()


@pytest.mark.parametrize("name", ["temperature", "top_p"])
def test_an_integer_too_large_for_a_double_is_refused_by_name(name: str) -> None:
    """JSON integers have no size limit: 10**400 must be an InputError, not an OverflowError
    (a 500 on the text routes, a crash in the SDK, the auditor and the evidence checker)."""
    with pytest.raises(InputError, match=f"{name} must be finite"):
        Sampling(**{name: 10**400})
