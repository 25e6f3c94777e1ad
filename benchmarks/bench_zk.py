"""Zero-knowledge benchmark: verinfer's prove path against calling ezkl directly, on the same
circuit and input; verification time and proof size; ZK verification against re-execution.

Models (seeded weights, built in place): an iris-sized MLP (4-16-3), a digits-sized MLP
(64-32-10) and a small CNN (1x8x8 -> conv 4x3x3 -> relu -> dense 10). Local, insecure SRS.
Target: verinfer's prove path at most 1.05x the direct ezkl calls.
Usage: python benchmarks/bench_zk.py [--quick]   (--quick: a 4-8-3 MLP, one round: a smoke run)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ezkl
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from verinfer import examples, zk


def cnn(seed: int) -> tuple[bytes, list[int]]:
    rng = np.random.default_rng(seed)
    conv = (rng.standard_normal((4, 1, 3, 3)) / 3).astype(np.float32)
    dense = (rng.standard_normal((4 * 6 * 6, 10)) / 12).astype(np.float32)
    inits = [numpy_helper.from_array(conv, "k"), numpy_helper.from_array(dense, "w"),
             numpy_helper.from_array(np.array([1, 144], np.int64), "shape")]  # fmt: skip
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "k"],
            ["c"],
            kernel_shape=[3, 3],
            strides=[1, 1],
            pads=[0, 0, 0, 0],
            dilations=[1, 1],
        ),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "w"], ["y"]),
    ]
    return _model(nodes, inits, [1, 1, 8, 8], [1, 10]), [1, 1, 8, 8]


def _model(nodes: list, inits: list, shape_in: list[int], shape_out: list[int]) -> bytes:  # type: ignore[type-arg]
    graph = helper.make_graph(
        nodes, "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def timed(function, rounds: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 1 if args.quick else 3
    print(f"verinfer zk benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
          f"ezkl {ezkl.__version__})")  # fmt: skip
    ok = True
    models = {"iris MLP": (examples.mlp([4, 16, 3], seed=1), [1, 4]),
              "digits MLP": (examples.mlp([64, 32, 10], seed=2), [1, 64]),
              "small CNN": cnn(3)}  # fmt: skip
    if args.quick:  # a smoke run (make test): one small circuit, every step once (a model
        # without a hidden ReLU keeps its output at twice the input scale, 2^-26: beyond float32)
        models = {"small MLP": (examples.mlp([4, 8, 3], seed=1), [1, 4])}
    with tempfile.TemporaryDirectory(prefix="verinfer-bench-zk-") as tmp:
        for name, (data, shape) in models.items():
            work = Path(tmp) / name.replace(" ", "-")
            spec = [{"name": "x", "dtype": "float32", "shape": shape}]
            start = time.perf_counter()
            circuit = zk.setup(data, spec, work)
            setup = time.perf_counter() - start
            x = {"x": np.random.default_rng(9).standard_normal(shape).astype(np.float32)}
            (work / "direct.json").write_text(
                '{"input_data": [' + str(x["x"].reshape(-1).tolist()) + "]}"
            )

            def direct(work: Path = work) -> None:
                ezkl.gen_witness(str(work / "direct.json"), str(work / "model.ezkl"),
                                 str(work / "w.json"), vk_path=str(work / "vk.key"),
                                 srs_path=str(work / "kzg.srs"))  # fmt: skip
                ezkl.prove(str(work / "w.json"), str(work / "model.ezkl"), str(work / "pk.key"),
                           str(work / "p.json"), srs_path=str(work / "kzg.srs"))  # fmt: skip

            base, _ = timed(direct, rounds)
            ours, (outputs, proof) = timed(lambda c=circuit, x=x: zk.prove(c, x), rounds)  # type: ignore[misc]
            verify, _ = timed(lambda c=circuit, p=proof, x=x, o=outputs: zk.verify(  # type: ignore[misc]
                p, c.settings, c.vk, c.srs, [x["x"]], [o["y"]], allow_insecure_srs=True),
                rounds)  # fmt: skip
            session = ort.InferenceSession(data)
            rerun, _ = timed(lambda s=session, x=x: s.run(None, x), 20)
            ratio = ours / base
            ok &= ratio <= 1.05
            print(
                f"{name:<10}: 2^{circuit.logrows} rows, setup {setup:5.1f} s, proving key "
                f"{(work / 'pk.key').stat().st_size / 2**20:6.1f} MiB | prove: ezkl "
                f"{base:5.2f} s, verinfer {ours:5.2f} s ({ratio:4.2f}x, target <= 1.05x) | "
                f"proof {len(proof):,} bytes, verify {verify * 1e3:5.1f} ms = "
                f"{verify / rerun:,.0f}x a re-execution ({rerun * 1e6:.0f} us)"
            )
    print("target met" if ok else "TARGET MISSED")
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
