"""``replicated:K`` for text generation and embeddings: K real nodes on loopback answer one
request, each answer verifies on its own, and then they must agree: identical records on one
engine identity; across CPU kernel classes identical tokens and commitments within twice the
generation tolerance. The nodes share one hub and one ONNX Runtime session of SmolLM2 (one
542 MB model in memory); another kernel class, and dishonest nodes, are
:class:`verinfer.testing.SkewedEngine` over that session (the production node has no switch)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from text_support import TextNode

from verinfer import engine, tensors
from verinfer.client import AsyncNetwork, ChatResult, Client, Network
from verinfer.client._text import chat_agreed, chat_request, chat_send
from verinfer.errors import DisagreementError, InputError, VerificationError
from verinfer.hub import Manifest
from verinfer.modes.generation import verify_generation
from verinfer.modes.replicated import Agreement
from verinfer.node import Node
from verinfer.node.app import create_app
from verinfer.testing import SkewedEngine
from verinfer.text.chat import Tokenizer
from verinfer.verify import Bundle, verify_bundle

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [{"role": "user", "content": "Tell me a story."}]
OTHER = "avx2" if engine.kernel_class() != "avx2" else "sse4"  # a class this host is not
VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]


@dataclass
class Served:
    node: Node
    url: str
    server: uvicorn.Server
    thread: threading.Thread


def _serve(node: Node) -> Served:
    config = uvicorn.Config(create_app(node), host="127.0.0.1", port=0, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return Served(node, f"http://127.0.0.1:{port}", server, thread)


@dataclass
class Cluster:
    nodes: dict[str, Served]  # a (the session's node), b: one engine; other: another class;
    # liar: other tokens; shifted: the same tokens, commitments off by 0.5
    text: TextNode
    tmp: Path

    def network(self, *names: str) -> Path:
        entries = [{"url": self.nodes[n].url, "vkey": self.nodes[n].node.vkey} for n in names]
        path = self.tmp / f"net-{'-'.join(names)}-{len(list(self.tmp.iterdir()))}.json"
        path.write_text(json.dumps({"nodes": entries}))
        return path

    def vkeys(self, *names: str) -> list[str]:
        return [self.nodes[name].node.vkey for name in names]

    def trusted(self) -> dict[str, Any]:
        return {"trusted_publishers": {"alice": [self.text.publisher.vkey]}}

    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.text.node.hub.blobs.get(self.text.manifest.text["tokenizer"]))  # type: ignore[index]

    def check(self, bundle: Bundle, result: ChatResult, *names: str) -> list[str]:
        """Verify offline as a third party would (from the JSON form); the report."""
        lines: list[str] = []
        tokenizer = self.tokenizer()
        verify_generation(
            Bundle.from_json(bundle.to_json()), result.generation, self.vkeys(*names),
            ends=[tokenizer.token_id("<|im_end|>")], detokenize=tokenizer.decode,
            manifest=self.text.manifest, report=lines.append,
        )  # fmt: skip
        return lines


@pytest.fixture(scope="module")
def cluster(
    text_node: TextNode, embedding_manifest: Manifest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("replicated-text")
    inner = text_node.node.engine
    engines = {
        "b": inner,
        "other": SkewedEngine(inner, kernel_class=OTHER, noise=2e-3, seed=1),
        "liar": SkewedEngine(inner, kernel_class=OTHER, noise=3.0, seed=2),
        "shifted": SkewedEngine(inner, kernel_class=OTHER, offset=0.5),
    }
    nodes = {"a": Served(text_node.node, text_node.url, text_node.server, text_node.thread)}
    try:
        for name, chosen in engines.items():
            node = Node(tmp / name, name=f"{name}.test", hub=text_node.node.hub, engine=chosen)
            nodes[name] = _serve(node)
        networks = tmp / "networks"
        networks.mkdir()
        yield Cluster(nodes, text_node, networks)
    finally:
        for name, served in nodes.items():
            if name != "a":
                served.server.should_exit = True
                served.thread.join(timeout=30)
                served.node.close()


def _answers(cluster: Cluster, body: dict[str, Any], *names: str) -> list[ChatResult]:
    """Each named node's own verified answer to one request body (what a Network gathers)."""
    found = []
    for name in names:
        with Client(cluster.nodes[name].url, trusted_vkeys=cluster.vkeys(name),
                    **cluster.trusted()) as client:  # fmt: skip
            found.append(client._run(chat_send(client._core, body)))
    return found


