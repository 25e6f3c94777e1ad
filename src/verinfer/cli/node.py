"""``verinfer node``: run a node and administer it."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import httpx
import typer

from verinfer import keys, note
from verinfer.cli._app import app, err, out
from verinfer.client import Client, NetworkError
from verinfer.engine import DEFAULT_RUN_MEMORY
from verinfer.errors import InputError
from verinfer.node import Node
from verinfer.node.service import NODE_KEY_FILE, WITNESS_KEY_FILE

# -- the node -----------------------------------------------------------------------------------

node_app = typer.Typer(help="Run a verinfer node.")
app.add_typer(node_app, name="node")


@node_app.command("start")
def node_start(  # noqa: PLR0917 - a typer command: its options
    data: Annotated[
        Path | None, typer.Option(help="node data directory (default: $VERINFER_HOME/node)")
    ] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port")] = 8600,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    name: Annotated[str, typer.Option(help="the node key's name, on first start")] = (
        "node.verinfer.local"
    ),
    peer: Annotated[
        list[str] | None,
        typer.Option(
            help="a peer node URL to fetch missing models from (repeatable; replaces the peers "
            "kept in DATA/peers.json)"
        ),
    ] = None,
    test_engine: Annotated[
        str | None,
        typer.Option(
            hidden=True,
            help="TEST SUPPORT ONLY: run on a fake engine from verinfer.testing, NAME[:ARG] "
            "(falsifying:0.5 signs wrong outputs for half the answers)",
        ),
    ] = None,
    max_run_memory: Annotated[
        int,
        typer.Option(
            min=1,
            help="MiB of tensors the inferences in progress may allocate together (not the "
            "weights); a run needing more is refused",
        ),
    ] = DEFAULT_RUN_MEMORY >> 20,
    header_timeout: Annotated[
        float | None,
        typer.Option(
            min=0.01, show_default="10", help="seconds a request's head may take to arrive"
        ),
    ] = None,
    body_timeout: Annotated[
        float | None,
        typer.Option(min=0.01, show_default="30", help="seconds a request's body may stall"),
    ] = None,
) -> None:
    """Serve the HTTP API until SIGINT/SIGTERM; in-flight requests finish, the queue commits."""
    from verinfer.engine import Engine  # noqa: PLC0415
    from verinfer.node.app import serve  # noqa: PLC0415 - only the server needs FastAPI

    _check_port(host, port)  # before anything says "serving"
    engine = Engine(memory=max_run_memory << 20)
    if test_engine is not None:  # a lying node for fault injection: never a real one
        from verinfer.testing import named_engine  # noqa: PLC0415

        engine = named_engine(test_engine, memory=max_run_memory << 20)
        err.print(f"[bold red]TEST NODE[/] on the fake engine {test_engine!r}: do not trust it")
    with Node(data or keys.home() / "node", name=name, peers=peer, engine=engine) as node:
        err.print(f"node {node.vkey}")
        err.print(f"serving http://{host}:{port} (log size {node.log.size})")
        timeouts = {"header_timeout": header_timeout, "body_timeout": body_timeout}
        serve(node, host=host, port=port, **{k: v for k, v in timeouts.items() if v is not None})
    err.print("stopped: every answered request is committed")


def _check_port(host: str, port: int) -> None:
    """Refuse a port another process holds, before the node opens its data or says "serving"."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(
                f"cannot serve on {host}:{port}: {exc.strerror or exc} (another process holds "
                "the port? choose another with --port)"
            ) from exc


