"""The CLI for issue 18's features, run as a user runs it (real processes, real files): plain
lists as inputs, ``--finite-inputs``, what ``model show`` says about the analysis and the probe,
``--outputs FILE``, conflicting flags, and the zk ``--dim`` and ``--srs`` errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from verinfer import tensors
from verinfer.examples import sklearn_model
from verinfer.verify import Bundle

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VERINFER_HOME with alice's key and the iris model published in its hub."""
    home = tmp_path_factory.mktemp("cli-home")
    model = home / "iris.onnx"
    model.write_bytes(sklearn_model("iris"))
    assert _run(home, "key", "generate", "--name", "alice").returncode == 0
    published = _run(home, "model", "publish", str(model), "--name", "alice/iris",
                     "--version", "1")  # fmt: skip
    assert published.returncode == 0, published.stderr
    return home


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VERINFER_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [*VERINFER, *args], check=False, capture_output=True, text=True, timeout=300, env=env
    )


def test_infer_takes_plain_lists_typed_by_the_signature(home: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "x.json"
    inputs.write_text('{"X": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}')
    bundle, outputs = tmp_path / "bundle.json", tmp_path / "out.json"
    answered = _run(home, "infer", "alice/iris", "--inputs", str(inputs), "--bundle",
                    str(bundle), "--outputs", str(outputs))  # fmt: skip
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout == ""  # --outputs FILE: the outputs go there, not to the terminal
    assert f"outputs written to {outputs}" in answered.stderr
    assert tensors.decode_json(json.loads(outputs.read_text()))["label"].tolist() == [0, 2]
    typed = {"X": np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)}
    receipt = Bundle.from_json(bundle.read_text()).receipt
    assert receipt["inputs"] == tensors.map_digest(typed)
    inputs.write_text('{"X": [5.1, 3.5, 1.4, 0.2]}')
    wrong = _run(home, "infer", "alice/iris", "--inputs", str(inputs))
    assert wrong.returncode == 1
    assert "input 'X' is a plain list of shape [4], but the model expects shape" in wrong.stderr
    printed = _run(home, "infer", "alice/iris", "--inputs", str(tmp_path / "x.json"),
                   "--bundle", str(bundle))  # fmt: skip
    assert printed.returncode == 1  # the file now holds the wrong shape


def test_infer_with_both_node_and_network_is_an_error(home: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "x.json"
    inputs.write_text('{"X": [[5.1, 3.5, 1.4, 0.2]]}')
    both = _run(home, "infer", "alice/iris", "--inputs", str(inputs), "--node",
                "http://127.0.0.1:9", "--network", str(tmp_path / "network.json"))  # fmt: skip
    assert both.returncode == 1
    assert "give --node URL or --network FILE, not both" in both.stderr


def test_publish_finite_inputs_and_show_what_the_analysis_found(home: Path, tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("MeanVarianceNormalization", ["x"], ["y"])], "mvn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 2, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 2, 1])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "mvn.onnx"
    path.write_bytes(model.SerializeToString())
    published = _run(home, "model", "publish", str(path), "--name", "alice/mvn", "--version",
                     "1", "--finite-inputs")  # fmt: skip
    assert published.returncode == 0, published.stderr
    shown = _run(home, "model", "show", "alice/mvn@1")
    assert shown.returncode == 0, shown.stderr
    assert "finite values only" in shown.stdout
    assert "inside the function body of MeanVarianceNormalization" in shown.stdout
    inputs = tmp_path / "nan.npz"
    bad = np.zeros((2, 3, 2, 1), np.float32)
    bad[1, 0, 0, 0] = np.nan
    inputs.write_bytes(tensors.encode_binary({"x": bad}))
    refused = _run(home, "infer", "alice/mvn", "--inputs", str(inputs))
    assert refused.returncode == 1
    assert "holds NaN or infinity at index [1, 0, 0, 0]" in refused.stderr


def test_zk_setup_names_a_bad_binding_and_a_missing_srs(home: Path, tmp_path: Path) -> None:
    bad = _run(home, "model", "zk-setup", "alice/iris", "--dim", "X:1=2")
    assert bad.returncode == 1
    assert "--dim X:1: the model has no such symbolic dimension (bindable: X:0)" in bad.stderr
    malformed = _run(home, "model", "zk-setup", "alice/iris", "--dim", "batch")
    assert malformed.returncode == 1
    assert "--dim 'batch': write NAME=N" in malformed.stderr
    missing = _run(home, "model", "zk-setup", "alice/iris", "--srs", str(tmp_path / "none.srs"))
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr
    assert "the SRS file" in missing.stderr
    assert "does not exist" in missing.stderr


def test_model_pull_node_is_the_source(home: Path) -> None:
    shown = _run(home, "model", "pull", "--help")
    assert shown.returncode == 0
    assert "the node (URL) to pull from" in " ".join(shown.stdout.split())
