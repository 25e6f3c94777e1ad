"""Callers' tensors are private by default: a real node on 127.0.0.1 serves the inputs and
outputs of a receipt to the requester (the capability answered with the inference), to the
auditors its operator issued a token, and to anyone only if the requester asked for a public
audit, which the signed receipt states. Auditors tell a node that withholds a public receipt's
tensors (a fault) from an honest private receipt."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
import pytest
import rfc8785
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from test_http import IRIS, Served

from verinfer import devnet, note, tensors
from verinfer.audit import Auditor, Finding, read_tokens
from verinfer.client import Client
from verinfer.errors import InputError, VerificationError
from verinfer.examples import sklearn_model
from verinfer.hub import Hub
from verinfer.node import Node
from verinfer.node.access import Auditors
from verinfer.node.app import create_app
from verinfer.node.archive import TensorArchive
from verinfer.verify import Bundle, Receipt, verify_bundle

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("privacy")
    alice = note.Signer(note.generate_key("alice")[0])
    with Node(tmp / "node", name="private.test") as node:
        node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
        running = Served(node)
        try:
            yield running
        finally:
            running.stop()


class _Target(Protocol):
    url: str
    node: Node


class _Running:
    def __init__(self, url: str, node: Node) -> None:
        self.url, self.node = url, node


def _infer(served: _Target, rows: np.ndarray, **fields: Any) -> dict[str, Any]:
    """One inference over raw HTTP: the answer's JSON, capabilities included."""
    body = {"model": "alice/iris", "inputs": tensors.encode_json({"X": rows}), **fields}
    answer = httpx.post(f"{served.url}/v1/infer", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    served.node.archive.flush()
    found: dict[str, Any] = answer.json()
    return found


def _receipt(answer: dict[str, Any]) -> Receipt:
    return Bundle.from_json(answer["bundle"]).receipt


def _get(served: _Target, digest: str, token: str | None = None) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{served.url}/v1/tensors/{digest}", headers=headers, timeout=30)


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "private"
    assert "private to their requester" in response.json()["message"]


def test_an_anonymous_walker_of_the_log_gets_no_private_tensors(served: Served) -> None:
    _infer(served, IRIS)
    _infer(served, IRIS + 1, mode="optimistic")
    size = served.node.log.size
    with httpx.Client(base_url=served.url, timeout=30) as http:
        for index in range(size):  # what anyone can read: every receipt, every digest
            entry = http.get(f"/v1/log/entries/{index}")
            assert entry.status_code == 200
            receipt = Receipt.from_bytes(entry.content)
            if receipt["audit"] == "public":  # other tests of this module ask for some
                continue
            for name in ("inputs", "outputs"):
                _refused(http.get(f"/v1/tensors/{receipt[name]}"))
        # a digest never kept is refused alike: the refusal does not tell what is kept here
        _refused(http.get("/v1/tensors/sha256:" + "0" * 64))
        malformed = http.get("/v1/tensors/md5:abc")
        assert (malformed.status_code, malformed.json()["code"]) == (400, "bad_input")


def test_the_requesters_capability_opens_its_own_tensors_and_no_others(served: Served) -> None:
    first = _infer(served, IRIS[:1])
    second = _infer(served, IRIS[1:])
    receipt, other = _receipt(first), _receipt(second)
    assert set(first["capabilities"]) == {receipt["inputs"], receipt["outputs"]}
    for name, expected in (("inputs", {"X": IRIS[:1]}), ("outputs", None)):
        digest = receipt[name]
        answer = _get(served, digest, first["capabilities"][digest])
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "private, no-store"  # no proxy keeps a copy
        kept = tensors.decode_binary(answer.content)
        assert tensors.map_digest(kept) == digest
        if expected is not None:
            assert tensors.map_digest(expected) == digest
    key_to_inputs = first["capabilities"][receipt["inputs"]]
    _refused(_get(served, receipt["outputs"], key_to_inputs))  # A's key on A's other digest
    _refused(_get(served, other["inputs"], key_to_inputs))  # A's key on B's digest
    _refused(_get(served, other["inputs"]))  # no key
    _refused(_get(served, other["inputs"], key_to_inputs[:-1] + "A"))  # a wrong key
    bare = httpx.get(
        f"{served.url}/v1/tensors/{other['inputs']}", headers={"Authorization": "Bearer"}
    )
    _refused(bare)
    not_bearer = httpx.get(
        f"{served.url}/v1/tensors/{other['inputs']}",
        headers={"Authorization": f"Basic {second['capabilities'][other['inputs']]}"},
    )
    _refused(not_bearer)
    # the npz route answers capabilities too
    npz = httpx.post(
        f"{served.url}/v1/infer/npz",
        params={"model": "alice/iris"},
        content=tensors.encode_binary({"X": IRIS + 7}),
        headers={"content-type": "application/x-npz"},
        timeout=60,
    )
    assert npz.status_code == 200, npz.text
    served.node.archive.flush()
    digest = _receipt(npz.json())["inputs"]
    assert _get(served, digest, npz.json()["capabilities"][digest]).status_code == 200


def test_a_public_audit_request_is_served_to_anyone_and_its_receipt_says_so(
    served: Served,
) -> None:
    public = _infer(served, IRIS + 2, audit="public")
    receipt = _receipt(public)
    assert receipt["audit"] == "public"
    assert receipt.data.startswith(b'{"audit":"public",')  # signed: in the log leaf
    verify_bundle(Bundle.from_json(public["bundle"]), [served.node.vkey])
    for name in ("inputs", "outputs"):
        answer = _get(served, receipt[name])  # no token at all
        assert answer.status_code == 200, answer.text
        assert tensors.map_digest(tensors.decode_binary(answer.content)) == receipt[name]
    # a private request's receipt has no audit field, and reads as private
    private = _receipt(_infer(served, IRIS + 3))
    assert private["audit"] == "private"
    assert b'"audit"' not in private.data
    _refused(_get(served, private["inputs"]))
    # the npz route takes the choice as a query parameter
    npz = httpx.post(
        f"{served.url}/v1/infer/npz",
        params={"model": "alice/iris", "audit": "public"},
        content=tensors.encode_binary({"X": IRIS + 4}),
        headers={"content-type": "application/x-npz"},
        timeout=60,
    )
    assert npz.status_code == 200, npz.text
    served.node.archive.flush()
    npz_receipt = _receipt(npz.json())
    assert npz_receipt["audit"] == "public"
    assert _get(served, npz_receipt["outputs"]).status_code == 200


def test_an_unknown_audit_choice_is_refused_naming_it(served: Served) -> None:
    body = {"model": "alice/iris", "inputs": tensors.encode_json({"X": IRIS}), "audit": "all"}
    refused = httpx.post(f"{served.url}/v1/infer", json=body, timeout=60)
    assert refused.status_code == 400
    assert refused.json() == {
        "code": "bad_input",
        "message": "audit 'all' is not one of private, public",
    }
    npz = httpx.post(
        f"{served.url}/v1/infer/npz",
        params={"model": "alice/iris", "audit": "yes"},
        content=tensors.encode_binary({"X": IRIS}),
        headers={"content-type": "application/x-npz"},
        timeout=60,
    )
    assert (npz.status_code, npz.json()["message"]) == (
        400,
        "audit 'yes' is not one of private, public",
    )


def test_authorized_auditors_and_the_admin_read_private_tensors_until_revoked(
    served: Served, tmp_path: Path
) -> None:
    receipt = _receipt(_infer(served, IRIS + 5))
    env = {**os.environ, "VERINFER_HOME": str(tmp_path / "home")}
    data = str(served.node.data)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*VERINFER, "node", "auditors", *args, "--data", data],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip

    issued = cli("add", "carol")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert len(token) >= 40
    assert (served.node.data / "auditors.json").stat().st_mode & 0o777 == 0o600
    assert token not in (served.node.data / "auditors.json").read_text()  # kept as a hash
    again = cli("add", "carol")
    assert again.returncode == 1
    assert "auditor 'carol' already has a token" in again.stderr
    assert cli("list").stdout.split() == ["carol"]
    answer = _get(served, receipt["inputs"], token)  # the running node takes it at once
    assert answer.status_code == 200, answer.text
    assert tensors.map_digest(tensors.decode_binary(answer.content)) == receipt["inputs"]
    assert _get(served, receipt["outputs"], served.node.admin_token).status_code == 200
    removed = cli("remove", "carol")
    assert removed.returncode == 0, removed.stderr
    _refused(_get(served, receipt["inputs"], token))  # revoked: refused at once
    missing = cli("remove", "carol")
    assert (missing.returncode, "no auditor 'carol'" in missing.stderr) == (1, True)
    bad = cli("add", "carol/../x")
    assert "malformed auditor name 'carol/../x'" in bad.stderr


