"""The ``verinfer`` command.

Exit codes: 0 success, 1 a verification or operation failed (reason on stderr), 2 usage error.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from verinfer import canonical, cid, devnet, examples, keys, merkle, note, tensors
from verinfer.client import Client, Network, Publishers, connect
from verinfer.engine import DEFAULT_RUN_MEMORY
from verinfer.errors import Error, InputError, VerificationError
from verinfer.hub import Hub, Manifest
from verinfer.log import Log
from verinfer.log.tiles import TILE_WIDTH, entries_path, tile_path
from verinfer.modes.dispute import Verdict, verify_verdict
from verinfer.node import Node, load_or_create_key
from verinfer.node.peers import HttpSource
from verinfer.verify import Bundle, replicas_of, verify_bundle
from verinfer.verify.evidence import verify_evidence

__all__ = ["app", "main"]

app = typer.Typer(
    name="verinfer",
    help="Verifiable inference: every answer comes with a proof anyone can check offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@app.callback()
def _root() -> None:
    """Verifiable inference: every answer comes with a proof anyone can check offline."""


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
) -> None:
    """Show verinfer at work: a devnet on loopback, two real models published, verified
    inferences through every node, a bundle checked offline, tampering caught."""
    if local:
        _local_demo(data, batches, batch_size)
    else:
        from verinfer import demo as network_demo  # noqa: PLC0415 - trains a model: lazy

        network_demo.run(out, nodes=nodes, directory=directory)


def _local_demo(data: Path | None, batches: int, batch_size: int) -> None:
    """The log (append, prove, verify, catch tampering), then a model published, answered with
    a bundle and verified offline, in one process."""
    directory = data or Path(tempfile.mkdtemp(prefix="verinfer-demo-"))
    signer = load_or_create_key(directory, "demo.verinfer.example/node")
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
    _demo_inference(directory)


def _demo_inference(directory: Path) -> None:
    """Publish a model, answer a request with a bundle, verify it offline, catch a lie."""
    out.print("\n[bold]verified inference[/]")
    publisher_key = directory / "publisher.skey"
    if not publisher_key.exists():
        keys.write_secret(publisher_key, note.generate_key("demo")[0] + "\n")
    publisher = note.Signer(publisher_key.read_text().strip())
    with Node(directory) as node:
        try:
            manifest = node.hub.resolve("demo/mlp@1")
        except Error:
            manifest = node.hub.publish(
                examples.mlp(
                    [4, 16, 3], seed=7, batch="batch", softmax=True, output="probabilities"
                ),
                repository="demo/mlp",
                version="1",
                signer=publisher,
                description="a seeded 4-16-3 MLP",
            )
        verdict = manifest.body["determinism"]["bit_identical"]
        out.print(
            f"[green]✓[/] published demo/mlp@1: model {manifest.model}, manifest {manifest.cid} "
            f"(checked in a sandbox; bit-identical across threads: {verdict})"
        )
        inputs = {"x": np.array([[0.5, -1.0, 2.0, 0.1], [1.5, 0.2, -0.3, 0.9]], np.float32)}
        result = node.infer("demo/mlp", inputs, nonce=os.urandom(8).hex())
        bundle_text = result.bundle.to_json()
        model_bytes = node.hub.blobs.get(manifest.model)
        out.print(
            f"[green]✓[/] answered with a {len(bundle_text):,}-byte bundle: receipt "
            f"{result.bundle.index} of the node's log"
        )
        # anyone, offline, with the node's vkey: the bundle, the tensors, the model
        verify_bundle(
            Bundle.from_json(bundle_text),
            [node.vkey],
            inputs=inputs,
            outputs=result.outputs,
            model=model_bytes,
            reexecute=True,
            report=lambda line: out.print(f"  [green]✓[/] {line}"),
        )
        forged = {"probabilities": result.outputs["probabilities"].copy()}
        forged["probabilities"][0, 0] += 0.01
        try:
            verify_bundle(Bundle.from_json(bundle_text), [node.vkey], outputs=forged)
        except VerificationError as exc:
            out.print(f"[green]✓[/] an altered output is rejected: {exc}")
        else:  # pragma: no cover - would mean the digest check is broken
            raise Error("an altered output verified: the verifier is broken")


# -- keys ---------------------------------------------------------------------------------------

key_app = typer.Typer(help="Signing keys (in $VERINFER_HOME/keys, default ~/.verinfer/keys).")
app.add_typer(key_app, name="key")

KeyOption = Annotated[str, typer.Option("--key", help="key file name in the key directory")]


@key_app.command("generate")
def key_generate(
    name: Annotated[
        str | None, typer.Option(help="key name = the owner name you publish under")
    ] = None,
    file: KeyOption = keys.DEFAULT,
) -> None:
    """Create a signing key (by default: the default key, named after your login)."""
    created = keys.generate(name, file=file)
    out.print(f"created key {created.file!r} in {created.path.parent}")
    out.print(created.vkey, markup=False)


@key_app.command("show")
def key_show(file: KeyOption = keys.DEFAULT) -> None:
    """Print a key's public vkey (never the private key)."""
    out.print(keys.load(file).vkey, markup=False)


