"""The ONNX backend node suite through a real node: every case ONNX Runtime passes is published
to a node over HTTP, run there on each of its data sets, compared with the suite's expected
outputs, and its bundle verified by the SDK, except the deliberate refusals listed in
:data:`REFUSED` (each with its reason; docs/PROTOCOL.md §8, "Safety at publish").

The cases come from ``onnx.backend.test.case.node.collect_testcases`` (the generators behind
``onnx/backend/test/data/node/*``: the wheel ships the generators, not the ``.pb`` files), model
and inputs and expected outputs built in memory. One node hosts all of them; a case is "passed
by ONNX Runtime" when a plain ``InferenceSession`` gives the expected outputs within the case's
tolerances on every data set, dtypes and shapes equal.
"""

from __future__ import annotations

import collections
import re
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from test_http import Served

from verinfer import note
from verinfer.client import Client
from verinfer.errors import InputError
from verinfer.node import Node

# why a case ONNX Runtime passes is refused at publish (the message the node answers)
REASONS = {
    "strings": (
        "verinfer hosts fixed-width tensors only: a run's memory limit cannot bound the length "
        "of strings",
        r"has element type 'string'|computes with strings",
    ),
    "no inputs": (
        "a model without inputs answers the same constant to everyone: nothing to request",
        r"the model must have at least one input and one output",
    ),
    "not a tensor": (
        "inputs and outputs are tensors (sequences, maps and optionals have no digest encoding)",
        r"is a (sequence|map|optional|sparse_tensor), not a tensor",
    ),
}

# the deliberate refusals: case -> reason (a key of REASONS)
REFUSED: dict[str, str] = {
    **dict.fromkeys(
        [
            "test_ai_onnx_ml_label_encoder_string_int",
            "test_ai_onnx_ml_label_encoder_string_int_no_default",
            "test_ai_onnx_ml_label_encoder_tensor_mapping",
            "test_ai_onnx_ml_label_encoder_tensor_value_only_mapping",
            "test_equal_string",
            "test_equal_string_broadcast",
            "test_regex_full_match_basic",
            "test_regex_full_match_email_domain",
            "test_regex_full_match_empty",
            "test_string_concat",
            "test_string_concat_broadcasting",
            "test_string_concat_empty_string",
            "test_string_concat_utf8",
            "test_string_concat_zero_dimensional",
            "test_string_split_basic",
            "test_string_split_consecutive_delimiters",
            "test_string_split_empty_string_delimiter",
            "test_string_split_empty_tensor",
            "test_string_split_maxsplit",
            "test_string_split_no_delimiter",
            "test_strnormalizer_export_monday_casesensintive_nochangecase",
            "test_strnormalizer_nostopwords_nochangecase",
        ],
        "strings",
    ),
    **dict.fromkeys(
        [
            "test_identity_opt",
            "test_identity_sequence",
            "test_if_opt",
            "test_if_seq",
            "test_loop13_seq",
            "test_loop16_seq_none",
            "test_sequence_insert_at_back",
            "test_sequence_insert_at_front",
            "test_sequence_map_add_1_sequence_1_tensor",
            "test_sequence_map_add_1_sequence_1_tensor_expanded",
            "test_sequence_map_add_2_sequences",
            "test_sequence_map_add_2_sequences_expanded",
            "test_sequence_map_extract_shapes",
            "test_sequence_map_extract_shapes_expanded",
            "test_sequence_map_identity_1_sequence",
            "test_sequence_map_identity_1_sequence_1_tensor",
            "test_sequence_map_identity_1_sequence_1_tensor_expanded",
            "test_sequence_map_identity_1_sequence_expanded",
            "test_sequence_map_identity_2_sequences",
            "test_sequence_map_identity_2_sequences_expanded",
            "test_split_to_sequence_1",
            "test_split_to_sequence_2",
            "test_split_to_sequence_nokeepdims",
        ],
        "not a tensor",
    ),
    "test_constant": "no inputs",
}


def _same(got: Any, want: Any, rtol: float, atol: float) -> bool:
    """``got`` is ``want`` within the case's tolerances: same kind, dtype and shape."""
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(_same(g, w, rtol, atol) for g, w in zip(got, want, strict=True))
        )
    if want is None or got is None:
        return want is None and got is None
    got, want = np.asarray(got), np.asarray(want)
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    if want.dtype.kind in "fc":
        return bool(np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True))
    return bool(np.array_equal(got, want))


