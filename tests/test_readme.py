"""The README runs as written: its ``sh`` and ``python`` blocks, in order, in one empty
directory, against the real devnet the README starts, as a new user would run them after
``make demo`` and ``source .venv/bin/activate``. A block whose first line says it is not run
(``# not run by tests/test_readme.py: <why>``) is skipped, and only such blocks are."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from verinfer import devnet

README = Path(__file__).parents[1] / "README.md"
SKIP = "# not run by tests/test_readme.py:"
_BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def blocks() -> list[tuple[str, str]]:
    return [(kind, body) for kind, body in _BLOCK.findall(README.read_text())]


def test_every_skipped_block_says_why() -> None:
    found = blocks()
    assert len(found) >= 15
    skipped = [body for _, body in found if body.startswith(SKIP)]
    assert all(len(body.splitlines()[0]) > len(SKIP) + 5 for body in skipped)
    assert len(found) - len(skipped) >= 9  # the walk-through: hub, log, node, devnet, disputes


def test_the_readme_runs_in_order(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    bin_dir = tmp_path / "bin"  # `verinfer` on PATH, as after `source .venv/bin/activate`
    bin_dir.mkdir()
    launcher = bin_dir / "verinfer"
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} -c "from verinfer.cli import main; '
                        f'main()" "$@"\n')  # fmt: skip
    launcher.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "VERINFER_HOME": str(tmp_path / "home"),
        "COLUMNS": "200",
    }
    ran = 0
    try:
        for number, (kind, body) in enumerate(blocks()):
            if body.startswith(SKIP):
                continue
            command = ["bash", "-euo", "pipefail", "-c", body] if kind == "sh" else [
                sys.executable, "-c", body]  # fmt: skip
            done = subprocess.run(
                command, cwd=work, env=env, capture_output=True, text=True, timeout=600,
                check=False,
            )  # fmt: skip
            assert done.returncode == 0, (
                f"README block {number} ({kind}) failed:\n{body}\n--- stdout\n"
                f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
            )
            ran += 1
    finally:  # the README stops its devnet at the end; a failure half-way must too
        network = work / "net" / devnet.NETWORK_FILE
        if network.is_file():
            devnet.down_nodes(json.loads(network.read_text())["nodes"])
    assert ran >= 9
    assert (work / "bundle.json").is_file()