# -- models -------------------------------------------------------------------------------------

model_app = typer.Typer(help="Publish, find, fetch and check models.")
app.add_typer(model_app, name="model")

HubOption = Annotated[
    Path | None, typer.Option("--hub", help="hub data directory (default: $VERINFER_HOME/hub)")
]
NodeOption = Annotated[
    str | None, typer.Option("--node", help="act on a node (URL) instead of the local hub")
]
_PROGRESS_FROM = 4 << 20  # show a progress bar for files above 4 MiB


def _hub(path: Path | None) -> Hub:
    return Hub(path or keys.home() / "hub")


def _progress(total: int, label: str) -> Progress | None:
    if total < _PROGRESS_FROM:
        return None
    return Progress(
        f"[bold]{label}[/]", BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=err
    )


def _manifest_table(manifest: Manifest) -> Table:
    body = manifest.body
    table = Table(show_header=False, title=f"{manifest.repository}@{manifest.version}")
    determinism = body["determinism"]
    verdict = {True: "bit-identical", False: "NOT bit-identical", None: "not probed"}[
        determinism.get("bit_identical")
    ]
    rows = {
        "manifest": manifest.cid,
        "model": manifest.model,
        "size": f"{body['size']:,} bytes",
        "publisher": manifest.publisher,
        "published": body["time"],
        "description": body["description"],
        "license": body["license"],
        "tags": ", ".join(body["tags"]),
        "format": f"{body['format']} (IR {body['ir_version']}, opsets "
        + ", ".join(f"{d} {v}" for d, v in sorted(body["opsets"].items()))
        + ")",
        "producer": body["producer"],
        "parameters": f"{body['parameters']:,}",
        "operators": ", ".join(body["operators"]),
        "determinism": f"{verdict} over {determinism['runs']} runs, threads "
        f"{determinism['threads']}, on {determinism['engine']}"
        + (f" ({determinism['error']})" if "error" in determinism else ""),
    }
    for role in ("inputs", "outputs"):
        rows[role] = "\n".join(
            f"{t['name']}: {t['dtype']}"
            + ("[" + ", ".join("?" if d is None else str(d) for d in t["shape"]) + "]")
            if t["shape"] is not None
            else f"{t['name']}: {t['dtype']} (any shape)"
            for t in body[role]
        )
    for label, value in rows.items():
        table.add_row(f"[bold]{label}[/]", value)
    return table


@model_app.command("publish")
def model_publish(  # noqa: PLR0917 - a typer command: its options
    file: Annotated[Path, typer.Argument(help="the .onnx file", exists=True, dir_okay=False)],
    name: Annotated[str, typer.Option(help="repository owner/name; owner = your key's name")],
    version: Annotated[str, typer.Option(help="version string, e.g. 1.0.0")],
    description: Annotated[str, typer.Option(help="what the model does")] = "",
    license: Annotated[str, typer.Option(help="license identifier, e.g. MIT")] = "",
    tag: Annotated[list[str] | None, typer.Option(help="a search tag (repeatable)")] = None,
    key: KeyOption = keys.DEFAULT,
    hub: HubOption = None,
    node: NodeOption = None,
    calibrate: Annotated[
        bool,
        typer.Option(
            help="measure the tolerance across CPU kernel classes (runs the model under "
            "qemu-x86_64) and declare it, so nodes on different hardware can be compared"
        ),
    ] = False,
) -> None:
    """Check a model, store it by content and publish a signed manifest for it."""
    signer = keys.load(key)
    if node is not None:  # the node checks the model; the manifest is signed here
        with Client(node) as remote:
            manifest = remote.publish(
                file,
                repository=name,
                version=version,
                signer=signer,
                description=description,
                license=license,
                tags=tuple(tag or ()),
                calibrate=calibrate,
            )
        out.print(f"published {manifest.repository}@{manifest.version} on {node}")
        out.print(f"model     {manifest.model}")
        out.print(f"manifest  {manifest.cid}")
        return
    size = file.stat().st_size
    progress = _progress(size, "storing")
    with _hub(hub) as store, progress or contextlib.nullcontext():
        task = progress.add_task("store", total=size) if progress else None
        manifest = store.publish(
            file,
            repository=name,
            version=version,
            signer=signer,
            description=description,
            license=license,
            tags=tuple(tag or ()),
            calibrate=calibrate,
            progress=(lambda n: progress.advance(task, n))
            if progress and task is not None
            else None,
        )
    out.print(f"published {manifest.repository}@{manifest.version}")
    out.print(f"model     {manifest.model}")
    out.print(f"manifest  {manifest.cid}")


