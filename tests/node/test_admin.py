"""Administrative operations (peers, blob deletion) need the node's admin token; anonymous
uploads share a quota and expire. Against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_http import IRIS, Served

from verinfer import cid, note
from verinfer.client import Client
from verinfer.errors import AuthError, ConflictError, InputError, LimitExceeded, NotFound
from verinfer.examples import sklearn_model
from verinfer.node import Node
from verinfer.node.service import ADMIN_TOKEN_FILE, PEERS_FILE

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]
QUOTA = 3 * 10_000 + 100  # three unpublished 10 kB uploads fit, a fourth does not


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    alice = note.Signer(note.generate_key("alice")[0])
    with Node(tmp_path / "node") as node:
        node.hub.publish(sklearn_model("iris"), repository="alice/iris", version="1", signer=alice)
        running = Served(node, upload_quota=QUOTA)
        try:
            yield running
        finally:
            running.stop()


def _token(served: Served) -> str:
    return (served.node.data / ADMIN_TOKEN_FILE).read_text().strip()


def test_the_admin_token_is_created_private_and_stable(served: Served, tmp_path: Path) -> None:
    path = served.node.data / ADMIN_TOKEN_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(_token(served)) >= 40  # 32 random bytes
    os.chmod(path, 0o644)
    with pytest.raises(InputError, match="readable by others"):
        Node(served.node.data)
    os.chmod(path, 0o600)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "needs the node's admin token"),
        ({"Authorization": "Bearer not-the-token"}, "the admin token is wrong"),
        ({"Authorization": "Basic YWRtaW46YWRtaW4="}, "needs the node's admin token"),
        ({"Authorization": "Bearer x"}, "the admin token is wrong"),
    ],
)
def test_admin_routes_refuse_a_missing_or_wrong_token(
    served: Served, headers: dict[str, str], message: str
) -> None:
    blob = served.node.hub.blobs.put(b"unpublished")
    with httpx.Client(base_url=served.url) as http:
        for method, path, body in (
            ("PUT", "/v1/peers", {"peers": ["http://127.0.0.1:1"]}),
            ("DELETE", f"/v1/blobs/{blob}", None),
        ):
            answer = http.request(method, path, json=body, headers=headers)
            assert answer.status_code == 401, (method, path)
            assert answer.json()["code"] == "unauthorized"
            assert message in answer.json()["message"]
            assert _token(served) not in answer.text
    assert served.node.peers == []
    assert served.node.hub.blobs.has(blob)


def test_peers_are_changed_with_the_token_and_kept_across_restarts(served: Served) -> None:
    with Client(served.url, admin_token=_token(served)) as admin:
        assert admin.peers() == []
        kept = admin.set_peers(["http://127.0.0.1:9001/", "https://node.example:443"])
        assert kept == ["http://127.0.0.1:9001", "https://node.example:443"]
        assert admin.peers() == kept
        with pytest.raises(InputError, match="'ftp://x' is not an http"):
            admin.set_peers(["ftp://x"])
        with pytest.raises(InputError, match="'http://a/path' is not an http"):
            admin.set_peers(["http://a/path"])
        assert admin.peers() == kept  # a refused change changes nothing
    with Client(served.url) as anonymous, pytest.raises(AuthError, match="HTTP 401"):
        anonymous.set_peers([])
    # a restart finds them: a node on a copy of the data directory (the served node holds its
    # log: one opener at a time)
    copy = served.node.data.parent / "restarted"
    shutil.copytree(served.node.data, copy)
    with Node(copy) as reopened:
        assert reopened.peers == kept
    (copy / PEERS_FILE).write_text("{not json")
    with pytest.raises(InputError, match=r"peers\.json' is malformed"):
        Node(copy)


def test_only_unpublished_blobs_can_be_deleted(served: Served) -> None:
    unpublished = served.node.hub.blobs.put(os.urandom(1000))
    published = served.node.hub.resolve("alice/iris")
    with Client(served.url, admin_token=_token(served)) as admin:
        admin.delete_blob(unpublished)
        with pytest.raises(NotFound, match=f"no blob '{unpublished}'"):
            admin.blob(unpublished)
        with pytest.raises(NotFound, match="no blob"):
            admin.delete_blob(unpublished)
        for blob in (published.model, published.cid):
            with pytest.raises(ConflictError, match="published versions are immutable"):
                admin.delete_blob(blob)
        with pytest.raises(InputError, match="malformed CID"):
            admin.delete_blob("bafy-not-a-cid")
    with httpx.Client(base_url=served.url) as http:
        answer = http.delete(
            "/v1/blobs/not-a-cid", headers={"Authorization": f"Bearer {_token(served)}"}
        )
        assert answer.status_code == 400
        assert answer.json()["code"] == "bad_input"
    with Client(served.url, known_nodes=served.node.data / "k.json") as client:
        assert client.infer("alice/iris", {"X": IRIS}).outputs["label"].shape == (2,)


def test_anonymous_uploads_share_a_quota_and_expire(served: Served) -> None:
    chunks = [os.urandom(10_000) for _ in range(4)]
    with httpx.Client(base_url=served.url) as http:
        uploaded = [http.put("/v1/blobs", content=chunk).json()["cid"] for chunk in chunks[:3]]
        assert uploaded == [cid.compute(chunk) for chunk in chunks[:3]]
        full = http.put("/v1/blobs", content=chunks[3])
        assert full.status_code == 503
        assert full.json()["code"] == "over_limit"
        assert "unpublished uploads" in full.json()["message"]
        assert not served.node.hub.blobs.has(cid.compute(chunks[3]))
        # published blobs never count; an upload unpublished for longer than the TTL expires
        stale = served.node.hub.blobs.path(uploaded[0])
        old = time.time() - 7200
        os.utime(stale, (old, old))
        again = http.put("/v1/blobs", content=chunks[3])
        assert again.status_code == 200, again.text
        assert not served.node.hub.blobs.has(uploaded[0])
        assert served.node.hub.blobs.has(uploaded[1])
        assert served.node.hub.resolve("alice/iris")  # the published model stayed


def test_the_cli_changes_peers_and_deletes_blobs_with_the_token_file(
    served: Served, tmp_path: Path
) -> None:
    token = str(served.node.data / ADMIN_TOKEN_FILE)
    env = {**os.environ, "VERINFER_HOME": str(tmp_path / "home")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*VERINFER, *args], capture_output=True, text=True, timeout=60, env=env, check=False
        )

    peer = "http://127.0.0.1:9"
    changed = run("node", "peers", "--node", served.url, "--set", peer, "--token", token)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == "http://127.0.0.1:9"
    assert run("node", "peers", "--node", served.url).stdout.strip() == "http://127.0.0.1:9"
    refused = run("node", "peers", "--node", served.url, "--clear")
    assert refused.returncode == 1
    assert "needs the node's admin token" in refused.stderr
    cleared = run("node", "peers", "--node", served.url, "--clear", "--token", token)
    assert cleared.stdout.strip() == "(no peers)"
    blob = served.node.hub.blobs.put(b"to delete")
    deleted = run("node", "delete-blob", blob, "--node", served.url, "--token", token)
    assert deleted.returncode == 0, deleted.stderr
    assert not served.node.hub.blobs.has(blob)
    for result in (changed, refused, cleared, deleted):
        assert _token(served) not in result.stdout + result.stderr


def _raw_upload(url: str, length: int, body: bytes) -> bytes:
    """A PUT that declares ``length`` bytes, sends ``body``, then hangs up."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"PUT /v1/blobs HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n\r\n".encode()
            + body
        )
        if len(body) < length:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes, or the answer is whole
            answer += chunk
            head, _, rest = answer.partition(b"\r\n\r\n")
            declared = [
                int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            ]  # fmt: skip
            if declared and len(rest) >= declared[0]:
                break
        return answer


