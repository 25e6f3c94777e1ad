"""Every benchmark runs, in its quick mode, so that none can rot unnoticed (``make bench`` runs
them in full); and pytest's own summary line stays visible."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BENCHMARKS = sorted(path.name for path in (ROOT / "benchmarks").glob("bench_*.py"))


def test_every_benchmark_is_listed_here_and_in_make_bench() -> None:
    assert len(BENCHMARKS) >= 6
    makefile = (ROOT / "Makefile").read_text()
    for name in BENCHMARKS:
        assert f"benchmarks/{name}" in makefile, name


@pytest.mark.parametrize("name", BENCHMARKS)
def test_a_benchmark_runs_in_quick_mode(name: str, tmp_path: Path) -> None:
    env = {**os.environ, "VERINFER_HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), "--quick"],
        check=False, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    assert "target" in last.lower(), done.stdout[-2000:]  # it got to its verdict line


def test_pytest_quiet_still_prints_the_summary_line(tmp_path: Path) -> None:
    """pyproject's addopts has no -q: ``pytest -q`` (as the README says) is one -q, which keeps
    the final "N passed" line (two hide it)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "test_cid.py")],
        check=False, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert " passed" in done.stdout.strip().splitlines()[-1]