@model_app.command("list")
def model_list(
    owner: Annotated[str | None, typer.Option(help="only this owner's models")] = None,
    tag: Annotated[str | None, typer.Option(help="only models with this tag")] = None,
    search: Annotated[str | None, typer.Option(help="text in the name or description")] = None,
    hub: HubOption = None,
    node: NodeOption = None,
) -> None:
    """List the models in the hub, newest first."""
    if node is not None:
        with Client(node) as remote:
            listed = remote.models(owner=owner, tag=tag, text=search)
        table = Table("model", "version", "published", "model CID", "description")
        for item in listed:
            table.add_row(
                item["repository"],
                item["version"],
                item["time"],
                item["model"],
                item["description"],
            )
        out.print(table if listed else "no models")
        return
    with _hub(hub) as store:
        found = store.models(owner=owner, tag=tag, text=search)
    table = Table("model", "version", "size", "published", "model CID", "description")
    for manifest in found:
        body = manifest.body
        table.add_row(
            manifest.repository,
            manifest.version,
            f"{body['size']:,}",
            body["time"],
            manifest.model,
            body["description"],
        )
    out.print(table if found else "no models")


@model_app.command("show")
def model_show(
    ref: Annotated[str, typer.Argument(help="owner/name[@version|tag], or a manifest/model CID")],
    hub: HubOption = None,
    node: NodeOption = None,
) -> None:
    """Show a model's signed manifest: signature, size, determinism, publisher."""
    if node is not None:
        source = HttpSource(node)
        try:
            manifest = Manifest.from_bytes(source.manifest(ref))  # the signature is checked
        finally:
            source.close()
    else:
        with _hub(hub) as store:
            manifest = store.resolve(ref)
    out.print(_manifest_table(manifest))


@model_app.command("pull")
def model_pull(  # noqa: PLR0917 - a typer command: its options
    ref: Annotated[str, typer.Argument(help="owner/name[@version|tag]")],
    source: Annotated[
        Path | None, typer.Option("--from", help="a hub directory to pull from")
    ] = None,
    node: NodeOption = None,
    output: Annotated[
        Path | None, typer.Option(help="also write the model file here (hash-checked)")
    ] = None,
    owner_key: Annotated[
        str | None, typer.Option(help="the owner's vkey, if no key is pinned for it yet")
    ] = None,
    hub: HubOption = None,
) -> None:
    """Fetch a model, its manifest and its repository history, verifying every byte."""
    if (source is None) == (node is None):
        raise InputError("pull from exactly one of --from DIR or --node URL")
    remote: Hub | HttpSource
    if node is not None:
        remote = HttpSource(node)
    else:
        assert source is not None
        if not (source / "hub.sqlite").is_file():
            raise Error(f"{str(source)!r} is not a hub directory (no hub.sqlite)")
        remote = Hub(source)
    with _hub(hub) as store:
        try:
            manifest = store.pull(ref, remote, trusted_owner=owner_key)
        finally:
            remote.close()
        if output is not None:
            store.export(manifest.cid, output)
    out.print(f"pulled {manifest.repository}@{manifest.version}: model {manifest.model}")
    if output is not None:
        out.print(f"wrote {output}")


@model_app.command("verify")
def model_verify(
    ref: Annotated[
        str | None, typer.Argument(help="one model (default: everything in the hub)")
    ] = None,
    hub: HubOption = None,
) -> None:
    """Recheck hashes and signatures; exit 1 if anything fails."""
    with _hub(hub) as store:
        problems = store.verify(ref)
        count = len(store.repositories()) if ref is None else 1
    for problem in problems:
        err.print(f"[red]✗[/] {problem.subject}: {problem.message}")
    if problems:
        raise Error(f"{len(problems)} problem(s) found")
    what = ref or f"{count} repositories"
    out.print(f"[green]✓[/] {what}: every hash and signature checks out")


