"""Log benchmark: verinfer's log against pymerkle's SqliteTree, measured in the same run.

Prints ratios (>1 means verinfer is better) for the targets of the log issue:
- batched append throughput with durable commits (>= 1x), while verinfer also stores interior
  hashes and signs a checkpoint per batch;
- inclusion proof at 1,000,000 entries (>= 50x) and consistency proof (>= 5x);
- inclusion proof verification (>= 50,000 per second per core).

Both sides write to files in the same temporary directory, with SQLite's defaults for durability
(pymerkle: rollback journal, synchronous=FULL; verinfer: WAL, synchronous=FULL). Appends alternate
between the two systems and the best round of each counts, so background noise hits both alike.
Usage: python benchmarks/bench_log.py [--entries 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pymerkle import SqliteTree

from verinfer import merkle, note
from verinfer.log import Log

SEED = 20261125


def receipt(i: int) -> bytes:
    """An entry the size of a real receipt (~300 bytes of canonical JSON)."""
    return (
        b'{"engine":"onnxruntime-1.23/cpu/avx2","input":"%064x","mode":"attested",'
        b'"model":"bafkreif2pall7dybz7vecqka3zo24irdwabwdi4wc55jznaq75q7eaavvu",'
        b'"node":"node.example/a","nonce":"%032x","output":"%064x","time":%d}'
        % (i * 7919, i, i * 104729, 1764000000 + i)
    )


BENCH_SKEY, _ = note.generate_key("bench.verinfer.example/log")


def signer() -> note.Signer:
    skey, _ = note.generate_key("bench.verinfer.example/log")
    return note.Signer(skey)


def signer_for_bench() -> note.Signer:
    """The key of the proof benchmark's log; child processes get it through the environment."""
    return note.Signer(os.environ.setdefault("VERINFER_BENCH_SKEY", BENCH_SKEY))


def append_pymerkle(path: Path, batches: list[list[bytes]]) -> float:
    tree = SqliteTree(str(path))
    start = time.perf_counter()
    for batch in batches:
        tree.append_entries(batch)
    elapsed = time.perf_counter() - start
    tree.close()
    return elapsed


def append_verinfer(path: Path, batches: list[list[bytes]]) -> float:
    log = Log.open(path, signer())
    start = time.perf_counter()
    for batch in batches:
        log.append(batch)
    elapsed = time.perf_counter() - start
    log.close()
    return elapsed


