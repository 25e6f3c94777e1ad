"""A writer killed with SIGKILL at any point loses nothing it committed, on both back ends."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verinfer import merkle, note
from verinfer.log import Log

WRITER = Path(__file__).with_name("crash_writer.py")


def run_and_kill(location: str, skey: str, mode: str, rng: random.Random) -> dict[int, bytes]:
    """Start a writer, kill it mid-batch, and return what it acknowledged: {size: root}."""
    pause_at = rng.randint(0, 3)
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), location, skey, mode, str(pause_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    acknowledged: dict[int, bytes] = {}
    wanted = rng.randint(1, 4)

    def record(line: str) -> None:
        if line.startswith("COMMITTED "):
            _, size, root = line.split()
            acknowledged[int(size)] = bytes.fromhex(root)

    try:
        while True:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer exited early: {proc.stderr.read() if proc.stderr else ''}")
            record(line)
            if mode == "pause" and line.startswith("IN-TRANSACTION"):
                break
            if mode == "random" and len(acknowledged) >= wanted:
                time.sleep(rng.uniform(0, 0.03))  # lands inside the next batch most of the time
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
    for line in proc.stdout.read().splitlines():  # acknowledged before the kill, still in the pipe
        record(line)
    proc.stdout.close()
    if proc.stderr:
        proc.stderr.close()
    return acknowledged


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["random", "pause"])
def test_a_writer_killed_mid_batch_loses_nothing_it_committed(
    log_location: str, log_key: tuple[str, str], mode: str
) -> None:
    skey, vkey = log_key
    rng = random.Random(f"{mode}-{log_location[:10]}")
    acknowledged: dict[int, bytes] = {}
    for _ in range(4):
        acknowledged.update(run_and_kill(log_location, skey, mode, rng))
        with Log.open(log_location, note.Signer(skey)) as log:
            # (1) the reopened log still has every acknowledged batch ...
            assert log.size >= max(acknowledged, default=0)
            head, _ = note.verify_checkpoint(log.signed_checkpoint, [vkey])
            assert head.size == log.size
            for size, root in acknowledged.items():
                # (2) ... under the very checkpoint the writer acknowledged ...
                checkpoint, _ = note.verify_checkpoint(log.checkpoint_at(size), [vkey])
                assert checkpoint.root == root
                # (3) ... which the current tree extends
                proof = log.consistency_proof(size, head.size)
                merkle.verify_consistency(size, head.size, root, head.root, proof)
            # (4) every entry, tile and checkpoint in the store is whole and consistent
            log.verify()
            if mode == "pause":
                # the interrupted batch left no trace: the head is the last acknowledged one
                assert log.size == max(acknowledged, default=0)