@node_app.command("vkey")
def node_vkey(
    node: Annotated[
        str | None, typer.Option("--node", help="ask a running node (URL) for its keys")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="read the key of the node whose data directory this is"),
    ] = None,
    witness: Annotated[
        bool, typer.Option("--witness", help="print the node's witness key instead")
    ] = False,
) -> None:
    """Print a node's vkey, for a --trust file (with --witness: its witness key, for a
    --witnesses file). From --data the key file itself is read; from --node the node's own
    answer, which only the node vouches for: check it out of band before you trust it."""
    if (node is None) == (data is None):
        raise InputError("give --node URL or --data DIR (one of them)")
    found: dict[str, str] = {}
    if data is not None:
        for label, file in (("node", NODE_KEY_FILE), ("witness", WITNESS_KEY_FILE)):
            try:
                found[label] = note.Signer((data / file).read_text().strip()).vkey
            except OSError as exc:
                if label == "witness":
                    continue  # a node gets its witness key on first start
                raise InputError(
                    f"no node key in {str(data)!r} ({file}: {exc.strerror}): start the node "
                    "once, or give the right --data"
                ) from exc
    elif node is not None:
        try:
            answer = httpx.get(f"{node.rstrip('/')}/v1/node", timeout=30).json()
            found = {"node": str(answer["vkey"]), "witness": str(answer["witness"])}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise NetworkError(f"cannot read the keys of {node}: {exc}") from exc
    if witness and "witness" not in found:
        raise InputError(f"the node in {str(data)!r} has no witness key yet: start it once")
    out.print(found["witness" if witness else "node"], markup=False)


TokenOption = Annotated[
    Path | None,
    typer.Option("--token", help="the node's admin token file (DATA/admin.token)"),
]


def _admin_client(node: str, token: Path | None) -> Client:
    secret = None
    if token is not None:
        try:
            secret = token.read_text().strip()
        except OSError as exc:
            raise InputError(f"cannot read token {str(token)!r}: {exc.strerror}") from exc
    return Client(node, admin_token=secret)


@node_app.command("peers")
def node_peers(
    node: Annotated[str, typer.Option("--node", help="the node's URL")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="replace the peers with these URLs (repeatable; needs --token)"),
    ] = None,
    clear: Annotated[bool, typer.Option(help="remove every peer (needs --token)")] = False,
    token: TokenOption = None,
) -> None:
    """Show a node's peers, or replace them."""
    with _admin_client(node, token) as client:
        peers = client.set_peers(set_ or []) if set_ or clear else client.peers()
    out.print("\n".join(peers) if peers else "(no peers)", markup=False)


@node_app.command("delete-blob")
def node_delete_blob(
    blob: Annotated[str, typer.Argument(help="the blob's CID")],
    node: Annotated[str, typer.Option("--node", help="the node's URL")],
    token: TokenOption = None,
) -> None:
    """Delete an unpublished blob from a node (needs --token)."""
    with _admin_client(node, token) as client:
        client.delete_blob(blob)
    out.print(f"deleted {blob}")


auditors_app = typer.Typer(
    help="Tokens of the auditors allowed to read this node's private tensors (DATA/auditors.json)."
)
node_app.add_typer(auditors_app, name="auditors")
DataOption = Annotated[
    Path | None, typer.Option(help="node data directory (default: $VERINFER_HOME/node)")
]


@auditors_app.command("add")
def auditors_add(
    name: Annotated[str, typer.Argument(help="the auditor's name (1-64 of A-Z a-z 0-9 . _ -)")],
    data: DataOption = None,
    replace: Annotated[bool, typer.Option(help="issue a new token for an existing name")] = False,
) -> None:
    """Issue a token that lets auditor NAME read the node's private tensors. The token is
    printed once (only its SHA-256 is kept); a running node accepts it at once."""
    from verinfer.node.access import Auditors  # noqa: PLC0415

    token = Auditors(data or keys.home() / "node").add(name, replace=replace)
    out.print(token, markup=False)
    err.print(f"auditor {name!r}: give it this token (Authorization: Bearer); it is not kept")


@auditors_app.command("remove")
def auditors_remove(
    name: Annotated[str, typer.Argument(help="the auditor's name")], data: DataOption = None
) -> None:
    """Revoke auditor NAME's token (a running node refuses it at once)."""
    from verinfer.node.access import Auditors  # noqa: PLC0415

    Auditors(data or keys.home() / "node").remove(name)
    out.print(f"removed auditor {name!r}", markup=False)


@auditors_app.command("list")
def auditors_list(data: DataOption = None) -> None:
    """The auditors holding a token (names only: the tokens are not kept)."""
    from verinfer.node.access import Auditors  # noqa: PLC0415

    names = Auditors(data or keys.home() / "node").names()
    out.print("\n".join(names) if names else "(no auditors)", markup=False)
