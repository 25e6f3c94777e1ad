"""Honest nodes on different hardware: ONNX Runtime's kernels differ by CPU class, so outputs
are compared bit for bit within one engine identity and, across classes, within the tolerance the
publisher calibrated (under qemu) and signed. Two nodes run under qemu as two kernel classes that
differ from each other, ``-cpu Haswell`` (AVX2) and ``-cpu Nehalem`` (SSE4.2), and two natively
(one honest, one lying), as real processes and servers on 127.0.0.1. Whatever this host's class,
the two emulated nodes differ from each other and at least one differs from the native nodes, so
every test here runs on any x86-64 host (none skips on an AVX2 one). ONNX Runtime's outputs on
the test model differ between the two: 999 of squeezenet's 1,000 (max abs 7e-8)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from test_http import Served

from verinfer import engine, examples, note
from verinfer.audit import Auditor, Finding
from verinfer.client import Client, Network
from verinfer.errors import DisagreementError, VerificationError
from verinfer.modes.dispute import verify_verdict
from verinfer.node import Node
from verinfer.node.access import Auditors
from verinfer.testing import FalsifyingEngine
from verinfer.verify import Bundle, verify_bundle

CLI = "from verinfer.cli import main; main()"
IMAGE = {"data_0": np.random.default_rng(5).random((1, 3, 224, 224), dtype=np.float32)}
# the kernel class each emulated CPU gives (qemu-x86_64 -cpu help lists the CPUs)
EMULATED = {"avx2": "Haswell", "sse4": "Nehalem"}


def _emulated(cpu: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-x86_64", "-cpu", cpu, sys.executable, *args],
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


def test_the_kernel_class_is_read_from_cpuid_not_proc() -> None:
    """Under the emulator /proc/cpuinfo still lists the host's flags; CPUID gives the emulated
    CPU's, so each emulated CPU names its own class (at least one of them not the host's)."""
    for kernel_class, cpu in EMULATED.items():
        shown = _emulated(cpu, "-c", "from verinfer import engine; print(engine.identity())")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.strip().endswith(f"/{kernel_class}")
        assert shown.stdout.strip().rsplit("/", 1)[0] == engine.identity().rsplit("/", 1)[0]


@dataclass
class Emulated:
    """A node served by ``verinfer node start`` under ``qemu-x86_64 -cpu CPU``."""

    kernel_class: str
    url: str
    vkey: str
    data: Path

    @property
    def entry(self) -> tuple[str, str]:
        return self.url, self.vkey


@dataclass
class Pair:
    native: Served
    liar: Served
    emulated: dict[str, Emulated]  # by kernel class: avx2 and sse4
    tmp: Path

    def network(self, *urls_keys: tuple[str, str]) -> Path:
        path = self.tmp / f"net-{len(list(self.tmp.iterdir()))}.json"
        path.write_text(json.dumps({"nodes": [{"url": u, "vkey": k} for u, k in urls_keys]}))
        return path

    def other_than_native(self) -> Emulated:
        """An emulated node of another kernel class than the native nodes' (this host's)."""
        return next(e for c, e in self.emulated.items() if c != engine.kernel_class())

    def both(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """The two emulated nodes: always two different kernel classes."""
        return self.emulated["avx2"].entry, self.emulated["sse4"].entry


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("classes")
    alice = note.Signer(note.generate_key("alice")[0])
    native_node = Node(tmp / "native", name="native.test")
    native_node.hub.publish(examples.light_model("squeezenet", seed=7),
                            repository="alice/calibrated", version="1", signer=alice,
                            calibrate=True)  # fmt: skip
    native_node.hub.publish(examples.light_model("squeezenet", seed=8),
                            repository="alice/uncalibrated", version="1", signer=alice)  # fmt: skip
    native = Served(native_node)
    liar_node = Node(tmp / "liar", name="liar.test", peers=[native.url],
                     engine=FalsifyingEngine(share=1.0))  # fmt: skip
    liar = Served(liar_node)
    processes: list[tuple[subprocess.Popen[bytes], Any]] = []
    emulated: dict[str, Emulated] = {}
    try:
        for kernel_class, cpu in EMULATED.items():  # both start at once: qemu is slow
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            data = tmp / f"emulated-{kernel_class}"
            log = open(tmp / f"{kernel_class}.log", "wb")  # noqa: SIM115 - the child writes it
            processes.append((subprocess.Popen(
                ["qemu-x86_64", "-cpu", cpu, sys.executable, "-c", CLI, "node", "start",
                 "--data", str(data), "--port", str(port), "--name", f"{kernel_class}.test",
                 "--peer", native.url],
                stdout=log, stderr=log,
            ), log))  # fmt: skip
            emulated[kernel_class] = Emulated(kernel_class, f"http://127.0.0.1:{port}", "", data)
        for (process, _), node in zip(processes, emulated.values(), strict=True):
            while not node.vkey:  # until it serves (or has died: then its log says why)
                try:
                    node.vkey = httpx.get(f"{node.url}/v1/node", timeout=10).json()["vkey"]
                except (httpx.HTTPError, ValueError, KeyError):
                    assert process.poll() is None, (tmp / f"{node.kernel_class}.log").read_text()
                    time.sleep(0.5)
            identity = httpx.get(f"{node.url}/v1/node", timeout=10).json()["engine"]
            assert identity.endswith(f"/{node.kernel_class}"), identity
        yield Pair(native, liar, emulated, tmp)
    finally:
        for process, log in processes:
            process.terminate()
            process.wait(timeout=120)
            log.close()
        for served, node in ((liar, liar_node), (native, native_node)):
            served.stop()
            node.close()


def test_calibration_declares_a_signed_tolerance(pair: Pair) -> None:
    manifest = pair.native.node.hub.resolve("alice/calibrated")
    tolerance = manifest.body["determinism"]["tolerance"]
    assert tolerance["classes"] == sorted({engine.kernel_class(), *EMULATED})
    assert tolerance["emulated"] == list(EMULATED.values())
    assert 0 < tolerance["observed"] <= tolerance["abs"] == tolerance["observed"] * 4
    assert "tolerance" not in pair.native.node.hub.resolve("alice/uncalibrated").body["determinism"]


def test_honest_nodes_of_two_classes_agree_within_the_bound(pair: Pair) -> None:
    nodes = pair.both()
    with Network(pair.network(*nodes)) as network:
        result = network.infer("alice/calibrated", IMAGE, mode="replicated:2")
    bundle = result.bundle
    receipts = [bundle.receipt, bundle.replicas[0].receipt]
    assert receipts[0]["engine"] != receipts[1]["engine"]  # two kernel classes...
    assert receipts[0]["outputs"] != receipts[1]["outputs"]  # ...two sets of low bits
    lines: list[str] = []
    parsed = Bundle.from_json(bundle.to_json())
    verify_bundle(parsed, [k for _, k in nodes], inputs=IMAGE, report=lines.append)
    assert any("within the declared tolerance" in line for line in lines), lines
    tolerance = pair.native.node.hub.resolve("alice/calibrated").body["determinism"]["tolerance"]
    assert 0 < bundle.deviation <= tolerance["abs"]  # recorded, and recomputed by the verifier
    # the evidence binds: other outputs, or another manifest, do not verify
    text = json.loads(bundle.to_json())
    swapped = dict(text, evidence=dict(text["evidence"], outputs=text["evidence"]["outputs"][::-1]))
    with pytest.raises(VerificationError, match="not the ones its receipt names"):
        verify_bundle(Bundle.from_json(swapped), [k for _, k in nodes])
    other = pair.native.node.hub.resolve("alice/uncalibrated").data.decode()
    forged = dict(text, evidence=dict(text["evidence"], manifest=other))
    with pytest.raises(VerificationError, match="evidence manifest"):
        verify_bundle(Bundle.from_json(forged), [k for _, k in nodes])
    lied = dict(text, evidence=dict(text["evidence"], deviation=0.0))
    with pytest.raises(VerificationError, match=r"records deviation 0\.0"):
        verify_bundle(Bundle.from_json(lied), [k for _, k in nodes])
    stripped = dict(text, evidence={"replicas": text["evidence"]["replicas"]})
    with pytest.raises(VerificationError, match="different engine classes"):
        verify_bundle(Bundle.from_json(stripped), [k for _, k in nodes])


def test_a_perturbation_above_the_bound_is_caught_across_classes(pair: Pair) -> None:
    nodes = ((pair.liar.url, pair.liar.node.vkey), pair.other_than_native().entry)
    with (
        Network(pair.network(*nodes)) as network,
        pytest.raises(DisagreementError, match="the nodes disagree") as caught,
    ):
        network.infer("alice/calibrated", IMAGE, mode="replicated:2")
    assert len(caught.value.bundles) == 2


def test_a_model_without_a_declared_bound_is_refused_across_classes(pair: Pair) -> None:
    with (
        Network(pair.network(*pair.both())) as network,
        pytest.raises(VerificationError, match="declares no tolerance"),
    ):
        network.infer("alice/uncalibrated", IMAGE, mode="replicated:2")


def test_an_audit_across_classes_uses_the_declared_bound(pair: Pair) -> None:
    """The native auditor re-runs the receipts of an emulated node of another class: within the
    calibrated bound they pass; for the model without one they are reported incomparable, never
    convicted."""
    other = pair.other_than_native()
    while True:  # the node archives its tensors off the request path: until it has caught up
        seen: list[Finding] = []
        token = Auditors(other.data).add("test", replace=True)  # private tensors
        with Auditor([other.entry], rate=1.0, seed=0, tokens={other.url: token}) as auditor:
            auditor.round(seen.append)
        if all(f.verdict != "unavailable" for f in seen):
            break
        time.sleep(0.2)
    verdicts = {f.verdict for f in seen}
    assert verdicts == {"ok", "incomparable"}, [(f.verdict, f.detail) for f in seen]
    assert all("within the tolerance" in f.detail for f in seen if f.verdict == "ok")


def test_an_honest_answer_survives_a_challenger_of_another_class(pair: Pair) -> None:
    """Two kernel classes' traces differ in their low bits at almost every state: the referee
    compares states within the tolerance, and the step it judges within its bound."""
    with Client(pair.native.url, trusted_vkeys=[pair.native.node.vkey]) as native:
        answer = native.infer("alice/calibrated", IMAGE, mode="optimistic")
    pair.native.node.archive.flush()
    with Client(pair.liar.url, trusted_vkeys=[pair.liar.node.vkey]) as referee:  # its engine
        verdict = referee.challenge(  # lies; a referee runs one operator, and is checked
            answer.bundle, IMAGE, challenger=pair.other_than_native().url,
            defendant=pair.native.url, deadline=240,
        )  # fmt: skip
    assert (verdict.winner, verdict.loser) == ("defendant", "challenger"), verdict.reason
    assert "disputed a correct step" in verdict.reason
    bases = {round_["basis"] for round_ in verdict.body["rounds"]}
    assert "tolerance" in bases  # the two classes' roots differed and were compared by value
    model = examples.light_model("squeezenet", seed=7)
    assert verify_verdict(verdict.data, model=model).winner == "defendant"


def test_a_lying_node_loses_to_a_challenger_of_another_class(pair: Pair) -> None:
    with Client(pair.liar.url, trusted_vkeys=[pair.liar.node.vkey]) as liar:
        answer = liar.infer("alice/calibrated", IMAGE, mode="optimistic")
    pair.liar.node.archive.flush()
    with Client(pair.native.url, trusted_vkeys=[pair.native.node.vkey]) as referee:
        verdict = referee.challenge(
            answer.bundle, IMAGE, challenger=pair.other_than_native().url, defendant=pair.liar.url,
            deadline=240,
        )  # fmt: skip
    assert (verdict.winner, verdict.loser) == ("challenger", "defendant"), verdict.reason
    assert "beyond the bound" in verdict.reason