@model_app.command("zk-setup")
def model_zk_setup(
    ref: Annotated[str, typer.Argument(help="owner/name[@version] of a published model")],
    srs: Annotated[
        Path | None,
        typer.Option(help="the SRS file (a ceremony's); default: a local development one"),
    ] = None,
    key: KeyOption = keys.DEFAULT,
    hub: HubOption = None,
    node: Annotated[
        str | None, typer.Option("--node", help="then publish the endorsement on this node")
    ] = None,
) -> None:
    """Build a model's zero-knowledge circuit and publish your endorsement of it."""
    signer = keys.load(key)
    with _hub(hub) as store, err.status("building the circuit and its keys…"):
        addendum = store.zk_setup(ref, signer, srs=srs.read_bytes() if srs else None)
        materials = [store.blobs.get(addendum.body[name]) for name in ("settings", "vk", "srs")]
    out.print(f"zk addendum {addendum.cid} for manifest {addendum.body['manifest']}")
    if node is not None:
        with Client(node) as remote:
            remote.publish_zk(addendum.data, materials)
        out.print(f"published on {node}")
    for name in ("settings", "vk", "srs"):
        out.print(f"{name:<9} {addendum.body[name]}")
    out.print(f"circuit   2^{addendum.body['logrows']} rows")
    if srs is None:
        err.print("the SRS was generated here: development only (verifiers refuse it unless told)")


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


# -- the local network --------------------------------------------------------------------------

devnet_app = typer.Typer(help="A local network of nodes on loopback.")
app.add_typer(devnet_app, name="devnet")
DirOption = Annotated[Path, typer.Option("--dir", help="the network's directory")]


def _nodes_table(nodes: list[dict[str, Any]]) -> Table:
    table = Table("node", "url", "pid", "up", "log size", "vkey")
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


# -- inference and verification -----------------------------------------------------------------


def _read_tensors(path: Path, what: str) -> dict[str, Any]:
    """Tensors from a .json (verinfer's JSON form), .npz or .npy file (named after the file)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} file {str(path)!r}: {exc.strerror}") from exc
    if path.suffix == ".json":
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise InputError(f"{what} file {str(path)!r} is not JSON: {exc}") from exc
        return tensors.decode_json(value)
    return tensors.decode_binary(data, name=path.stem)


def _read_trust(path: Path) -> list[str]:
    """Trusted vkeys, one per line; ``#`` starts a comment."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read trust file {str(path)!r}: {exc}") from exc
    found = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if text:
            try:
                found.append(note.VerifierKey.parse(text).vkey)
            except InputError as exc:
                raise InputError(f"trust file {str(path)!r} line {number}: {exc}") from exc
    if not found:
        raise InputError(f"trust file {str(path)!r} lists no keys")
    return found