def test_a_failed_upload_leaves_nothing_behind(served: Served) -> None:
    limit = served.node.hub.limits.max_bytes
    answer = _raw_upload(served.url, limit + 1, b"")
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'"code":"body_too_large"' in answer
    _raw_upload(served.url, 50_000, os.urandom(20_000))  # the client hangs up mid-body
    while True:  # until the node sees the hang-up and cleans up (pytest's limit stops a hang)
        leftovers = [p for p in served.node.hub.blobs.root.iterdir() if p.name.startswith(".")]
        if not leftovers:
            break
        time.sleep(0.05)
    assert leftovers == []
    assert served.node.hub.unpublished() == []
    with pytest.raises(
        LimitExceeded, match=f"holds 0 bytes of unpublished uploads and its quota is {QUOTA}"
    ):
        served.node.hub.make_room(QUOTA + 1, quota=QUOTA, max_age=3600)


def test_calibrating_over_http_needs_the_admin_token(served: Served) -> None:
    """Calibration runs the model under an emulator for minutes: anonymous callers get a 401."""
    model = served.node.hub.resolve("alice/iris").model
    with httpx.Client(base_url=served.url) as http:
        refused = http.post(f"/v1/blobs/{model}/analysis", params={"calibrate": "true"})
        assert (refused.status_code, refused.json()["code"]) == (401, "unauthorized")
        plain = http.post(f"/v1/blobs/{model}/analysis")  # the ordinary analysis stays open
        assert plain.status_code == 200
        assert "tolerance" not in plain.json()["determinism"]
