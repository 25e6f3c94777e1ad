#!/usr/bin/env python3
"""Mutation testing of the trust layer (not part of ``make test``: it takes tens of minutes).

mutmut rewrites source files, so this never runs in the working tree: it clones the committed
HEAD of this repository into a scratch directory (``--work``, default a new temporary one), runs
``mutmut run`` there for each target with a small, fast test selection, with ``PYTHONPATH`` on
the clone's mutated sources (the venv's editable install points at the working tree), and prints
the score per target: killed / (killed + survived), timeouts counted as killed. ``--show``
prints the diff of every surviving mutant.

    .venv/bin/python scripts/mutation.py                   # every target below
    .venv/bin/python scripts/mutation.py witness --show    # one target, with its survivors
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# target -> (files to mutate, the tests that judge them)
TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "verifier": (
        ["src/verinfer/verify/verifier.py"],
        [
            "tests/verify",
            "tests/node/test_witness.py",
            "tests/node/test_witness_operators.py",
            "tests/node/test_kernel_claims.py",
        ],
    ),
    "evidence": (["src/verinfer/verify/evidence.py"], ["tests/verify"]),
    "bundle": (["src/verinfer/verify/bundle.py"], ["tests/verify"]),
    "witness": (["src/verinfer/witness.py"], ["tests/node/test_witness.py", "tests/verify"]),
    "modes": (["src/verinfer/modes/*"], ["tests/modes"]),
}
_STATUS = re.compile(r"^\s*(\S+): (killed|survived|timeout|suspicious|no tests|skipped|"
                     r"segfault|not checked|check was interrupted by user)\s*$")  # fmt: skip


def _run_target(
    work: Path, name: str, children: int, show: bool, mutants: list[str]
) -> Counter[str]:
    files, tests = TARGETS[name]
    shutil.rmtree(work / "mutants", ignore_errors=True)
    config = [
        "[mutmut]",
        "source_paths = src",
        "only_mutate =\n    " + "\n    ".join(files),
        "pytest_add_cli_args_test_selection =\n    " + "\n    ".join(tests),
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -x",
        "",
    ]
    (work / "setup.cfg").write_text("\n".join(config))
    # the mutated sources come first on the path (the venv's editable install points at the
    # working tree); the directory must exist before Python starts, or its import cache keeps
    # "nothing here" for it and the tests silently import the unmutated working tree
    (work / "mutants" / "src").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(work / "mutants" / "src")}
    mutmut = [str(Path(sys.executable).with_name("mutmut"))]
    subprocess.run([*mutmut, "run", "--max-children", str(children), *mutants], cwd=work,
                   env=env, check=False, stdout=subprocess.DEVNULL)  # fmt: skip
    listed = subprocess.run([*mutmut, "results", "--all", "true"], cwd=work, env=env,
                            capture_output=True, text=True, check=False).stdout  # fmt: skip
    (work / f"mutation-{name}.txt").write_text(listed)  # every mutant's status, kept
    counts: Counter[str] = Counter()
    survivors = []
    for line in listed.splitlines():
        found = _STATUS.match(line)
        if found:
            counts[found.group(2)] += 1
            if found.group(2) == "survived":
                survivors.append(found.group(1))
    if show:
        for mutant in survivors:
            diff = subprocess.run([*mutmut, "show", mutant], cwd=work, env=env,
                                  capture_output=True, text=True, check=False).stdout  # fmt: skip
            print(f"--- survivor {mutant}\n{diff}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--work", type=Path, help="scratch clone (default: a temporary one)")
    parser.add_argument("--children", type=int, default=2, help="mutants run at once")
    parser.add_argument("--show", action="store_true", help="print every surviving mutant")
    parser.add_argument(
        "--mutants",
        action="append",
        default=[],
        help="only the mutants matching this glob (repeatable), e.g. "
        "'verinfer.verify.verifier.x__cosigned*'",
    )
    args = parser.parse_args()
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose among {list(TARGETS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="verinfer-mutation-"))
    if work.resolve() == ROOT:
        sys.exit("refusing to mutate the working tree itself: give another --work")
    if not (work / ".git").exists():
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(work)], check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=work,
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    print(f"clone: {work} at {head}", flush=True)
    for name in args.targets or TARGETS:
        counts = _run_target(work, name, args.children, args.show, args.mutants)
        killed = counts["killed"] + counts["timeout"]
        judged = killed + counts["survived"]
        score = f"{100 * killed / judged:.1f}%" if judged else "n/a"
        rest = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(f"{name}: score {score} ({killed} of {judged} killed; {rest})", flush=True)


if __name__ == "__main__":
    main()