def _read_witnesses(path: Path) -> tuple[list[str], dict[str, str]]:
    """Trusted witness keys and their operators (the caller's trust decision, §11), from a
    witness file (a vkey a line, optionally followed by its operator: a label, or the vkey of a
    node that operator runs; ``#`` starts a comment) or a network file (``{"nodes": [{"vkey",
    "witness", "operator"}]}``: each node's ``witness`` is trusted, of the node's ``operator``,
    by default the node's own key)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read witness file {str(path)!r}: {exc}") from exc
    keys: list[str] = []
    operators: dict[str, str] = {}
    if text.lstrip().startswith("{"):
        try:
            for node in json.loads(text)["nodes"]:
                if node.get("witness") is None:
                    continue
                vkey = note.VerifierKey.parse(str(node["vkey"])).vkey
                witness = note.VerifierKey.parse(str(node["witness"])).vkey
                operator = str(node.get("operator") or vkey)
                keys.append(witness)
                operators.update({witness: operator, vkey: operator})
        except (ValueError, KeyError, TypeError, AttributeError, InputError) as exc:
            raise InputError(f"network file {str(path)!r} is malformed: {exc}") from exc
    for number, line in enumerate([] if keys else text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise InputError(
                f"witness file {str(path)!r} line {number}: expected a vkey and optionally its "
                "operator"
            )
        try:
            key = note.VerifierKey.parse(fields[0]).vkey
        except InputError as exc:
            raise InputError(f"witness file {str(path)!r} line {number}: {exc}") from exc
        keys.append(key)
        if len(fields) == 2:
            operators[key] = fields[1]
    if not keys:
        raise InputError(f"witness file {str(path)!r} lists no witness keys")
    return keys, operators


PublisherOption = Annotated[
    list[str] | None,
    typer.Option(
        help="a publisher vkey trusted for its owner (the key's name), repeatable: then names "
        "resolve only to these keys (and only they endorse zk circuits)"
    ),
]
KnownPublishersOption = Annotated[
    Path | None,
    typer.Option(
        help="without --publisher: pin each owner's key on first use in this file (default "
        "$VERINFER_HOME/known_publishers.json) and refuse another key later"
    ),
]


def _notice(line: str) -> None:
    err.print(f"notice: {line}", markup=False, highlight=False)


def _published(
    bundle: Bundle, signed: bytes, publishers: Publishers, path: Path | None
) -> tuple[str, list[str]]:
    """(8) the receipt's signed manifest: the receipt names it, it is of the receipt's model,
    and its publisher is a key trusted for its owner. Returns the step's line and those keys."""
    receipt = bundle.receipt
    where = repr(str(path)) if path is not None else "the zk materials' manifest"
    if receipt["manifest"] is None:
        raise VerificationError(
            f"step 8 (publisher): the receipt names no manifest (the model was asked by CID), "
            f"so {where} is not its manifest"
        )
    try:
        cid.verify(str(receipt["manifest"]), signed)
    except VerificationError:
        raise VerificationError(
            f"step 8 (publisher): {where} is not the receipt's manifest {receipt['manifest']}"
        ) from None
    found = Manifest.from_bytes(signed, receipt["manifest"])
    if found.model != receipt["model"]:
        raise VerificationError("step 8 (publisher): the receipt's manifest is of another model")
    owner = found.repository.split("/")[0]
    try:
        publishers.check(owner, found.publisher, f"manifest {found.repository}@{found.version}")
    except VerificationError as exc:
        raise VerificationError(f"step 8 (publisher): {exc}") from exc
    line = (
        f"manifest {found.repository}@{found.version} of the receipt's model is published by a "
        f"trusted key of owner {owner!r}"
    )
    return line, publishers.keys_for(owner, found.publisher)


