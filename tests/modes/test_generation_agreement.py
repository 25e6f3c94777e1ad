"""The rule that judges two generations of one request from different CPU kernel classes
(``replicated:K``, PROTOCOL.md §16), on small records written here: identical tokens, logits
committed by both within twice the generation tolerance, a candidate of one node only as a
near-tie, and a malformed record refused rather than compared."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from verinfer.errors import VerificationError
from verinfer.modes.generation import TOLERANCE
from verinfer.modes.replicated import generations_agree

VALUES = [4.0, 3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5]


def _record(tokens: list[int], finish: str = "length") -> dict[str, np.ndarray]:
    ids = [[token, *range(100, 107)] for token in tokens]  # the chosen token first (greedy)
    return {
        "tokens": np.array(tokens, dtype=np.int64),
        "top_ids": np.array(ids, dtype=np.uint16),
        "top_logits": np.array([VALUES] * len(tokens), dtype=np.float16),
        "finish": np.frombuffer(finish.encode(), dtype=np.uint8).copy(),
    }


def _changed(
    record: dict[str, np.ndarray], change: Callable[[dict[str, np.ndarray]], object]
) -> dict[str, np.ndarray]:
    copy = {name: array.copy() for name, array in record.items()}
    change(copy)
    return copy


def _bound(value: float) -> float:
    truth = (value + TOLERANCE.absolute) / (1 - TOLERANCE.relative)
    return 2 * (TOLERANCE.absolute + TOLERANCE.relative * truth)


def test_identical_records_agree_and_honest_noise_within_twice_the_tolerance_too() -> None:
    reference = _record([5, 7, 9])
    assert generations_agree(reference, reference) == 0.0
    step = _bound(4.5) / 2  # half the bound at the largest logits moved

    def nudge(r: dict[str, np.ndarray]) -> None:
        r["top_logits"][1] += np.float16(step)

    found = generations_agree(reference, _changed(reference, nudge))
    assert step / 2 < found < _bound(4.0)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda r: r["tokens"].__setitem__(1, 8), r"at token 1: token 7 against 8"),
        (lambda r: r["top_logits"][2].__setitem__(3, 2.5 + 2 * _bound(2.5)),
         r"at token 2: their commitments to token 102's logit are 0\.\d+ apart, beyond"),
        (lambda r: r["top_ids"][0].__setitem__(3, 200),  # hides 102 (2.5), far above 0.5
         r"at token 0: token 102 \(logit 2\.5\) is a candidate of one node and not of the other"),
    ],
)  # fmt: skip
def test_a_difference_beyond_the_rule_names_the_token(change: Callable[..., None],
                                                      match: str) -> None:  # fmt: skip
    reference = _record([5, 7, 9])
    with pytest.raises(VerificationError, match=match):
        generations_agree(reference, _changed(reference, change))


def test_a_near_tie_broken_the_other_way_is_honest() -> None:
    reference = _record([5])
    values = np.array([[4.0, 3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5]], dtype=np.float16)
    other = _changed(reference, lambda r: None)
    other["top_ids"][0, 7] = 300  # its 8th candidate is another token, as near as the bound
    other["top_logits"] = values.copy()
    other["top_logits"][0, 7] = 0.5 + _bound(0.5) / 2
    assert generations_agree(reference, other) == pytest.approx(0.0)


def test_a_generation_that_ends_elsewhere_disagrees_where_it_ends() -> None:
    with pytest.raises(VerificationError, match="at token 2: one generation ends there"):
        generations_agree(_record([5, 7, 9]), _record([5, 7]))
    with pytest.raises(VerificationError, match="at token 3: one generation ends there"):
        generations_agree(_record([5, 7, 9]), _record([5, 7, 9], finish="stop"))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda r: r["top_logits"][1].__setitem__(2, np.nan), "finite logits"),
        (lambda r: r["top_ids"][1].__setitem__(3, 101), "distinct candidates"),
        (lambda r: r.__setitem__("top_ids", r["top_ids"][:, :4]), "one row of 8 candidates"),
        (lambda r: r.__setitem__("tokens", r["tokens"].astype(np.int32)), "not a generation's"),
        (lambda r: r.pop("finish"), "not a generation's"),
    ],
)
def test_a_malformed_record_is_refused_not_compared(change: Callable[..., None],
                                                   match: str) -> None:  # fmt: skip
    reference = _record([5, 7])
    with pytest.raises(VerificationError, match=match):
        generations_agree(reference, _changed(reference, change))
    with pytest.raises(VerificationError, match=match):
        generations_agree(_changed(reference, change), reference)
