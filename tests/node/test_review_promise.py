"""Adversarial review of promises (issue 20): attacks that the current checks let through.
Each test is marked xfail(strict) until the lead fixes the code it names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_http import Served
from test_promise import opened

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
from hub_models import sklearn_model

from verinfer import merkle, note
from verinfer.client import Client
from verinfer.errors import VerificationError
from verinfer.node import Node
from verinfer.verify.evidence import broken_promise, verify_evidence
from verinfer.witness import add_checkpoint_body

IRIS = {"X": np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)}


def test_review_an_old_checkpoint_cosigned_late_frames_an_honest_node(tmp_path: Path) -> None:
    alice = note.Signer(note.generate_key("alice")[0])
    with Node(tmp_path / "honest", name="honest.test", merge_delay=1) as honest:
        honest.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1",
                           signer=alice)  # fmt: skip
        honest.infer("alice/iris", IRIS)  # entry 0, durable
        old = honest.log.signed_checkpoint  # a checkpoint of size 1, public from then on
        assert note.verify_checkpoint(old, [honest.vkey])[0].size == 1
        promised = honest.infer("alice/iris", IRIS, durability="promise").bundle
        promise = opened(promised, honest.vkey)
        assert promise.index == 1
        # the honest node keeps its promise: entry 1 is the promised receipt
        while honest.log.size <= promise.index:
            time.sleep(0.02)
        assert merkle.leaf_hash(honest.log.entry(promise.index)) == promise.leaf
        while time.time() < promise.deadline + 0.1:
            time.sleep(0.05)
        # a witness that starts witnessing this log now (or one that lagged behind it) is fed
        # the old checkpoint by anyone: it cosigns it with today's timestamp
        with Node(tmp_path / "witness", name="witness.test") as witnessing:
            witnessing.witness.trust(honest.log.origin, honest.vkey)
            served = Served(witnessing)
            try:
                body = add_checkpoint_body(0, [], old)
                answer = httpx.post(f"{served.url}/add-checkpoint", content=body, timeout=30)
                assert answer.status_code == 200, answer.text
                cosigned = note.attach(old, [answer.text.strip()])
                # whatever leaf the framer claims: the tree does not reach the index
                evidence = broken_promise(promise, cosigned, b"\x00" * 32, [])
                kept = httpx.post(f"{served.url}/v1/evidence", json=evidence, timeout=30)
                # the witnessing node must not keep evidence against a node that kept its word
                assert kept.status_code >= 400, kept.text
                with pytest.raises(VerificationError, match="too small proves no broken promise"):
                    verify_evidence(json.dumps(evidence))
            finally:
                served.stop()


def test_review_upgrade_of_a_forged_logged_bundle_is_not_called_verified(tmp_path: Path) -> None:
    alice = note.Signer(note.generate_key("alice")[0])
    with Node(tmp_path / "node", name="node.test") as node:
        node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1",
                         signer=alice)  # fmt: skip
        first = node.infer("alice/iris", IRIS).bundle
        node.infer("alice/iris", IRIS)
        served = Served(node)
        try:
            # a logged bundle whose receipt is not where it says: its proof cannot verify
            forged = json.loads(first.to_json())
            forged["index"] = first.index + 1
            path = tmp_path / "bundle.json"
            path.write_text(json.dumps(forged))
            checked = subprocess.run(
                [sys.executable, "-c", "from verinfer.cli import main; main()", "upgrade",
                 str(path), "--node", served.url, "--out", str(tmp_path / "out.json")],
                check=False, capture_output=True, text=True, timeout=120,
                env={**os.environ, "VERINFER_HOME": str(tmp_path / "home")},
            )  # fmt: skip
            assert "verified" not in checked.stderr, checked.stderr
            assert checked.returncode != 0
        finally:
            served.stop()


def test_review_a_promise_due_in_a_thousand_years_is_refused(tmp_path: Path) -> None:
    alice = note.Signer(note.generate_key("alice")[0])
    with Node(tmp_path / "node", name="node.test") as node:
        node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1",
                         signer=alice)  # fmt: skip
        node.merge_delay = 1000 * 365 * 86400  # a dishonest node's "maximum merge delay"
        served = Served(node)
        try:
            with (
                Client(served.url, trusted_vkeys=[node.vkey]) as client,
                pytest.raises(VerificationError, match="deadline"),
            ):
                client.infer("alice/iris", IRIS, durability="promise")
        finally:
            served.stop()
