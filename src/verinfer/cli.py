"""The ``verinfer`` command.

Exit codes: 0 success, 1 a verification or operation failed (reason on stderr), 2 usage error.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from verinfer import canonical, cid, merkle, note
from verinfer.errors import Error, VerificationError
from verinfer.log import Log
from verinfer.log.tiles import TILE_WIDTH, entries_path, tile_path

__all__ = ["app", "main"]

app = typer.Typer(
    name="verinfer",
    help="Verifiable inference: every answer comes with a proof anyone can check offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@app.callback()
def _root() -> None:
    """Verifiable inference: every answer comes with a proof anyone can check offline."""


NODE_KEY_FILE = "node.skey"


def load_or_create_node_key(data: Path, name: str) -> note.Signer:
    """The node's signing key in ``data`` (mode 0600), created on first use. Never printed."""
    path = data / NODE_KEY_FILE
    if not path.exists():
        data.mkdir(parents=True, exist_ok=True)
        skey, _ = note.generate_key(name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(skey + "\n")
    if path.stat().st_mode & 0o077:
        raise Error(f"{str(path)!r} is readable by others: chmod 600 it")
    return note.Signer(path.read_text().strip())


def _demo_receipt(index: int) -> bytes:
    """A receipt-shaped log entry, in canonical JSON."""
    model = cid.compute(b"demo model %d" % (index % 3))
    return canonical.dumps(
        {
            "model": model,
            "input": merkle.leaf_hash(b"input %d" % index).hex(),
            "output": merkle.leaf_hash(b"output %d" % index).hex(),
            "mode": "attested",
            "nonce": f"{index:032x}",
            "time": 1764000000 + index,
        }
    )


@app.command()
def demo(
    data: Annotated[
        Path | None, typer.Option(help="data directory (default: a new temporary one)")
    ] = None,
    batches: Annotated[int, typer.Option(min=1, max=1000, help="batches to append")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="entries per batch")] = 300,
) -> None:
    """Show the transparency log at work: append, checkpoint, prove, verify, catch tampering."""
    directory = data or Path(tempfile.mkdtemp(prefix="verinfer-demo-"))
    signer = load_or_create_node_key(directory, "demo.verinfer.example/node")
    out.print(f"[bold]verinfer demo[/] — data directory {directory}")
    out.print(f"node key: {signer.vkey}\n")
    with Log.open(directory, signer) as log:
        # (1) group commit: each batch of receipts gets one signed checkpoint
        table = Table(
            "batch", "entries", "tree size", "root", title="appended (one checkpoint each)"
        )
        start, first = log.size, 0
        for number in range(batches):
            appended = log.append([_demo_receipt(log.size + i) for i in range(batch_size)])
            first = first or appended.end  # the first checkpoint of this run
            table.add_row(
                str(number + 1),
                f"{appended.start}..{appended.end - 1}",
                str(appended.end),
                appended.checkpoint.root.hex()[:16] + "…",
            )
        out.print(table)
        signed = log.signed_checkpoint
        out.print("\n[bold]latest signed checkpoint[/] (C2SP tlog-checkpoint):")
        out.print(signed, end="", markup=False)

        # (2) a client with only the node's vkey checks one receipt offline
        checkpoint, _ = note.verify_checkpoint(signed, [signer.vkey])
        index = start + (checkpoint.size - start) // 2  # an entry this run appended
        entry = log.entry(index)
        proof = log.inclusion_proof(index, checkpoint.size)
        merkle.verify_inclusion(
            merkle.leaf_hash(entry), index, checkpoint.size, proof, checkpoint.root
        )
        out.print(f"\n[green]✓[/] checkpoint signature verifies with {signer.name}")
        out.print(
            f"[green]✓[/] entry {index} is in the tree of size {checkpoint.size} "
            f"({len(proof)}-hash inclusion proof)"
        )
        out.print(
            f"  served from {tile_path(0, index // TILE_WIDTH)} and "
            f"{entries_path(index // TILE_WIDTH)}"
        )

        # (3) the log only grew: the first checkpoint of this run is a prefix of the latest
        old = log.checkpoint_at(first)
        old_checkpoint, _ = note.verify_checkpoint(old, [signer.vkey])
        consistency = log.consistency_proof(first, checkpoint.size)
        merkle.verify_consistency(
            first, checkpoint.size, old_checkpoint.root, checkpoint.root, consistency
        )
        out.print(
            f"[green]✓[/] tree of size {first} is a prefix of size {checkpoint.size} "
            f"({len(consistency)}-hash consistency proof)"
        )

        # (4) a node that alters an answered entry is caught by the same check
        forged = entry.replace(b'"attested"', b'"attested "')
        try:
            merkle.verify_inclusion(
                merkle.leaf_hash(forged), index, checkpoint.size, proof, checkpoint.root
            )
        except VerificationError as exc:
            out.print(f"[green]✓[/] an altered entry {index} is rejected: {exc}")
        else:  # pragma: no cover - would mean the proof check is broken
            raise Error("an altered entry verified: the log is broken")
        log.verify()
        out.print(f"[green]✓[/] full audit: all {log.size} entries, tiles and checkpoints agree")


def main() -> None:
    """Entry point: verinfer errors become exit code 1 with the reason on stderr."""
    try:
        app()
    except Error as exc:
        err.print(f"error: {exc}")
        sys.exit(1)
