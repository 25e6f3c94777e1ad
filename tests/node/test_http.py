"""The node's HTTP API and the SDK, against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
from hub_models import LIGHT, sklearn_model

from verinfer import examples, merkle, note, tensors
from verinfer.client import AsyncClient, Client, NetworkError
from verinfer.errors import InputError, LimitExceeded, NotFound, VerificationError
from verinfer.hub import Hub
from verinfer.log.tiles import tile_path
from verinfer.node import Node
from verinfer.node.app import create_app
from verinfer.verify import Bundle, verify_bundle, verify_bundles

IRIS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


class Served:
    """A node served by uvicorn in a background thread."""

    def __init__(self, node: Node, **options: int) -> None:
        self.node = node
        app = create_app(node, max_body_bytes=1 << 20, **options)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:  # until it serves, or its thread ended without serving
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    alice = note.Signer(note.generate_key("alice")[0])
    with Node(tmp_path / "node") as node:
        node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
        running = Served(node)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture
def client(served: Served, tmp_path: Path) -> Iterator[Client]:
    with Client(served.url, known_nodes=tmp_path / "known.json") as opened:
        yield opened


def test_infer_over_http_is_verified_by_the_client(served: Served, client: Client) -> None:
    result = client.infer("alice/iris", {"X": IRIS})
    assert result.outputs["label"].tolist() == [0, 2]
    assert result.bundle.receipt["node"] == served.node.vkey
    # the same bundle verifies offline for anyone holding the node's key
    verify_bundle(Bundle.from_json(result.bundle.to_json()), [served.node.vkey], {"X": IRIS})
    # and its receipt is in the node's log, served over HTTP too
    entry = httpx.get(f"{served.url}/v1/log/entries/{result.bundle.index}")
    assert entry.content == result.bundle.receipt.data
    assert client.checkpoint().startswith(served.node.log.origin + "\n")


def test_trust_on_first_use_pins_the_node_key(served: Served, tmp_path: Path) -> None:
    known = tmp_path / "known.json"
    with Client(served.url, known_nodes=known) as first:
        first.infer("alice/iris", {"X": IRIS})
    pinned = json.loads(known.read_text())
    assert pinned[served.url] == served.node.vkey
    owners = json.loads((tmp_path / "known_publishers.json").read_text())["owners"]
    assert note.VerifierKey.parse(owners["alice"]).name == "alice"  # the model's owner, beside
    impostor = note.generate_key("node.verinfer.local")[1]
    known.write_text(json.dumps({served.url: impostor}))
    with (
        Client(served.url, known_nodes=known) as second,
        pytest.raises(VerificationError, match="was pinned on first use"),
    ):
        second.infer("alice/iris", {"X": IRIS})
    with (
        Client(served.url, trusted_vkeys=[impostor]) as explicit,
        pytest.raises(VerificationError, match="which is not trusted"),
    ):
        explicit.infer("alice/iris", {"X": IRIS})


def _tampering(real: httpx.Client, change: object) -> httpx.MockTransport:
    """A transport that forwards to the real node and lets ``change`` alter the answer."""

    def handler(request: httpx.Request) -> httpx.Response:
        response = real.request(request.method, request.url.path, content=request.content,
                                headers={"content-type": "application/json"})  # fmt: skip
        if request.url.path != "/v1/infer":
            return httpx.Response(response.status_code, content=response.content)
        body = response.json()
        change(body)  # type: ignore[operator]
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handler)


def _bump_output(body: dict) -> None:  # type: ignore[type-arg]
    probabilities = tensors.decode_json(body["outputs"])["probabilities"]
    probabilities[0, 0] = np.nextafter(probabilities[0, 0], np.float32(2))
    body["outputs"]["probabilities"] = tensors.encode_json({"p": probabilities}, raw=True)["p"]


def _other_nonce(body: dict) -> None:  # type: ignore[type-arg]
    receipt = json.loads(body["bundle"]["receipt"])
    receipt["nonce"] = "replayed"
    body["bundle"]["receipt"] = json.dumps(receipt, sort_keys=True, separators=(",", ":"))


def _flip_proof(body: dict) -> None:  # type: ignore[type-arg]
    body["bundle"]["checkpoint"] = body["bundle"]["checkpoint"].replace("\n1", "\n2", 1)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (_bump_output, "step 5"),
        (_other_nonce, "step 2"),  # the receipt's bytes no longer match the log
        (_flip_proof, "step 1"),
    ],
)
def test_a_tampered_answer_never_reaches_the_user(
    served: Served, tmp_path: Path, change: object, match: str
) -> None:
    with (
        httpx.Client(base_url=served.url) as real,
        Client(
            "http://node.test",
            transport=_tampering(real, change),
            known_nodes=tmp_path / "k.json",
        ) as c,
        pytest.raises(VerificationError, match=match),
    ):
        c.infer("alice/iris", {"X": IRIS})


def test_a_replayed_answer_is_refused(served: Served, tmp_path: Path) -> None:
    """A node (or a proxy) that answers with an old, genuine bundle is caught by the nonce."""
    with Client(served.url, known_nodes=tmp_path / "k.json") as honest:
        old = honest.infer("alice/iris", {"X": IRIS}, nonce="first")
    replay = {
        "outputs": tensors.encode_json(old.outputs),
        "bundle": old.bundle.to_dict(),
        "manifest": old.manifest,
    }
    real = httpx.Client(base_url=served.url)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/infer":
            return httpx.Response(200, json=replay)
        return httpx.Response(200, content=real.get(request.url.path).content)

    with (
        real,
        Client("http://node.test", transport=httpx.MockTransport(handler),
               known_nodes=tmp_path / "k2.json") as c,
        pytest.raises(VerificationError, match="a replayed answer"),
    ):  # fmt: skip
        c.infer("alice/iris", {"X": IRIS}, nonce="second")


@pytest.mark.parametrize(
    ("body", "status", "code", "match"),
    [
        ({"model": "alice/iris", "inputs": {}}, 400, "bad_input", "non-empty"),
        ({"model": "alice/nothing", "inputs": {"X": {"dtype": "float32", "shape": [1, 4],
          "data": [[1, 2, 3, 4]]}}}, 404, "not_found", "no repository 'alice/nothing'"),
        ({"model": "alice/iris", "inputs": {"X": {"dtype": "float64", "shape": [1, 4],
          "data": [[1, 2, 3, 4]]}}}, 400, "bad_input", "has dtype float64, expected float32"),
        ({"model": "alice/iris", "inputs": {"X": {"dtype": "float32", "shape": [1, 4],
          "data": [[1, 2, 3, 4]]}}, "mode": "optimistic:5"}, 400, "bad_input", "optimistic:5"),
        ({"model": "alice/iris"}, 422, "invalid_request", "inputs"),
        ({"model": 3, "inputs": {}, "extra": 1}, 422, "invalid_request", "extra"),
        ("not json", 422, "invalid_request", ""),
    ],
)  # fmt: skip
def test_bad_requests_get_json_errors_naming_the_problem(
    served: Served, body: object, status: int, code: str, match: str
) -> None:
    size = served.node.log.size
    kwargs = {"content": body} if isinstance(body, str) else {"json": body}
    response = httpx.post(f"{served.url}/v1/infer", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert match in response.json()["message"]
    assert served.node.log.size == size  # nothing was logged


def test_limits_and_unknown_paths_are_json_too(served: Served) -> None:
    big = httpx.post(f"{served.url}/v1/infer", content=b"x" * (2 << 20),
                     headers={"content-type": "application/json"})  # fmt: skip
    assert (big.status_code, big.json()["code"]) == (413, "body_too_large")
    missing = httpx.get(f"{served.url}/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["code"] == "http_error"
    for path in ("/v1/log/entries/999", "/v1/log/checkpoint/999"):
        response = httpx.get(served.url + path)
        assert (response.status_code, response.json()["code"]) == (404, "not_found"), path
    bad = httpx.get(f"{served.url}/v1/log/proof/inclusion", params={"index": 5, "size": 2})
    assert (bad.status_code, bad.json()["code"]) == (400, "bad_input")
    assert httpx.get(f"{served.url}/tile/../etc/passwd").status_code in (400, 404)
    assert httpx.get(f"{served.url}/v1/blobs/not-a-cid").json()["code"] == "bad_input"


def test_log_proofs_and_tiles_over_http(served: Served, client: Client) -> None:
    for _ in range(3):
        client.infer("alice/iris", {"X": IRIS})
    size = served.node.log.size
    signed = httpx.get(f"{served.url}/v1/log/checkpoint").text
    checkpoint, _ = note.verify_checkpoint(signed, [served.node.vkey])
    assert checkpoint.size == size
    proof = httpx.get(f"{served.url}/v1/log/proof/inclusion", params={"index": 1}).json()
    entry = httpx.get(f"{served.url}/v1/log/entries/1").content
    merkle.verify_inclusion(
        merkle.leaf_hash(entry), 1, size,
        [base64.b64decode(h) for h in proof["proof"]], checkpoint.root,
    )  # fmt: skip
    old_signed = httpx.get(f"{served.url}/v1/log/checkpoint/1").text
    old, _ = note.verify_checkpoint(old_signed, [served.node.vkey])
    consistency = httpx.get(f"{served.url}/v1/log/proof/consistency", params={"old": 1}).json()
    merkle.verify_consistency(
        1, size, old.root, checkpoint.root, [base64.b64decode(h) for h in consistency["proof"]]
    )
    # a client holding only its receipt asks by leaf hash, and gets the entry with the proof
    leaf = base64.b64encode(merkle.leaf_hash(entry)).decode()
    by_hash = httpx.get(f"{served.url}/v1/log/proof/inclusion", params={"hash": leaf}).json()
    assert (by_hash["index"], by_hash["proof"]) == (1, proof["proof"])
    assert base64.b64decode(by_hash["entry"]) == entry
    for params, status in (
        ({"hash": base64.b64encode(bytes(32)).decode()}, 404),
        ({"hash": "not base64!"}, 400),
        ({"hash": leaf, "index": 1}, 400),
        ({}, 400),
    ):
        wrong = httpx.get(f"{served.url}/v1/log/proof/inclusion", params=params)
        assert wrong.status_code == status, (params, wrong.text)
        assert wrong.json()["message"]
    tile = httpx.get(f"{served.url}/{tile_path(0, 0, size)}")
    assert tile.status_code == 200
    assert len(tile.content) == 32 * size
    assert tile.content[32:64] == merkle.leaf_hash(entry)


def test_models_manifests_and_blobs_over_http(served: Served, client: Client) -> None:
    listed = client.models(owner="alice")
    assert [m["repository"] for m in listed] == ["alice/iris"]
    manifest = httpx.get(f"{served.url}/v1/manifests/alice/iris@1")
    assert manifest.status_code == 200
    blob = httpx.get(f"{served.url}/v1/blobs/{listed[0]['model']}")
    assert blob.content == sklearn_model("iris")
    assert client.models(owner="bob") == []


def test_an_unreachable_node_is_a_network_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (
        Client(f"http://127.0.0.1:{port}", retries=1, known_nodes=tmp_path / "k.json") as c,
        pytest.raises(NetworkError, match="failed"),
    ):
        c.infer("alice/iris", {"X": IRIS})
    with pytest.raises(InputError, match="malformed vkey"):
        Client("http://127.0.0.1:1", trusted_vkeys=["not a key"])
    assert NotFound is not NetworkError


def test_node_start_serves_until_sigterm_and_loses_nothing(tmp_path: Path) -> None:
    """`verinfer node start` as a real process: answers, then stops cleanly on SIGTERM."""
    data = tmp_path / "node"
    alice = note.Signer(note.generate_key("alice")[0])
    with Hub(data / "hub") as hub:
        hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-c", "from verinfer.cli import main; main()", "node", "start",
         "--data", str(data), "--port", str(port)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "VERINFER_HOME": str(tmp_path)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        while True:  # until it serves, or has died (pytest's time limit stops a hang)
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.1)
        with Client(url, known_nodes=tmp_path / "known.json") as c:
            bundles = [c.infer("alice/iris", {"X": IRIS}).bundle for _ in range(5)]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    skey = (data / "node.skey").read_text().strip()
    assert skey not in stderr  # the node key never reaches the output
    with Node(data) as node:
        assert node.log.size == 5
        for bundle in bundles:
            verify_bundle(bundle, [node.vkey])
            assert node.log.entry(bundle.index) == bundle.receipt.data


@pytest.fixture
def empty(tmp_path: Path) -> Iterator[Served]:
    with Node(tmp_path / "empty-node") as node:
        running = Served(node)
        try:
            yield running
        finally:
            running.stop()


def test_publish_over_http_then_infer(empty: Served, tmp_path: Path) -> None:
    """The SDK uploads, the node checks, the publisher signs locally, and the model answers."""
    alice = note.Signer(note.generate_key("alice")[0])
    path = tmp_path / "iris.onnx"
    path.write_bytes(sklearn_model("iris"))
    with Client(empty.url, known_nodes=tmp_path / "k.json") as c:
        first = c.publish(path, repository="alice/iris", version="1.0", signer=alice)
        second = c.publish(
            sklearn_model("iris"), repository="alice/iris", version="1.1", signer=alice
        )
        assert first.model == second.model  # the same bytes, deduplicated
        assert first.publisher == alice.vkey
        result = c.infer("alice/iris@1.0", {"X": IRIS})
        assert result.manifest == first.cid
        assert c.infer("alice/iris", {"X": IRIS}).manifest == second.cid  # latest moved
        with pytest.raises(VerificationError, match=r"republishes version '1\.0'.*immutable"):
            c.publish(path, repository="alice/iris", version="1.0", signer=alice)
    history = empty.node.hub.history("alice/iris")
    assert history.versions == {"1.0": first.cid, "1.1": second.cid}
    assert empty.node.hub.pinned_owner("alice") == alice.vkey


def test_http_publishing_refuses_forgeries(empty: Served, tmp_path: Path) -> None:
    alice = note.Signer(note.generate_key("alice")[0])
    mallory = note.Signer(note.generate_key("alice")[0])  # same name, other key
    with Client(empty.url, known_nodes=tmp_path / "k.json") as c:
        c.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
        # another key of the same name cannot extend alice's history
        with pytest.raises(VerificationError, match="not by the owner's key"):
            c.publish(sklearn_model("iris"), repository="alice/iris", version="2", signer=mallory)
        # a manifest whose facts disagree with the model is refused by the node
        model = empty.node.hub.resolve("alice/iris").model
        facts = httpx.post(f"{empty.url}/v1/blobs/{model}/analysis").json()
        facts["parameters"] += 1
        from verinfer.hub.documents import Change, Manifest  # noqa: PLC0415

        history = empty.node.hub.history("alice/iris")
        forged = Manifest.create(
            facts, repository="alice/iris", version="2", model=model, signer=alice
        )
        change = Change.create(
            repository="alice/iris", seq=len(history.changes), prev=history.head,
            signer=alice, version="2", manifest=forged.cid,
        )  # fmt: skip
        response = httpx.post(
            f"{empty.url}/v1/repositories/alice/iris/changes",
            json={"manifest": forged.data.decode(), "changes": [change.data.decode()]},
        )
        assert response.status_code == 422
        assert "parameters" in response.json()["message"]
    # a hostile model is refused at analysis and leaves no blob
    garbage = httpx.put(f"{empty.url}/v1/blobs", content=b"\x08\x07not a model")
    blob = garbage.json()["cid"]
    refused = httpx.post(f"{empty.url}/v1/blobs/{blob}/analysis")
    assert refused.status_code == 400
    assert refused.json()["code"] == "bad_input"
    assert not empty.node.hub.blobs.has(blob)


def test_metrics_count_requests_and_latency(served: Served, client: Client) -> None:
    client.infer("alice/iris", {"X": IRIS})
    httpx.get(f"{served.url}/v1/log/entries/999")
    text = httpx.get(f"{served.url}/metrics").text
    assert 'verinfer_requests_total{route="/v1/infer",status="200"} 1.0' in text
    assert 'verinfer_requests_total{route="/v1/log/entries/{index}",status="404"} 1.0' in text
    assert "verinfer_inference_seconds_count 1.0" in text
    assert f"verinfer_log_size {float(served.node.log.size)}" in text


def test_a_full_node_answers_503_with_retry_after(tmp_path: Path) -> None:
    """Beyond ``max_pending`` admitted inferences the node sheds load instead of queueing."""
    alice = note.Signer(note.generate_key("alice")[0])
    with Node(tmp_path / "node") as node:
        model = (LIGHT / "light_inception_v2.onnx").read_bytes()
        node.hub.publish(model, repository="alice/inception", version="1", signer=alice)
        running = Served(node, max_pending=1)
        image = tensors.encode_json(
            {"data_0": np.zeros((1, 3, 224, 224), dtype=np.float32)}, raw=True
        )
        answers: list[httpx.Response] = []
        lock = threading.Lock()

        def call() -> None:
            response = httpx.post(
                f"{running.url}/v1/infer",
                json={"model": "alice/inception", "inputs": image},
                timeout=120,
            )
            with lock:
                answers.append(response)

        try:
            threads = [threading.Thread(target=call) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            running.stop()
    statuses = sorted(r.status_code for r in answers)
    assert 200 in statuses
    assert 503 in statuses
    shed = next(r for r in answers if r.status_code == 503)
    assert shed.headers["retry-after"] == "1"
    assert shed.json()["code"] == "over_limit"


def test_a_missing_model_is_fetched_from_a_peer_and_checked(served: Served, tmp_path: Path) -> None:
    """Node B has no models; asked for alice/iris (by name, then by CID) it pulls them from A."""
    model_cid = served.node.hub.resolve("alice/iris").model
    with Node(tmp_path / "b", peers=["http://127.0.0.1:1", served.url]) as b:  # a dead peer first
        other = Served(b)
        try:
            with Client(other.url, known_nodes=tmp_path / "k.json") as c:
                result = c.infer("alice/iris", {"X": IRIS})
                assert result.bundle.receipt["node"] == b.vkey  # B answered, with its own key
                assert result.bundle.receipt["model"] == model_cid
            assert b.hub.blobs.has(model_cid)
            assert (
                b.hub.history("alice/iris").changes == served.node.hub.history("alice/iris").changes
            )
            assert b.hub.pinned_owner("alice") == served.node.hub.pinned_owner("alice")
            with pytest.raises(NotFound, match="on the peers"):
                b.resolve("alice/absent")
        finally:
            other.stop()
    with Node(tmp_path / "c", peers=[served.url]) as c_node:
        assert c_node.resolve(model_cid).model == model_cid  # by CID


def test_the_async_client_verifies_like_the_sync_one(served: Served, tmp_path: Path) -> None:
    async def main() -> list[Bundle]:
        async with AsyncClient(served.url, known_nodes=tmp_path / "k.json") as c:
            results = await asyncio.gather(*(c.infer("alice/iris", {"X": IRIS}) for _ in range(16)))
        return [r.bundle for r in results]

    bundles = asyncio.run(main())
    assert len({b.receipt["nonce"] for b in bundles}) == 16  # a fresh nonce each
    verify_bundles(bundles, [served.node.vkey])
    assert json.loads((tmp_path / "k.json").read_text())[served.url] == served.node.vkey

    async def tampered() -> None:
        with httpx.Client(base_url=served.url) as real:
            async with AsyncClient(
                "http://node.test",
                transport=httpx.MockTransport(_tampering(real, _bump_output).handler),
                known_nodes=tmp_path / "k2.json",
            ) as c:
                await c.infer("alice/iris", {"X": IRIS})

    with pytest.raises(VerificationError, match="step 5"):
        asyncio.run(tampered())


def test_analysing_an_accepted_document_deletes_nothing(served: Served) -> None:
    """Asking the node to analyse a manifest or change blob is refused, and they stay."""
    manifest = served.node.hub.resolve("alice/iris")
    change = served.node.hub.history("alice/iris").changes[0].cid
    for blob in (manifest.cid, change):
        refused = httpx.post(f"{served.url}/v1/blobs/{blob}/analysis")
        assert refused.status_code == 400
        assert served.node.hub.blobs.has(blob)
    assert served.node.hub.resolve("alice/iris") == manifest
    assert served.node.hub.verify() == []


def test_a_chunked_body_is_refused(served: Served) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "alice/iris", '
        yield b'"inputs": {}}'

    response = httpx.post(f"{served.url}/v1/infer", content=chunks())
    assert (response.status_code, response.json()["code"]) == (411, "length_required")


def test_an_answer_from_another_model_is_refused(served: Served, tmp_path: Path) -> None:
    """A node that runs a cheaper model than the one asked for signs a genuine receipt, but for
    that other model: the client compares what it asked with what the receipt names."""
    eve = note.Signer(note.generate_key("eve")[0])
    served.node.hub.publish(
        sklearn_model("breast_cancer"), repository="eve/cheap", version="1", signer=eve
    )
    # eve's model takes 30 features; give it an input of that shape and ask for alice's by CID
    wide = np.zeros((1, 30), dtype=np.float32)
    alice_model = served.node.hub.resolve("alice/iris").model

    def swap(request: httpx.Request) -> httpx.Response:
        with httpx.Client(base_url=served.url) as real:
            if request.url.path == "/v1/infer":
                body = json.loads(request.content)
                body["model"] = "eve/cheap"
                response = real.post("/v1/infer", json=body)
            else:
                response = real.get(request.url.path)
        return httpx.Response(response.status_code, content=response.content)

    for asked in (alice_model, "alice/iris", "alice/iris@1"):
        with (
            Client(
                "http://node.test",
                transport=httpx.MockTransport(swap),
                trusted_vkeys=[served.node.vkey],
            ) as c,
            pytest.raises(VerificationError, match="another model answered"),
        ):
            c.infer(asked, {"X": wide})


def test_retry_after_is_capped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A node answering 503 with Retry-After: 86400 cannot park the client for a day."""
    slept: list[float] = []
    monkeypatch.setattr("verinfer.client.time.sleep", slept.append)

    def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            503, headers={"retry-after": "86400"}, json={"code": "over_limit", "message": "busy"}
        )

    with (
        Client("http://node.test", transport=httpx.MockTransport(busy), retries=3,
               known_nodes=tmp_path / "k.json") as c,
        pytest.raises(LimitExceeded, match="busy"),
    ):  # fmt: skip
        c.node_vkey()
    assert len(slept) == 3
    assert max(slept) <= 5.0


