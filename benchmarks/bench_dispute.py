"""Dispute benchmark: the bisection game on resnet50 and densenet121 (the ``onnx`` package's
light models, seeded weights), a dishonest node that perturbs one step, an honest challenger.

Per model and per position of the lie: rounds taken against ceil(log2 N); the referee's CPU time
(its own thread: checking messages, the Merkle roots of the two revealed states, re-running the
one step, signing the verdict) as a share of one full inference's CPU time on the same thread
count (target: at most 2%); the dispute's wall time, traces included; and the bytes the two sides
and the referee exchange, in the HTTP API's JSON form. Also the attested latency of a node in
optimistic mode against plain attested mode, interleaved (target: at most 1.02x).
Usage: python benchmarks/bench_dispute.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "modes"))
from dishonest import Answering, Perturbing, perturbed_trace

from verinfer import note
from verinfer.engine import load_session
from verinfer.engine.trace import Steps, run_step
from verinfer.examples import light_model
from verinfer.modes.dispute import Dispute, LocalParty, Reveal, decode_npz, encode_npz, settle
from verinfer.node import Node


class Wire:
    """A side reached through the HTTP API's JSON bodies: requests encoded and answers decoded
    as the referee does (its CPU for that is counted in ``referee``), bytes counted."""

    def __init__(self, party: LocalParty) -> None:
        self.party = party
        self.vkey = party.vkey
        self.bytes = 0
        self.referee = 0.0  # CPU seconds the referee spends encoding and decoding

    def _send(self, request: dict[str, Any]) -> None:
        start = time.thread_time()
        self.bytes += len(json.dumps(request))
        self.referee += time.thread_time() - start

    def _receive(self, answer: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(answer)  # what the side sends
        start = time.thread_time()
        self.bytes += len(text)
        decoded: dict[str, Any] = json.loads(text)
        if "tensors" in decoded:
            decoded["arrays"] = decode_npz(decoded["tensors"], "tensors")
        self.referee += time.thread_time() - start
        return decoded

    def opening(self, dispute: Dispute, inputs: Mapping[str, np.ndarray]) -> str:
        request = {"dispute": dispute.header, "inputs": encode_npz(inputs)}
        self._send(request)
        message = self.party.opening(dispute, decode_npz(request["inputs"], "inputs"))
        return str(self._receive({"message": message})["message"])

    def state(self, dispute: Dispute, step: int) -> dict[str, Any]:
        self._send({"dispute": dispute.id, "step": step})
        return self._receive(self.party.state(dispute, step))

    def reveal(self, dispute: Dispute, step: int, names: Sequence[str]) -> Reveal:
        self._send({"dispute": dispute.id, "step": step, "names": list(names)})
        shown = self.party.reveal(dispute, step, names)
        answer = self._receive({"leaves": [list(leaf) for leaf in shown.leaves],
                                "tensors": encode_npz(shown.tensors)})  # fmt: skip
        leaves = [(str(name), str(digest)) for name, digest in answer["leaves"]]
        return Reveal(leaves, answer["arrays"], answer["tensors"])


def _cpu(call: Any) -> tuple[Any, float]:
    start = time.thread_time()
    result = call()
    return result, time.thread_time() - start


def _positions(steps: Steps, count: int) -> list[int]:
    chosen = []
    for target in np.linspace(steps.count * 0.1, steps.count, count).round().astype(int):
        at = int(target)
        while not set(steps.step(at).outputs) & set(steps.live(at)):
            at -= 1
        chosen.append(at)
    return sorted(set(chosen))


def bench_model(name: str, positions: int, tmp: Path) -> dict[str, Any]:
    model = light_model(name, seed=11)
    steps = Steps(model)
    image = np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)
    inputs = {steps.inputs[0]: image}
    session = load_session(model, 1)  # the engine's default: one intra-op thread
    for _ in range(2):
        session.run(None, inputs)
    full = statistics.median(_cpu(lambda: session.run(None, inputs))[1] for _ in range(5))
    _, prepare = _cpu(steps.prepare)  # once per model, cached by a referee
    referee, carol = (note.Signer(note.generate_key(n)[0]) for n in ("referee", "carol"))
    rows = []
    with Node(tmp / name) as node:
        node.hub.publish(model, repository=f"alice/{name}", version="1",
                         signer=note.Signer(note.generate_key("alice")[0]))  # fmt: skip
        engine = node.engine.identity
        chosen = _positions(steps, positions)
        for number, at in enumerate([chosen[-1], *chosen]):  # the first is a warm-up, unreported
            lie = perturbed_trace(steps, inputs, at, 1000.0)
            answered = {n: lie.values[n] for n in steps.outputs}
            honest_engine = node.engine
            node.engine = Answering(answered)
            try:
                result = node.infer(f"alice/{name}", inputs, mode="optimistic")
            finally:
                node.engine = honest_engine
            sides = (
                Wire(Perturbing(node.signer, lambda _: model, lambda d, i: None, engine=engine,
                                at=at)),
                Wire(LocalParty(carol, lambda _: model, lambda d, i: None, engine=engine)),
            )  # fmt: skip
            dispute = Dispute.create(result.bundle, challenger=carol.vkey, referee=referee.vkey)
            sent = encode_npz(inputs)  # as a client sends them
            wall = time.perf_counter()
            verdict, game = _cpu(
                lambda d=dispute, s=sides, e=sent: settle(  # type: ignore[misc]
                    d, inputs, model, defendant=s[0], challenger=s[1], signer=referee,
                    steps=steps, encoded_inputs=e,
                )
            )  # fmt: skip
            wall = time.perf_counter() - wall
            judged = verdict.body["judgement"] or {"op": f"none: {verdict.reason}"}
            wire = sides[0].referee + sides[1].referee
            cpu = game + wire
            rerun = _rerun(steps, verdict.body["judgement"])
            if number == 0:
                continue
            rows.append({
                "at": at, "op": judged["op"], "rounds": len(verdict.body["rounds"]),
                "winner": verdict.winner, "cpu": cpu, "share": cpu / full, "wall": wall,
                "game": game, "wire": wire, "rerun": rerun,
                "bytes": sides[0].bytes + sides[1].bytes, "verdict": len(verdict.data),
            })  # fmt: skip
        latency = _latency(node, f"alice/{name}", inputs)
    return {"name": name, "steps": steps.count, "full": full, "prepare": prepare, "rows": rows,
            "latency": latency}  # fmt: skip


def _rerun(steps: Steps, judgement: dict[str, Any] | None) -> float:
    """The CPU time of re-executing the judged step alone (a fresh session, as the referee
    does), median of three."""
    if not judgement:
        return math.nan
    read = decode_npz(judgement["read"], "read")
    return statistics.median(
        _cpu(lambda: run_step(steps, judgement["step"], read))[1] for _ in range(3)
    )


def _latency(node: Node, model: str, inputs: Mapping[str, np.ndarray]) -> tuple[float, float]:
    for mode in ("attested", "optimistic"):
        node.infer(model, inputs, mode=mode)
    times: dict[str, list[float]] = {"attested": [], "optimistic": []}
    for _ in range(15):
        for mode in ("attested", "optimistic"):
            start = time.perf_counter()
            node.infer(model, inputs, mode=mode)
            times[mode].append(time.perf_counter() - start)
    return statistics.median(times["attested"]), statistics.median(times["optimistic"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="squeezenet only, two positions: a smoke run"
    )
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        # --quick: a smoke run (make test runs it) on the smallest architecture
        for name in ("squeezenet",) if args.quick else ("resnet50", "densenet121"):
            found = bench_model(name, 2 if args.quick else 6, Path(tmp))
            rounds = math.ceil(math.log2(found["steps"]))
            print(f"\n{name}: {found['steps']} steps, ceil(log2 N) = {rounds}; one inference "
                  f"{found['full'] * 1e3:.1f} ms CPU (1 thread); referee's per-model preparation "
                  f"(CID, every state's initializer root; cached) "
                  f"{found['prepare'] * 1e3:.1f} ms")  # fmt: skip
            print(f"{'lie at':>7} {'op':<20} {'rounds':>6} {'winner':<10} {'step re-run':>12} "
                  f"{'share':>7} {'referee CPU':>12} {'share':>7} {'of which JSON':>14} "
                  f"{'dispute':>9} {'exchanged':>10} {'verdict':>9}")  # fmt: skip
            for row in found["rows"]:
                print(f"{row['at']:>7} {row['op']:<20} {row['rounds']:>6} {row['winner']:<10} "
                      f"{row['rerun'] * 1e3:>9.2f} ms {row['rerun'] / found['full']:>6.1%} "
                      f"{row['cpu'] * 1e3:>9.2f} ms {row['share']:>6.1%} "
                      f"{row['wire'] * 1e3:>11.2f} ms "
                      f"{row['wall']:>7.2f} s {row['bytes'] / 1e6:>7.2f} MB "
                      f"{row['verdict'] / 1e6:>6.2f} MB")  # fmt: skip
                ok &= row["rounds"] <= rounds and row["winner"] == "challenger"
            shares = [row["share"] for row in found["rows"]]
            median = statistics.median(shares)
            reruns = [row["rerun"] / found["full"] for row in found["rows"]]
            print(f"re-executing the step: median {statistics.median(reruns):.1%}, max "
                  f"{max(reruns):.1%} of one inference (target <= 2%)")  # fmt: skip
            attested, optimistic = found["latency"]
            ratio = optimistic / attested
            print(f"the referee's whole CPU (messages, hashes, re-run, verdict, JSON): median "
                  f"{median:.1%}, max {max(shares):.1%} of one inference")  # fmt: skip
            print(f"attested latency {attested * 1e3:.1f} ms, optimistic {optimistic * 1e3:.1f} "
                  f"ms: {ratio:.3f}x (target <= 1.02x)")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
