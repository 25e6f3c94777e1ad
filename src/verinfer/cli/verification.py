"""``verinfer verify``, ``verdict`` and ``evidence``: check answers offline."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from verinfer.cli._app import (
    KnownPublishersOption,
    PublisherOption,
    _notice,
    _print_verdict,
    _published,
    _read_file,
    _read_tensors,
    _read_trust,
    _read_trust_root,
    _read_witnesses,
    app,
    out,
)
from verinfer.client import Publishers
from verinfer.errors import InputError
from verinfer.modes.dispute import verify_verdict
from verinfer.verify import (
    AcceptPromise,
    AllOf,
    Bundle,
    Claims,
    Policy,
    Reexecute,
    UnsafeLocalSrs,
    Verifier,
    WitnessQuorum,
)
from verinfer.verify.evidence import verify_evidence


@app.command()
def verify(  # noqa: PLR0917 - a typer command: its options
    bundle: Annotated[Path, typer.Argument(help="the bundle JSON file")],
    trust: Annotated[
        Path,
        typer.Option(
            help="trusted node vkeys, one per line, or a trust root (verinfer.trust/v1 JSON: "
            "nodes, witnesses and their operators, publishers, SRS)"
        ),
    ],
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
    accept_promise: Annotated[
        bool,
        typer.Option(
            "--accept-promise",
            help="accept a node's signed promise to log the receipt (not yet in its log; "
            "reported as a promise); without it a promise fails: `verinfer upgrade` it",
        ),
    ] = False,
) -> None:
    """Verify a proof bundle offline. Exit 0 if valid, 1 with the failed step if not."""
    root = _read_trust_root(trust)
    if quorum and witnesses is None and not root.witnesses:
        raise InputError("--quorum needs --witnesses FILE (or witnesses in the trust root)")
    if witnesses is not None:
        found, operators = _read_witnesses(witnesses)
        root = replace(
            root, witnesses=root.witnesses + tuple(found), operators={**operators, **root.operators}
        )  # the root's labels win
    parsed = Bundle.from_json(_read_file(bundle, "bundle"))
    model_bytes = _read_file(model, "model") if model is not None else None
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
    if signed is None and root.publishers and parsed.receipt["manifest"] is not None:
        _notice("the trust root names publishers, but step 8 (the receipt's manifest and its "
                "publisher) needs --manifest FILE: not checked")  # fmt: skip
    trusted_publishers = [*root.publishers, *(publisher or ())]
    publishers = Publishers(trusted_publishers, known=known_publishers, notify=_notice)
    endorsers: list[str] = []
    published = None
    if signed is not None:
        published, endorsers = _published(parsed, signed, publishers, manifest)
    root = replace(root, publishers=tuple(endorsers), srs=root.srs + tuple(trusted_srs or ()))
    policy: list[Policy] = [WitnessQuorum(quorum)] if quorum else []
    policy += [Reexecute()] if reexecute else []
    policy += [UnsafeLocalSrs()] if allow_insecure_srs else []
    policy += [AcceptPromise()] if accept_promise else []
    claims = Claims(
        inputs=_read_tensors(inputs, "inputs") if inputs else None,
        outputs=_read_tensors(outputs, "outputs") if outputs else None,
        model=model_bytes,
        materials=materials,
    )
    Verifier(root).verify(
        parsed, claims, AllOf(policy), report=lambda line: out.print(f"[green]✓[/] {line}")
    )
    if published is not None:
        out.print(f"[green]✓[/] 8. {published}", highlight=False)
    state = " (a PROMISE: not yet in the node's log)" if parsed.promised else ""
    out.print(
        f"[green]valid[/]: {parsed.receipt['mode']} answer of model {parsed.receipt['model']}"
        + state
    )


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
        Path | None,
        typer.Option(
            help="the model's bytes (.onnx): fraud and generation-fraud evidence need them"
        ),
    ] = None,
) -> None:
    """Check evidence offline. Exit 0 and print what it proves, or 1 with why it does not."""
    try:
        data = file.read_bytes()
        model_bytes = model.read_bytes() if model is not None else None
    except OSError as exc:
        raise InputError(f"cannot read {exc.filename!r}: {exc.strerror}") from exc
    verdict = verify_evidence(data, model=model_bytes)
    out.print(f"[green]proven[/]: {verdict}")
