"""Signed promises (issue 20): a node answers before its receipt is durable, with a signed
promise of the index it will occupy by a deadline; a promise upgrades to the logged bundle, and a
broken one is evidence that convicts the node offline. Real nodes on 127.0.0.1, the SDK and the
``verinfer`` command; a dishonest node, a forging client and a framed honest node."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from test_http import Served

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
from hub_models import sklearn_model

from verinfer import canonical, merkle, note, tensors
from verinfer.client import AsyncClient, BrokenPromiseError, Client, Network
from verinfer.errors import InputError, LimitExceeded, StorageError, VerificationError
from verinfer.log.sequencer import Committed
from verinfer.node import Node
from verinfer.verify import AcceptPromise, Bundle, verify_bundle
from verinfer.verify.evidence import broken_promise, verify_evidence
from verinfer.verify.promise import Promise, open_promise, sign_promise

IRIS = {"X": np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)}
VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]


def opened(bundle: Bundle, vkey: str) -> Promise:
    """The promise of a bundle in promise mode, verified: its receipt at its index."""
    return open_promise(bundle.promise, [vkey], receipt=bundle.receipt.data, index=bundle.index,
                        path=bundle.proof)  # fmt: skip


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VERINFER, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "VERINFER_HOME": str(home)},
    )


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Served]]:
    """An answering node, and a node that witnesses its log (to keep evidence about it)."""
    tmp = tmp_path_factory.mktemp("promise")
    alice = note.Signer(note.generate_key("alice")[0])
    answering = Node(tmp / "answering", name="answering.test")
    answering.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1",
                          signer=alice)  # fmt: skip
    witnessing = Node(tmp / "witnessing", name="witnessing.test")
    witnessing.witness.trust(answering.log.origin, answering.vkey)
    served = Served(answering), Served(witnessing)
    try:
        yield served
    finally:
        for one in served:
            one.stop()
            one.node.close()


@pytest.fixture
def node(nodes: tuple[Served, Served]) -> Served:
    return nodes[0]


@pytest.fixture
def client(node: Served) -> Iterator[Client]:
    with Client(node.url, trusted_vkeys=[node.node.vkey]) as opened:
        yield opened


def test_a_promise_answers_is_refused_by_default_and_upgrades(node: Served, client: Client) -> None:
    result = client.infer("alice/iris", IRIS, durability="promise")
    bundle = result.bundle
    assert result.outputs["label"].tolist() == [0, 2]
    assert bundle.promised
    assert bundle.proof == ()
    assert bundle.checkpoint == ""
    # the JSON form round-trips; offline, a promise fails unless the policy accepts one
    parsed = Bundle.from_json(bundle.to_json())
    assert parsed == bundle
    with pytest.raises(VerificationError, match=r"signed promise.*AcceptPromise"):
        verify_bundle(parsed, [node.node.vkey], IRIS)
    lines: list[str] = []
    verify_bundle(parsed, [node.node.vkey], IRIS, accept_promise=AcceptPromise(),
                  report=lines.append)  # fmt: skip
    assert lines[0].startswith("1. PROMISE, NOT YET LOGGED")
    with pytest.raises(VerificationError, match="no checkpoint for witnesses"):
        verify_bundle(parsed, [node.node.vkey], accept_promise=AcceptPromise(),
                      witnesses=[node.node.witness.vkey], quorum=1)  # fmt: skip
    promise = opened(bundle, node.node.vkey)
    assert promise.index == bundle.index
    assert promise.deadline >= time.time() + node.node.merge_delay - 5
    # the upgrade: the same receipt, logged where it was promised, proven
    logged = client.upgrade(bundle)
    assert not logged.promised
    assert logged.receipt == bundle.receipt
    assert logged.index == bundle.index
    verify_bundle(logged, [node.node.vkey], IRIS)
    assert node.node.log.entry(bundle.index) == bundle.receipt.data
    assert client.upgrade(logged) == logged  # a logged bundle stays as it is
    # or in the background: the SDK hands back the logged bundle when it is there
    later = client.infer("alice/iris", IRIS, durability="promise").bundle
    upgraded = client.upgrade_in_background(later).result(timeout=60)
    verify_bundle(upgraded, [node.node.vkey])
    assert upgraded.receipt == later.receipt


def test_the_default_stays_durable_and_async_clients_upgrade_too(
    node: Served, client: Client
) -> None:
    durable = client.infer("alice/iris", IRIS)
    assert not durable.bundle.promised
    verify_bundle(durable.bundle, [node.node.vkey])

    async def main() -> tuple[Bundle, Bundle]:
        async with AsyncClient(node.url, trusted_vkeys=[node.node.vkey]) as remote:
            answers = await asyncio.gather(
                *(remote.infer("alice/iris", IRIS, durability="promise") for _ in range(8))
            )
            bundles = [answer.bundle for answer in answers]
            upgraded = await asyncio.gather(*(remote.upgrade(b) for b in bundles[1:]))
            first = await remote.upgrade_in_background(bundles[0])
            assert [b.receipt for b in upgraded] == [b.receipt for b in bundles[1:]]
            return bundles[0], first

    promised, logged = asyncio.run(main())
    assert promised.promised
    assert logged.index == promised.index
    verify_bundle(logged, [node.node.vkey])
    assert node.node.broken_promises == 0


def test_promises_answered_together_share_one_signature_and_each_lands_where_promised(
    tmp_path: Path,
) -> None:
    """Concurrent promise requests a worker takes together are promised by one signed note
    (the batch's Merkle root); each answer carries its receipt's path in the batch, verifies
    alone, and its receipt lands at its promised index. A path or index swapped between two
    answers of one batch fails."""
    alice = note.Signer(note.generate_key("alice")[0])
    with Node(tmp_path / "node", workers=1) as node:
        node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
        rows = np.random.default_rng(5).random((2048, 1, 4), dtype=np.float32)

        async def burst(start: int) -> list[Bundle]:
            calls = [node.ainfer("alice/iris", {"X": rows[start + k]}, durability="promise")
                     for k in range(64)]  # fmt: skip
            return [result.bundle for result in await asyncio.gather(*calls)]

        for _ in range(3):  # the node learns that iris runs are short, then batches them
            asyncio.run(burst(0))
        batches: dict[str, list[Bundle]] = {}
        for round_ in range(1, 20):
            for bundle in asyncio.run(burst(64 * round_)):
                batches.setdefault(bundle.promise, []).append(bundle)
            if any(len(batch) > 1 for batch in batches.values()):
                break
        shared = max(batches.values(), key=len)
        assert len(shared) > 1, "no two promises were ever answered together"
        node.sequencer.append(b"fence")  # every batch before it is committed
        for batch in batches.values():
            for bundle in batch:
                verify_bundle(bundle, [node.vkey], accept_promise=AcceptPromise())
                assert node.log.entry(bundle.index) == bundle.receipt.data
        first, second = shared[0], shared[1]
        with pytest.raises(VerificationError, match="does not cover this receipt"):
            verify_bundle(replace(first, proof=second.proof), [node.vkey],
                          accept_promise=AcceptPromise())  # fmt: skip
        with pytest.raises(VerificationError, match="does not cover this receipt"):
            verify_bundle(replace(first, index=second.index), [node.vkey],
                          accept_promise=AcceptPromise())  # fmt: skip
        assert node.broken_promises == 0


def test_bad_promise_requests_are_refused_with_json(node: Served) -> None:
    body = {"model": "alice/iris", "inputs": tensors.encode_json(IRIS, raw=True)}
    answer = httpx.post(f"{node.url}/v1/infer", json={**body, "durability": "soon"}, timeout=60)
    assert answer.status_code == 400
    assert "durability 'soon'" in answer.json()["message"]
    answer = httpx.post(
        f"{node.url}/v1/infer",
        json={**body, "durability": "promise", "mode": "replicated:2"},
        timeout=60,
    )
    assert answer.status_code == 400
    assert "one node's answer" in answer.json()["message"]
    # the .npz route takes it as a query parameter
    answer = httpx.post(
        f"{node.url}/v1/infer/npz",
        params={"model": "alice/iris", "durability": "promise"},
        content=tensors.encode_binary(IRIS),
        headers={"content-type": "application/x-npz"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert Bundle.from_json(answer.json()["bundle"]).promised
    with pytest.raises(InputError, match="durability 'later'"):
        node.node.infer("alice/iris", IRIS, durability="later")


def _forged(bundle: Bundle, signer: note.Signer, **changes: Any) -> Bundle:
    fields = {"log": bundle.receipt["log"], "index": bundle.index, "receipts": [
        bundle.receipt.data], "deadline": int(time.time()) + 60} | changes  # fmt: skip
    signed, paths = sign_promise(signer, **fields)
    return replace(bundle, promise=signed, proof=tuple(paths[0]))


def test_forged_and_mismatched_promises_fail(node: Served, client: Client) -> None:
    bundle = client.infer("alice/iris", IRIS, durability="promise").bundle
    vkey, accept = node.node.vkey, AcceptPromise()
    # a client forging a promise: another key, even under the node's name
    mallory = note.Signer(note.generate_key(node.node.signer.name)[0])
    with pytest.raises(VerificationError, match=r"step 1 \(promise\).*not a trusted key"):
        verify_bundle(_forged(bundle, mallory), [vkey], accept_promise=accept)
    # ... or naming the node's key in the signed text
    text, _ = note.parse(bundle.promise)
    claimed = mallory.sign(text)
    with pytest.raises(VerificationError, match=r"step 1 \(promise\).*not signed by any"):
        verify_bundle(replace(bundle, promise=claimed), [vkey], accept_promise=accept)
    # the node's own promise, moved: another index, another receipt, or another log
    signer = node.node.signer
    with pytest.raises(VerificationError, match="covers entries 999 to 999, not entry"):
        verify_bundle(_forged(bundle, signer, index=999), [vkey], accept_promise=accept)
    with pytest.raises(VerificationError, match="does not cover this receipt"):
        verify_bundle(_forged(bundle, signer, receipts=[b"{}"]), [vkey], accept_promise=accept)
    with pytest.raises(VerificationError, match="log 'elsewhere'"):
        verify_bundle(_forged(bundle, signer, log="elsewhere"), [vkey], accept_promise=accept)
    # a byte of the signed promise changed
    tampered = bundle.promise.replace('"index":', '"index":1', 1)
    with pytest.raises(VerificationError, match="signature"):
        verify_bundle(replace(bundle, promise=tampered), [vkey], accept_promise=accept)
    # a promise is never also a proof, and a durable request is never answered by one
    mixed = {**bundle.to_dict(), "checkpoint": node.node.log.signed_checkpoint}
    with pytest.raises(VerificationError, match="a signed note, with no checkpoint"):
        Bundle.from_json(mixed)
    # a promise's signature never passes as a checkpoint's (one line of JSON, not a tree)
    with pytest.raises(VerificationError, match="malformed checkpoint"):
        note.verify_checkpoint(bundle.promise, [vkey])


def _served_liar(tmp: Path, break_it: Callable[[Node], None]) -> Served:
    alice = note.Signer(note.generate_key("alice")[0])
    liar = Node(tmp, name=f"liar{break_it.__name__}.test")
    liar.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    break_it(liar)
    return Served(liar)


def _never_logs(liar: Node) -> None:
    """Promises the next indexes, and never commits the receipts."""
    liar.sequencer.reserve = lambda entries: (-1, liar.log.size)  # type: ignore[method-assign]
    liar.sequencer.commit_reserved = (  # type: ignore[method-assign]
        lambda start, entries: [StorageError("dropped")] * len(entries)
    )


def _logs_another(liar: Node) -> None:
    """Promises a receipt, and logs another one at that index."""
    real = liar.sequencer.commit_reserved

    def other(start: int, entries: list[bytes]) -> list[Committed | BaseException]:
        return real(start, [entry.replace(b'"time":"', b'"time":"0', 1) for entry in entries])

    liar.sequencer.commit_reserved = other  # type: ignore[method-assign]


@pytest.mark.parametrize("break_it", [_never_logs, _logs_another])
def test_a_broken_promise_is_evidence_that_convicts_the_node(
    nodes: tuple[Served, Served], tmp_path: Path, break_it: Callable[[Node], None]
) -> None:
    witness = nodes[1]
    liar = _served_liar(tmp_path / "liar", break_it)
    witness.node.witness.trust(liar.node.log.origin, liar.node.vkey)
    try:
        with Client(liar.url, trusted_vkeys=[liar.node.vkey]) as remote:
            promised = remote.infer("alice/iris", IRIS, durability="promise").bundle
            if break_it is _never_logs:  # nothing logged yet: the upgrade waits, then gives up
                with pytest.raises(LimitExceeded, match="not yet the promised entry"):
                    remote.upgrade(promised, timeout=0.2)
                remote.infer("alice/iris", IRIS)  # the promised index now holds another receipt
            with pytest.raises(BrokenPromiseError, match="broke its promise") as caught:
                remote.upgrade(promised)
        evidence = caught.value.evidence
        verdict = verify_evidence(json.dumps(evidence))
        assert f"entry {promised.index} of log {liar.node.log.origin!r}" in verdict
        # the command checks it offline
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(evidence))
        checked = run("evidence", "verify", str(path), home=tmp_path)
        assert checked.returncode == 0, checked.stderr
        assert "proven" in checked.stdout
        # a witness keeps it, and a network's client stops calling the node
        kept = httpx.post(f"{witness.url}/v1/evidence", json=evidence, timeout=60)
        assert kept.status_code == 200, kept.text
        network_file = tmp_path / "network.json"
        network_file.write_text(json.dumps({"nodes": [
            {"url": liar.url, "vkey": liar.node.vkey},
            {"url": witness.url, "vkey": witness.node.vkey},
        ]}))  # fmt: skip
        with Network(network_file) as network:
            convicted = network.check_evidence()
            assert liar.node.vkey in convicted
            assert all(c.url != liar.url for c in network._order())
    finally:
        liar.stop()
        liar.node.close()


def _checkpoint_of(signer: note.Signer, leaves: list[bytes]) -> str:
    tree = [merkle.leaf_hash(leaf) for leaf in leaves]
    root = merkle.root(tree)
    return signer.sign(note.Checkpoint(signer.name, len(leaves), root).text)


def test_an_honest_node_is_never_framed(tmp_path: Path) -> None:
    """Pure: what does not prove a broken promise convicts nobody."""
    log = note.Signer(note.generate_key("log.test")[0])
    witness = note.Signer(note.generate_key("w.test", cosigner=True)[0])
    receipt, other, third = b'{"receipt":1}', b'{"receipt":2}', b'{"receipt":3}'
    deadline = int(time.time()) + 3600
    # one promise for a batch of two: receipt as entry 1, third as entry 2
    signed, paths = sign_promise(log, log="log.test", index=1, receipts=[receipt, third],
                                 deadline=deadline)  # fmt: skip
    promise = open_promise(signed, [log.vkey], receipt=receipt, index=1, path=paths[0])
    kept = _checkpoint_of(log, [other, receipt, third])
    proof = merkle.inclusion_proof(1, merkle.leaf_hashes([other, receipt, third]))
    # the promised leaf where it was promised: kept
    with pytest.raises(VerificationError, match="the promise is kept"):
        verify_evidence(broken_promise(promise, kept, merkle.leaf_hash(receipt), proof))
    # another leaf claimed there, with a proof that does not lead to the signed root
    with pytest.raises(VerificationError, match="evidence does not verify"):
        verify_evidence(broken_promise(promise, kept, merkle.leaf_hash(other), proof))
    # a holder of the batch's promise claims its receipt was promised as the batch's other
    # entry (its own path, another index), or another receipt with its path: refused
    third_proof = merkle.inclusion_proof(2, merkle.leaf_hashes([other, receipt, third]))
    for moved_promise in (
        replace(promise, index=2),
        replace(promise, leaf=merkle.leaf_hash(other)),
        replace(promise, path=tuple(paths[1])),
    ):
        forged = broken_promise(moved_promise, kept, merkle.leaf_hash(third), third_proof)
        with pytest.raises(VerificationError, match="does not cover this receipt"):
            verify_evidence(forged)
    # a checkpoint by another key, under the log's name
    impostor = note.Signer(note.generate_key("log.test")[0])
    swapped = _checkpoint_of(impostor, [receipt, other])
    other_proof = merkle.inclusion_proof(1, merkle.leaf_hashes([receipt, other]))
    with pytest.raises(VerificationError, match="evidence does not verify"):
        verify_evidence(broken_promise(promise, swapped, merkle.leaf_hash(other), other_proof))
    # a tree too small to hold the index proves nothing, whoever cosigned it when: an old
    # checkpoint submitted to a fresh witness after the deadline gets a late timestamp too
    small = _checkpoint_of(log, [other])
    late = note.attach(small, [witness.signature_line(note.parse(small)[0],
                                                       timestamp=deadline + 60)])  # fmt: skip
    for size_too_small in (small, late):
        with pytest.raises(VerificationError, match="a tree too small proves no broken promise"):
            verify_evidence(broken_promise(promise, size_too_small, merkle.leaf_hash(other), []))
    path = tmp_path / "late.json"
    path.write_text(json.dumps(broken_promise(promise, late, merkle.leaf_hash(other), [])))
    checked = run("evidence", "verify", str(path), home=tmp_path)
    assert checked.returncode == 1
    assert "too small" in checked.stderr
    # another leaf at the index in a tree the log signed: broken, before any deadline
    moved = _checkpoint_of(log, [receipt, other])
    verdict = verify_evidence(broken_promise(promise, moved, merkle.leaf_hash(other), other_proof))
    assert "holds leaf" in verdict


@pytest.mark.parametrize("killed", ["stuck", "commit"])
def test_a_node_killed_after_a_promise_keeps_it_or_is_convicted(
    tmp_path: Path, killed: str
) -> None:
    """A real node process answers a promise over HTTP (through ``verinfer infer``), then is
    killed with SIGKILL: before its receipt is committed (``stuck``) or after. After a restart
    the promise is either kept (the receipt is at its index, ``verinfer upgrade`` proves it) or,
    once the index holds another receipt, ``verinfer upgrade`` writes evidence that ``verinfer
    evidence verify`` accepts."""
    data = tmp_path / "node"
    alice = note.Signer(note.generate_key("alice")[0])
    with Node(data) as setup:
        setup.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1",
                          signer=alice)  # fmt: skip
        vkey = setup.vkey
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = Path(__file__).with_name("promise_crash_node.py")
    process = subprocess.Popen([sys.executable, str(script), str(data), str(port), killed],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "SERVING"
        inputs = tmp_path / "x.json"
        inputs.write_text(json.dumps(tensors.encode_json(IRIS)))
        answered = run("infer", "alice/iris", "--inputs", str(inputs), "--node",
                       f"http://127.0.0.1:{port}", "--durability", "promise", "--bundle",
                       str(tmp_path / "promise.json"), home=tmp_path)  # fmt: skip
        assert answered.returncode == 0, answered.stderr
        assert "promised as entry 0" in answered.stderr
        while killed == "commit":  # until the receipt is committed
            head = httpx.get(f"http://127.0.0.1:{port}/v1/log/checkpoint", timeout=60).text
            if note.Checkpoint.from_text(note.parse(head)[0]).size > 0:
                break
            time.sleep(0.01)
    finally:
        process.kill()  # stuck: between promise and commit
        process.communicate(timeout=60)
    promised = Bundle.from_json((tmp_path / "promise.json").read_text())
    verify_bundle(promised, [vkey], IRIS, accept_promise=AcceptPromise())
    if killed == "stuck":  # offline, the command refuses a promise unless told to accept one
        (tmp_path / "trust.txt").write_text(vkey + "\n")
        bundle_file, trust = str(tmp_path / "promise.json"), str(tmp_path / "trust.txt")
        refused = run("verify", bundle_file, "--trust", trust, home=tmp_path)
        assert refused.returncode == 1
        assert "signed promise" in refused.stderr
        accepted = run("verify", bundle_file, "--trust", trust, "--accept-promise", home=tmp_path)
        assert accepted.returncode == 0, accepted.stderr
        assert "PROMISE, NOT YET LOGGED" in accepted.stdout
    with Node(data) as restarted:
        served = Served(restarted)
        try:
            lost = restarted.log.size <= promised.index
            if not lost:  # the receipt survived: the promise is kept
                assert restarted.log.entry(promised.index) == promised.receipt.data
            else:  # it was lost; another receipt takes its index
                with Client(served.url, trusted_vkeys=[vkey]) as remote:
                    remote.infer("alice/iris", IRIS)
            upgraded = run("upgrade", str(tmp_path / "promise.json"), "--node", served.url,
                           "--evidence", str(tmp_path / "broken.json"), home=tmp_path)  # fmt: skip
        finally:
            served.stop()
    assert lost == (killed == "stuck")  # an append that never ran left nothing durable
    if lost:
        assert upgraded.returncode == 1
        assert "broke its promise" in upgraded.stderr
        checked = run("evidence", "verify", str(tmp_path / "broken.json"), home=tmp_path)
        assert checked.returncode == 0, checked.stderr
        assert "entry 0 of log" in checked.stdout
    else:
        assert upgraded.returncode == 0, upgraded.stderr
        logged = Bundle.from_json((tmp_path / "promise.json").read_text())
        verify_bundle(logged, [vkey], IRIS)


def test_with_group_commit_off_every_receipt_is_its_own_commit(tmp_path: Path) -> None:
    """The "signs every receipt" baseline of the benchmarks is a real configuration."""
    alice = note.Signer(note.generate_key("alice")[0])
    with Node(tmp_path / "single", group_commit=False) as single:
        single.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1",
                           signer=alice)  # fmt: skip

        async def burst() -> list[Any]:
            return await asyncio.gather(*(single.ainfer("alice/iris", IRIS) for _ in range(24)))

        results = asyncio.run(burst())
        assert single.log.size == 24
        # one commit and one signed checkpoint per receipt, however many arrived together
        assert len({result.bundle.checkpoint for result in results}) == 24
        for result in results:
            verify_bundle(result.bundle, [single.vkey])


@pytest.mark.parametrize(
    ("log", "index", "deadline"),
    [
        ("node.test", 0, 0),
        ("a/b-c_d~!", 41, 1_764_892_800),
        ('q"uote\\d', 7, 9),
        ("é", 2**53 - 1, 3),
    ],
)
def test_a_promise_is_canonical_json_whichever_path_wrote_it(
    log: str, index: int, deadline: int
) -> None:
    """The promise's fast template and the general RFC 8785 encoder write the same bytes."""
    signer = note.Signer(note.generate_key("n.test")[0])
    receipts = [b"r", b"s", b"t"]
    start = min(index, 2**53 - 1 - len(receipts))  # the last entry is within I-JSON
    signed, paths = sign_promise(signer, log=log, index=start, receipts=receipts,
                                 deadline=deadline)  # fmt: skip
    text, _ = note.parse(signed)
    root = base64.b64encode(merkle.root(merkle.leaf_hashes(receipts))).decode()
    body = {"type": "verinfer.promise/v1", "log": log, "node": signer.vkey, "index": start,
            "count": 3, "root": root, "deadline": deadline}  # fmt: skip
    assert text == canonical.dumps(body).decode() + "\n"
    for k, receipt in enumerate(receipts):
        promise = open_promise(signed, [signer.vkey], receipt=receipt, index=start + k,
                               path=paths[k])  # fmt: skip
        assert (promise.log, promise.index, promise.deadline) == (log, start + k, deadline)


def test_a_node_that_closes_keeps_every_promise_it_made(tmp_path: Path) -> None:
    """A clean stop (SIGTERM, Node.close) commits the promised receipts still queued."""
    alice = note.Signer(note.generate_key("alice")[0])
    node = Node(tmp_path / "node")
    node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)

    async def burst() -> list[Any]:
        calls = (node.ainfer("alice/iris", IRIS, durability="promise") for _ in range(32))
        return await asyncio.gather(*calls)

    bundles = [result.bundle for result in asyncio.run(burst())]
    node.close()
    assert sorted(b.index for b in bundles) == list(range(32))
    with Node(tmp_path / "node") as reopened:
        assert reopened.log.size == 32
        for bundle in bundles:
            assert reopened.log.entry(bundle.index) == bundle.receipt.data


