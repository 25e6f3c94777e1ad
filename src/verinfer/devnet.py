"""A local network: N nodes as processes on loopback, each with its own data dir, key and port,
all peered with each other (each fetches the models it lacks from the others, and each
witnesses the others' logs).

``up`` writes, into the network's directory, ``network.json`` (``{"nodes": [{"name", "url",
"vkey", "witness", "operator", "pid", "data"}]}``), ``trust.txt`` (the node vkeys, one a line),
``witnesses.txt`` (their witness keys, each followed by its node's key, which names its
operator) and ``audit-tokens.json`` (mode 0600: an auditor token of every node, by URL, for
``verinfer audit --tokens``: the devnet's operator audits its callers' private receipts too);
``status`` asks every node for its health; ``down`` stops them with SIGTERM (they finish
in-flight requests and commit first).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from verinfer.errors import ConflictError, InputError, LimitExceeded, NotFound
from verinfer.node.access import Auditors

__all__ = [
    "AUDIT_TOKENS_FILE",
    "NETWORK_FILE",
    "TRUST_FILE",
    "WITNESSES_FILE",
    "down",
    "read",
    "restart",
    "status",
    "up",
]

NETWORK_FILE = "network.json"
AUDIT_TOKENS_FILE = "audit-tokens.json"
TRUST_FILE = "trust.txt"
WITNESSES_FILE = "witnesses.txt"
_NODE = "from verinfer.cli import main; main()"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # nodes this process started


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None  # also reaps it once it has exited
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(directory: Path) -> list[dict[str, Any]]:
    """The nodes listed in a network's ``network.json``."""
    return read_file(directory / NETWORK_FILE)


def read_file(path: Path) -> list[dict[str, Any]]:
    """The nodes a network file lists (each with at least ``url`` and ``vkey``)."""
    try:
        nodes = json.loads(path.read_text())["nodes"]
        if not all(isinstance(n, dict) and "url" in n and "vkey" in n for n in nodes):
            raise ValueError("every node needs a url and a vkey")
    except FileNotFoundError:
        raise NotFound(f"no network file {str(path)!r}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{str(path)!r} is malformed: {exc}") from exc
    return list(nodes)


def up(directory: Path, nodes: int = 3, *, timeout: float = 90.0) -> list[dict[str, Any]]:
    """Start ``nodes`` nodes on loopback, peered with each other; return their descriptions."""
    if not 1 <= nodes <= 32:
        raise InputError(f"a devnet has 1-32 nodes, not {nodes!r}")
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / NETWORK_FILE).exists() and any(_alive(n["pid"]) for n in read(directory)):
        raise ConflictError(f"a devnet is already running in {str(directory)!r}: down it first")
    ports = [_free_port() for _ in range(nodes)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    described: list[dict[str, Any]] = []
    tokens = {}
    for number, url in enumerate(urls, 1):
        node: dict[str, Any] = {
            "name": f"node-{number}",
            "url": url,
            "data": str(directory / f"node-{number}"),
            "peers": [other for other in urls if other != url],
        }
        tokens[url] = Auditors(node["data"]).add("devnet", replace=True)
        node["pid"] = _spawn(directory, node)
        described.append(node)
    try:
        for node in described:
            node["vkey"], node["witness"] = _wait(directory, node, timeout)
            node["operator"] = node["name"]  # its key and its witness: one operator
    except LimitExceeded:
        down_nodes(described)
        raise
    (directory / NETWORK_FILE).write_text(json.dumps({"nodes": described}, indent=1) + "\n")
    (directory / TRUST_FILE).write_text("".join(f"{node['vkey']}\n" for node in described))
    # each line: a witness key and its operator, named by the node key it runs beside (a log's
    # own operator's witness never counts toward its quorum: PROTOCOL.md §11)
    (directory / WITNESSES_FILE).write_text(
        "".join(f"{n['witness']} {n['vkey']}\n" for n in described)
    )
    _write_private(directory / AUDIT_TOKENS_FILE, json.dumps(tokens, indent=1) + "\n")
    return described


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by its owner only from the start."""
    temp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temp, path)


def _spawn(directory: Path, node: dict[str, Any]) -> int:
    port = node["url"].rsplit(":", 1)[1]
    peers = [arg for other in node["peers"] for arg in ("--peer", other)]
    log = open(directory / f"{node['name']}.log", "ab")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(
        [sys.executable, "-c", _NODE, "node", "start", "--data", node["data"],
         "--port", port, "--name", f"{node['name']}.devnet", *peers],
        stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    log.close()
    _CHILDREN[process.pid] = process
    return process.pid


def _wait(directory: Path, node: dict[str, Any], timeout: float) -> tuple[str, str]:
    """Wait until the node answers; return its vkey and its witness key."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as http:
        while True:
            try:
                answer = http.get(f"{node['url']}/v1/node").json()
                return str(answer["vkey"]), str(answer["witness"])
            except (httpx.HTTPError, ValueError, KeyError):
                if not _alive(node["pid"]) or time.monotonic() > deadline:
                    raise LimitExceeded(
                        f"{node['name']} did not start; see {directory}/{node['name']}.log"
                    ) from None
                time.sleep(0.1)


def restart(directory: Path, name: str, *, timeout: float = 90.0) -> dict[str, Any]:
    """Start a stopped (or killed) node of the network again, with its data and port."""
    nodes = read(directory)
    node = next((n for n in nodes if n["name"] == name), None)
    if node is None:
        raise NotFound(f"no node {name!r} in the network in {str(directory)!r}")
    _reap(node["pid"])
    if _alive(node["pid"]):
        raise ConflictError(f"{name} is still running (pid {node['pid']})")
    node["pid"] = _spawn(directory, node)
    vkey, _ = _wait(directory, node, timeout)
    if vkey != node["vkey"]:
        raise ConflictError(f"{name} came back with another key: {vkey!r}")
    (directory / NETWORK_FILE).write_text(json.dumps({"nodes": nodes}, indent=1) + "\n")
    return node


def status(directory: Path) -> list[dict[str, Any]]:
    """Each node's description with ``up`` (answers /healthz) and its ``log_size``."""
    found = []
    with httpx.Client(timeout=5) as http:
        for node in read(directory):
            entry = dict(node)
            try:
                health = http.get(f"{node['url']}/healthz").json()
                entry.update(up=health.get("vkey") == node.get("vkey"), log_size=health["log_size"])
            except (httpx.HTTPError, ValueError, KeyError):
                entry.update(up=False, log_size=None)
            found.append(entry)
    return found


def down_nodes(nodes: list[dict[str, Any]], *, timeout: float = 60.0) -> None:
    """SIGTERM each node, wait for it to exit (SIGKILL after ``timeout``)."""
    for node in nodes:
        if _alive(node["pid"]):
            os.kill(node["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for node in nodes:
        while _alive(node["pid"]) and time.monotonic() < deadline:
            _reap(node["pid"])
            time.sleep(0.05)
        if _alive(node["pid"]):
            os.kill(node["pid"], signal.SIGKILL)
            child = _CHILDREN.get(node["pid"])
            if child is not None:
                child.wait(timeout=10)
        _reap(node["pid"])


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError):  # not our child: its parent reaps it
        os.waitpid(pid, os.WNOHANG)


def down(directory: Path) -> list[dict[str, Any]]:
    """Stop every node of the network in ``directory``; return their descriptions."""
    nodes = read(directory)
    down_nodes(nodes)
    return nodes