def test_nodes_of_one_engine_give_identical_records_and_the_bundle_proves_it(
    cluster: Cluster,
) -> None:
    with Network(cluster.network("a", "b"), **cluster.trusted()) as network:
        result = network.chat("alice/smollm2", STORY, mode="replicated:2", temperature=0.8,
                              max_tokens=6)  # fmt: skip
    bundle = result.bundle
    assert isinstance(bundle.evidence, Agreement)
    assert not bundle.evidence.compared  # bit for bit: nothing else rides along
    receipts = [bundle.receipt, *(r.receipt for r in bundle.replicas)]
    assert sorted(r["node"] for r in receipts) == sorted(cluster.vkeys("a", "b"))
    assert {r["mode"] for r in receipts} == {"replicated:2"}
    assert {r["outputs"] for r in receipts} == {tensors.map_digest(result.generation.outputs())}
    assert result.text == cluster.tokenizer().decode(result.generation.tokens)
    lines = cluster.check(bundle, result, "a", "b")
    assert any("2+. 2 receipts from distinct trusted nodes" in line and "bit for bit" in line
               for line in lines)  # fmt: skip
    assert any(line.startswith("G0. 2 receipts of manifest") for line in lines)


def test_across_kernel_classes_the_tokens_agree_and_the_commitments_within_tolerance(
    cluster: Cluster,
) -> None:
    with Network(cluster.network("a", "other"), **cluster.trusted()) as network:
        result = network.chat("alice/smollm2", FRANCE, mode="replicated:2", temperature=0,
                              max_tokens=5)  # fmt: skip
    assert result.text == "The capital of France is"
    bundle = result.bundle
    evidence = bundle.evidence
    assert isinstance(evidence, Agreement)
    engines = {bundle.receipt["engine"], *(r.receipt["engine"] for r in bundle.replicas)}
    assert {e.rsplit("/", 1)[1] for e in engines} == {engine.kernel_class(), OTHER}
    assert len(evidence.compared) == 2  # every record's outputs, for the offline judge
    assert 0 < evidence.deviation < 0.05  # 2e-3 noise, float16-rounded: not bit for bit
    lines = cluster.check(bundle, result, "a", "other")
    assert any("generations with identical tokens" in line for line in lines)
    # the evidence is checked, not believed
    forged = replace(bundle, evidence=replace(evidence, deviation=0.0))
    with pytest.raises(VerificationError, match=r"records deviation 0\.0"):
        verify_bundle(forged, cluster.vkeys("a", "other"))
    swapped = replace(bundle, evidence=replace(evidence, compared=evidence.compared[::-1]))
    with pytest.raises(VerificationError, match="are not the ones its receipt names"):
        verify_bundle(swapped, cluster.vkeys("a", "other"))


def test_a_node_answering_other_tokens_is_refused_naming_the_token(cluster: Cluster) -> None:
    with (
        Network(cluster.network("a", "liar"), **cluster.trusted()) as network,
        pytest.raises(DisagreementError, match=r"the nodes disagree at token \d+: token \d+ "
                      r"against \d+") as caught,
    ):  # fmt: skip
        network.chat("alice/smollm2", FRANCE, mode="replicated:2", temperature=0, max_tokens=6)
    assert len(caught.value.bundles) == 2  # every signed answer: who said what
    for bundle in caught.value.bundles:  # each verifies on its own: only agreement catches it
        verify_bundle(bundle, cluster.vkeys("a", "liar"))
    assert cluster.nodes["liar"].node.vkey in str(caught.value)


