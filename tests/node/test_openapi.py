"""schemathesis against the node's own OpenAPI document: no input may produce a 500 or a hang."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
from hub_models import sklearn_model

from verinfer import note
from verinfer.node import Node
from verinfer.node.app import create_app


@schemathesis.serializer("application/x-npz")
def _npz(_: Any, value: Any) -> bytes:
    """Generated bodies of the binary inference route go out as they are: arbitrary bytes."""
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    alice = note.Signer(note.generate_key("alice")[0])
    with Node(tmp_path_factory.mktemp("openapi") / "node") as opened:
        opened.hub.publish(
            sklearn_model("iris"), repository="alice/iris", version="1", signer=alice
        )
        yield opened


def _fuzz(operation: Any, checked: dict[str, int]) -> None:
    label = operation.label

    @given(case=operation.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        response = case.call()
        assert response.status_code < 500, (label, case.formatted_path, response.text[:300])
        if response.status_code >= 400:  # every error is a JSON body with a stable code
            body = response.json()
            assert isinstance(body.get("code"), str), (label, body)
            assert isinstance(body.get("message"), str), (label, body)
        checked[label] = checked.get(label, 0) + 1

    check()


def test_no_input_produces_a_server_error(node: Node) -> None:
    """Every operation of the node's OpenAPI document, fuzzed from the document itself.

    (schemathesis's pytest plugin does not support pytest 9 yet, so its strategies are driven
    with hypothesis directly.)
    """
    api = schemathesis.openapi.from_asgi("/openapi.json", create_app(node))
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 15  # every route is in the document
    checked: dict[str, int] = {}
    for operation in operations:
        _fuzz(operation, checked)
    assert set(checked) == {operation.label for operation in operations}
