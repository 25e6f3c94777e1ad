"""Replicated mode: K nodes of distinct operators answer the same request and must agree.

Real nodes served by uvicorn on 127.0.0.1, one of them dishonest (it falsifies its outputs and
signs them as if computed); the SDK, the HTTP API and the CLI. What the right answer is comes from
ONNX Runtime run here directly (:func:`_truth`), never from one of the answers being judged."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
from test_http import IRIS, Served

from verinfer import note, tensors
from verinfer.client import AsyncNetwork, Client, Network, Result
from verinfer.errors import DisagreementError, InputError, VerificationError
from verinfer.examples import sklearn_model
from verinfer.modes.replicated import Agreement
from verinfer.node import Node
from verinfer.testing import FalsifyingEngine
from verinfer.verify import Bundle, verify_bundle

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]


def _truth(model: bytes, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """The model's outputs from a plain ONNX Runtime session in this process: independent of
    verinfer's engine and of every node, so a wrong answer they all share is still wrong."""
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs), strict=True))


def _same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> bool:
    return got.keys() == expected.keys() and all(
        got[name].dtype == expected[name].dtype and np.array_equal(got[name], expected[name])
        for name in expected
    )


@dataclass
class World:
    nodes: dict[str, Served]  # a, b, c honest; liar falsifies every answer
    tmp: Path
    model: bytes  # the published iris model

    def network(self, *names: str, operators: dict[str, str] | None = None) -> Path:
        entries = []
        for name in names:
            if name == "dead":  # a node nobody answers for
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", 0))
                    port = sock.getsockname()[1]
                vkey = note.generate_key("dead")[1]
                entries.append({"url": f"http://127.0.0.1:{port}", "vkey": vkey})
                continue
            served = self.nodes[name]
            entry = {"url": served.url, "vkey": served.node.vkey}
            if operators and name in operators:
                entry["operator"] = operators[name]
            entries.append(entry)
        path = self.tmp / f"net-{'-'.join(names)}.json"
        path.write_text(json.dumps({"nodes": entries}))
        return path

    def vkeys(self, *names: str) -> list[str]:
        return [self.nodes[name].node.vkey for name in names]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("replicated")
    alice = note.Signer(note.generate_key("alice")[0])
    nodes: dict[str, Served] = {}
    opened = []
    try:
        first = Node(tmp / "a", name="a.test")
        opened.append(first)
        model = sklearn_model("iris")
        first.hub.publish(model, repository="alice/iris", version="1", signer=alice)
        nodes["a"] = Served(first)
        for name in ("b", "c", "liar"):  # they fetch the model from a, hash-checked
            engine = FalsifyingEngine(share=1.0) if name == "liar" else None
            node = Node(tmp / name, name=f"{name}.test", peers=[nodes["a"].url], engine=engine)
            opened.append(node)
            nodes[name] = Served(node)
        yield World(nodes, tmp, model)
    finally:
        for served in nodes.values():
            served.stop()
        for node in opened:
            node.close()


def test_three_honest_nodes_agree_and_the_bundle_proves_it(world: World) -> None:
    with Network(world.network("a", "b", "c")) as network:
        result = network.infer("alice/iris", {"X": IRIS}, mode="replicated:3")
    bundle = result.bundle
    nodes = [bundle.receipt["node"], *(r.receipt["node"] for r in bundle.replicas)]
    assert sorted(nodes) == sorted(world.vkeys("a", "b", "c"))
    truth = _truth(world.model, {"X": IRIS})
    assert _same(result.outputs, truth)
    assert {r.receipt["outputs"] for r in bundle.replicas} == {tensors.map_digest(truth)}
    assert bundle.receipt["outputs"] == tensors.map_digest(truth)
    lines: list[str] = []
    verify_bundle(
        Bundle.from_json(bundle.to_json()),
        world.vkeys("a", "b", "c"),
        inputs={"X": IRIS},
        outputs=result.outputs,
        report=lines.append,
    )
    assert any(line.startswith("2+. 3 receipts from distinct trusted nodes") for line in lines)
    for part in (bundle, *bundle.replicas):  # each receipt is an entry of its own node's log
        served = next(s for s in world.nodes.values() if s.node.vkey == part.receipt["node"])
        assert served.node.log.entry(part.index) == part.receipt.data