@app.command()
def infer(  # noqa: PLR0917 - a typer command: its options
    model: Annotated[str, typer.Argument(help="owner/name[@version|tag], or a model CID")],
    inputs: Annotated[Path, typer.Option(help="inputs: .json, .npz or .npy (named after it)")],
    bundle: Annotated[Path, typer.Option(help="where to write the proof bundle")] = Path(
        "bundle.json"
    ),
    outputs: Annotated[
        Path | None, typer.Option(help="also write the outputs (.json/.npz)")
    ] = None,
    nonce: Annotated[str | None, typer.Option(help="a fresh client nonce for the receipt")] = None,
    data: Annotated[
        Path | None, typer.Option(help="node data directory (default: $VERINFER_HOME/node)")
    ] = None,
    hub: HubOption = None,
    node: NodeOption = None,
    network: Annotated[
        Path | None, typer.Option(help="a network.json: any of its nodes answers")
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="attested, optimistic[:S] (challengeable for S s), replicated:K (K nodes must "
            "agree; needs --network), or zk"
        ),
    ] = "attested",
    witnesses: Annotated[
        Path | None, typer.Option(help="witness vkeys, one per line (with --quorum)")
    ] = None,
    quorum: Annotated[
        int,
        typer.Option(min=0, help="wait until this many of --witnesses cosigned the checkpoint"),
    ] = 0,
    allow_insecure_srs: Annotated[
        bool, typer.Option(help="zk: accept a locally generated SRS (development only)")
    ] = False,
    trusted_srs: Annotated[
        list[str] | None, typer.Option(help="zk: the CID of a trusted SRS (repeatable)")
    ] = None,
    zk_materials: Annotated[
        Path | None, typer.Option(help="zk: save the circuit materials here (files named by CID)")
    ] = None,
    public_audit: Annotated[
        bool,
        typer.Option(
            "--public-audit",
            help="let anyone read the inputs and outputs to audit the answer (the receipt says "
            "so); by default only you and the operator's auditors can",
        ),
    ] = False,
    publisher: PublisherOption = None,
    known_publishers: KnownPublishersOption = None,
) -> None:
    """Run a model (on a node, a network, or in process) and write its outputs and bundle.

    Answers from a node or a network are verified before anything is written; a name resolves
    only to a publisher key you trust for its owner (--publisher, or pinned on first use).
    """
    audit_choice = "public" if public_audit else "private"
    given = _read_tensors(inputs, "inputs")
    if quorum and (witnesses is None or (node is None and network is None)):
        raise InputError("--quorum needs --witnesses FILE and a --node or --network")
    if node is not None or network is not None:
        publishers = Publishers(publisher or (), known=known_publishers, notify=_notice)
        options: dict[str, Any] = {"trusted_publishers": publishers}  # one policy, every node
        if node is not None:  # the zero-knowledge SRS policy (networks take the default)
            options |= {"allow_insecure_srs": allow_insecure_srs, "trusted_srs": trusted_srs or []}
        with connect(node or network, **options) as remote:  # type: ignore[arg-type]
            waiting = err.status("proving…") if mode == "zk" else contextlib.nullcontext()
            with waiting:  # a zk proof takes seconds to minutes
                answer = remote.infer(model, given, mode=mode, nonce=nonce, audit=audit_choice)
            result_bundle = answer.bundle
            if zk_materials is not None and isinstance(remote, Client) and mode == "zk":
                zk_materials.mkdir(parents=True, exist_ok=True)
                for name, blob in remote.zk_materials(result_bundle).items():
                    (zk_materials / name).write_bytes(blob)
            if quorum and witnesses is not None:
                clients = remote.clients if isinstance(remote, Network) else [remote]
                answering = next(
                    c
                    for c in clients
                    if result_bundle.receipt["node"] in (c._trusted or [c.node_vkey()])
                )
                keys_given, operators = _read_witnesses(witnesses)
                result_bundle = answering.cosigned(
                    result_bundle, keys_given, quorum, operators=operators
                )
                err.print(f"cosigned by {quorum} trusted witnesses")
        outputs_got, signer_vkey = answer.outputs, result_bundle.receipt["node"]
    else:
        if replicas_of(mode) > 1:
            raise InputError(f"mode {mode!r} asks several nodes: give --network")
        with (
            _hub(hub) as store,
            Node(data or keys.home() / "node", hub=store) as local,
        ):
            result = local.infer(model, given, mode=mode, nonce=nonce, audit=audit_choice)
        outputs_got, result_bundle, signer_vkey = result.outputs, result.bundle, local.vkey
    bundle.write_text(result_bundle.to_json() + "\n")
    if outputs is not None:
        if outputs.suffix == ".npz":
            outputs.write_bytes(tensors.encode_binary(outputs_got))
        else:
            outputs.write_text(json.dumps(tensors.encode_json(outputs_got)) + "\n")
    out.print(json.dumps(tensors.encode_json(outputs_got)), markup=False)
    err.print(
        f"receipt {result_bundle.index} in the log of {signer_vkey}; bundle written to {bundle}"
        + (" (verified)" if node or network else "")
    )