def bench_append(workdir: Path, batch_size: int, total: int, rounds: int) -> float:
    batches = [
        [receipt(b * batch_size + i) for i in range(batch_size)] for b in range(total // batch_size)
    ]
    best = {"pymerkle": float("inf"), "verinfer": float("inf")}
    for r in range(rounds):
        best["pymerkle"] = min(
            best["pymerkle"], append_pymerkle(workdir / f"pm-{batch_size}-{r}.db", batches)
        )
        best["verinfer"] = min(
            best["verinfer"], append_verinfer(workdir / f"vi-{batch_size}-{r}", batches)
        )
    rate = {k: total / v for k, v in best.items()}
    ratio = rate["verinfer"] / rate["pymerkle"]
    print(
        f"append, batches of {batch_size:>5}: pymerkle {rate['pymerkle']:>9,.0f}/s  "
        f"verinfer {rate['verinfer']:>9,.0f}/s  ratio {ratio:5.2f}x  (target >= 1x)"
    )
    return ratio


def mean_time(fn: Callable[[int], object], args: list[int]) -> float:
    """Mean seconds per call of ``fn`` over ``args``."""
    start = time.perf_counter()
    for arg in args:
        fn(arg)
    return (time.perf_counter() - start) / len(args)


PHASES = ("cold", "filling", "steady")


def measure(
    system: str, path: str, entries: int, calls: int, warmup: int, steady: int
) -> dict[str, list[float]]:
    """One system's proof timings, in a process of its own (so neither pays for the other's
    heap): a cold pass right after opening the built store; a short warm-up (pymerkle caches
    subroots, verinfer caches full tiles) and a pass while the caches still fill; a long warm-up
    to the caches' steady state (all 3,924 tiles of a 1M log fit verinfer's 64 MiB cache) and the
    steady pass. Arguments come from the same seed for both systems."""
    if system == "pymerkle":
        tree = SqliteTree(path)
        calls_for = {
            "inclusion": lambda i: tree.prove_inclusion(i + 1, entries),
            "consistency": lambda m: tree.prove_consistency(m, entries),
        }
    else:
        log = Log.open(path, signer_for_bench())
        calls_for = {
            "inclusion": lambda i: log.inclusion_proof(i, entries),
            "consistency": lambda m: log.consistency_proof(m, entries),
        }
    rng = random.Random(SEED)
    out = {}
    for name, call in calls_for.items():
        low = 0 if name == "inclusion" else 1

        def args(count: int, low: int = low) -> list[int]:
            return [rng.randrange(low, entries) for _ in range(count)]

        cold = mean_time(call, args(calls))
        mean_time(call, args(warmup))
        filling = mean_time(call, args(calls))
        mean_time(call, args(steady))
        out[name] = [cold, filling, mean_time(call, args(calls))]
    return out


def bench_proofs(
    workdir: Path, entries: int, calls: int, warmup: int, steady_warmup: int
) -> tuple[float, float, float]:
    build = 10_000
    tree = SqliteTree(str(workdir / "pm-big.db"))
    log = Log.open(workdir / "vi-big", signer_for_bench())
    for start in range(0, entries, build):
        batch = [receipt(i) for i in range(start, min(entries, start + build))]
        tree.append_entries(batch)
        log.append(batch)
    assert tree.get_root(entries) == log.root(entries), "the two logs disagree on the root"
    index = random.Random(SEED).randrange(entries)
    proof = log.inclusion_proof(index, entries)
    leaf, root = log.leaf_hash(index), log.root(entries)
    tree.close()
    log.close()
    del tree

    timings = {}
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        for system, path in (("pymerkle", "pm-big.db"), ("verinfer", "vi-big")):
            timings[system] = pool.apply(
                measure,
                (system, str(workdir / path), entries, calls, warmup, steady_warmup),
            )
    results = {}
    for name, target in (("inclusion", 50), ("consistency", 5)):
        pm, vi = timings["pymerkle"][name], timings["verinfer"][name]
        ratios = [p / v for p, v in zip(pm, vi, strict=True)]
        print(f"{name} proof at {entries:,} (target >= {target}x): pymerkle / verinfer in us")
        for phase, p, v, ratio in zip(PHASES, pm, vi, ratios, strict=True):
            print(f"  {phase:<8} {p * 1e6:9.1f} / {v * 1e6:6.1f}  ratio {ratio:6.1f}x")
        results[name] = min(ratios[0], ratios[2])

    # proof verification, one core
    elapsed = mean_time(
        lambda _: merkle.verify_inclusion(leaf, index, entries, proof, root), [0] * 100_000
    )
    rate = 1 / elapsed
    print(
        f"inclusion proof verification ({len(proof)} hashes): {rate:,.0f} per second "
        f"(target >= 50,000)"
    )
    return results["inclusion"], results["consistency"], rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    entries = 20_000 if args.quick else args.entries
    print(f"verinfer log benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    with tempfile.TemporaryDirectory(prefix="verinfer-bench-") as tmp:
        workdir = Path(tmp)
        ratios = [
            bench_append(workdir, 1000, 20_000 if args.quick else 300_000, 1 if args.quick else 3),
            bench_append(workdir, 100, 5_000 if args.quick else 50_000, 1 if args.quick else 3),
        ]
        inclusion, consistency, rate = bench_proofs(
            workdir,
            entries,
            50 if args.quick else 300,
            100 if args.quick else 3_000,
            200 if args.quick else 30_000,
        )
    ok = min(ratios) >= 1 and inclusion >= 50 and consistency >= 5 and rate >= 50_000
    print("all targets met" if ok else "SOME TARGETS MISSED")
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