def _walk(served: Served, tokens: dict[str, str] | None = None) -> list[Finding]:
    seen: list[Finding] = []
    nodes = [(served.url, served.node.vkey)]
    with Auditor(nodes, rate=1.0, seed=5, tokens=tokens) as auditor:
        auditor.round(seen.append)
    return seen


def test_auditors_tell_a_withheld_public_receipt_from_a_private_one(served: Served) -> None:
    public = _receipt(_infer(served, IRIS + 6, audit="public"))
    private = _receipt(_infer(served, IRIS + 8))
    leaves = [Receipt.from_bytes(served.node.log.entry(i)) for i in range(served.node.log.size)]
    index = {r.data: i for i, r in enumerate(leaves)}
    anonymous = {f.index: f for f in _walk(served)}
    assert anonymous[index[public.data]].verdict == "ok"
    assert anonymous[index[private.data]].verdict == "private"
    assert "no auditor token" in anonymous[index[private.data]].detail
    assert all(  # nothing private is reported as a fault, nothing public is skipped
        anonymous[i].verdict == ("ok" if r["audit"] == "public" else "private")
        for i, r in enumerate(leaves)
    )
    token = Auditors(served.node.data).add("walker", replace=True)
    authorized = {f.index: f for f in _walk(served, {served.url: token})}
    assert {f.verdict for f in authorized.values()} == {"ok"}  # every receipt re-executed
    # a node that withholds a public receipt's tensors: refused (403) or gone (404), a fault
    marker = _marker(served.node.archive, public["inputs"])
    marker.unlink()
    try:
        withheld = {f.index: f for f in _walk(served)}[index[public.data]]
        assert withheld.verdict == "unavailable"
        assert "answered 403 for the inputs of a public receipt" in withheld.detail
    finally:
        marker.touch()
    served.node.archive.flush()
    kept = served.node.archive.where(public["inputs"])
    assert kept is not None
    moved = kept[0].rename(kept[0].with_suffix(".away"))  # its segment is gone (pruned)
    try:
        lost = {f.index: f for f in _walk(served)}[index[public.data]]
        assert lost.verdict == "unavailable"
        assert "answered 404 for the inputs of a public receipt" in lost.detail
    finally:
        moved.rename(kept[0])


