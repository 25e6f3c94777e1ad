"""``verinfer model``: publish, find, fetch and check models."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from verinfer import keys
from verinfer.cli._app import (
    HubOption,
    KeyOption,
    NodeOption,
    SourceNodeOption,
    _hub,
    app,
    err,
    out,
)
from verinfer.client import Client
from verinfer.errors import Error, InputError
from verinfer.hub import Hub, Manifest
from verinfer.node.peers import HttpSource

# -- models -------------------------------------------------------------------------------------

model_app = typer.Typer(help="Publish, find, fetch and check models.")
app.add_typer(model_app, name="model")

_PROGRESS_FROM = 4 << 20  # show a progress bar for files above 4 MiB


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
        + (f" ({determinism['error']})" if "error" in determinism else "")
        + (f"; probed with {determinism['inputs']} inputs" if "inputs" in determinism else ""),
    }
    tolerance = determinism.get("tolerance")
    if tolerance is not None:  # calibrated across CPU kernel classes at publish
        rows["tolerance"] = f"abs {tolerance['abs']:.3g} across kernel classes " + ", ".join(
            tolerance.get("classes", [])
        )
    if body.get("finite_inputs"):
        rows["inputs allowed"] = "finite values only (the publisher refuses NaN and infinity)"
    if "analysis" in body:
        rows["checker"] = body["analysis"]["checker"]
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
    finite_inputs: Annotated[
        bool,
        typer.Option(
            "--finite-inputs",
            help="declare that nodes refuse inputs holding NaN or infinity (by default they are "
            "data like any other value)",
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
                finite_inputs=finite_inputs,
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
            finite_inputs=finite_inputs,
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
    node: SourceNodeOption = None,
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


def _dims(given: list[str]) -> dict[str, int]:
    """``NAME=N`` bindings of dimensions."""
    dims = {}
    for item in given:
        name, sep, value = item.rpartition("=")
        if not sep or not name or not value.isdigit():
            raise InputError(f"--dim {item!r}: write NAME=N, e.g. N=8 or X:0=8")
        dims[name] = int(value)
    return dims


@model_app.command("zk-setup")
def model_zk_setup(  # noqa: PLR0917 - a typer command: its options
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
    dim: Annotated[
        list[str] | None,
        typer.Option(
            help="bind a dimension that is not fixed, NAME=N (a symbolic name, or INPUT:AXIS "
            "for any one; repeatable; default 1): a circuit has fixed shapes, and nodes refuse "
            "zk requests of other shapes"
        ),
    ] = None,
) -> None:
    """Build a model's zero-knowledge circuit and publish your endorsement of it."""
    signer = keys.load(key)
    dims = _dims(dim or [])
    if srs is not None and not srs.is_file():
        raise InputError(f"the SRS file {str(srs)!r} does not exist (omit --srs for a local one)")
    with _hub(hub) as store, err.status("building the circuit and its keys…"):
        addendum = store.zk_setup(ref, signer, srs=srs.read_bytes() if srs else None, dims=dims)
        materials = [store.blobs.get(addendum.body[name]) for name in ("settings", "vk", "srs")]
    out.print(f"zk addendum {addendum.cid} for manifest {addendum.body['manifest']}")
    if node is not None:
        with Client(node) as remote:
            remote.publish_zk(addendum.data, materials)
        out.print(f"published on {node}")
    for name in ("settings", "vk", "srs"):
        out.print(f"{name:<9} {addendum.body[name]}")
    out.print(f"circuit   2^{addendum.body['logrows']} rows")
    for name, shape in addendum.body.get("shapes", {}).items():
        out.print(f"input     {name} bound to shape {shape}", markup=False)
    if srs is None:
        err.print("the SRS was generated here: development only (verifiers refuse it unless told)")
