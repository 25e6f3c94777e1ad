"""``verinfer devnet``: a local network of nodes on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from verinfer import devnet
from verinfer.cli._app import app, out
from verinfer.errors import Error

# -- the local network --------------------------------------------------------------------------

devnet_app = typer.Typer(help="A local network of nodes on loopback.")
app.add_typer(devnet_app, name="devnet")
DirOption = Annotated[Path, typer.Option("--dir", help="the network's directory")]


def _nodes_table(nodes: list[dict[str, Any]]) -> Table:
    table = Table()  # narrow terminals fold the vkey; the short columns keep their width
    for header in ("node", "url", "pid", "up", "log size"):
        table.add_column(header, no_wrap=True, min_width=len(header))
    table.add_column("vkey", overflow="fold")
    for node in nodes:
        state = node.get("up")
        table.add_row(
            node["name"],
            node["url"],
            str(node["pid"]),
            "" if state is None else ("[green]yes[/]" if state else "[red]no[/]"),
            "" if node.get("log_size") is None else str(node["log_size"]),
            node.get("vkey", ""),
        )
    return table


@devnet_app.command("up")
def devnet_up(
    directory: DirOption = Path("devnet"),
    nodes: Annotated[int, typer.Option(min=1, max=32, help="how many nodes")] = 3,
) -> None:
    """Start N peered nodes; write network.json and trust.txt."""
    started = devnet.up(directory, nodes)
    out.print(_nodes_table(started))
    out.print(f"network: {directory / devnet.NETWORK_FILE}; trust: {directory / devnet.TRUST_FILE}")
    for node in started:  # every node serves the explorer at /
        out.print(f"explorer of {node['name']}: {node['url']}/", markup=False, highlight=False)


@devnet_app.command("status")
def devnet_status(directory: DirOption = Path("devnet")) -> None:
    """Ask every node of the network for its health; exit 1 if any is down."""
    found = devnet.status(directory)
    out.print(_nodes_table(found))
    if not all(node["up"] for node in found):
        raise Error(f"{sum(not n['up'] for n in found)} of {len(found)} nodes are down")


@devnet_app.command("down")
def devnet_down(directory: DirOption = Path("devnet")) -> None:
    """Stop every node (SIGTERM: in-flight requests finish, queues commit)."""
    stopped = devnet.down(directory)
    out.print(f"stopped {len(stopped)} nodes")


@devnet_app.command("url")
def devnet_url(
    directory: DirOption = Path("devnet"),
    index: Annotated[int, typer.Option("--node", min=0, help="which node, from 0")] = 0,
) -> None:
    """Print one node's URL, for --node in scripts: --node "$(verinfer devnet url --dir net)"."""
    nodes = devnet.read(directory)
    if index >= len(nodes):
        raise Error(
            f"the network in {str(directory)!r} has {len(nodes)} nodes (0 to {len(nodes) - 1})"
        )
    out.print(nodes[index]["url"], markup=False)
