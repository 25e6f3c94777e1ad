"""Node.infer end to end: real models, real ONNX Runtime, a real log; bundles verified offline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
from hub_models import LIGHT, multi_io_model, sklearn_model

from verinfer import merkle, note, tensors
from verinfer.engine import Engine
from verinfer.errors import InputError, LimitExceeded, StorageError
from verinfer.hub import Hub
from verinfer.node import Node, Result
from verinfer.verify import Bundle, verify_bundle, verify_bundles

IRIS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


@pytest.fixture
def alice() -> note.Signer:
    return note.Signer(note.generate_key("alice")[0])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with Node(tmp_path / "node") as opened:
        yield opened


class Costed(Engine):
    """Runs models for real, but each run costs the CPU time ``costs`` names for its model CID
    (0 for others), counted per thread: what the node learns of run lengths then depends on
    these figures, not on how loaded the machine is."""

    def __init__(self, costs: dict[str, float]) -> None:
        super().__init__()
        self.costs = costs
        self._spent = threading.local()

    def cpu_time(self) -> float:
        return float(getattr(self._spent, "seconds", 0.0))

    def run(self, model: str, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        outputs = super().run(model, *args, **kwargs)
        self._spent.seconds = self.cpu_time() + self.costs.get(model, 0.0)
        return outputs


def _bare(data: bytes, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return list(session.run(None, inputs))


@pytest.mark.parametrize("dataset", ["iris", "digits", "breast_cancer"])
def test_infer_returns_real_outputs_and_a_verifiable_bundle(
    node: Node, alice: note.Signer, dataset: str
) -> None:
    data = sklearn_model(dataset)
    manifest = node.hub.publish(data, repository=f"alice/{dataset}", version="1", signer=alice)
    width = manifest.body["inputs"][0]["shape"][1]
    rng = np.random.default_rng(1)
    inputs = {"X": rng.standard_normal((3, width)).astype(np.float32)}
    result = node.infer(f"alice/{dataset}", inputs, nonce="fresh-1")
    for got, want in zip(result.outputs.values(), _bare(data, inputs), strict=True):
        np.testing.assert_array_equal(got, want)
    bundle = Bundle.from_json(result.bundle.to_json())
    assert bundle == result.bundle
    receipt = bundle.receipt
    assert receipt["model"] == manifest.model
    assert receipt["manifest"] == manifest.cid
    assert receipt["nonce"] == "fresh-1"
    assert receipt["engine"] == node.engine.identity
    lines: list[str] = []
    verify_bundle(
        bundle,
        [node.vkey],
        inputs=inputs,
        outputs=result.outputs,
        model=data,
        reexecute=True,
        report=lines.append,
    )
    assert [line.split(".")[0] for line in lines] == ["1", "2", "3", "4", "5", "6"]


def test_edge_case_signature_and_a_real_architecture(node: Node, alice: note.Signer) -> None:
    node.hub.publish(multi_io_model(), repository="alice/multi", version="1", signer=alice)
    inputs = {
        "x": np.array([[1, -2, 3], [4, 5, -6]], dtype=np.float32),
        "k": np.array([[1, 2, 3]], dtype=np.int64),
    }
    result = node.infer("alice/multi", inputs)
    assert result.outputs["positive"].dtype == np.bool_
    verify_bundle(result.bundle, [node.vkey], inputs=inputs, outputs=result.outputs)
    squeezenet = (LIGHT / "light_squeezenet.onnx").read_bytes()
    node.hub.publish(squeezenet, repository="alice/squeezenet", version="1", signer=alice)
    image = {"data_0": np.random.default_rng(2).random((1, 3, 224, 224), dtype=np.float32)}
    answer = node.infer("alice/squeezenet", image)
    verify_bundle(answer.bundle, [node.vkey], image, answer.outputs, squeezenet, reexecute=True)


def test_bad_inputs_are_refused_and_nothing_is_logged(node: Node, alice: note.Signer) -> None:
    node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    size = node.log.size
    cases = [
        ({"x": IRIS}, r"missing \['X'\], unexpected \['x'\]"),
        ({"X": IRIS.astype(np.float64)}, "input 'X' has dtype float64, expected float32"),
        ({"X": IRIS[0]}, "input 'X' has rank 1"),
        ({"X": IRIS[:, :3]}, "input 'X' has size 3 on axis 1, expected 4"),
    ]
    for inputs, message in cases:
        with pytest.raises(InputError, match=message):
            node.infer("alice/iris", inputs)
    with pytest.raises(InputError, match="mode 'optimistic:5' is not available"):
        node.infer("alice/iris", {"X": IRIS}, mode="optimistic:5")
    with pytest.raises(InputError, match="malformed nonce"):
        node.infer("alice/iris", {"X": IRIS}, nonce="not a nonce!")
    assert node.log.size == size


def test_names_follow_new_versions(node: Node, alice: note.Signer) -> None:
    first = node.hub.publish(sklearn_model("iris"), repository="alice/m", version="1", signer=alice)
    assert node.infer("alice/m", {"X": IRIS}).manifest == first
    second = node.hub.publish(
        sklearn_model("breast_cancer"), repository="alice/m", version="2", signer=alice
    )
    wide = np.zeros((1, 30), dtype=np.float32)
    assert node.infer("alice/m", {"X": wide}).manifest == second
    assert node.infer("alice/m@1", {"X": IRIS}).manifest == first
    assert node.infer(first.model, {"X": IRIS}).manifest == first


def test_concurrent_requests_share_checkpoints(node: Node, alice: note.Signer) -> None:
    node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    bundles: list[Bundle] = []
    lock = threading.Lock()

    def caller() -> None:
        for _ in range(10):
            result = node.infer("alice/iris", {"X": IRIS})
            with lock:
                bundles.append(result.bundle)

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(bundles) == 160
    assert len({b.checkpoint for b in bundles}) < 160  # group commit shared signatures
    verify_bundles(bundles, [node.vkey])


def test_an_idle_nodes_durable_answer_is_signed_while_its_record_syncs(
    node: Node, alice: note.Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller alone waits for its entry: its checkpoint is signed by the log's signer thread
    (while the journal syncs). A promised entry is committed after its answer, and its
    checkpoint signed by the thread that commits it."""
    node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    threads: dict[str, str] = {}  # checkpoint text -> the thread that signed it
    sign = note.Signer.sign

    def recording(self: note.Signer, text: str) -> str:
        threads[text] = threading.current_thread().name
        return sign(self, text)

    def text_of(signed: str) -> str:
        return signed[: signed.index("\n\n") + 1]

    monkeypatch.setattr(note.Signer, "sign", recording)
    durable = node.infer("alice/iris", {"X": IRIS})
    assert threads[text_of(durable.bundle.checkpoint)] == "verinfer-log-signer"
    verify_bundle(durable.bundle, [node.vkey], inputs={"X": IRIS}, outputs=durable.outputs)
    promised = node.infer("alice/iris", {"X": IRIS}, durability="promise")
    deadline = time.monotonic() + 30
    while node.log.size <= promised.bundle.index:
        assert time.monotonic() < deadline, "the promised entry was never logged"
        time.sleep(0.01)
    assert threads[text_of(node.log.signed_checkpoint)] != "verinfer-log-signer"