def test_large_inputs_travel_as_npz_and_are_proven_the_same(served: Served, client: Client) -> None:
    bob = note.Signer(note.generate_key("bob")[0])
    squeezenet = examples.light_model("squeezenet", seed=3)
    served.node.hub.publish(squeezenet, repository="bob/squeeze", version="1", signer=bob)
    image = {"data_0": np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)}
    sent: list[str] = []
    client._http.event_hooks = {"request": [lambda request: sent.append(request.url.path)]}
    result = client.infer("bob/squeeze", image)  # 602 kB of inputs: binary
    small = client.infer("alice/iris", {"X": IRIS})  # 32 bytes: JSON
    assert [path for path in sent if path.startswith("/v1/infer")] == [
        "/v1/infer/npz",
        "/v1/infer",
    ]
    verify_bundle(
        result.bundle, [served.node.vkey], image, result.outputs, squeezenet, reexecute=True
    )
    assert small.outputs["label"].shape == (2,)
    npz = tensors.encode_binary(image)
    with httpx.Client(base_url=served.url) as http:
        ok = http.post("/v1/infer/npz", params={"model": "bob/squeeze"}, content=npz)
        assert ok.status_code == 200
        proven = Bundle.from_json(ok.json()["bundle"]).receipt
        assert proven["inputs"] == result.bundle.receipt["inputs"]  # the same digest
        other = tensors.encode_binary({"other": image["data_0"]})
        for body, params, fragment in (
            (b"PK\x03\x04 not a zip", {"model": "bob/squeeze"}, "malformed .npy/.npz"),
            (npz, {}, "model"),
            (npz, {"model": "bob/squeeze", "mode": "bogus"}, "mode 'bogus'"),
            (other, {"model": "bob/squeeze"}, "data_0"),
        ):
            bad = http.post("/v1/infer/npz", params=params, content=body)
            assert 400 <= bad.status_code < 500, bad.text
            assert fragment in bad.json()["message"], bad.json()