def test_commitments_beyond_twice_the_tolerance_are_refused_though_the_tokens_agree(
    cluster: Cluster,
) -> None:
    body = chat_request("alice/smollm2", messages=FRANCE, sampling={"temperature": 0,
                        "max_tokens": 4}, mode="replicated:2")  # fmt: skip
    honest, shifted = _answers(cluster, body, "a", "shifted")
    assert honest.generation.tokens == shifted.generation.tokens  # a shift keeps every choice
    with pytest.raises(DisagreementError, match=r"disagree at token 0: their commitments to "
                       r"token \d+'s logit are 0\.5\d* apart, beyond twice"):  # fmt: skip
        chat_agreed("replicated:2", [honest, shifted], cluster.vkeys("a", "shifted"),
                    cluster.text.manifest.data)  # fmt: skip
    # a dishonest aggregator that bundles them anyway is refused offline
    evidence = Agreement(
        (shifted.bundle,),
        tuple(tensors.encode_binary(r.generation.outputs()) for r in (honest, shifted)),
        cluster.text.manifest.data,
        0.5,
    )
    with pytest.raises(VerificationError, match=r"step 2\+ \(agreement\).* disagree at token 0"):
        verify_bundle(replace(honest.bundle, evidence=evidence), cluster.vkeys("a", "shifted"))


def test_two_receipts_from_one_node_are_not_two_nodes(cluster: Cluster) -> None:
    body = chat_request("alice/smollm2", messages=FRANCE, sampling={"temperature": 0,
                        "max_tokens": 3}, mode="replicated:2")  # fmt: skip
    first, second = _answers(cluster, body, "a", "a")
    assert first.bundle.index != second.bundle.index  # two entries of one log
    with pytest.raises(VerificationError, match=r"comes from node .* again; replicated:2 needs"):
        chat_agreed("replicated:2", [first, second], cluster.vkeys("a"), b"")
    twice = cluster.tmp / "twice.json"  # one key listed twice is one operator
    entry = {"url": cluster.nodes["a"].url, "vkey": cluster.nodes["a"].node.vkey}
    twice.write_text(json.dumps({"nodes": [entry, entry]}))
    with (
        Network(twice, **cluster.trusted()) as network,
        pytest.raises(InputError, match="needs 2 nodes of distinct operators; the network has 1"),
    ):
        network.chat("alice/smollm2", FRANCE, mode="replicated:2", max_tokens=3)


def test_a_replicated_bundle_with_a_receipt_dropped_or_swapped_is_refused(
    cluster: Cluster,
) -> None:
    body = chat_request("alice/smollm2", messages=FRANCE, sampling={"temperature": 0,
                        "max_tokens": 3}, mode="replicated:3")  # fmt: skip
    answers = _answers(cluster, body, "a", "b", "other")
    agreed = chat_agreed("replicated:3", answers, cluster.vkeys("a", "b", "other"),
                         cluster.text.manifest.data)  # fmt: skip
    trusted = cluster.vkeys("a", "b", "other")
    cluster.check(agreed.bundle, agreed, "a", "b", "other")
    text = json.loads(agreed.bundle.to_json())
    text["evidence"]["replicas"].pop()
    with pytest.raises(VerificationError, match="needs 2 replica bundles"):
        Bundle.from_json(text)
    other_prompt = chat_request("alice/smollm2", messages=STORY, sampling={"temperature": 0,
                                "max_tokens": 3}, mode="replicated:3")  # fmt: skip
    elsewhere = _answers(cluster, {**other_prompt, "nonce": body["nonce"]}, "b")[0]
    evidence = agreed.bundle.evidence
    assert isinstance(evidence, Agreement)
    position = next(i for i, r in enumerate(evidence.replicas) if r.receipt["node"]
                    == cluster.nodes["b"].node.vkey)  # fmt: skip
    replicas = list(evidence.replicas)
    replicas[position] = elsewhere.bundle
    swapped = replace(agreed.bundle, evidence=replace(evidence, replicas=tuple(replicas)))
    with pytest.raises(VerificationError, match=rf"replica {position + 1} has inputs"):
        verify_bundle(Bundle.from_json(swapped.to_json()), trusted)
    with pytest.raises(VerificationError, match=r"step G0 \(replicas\)|has inputs"):
        cluster.check(swapped, agreed, "a", "b", "other")


