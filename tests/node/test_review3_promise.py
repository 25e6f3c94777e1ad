"""Adversarial review 3 of batched promises (issue 20, commit 16e8565): one signed note per
batch of answers, each answer carrying its receipt's path in the batch's tree, the worker
reserving the batch's indexes and committing it itself.

Each finding's test failed before its fix (F3-F5). F1 (the benchmark timed promise upgrades by
a hook workers never run) is fixed in the benchmark, which now times every append and stops with
an error when it sees none; F2 (a promise of an index far beyond the log stays overdue, never
evidence) is a limit PROTOCOL §15 states. The last test is an attack that fails today, kept so
that it keeps failing."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
from hub_models import sklearn_model

from verinfer import merkle, note
from verinfer.audit import Auditor
from verinfer.errors import InputError, VerificationError
from verinfer.log import Log
from verinfer.log.sequencer import Sequencer
from verinfer.node import Node
from verinfer.verify import Bundle
from verinfer.verify.evidence import broken_promise, verify_evidence
from verinfer.verify.promise import open_promise_of, sign_promise

IRIS = {"X": np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)}


def _iris_node(path: Path, **options: int) -> Node:
    alice = note.Signer(note.generate_key("alice")[0])
    node = Node(path, name="node.test", **options)
    node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    return node


def test_review3_an_empty_reservation_is_refused(tmp_path: Path) -> None:
    """``reserve([])`` returns ticket ``t`` without taking it; once another caller commits ticket
    ``t``, ``commit_reserved(t, [])`` waits for ``done == t`` forever (the log is not wedged,
    the reserving thread is). Not reachable through Pipeline (it never reserves an empty
    batch); refused at the door it cannot hang anyone."""
    signer = note.Signer(note.generate_key("log.test")[0])
    with (
        Log.open(tmp_path, signer) as log,
        Sequencer(log) as sequencer,
        pytest.raises(InputError, match="entr"),
    ):
        sequencer.reserve([])


def test_review3_a_promise_bundle_with_cosignatures_is_malformed(tmp_path: Path) -> None:
    """A promise has no checkpoint (refused at parse), yet its ``cosignatures`` may hold any
    lines: they pass Bundle.from_json and verify_bundle(accept_promise=...), covered by nothing
    and meaningless (a witness cosigns a checkpoint). Refuse them as the checkpoint is."""
    with _iris_node(tmp_path / "node") as node:
        bundle = node.infer("alice/iris", IRIS, durability="promise").bundle
        forged = {**bundle.to_dict(), "cosignatures": ["\u2014 witness.test AAAAAAAAAAAA\n"]}
        with pytest.raises(VerificationError, match="promise"):
            Bundle.from_json(forged)


def test_review3_auditor_watch_of_a_note_names_what_is_wrong(tmp_path: Path) -> None:
    with _iris_node(tmp_path / "node") as node:
        bundle = node.infer("alice/iris", IRIS, durability="promise").bundle
        with (
            Auditor([("http://127.0.0.1:9", node.vkey)], 0.0) as auditor,
            pytest.raises(VerificationError, match="bundle"),
        ):
            auditor.watch(bundle.promise)  # type: ignore[arg-type]


def _subtrees(leaves: list[bytes]) -> set[bytes]:
    """Every node hash of the RFC 9162 tree of ``leaves``: all a batch's holders know."""
    found = set(leaves)
    if len(leaves) > 1:
        _, paths = merkle.root_and_paths(leaves)
        found |= {h for path in paths for h in path} | {merkle.root(leaves)}
        split = 1 << ((len(leaves) - 1).bit_length() - 1)
        found |= _subtrees(leaves[:split]) | _subtrees(leaves[split:])
    return found


def test_review3_no_holder_of_a_batch_frames_a_node_that_logged_it_as_promised() -> None:
    """Attacks that fail (kept so they keep failing): the holders of a batch's promise, pooling
    every hash of the batch's tree, claim any entry near the batch (before, in, after it) with
    any known hash as the promised leaf and any path they hold (their own, another holder's,
    a truncated one), against the honest log's checkpoint and any leaf there. Batches of 1 to 6,
    with and without duplicated receipts; none convicts."""
    log = note.Signer(note.generate_key("log.test")[0])
    deadline = int(time.time()) + 3600
    start = 3
    before = [merkle.leaf_hash(b"before %d" % k) for k in range(start)]
    for count in range(1, 7):
        for duplicated in (False, True):
            receipts = [b'{"r":%d}' % (k // 2 if duplicated else k) for k in range(count)]
            signed, paths = sign_promise(log, log="log.test", index=start, receipts=receipts,
                                         deadline=deadline)  # fmt: skip
            batch = merkle.leaf_hashes(receipts)
            logged = [*before, *batch, merkle.leaf_hash(b"after")]
            tree = note.Checkpoint("log.test", len(logged), merkle.root(logged))
            checkpoint = log.sign(tree.text)
            known = sorted(_subtrees(batch))
            held = [*paths, *(path[:cut] for path in paths for cut in range(len(path)))]
            for index in range(start - 1, start + count + 1):
                proof = merkle.inclusion_proof(index, logged)
                for leaf in known:
                    for path in held:
                        try:
                            promise = open_promise_of(signed, [log.vkey], leaf=leaf,
                                                      index=index, path=path)  # fmt: skip
                        except VerificationError:
                            continue
                        assert promise.leaf == logged[index]  # only the truth opens it
                        for there in {logged[index], *known}:
                            evidence = broken_promise(promise, checkpoint, there, proof)
                            with pytest.raises(VerificationError, match=r"kept|does not verify"):
                                verify_evidence(evidence)
            # the promise holds for exactly each holder's own receipt at its own entry
            for k, receipt in enumerate(receipts):
                opened = open_promise_of(signed, [log.vkey], leaf=merkle.leaf_hash(receipt),
                                         index=start + k, path=paths[k])  # fmt: skip
                assert (opened.index, opened.path) == (start + k, tuple(paths[k]))