def test_an_auditor_holds_nodes_to_their_promises(
    nodes: tuple[Served, Served], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``verinfer audit --promises``: a kept promise is forgotten, a promise whose index holds
    another receipt is a broken-promise finding with evidence that verifies offline, and a
    promise past its deadline with nothing logged is reported overdue; a promise by a node the
    auditor does not audit is refused by name."""
    honest = nodes[0]
    another = _served_liar(tmp_path / "another", _logs_another)
    silent = _served_liar(tmp_path / "silent", _never_logs)
    silent.node.merge_delay = 1
    folder = tmp_path / "promises"
    folder.mkdir()
    try:
        for name, served in (("honest", honest), ("another", another), ("silent", silent)):
            monkeypatch.setenv("VERINFER_HOME", str(tmp_path / name))  # each its own "alice"
            with Client(served.url, trusted_vkeys=[served.node.vkey]) as remote:
                promised = remote.infer("alice/iris", IRIS, durability="promise").bundle
            (folder / f"{name}.json").write_text(promised.to_json())
        network = tmp_path / "network.json"
        network.write_text(json.dumps({"nodes": [
            {"url": s.url, "vkey": s.node.vkey} for s in (honest, another, silent)
        ]}))  # fmt: skip
        time.sleep(2.1)  # the silent node's deadline (1 s, rounded up to the second) passes
        audited = run("audit", "--network", str(network), "--rate", "0", "--promises",
                      str(folder), "--out", str(tmp_path / "found"), home=tmp_path)  # fmt: skip
        assert audited.returncode == 0, audited.stderr
        assert "broken-promise" in audited.stdout
        assert "overdue" in audited.stdout
        assert "1 broken promises found; 1 not logged yet" in audited.stdout  # the overdue one
        (evidence,) = (tmp_path / "found").glob("broken-promise-*.json")
        verdict = verify_evidence(evidence.read_text())
        assert f"log {another.node.log.origin!r}" in verdict
        # a promise of a node outside the network is refused, naming the file
        stranger = tmp_path / "stranger"
        stranger.mkdir()
        (stranger / "p.json").write_text((folder / "another.json").read_text())
        small = tmp_path / "small.json"
        small.write_text(json.dumps({"nodes": [{"url": honest.url, "vkey": honest.node.vkey}]}))
        refused = run("audit", "--network", str(small), "--rate", "0", "--promises",
                      str(stranger), home=tmp_path)  # fmt: skip
        assert refused.returncode == 1
        assert "p.json" in refused.stderr
        assert "not a trusted key" in refused.stderr
    finally:
        for served in (another, silent):
            served.stop()
            served.node.close()


def test_an_auditor_keeps_watching_an_overdue_promise_until_it_is_broken(tmp_path: Path) -> None:
    """Overdue is a fault, not the end of the watch: a node that logs another receipt at the
    promised index after the deadline is convicted in a later round (second review, R2-4)."""
    from verinfer.audit import Auditor  # noqa: PLC0415

    silent = _served_liar(tmp_path / "silent", _never_logs)
    silent.node.merge_delay = 1
    try:
        with Client(silent.url, trusted_vkeys=[silent.node.vkey]) as remote:
            promised = remote.infer("alice/iris", IRIS, durability="promise").bundle
        with Auditor([(silent.url, silent.node.vkey)], 0.0) as auditor:
            auditor.watch(promised)
            while time.time() <= opened(promised, silent.node.vkey).deadline:
                time.sleep(0.1)
            assert [f.verdict for f in auditor.round()] == ["overdue"]
            assert auditor.round() == []  # reported once
            assert auditor.watching == 1  # and still watched
            silent.node.infer("alice/iris", IRIS)  # another receipt takes the promised index
            (broken,) = auditor.round()
            assert broken.verdict == "broken-promise"
            assert broken.evidence is not None
            assert "holds leaf" in verify_evidence(broken.evidence)
            assert auditor.watching == 0
    finally:
        silent.stop()
        silent.node.close()


def test_upgrade_takes_the_trusted_key_from_the_caller(
    node: Served, client: Client, tmp_path: Path
) -> None:
    """``verinfer upgrade --trust``: under the caller's key the bundle is called verified; a
    trust file that does not hold the bundle's node refuses it; without one the command says
    whose key it checked under (the key the bundle names)."""
    promised = client.infer("alice/iris", IRIS, durability="promise").bundle
    stranger = note.generate_key("stranger.test")[1]
    files = {name: tmp_path / name for name in ("p.json", "trust.txt", "other.txt")}
    files["trust.txt"].write_text(node.node.vkey + "\n")
    files["other.txt"].write_text(stranger + "\n")
    files["p.json"].write_text(promised.to_json())
    refused = run("upgrade", str(files["p.json"]), "--node", node.url, "--trust",
                  str(files["other.txt"]), home=tmp_path)  # fmt: skip
    assert refused.returncode == 1
    assert "is not a trusted key" in refused.stderr
    trusted = run("upgrade", str(files["p.json"]), "--node", node.url, "--trust",
                  str(files["trust.txt"]), "--out", str(tmp_path / "logged.json"),
                  home=tmp_path)  # fmt: skip
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stderr.rstrip().endswith("(verified)")
    verify_bundle(Bundle.from_json((tmp_path / "logged.json").read_text()), [node.node.vkey],
                  IRIS)  # fmt: skip
    named = run("upgrade", str(files["p.json"]), "--node", node.url, home=tmp_path)
    assert named.returncode == 0, named.stderr
    assert "under the key the bundle names" in named.stderr