def test_a_dishonest_node_is_never_outvoted_into_a_verified_answer(world: World) -> None:
    with (
        Network(world.network("a", "b", "liar")) as network,
        pytest.raises(DisagreementError, match="the nodes disagree") as caught,
    ):
        network.infer("alice/iris", {"X": IRIS}, mode="replicated:3")
    error = caught.value
    assert world.nodes["liar"].node.vkey in str(error)
    assert len(error.bundles) == 3  # every signed answer: the evidence of who said what
    for bundle in error.bundles:  # each one is validly signed and logged by its own node
        verify_bundle(bundle, world.vkeys("a", "b", "liar"), inputs={"X": IRIS})
    digests = {b.receipt["node"]: b.receipt["outputs"] for b in error.bundles}
    truth = tensors.map_digest(_truth(world.model, {"X": IRIS}))
    assert digests[world.nodes["a"].node.vkey] == digests[world.nodes["b"].node.vkey] == truth
    assert digests[world.nodes["liar"].node.vkey] != truth


def test_with_a_liar_in_the_network_no_wrong_answer_is_ever_returned(world: World) -> None:
    truth = _truth(world.model, {"X": IRIS})
    outcomes = {"agreed": 0, "disagreed": 0}
    with Network(world.network("a", "b", "c", "liar")) as network:
        for _ in range(12):
            try:
                result = network.infer("alice/iris", {"X": IRIS}, mode="replicated:3")
            except DisagreementError:
                outcomes["disagreed"] += 1
                continue
            outcomes["agreed"] += 1
            assert _same(result.outputs, truth)
            assert result.bundle.receipt["outputs"] == tensors.map_digest(truth)
            liar = world.nodes["liar"].node.vkey
            assert liar not in [result.bundle.receipt["node"]] + [
                r.receipt["node"] for r in result.bundle.replicas
            ]
    assert outcomes["agreed"] > 0  # round-robin picks trios with and without the liar
    assert outcomes["disagreed"] > 0


def test_operators_must_be_distinct_and_dead_nodes_are_replaced(world: World) -> None:
    same = world.network("a", "b", "c", operators={"a": "acme", "b": "acme"})
    with Network(same) as network:
        with pytest.raises(
            InputError, match=r"needs 3 nodes of distinct operators; the network has 2"
        ):
            network.infer("alice/iris", {"X": IRIS}, mode="replicated:3")
        assert network.infer("alice/iris", {"X": IRIS}, mode="replicated:2").bundle.replicas
    with Network(world.network("dead", "a", "b", "c")) as network:
        result = network.infer("alice/iris", {"X": IRIS}, mode="replicated:3")
    assert len(result.bundle.replicas) == 2


def test_replicated_bundles_are_tamper_evident(world: World) -> None:
    with Network(world.network("a", "b", "c")) as network:
        result = network.infer("alice/iris", {"X": IRIS}, mode="replicated:3", nonce="n1")
    trusted = world.vkeys("a", "b", "c")
    bundle = result.bundle
    first, second = bundle.replicas
    with Client(world.nodes["c"].url, trusted_vkeys=trusted) as client:
        other = client._infer("alice/iris", {"X": IRIS}, mode="replicated:3", nonce="n2").bundle

    def swapped(*replicas: Bundle) -> Bundle:
        return Bundle(bundle.receipt, bundle.index, bundle.proof, bundle.checkpoint,
                      evidence=Agreement(replicas))  # fmt: skip

    cases = {
        "the same node twice": (swapped(first, first), trusted, "again; replicated:3 needs"),
        "a replica of another request": (swapped(first, other)
                                         if second.receipt["node"] == other.receipt["node"]
                                         else swapped(other, second), trusted, "has nonce"),
        "an untrusted replica": (bundle, [*trusted[:1], bundle.receipt["node"]], "replica"),
    }  # fmt: skip
    for label, (candidate, keys, message) in cases.items():
        parsed = Bundle.from_json(candidate.to_json())
        with pytest.raises(VerificationError, match=message):
            verify_bundle(parsed, keys)
        assert label
    text = json.loads(bundle.to_json())
    text["evidence"]["replicas"].pop()
    with pytest.raises(VerificationError, match="needs 2 replica bundles"):
        Bundle.from_json(text)
    text = json.loads(bundle.to_json())
    text["evidence"]["replicas"][0]["receipt"] = (
        text["evidence"]["replicas"][0]["receipt"].replace(
            '"outputs":"sha256:', '"outputs":"sha256:0', 1
        )[:-2]
        + '"}'
    )
    with pytest.raises(VerificationError, match="replica 0: malformed receipt: outputs digest"):
        verify_bundle(Bundle.from_json(text), trusted)
    text = json.loads(bundle.to_json())
    text["evidence"] = {}
    with pytest.raises(VerificationError, match="evidence of replicated:3 must hold only"):
        Bundle.from_json(text)


