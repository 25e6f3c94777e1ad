"""The seam for lying nodes: a fake engine (``verinfer.testing``) given to an ordinary Node, in
process and as a separate ``verinfer node start --test-engine`` process; the production Node has
no switch to lie."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import onnxruntime
import pytest
from test_http import IRIS

from verinfer import note, tensors
from verinfer.client import Client
from verinfer.errors import InputError
from verinfer.examples import sklearn_model
from verinfer.hub import Hub
from verinfer.node import Node
from verinfer.testing import FalsifyingEngine, named_engine
from verinfer.verify import verify_bundle

MODEL = sklearn_model("iris")


def _truth() -> str:
    session = onnxruntime.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return tensors.map_digest(dict(zip(names, session.run(None, {"X": IRIS}), strict=True)))


def _publish(data: Path) -> None:
    alice = note.Signer(note.generate_key("alice")[0])
    with Hub(data / "hub") as hub:
        hub.publish(MODEL, repository="alice/iris", version="1", signer=alice)


def test_a_node_with_a_falsifying_engine_signs_wrong_answers_as_computed(tmp_path: Path) -> None:
    _publish(tmp_path / "node")
    lying = FalsifyingEngine(share=1.0)
    with Node(tmp_path / "node", engine=lying) as node:
        lie = node.infer("alice/iris", {"X": IRIS})
        lying.share = 0.0
        honest = node.infer("alice/iris", {"X": IRIS})
        verify_bundle(lie.bundle, [node.vkey], inputs={"X": IRIS}, outputs=lie.outputs)
    assert honest.bundle.receipt["outputs"] == _truth()
    assert lie.bundle.receipt["outputs"] != _truth()  # signed and logged as if computed


def test_the_node_has_no_dishonest_switch(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'dishonest'"):
        Node(tmp_path / "node", dishonest=1.0)  # type: ignore[call-arg]


def test_bad_test_engines_are_refused_by_name() -> None:
    with pytest.raises(InputError, match=r"falsifying share 1\.5 is not in \[0, 1\]"):
        FalsifyingEngine(share=1.5)
    with pytest.raises(InputError, match="unknown test engine 'lying'; known: falsifying"):
        named_engine("lying:1")
    with pytest.raises(InputError, match="bad test engine argument 'half' for 'falsifying'"):
        named_engine("falsifying:half")


def test_the_cli_starts_a_lying_node_process(tmp_path: Path) -> None:
    data = tmp_path / "node"
    _publish(data)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-c", "from verinfer.cli import main; main()", "node", "start",
         "--data", str(data), "--port", str(port), "--test-engine", "falsifying:1"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "VERINFER_HOME": str(tmp_path)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        while True:  # until it serves (or has died)
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.1)
        with Client(url, known_nodes=tmp_path / "known.json") as client:
            answer = client.infer("alice/iris", {"X": IRIS})  # verified: signed and logged
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert "TEST NODE on the fake engine 'falsifying:1'" in stderr
    assert answer.bundle.receipt["outputs"] != _truth()