def test_asyncio_callers_get_their_own_answers_in_shared_batches(
    node: Node, alice: note.Signer
) -> None:
    """Many coroutines at once: good and bad requests mixed, one caller cancelled; each gets
    its own outputs or its own error, and the answered ones share checkpoints."""
    node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    session = ort.InferenceSession(node.hub.blobs.get(node.resolve("alice/iris").model))
    rows = np.random.default_rng(7).random((96, 4), dtype=np.float32) * 8

    async def one(k: int) -> object:
        if k % 8 == 3:  # a bad request in the same burst
            bad = {"X": np.ones((1, 5), dtype=np.float32)}
            return await node.ainfer("alice/iris", bad)
        return await node.ainfer("alice/iris", {"X": rows[k : k + 1]}, nonce=f"{k:016x}")

    async def burst() -> list[object]:
        calls = [asyncio.ensure_future(one(k)) for k in range(96)]
        calls[5].cancel()  # a caller that gave up: nobody else is disturbed
        return await asyncio.gather(*calls, return_exceptions=True)

    size = node.log.size
    answers = asyncio.run(burst())
    good = []
    for k, answer in enumerate(answers):
        if k == 5:
            assert isinstance(answer, asyncio.CancelledError)
        elif k % 8 == 3:
            assert isinstance(answer, InputError)
            assert "has size 5 on axis 1, expected 4" in str(answer)
        else:
            assert isinstance(answer, Result)
            expected = session.run(None, {"X": rows[k : k + 1]})
            assert np.array_equal(answer.outputs["label"], expected[0])
            assert answer.bundle.receipt["nonce"] == f"{k:016x}"
            assert answer.bundle.receipt["inputs"] == tensors.map_digest({"X": rows[k : k + 1]})
            good.append(answer.bundle)
    assert len(good) == 96 - 12 - 1
    assert len({b.checkpoint for b in good}) < len(good)  # group commit shared signatures
    verify_bundles(good, [node.vkey])
    node.sequencer.append(b"barrier", timeout=30)  # the cancelled caller's receipt is logged too
    assert node.log.size - size in (len(good) + 1, len(good) + 2)