def test_an_auditor_token_goes_only_to_its_node(served: Served) -> None:
    with pytest.raises(ValueError, match=r"^tokens for nodes not audited: http://elsewhere\.test$"):
        Auditor([(served.url, served.node.vkey)], 1.0, tokens={"http://elsewhere.test/": "t"})


def test_the_audit_command_reads_a_private_token_file(served: Served, tmp_path: Path) -> None:
    private = _receipt(_infer(served, IRIS + 9))
    network = tmp_path / "net.json"
    network.write_text(json.dumps({"nodes": [{"url": served.url, "vkey": served.node.vkey}]}))
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({served.url: Auditors(served.node.data).add("cli", replace=True)}))
    env = {**os.environ, "VERINFER_HOME": str(tmp_path / "home")}
    command = [*VERINFER, "audit", "--network", str(network), "--rate", "1", "--out",
               str(tmp_path / "out")]  # fmt: skip
    tokens.chmod(0o644)
    loose = subprocess.run([*command, "--tokens", str(tokens)], capture_output=True, text=True,
                           timeout=300, env=env, check=False)  # fmt: skip
    assert loose.returncode == 1
    assert "is readable by others: chmod 600 it" in loose.stderr
    tokens.chmod(0o600)
    assert read_tokens(tokens) == json.loads(tokens.read_text())
    anonymous = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env,
                               check=False)  # fmt: skip
    assert anonymous.returncode == 0, anonymous.stderr
    assert "sampled entries were private (no auditor token): not audited" in anonymous.stdout
    authorized = subprocess.run([*command, "--tokens", str(tokens)], capture_output=True,
                                text=True, timeout=300, env=env, check=False)  # fmt: skip
    assert authorized.returncode == 0, authorized.stderr
    assert "were private" not in authorized.stdout
    assert "0 frauds found" in authorized.stdout
    assert private["audit"] == "private"


