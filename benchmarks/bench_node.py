"""Node benchmark: verinfer's node against a minimal FastAPI + uvicorn + ONNX Runtime server.

Both servers run as processes on loopback with the same model and session options and get the
same load: 32 concurrent clients (threads with their own httpx connection) posting the same
request for a fixed number of requests. Prints throughput, p50/p99 latency and the ratio
(targets: >= 0.8x the baseline's throughput on squeezenet, >= 0.6x on iris).
Usage: python benchmarks/bench_node.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx

from verinfer import note, tensors
from verinfer.hub import Hub

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
HERE = Path(__file__).parent
CLI = "from verinfer.cli import main; main()"


def iris_model() -> bytes:
    from skl2onnx import to_onnx  # noqa: PLC0415 - optional, benchmark only
    from sklearn.datasets import load_iris  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    x, y = load_iris(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(max_iter=1000).fit(x, y)
    return to_onnx(model, x[:1].astype(np.float32), options={"zipmap": False}).SerializeToString()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def load(url: str, body: dict[str, Any], total: int, clients: int) -> tuple[float, list[float]]:
    """``total`` requests from ``clients`` threads: (requests per second, latencies)."""
    latencies: list[float] = []
    lock = threading.Lock()
    per = total // clients

    def worker() -> None:
        mine = []
        with httpx.Client(timeout=120) as http:
            for _ in range(per):
                start = time.perf_counter()
                response = http.post(url, json=body)
                mine.append(time.perf_counter() - start)
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.perf_counter() - start), latencies


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(f"verinfer node benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    ok = True
    publisher = note.Signer(note.generate_key("bench")[0])
    with tempfile.TemporaryDirectory(prefix="verinfer-bench-node-") as tmp:
        work = Path(tmp)
        models = {
            "squeezenet": ((LIGHT / "light_squeezenet.onnx").read_bytes(), "data_0",
                           (1, 3, 224, 224), 0.8, 400),
            "iris": (iris_model(), "X", (1, 4), 0.6, 64 if args.quick else 6400),
        }  # fmt: skip
        if args.quick:  # a smoke run (make test runs it): both servers, the small model only
            del models["squeezenet"]
        with Hub(work / "node" / "hub") as hub:
            for name, (data, *_rest) in models.items():
                hub.publish(data, repository=f"bench/{name}", version="1", signer=publisher)
        for name, (data, input_name, shape, target, total) in models.items():
            (work / f"{name}.onnx").write_bytes(data)
            feed = {input_name: np.random.default_rng(0).random(shape, dtype=np.float32)}
            encoded = tensors.encode_json(feed, raw=True)
            results = {}
            for system in ("baseline", "verinfer"):
                port = free_port()
                if system == "baseline":
                    command = [sys.executable, str(HERE / "baseline_server.py"),
                               str(work / f"{name}.onnx"), str(port)]  # fmt: skip
                    url, body = f"http://127.0.0.1:{port}", {"inputs": encoded}
                    path = "/infer"
                else:
                    command = [sys.executable, "-c", CLI, "node", "start", "--data",
                               str(work / "node"), "--port", str(port)]  # fmt: skip
                    url = f"http://127.0.0.1:{port}"
                    body = {"model": f"bench/{name}", "inputs": encoded}
                    path = "/v1/infer"
                process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
                try:
                    wait_up(url + ("/healthz" if system == "verinfer" else "/docs"), process)
                    load(url + path, body, 8 if args.quick else 64, 32)  # warm-up
                    results[system] = load(url + path, body, total, 32)
                finally:
                    process.terminate()
                    process.wait(timeout=60)
            base_rate, base_lat = results["baseline"]
            node_rate, node_lat = results["verinfer"]
            ratio = node_rate / base_rate
            ok &= ratio >= target
            print(
                f"{name:<10}: baseline {base_rate:7.1f}/s p50 {p(base_lat, 50) * 1e3:6.1f} ms "
                f"p99 {p(base_lat, 99) * 1e3:6.1f} ms | verinfer {node_rate:7.1f}/s "
                f"p50 {p(node_lat, 50) * 1e3:6.1f} ms p99 {p(node_lat, 99) * 1e3:6.1f} ms | "
                f"ratio {ratio:4.2f}x (target >= {target}x)"
            )
    print("all targets met" if ok else "SOME TARGETS MISSED")
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
