"""Which model a name means is the client's decision: versions, squatted owners, stale heads.

Real nodes served by uvicorn on 127.0.0.1. Every SDK case runs against both drivers of the one
client core (``Client`` and ``AsyncClient``); lying nodes are made by test-side transports that
rewrite what an honest node is asked or answers, never by a flag in production code.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper
from test_http import Served

from verinfer import note, tensors
from verinfer.client import (
    AsyncClient,
    Client,
    Network,
    NetworkError,
    Publishers,
    Result,
    StaleHistory,
)
from verinfer.errors import InputError, VerificationError
from verinfer.node import Node
from verinfer.verify import Bundle, Receipt, TrustRoot

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]
X = {"x": np.array([[1.0, 2.0, 3.0]], dtype=np.float32)}
ALICE = note.Signer(note.generate_key("alice")[0])
BOB = note.Signer(note.generate_key("bob")[0])
SQUATTER = note.Signer(note.generate_key("bob")[0])  # another key with bob's name


def calc(factor: float) -> bytes:
    """``y = x * factor``: models whose answers tell them apart."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "factor"], ["y"])],
        "calc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor("factor", TensorProto.FLOAT, [], [factor])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


@dataclass
class World:
    home: Served  # alice/calc@1 (x10) and @2 (x20), bob/calc@1 (x2): the real publishers
    squat: Served  # bob/calc@1 (x3) by another key named bob; alice/calc@1, @2 (x30) forked
    tmp: Path

    def network(self, *served: Served) -> Path:
        path = self.tmp / f"net-{len(list(self.tmp.iterdir()))}.json"
        nodes = [{"url": s.url, "vkey": s.node.vkey} for s in served]
        path.write_text(json.dumps({"nodes": nodes}))
        return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("publishers")
    home, squat = Node(tmp / "home", name="home.test"), Node(tmp / "squat", name="squat.test")
    try:
        for version, factor in (("1", 10.0), ("2", 20.0)):
            home.hub.publish(calc(factor), repository="alice/calc", version=version, signer=ALICE)
        home.hub.publish(calc(2.0), repository="bob/calc", version="1", signer=BOB)
        squat.hub.publish(calc(3.0), repository="bob/calc", version="1", signer=SQUATTER)
        for version, factor in (("1", 10.0), ("2", 30.0)):  # alice signs a second history
            squat.hub.publish(calc(factor), repository="alice/calc", version=version,
                              signer=ALICE, description="forked")  # fmt: skip
        served = World(Served(home), Served(squat), tmp)
        try:
            yield served
        finally:
            served.home.stop()
            served.squat.stop()
    finally:
        home.close()
        squat.close()


# -- the two drivers of one core ----------------------------------------------------------------

Infer = Callable[..., Result]


def _sync(
    url: str, model: str, *, mode: str = "attested", audit: str = "private", **options: Any
) -> Result:
    with Client(url, **options) as client:
        return client.infer(model, X, mode=mode, audit=audit)


def _async(
    url: str, model: str, *, mode: str = "attested", audit: str = "private", **options: Any
) -> Result:
    async def main() -> Result:
        async with AsyncClient(url, **options) as client:
            return await client.infer(model, X, mode=mode, audit=audit)

    return asyncio.run(main())


@pytest.fixture(params=[_sync, _async], ids=["sync", "async"])
def infer(request: pytest.FixtureRequest) -> Infer:
    driver: Infer = request.param
    return driver


def _lying(real: str, ask: Callable[[dict[str, Any]], None] | None = None,
           answer: Callable[[dict[str, Any]], None] | None = None,
           changes: int | None = None) -> httpx.MockTransport:  # fmt: skip
    """A node in front of an honest one that changes the request it forwards (``ask``), the
    answer it returns (``answer``), or serves only the first ``changes`` of a history."""

    def handle(request: httpx.Request) -> httpx.Response:
        with httpx.Client(base_url=real) as http:
            if request.url.path == "/v1/infer":
                body = json.loads(request.content)
                if ask is not None:
                    ask(body)
                response = http.post("/v1/infer", json=body)
                if answer is None or response.status_code != 200:
                    return httpx.Response(response.status_code, content=response.content)
                found = response.json()
                answer(found)
                return httpx.Response(200, json=found)
            response = http.get(request.url.path, params=request.url.params)
            if changes is not None and request.url.path.endswith("/changes"):
                kept = response.json()["changes"][:changes]
                return httpx.Response(200, json={"changes": kept})
            return httpx.Response(response.status_code, content=response.content)

    return httpx.MockTransport(handle)