def test_the_cli_asks_for_a_public_audit_in_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "VERINFER_HOME": str(home)}
    alice = note.Signer(note.generate_key("alice")[0])
    hub = Hub(home / "hub")  # the CLI's default hub
    try:
        hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    finally:
        hub.close()
    inputs = tmp_path / "x.json"
    inputs.write_text(json.dumps(tensors.encode_json({"X": IRIS})))
    for flag, expected in ((["--public-audit"], "public"), ([], "private")):
        bundle = tmp_path / f"{expected}.json"
        done = subprocess.run(
            [*VERINFER, "infer", "alice/iris", "--inputs", str(inputs), "--bundle", str(bundle),
             *flag],
            capture_output=True, text=True, timeout=300, env=env, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert Bundle.from_json(bundle.read_text()).receipt["audit"] == expected


_LOGGERS = ("", "uvicorn", "uvicorn.access", "uvicorn.error", "fastapi", "httpx", "verinfer")


class _Listening(logging.Handler):
    """Every log record of the process, formatted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_tokens_never_appear_in_logs(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A node logging everything (uvicorn at debug level, access log on) writes no capability
    or auditor token, refused or accepted."""
    alice = note.Signer(note.generate_key("alice")[0])
    listening = _Listening()
    # every logger the node's stack writes to, including uvicorn's that do not propagate
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(listening)
        logger.setLevel(logging.DEBUG)
    with Node(tmp_path / "node") as node:
        node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
        config = uvicorn.Config(create_app(node), host="127.0.0.1", port=0, log_level="debug",
                                access_log=True, log_config=None)  # fmt: skip
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            while not server.started:
                time.sleep(0.01)
            url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
            running = _Running(url, node)
            answer = _infer(running, IRIS)
            receipt = _receipt(answer)
            auditor = Auditors(node.data).add("logged", replace=True)
            opening = {token: digest for digest, token in answer["capabilities"].items()}
            opening[auditor] = receipt["inputs"]
            opening[node.admin_token] = receipt["outputs"]
            secrets = list(opening)
            for token, digest in opening.items():
                assert _get(running, digest, token).status_code == 200
                _refused(_get(running, "sha256:" + "1" * 64, token[::-1]))
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            for logger, level in zip(loggers, levels, strict=True):
                logger.removeHandler(listening)
                logger.setLevel(level)
    printed = capfd.readouterr()
    logged = "\n".join([*listening.lines, printed.out, printed.err])
    assert "GET /v1/tensors/" in logged  # the access log was on and captured
    for token in secrets:
        assert token not in logged
        assert token[::-1] not in logged


def _marker(archive: TensorArchive, digest: str) -> Path:
    """Where the archive records that a public receipt named ``digest``."""
    return archive.root / digest[7:9] / f"{digest[7:]}.public"


def test_public_markers_lapse_with_their_receipts(tmp_path: Path) -> None:
    arrays = {"x": np.arange(4, dtype=np.int32)}
    digest = tensors.map_digest(arrays)
    archive = TensorArchive(tmp_path / "tensors", retention=3600)
    try:
        archive.put(digest, arrays)
        archive.flush()
        assert not archive.is_public(digest)
        archive.put(digest, arrays, public=True)  # within the re-dating window: still marked
        assert archive.is_public(digest)
        archive.put(digest, arrays)  # a later private receipt does not unmark it
        assert archive.is_public(digest)
        marker = _marker(archive, digest)
        old = time.time() - 2 * 3600 - 601
        os.utime(marker, (old, old))
        assert archive.prune() == 0  # the tensors were named within retention: kept
        assert not archive.is_public(digest)
        assert tensors.map_digest(tensors.decode_binary(archive.get(digest))) == digest
    finally:
        archive.close()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=12), min_size=3, max_size=3),
    st.sampled_from(["public", "private"]),
)
def test_a_receipts_audit_field_is_in_its_rfc8785_form(texts: list[str], audit: str) -> None:
    log, node, engine = texts
    receipt = Receipt.create(
        log=log,
        node=node,
        model="bafkreid2azwuun2tob3kapyrytxf4myoeycuy2u7fsqx6mvfautwojcqlu",
        manifest=None,
        inputs="sha256:" + "ab" * 32,
        outputs="sha256:" + "cd" * 32,
        mode="attested",
        engine=engine,
        time="2026-12-01T00:00:00.000Z",
        nonce="n",
        audit=audit,
    )
    assert receipt.data == rfc8785.dumps(receipt.body)
    assert Receipt.from_bytes(receipt.data)["audit"] == audit


def test_a_private_receipt_has_one_encoding() -> None:
    public = Receipt.create(
        log="l", node="n", model="bafkreid2azwuun2tob3kapyrytxf4myoeycuy2u7fsqx6mvfautwojcqlu",
        manifest=None, inputs="sha256:" + "ab" * 32, outputs="sha256:" + "cd" * 32,
        mode="attested", engine="e", time="2026-12-01T00:00:00.000Z", nonce=None, audit="public",
    )  # fmt: skip
    for value in ("private", "Public", True, None):
        body = dict(public.body, audit=value)
        with pytest.raises(VerificationError, match=r"^malformed receipt: audit "):
            Receipt.from_bytes(rfc8785.dumps(body))
    with pytest.raises(InputError, match=r"^audit 'open' is not one of private, public$"):
        Receipt.create(
            **{**{k: public.body[k] for k in public.body if k != "type"}, "audit": "open"}
        )


