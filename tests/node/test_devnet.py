"""`verinfer devnet`: real node processes on loopback, peered, publish on one, infer on another."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
from hub_models import sklearn_model

from verinfer import devnet, merkle, note
from verinfer.client import Client, Network
from verinfer.verify import Bundle, verify_bundles

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]
X = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VERINFER_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [*VERINFER, *args], check=False, capture_output=True, text=True, timeout=180, env=env
    )


def test_devnet_up_publish_infer_everywhere_down(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    started = run(tmp_path, "devnet", "up", "--dir", str(directory), "--nodes", "3")
    assert started.returncode == 0, started.stderr
    try:
        network = devnet.read(directory)
        assert len(network) == 3
        for node in network:  # every node serves the explorer
            assert f"explorer of {node['name']}: {node['url']}/" in started.stdout
        trust = (directory / devnet.TRUST_FILE).read_text().split()
        assert trust == [node["vkey"] for node in network]
        assert run(tmp_path, "devnet", "status", "--dir", str(directory)).returncode == 0
        # the CLI against the network: publish on node 1, list, show, pull, infer anywhere
        model = tmp_path / "iris.onnx"
        model.write_bytes(sklearn_model("iris"))
        assert run(tmp_path, "key", "generate", "--name", "alice").returncode == 0
        first = network[0]["url"]
        published = run(
            tmp_path, "model", "publish", str(model), "--name", "alice/iris", "--version", "1",
            "--node", first,
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        listed = run(tmp_path, "model", "list", "--node", first)
        assert "alice/iris" in listed.stdout, listed.stderr
        shown = run(tmp_path, "model", "show", "alice/iris@1", "--node", first)
        assert "bit-identical" in shown.stdout, shown.stderr
        pulled = run(
            tmp_path, "model", "pull", "alice/iris", "--node", first, "--output",
            str(tmp_path / "back.onnx"),
        )  # fmt: skip
        assert pulled.returncode == 0, pulled.stderr
        assert (tmp_path / "back.onnx").read_bytes() == model.read_bytes()
        (tmp_path / "x.json").write_text(
            '{"X": {"dtype": "float32", "shape": [1, 4], "data": [[5.1, 3.5, 1.4, 0.2]]}}'
        )
        answered = run(
            tmp_path, "infer", "alice/iris", "--inputs", str(tmp_path / "x.json"), "--network",
            str(directory / devnet.NETWORK_FILE), "--bundle", str(tmp_path / "b.json"),
        )  # fmt: skip
        assert answered.returncode == 0, answered.stderr
        assert "(verified)" in answered.stderr
        checked = run(
            tmp_path, "verify", str(tmp_path / "b.json"), "--trust",
            str(directory / devnet.TRUST_FILE), "--inputs", str(tmp_path / "x.json"),
        )  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        bundles = []
        checkpoints: dict[str, list[str]] = {}
        for node in network:  # nodes 2 and 3 fetch the model from their peer
            with Client(node["url"], trusted_vkeys=trust) as client:
                for _ in range(3):
                    result = client.infer("alice/iris", {"X": X})
                    bundles.append(result.bundle)
                    checkpoints.setdefault(node["vkey"], []).append(result.bundle.checkpoint)
                assert {b.receipt["node"] for b in bundles[-3:]} == {node["vkey"]}
        verify_bundles(bundles, trust)
        # each node's checkpoints seen by the client are consistent with its latest one
        for node in network:
            with Client(node["url"], trusted_vkeys=trust) as client:
                latest, _ = note.verify_checkpoint(client.checkpoint(), [node["vkey"]])
                for signed in checkpoints[node["vkey"]]:
                    old, _ = note.verify_checkpoint(signed, [node["vkey"]])
                    proof = client._request(
                        "GET", "/v1/log/proof/consistency",
                        params={"old": old.size, "size": latest.size},
                    ).json()["proof"]  # fmt: skip
                    merkle.verify_consistency(
                        old.size, latest.size, old.root, latest.root,
                        [base64.b64decode(h) for h in proof],
                    )  # fmt: skip
    finally:
        stopped = run(tmp_path, "devnet", "down", "--dir", str(directory))
    assert stopped.returncode == 0, stopped.stderr
    down = run(tmp_path, "devnet", "status", "--dir", str(directory))
    assert down.returncode == 1
    assert "3 of 3 nodes are down" in down.stderr


def _consistent(url: str, vkey: str, seen: list[str]) -> None:
    """Every checkpoint a client saw from a node is a prefix of the node's latest one."""
    with Client(url, trusted_vkeys=[vkey]) as client:
        latest, _ = note.verify_checkpoint(client.checkpoint(), [vkey])
        for signed in set(seen):
            old, _ = note.verify_checkpoint(signed, [vkey])
            proof = client._request(
                "GET", "/v1/log/proof/consistency", params={"old": old.size, "size": latest.size}
            ).json()["proof"]
            merkle.verify_consistency(
                old.size, latest.size, old.root, latest.root, [base64.b64decode(h) for h in proof]
            )


def test_load_with_a_node_killed_and_restarted(tmp_path: Path) -> None:
    """1,000 requests from 32 clients over 3 nodes; one node is SIGKILLed half-way and restarted.

    No request fails (clients fail over), every bundle verifies and its receipt is in its node's
    log, and every checkpoint any client saw is consistent with its node's latest, across the
    crash.
    """
    directory = tmp_path / "net"
    network = devnet.up(directory, 3)
    try:
        trust = [node["vkey"] for node in network]
        alice = note.Signer(note.generate_key("alice")[0])
        with Client(network[0]["url"], trusted_vkeys=trust) as first:
            first.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
        results: list[Bundle] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        killed = threading.Event()

        def client_loop(count: int) -> None:
            with Network(directory / devnet.NETWORK_FILE) as net:
                for _ in range(count):
                    try:
                        bundle = net.infer("alice/iris", {"X": X}).bundle
                    except BaseException as exc:  # any failure fails the test below
                        with lock:
                            errors.append(exc)
                        continue
                    with lock:
                        results.append(bundle)
                        if len(results) == 500 and not killed.is_set():
                            killed.set()
                            os.kill(network[1]["pid"], signal.SIGKILL)

        threads = [threading.Thread(target=client_loop, args=(1000 // 32 + 1,)) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not errors, errors[:3]
        assert len(results) >= 1000
        assert killed.is_set()
        devnet.restart(directory, "node-2")
        verify_bundles(results, trust)
        by_node: dict[str, list[Bundle]] = {}
        for bundle in results:
            by_node.setdefault(bundle.receipt["node"], []).append(bundle)
        assert len(by_node) == 3
        for node in network:
            mine = by_node[node["vkey"]]
            with httpx.Client(base_url=node["url"]) as http:
                for bundle in mine[:: max(1, len(mine) // 50)]:  # a sample of each node's receipts
                    entry = http.get(f"/v1/log/entries/{bundle.index}")
                    assert entry.content == bundle.receipt.data
            _consistent(node["url"], node["vkey"], [b.checkpoint for b in mine])
    finally:
        devnet.down(directory)
