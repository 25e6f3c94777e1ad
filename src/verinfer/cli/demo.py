"""``verinfer demo``: the walk-through of a network, or of one log in process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from verinfer.cli._app import app, out


@app.command()
def demo(  # noqa: PLR0917 - a typer command: its options
    nodes: Annotated[int, typer.Option(min=1, max=8, help="nodes of the devnet")] = 3,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="network directory (default: a new temporary one)")
    ] = None,
    local: Annotated[
        bool, typer.Option(help="no network: the log and a node at work inside this process")
    ] = False,
    data: Annotated[
        Path | None, typer.Option(help="--local: data directory (default: a new temporary one)")
    ] = None,
    batches: Annotated[int, typer.Option(min=1, max=1000, help="--local: batches to append")] = 5,
    batch_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="--local: entries per batch")
    ] = 300,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="leave the network up to explore it in a browser (each node's URL)"
        ),
    ] = False,
) -> None:
    """Show verinfer at work: a devnet on loopback, two real models published, verified
    inferences through every node, a bundle checked offline, tampering caught."""
    from verinfer import demo as demo_walkthrough  # noqa: PLC0415 - heavy imports: lazy

    if local:
        demo_walkthrough.run_local(out, data, batches, batch_size)
    else:
        demo_walkthrough.run(out, nodes=nodes, directory=directory, keep=keep)
