"""The ``verinfer`` command, run as a user runs it: a real process, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VERINFER, *args], check=False, capture_output=True, text=True, timeout=120
    )


def test_demo_appends_proves_verifies_and_catches_tampering(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run("demo", "--local", "--data", str(data), "--batches", "3", "--batch-size", "200")
    assert result.returncode == 0, result.stderr
    assert "is in the tree of size 600" in result.stdout
    assert "tree of size 200 is a prefix of size 600" in result.stdout
    assert "an altered entry 300 is rejected" in result.stdout
    assert "full audit: all 600 entries" in result.stdout
    # then a model is published, answered with a bundle and verified offline, steps 1-6
    assert "published demo/mlp@1" in result.stdout
    for step in ("1. checkpoint", "2. receipt is entry 600", "3. model bytes", "4. inputs", "6."):
        assert step in result.stdout, step
    assert "an altered output is rejected: step 5 (outputs)" in result.stdout
    for name in ("node.skey", "publisher.skey"):
        key = data / name
        assert key.stat().st_mode & 0o777 == 0o600
        assert key.read_text().strip() not in result.stdout + result.stderr  # never printed
    # a second run continues the same log with the same key
    again = run("demo", "--local", "--data", str(data), "--batches", "1", "--batch-size", "10")
    assert again.returncode == 0, again.stderr
    assert "full audit: all 611 entries" in again.stdout  # 600, a receipt, then 10 more
    assert "receipt 611 of the node's log" in again.stdout  # the published model is reused


def test_demo_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert (
        run(
            "demo", "--local", "--data", str(data), "--batches", "1", "--batch-size", "1"
        ).returncode
        == 0
    )
    os.chmod(data / "node.skey", 0o644)
    result = run("demo", "--local", "--data", str(data), "--batches", "1", "--batch-size", "1")
    assert result.returncode == 1
    assert "readable by others" in result.stderr


def test_usage_errors_exit_2() -> None:
    result = run("demo", "--local", "--batches", "0")
    assert result.returncode == 2
    assert "--batches" in result.stdout + result.stderr
    assert run("no-such-command").returncode == 2


def test_demo_runs_a_devnet_end_to_end_and_stops_it(tmp_path: Path) -> None:
    """`make demo`: 3 nodes, two real models, verified answers through every node, an offline
    check, tampering caught, logs proven to grow, then every node stopped."""
    network = tmp_path / "net"
    result = run("demo", "--dir", str(network))
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    for model in ("demo/digits@1", "demo/squeezenet@1"):
        assert f"✓ {model} → model bafkrei" in text
    assert "12 answers, every bundle verified" in text
    for step in ("1. checkpoint", "2. receipt is entry", "3. model bytes", "4. inputs", "5. out"):
        assert step in text, step
    assert "6. re-executed here" in text
    assert "an altered output is rejected: step 5 (outputs)" in text
    assert "a receipt with another nonce is rejected: step 2 (inclusion)" in text
    assert "under another node's key only is rejected: step 1 (checkpoint)" in text
    assert "replicated:3: 3 nodes answered the same request and agree" in text
    assert "cosigned by the 2 other nodes' witnesses" in text
    for name, size in (("node-1", 6), ("node-2", 5), ("node-3", 5)):  # 2 cold, 2 warm, 1-2 more
        assert f"{name}: size 2 is a prefix of size {size}" in text, name
    rows = [line for line in text.splitlines() if "attested" in line]
    assert len(rows) == 6
    assert all("yes" in row for row in rows)
    assert sum("8/8 digits right" in row for row in rows) == 3
    assert "3 nodes stopped cleanly" in text
    # every node is down; what the demo saved verifies again, offline, from the command line
    for node in json.loads((network / "network.json").read_text())["nodes"]:
        with pytest.raises(ProcessLookupError, match="No such process"):
            os.kill(node["pid"], 0)
    files = {name: str(network / name) for name in ("bundle.json", "trust.txt")}
    again = run(
        "verify", files["bundle.json"], "--trust", files["trust.txt"],
        "--inputs", str(network / "inputs.npz"), "--outputs", str(network / "outputs.npz"),
        "--model", str(network / "squeezenet.onnx"), "--reexecute",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "6. re-executed here" in again.stdout
    assert "outputs are bit-identical" in again.stdout
    swapped = run(
        "verify", files["bundle.json"], "--trust", files["trust.txt"],
        "--outputs", str(network / "inputs.npz"),
    )  # fmt: skip
    assert swapped.returncode == 1
    assert "step 5 (outputs)" in swapped.stderr