def _version_one(body: dict[str, Any]) -> None:
    body["model"] = "alice/calc@1"


# -- item 3: a ref means exactly one version ----------------------------------------------------


def test_the_right_answer_is_verified_by_both_drivers(
    world: World, infer: Infer, tmp_path: Path
) -> None:
    trusted = {"trusted_vkeys": [world.home.node.vkey], "trusted_publishers": [ALICE.vkey]}
    for ref, factor in (("alice/calc@1", 10), ("alice/calc@2", 20), ("alice/calc", 20)):
        result = infer(world.home.url, ref, **trusted)
        assert result.outputs["y"].tolist() == [[1.0 * factor, 2.0 * factor, 3.0 * factor]]
        manifest = world.home.node.hub.resolve(ref)
        assert result.manifest == manifest.cid
        assert result.bundle.receipt["model"] == manifest.model


def test_capabilities_ride_along_and_malformed_ones_are_refused(world: World, infer: Infer) -> None:
    token = {"sha256:" + "a" * 64: "capability-1"}

    def add(value: object) -> Callable[[dict[str, Any]], None]:
        def change(body: dict[str, Any]) -> None:
            body["capabilities"] = value

        return change

    options = {"trusted_vkeys": [world.home.node.vkey], "trusted_publishers": [ALICE.vkey]}
    result = infer("http://node.test", "alice/calc@1",
                   transport=_lying(world.home.url, answer=add(token)), **options)  # fmt: skip
    assert result.capabilities == token
    with pytest.raises(VerificationError, match=r"malformed answer.*capabilities"):
        infer("http://node.test", "alice/calc@1",
              transport=_lying(world.home.url, answer=add({"d": 1})), **options)  # fmt: skip


@pytest.mark.parametrize(("asked", "forwarded"), [("public", "private"), ("private", "public")])
def test_a_receipt_stating_another_tensor_access_is_refused(
    world: World, infer: Infer, asked: str, forwarded: str
) -> None:
    """A node that signs a public-audit request as private escapes the audits its requester
    asked for; one that signs a private request as public publishes the requester's data."""

    def change(body: dict[str, Any]) -> None:
        body.pop("audit", None)
        if forwarded == "public":
            body["audit"] = "public"

    options = {"trusted_vkeys": [world.home.node.vkey], "trusted_publishers": [ALICE.vkey]}
    assert (
        infer(world.home.url, "alice/calc@1", audit=asked, **options).bundle.receipt["audit"]
        == asked
    )  # an honest node: the receipt states what was asked
    with pytest.raises(VerificationError, match=rf"asked for {asked} tensors, .* '{forwarded}'"):
        infer("http://liar.test", "alice/calc@1", audit=asked,
              transport=_lying(world.home.url, ask=change), **options)  # fmt: skip


@pytest.mark.parametrize("ref", ["alice/calc@2", "alice/calc", "alice/calc@latest"])
def test_a_node_answering_another_version_is_refused(world: World, infer: Infer, ref: str) -> None:
    """The node is asked for version 2 (or the latest, which is 2) and answers with a genuine,
    signed receipt of version 1 of the same repository by the same owner."""
    with pytest.raises(VerificationError, match=r"resolves to alice/calc@2 .*another model"):
        infer("http://liar.test", ref, transport=_lying(world.home.url, ask=_version_one),
              trusted_vkeys=[world.home.node.vkey], trusted_publishers=[ALICE.vkey])  # fmt: skip


