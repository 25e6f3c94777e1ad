"""A node's kernel class is its own claim (issue 15, item 7): a node that names a class verinfer
does not know gains nothing from it. Real nodes on 127.0.0.1, the SDK's replicated mode."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_http import IRIS, Served

from verinfer import engine, note
from verinfer.client import Network
from verinfer.engine import Engine
from verinfer.errors import VerificationError
from verinfer.examples import sklearn_model
from verinfer.node import Node


class ClaimingEngine(Engine):
    """Runs the model honestly and names ``kernel`` as its kernel class in every receipt."""

    def __init__(self, kernel: str, **options: Any) -> None:
        super().__init__(**options)
        self.kernel = kernel

    @property
    def identity(self) -> str:
        return engine.identity().rpartition("/")[0] + "/" + self.kernel


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Served, Path]]:
    tmp = tmp_path_factory.mktemp("claims")
    alice = note.Signer(note.generate_key("alice")[0])
    honest = Node(tmp / "honest", name="honest.test")
    claimer = Node(tmp / "claimer", name="claimer.test", engine=ClaimingEngine("quantum"))
    honest.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    claimer.hub.pull("alice/iris", honest.hub)  # one signed history on both
    served = (Served(honest), Served(claimer))
    network = tmp / "network.json"
    network.write_text(json.dumps({"nodes": [{"url": s.url, "vkey": s.node.vkey} for s in served]}))
    try:
        yield served[0], served[1], network
    finally:
        for running in served:
            running.stop()
        honest.close()
        claimer.close()


def test_a_replicated_answer_naming_an_unknown_kernel_class_is_refused(
    pair: tuple[Served, Served, Path],
) -> None:
    """Both nodes answer the same bytes; one names kernel class 'quantum'. Were it accepted,
    the next answer it gives with other bits would be judged within a tolerance nobody
    measured for that class."""
    network = pair[2]
    with (
        Network(network) as nodes,
        pytest.raises(VerificationError, match="names kernel class 'quantum', which is not"),
    ):
        nodes.infer("alice/iris", {"X": IRIS}, mode="replicated:2")