def test_modes_are_checked(world: World) -> None:
    with Client(world.nodes["a"].url, trusted_vkeys=world.vkeys("a")) as client:
        with pytest.raises(InputError, match="asks several nodes: use a Network"):
            client.infer("alice/iris", {"X": IRIS}, mode="replicated:3")
        for bad in ("replicated:1", "replicated:17", "replicated", "optimistic:9"):
            with pytest.raises(InputError, match="is not available"):
                client._infer("alice/iris", {"X": IRIS}, mode=bad, nonce=None)


def test_the_cli_runs_replicated_and_verifies_the_bundle(world: World, tmp_path: Path) -> None:
    network = world.network("a", "b", "c")
    inputs = tmp_path / "x.npz"
    inputs.write_bytes(tensors.encode_binary({"X": IRIS}))
    bundle = tmp_path / "bundle.json"
    env = {**os.environ, "VERINFER_HOME": str(tmp_path / "home")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*VERINFER, *args], capture_output=True, text=True, timeout=120,
                              env=env, check=False)  # fmt: skip

    answered = run("infer", "alice/iris", "--inputs", str(inputs), "--network", str(network),
                   "--mode", "replicated:3", "--bundle", str(bundle))  # fmt: skip
    assert answered.returncode == 0, answered.stderr
    trust = tmp_path / "trust.txt"
    trust.write_text("\n".join(world.vkeys("a", "b", "c")) + "\n")
    checked = run("verify", str(bundle), "--trust", str(trust), "--inputs", str(inputs))
    assert checked.returncode == 0, checked.stderr
    assert "2+. 3 receipts from distinct trusted nodes" in checked.stdout
    trust.write_text("\n".join(world.vkeys("a", "b")) + "\n")
    refused = run("verify", str(bundle), "--trust", str(trust))
    assert refused.returncode == 1
    assert "is not a trusted key" in refused.stderr
    liar = run("infer", "alice/iris", "--inputs", str(inputs), "--mode", "replicated:3",
               "--network", str(world.network("a", "b", "liar")))  # fmt: skip
    assert liar.returncode == 1
    assert "the nodes disagree" in liar.stderr


# -- both drivers of the network: one set of decisions, driven by threads or by asyncio -----


def _network_sync(path: Path, mode: str) -> Result:
    with Network(path) as network:
        return network.infer("alice/iris", {"X": IRIS}, mode=mode)


def _network_async(path: Path, mode: str) -> Result:
    async def main() -> Result:
        async with AsyncNetwork(path) as network:
            return await network.infer("alice/iris", {"X": IRIS}, mode=mode)

    return asyncio.run(main())


@pytest.mark.parametrize("drive", [_network_sync, _network_async], ids=["sync", "async"])
def test_both_network_drivers_make_the_same_decisions(
    world: World, drive: Callable[[Path, str], Result]
) -> None:
    truth = _truth(world.model, {"X": IRIS})
    agreed = drive(world.network("dead", "a", "b", "c"), "replicated:3")  # the dead one replaced
    assert _same(agreed.outputs, truth)
    nodes = [agreed.bundle.receipt["node"], *(r.receipt["node"] for r in agreed.bundle.replicas)]
    assert sorted(nodes) == sorted(world.vkeys("a", "b", "c"))
    verify_bundle(agreed.bundle, world.vkeys("a", "b", "c"), inputs={"X": IRIS})
    with pytest.raises(DisagreementError, match="the nodes disagree") as caught:
        drive(world.network("a", "b", "liar"), "replicated:3")
    assert len(caught.value.bundles) == 3
    with pytest.raises(InputError, match="needs 3 nodes of distinct operators; the network has 2"):
        drive(world.network("a", "b", "c", operators={"a": "acme", "b": "acme"}), "replicated:3")
    single = drive(world.network("dead", "a"), "attested")  # fail-over past the dead node
    assert single.bundle.receipt["node"] == world.nodes["a"].node.vkey
    assert _same(single.outputs, truth)
