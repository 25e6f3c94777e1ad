"""Re-execution turns every false record into a verdict at a position (second review, R2-1 and
R2-2): a token the model does not have, in a candidate row, among the generated tokens or in the
prompt, is a fault where it stands, never an exception that spares the rest of the record from
conviction, and never an IndexError. Pure: a stand-in model of 1,000 logits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from verinfer.errors import VerificationError
from verinfer.modes.generation import _Vocabulary, commitment_fault, deviations, reexecute
from verinfer.text.generation import Generation
from verinfer.text.sampler import Sampling, commit

VOCABULARY, PROMPT, COUNT = 1000, (1, 2, 3), 4
LOGITS = np.random.default_rng(0).normal(0, 3, (1, len(PROMPT) + COUNT - 1, VOCABULARY))
LOGITS = LOGITS.astype(np.float32)
GREEDY = Sampling(temperature=0, max_tokens=COUNT, seed=1)


def _model(feed: dict[str, Any]) -> dict[str, np.ndarray]:
    ids = feed["input_ids"]
    assert (ids < VOCABULARY).all(), "fed a token the model does not have"
    return {"logits": LOGITS[:, : ids.shape[1]]}


RUN = _Vocabulary(_model, VOCABULARY)


def _honest() -> tuple[np.ndarray, np.ndarray]:
    rows = LOGITS[0, len(PROMPT) - 1 :]
    ids, values = zip(*(commit(rows[p]) for p in range(COUNT)), strict=True)
    return np.array(ids), np.array(values)


def _record(ids: np.ndarray, values: np.ndarray, tokens: tuple[int, ...] | None = None,
            prompt: tuple[int, ...] = PROMPT) -> Generation:  # fmt: skip
    chosen = tokens if tokens is not None else tuple(int(row[0]) for row in ids)
    return Generation(prompt, GREEDY, chosen, ids, values.astype(np.float16), "length")


def test_an_honest_record_passes() -> None:
    ids, values = _honest()
    assert max(deviations(_record(ids, values), RUN, {})) < 1
    reexecute(_record(ids, values), RUN, {})


def test_a_candidate_the_model_lacks_does_not_shield_a_lie_elsewhere() -> None:
    ids, values = _honest()
    ids, values = ids.copy(), values.astype(np.float32)
    ids[0, [0, 1]] = ids[0, [1, 0]]  # the lie: the runner-up first, lifted above the leader
    values[0, 0] += 5
    ids[COUNT - 1, 7] = 65535  # and a candidate no model of 1,000 tokens has, as the lowest
    record = _record(ids, values)
    assert commitment_fault(record, 0) is None  # self-consistent: only the model tells
    found = deviations(record, RUN, {})
    assert found[0] > 1  # the lie is convicted where it is
    assert found[COUNT - 1] == np.inf  # and the foreign ID where it is
    with pytest.raises(VerificationError, match="at position 0"):
        reexecute(record, RUN, {})


@pytest.mark.parametrize("run", [RUN, _model], ids=["vocabulary known", "vocabulary unknown"])
def test_a_generated_token_the_model_lacks_is_a_verdict_not_a_crash(run: Any) -> None:
    ids, values = _honest()
    record = _record(ids, values, tokens=(*(int(row[0]) for row in ids[:-1]), 60000))
    assert "step G2" in (commitment_fault(record, COUNT - 1) or "")
    found = deviations(record, run, {})
    assert max(found[:-1]) < 1
    assert found[-1] == np.inf
    with pytest.raises(VerificationError, match="token ID 60000 is not one of the model's 1000"):
        reexecute(record, run, {})


def test_a_token_the_model_lacks_midway_fails_from_there_and_is_never_fed() -> None:
    ids, values = _honest()
    tokens = [int(row[0]) for row in ids]
    tokens[1] = 5000  # fed to the model it would fail: the pass stops before it
    found = deviations(_record(ids, values, tokens=tuple(tokens)), RUN, {})
    assert found[0] < 1
    assert found[1:] == [np.inf] * (COUNT - 1)


def test_a_prompt_the_model_cannot_read_fails_everywhere() -> None:
    ids, values = _honest()
    found = deviations(_record(ids, values, prompt=(1, 5000, 3)), RUN, {})
    assert found == [np.inf] * COUNT


def test_a_record_without_a_prompt_is_false_by_itself() -> None:
    ids, values = _honest()
    record = _record(ids[:2], values[:2], prompt=())
    assert commitment_fault(record, 1) == "the record has no prompt"
    with pytest.raises(VerificationError, match="the record has no prompt"):
        deviations(record, RUN, {})
