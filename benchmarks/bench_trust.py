"""Trust benchmark: what replication and audits cost, on a 3-node devnet on loopback.

- replicated:3 against attested, same network, same requests: p50 latency and throughput
  (8 client threads) as ratios;
- audits: the CPU an auditor at rate p spends (its own process plus the audited nodes' CPU for
  serving it), as a share of the CPU the nodes spent answering the audited requests
  (target: at most p + 1%).

Usage: python benchmarks/bench_trust.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from verinfer import devnet, examples, note
from verinfer.audit import Auditor, read_tokens
from verinfer.client import Client, Network

RATE = 0.1


def node_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of the node processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def latency(
    network: Network, model: str, inputs: dict[str, np.ndarray], mode: str, n: int
) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        network.infer(model, inputs, mode=mode)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def throughput(path: Path, model: str, inputs: dict[str, np.ndarray], mode: str, n: int) -> float:
    threads, per = 8, max(1, n // 8)

    def work() -> None:
        with Network(path, known_publishers=path.with_name("publishers.json")) as network:
            for _ in range(per):
                network.infer(model, inputs, mode=mode)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return threads * per / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(f"verinfer trust benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    scale = 0.02 if args.quick else 1.0  # --quick: a smoke run (make test runs it)
    ok = True
    with tempfile.TemporaryDirectory(prefix="verinfer-bench-trust-") as tmp:
        directory = Path(tmp)
        nodes = devnet.up(directory, 3)
        try:
            publisher = note.Signer(note.generate_key("bench")[0])
            with Client(nodes[0]["url"], trusted_vkeys=[nodes[0]["vkey"]]) as first:
                for name, data in (
                    ("iris", examples.sklearn_model("iris")),
                    *(
                        ()
                        if args.quick
                        else (("squeezenet", examples.light_model("squeezenet", seed=1)),)
                    ),
                ):
                    first.publish(data, repository=f"bench/{name}", version="1",
                                  signer=publisher)  # fmt: skip
            cases = {
                "iris": ({"X": np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)}, 200, 2000),
                "squeezenet": (
                    {"data_0": np.random.default_rng(0).random((1, 3, 224, 224), np.float32)},
                    20, 400,
                ),
            }  # fmt: skip
            if args.quick:  # the small model only
                del cases["squeezenet"]
            path = directory / devnet.NETWORK_FILE
            pids = [int(node["pid"]) for node in nodes]
            with Network(path, trusted_publishers=[publisher.vkey]) as network:
                for name, (inputs, latency_runs, audit_runs) in cases.items():
                    model = f"bench/{name}"
                    for _ in range(1 if args.quick else 3):  # every node fetches the model
                        network.infer(model, inputs, mode="replicated:3")
                    n_latency = max(3, int(latency_runs * scale))
                    att = latency(network, model, inputs, "attested", n_latency)
                    rep = latency(network, model, inputs, "replicated:3", n_latency)
                    att_rate = throughput(path, model, inputs, "attested", n_latency * 2)
                    rep_rate = throughput(path, model, inputs, "replicated:3", n_latency * 2)
                    print(
                        f"{name:<10}: p50 attested {att * 1e3:6.1f} ms, replicated:3 "
                        f"{rep * 1e3:6.1f} ms ({rep / att:4.2f}x) | throughput attested "
                        f"{att_rate:6.1f}/s, replicated:3 {rep_rate:6.1f}/s "
                        f"({rep_rate / att_rate:4.2f}x)"
                    )
                    # audits: the auditor catches up first (its model fetch and session)
                    nodes_pairs = [(str(n["url"]), str(n["vkey"])) for n in nodes]
                    tokens = read_tokens(directory / devnet.AUDIT_TOKENS_FILE)  # private tensors
                    with Auditor(nodes_pairs, RATE, seed=7, tokens=tokens) as auditor:
                        auditor.round()
                        warm = auditor.audited
                        n_audit = max(5 if args.quick else 20, int(audit_runs * scale))
                        before = node_cpu(pids)
                        for _ in range(n_audit):
                            network.infer(model, inputs)
                        answering = node_cpu(pids) - before
                        before, own = node_cpu(pids), time.process_time()
                        findings = auditor.round()
                        auditing = node_cpu(pids) - before + time.process_time() - own
                        audited = auditor.audited - warm
                    share = auditing / answering
                    met = share <= RATE + 0.01
                    ok &= met
                    print(
                        f"{'':<10}  audit at p={RATE}: {audited} entries re-run, "
                        f"{len(findings)} findings; CPU {auditing:.2f} s for {answering:.2f} s of "
                        f"answering = {share:.1%} (target <= {RATE + 0.01:.0%}: "
                        f"{'met' if met else 'MISSED'})"
                    )
        finally:
            devnet.down_nodes(nodes)
    print("targets met" if ok else "SOME TARGETS MISSED")
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
