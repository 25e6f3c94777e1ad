"""The fault-injection scenario script runs end to end and reports every scenario behaving."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "fault-scenarios.py"

# Scenario 2 audits a node falsifying a share F of its answers at rate P, N answers a round, and
# passes if the measured detection rate is within 4 sigma of 1 - (1 - P*F)^N = 0.478. With 12
# trials that band was +-0.58, wide enough for every outcome from 0 to 1. With 800 trials (about
# 50 ms each: some 40 s) it is +-0.071, [0.407, 0.549], and excludes the rates of each plausible
# mistake: never or always convicting (0, 1), one audit a round (P*F = 0.15), the rate or the
# share ignored (1-(1-F)^N = 0.94, 1-(1-P)^N = 0.76), a round sampled as a whole
# (P*(1-(1-F)^N) = 0.28), one answer too few or too many (N-1: 0.386, N+1: 0.556).
P, F, N, TRIALS = 0.3, 0.5, 4, 800
WRONG_RATES = (0.0, 1.0, P * F, 1 - (1 - F) ** N, 1 - (1 - P) ** N, P * (1 - (1 - F) ** N),
               1 - (1 - P * F) ** (N - 1), 1 - (1 - P * F) ** (N + 1))  # fmt: skip


def test_the_trial_count_separates_the_right_rate_from_every_wrong_one() -> None:
    expected = 1 - (1 - P * F) ** N
    band = 4 * math.sqrt(expected * (1 - expected) / TRIALS)  # as the script computes it
    assert all(abs(wrong - expected) > band for wrong in WRONG_RATES), band


def test_the_fault_scenarios_behave() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--trials", str(TRIALS), "--n", str(N),
         "--rate", str(P), "--share", str(F)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert ", 0 wrong" in done.stdout
    assert f"/{TRIALS} rounds" in done.stdout
    assert "analytic 1-(1-pf)^n = 0.48 (4 sigma: ±0.07)" in done.stdout
    assert "equivocation caught by gossip" in done.stdout
    assert "honest nodes convicted by Network.check_evidence(): 0" in done.stdout
    assert "30 answers verified (all alice's: 0 squatted), 30 answers from the squatter's" in (
        done.stdout
    )
    assert "all scenarios behaved" in done.stdout