def _input_names(case: Any) -> list[str]:
    stored = {tensor.name for tensor in case.model.graph.initializer}
    return [value.name for value in case.model.graph.input if value.name not in stored]


def _ort_passes(case: Any) -> bool:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(
            case.model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        names = _input_names(case)
        for inputs, outputs in case.data_sets:
            got = session.run(None, dict(zip(names, inputs, strict=False)))
            if len(got) != len(outputs) or not all(
                _same(g, w, case.rtol, case.atol) for g, w in zip(got, outputs, strict=True)
            ):
                return False
    except Exception:  # ONNX Runtime refuses the model or fails on its inputs: not passed
        return False
    return True


@pytest.fixture(scope="module")
def cases() -> list[Any]:
    from onnx.backend.test.case.node import collect_testcases  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators' numpy warnings (divide by zero, ...)
        found = collect_testcases(None)
    assert len(found) > 1000  # the whole suite, not a corner of it
    return sorted(found, key=lambda case: case.name)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with Node(tmp_path_factory.mktemp("backend") / "node") as node:
        running = Served(node)
        try:
            yield running
        finally:
            running.stop()


def _through_the_node(
    client: Client, suite: note.Signer, index: int, case: Any
) -> tuple[str, str | None]:
    """Publish, run every data set, compare, and (inside ``infer``) verify the bundle:
    ``(outcome, detail)``, the outcome ``passed``, ``refused`` or ``failed``."""
    repository = f"suite/{index:04d}"
    try:
        client.publish(
            case.model.SerializeToString(), repository=repository, version="1", signer=suite
        )
    except InputError as exc:
        return "refused", str(exc)
    names = _input_names(case)
    for inputs, outputs in case.data_sets:
        try:
            result = client.infer(repository, dict(zip(names, inputs, strict=False)))
        except Exception as exc:  # reported with the case's name below
            return "failed", f"{type(exc).__name__}: {exc}"
        expected = [value.name for value in case.model.graph.output]
        got = [result.outputs.get(name) for name in expected]
        if not all(_same(g, w, case.rtol, case.atol) for g, w in zip(got, outputs, strict=True)):
            return "failed", "outputs differ from the suite's expected outputs"
    return "passed", None


def test_every_case_onnx_runtime_passes_runs_through_a_node(
    cases: list[Any], served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.process_time()
    passing = [case for case in cases if _ort_passes(case)]
    suite = note.Signer(note.generate_key("suite")[0])
    outcomes: dict[str, tuple[str, str | None]] = {}
    with Client(served.url, known_nodes=tmp_path / "known.json") as client:
        client.node_vkey()  # pinned once, before the threads share the client
        with ThreadPoolExecutor(2) as pool:  # one publishes while the other waits on the node
            futures = {
                case.name: pool.submit(_through_the_node, client, suite, index, case)
                for index, case in enumerate(passing)
            }
            outcomes = {name: future.result() for name, future in futures.items()}
    failed = {name: detail for name, (outcome, detail) in outcomes.items() if outcome == "failed"}
    refused = {name: detail for name, (outcome, detail) in outcomes.items() if outcome == "refused"}
    passed = sum(outcome == "passed" for outcome, _ in outcomes.values())
    with capsys.disabled():
        print(
            f"\nONNX backend node suite: {len(cases)} cases, ONNX Runtime passes {len(passing)}, "
            f"the node passes {passed}, refuses {len(refused)} deliberately "
            f"({dict(collections.Counter(REFUSED.get(n, '?') for n in refused))}); "
            f"{time.process_time() - started:.0f} s of this process's CPU"
        )
    assert failed == {}
    unexpected = {name: detail for name, detail in refused.items() if name not in REFUSED}
    assert unexpected == {}
    for name, detail in refused.items():  # each for its documented reason
        assert re.search(REASONS[REFUSED[name]][1], detail or ""), (name, detail)
    passes_here = {case.name for case in passing}
    assert set(REFUSED) <= passes_here, "a listed refusal ONNX Runtime does not pass: drop it"
    assert passed == len(passing) - len(REFUSED)
