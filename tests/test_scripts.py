"""The fault-injection scenario script runs end to end and reports every scenario behaving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "fault-scenarios.py"


def test_the_fault_scenarios_behave() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--trials", "12", "--n", "4"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert ", 0 wrong" in done.stdout
    assert "analytic 1-(1-pf)^n" in done.stdout
    assert "equivocation caught by gossip" in done.stdout
    assert "all scenarios behaved" in done.stdout
