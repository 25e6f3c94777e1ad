"""The ``verinfer`` command, run as a user runs it: a real process, real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VERINFER, *args], check=False, capture_output=True, text=True, timeout=120
    )


def test_demo_appends_proves_verifies_and_catches_tampering(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run("demo", "--data", str(data), "--batches", "3", "--batch-size", "200")
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
    again = run("demo", "--data", str(data), "--batches", "1", "--batch-size", "10")
    assert again.returncode == 0, again.stderr
    assert "full audit: all 611 entries" in again.stdout  # 600, a receipt, then 10 more
    assert "receipt 611 of the node's log" in again.stdout  # the published model is reused


def test_demo_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run("demo", "--data", str(data), "--batches", "1", "--batch-size", "1").returncode == 0
    os.chmod(data / "node.skey", 0o644)
    result = run("demo", "--data", str(data), "--batches", "1", "--batch-size", "1")
    assert result.returncode == 1
    assert "readable by others" in result.stderr


def test_usage_errors_exit_2() -> None:
    result = run("demo", "--batches", "0")
    assert result.returncode == 2
    assert "--batches" in result.stdout + result.stderr
    assert run("no-such-command").returncode == 2
