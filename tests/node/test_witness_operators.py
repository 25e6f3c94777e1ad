"""A log's own witness never counts toward its quorum (issue 15, item 6): real nodes served on
127.0.0.1 that cosign each other's checkpoints, a node whose operator also cosigns its own log,
the SDK and the ``verinfer verify`` command with the devnet's witness and network files."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_http import IRIS, Served

from verinfer import note
from verinfer.client import AsyncClient, Client, Network
from verinfer.errors import VerificationError
from verinfer.examples import sklearn_model
from verinfer.node import Node
from verinfer.verify import Bundle, verify_bundle

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Served]]:
    tmp = tmp_path_factory.mktemp("operators")
    alice = note.Signer(note.generate_key("alice")[0])
    nodes = [Node(tmp / name, name=f"{name}.test", cosign_interval=0.05) for name in "abc"]
    nodes[0].hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    served = [Served(node) for node in nodes]
    for node in nodes:
        node.set_peers([s.url for s in served if s.node is not node])
    try:
        yield served
    finally:
        for running in served:
            running.stop()
        for node in nodes:
            node.close()


def _verify(tmp: Path, bundle: Bundle, trust: str, witnesses: str, quorum: int = 2
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    files = {name: tmp / name for name in ("bundle.json", "trust.txt", "witnesses")}
    files["bundle.json"].write_text(bundle.to_json())
    files["trust.txt"].write_text(trust + "\n")
    files["witnesses"].write_text(witnesses)
    return subprocess.run(
        [*VERINFER, "verify", str(files["bundle.json"]), "--trust", str(files["trust.txt"]),
         "--witnesses", str(files["witnesses"]), "--quorum", str(quorum)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _devnet_files(trio: list[Served]) -> tuple[str, str]:
    """The witness and network files as ``verinfer devnet up`` writes them."""
    described = [
        {"name": s.node.log.origin, "url": s.url, "vkey": s.node.vkey,
         "witness": s.node.witness.vkey, "operator": s.node.log.origin}
        for s in trio
    ]  # fmt: skip
    lines = "".join(f"{n['witness']} {n['vkey']}\n" for n in described)
    return lines, json.dumps({"nodes": described})


def test_one_independent_cosignature_and_the_logs_own_are_no_quorum_of_two(
    trio: list[Served], tmp_path: Path
) -> None:
    a = trio[0]
    everyone = [s.node.witness.vkey for s in trio]  # every node's witness trusted
    with Client(a.url, trusted_vkeys=[a.node.vkey]) as client:
        answer = client.infer("alice/iris", {"X": IRIS})
        honest = client.cosigned(answer.bundle, everyone, 2)
    names = sorted(line.split()[1] for line in honest.cosignatures)
    assert names == ["b.test/witness", "c.test/witness"]
    text = honest.checkpoint.split("\n\n", 1)[0] + "\n"
    own = a.node.witness.signer.signature_line(text)  # what a's operator can always add
    from_b = next(line for line in honest.cosignatures if " b.test/witness " in line)
    padded = dataclasses.replace(honest, cosignatures=(from_b, own))
    lines, network = _devnet_files(trio)
    for witnesses in (lines, network, "".join(f"{w}\n" for w in everyone)):
        ok = _verify(tmp_path, honest, a.node.vkey, witnesses)
        assert ok.returncode == 0, ok.stderr
        assert "2 trusted witnesses cosigned that checkpoint" in ok.stdout
        refused = _verify(tmp_path, padded, a.node.vkey, witnesses)
        assert refused.returncode == 1, refused.stdout
        assert (
            "1 trusted witnesses of distinct operators other than the log's cosigned the "
            "checkpoint, the policy needs 2 (not counted: a.test/witness, the log's own"
        ) in refused.stderr.replace("\n", " ")
    with pytest.raises(VerificationError, match=r"not counted: a\.test/witness, the log's own"):
        verify_bundle(padded, [a.node.vkey], witnesses=everyone, quorum=2)


def test_a_witness_the_operator_names_as_independent_is_excluded_by_the_callers_map(
    trio: list[Served], tmp_path: Path
) -> None:
    """A witness key's name is its holder's choice: a's operator can run a second witness
    named like anyone's. Only the caller's operator map says whose it is."""
    a, b, _ = trio
    disguise = note.Signer(note.generate_key("independent/witness", cosigner=True)[0])
    with Client(a.url, trusted_vkeys=[a.node.vkey]) as client:
        answer = client.infer("alice/iris", {"X": IRIS})
        honest = client.cosigned(answer.bundle, [b.node.witness.vkey], 1)
    text = honest.checkpoint.split("\n\n", 1)[0] + "\n"
    from_b = next(line for line in honest.cosignatures if " b.test/witness " in line)
    padded = dataclasses.replace(honest, cosignatures=(from_b, disguise.signature_line(text)))
    plain = f"{b.node.witness.vkey}\n{disguise.vkey}\n"
    assert _verify(tmp_path, padded, a.node.vkey, plain).returncode == 0  # trusted as independent
    mapped = f"{b.node.witness.vkey} {b.node.vkey}\n{disguise.vkey} {a.node.vkey}\n"
    refused = _verify(tmp_path, padded, a.node.vkey, mapped)
    assert refused.returncode == 1
    assert "needs as many trusted witness keys (cosigner keys) of distinct operators" in (
        refused.stderr.replace("\n", " ")
    )
    labelled = f"{b.node.witness.vkey} bob # b's operator\n{disguise.vkey} bob\n"
    refused = _verify(tmp_path, padded, a.node.vkey, labelled)  # one operator runs both
    assert refused.returncode == 1
    assert "needs as many trusted witness keys" in refused.stderr.replace("\n", " ")
    bad = _verify(tmp_path, padded, a.node.vkey, f"{b.node.witness.vkey} bob extra\n")
    assert bad.returncode == 1
    assert "expected a vkey and optionally its operator" in bad.stderr.replace("\n", " ")


def test_a_node_that_cosigns_its_own_log_gets_no_quorum_from_it(trio: list[Served]) -> None:
    """a's operator makes its witness witness its own log and drops c: a serves checkpoints
    cosigned by b and by itself. The SDK does not accept them as a quorum of two."""
    a, b, c = trio
    everyone = [s.node.witness.vkey for s in trio]
    a.node.witness.trust(a.node.log.origin, a.node.vkey)
    a.node.set_peers([b.url, a.url])
    try:
        with Client(a.url, trusted_vkeys=[a.node.vkey]) as client:
            answer = client.infer("alice/iris", {"X": IRIS})
            size = answer.bundle.index + 1
            with httpx.Client(base_url=a.url) as http:
                for _ in range(400):  # until a serves b's and its own line on a new checkpoint
                    served = http.get("/v1/log/cosigned", params={"size": size})
                    lines = served.text.split("\n\n", 1)[-1].splitlines()[1:]  # the witnesses'
                    names = [line.split()[1] for line in lines]
                    if served.status_code == 200 and sorted(names) == [
                        "a.test/witness", "b.test/witness"
                    ]:  # fmt: skip
                        break
                    threading.Event().wait(0.05)
            assert sorted(names) == ["a.test/witness", "b.test/witness"], served.text
            with pytest.raises(VerificationError, match=r"not counted: a\.test/witness, the log's"):
                client.cosigned(answer.bundle, everyone, 2, timeout=1)
    finally:
        a.node.set_peers([b.url, c.url])


def test_the_sdk_applies_the_callers_operator_map(trio: list[Served], tmp_path: Path) -> None:
    """b's and c's witnesses declared one operator's: their two cosignatures are one, in both
    drivers; a network file states the same policy (each node's witness of its operator)."""
    a, b, c = trio
    others = [b.node.witness.vkey, c.node.witness.vkey]
    one_operator = {b.node.witness.vkey: "bob", c.node.witness.vkey: "bob"}
    with Client(a.url, trusted_vkeys=[a.node.vkey]) as client:
        answer = client.infer("alice/iris", {"X": IRIS})
        client.cosigned(answer.bundle, others, 2)  # two operators by default
        with pytest.raises(VerificationError, match="needs as many trusted witness keys"):
            client.cosigned(answer.bundle, others, 2, operators=one_operator, timeout=1)

    async def driven() -> None:
        async with AsyncClient(a.url, trusted_vkeys=[a.node.vkey]) as client:
            with pytest.raises(VerificationError, match="needs as many trusted witness keys"):
                await client.cosigned(answer.bundle, others, 2, operators=one_operator, timeout=1)

    asyncio.run(driven())
    _, network_text = _devnet_files(trio)
    shared = json.loads(network_text)
    shared["nodes"][2]["operator"] = shared["nodes"][1]["operator"]  # b's operator runs c too
    path = tmp_path / "network.json"
    path.write_text(json.dumps(shared))
    with Network(path) as network:
        assert network.witnesses == [s.node.witness.vkey for s in trio]
        node = network.clients[0]
        with pytest.raises(VerificationError, match="needs as many trusted witness keys"):
            node.cosigned(answer.bundle, network.witnesses, 2, operators=network.operators,
                          timeout=1)  # fmt: skip