@app.command()
def verify(  # noqa: PLR0917 - a typer command: its options
    bundle: Annotated[Path, typer.Argument(help="the bundle JSON file")],
    trust: Annotated[Path, typer.Option(help="trusted node vkeys, one per line")],
    inputs: Annotated[Path | None, typer.Option(help="check the inputs (.json/.npz/.npy)")] = None,
    outputs: Annotated[Path | None, typer.Option(help="check the outputs")] = None,
    model: Annotated[Path | None, typer.Option(help="check the model bytes (.onnx)")] = None,
    reexecute: Annotated[
        bool, typer.Option("--reexecute", help="run the model here and compare outputs")
    ] = False,
    witnesses: Annotated[
        Path | None,
        typer.Option(
            help="trusted witness vkeys, one per line, each optionally followed by its operator "
            "(a label, or a node vkey of that operator), or a network.json (each node's witness, "
            "of the node's operator); a log's own operator's witnesses never count (with --quorum)"
        ),
    ] = None,
    quorum: Annotated[
        int, typer.Option(min=0, help="require this many trusted witnesses' cosignatures")
    ] = 0,
    zk_materials: Annotated[
        Path | None,
        typer.Option(help="zk: a directory of the circuit materials, files named by their CID"),
    ] = None,
    trusted_srs: Annotated[
        list[str] | None, typer.Option(help="zk: the CID of a trusted SRS (repeatable)")
    ] = None,
    allow_insecure_srs: Annotated[
        bool, typer.Option(help="zk: accept an SRS that is not trusted (development only)")
    ] = False,
    manifest: Annotated[
        Path | None,
        typer.Option(
            help="the receipt's signed manifest: check it names the receipt's model and is "
            "signed by a publisher key trusted for its owner (zk: taken from --zk-materials)"
        ),
    ] = None,
    publisher: PublisherOption = None,
    known_publishers: KnownPublishersOption = None,
) -> None:
    """Verify a proof bundle offline. Exit 0 if valid, 1 with the failed step if not."""
    trusted = _read_trust(trust)
    if quorum and witnesses is None:
        raise InputError("--quorum needs --witnesses FILE")
    policy = _read_witnesses(witnesses) if witnesses else ([], {})
    try:
        text = bundle.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read bundle {str(bundle)!r}: {exc.strerror}") from exc
    parsed = Bundle.from_json(text)
    model_bytes = None
    if model is not None:
        try:
            model_bytes = model.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read model {str(model)!r}: {exc.strerror}") from exc
    materials = (
        {path.name: path.read_bytes() for path in zk_materials.iterdir() if path.is_file()}
        if zk_materials is not None
        else None
    )
    signed = _read_file(manifest, "manifest") if manifest is not None else None
    if signed is None and materials is not None:
        signed = materials.get(str(parsed.receipt["manifest"]))
    if signed is None and (publisher or known_publishers):
        raise InputError("--publisher and --known-publishers check the receipt's manifest: give "
                         "--manifest FILE (or --zk-materials DIR holding it)")  # fmt: skip
    publishers = Publishers(publisher or (), known=known_publishers, notify=_notice)
    endorsers: list[str] = []
    published = None
    if signed is not None:
        published, endorsers = _published(parsed, signed, publishers, manifest)
    verify_bundle(
        parsed,
        trusted,
        inputs=_read_tensors(inputs, "inputs") if inputs else None,
        outputs=_read_tensors(outputs, "outputs") if outputs else None,
        model=model_bytes,
        reexecute=reexecute,
        report=lambda line: out.print(f"[green]✓[/] {line}"),
        witnesses=policy[0],
        quorum=quorum,
        operators=policy[1],
        zk_materials=materials,
        zk_publishers=endorsers,
        trusted_srs=trusted_srs or (),
        allow_insecure_srs=allow_insecure_srs,
    )
    if published is not None:
        out.print(f"[green]✓[/] 8. {published}", highlight=False)
    out.print(
        f"[green]valid[/]: {parsed.receipt['mode']} answer of model {parsed.receipt['model']}"
    )


@app.command()
def challenge(  # noqa: PLR0917 - a typer command: its options
    bundle: Annotated[Path, typer.Argument(help="the bundle of an optimistic answer")],
    inputs: Annotated[Path, typer.Option(help="the answer's inputs (.json/.npz/.npy)")],
    challenger: Annotated[str, typer.Option(help="URL of the node that disputes the answer")],
    node: Annotated[str, typer.Option(help="URL of the node that referees the dispute")],
    defendant: Annotated[
        str | None, typer.Option(help="URL of the node that answered (else: a referee peer)")
    ] = None,
    deadline: Annotated[
        float, typer.Option(min=0.001, max=3600, help="seconds each side has per round")
    ] = 30.0,
    verdict: Annotated[Path, typer.Option(help="where to write the verdict")] = Path(
        "verdict.json"
    ),
) -> None:
    """Dispute an optimistic answer: the two nodes bisect the computation down to one operator,
    which the referee re-executes. The signed verdict is checked, written and summed up."""
    parsed = Bundle.from_json(_read_file(bundle, "bundle"))
    given = _read_tensors(inputs, "inputs")
    with Client(node) as referee, err.status("disputing…"):
        settled = referee.challenge(
            parsed, given, challenger=challenger, defendant=defendant, deadline=deadline
        )
    verdict.write_bytes(settled.data)
    _print_verdict(settled)
    err.print(f"verdict written to {verdict} (checked: re-executed step and signatures)")


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from exc


def _print_verdict(verdict: Verdict) -> None:
    body = verdict.body
    judgement = body.get("judgement") or {}
    out.print(f"[bold]{verdict.winner}[/] wins: {verdict.reason}", highlight=False)
    out.print(
        f"{len(body['rounds'])} rounds over {body['steps']} steps"
        + (f"; step {judgement['step']} ({judgement['op']}) judged" if judgement else ""),
        highlight=False,
    )
    out.print(f"loser: {body['dispute'][verdict.loser]}", highlight=False)


