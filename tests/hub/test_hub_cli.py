"""``verinfer key`` and ``verinfer model``, run as a user runs them: real processes, real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_models import LIGHT_MODELS, sklearn_model

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VERINFER_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [*VERINFER, *args], check=False, capture_output=True, text=True, timeout=300, env=env
    )


def test_publish_list_show_pull_verify(home: Path, tmp_path: Path) -> None:
    model = tmp_path / "digits.onnx"
    model.write_bytes(sklearn_model("digits"))
    generated = run(home, "key", "generate", "--name", "alice")
    assert generated.returncode == 0, generated.stderr
    vkey = generated.stdout.strip().splitlines()[-1]
    assert vkey.startswith("alice+")
    skey = (home / "keys" / "default.skey").read_text().strip()

    published = run(
        home, "model", "publish", str(model), "--name", "alice/digits", "--version", "1.0.0",
        "--description", "handwritten digits", "--license", "MIT", "--tag", "vision",
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    lines = dict(line.split(maxsplit=1) for line in published.stdout.splitlines())
    assert lines["published"] == "alice/digits@1.0.0"
    model_cid, manifest_cid = lines["model"], lines["manifest"]

    listed = run(home, "model", "list", "--tag", "vision")
    assert listed.returncode == 0, listed.stderr
    assert "alice/digits" in listed.stdout
    assert "handwritten digits" in listed.stdout

    shown = run(home, "model", "show", "alice/digits@1.0.0")
    assert shown.returncode == 0, shown.stderr
    for expected in (manifest_cid, model_cid, vkey, "bit-identical", "X: float32[?, 64]", "MIT"):
        assert expected in shown.stdout, expected

    mirror = tmp_path / "mirror"
    out = tmp_path / "pulled.onnx"
    pulled = run(
        home, "model", "pull", "alice/digits", "--from", str(home / "hub"),
        "--hub", str(mirror), "--output", str(out),
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert out.read_bytes() == model.read_bytes()
    assert run(home, "model", "verify", "--hub", str(mirror)).returncode == 0

    again = run(
        home, "model", "publish", str(model), "--name", "alice/digits", "--version", "1.0.0"
    )
    assert again.returncode == 1
    assert "immutable" in again.stderr

    for result in (generated, published, listed, shown, pulled, again):
        assert skey not in result.stdout + result.stderr  # the private key is never printed


def test_verify_exits_1_on_a_tampered_blob(home: Path, tmp_path: Path) -> None:
    model = tmp_path / "iris.onnx"
    model.write_bytes(sklearn_model("iris"))
    assert run(home, "key", "generate", "--name", "alice").returncode == 0
    published = run(home, "model", "publish", str(model), "--name", "alice/iris", "--version", "1")
    assert published.returncode == 0, published.stderr
    assert run(home, "model", "verify").returncode == 0
    model_cid = published.stdout.split("model", 1)[1].split()[0]
    blob = home / "hub" / "blobs" / model_cid[-2:] / model_cid
    blob.write_bytes(blob.read_bytes().replace(b"skl2onnx", b"skl2onnX"))
    verified = run(home, "model", "verify")
    assert verified.returncode == 1
    assert f"{model_cid}: blob '{model_cid}' is corrupt" in verified.stderr
    pulled = run(
        home, "model", "pull", "alice/iris", "--from", str(home / "hub"),
        "--hub", str(tmp_path / "mirror"),
    )  # fmt: skip
    assert pulled.returncode == 1
    assert "corrupt" in pulled.stderr


def test_refusals_name_the_problem(home: Path, tmp_path: Path) -> None:
    model = tmp_path / "bad.onnx"
    model.write_bytes(LIGHT_MODELS[0].read_bytes()[:2000])
    no_key = run(home, "model", "publish", str(model), "--name", "alice/x", "--version", "1")
    assert no_key.returncode == 1
    assert "verinfer key generate" in no_key.stderr
    assert run(home, "key", "generate", "--name", "alice").returncode == 0
    truncated = run(home, "model", "publish", str(model), "--name", "alice/x", "--version", "1")
    assert truncated.returncode == 1
    assert "malformed ONNX model" in truncated.stderr or "checker" in truncated.stderr
    wrong_owner = run(
        home, "model", "publish", str(LIGHT_MODELS[0]), "--name", "bob/x", "--version", "1"
    )
    assert wrong_owner.returncode == 1
    assert "signing key is named 'alice'" in wrong_owner.stderr
    missing = run(home, "model", "show", "alice/nothing")
    assert missing.returncode == 1
    assert "no repository 'alice/nothing'" in missing.stderr
    usage = run(home, "model", "publish", str(tmp_path / "absent.onnx"), "--name", "alice/x")
    assert usage.returncode == 2


def test_a_large_model_shows_progress_and_round_trips(home: Path, tmp_path: Path) -> None:
    """Above 4 MiB the CLI streams with a progress bar; the bytes come back identical."""
    import numpy as np  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    weights = np.random.default_rng(0).standard_normal((1, 1_500_000)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1_500_000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1_500_000])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "large.onnx"
    path.write_bytes(model.SerializeToString())
    assert path.stat().st_size > 4 << 20
    assert run(home, "key", "generate", "--name", "alice").returncode == 0
    published = run(home, "model", "publish", str(path), "--name", "alice/large", "--version", "1")
    assert published.returncode == 0, published.stderr
    assert "storing" in published.stderr  # the progress bar (on stderr, off stdout)
    shown = run(home, "model", "show", "alice/large")
    assert "1,500,000" in shown.stdout  # parameters
    out = tmp_path / "back.onnx"
    pulled = run(
        home, "model", "pull", "alice/large", "--from", str(home / "hub"),
        "--hub", str(tmp_path / "mirror"), "--output", str(out),
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert out.read_bytes() == path.read_bytes()