def test_short_requests_are_batched_by_one_worker_and_long_ones_still_run(
    node: Node, alice: note.Signer
) -> None:
    """Once iris is known to run in microseconds, a burst of its requests is taken a batch at a
    time and committed by the worker; a long model's requests in the same burst still run."""
    iris = node.hub.publish(
        sklearn_model("iris"), repository="alice/iris", version="1", signer=alice
    )
    squeeze = node.hub.publish(
        (LIGHT / "light_squeezenet.onnx").read_bytes(), repository="alice/sq", version="1",
        signer=alice,
    )  # fmt: skip
    image = np.random.default_rng(1).random((1, 3, 224, 224), dtype=np.float32)
    one = {"X": IRIS[:1]}
    node.engine = Costed({iris.model: 20e-6, squeeze.model: 30e-3})  # as measured, roughly
    assert node._estimate((iris.model, one, "attested")) is None  # nothing known yet

    async def burst(n: int) -> list[Result]:
        calls = [node.ainfer(iris.model, {"X": IRIS[k % 2 : k % 2 + 1]}) for k in range(n)]
        calls += [node.ainfer(squeeze.model, {"data_0": image}) for _ in range(2)]
        return list(await asyncio.gather(*calls))

    for _ in range(4):
        asyncio.run(burst(16))  # learns how long each model runs
    short = node._estimate((iris.model, one, "attested"))
    assert short == pytest.approx(20e-6), node._runs  # what its runs cost
    assert node._estimate((iris.model, {"X": np.zeros((5000, 4), np.float32)}, "attested")) is None
    assert node._estimate((squeeze.model, {"data_0": image}, "attested")) is None
    assert node._estimate((iris.model, one, "zk")) is None
    assert node._estimate((["unhashable"], one, "attested")) is None
    assert node._estimate((iris.model, "not a mapping", "attested")) is None

    class Failing(dict[str, np.ndarray]):
        def values(self) -> Any:
            raise RuntimeError("a mapping that fails")

    assert node._estimate((iris.model, Failing(one), "attested")) is None

    commits = node.sequencer.commits
    answers = asyncio.run(burst(200))
    assert node.sequencer.commits - commits < 100  # committed in batches
    expected = ort.InferenceSession(node.hub.blobs.get(iris.model)).run(None, {"X": IRIS})[0]
    for k, answer in enumerate(answers[:200]):
        assert answer.outputs["label"].tolist() == [expected[k % 2]]
    squeezed = ort.InferenceSession(node.hub.blobs.get(squeeze.model)).run(None, {"data_0": image})
    for answer in answers[200:]:
        assert np.array_equal(answer.outputs["softmaxout_1"], squeezed[0])
    verify_bundles([a.bundle for a in answers], [node.vkey])