def test_a_devnet_operator_audits_its_callers_private_receipts(tmp_path: Path) -> None:
    """`devnet up` issues an auditor token per node (audit-tokens.json, mode 0600) that
    `verinfer audit --tokens` uses: the devnet's private receipts are audited, not skipped."""
    directory = tmp_path / "net"
    alice = note.Signer(note.generate_key("alice")[0])
    hub = Hub(directory / "node-1" / "hub")  # published before the node starts
    try:
        hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
    finally:
        hub.close()
    nodes = devnet.up(directory, 1)
    try:
        url = nodes[0]["url"]
        body = {"model": "alice/iris", "inputs": tensors.encode_json({"X": IRIS})}
        answer = httpx.post(f"{url}/v1/infer", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        receipt = _receipt(answer.json())
        path = directory / devnet.AUDIT_TOKENS_FILE
        assert path.stat().st_mode & 0o777 == 0o600
        tokens = read_tokens(path)
        assert set(tokens) == {url}
        _refused(httpx.get(f"{url}/v1/tensors/{receipt['inputs']}", timeout=30))
        seen: list[Finding] = []
        for _ in range(100):  # the node archives off the request path, in another process
            seen.clear()
            with Auditor([(url, nodes[0]["vkey"])], rate=1.0, tokens=tokens) as auditor:
                auditor.round(seen.append)
            if [f.verdict for f in seen] == ["ok"]:
                break
            time.sleep(0.1)
        assert [f.verdict for f in seen] == ["ok"], seen
    finally:
        devnet.down(directory)


def test_the_cli_asks_a_node_for_a_public_audit(served: Served, tmp_path: Path) -> None:
    env = {**os.environ, "VERINFER_HOME": str(tmp_path / "home")}
    inputs = tmp_path / "x.json"
    inputs.write_text(json.dumps(tensors.encode_json({"X": IRIS + 11})))
    bundle = tmp_path / "bundle.json"
    done = subprocess.run(
        [*VERINFER, "infer", "alice/iris", "--inputs", str(inputs), "--bundle", str(bundle),
         "--node", served.url, "--public-audit"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    receipt = Bundle.from_json(bundle.read_text()).receipt
    assert receipt["audit"] == "public"
    served.node.archive.flush()
    assert _get(served, receipt["inputs"]).status_code == 200  # anyone reads them


def test_the_sdk_hands_the_requester_its_capabilities(served: Served, tmp_path: Path) -> None:
    with Client(served.url, trusted_vkeys=[served.node.vkey], known_nodes=tmp_path / "k.json",
                known_publishers=tmp_path / "p.json") as client:  # fmt: skip
        private = client.infer("alice/iris", {"X": IRIS + 12})
        public = client.infer("alice/iris", {"X": IRIS + 13}, audit="public")
    served.node.archive.flush()
    receipt = private.bundle.receipt
    assert receipt["audit"] == "private"
    assert public.bundle.receipt["audit"] == "public"
    _refused(_get(served, receipt["outputs"]))
    opened = _get(served, receipt["outputs"], private.capabilities[receipt["outputs"]])
    assert opened.status_code == 200
    assert tensors.map_digest(tensors.decode_binary(opened.content)) == receipt["outputs"]
    assert _get(served, public.bundle.receipt["outputs"]).status_code == 200


def test_a_loose_auditor_file_refuses_every_auditor_and_tells_only_the_operator(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    receipt = _receipt(_infer(served, IRIS + 14))
    token = Auditors(served.node.data).add("loose", replace=True)
    assert _get(served, receipt["inputs"], token).status_code == 200
    path = served.node.data / "auditors.json"
    path.chmod(0o644)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1))  # seen as changed: read again
    try:
        with caplog.at_level(logging.WARNING, logger="verinfer.access"):
            refused = _get(served, receipt["inputs"], token)
        _refused(refused)  # a 403 like any stranger's: no path of the node's disk in it
        assert str(served.node.data) not in refused.text
        assert "auditor tokens unusable" in caplog.text
        assert "is readable by others: chmod 600 it" in caplog.text
        assert token not in caplog.text
    finally:
        path.chmod(0o600)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 2))
    assert _get(served, receipt["inputs"], token).status_code == 200