@app.command("verdict")
def verdict_check(
    file: Annotated[Path, typer.Argument(help="a verdict JSON file")],
    model: Annotated[Path, typer.Option(help="the disputed model's bytes (.onnx)")],
    referee: Annotated[
        Path | None, typer.Option(help="trusted referee vkeys, one per line")
    ] = None,
) -> None:
    """Check a dispute's verdict offline (re-executing its one step). Exit 0 and print the
    outcome, or 1 with why it does not hold."""
    checked = verify_verdict(
        _read_file(file, "verdict"),
        model=_read_file(model, "model"),
        referees=_read_trust(referee) if referee is not None else None,
    )
    _print_verdict(checked)


evidence_app = typer.Typer(help="Evidence of misbehaviour, checked offline.")
app.add_typer(evidence_app, name="evidence")


@evidence_app.command("verify")
def evidence_verify(
    file: Annotated[Path, typer.Argument(help="an evidence JSON file")],
    model: Annotated[
        Path | None, typer.Option(help="the model's bytes (.onnx): fraud evidence needs them")
    ] = None,
) -> None:
    """Check evidence offline. Exit 0 and print what it proves, or 1 with why it does not."""
    try:
        data = file.read_bytes()
        model_bytes = model.read_bytes() if model is not None else None
    except OSError as exc:
        raise InputError(f"cannot read {exc.filename!r}: {exc.strerror}") from exc
    out.print(f"[green]proven[/]: {verify_evidence(data, model=model_bytes)}")


@app.command()
def audit(  # noqa: PLR0917 - a typer command: its options
    network: Annotated[Path, typer.Option(help="the network.json of the nodes to audit")],
    rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of entries to re-run")],
    rounds: Annotated[int, typer.Option(min=1, help="audit rounds")] = 1,
    interval: Annotated[float, typer.Option(min=0.0, help="seconds between rounds")] = 5.0,
    out_dir: Annotated[
        Path, typer.Option("--out", help="where to write fraud evidence files")
    ] = Path("."),
    submit: Annotated[
        bool, typer.Option(help="submit fraud evidence to every node of the network")
    ] = False,
    tokens: Annotated[
        Path | None,
        typer.Option(
            help='auditor tokens, a JSON file {"<node url>": "<token>"} (mode 0600): without '
            "one a node's private receipts are skipped, not audited"
        ),
    ] = None,
) -> None:
    """Re-execute a random share of the nodes' new log entries; write fraud evidence.

    Without an auditor token for a node, only its public receipts (the requester allowed a
    public audit) are re-executed."""
    import time  # noqa: PLC0415

    from verinfer.audit import Auditor, read_tokens  # noqa: PLC0415 - runs models: lazy

    nodes = [(str(n["url"]), str(n["vkey"])) for n in devnet.read_file(network)]
    given = read_tokens(tokens) if tokens is not None else {}
    table = Table("node", "entry", "verdict", "detail", title="audit findings")
    frauds = 0
    try:
        auditor = Auditor(nodes, rate, tokens=given)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    with auditor:
        for number in range(rounds):
            if number:
                time.sleep(interval)
            for finding in auditor.round():
                detail = finding.detail
                if finding.evidence is not None:
                    frauds += 1
                    out_dir.mkdir(parents=True, exist_ok=True)
                    name = finding.node.split("+", 1)[0]
                    path = out_dir / f"fraud-{name}-{finding.index}.json"
                    path.write_text(json.dumps(finding.evidence) + "\n")
                    detail = f"{detail}; evidence in {path}"
                    if submit:
                        for url, _ in nodes:
                            with contextlib.suppress(httpx.HTTPError):
                                httpx.post(f"{url}/v1/evidence", json=finding.evidence, timeout=60)
                table.add_row(finding.node.split("+", 1)[0], str(finding.index),
                              finding.verdict, detail)  # fmt: skip
        audited, private = auditor.audited, auditor.private
    out.print(table)
    out.print(f"re-executed {audited} entries at rate {rate}; {frauds} frauds found")
    if private:
        why = "no auditor token" if not given else "no token, or a refused one, for their node"
        out.print(f"{private} sampled entries were private ({why}): not audited")


def main() -> None:
    """Entry point: verinfer errors become exit code 1 with the reason on stderr."""
    try:
        app()
    except Error as exc:
        err.print(f"error: {exc}")
        sys.exit(1)