def _heavy_iris_shaped_model(layers: int = 24, width: int = 1024) -> bytes:
    """float[N, 4] -> float[N, width] through ``layers`` dense layers: iris's input, milliseconds
    of work per row instead of microseconds."""
    rng = np.random.default_rng(5)
    weights = [rng.standard_normal((4, width)).astype(np.float32) / 2]
    weights += [
        rng.standard_normal((width, width)).astype(np.float32) / width**0.5 for _ in range(layers)
    ]
    nodes, last = [], "X"
    for k in range(len(weights)):
        nodes += [
            helper.make_node("MatMul", [last, f"w{k}"], [f"m{k}"]),
            helper.make_node("Tanh", [f"m{k}"], [f"h{k}"]),
        ]
        last = f"h{k}"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    graph = helper.make_graph(
        nodes,
        "heavy",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        [
            helper.make_tensor(f"w{k}", TensorProto.FLOAT, w.shape, w.tobytes(), raw=True)
            for k, w in enumerate(weights)
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_name_that_moves_to_a_heavier_model_is_no_longer_batched(
    node: Node, alice: note.Signer
) -> None:
    """A name learned as short now leads to a model of milliseconds with the same input: the
    burst that follows is answered by the new model, correctly, and the name stops being
    short."""
    light = node.hub.publish(sklearn_model("iris"), repository="alice/m", version="1", signer=alice)
    row = {"X": IRIS[:1]}
    costs = {light.model: 20e-6}
    node.engine = Costed(costs)

    async def burst(n: int) -> list[Result]:
        return list(await asyncio.gather(*(node.ainfer("alice/m", row) for _ in range(n))))

    for _ in range(4):
        asyncio.run(burst(16))
    assert node._estimate(("alice/m", row, "attested")) is not None
    heavy = node.hub.publish(
        _heavy_iris_shaped_model(), repository="alice/m", version="2", signer=alice
    )
    costs[heavy.model] = 5e-3  # as measured, roughly
    answers = asyncio.run(burst(24))
    expected = ort.InferenceSession(node.hub.blobs.get(heavy.model)).run(None, row)[0]
    for answer in answers:
        assert answer.manifest == heavy
        assert np.array_equal(answer.outputs["y"], expected)
    verify_bundles([a.bundle for a in answers], [node.vkey])
    assert node._estimate(("alice/m", row, "attested")) is None


def test_close_answers_what_is_queued(tmp_path: Path, alice: note.Signer) -> None:
    node = Node(tmp_path / "node")
    node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)

    async def burst() -> list[Result]:
        calls = [asyncio.ensure_future(node.ainfer("alice/iris", {"X": IRIS})) for _ in range(40)]
        await asyncio.sleep(0)  # queued, not yet answered
        closing = asyncio.get_running_loop().run_in_executor(None, node.close)
        answers = await asyncio.gather(*calls)
        await closing
        return answers

    answers = asyncio.run(burst())
    assert len(answers) == 40
    verify_bundles([a.bundle for a in answers], [node.vkey])
    with pytest.raises(StorageError, match="closing"):
        node.infer("alice/iris", {"X": IRIS})


def test_close_waits_for_blocking_callers_and_loses_no_answer(
    tmp_path: Path, alice: note.Signer
) -> None:
    """Threads calling infer while the node closes: each call returns a bundle that verifies
    or is refused as closing; every answered receipt is in the log, nothing half-done."""
    node = Node(tmp_path / "node")
    node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    answered: list[Bundle] = []
    refused: list[str] = []
    lock = threading.Lock()
    started = threading.Barrier(9)
    busy = threading.Event()  # set once every caller has had an answer: the node is busy
    calls_answered: list[None] = []  # one for each caller answered at least once

    def caller() -> None:
        started.wait()
        mine = 0
        while True:
            try:
                bundle = node.infer("alice/iris", {"X": IRIS}).bundle
            except StorageError as exc:
                with lock:
                    refused.append(str(exc))
                return
            mine += 1
            with lock:
                answered.append(bundle)
                if mine == 1:
                    calls_answered.append(None)
                    if len(calls_answered) == len(threads):
                        busy.set()

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    started.wait()
    assert busy.wait(60)  # every caller has been answered and is asking again
    node.close()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert len(refused) == 8
    assert len(answered) >= 8
    assert all("clos" in message for message in refused), refused
    verify_bundles(answered, [node.vkey])
    with Node(tmp_path / "node") as reopened:  # every answered receipt is in the log
        for bundle in answered:
            assert reopened.log.entry(bundle.index) == bundle.receipt.data


def test_a_time_limit_stops_a_long_inference(tmp_path: Path, alice: note.Signer) -> None:
    with Node(tmp_path / "node", engine=Engine(timeout=0.001)) as node:
        model = (LIGHT / "light_inception_v2.onnx").read_bytes()
        node.hub.publish(model, repository="alice/inception", version="1", signer=alice)
        image = {"data_0": np.zeros((1, 3, 224, 224), dtype=np.float32)}
        with pytest.raises(LimitExceeded, match=r"more than 0\.001 s"):
            node.infer("alice/inception", image)
        assert node.log.size == 0


def test_a_tampered_model_blob_is_never_run(tmp_path: Path, alice: note.Signer) -> None:
    with Node(tmp_path / "node") as node:
        manifest = node.hub.publish(
            sklearn_model("iris"), repository="alice/iris", version="1", signer=alice
        )
        path = node.hub.blobs.path(manifest.model)
    path.write_bytes(path.read_bytes().replace(b"skl2onnx", b"SKL2ONNX"))
    with Node(tmp_path / "node") as node, pytest.raises(StorageError, match="is corrupt"):
        node.infer("alice/iris", {"X": IRIS})


_WORKER = """
import json, sys
import numpy as np
from verinfer.node import Node, Result
node = Node(sys.argv[1])
x = {"X": np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)}
with open(sys.argv[2], "a") as out:
    while True:
        result = node.infer("alice/iris", x)
        out.write(result.bundle.to_json() + "\\n")
        out.flush()
"""


def test_kill_9_loses_no_answered_request(tmp_path: Path, alice: note.Signer) -> None:
    """A node killed mid-write: every bundle it answered verifies and is in the log after."""
    data = tmp_path / "node"
    with Hub(data / "hub") as hub:
        hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    answered = tmp_path / "answered.jsonl"
    for round_ in range(3):
        process = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(data), str(answered)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        while not (
            answered.exists() and len(answered.read_text().splitlines()) > 20 * (round_ + 1)
        ):
            assert process.poll() is None, "the node process died"  # until it has answered more
            time.sleep(0.05)
        time.sleep(0.01 * round_)  # kill at another point of the write each round
        process.send_signal(signal.SIGKILL)
        process.wait()
    lines = [line for line in answered.read_text().splitlines() if line.endswith("}")]
    assert len(lines) > 60
    with Node(data) as node:
        node.log.verify()
        latest, _ = note.verify_checkpoint(node.log.signed_checkpoint, [node.vkey])
        for line in lines:
            bundle = Bundle.from_json(line)
            verify_bundle(bundle, [node.vkey])
            assert node.log.entry(bundle.index) == bundle.receipt.data
            size = note.Checkpoint.from_text(note.parse(bundle.checkpoint)[0]).size
            proof = node.log.consistency_proof(size, latest.size)
            old, _ = note.verify_checkpoint(bundle.checkpoint, [node.vkey])
            merkle.verify_consistency(size, latest.size, old.root, latest.root, proof)
        # and it keeps serving after the crash
        after = node.infer("alice/iris", {"X": IRIS})
        verify_bundle(after.bundle, [node.vkey])
    assert json.loads(lines[0])["type"] == "verinfer.bundle/v1"
    assert (
        tensors.map_digest({"X": IRIS[:1]}) == json.loads(json.loads(lines[0])["receipt"])["inputs"]
    )


def test_a_node_on_postgresql(tmp_path: Path, log_location: str, alice: note.Signer) -> None:
    """The same pipeline with its log on each store: bundles verify and reopen consistently."""
    with Node(tmp_path / "node", log=log_location) as node:
        node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
        bundles = [node.infer("alice/iris", {"X": IRIS}).bundle for _ in range(5)]
        vkey = node.vkey
    with Node(tmp_path / "node", log=log_location) as node:
        assert node.vkey == vkey
        assert node.log.size == 5
        verify_bundles(bundles, [vkey])
        for bundle in bundles:
            assert node.log.entry(bundle.index) == bundle.receipt.data
        node.log.verify()
