"""Hypothesis-generated tensors against a real node on 127.0.0.1: whatever the inputs (any dtype,
rank, shape, value, name, encoding, or a malformed JSON form), the node answers a verified
bundle or a 4xx JSON error naming the problem; never a 500, never a hang."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_http import Served

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
from hub_models import multi_io_model

from verinfer import note, tensors
from verinfer.examples import sklearn_model
from verinfer.node import Node
from verinfer.verify import Bundle, verify_bundle

DTYPES = ["float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool"]
NAMES = st.sampled_from(["X", "x", "k", "y"]) | st.text(max_size=8)
SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    alice = note.Signer(note.generate_key("alice")[0])
    with Node(tmp_path_factory.mktemp("fuzz") / "node") as node:
        node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
        node.hub.publish(multi_io_model(), repository="alice/multi", version="1", signer=alice)
        running = Served(node)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture(scope="module")
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=60) as client:
        yield client


def _post(http: httpx.Client, model: str, inputs: Any) -> httpx.Response:
    body = {"model": model, "inputs": inputs, "nonce": "fuzz"}
    return http.post(
        "/v1/infer",
        content=json.dumps(body, allow_nan=True),
        headers={"content-type": "application/json"},
    )


def _check(served: Served, response: httpx.Response, sent: dict[str, np.ndarray] | None) -> None:
    assert response.status_code in {200, 400, 404, 413, 422}, response.text[:300]
    answer = response.json()
    if response.status_code == 200:  # a real answer: its bundle proves exactly these tensors
        outputs = tensors.decode_json(answer["outputs"])
        verify_bundle(
            Bundle.from_json(answer["bundle"]), [served.node.vkey], inputs=sent, outputs=outputs
        )
    else:
        assert isinstance(answer["code"], str)
        assert answer["message"]


@st.composite
def named_arrays(draw: st.DrawFn) -> dict[str, np.ndarray]:
    count = draw(st.integers(1, 3))
    out = {}
    for _ in range(count):
        dtype = draw(st.sampled_from(DTYPES))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
        out[draw(NAMES)] = draw(hnp.arrays(np.dtype(dtype), shape))
    return out


@given(model=st.sampled_from(["alice/iris", "alice/multi"]), inputs=named_arrays(),
       raw=st.booleans())  # fmt: skip
@example(model="alice/iris", inputs={"X": np.ones((3, 4), np.float32)}, raw=False)
@example(model="alice/multi", raw=True,
         inputs={"x": np.ones((2, 3), np.float32), "k": np.ones((1, 3), np.int64)})  # fmt: skip
@SETTINGS
def test_any_tensors_get_a_bundle_or_a_named_4xx(
    served: Served, http: httpx.Client, model: str, inputs: dict[str, np.ndarray], raw: bool
) -> None:
    finite = all(a.dtype.kind != "f" or np.isfinite(a).all() for a in inputs.values())
    response = _post(http, model, tensors.encode_json(inputs, raw=raw or not finite))
    _check(served, response, inputs)
    if response.status_code != 200:
        message = response.json()["message"]  # names the tensor (given or expected) at fault
        assert any(repr(name) in message for name in [*inputs, "X", "x", "k"]), message


@given(
    rows=st.integers(0, 64),
    values=st.floats(width=32, allow_nan=True, allow_infinity=True),
)
@SETTINGS
def test_valid_shapes_with_any_float_values_are_answered_or_named(
    served: Served, http: httpx.Client, rows: int, values: float
) -> None:
    inputs = {"X": np.full((rows, 4), values, dtype=np.float32)}
    response = _post(http, "alice/iris", tensors.encode_json(inputs, raw=True))
    _check(served, response, inputs)
    if rows > 0:  # NaN and infinity are data too: the digests cover their exact bytes
        assert response.status_code == 200, response.text[:300]


@given(
    item=st.fixed_dictionaries(
        {},
        optional={
            "dtype": st.sampled_from(DTYPES) | JSON,
            "shape": st.lists(st.integers(-2, 2**40), max_size=9) | JSON,
            "data": JSON,
            "base64": st.text(max_size=40) | st.binary(max_size=30).map(lambda b: b.hex()),
            "extra": JSON,
        },
    )
)
@SETTINGS
def test_malformed_json_tensors_get_a_named_4xx(
    served: Served, http: httpx.Client, item: dict[str, Any]
) -> None:
    response = _post(http, "alice/iris", {"X": item})
    _check(served, response, None)
    if response.status_code == 200:  # the fuzzer spelled a valid tensor: it is proven
        return
    assert "'X'" in response.json()["message"] or response.status_code == 422


@given(inputs=JSON)
@SETTINGS
def test_inputs_that_are_not_a_tensor_map_get_a_4xx(
    served: Served, http: httpx.Client, inputs: Any
) -> None:
    _check(served, _post(http, "alice/iris", inputs), None)


def test_a_huge_declared_shape_is_refused_before_any_allocation(
    served: Served, http: httpx.Client
) -> None:
    item = {"dtype": "float64", "shape": [2**31, 2**31, 2**31], "base64": ""}
    response = _post(http, "alice/iris", {"X": item})
    assert response.status_code == 400
    assert "exceed" in response.json()["message"]


def test_nothing_was_logged_for_refused_requests(served: Served, http: httpx.Client) -> None:
    """Every entry of the log is a receipt of an answered request: the log stays valid."""
    served.node.log.verify()
    checkpoint = http.get("/v1/log/checkpoint").text
    assert note.verify_checkpoint(checkpoint, [served.node.vkey])[0].size == served.node.log.size