def test_a_receipt_of_the_right_manifest_but_another_model_is_refused(
    world: World, infer: Infer
) -> None:
    """The operator logs and signs a receipt that names version 2's manifest but version 1's
    model, with version 1's outputs: everything the node signs is consistent except that the
    manifest it names is not of the model it names."""
    node = world.home.node
    one, two = node.hub.resolve("alice/calc@1"), node.hub.resolve("alice/calc@2")
    options = {"trusted_vkeys": [node.vkey], "trusted_publishers": [ALICE.vkey]}
    honest = infer(world.home.url, "alice/calc@1", **options).bundle.receipt
    outputs = {"y": X["x"] * np.float32(10)}  # what version 1 computes
    forward = _lying(world.home.url)

    def forge(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/infer":
            return forward.handler(request)  # type: ignore[no-any-return]
        receipt = Receipt.create(
            log=node.log.origin, node=node.vkey, model=one.model, manifest=two.cid,
            inputs=tensors.map_digest(X), outputs=tensors.map_digest(outputs), mode="attested",
            engine=honest["engine"], time=honest["time"],
            nonce=json.loads(request.content)["nonce"],
        )  # fmt: skip
        logged = node.log.append([receipt.data])
        proof = tuple(node.log.inclusion_proof(logged.start, logged.end))
        bundle = Bundle(receipt, logged.start, proof, logged.signed_checkpoint)
        body = {"bundle": bundle.to_dict(), "outputs": tensors.encode_json(outputs)}
        return httpx.Response(200, json=body)

    with pytest.raises(VerificationError, match=r"answer's manifest is alice/calc@2 .*model"):
        infer("http://liar.test", "alice/calc@2", transport=httpx.MockTransport(forge), **options)
    # asked by version 2's manifest CID, the same forgery names exactly what was asked for
    with pytest.raises(VerificationError, match=r"names manifest .* which is of model .*another"):
        infer("http://liar.test", two.cid, transport=httpx.MockTransport(forge), **options)


def test_a_stale_history_is_refused_once_a_longer_one_was_seen(
    world: World, infer: Infer, tmp_path: Path
) -> None:
    """A node that withholds the newest changes (version 2 and the tag that moved ``latest``)
    can pass version 1 off as the latest to a client that never saw more; a client that did
    (the same pin file, or the same Publishers) refuses it."""
    known = tmp_path / "known_publishers.json"
    options = {"trusted_vkeys": [world.home.node.vkey], "known_publishers": known}
    assert infer(world.home.url, "alice/calc", **options).outputs["y"][0, 0] == 20
    assert json.loads(known.read_text())["repositories"]["alice/calc"]["changes"] == 4
    stale = _lying(world.home.url, ask=_version_one, changes=2)
    with pytest.raises(StaleHistory, match=r"serves 2 changes of 'alice/calc'.* verified 4"):
        infer("http://liar.test", "alice/calc", transport=stale, **options)
    shared = Publishers([ALICE.vkey])  # no file: the state lives in the object
    infer(world.home.url, "alice/calc@2", trusted_vkeys=[world.home.node.vkey],
          trusted_publishers=shared)  # fmt: skip
    with pytest.raises(StaleHistory, match="a stale or withheld history is not accepted"):
        infer("http://liar.test", "alice/calc@1", transport=stale,
              trusted_vkeys=[world.home.node.vkey], trusted_publishers=shared)  # fmt: skip


def test_a_history_forked_by_the_owner_is_refused(
    world: World, infer: Infer, tmp_path: Path
) -> None:
    """The owner's key signed two histories of one repository (here: ``@2`` multiplies by 20 on
    one node, by 30 on the other). A client that verified one refuses the other."""
    options = {"known_publishers": tmp_path / "pins.json"}
    assert infer(world.home.url, "alice/calc@2", **options).outputs["y"][0, 0] == 20
    with pytest.raises(VerificationError, match=r"forks from the one this client verified"):
        infer(world.squat.url, "alice/calc@2", **options)


def test_a_tampered_or_forged_answer_is_refused(world: World, infer: Infer) -> None:
    def bump(body: dict[str, Any]) -> None:
        y = tensors.decode_json(body["outputs"])["y"]
        y[0, 0] = np.nextafter(y[0, 0], np.float32(100))
        body["outputs"] = tensors.encode_json({"y": y}, raw=True)

    def forge(body: dict[str, Any]) -> None:
        receipt = json.loads(body["bundle"]["receipt"])
        receipt["outputs"] = "sha256:" + "0" * 64
        body["bundle"]["receipt"] = json.dumps(receipt, sort_keys=True, separators=(",", ":"))

    options = {"trusted_vkeys": [world.home.node.vkey], "trusted_publishers": [ALICE.vkey]}
    for change, message in ((bump, "step 5"), (forge, "step 2")):
        liar = _lying(world.home.url, answer=change)
        with pytest.raises(VerificationError, match=message):
            infer("http://liar.test", "alice/calc@1", transport=liar, **options)


def test_replicated_on_one_client_is_refused(world: World, infer: Infer) -> None:
    """One node's answer is never returned as the agreement of three."""
    sent: list[str] = []
    forward = _lying(world.home.url)

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return forward.handler(request)  # type: ignore[no-any-return]

    with pytest.raises(InputError, match="asks several nodes: use a Network"):
        infer("http://node.test", "alice/calc", mode="replicated:3",
              transport=httpx.MockTransport(record), trusted_vkeys=[world.home.node.vkey],
              trusted_publishers=[ALICE.vkey])  # fmt: skip
    assert "/v1/infer" not in sent  # refused before anything was asked


# -- item 4: an owner name is bound to keys by the client, not by a node ----------------------


def test_a_squatted_owner_is_refused_under_the_trusted_key(world: World, infer: Infer) -> None:
    options = {"trusted_publishers": [BOB.vkey]}
    with pytest.raises(VerificationError, match=r"not a publisher key trusted for owner 'bob'"):
        infer(world.squat.url, "bob/calc", **options)  # the squatter's node, asked first
    assert infer(world.home.url, "bob/calc", **options).outputs["y"][0, 0] == 2  # the real one
    with pytest.raises(VerificationError, match=r"no publisher key is trusted for owner 'alice'"):
        infer(world.home.url, "alice/calc", **options)  # explicit keys: no one else resolves


def test_one_trust_root_file_drives_both_sdk_drivers(
    world: World, infer: Infer, tmp_path: Path
) -> None:
    path = tmp_path / "trust.json"
    path.write_text(TrustRoot.of([world.home.node.vkey], publishers=[BOB.vkey]).to_json())
    trust = TrustRoot.from_file(path)
    assert infer(world.home.url, "bob/calc", trust=trust).outputs["y"][0, 0] == 2
    with pytest.raises(VerificationError, match=r"not a publisher key trusted for owner 'bob'"):
        infer(world.squat.url, "bob/calc", trust=TrustRoot.of([world.squat.node.vkey],
              publishers=[BOB.vkey]))  # fmt: skip
    with pytest.raises(VerificationError, match=r"has key 'squat.test\+.*which is not trusted"):
        infer(world.squat.url, "bob/calc", trust=trust)  # another node's key


def test_tofu_pins_the_first_key_and_refuses_another(
    world: World, infer: Infer, tmp_path: Path
) -> None:
    known = tmp_path / "pins.json"
    notices: list[str] = []
    first = infer(world.home.url, "bob/calc", known_publishers=known, on_pin=notices.append)
    assert first.outputs["y"][0, 0] == 2
    assert json.loads(known.read_text())["owners"] == {"bob": BOB.vkey}
    assert len(notices) == 1
    assert BOB.vkey in notices[0]
    assert "on first use" in notices[0]
    with pytest.raises(VerificationError, match="another key squats the name") as caught:
        infer(world.squat.url, "bob/calc", known_publishers=known, on_pin=notices.append)
    message = str(caught.value)
    assert SQUATTER.vkey in message
    assert BOB.vkey in message
    assert str(known) in message
    assert len(notices) == 1  # nothing new was pinned


def test_a_network_shares_one_publisher_policy(world: World, tmp_path: Path) -> None:
    """Network clients have explicit node keys; the owner's key is still checked, and what one
    node's answer pinned binds every other node of the network."""
    with (
        Network(world.network(world.squat), trusted_publishers=[BOB.vkey]) as network,
        pytest.raises(VerificationError, match="not a publisher key trusted for owner 'bob'"),
    ):
        network.infer("bob/calc", X)
    known = tmp_path / "pins.json"
    with Network(world.network(world.home, world.squat), known_publishers=known,
                 on_pin=lambda _: None) as network:  # fmt: skip
        assert network.clients[0].publishers is network.clients[1].publishers
        assert network.infer("bob/calc", X).outputs["y"][0, 0] == 2  # home answers first
        with pytest.raises(VerificationError, match="was pinned for owner 'bob' on first use"):
            network.infer("bob/calc", X)  # the squatting node's turn


def test_a_network_skips_a_stale_node_for_a_current_one(world: World, tmp_path: Path) -> None:
    """A node behind on a repository's history is not a liar: the network asks the next one."""
    net = world.network(world.home, world.home)
    with Network(net, trusted_publishers=[ALICE.vkey]) as network:
        assert network.infer("alice/calc", X).outputs["y"][0, 0] == 20
        stale = _lying(world.home.url, ask=_version_one, changes=2)
        network.clients[1]._http.close()  # this node now withholds the newest changes
        network.clients[1]._http = httpx.Client(base_url="http://liar.test", transport=stale)
        for _ in range(2):  # whichever node's turn it is, the answer is the current version
            assert network.infer("alice/calc", X).outputs["y"][0, 0] == 20
        network.clients[0]._http.close()  # and so does the other: no node answers
        network.clients[0]._http = httpx.Client(base_url="http://liar.test", transport=stale)
        with pytest.raises(NetworkError, match="a stale or withheld history"):
            network.infer("alice/calc", X)


# -- the CLI ------------------------------------------------------------------------------------


def test_the_cli_resolves_names_under_trusted_publishers(world: World, tmp_path: Path) -> None:
    env = {**os.environ, "VERINFER_HOME": str(tmp_path / "home")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*VERINFER, *args], capture_output=True, text=True, timeout=120,
                              env=env, check=False)  # fmt: skip

    inputs = tmp_path / "x.json"
    inputs.write_text(json.dumps(tensors.encode_json(X)))
    bundle = tmp_path / "b.json"
    common = ["--inputs", str(inputs), "--bundle", str(bundle)]
    # an explicit key: the squatter is refused, the real owner verified
    refused = run("infer", "bob/calc", "--node", world.squat.url, "--publisher", BOB.vkey, *common)
    assert refused.returncode == 1
    assert "not a publisher key trusted for owner 'bob'" in refused.stderr
    assert not bundle.exists()
    done = run("infer", "bob/calc", "--node", world.home.url, "--publisher", BOB.vkey, *common)
    assert done.returncode == 0, done.stderr
    # first use: pinned with a notice on stderr, then a different key is refused
    pins = tmp_path / "pins.json"
    first = run("infer", "bob/calc", "--node", world.home.url, "--known-publishers", str(pins),
                *common)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert f"trusting publisher key {BOB.vkey!r} for owner 'bob' on first use" in first.stderr
    network = world.network(world.squat)
    squatted = run("infer", "bob/calc", "--network", str(network), "--known-publishers",
                   str(pins), *common)  # fmt: skip
    assert squatted.returncode == 1
    assert SQUATTER.vkey in squatted.stderr
    assert BOB.vkey in squatted.stderr
    assert str(pins) in squatted.stderr
    # offline: the bundle's manifest must be signed by a key trusted for its owner
    trust = tmp_path / "trust.txt"
    trust.write_text(world.home.node.vkey + "\n")
    manifest = tmp_path / "manifest.txt"
    manifest.write_bytes(world.home.node.hub.resolve("bob/calc").data)
    check = ["verify", str(bundle), "--trust", str(trust), "--manifest", str(manifest)]
    verified = run(*check, "--publisher", BOB.vkey)
    assert verified.returncode == 0, verified.stderr
    assert "published by a trusted key of owner 'bob'" in verified.stdout
    forged = run(*check, "--publisher", SQUATTER.vkey)
    assert forged.returncode == 1
    assert "not a publisher key trusted for owner 'bob'" in forged.stderr
    other = tmp_path / "other.txt"
    other.write_bytes(world.squat.node.hub.resolve("bob/calc").data)
    wrong = run("verify", str(bundle), "--trust", str(trust), "--manifest", str(other),
                "--publisher", SQUATTER.vkey)  # fmt: skip
    assert wrong.returncode == 1
    assert "is not the receipt's manifest" in wrong.stderr