def test_modes_and_counts_are_checked(cluster: Cluster) -> None:
    with (
        Network(cluster.network("a", "b"), **cluster.trusted()) as network,
        pytest.raises(InputError, match="needs 3 nodes of distinct operators; the network has 2"),
    ):
        network.chat("alice/smollm2", FRANCE, mode="replicated:3", max_tokens=3)
    with Client(cluster.nodes["a"].url, **cluster.trusted()) as client:
        with pytest.raises(InputError, match="asks several nodes: use a Network"):
            client.chat("alice/smollm2", FRANCE, mode="replicated:2", max_tokens=3)
        with pytest.raises(InputError, match="asks several nodes: use a Network"):
            client.embed("alice/minilm", ["a cat"], mode="replicated:2")
    for mode in ("optimistic", "zk", "replicated:1"):
        body = {"model": "alice/smollm2", "messages": FRANCE, "max_tokens": 2, "mode": mode}
        answer = httpx.post(f"{cluster.nodes['a'].url}/v1/generate", json=body)
        assert answer.status_code == 400, answer.text
        assert mode in answer.json()["message"]


def test_async_network_and_embeddings(cluster: Cluster) -> None:
    async def go() -> tuple[ChatResult, Any]:
        async with AsyncNetwork(cluster.network("a", "other"), **cluster.trusted()) as network:
            chat = await network.generate(
                "alice/smollm2",
                "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                "<|im_start|>assistant\n",
                mode="replicated:2", temperature=0, max_tokens=4,
            )  # fmt: skip
        async with AsyncNetwork(cluster.network("a", "b"), **cluster.trusted()) as network:
            embedded = await network.embed("alice/minilm", ["a cat", "tax law"],
                                           mode="replicated:2")  # fmt: skip
        return chat, embedded

    chat, embedded = asyncio.run(go())
    assert chat.text == "The capital of France"
    assert isinstance(chat.bundle.evidence, Agreement)
    assert chat.bundle.evidence.compared
    verify_bundle(chat.bundle, cluster.vkeys("a", "other"))
    assert embedded.embeddings.shape == (2, 384)
    assert len(embedded.bundle.replicas) == 1
    verify_bundle(embedded.bundle, cluster.vkeys("a", "b"), outputs={
        "embeddings": embedded.embeddings})  # fmt: skip
    with Network(cluster.network("a", "b"), **cluster.trusted()) as network:
        same = network.embed("alice/minilm", ["a cat", "tax law"], mode="replicated:2")
    assert np.array_equal(same.embeddings, embedded.embeddings)
    # across classes, vectors compare within the manifest's calibrated tolerance, as inference
    # outputs do; this manifest declares none, so they cannot be compared
    with (
        Network(cluster.network("a", "other"), **cluster.trusted()) as network,
        pytest.raises(VerificationError, match="declares no tolerance"),
    ):
        network.embed("alice/minilm", ["a cat"], mode="replicated:2")


def test_the_cli_chats_on_a_network_and_the_answer_verifies_offline(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = {**os.environ, "VERINFER_HOME": str(tmp_path / "home")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*VERINFER, *args], capture_output=True, text=True, timeout=180,
                              env=env, check=False)  # fmt: skip

    answer = tmp_path / "answer.json"
    asked = run("chat", "alice/smollm2", "What is the capital of France?", "--network",
                str(cluster.network("a", "other")), "--mode", "replicated:2", "--max-tokens", "4",
                "--bundle", str(answer))  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip() == "The capital of France"
    assert "2 nodes agree" in asked.stderr
    # offline, with nothing but the answer file and the node keys: the agreement re-judged
    keys = [arg for key in cluster.vkeys("a", "other") for arg in ("--node-key", key)]
    checked = run("verify-generation", str(answer), *keys)
    assert checked.returncode == 0, checked.stderr
    assert "generations with identical tokens" in checked.stdout
    assert "G0. 2 receipts of manifest" in checked.stdout
    body = json.loads(answer.read_text())
    assert len(body["bundle"]["evidence"]["outputs"]) == 2
    alone = run("verify-generation", str(answer), *keys[:2])
    assert alone.returncode == 1  # the other node's receipt is not under a trusted key
    assert "not a trusted key" in alone.stderr
    single = run("chat", "alice/smollm2", "Hi", "--node", cluster.nodes["a"].url, "--mode",
                 "replicated:2")  # fmt: skip
    assert single.returncode != 0
    assert "asks several nodes: give --network" in single.stderr
