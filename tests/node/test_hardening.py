"""One request must not hurt the node (issue 15, items 8-12), against real nodes on 127.0.0.1.

No test here asserts on time: where one request must not stall others, the test holds the
slow work back with an event it controls and checks that the others answer *before* it lets go.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_http import IRIS, Served

from verinfer import cid, note, tensors
from verinfer.examples import sklearn_model
from verinfer.hub import Hub
from verinfer.hub.sandbox import Sandbox
from verinfer.log import Log
from verinfer.node import Node
from verinfer.node.app import MAX_EVIDENCE_CHECKS
from verinfer.witness import add_checkpoint_body

T = TypeVar("T")
VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]
PATIENCE = 60.0  # seconds a request may take before the test calls the node stalled


def _loop_model(tag: int) -> bytes:
    """A small Loop model (``y = x + trips``, adding 1 per iteration); ``tag`` makes its
    bytes, and so its CID, distinct."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)],
        f"loop{tag}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [
            helper.make_tensor("trips", TensorProto.INT64, [], [3 + tag]),
            helper.make_tensor("cond", TensorProto.BOOL, [], [True]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


class GatedSandbox(Sandbox):
    """The real sandbox, except that each call first waits for ``gate``: the test decides
    when analyses may finish. ``entered`` counts the calls that reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def call(self, function: Callable[..., T], *args: Any, timeout: float, what: str) -> T:
        self.entered.release()
        if not self.gate.wait(PATIENCE * 4):
            raise AssertionError("the test never opened the gate")
        return super().call(function, *args, timeout=timeout, what=what)


def _gauge(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=PATIENCE).text
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name!r} in /metrics")


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


# -- item 8: analyses have their own bounded queue --------------------------------------------


def test_analyses_queue_apart_and_the_one_beyond_the_queue_gets_503(tmp_path: Path) -> None:
    """45 analyses held in the sandbox: the model list, the witness, gossip and blob reads still
    answer while they wait, and a 46th analysis gets 503 with Retry-After."""
    sandbox = GatedSandbox()
    log_key = note.Signer(note.generate_key("log.example")[0])
    with (
        Hub(tmp_path / "node" / "hub", sandbox=sandbox) as hub,
        Node(tmp_path / "node", hub=hub) as node,
        Log.open(tmp_path / "peer", log_key) as peer,
        ThreadPoolExecutor(46) as pool,
    ):
        node.witness.trust("log.example", log_key.vkey)
        peer.append([b"entry %d" % i for i in range(3)])
        served = Served(node, max_analyses=45)
        try:
            with httpx.Client(base_url=served.url, timeout=PATIENCE) as http:
                blobs = [
                    http.put("/v1/blobs", content=_loop_model(tag)).json()["cid"]
                    for tag in range(46)
                ]

                def analyse(blob: str) -> httpx.Response:
                    return httpx.post(
                        f"{served.url}/v1/blobs/{blob}/analysis", timeout=PATIENCE * 4
                    )

                held = [pool.submit(analyse, blob) for blob in blobs[:45]]
                # (1) all 45 admitted: one in the sandbox, 44 queued behind it
                assert sandbox.entered.acquire(timeout=PATIENCE)
                hang = time.monotonic() + PATIENCE  # a guard against a hang, not a measure
                while _gauge(served.url, "verinfer_analyses") < 45:
                    assert not any(f.done() for f in held), [
                        f.result().text for f in held if f.done()
                    ]
                    assert time.monotonic() < hang, "the 45 analyses were never all admitted"
                # (2) the 46th is refused at once, with a time to come back
                beyond = analyse(blobs[45])
                assert beyond.status_code == 503, beyond.text
                assert beyond.json()["code"] == "over_limit"
                assert "45 model analyses are running or queued" in beyond.json()["message"]
                assert int(beyond.headers["Retry-After"]) > 0
                # (3) the rest of the node answers while they are all still held
                assert http.get("/v1/models").status_code == 200
                cosigned = http.post(
                    "/add-checkpoint", content=add_checkpoint_body(0, [], peer.signed_checkpoint)
                )
                assert cosigned.status_code == 200, cosigned.text
                gossip = http.post("/v1/gossip", content=peer.signed_checkpoint.encode())
                assert gossip.json() == {"equivocation": None}
                assert http.get(f"/v1/blobs/{blobs[0]}").content == _loop_model(0)
                assert not any(f.done() for f in held)  # the order is what the test shows
                assert not sandbox.entered.acquire(blocking=False)  # one at a time in the sandbox
            sandbox.gate.set()
            answers = [f.result() for f in held]
        finally:
            sandbox.gate.set()
            served.stop()
    assert [a.status_code for a in answers] == [200] * 45, [a.text for a in answers][:3]
    assert [a.json()["size"] for a in answers] == [len(_loop_model(tag)) for tag in range(45)]


def test_evidence_checks_queue_apart_with_a_bound(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Submitted evidence is checked by re-running the model (up to the run timeout): the checks
    take threads of their own, at most MAX_EVIDENCE_CHECKS admitted; the one beyond gets 503."""
    gate, entered = threading.Event(), threading.Semaphore(0)
    real = served.node.judge

    def held(document: bytes) -> tuple[str, bool]:
        entered.release()
        assert gate.wait(PATIENCE * 4), "the test never opened the gate"
        return real(document)

    monkeypatch.setattr(served.node, "judge", held)
    bound = MAX_EVIDENCE_CHECKS
    with (
        ThreadPoolExecutor(bound) as pool,
        httpx.Client(base_url=served.url, timeout=PATIENCE) as http,
    ):
        try:
            held_ = [
                pool.submit(httpx.post, f"{served.url}/v1/evidence", json={}, timeout=PATIENCE * 4)
                for _ in range(bound)
            ]
            hang = time.monotonic() + PATIENCE  # a guard against a hang, not a measure
            while _gauge(served.url, "verinfer_evidence_checks") < bound:
                assert time.monotonic() < hang, "the checks were never all admitted"
            beyond = http.post("/v1/evidence", json={})
            assert beyond.status_code == 503, beyond.text
            assert f"{bound} evidence checks are running or queued" in beyond.json()["message"]
            assert int(beyond.headers["Retry-After"]) > 0
            assert http.get("/v1/models").status_code == 200
            assert http.post("/v1/gossip", content=b"not a checkpoint").status_code == 400
            assert not any(f.done() for f in held_)
        finally:
            gate.set()
        answers = [f.result() for f in held_]
    assert {a.status_code for a in answers} == {400}  # the real check, once let through
    assert "keeps evidence only about the logs it witnesses" in answers[0].json()["message"]


# -- item 9: an .npz's directory is capped before it is read, and decoded off the event loop ----


def _many_members(count: int) -> bytes:
    """An .npz-like zip whose directory lists ``count`` empty members (46 bytes and a short
    name each): small on the wire, an object per entry for whoever opens it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for index in range(count):
            archive.writestr(f"{index:x}", b"")
    return buffer.getvalue()


def test_an_npz_listing_too_many_members_is_refused_over_http(served: Served) -> None:
    crafted = _many_members(6000)  # ~500 KB, under the body limit; a cap of 1024 members
    assert len(crafted) < 1 << 20
    with httpx.Client(base_url=served.url, timeout=PATIENCE) as http:
        refused = http.post("/v1/infer/npz", params={"model": "alice/iris"}, content=crafted)
        assert refused.status_code == 400, refused.text
        assert refused.json() == {
            "code": "bad_input",
            "message": f"the .npz lists 6000 members, above the limit of {tensors.MAX_NPZ_MEMBERS}",
        }
        # and the node goes on answering
        good = http.post(
            "/v1/infer/npz",
            params={"model": "alice/iris"},
            content=tensors.encode_binary({"X": IRIS}),
        )
        assert good.status_code == 200, good.text


def test_the_npz_cap_holds_on_the_dispute_routes_too(served: Served) -> None:
    """A side's opening decodes the disputed inputs (base64 .npz) with the same parser."""
    crafted = base64.b64encode(_many_members(6000)).decode()
    with httpx.Client(base_url=served.url, timeout=PATIENCE) as http:
        refused = http.post("/v1/disputes/party/opening", json={"dispute": {}, "inputs": crafted})
    assert refused.status_code == 400, refused.text
    assert "the .npz lists 6000 members, above the limit of 1024" in refused.json()["message"]


def test_an_npz_whose_directory_understates_its_members_is_refused() -> None:
    """The end-of-archive record says 1 member; the directory it points at lists 30,000: the
    directory's declared size (what zipfile reads entries from) is what counts."""
    crafted = bytearray(_many_members(30000))
    end = crafted.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", crafted, end + 8, 1, 1)  # entries on this disk, entries in total
    with pytest.raises(
        tensors.InputError,
        match=r"the \.npz's zip directory is \d+ bytes, above the limit of 1048576",
    ):
        tensors.decode_binary(bytes(crafted))
    # a directory that says it is smaller than it is hides nothing either: zipfile reads only
    # the declared bytes (the last ~12 entries here), which are then refused by name
    struct.pack_into("<I", crafted, end + 12, 1000)
    with pytest.raises(tensors.InputError, match=r"member '[0-9a-f]+' of the \.npz is not a \.npy"):
        tensors.decode_binary(bytes(crafted))


def test_an_npz_is_decoded_off_the_event_loop(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one request's .npz is being decoded (held here until the test lets go), the node
    answers others: decoding on the event loop would hold every request behind it."""
    decoding, release = threading.Event(), threading.Event()
    real = tensors.decode_binary

    def held(data: bytes, **options: Any) -> dict[str, np.ndarray]:
        decoding.set()
        assert release.wait(PATIENCE * 2), "the test never let the decoding go"
        return real(data, **options)

    monkeypatch.setattr(tensors, "decode_binary", held)
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=served.url, timeout=PATIENCE) as http:
        slow = pool.submit(
            http.post,
            "/v1/infer/npz",
            params={"model": "alice/iris"},
            content=tensors.encode_binary({"X": IRIS}),
        )
        try:
            assert decoding.wait(PATIENCE)
            assert http.get("/healthz").status_code == 200
            assert http.get("/v1/models").status_code == 200
            assert not slow.done()
        finally:
            release.set()
        assert slow.result().status_code == 200


# -- item 11: a shape no array can have is a 400, and a clear CLI error ----------------------

HUGE_SHAPE = [0, 2**70]


def _npy_header_only(shape: list[int]) -> bytes:
    """An .npy member that declares ``shape`` of float32 (no data: the shape holds none)."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple(shape)}, }}"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


def test_a_shape_too_large_to_represent_is_a_400_over_http(served: Served) -> None:
    message = (
        "tensor 'X': shape [0, 1180591620717411303424] is too large to represent (its dims, "
        "zeros left out, times the 4-byte element exceed 2**63 - 1 bytes)"
    )
    with httpx.Client(base_url=served.url, timeout=PATIENCE) as http:
        for form in ({"data": []}, {"base64": ""}):
            inputs = {"X": {"dtype": "float32", "shape": HUGE_SHAPE, **form}}
            answer = http.post("/v1/infer", json={"model": "alice/iris", "inputs": inputs})
            assert answer.status_code == 400, answer.text
            assert answer.json() == {"code": "bad_input", "message": message}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("X.npy", _npy_header_only(HUGE_SHAPE))
        answer = http.post(
            "/v1/infer/npz", params={"model": "alice/iris"}, content=buffer.getvalue()
        )
        assert answer.status_code == 400, answer.text
        assert answer.json() == {"code": "bad_input", "message": message}


def test_a_shape_too_large_to_represent_is_a_clear_cli_error(
    served: Served, tmp_path: Path
) -> None:
    """``verinfer verify --inputs`` with such a tensor: exit 1 naming it, no traceback."""
    from verinfer.client import Client  # noqa: PLC0415

    with Client(served.url, known_nodes=tmp_path / "known.json") as client:
        bundle = client.infer("alice/iris", {"X": IRIS}).bundle
    (tmp_path / "bundle.json").write_text(bundle.to_json())
    (tmp_path / "trust").write_text(served.node.vkey + "\n")
    (tmp_path / "inputs.json").write_text(
        json.dumps({"X": {"dtype": "float32", "shape": HUGE_SHAPE, "data": []}})
    )
    env = {**os.environ, "VERINFER_HOME": str(tmp_path / "home")}
    checked = subprocess.run(
        [*VERINFER, "verify", str(tmp_path / "bundle.json"), "--trust", str(tmp_path / "trust"),
         "--inputs", str(tmp_path / "inputs.json")],
        env=env, capture_output=True, text=True, timeout=PATIENCE, check=False,
    )  # fmt: skip
    assert checked.returncode == 1, checked.stderr
    assert "Traceback" not in checked.stderr
    assert "tensor 'X': shape [0, 1180591620717411303424] is too large to represent" in " ".join(
        checked.stderr.split()
    )


# -- items 10 and 12: a real `verinfer node start` process -----------------------------------

CAP_MIB = 64  # the node's inference memory limit in these tests


def _filled_sum_model() -> bytes:
    """``y = ReduceSum(ConstantOfShape(n, 1.0))``: the requester chooses how much it fills."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "ConstantOfShape",
                ["n"],
                ["filled"],
                value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
            ),
            helper.make_node("ReduceSum", ["filled"], ["y"], keepdims=0),
        ],
        "filled_sum",
        [helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


class Process:
    """``verinfer node start`` as a child process, with the deadlines and limit under test."""

    def __init__(self, data: Path, home: Path) -> None:
        with Hub(data / "hub") as hub:
            alice = note.Signer(note.generate_key("alice")[0])
            hub.publish(_filled_sum_model(), repository="alice/fill", version="1", signer=alice)
            hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = subprocess.Popen(
            [*VERINFER, "node", "start", "--data", str(data), "--port", str(self.port),
             "--max-run-memory", str(CAP_MIB), "--header-timeout", "0.5", "--body-timeout", "0.5"],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "VERINFER_HOME": str(home)},
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        hang = time.monotonic() + PATIENCE  # a guard against a hang, not a measure
        while True:
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.process.poll() is None, (
                self.process.stderr.read() if self.process.stderr else ""
            )
            assert time.monotonic() < hang, "the node did not start"
            time.sleep(0.1)

    def peak_rss(self) -> int:
        """The node process's peak resident memory so far (VmHWM), in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        [line] = [line for line in status.splitlines() if line.startswith("VmHWM:")]
        return int(line.split()[1]) * 1024

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=PATIENCE)
        return stderr


@pytest.fixture(scope="module")
def node_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    root = tmp_path_factory.mktemp("hardening")
    running = Process(root / "node", root / "home")
    try:
        yield running
    finally:
        stderr = running.stop()
        assert running.process.returncode == 0, stderr
        assert "Traceback" not in stderr, stderr  # cut-off clients are no server errors


def _fill(url: str, count: int) -> httpx.Response:
    inputs = {"n": {"dtype": "int64", "shape": [1], "data": [count]}}
    return httpx.post(
        f"{url}/v1/infer", json={"model": "alice/fill", "inputs": inputs}, timeout=PATIENCE
    )


def test_a_run_above_the_memory_limit_is_refused_and_the_node_unharmed(
    node_process: Process,
) -> None:
    url = node_process.url
    small = _fill(url, 1000)
    assert small.status_code == 200, small.text
    assert small.json()["outputs"]["y"]["data"] == 1000.0
    # 400 million floats (1.6 GB) in one tensor: refused before it is allocated
    huge = _fill(url, 400_000_000)
    assert huge.status_code == 400, huge.text
    assert huge.json() == {
        "code": "bad_input",
        "message": f"the model needs 1600000000 bytes at once on these inputs, above the node's "
        f"inference memory limit of {CAP_MIB << 20} bytes (verinfer node start --max-run-memory)",
    }
    # the node never held it: its peak resident memory stayed far below (a generous bound)
    assert node_process.peak_rss() < 1 << 30
    # a run within the limit, twice (what one run leaves in the arena is given back), and the
    # next request, all answer
    for _ in range(2):
        within = _fill(url, 12_000_000)  # 48 MB of the 64 MiB
        assert within.status_code == 200, within.text
        assert within.json()["outputs"]["y"]["data"] == 12_000_000.0
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
    assert node_process.peak_rss() < 1 << 30


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
    sock.settimeout(PATIENCE)  # a guard against a hang: the node must close first
    return sock


def _answer_then_close(sock: socket.socket) -> bytes:
    """Everything the node sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_request_head_that_never_finishes_is_cut_off(node_process: Process) -> None:
    with _connect(node_process.port) as silent, _connect(node_process.port) as half:
        half.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0")  # half a header line, then nothing
        # other requests are answered while those two hang on
        assert httpx.get(f"{node_process.url}/healthz", timeout=PATIENCE).status_code == 200
        for sock in (half, silent):
            answer = _answer_then_close(sock)
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
            assert answer.endswith(b"a request's head must arrive within 0.5 s\"}"), answer


def test_a_request_head_beyond_the_size_limit_is_cut_off(node_process: Process) -> None:
    with _connect(node_process.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Padding: " + b"a" * (70 << 10))
        answer = _answer_then_close(sock)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    assert b"a request's head may be at most 65536 bytes" in answer


def test_a_body_sent_with_its_head_does_not_count_as_head(node_process: Process) -> None:
    """One read may hold a small head and the start of a large body (an upload): only the head
    counts toward the head's limit (regression: a 1 MiB model upload was answered 431)."""
    body = os.urandom(1 << 20)
    head = (
        b"PUT /v1/blobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with _connect(node_process.port) as sock:
        sock.sendall(head + body)
        answer = _answer_then_close(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:300]
    assert cid.compute(body).encode() in answer


def test_a_body_that_stalls_is_cut_off(node_process: Process) -> None:
    with _connect(node_process.port) as sock:
        sock.sendall(
            b"POST /add-checkpoint HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"
            + b"old 0\n"  # 6 of the 100 bytes promised, then nothing
        )
        assert httpx.get(f"{node_process.url}/healthz", timeout=PATIENCE).status_code == 200
        answer = _answer_then_close(sock)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert b"the request's body stalled for 0.5 s" in answer
    # a kept-alive connection: the deadline of a head starts with its first byte, so a client
    # may pause between requests (uvicorn's keep-alive timeout bounds that), and sends two
    with _connect(node_process.port) as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
            head, body = received.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += sock.recv(65536)
            assert json.loads(body)["status"] == "ok"
    # and a body that arrives is read and answered as usual
    with httpx.Client(timeout=PATIENCE) as http:
        refused = http.post(f"{node_process.url}/add-checkpoint", content=b"not a checkpoint")
    assert refused.status_code == 400, refused.text


def test_judging_works_in_a_node_process_with_another_memory_limit(tmp_path: Path) -> None:
    """The arena cap is one per process: a node started with a non-default limit must still
    re-execute to verify, judge fraud evidence and audit (they ask for no cap of their own),
    instead of refusing every one with "already caps inference memory"."""
    code = (
        "import sys, numpy as np; from pathlib import Path;"
        "from verinfer import examples, note; from verinfer.engine import Engine;"
        "from verinfer.node import Node; from verinfer.audit import Auditor;"
        "from verinfer.verify import verify_bundle;"
        "alice = note.Signer(note.generate_key('alice')[0]);"
        "model = examples.sklearn_model('iris');"
        "node = Node(Path(sys.argv[1]), engine=Engine(memory=96 << 20));"
        "m = node.hub.publish(model, repository='alice/iris', version='1', signer=alice);"
        "x = {'X': np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)};"
        "r = node.infer(m.model, x);"
        "verify_bundle(r.bundle, [node.vkey], inputs=x, outputs=r.outputs, model=model,"
        " reexecute=True);"
        "Auditor([], 0.5).close(); node.close(); print('judged')"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "node")],
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "judged"


def _string_models() -> dict[str, bytes]:
    """Models that compute with strings inside, though their inputs and outputs are numbers."""
    n = helper.make_tensor_value_info("n", TensorProto.INT64, [1])
    size = helper.make_tensor_value_info("size", TensorProto.INT64, [])
    big = helper.make_tensor("big", TensorProto.STRING, [1], [b"A" * 4096])

    def model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto]) -> bytes:
        graph = helper.make_graph(nodes, "strings", inputs, [size])
        made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        made.ir_version = 8
        return made.SerializeToString()

    return {
        # the review's model: a string constant expanded to a requester-chosen shape
        "constant": model(
            [
                helper.make_node("Constant", [], ["c"], value=big),
                helper.make_node("Expand", ["c", "n"], ["e"]),
                helper.make_node("Size", ["e"], ["size"]),
            ],
            [n],
        ),
        "cast": model(
            [
                helper.make_node("Cast", ["n"], ["s"], to=TensorProto.STRING),
                helper.make_node("Size", ["s"], ["size"]),
            ],
            [n],
        ),
    }


@pytest.mark.parametrize("kind", ["constant", "cast"])
def test_a_model_that_computes_with_strings_is_refused_at_publish(
    served: Served, kind: str
) -> None:
    """ONNX Runtime's arena cap counts a string tensor's headers, not its characters: a 1 MiB
    string constant expanded 800 times took 900 MB under a 64 MiB cap (an adversarial review).
    Such a model is refused when it is analysed, naming the strings."""
    data = _string_models()[kind]
    blob = httpx.put(f"{served.url}/v1/blobs", content=data, timeout=PATIENCE).json()["cid"]
    refused = httpx.post(f"{served.url}/v1/blobs/{blob}/analysis", timeout=PATIENCE)
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "bad_input"
    assert "the model computes with strings" in refused.json()["message"]
