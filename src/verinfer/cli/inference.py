"""``verinfer infer``, ``challenge`` and ``audit``: ask nodes, and hold them to account."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer
from rich.table import Table

from verinfer import devnet, keys, modes, tensors
from verinfer.cli._app import (
    HubOption,
    KnownPublishersOption,
    NodeOption,
    PublisherOption,
    _hub,
    _notice,
    _print_verdict,
    _read_file,
    _read_tensors,
    _read_trust_root,
    _read_witnesses,
    app,
    err,
    out,
)
from verinfer.client import Client, Network, Publishers, connect
from verinfer.errors import InputError, VerificationError
from verinfer.node import Node
from verinfer.verify import Bundle, replicas_of


@app.command()
def infer(  # noqa: PLR0917 - a typer command: its options
    model: Annotated[str, typer.Argument(help="owner/name[@version|tag], or a model CID")],
    inputs: Annotated[
        Path,
        typer.Option(
            help="inputs: .json (verinfer's JSON form, or plain lists typed by the model's "
            'signature: {"X": [[5.1, 3.5, 1.4, 0.2]]}), .npz, or .npy (named after the file)'
        ),
    ],
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
    durability: Annotated[
        str,
        typer.Option(
            help="durable (the answer waits for the receipt to be in the log) or promise (the "
            "node answers at once with its signed promise to log it; `verinfer upgrade` later)"
        ),
    ] = "durable",
) -> None:
    """Run a model (on a node, a network, or in process) and write its outputs and bundle.

    Answers from a node or a network are verified before anything is written; a name resolves
    only to a publisher key you trust for its owner (--publisher, or pinned on first use).
    """
    if durability not in ("durable", "promise"):
        raise InputError(f"--durability {durability!r} is not one of durable, promise")
    if quorum and durability != "durable":
        raise InputError("--quorum needs a logged receipt: upgrade the promise with it instead")
    audit_choice = "public" if public_audit else "private"
    if node is not None and network is not None:
        raise InputError("give --node URL or --network FILE, not both")
    given = _read_tensors(inputs, "inputs", plain=True)
    if quorum and (witnesses is None or (node is None and network is None)):
        raise InputError("--quorum needs --witnesses FILE and a --node or --network")
    if node is not None or network is not None:
        publishers = Publishers(publisher or (), known=known_publishers, notify=_notice)
        options: dict[str, Any] = {"trusted_publishers": publishers}  # one policy, every node
        if node is not None:  # the zero-knowledge SRS policy (networks take the default)
            options |= {"allow_insecure_srs": allow_insecure_srs, "trusted_srs": trusted_srs or []}
        with connect(node or network, **options) as remote:  # type: ignore[arg-type]
            waiting = (
                err.status("proving…") if modes.parse(mode).proven else contextlib.nullcontext()
            )
            with waiting:  # a zk proof takes seconds to minutes
                answer = remote.infer(
                    model, given, mode=mode, nonce=nonce, audit=audit_choice, durability=durability
                )
            result_bundle = answer.bundle
            if zk_materials is not None and isinstance(remote, Client) and result_bundle.zk_proof:
                zk_materials.mkdir(parents=True, exist_ok=True)
                for name, blob in remote.zk_materials(result_bundle).items():
                    (zk_materials / name).write_bytes(blob)
            if quorum and witnesses is not None:
                clients = remote.clients if isinstance(remote, Network) else [remote]
                answering = next(
                    c
                    for c in clients
                    if result_bundle.receipt["node"] in (c.trusted_nodes or [c.node_vkey()])
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
            if not all(isinstance(v, np.ndarray) for v in given.values()):  # plain lists
                given = tensors.from_plain(given, local.resolve(model).body["inputs"])
            result = local.infer(
                model, given, mode=mode, nonce=nonce, audit=audit_choice, durability=durability
            )
        outputs_got, result_bundle, signer_vkey = result.outputs, result.bundle, local.vkey
    bundle.write_text(result_bundle.to_json() + "\n")
    _write_outputs(outputs_got, outputs)
    where = "promised as entry" if result_bundle.promised else "receipt"
    err.print(
        f"{where} {result_bundle.index} in the log of {signer_vkey}; bundle written to {bundle}"
        + (" (verified)" if node or network else "")
        + (f"; upgrade it: verinfer upgrade {bundle} --node URL" if result_bundle.promised else "")
    )


def _write_outputs(found: dict[str, np.ndarray], path: Path | None) -> None:
    """To ``path`` (.npz, else JSON) only, or printed (squeezenet's are 27 KB)."""
    if path is None:
        out.print(json.dumps(tensors.encode_json(found)), markup=False)
        return
    if path.suffix == ".npz":
        path.write_bytes(tensors.encode_binary(found))
    else:
        path.write_text(json.dumps(tensors.encode_json(found)) + "\n")
    err.print(f"outputs written to {path}")


@app.command()
def upgrade(  # noqa: PLR0917 - a typer command: its options
    bundle: Annotated[Path, typer.Argument(help="a promise bundle (from --durability promise)")],
    node: Annotated[str, typer.Option(help="URL of the node that made the promise")],
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="where to write the logged bundle (default: BUNDLE)"),
    ] = None,
    witnesses: Annotated[
        Path | None, typer.Option(help="witness vkeys, one per line (with --quorum)")
    ] = None,
    quorum: Annotated[
        int, typer.Option(min=0, help="also wait until this many of --witnesses cosigned")
    ] = 0,
    timeout: Annotated[float, typer.Option(min=0.0, help="seconds to wait for the log")] = 15.0,
    evidence: Annotated[
        Path, typer.Option(help="where to write the evidence if the promise was broken")
    ] = Path("broken-promise.json"),
    trust: Annotated[
        Path | None,
        typer.Option(
            help="trusted node vkeys, one per line, or a trust root: without it the bundle is "
            "checked under the key it names, which proves consistency, not who answered"
        ),
    ] = None,
) -> None:
    """Turn a node's signed promise into the logged bundle: the receipt's inclusion proof
    against a checkpoint that covers it (cosigned with --quorum), verified here. If the log
    holds another receipt where one was promised, write the evidence that proves it and exit 1.
    """
    from verinfer.client import BrokenPromiseError  # noqa: PLC0415

    parsed = Bundle.from_json(_read_file(bundle, "bundle"))
    if quorum and witnesses is None:
        raise InputError("--quorum needs --witnesses FILE")
    keys_given, operators = _read_witnesses(witnesses) if witnesses is not None else ([], {})
    named = parsed.receipt["node"]
    trusted = list(_read_trust_root(trust).nodes) if trust is not None else [named]
    if named not in trusted:
        raise VerificationError(f"the bundle's node {named!r} is not a trusted key")
    with Client(node, trusted_vkeys=trusted) as remote:
        try:
            logged = remote.upgrade(
                parsed,
                timeout=timeout,
                witnesses=keys_given,
                quorum=quorum,
                operators=operators,
            )
        except BrokenPromiseError as exc:
            evidence.write_text(json.dumps(exc.evidence) + "\n")
            err.print(f"evidence written to {evidence} (check it: verinfer evidence verify)")
            raise
    target = out_path or bundle
    target.write_text(logged.to_json() + "\n")
    err.print(
        f"receipt is entry {logged.index} of the log of {named}; logged bundle written to "
        f"{target} "
        + ("(verified)" if trust is not None else "(verified under the key the bundle names: "
           "give --trust to know whose log it is)")
    )  # fmt: skip


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


def _bundle_files(paths: list[Path]) -> list[Path]:
    """The files named, and the ``*.json`` files of the folders named."""
    found = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.glob("*.json")))
        else:
            found.append(path)
    return found


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
    promises: Annotated[
        list[Path] | None,
        typer.Option(
            help="a bundle in promise mode (from --durability promise), or a folder of them, to "
            "hold its node to (repeatable): kept, broken (evidence written) or overdue"
        ),
    ] = None,
) -> None:
    """Re-execute a random share of the nodes' new log entries; write fraud evidence.

    Without an auditor token for a node, only its public receipts (the requester allowed a
    public audit) are re-executed. With --promises, also look for broken promises."""
    import time  # noqa: PLC0415

    from verinfer.audit import Auditor, read_tokens  # noqa: PLC0415 - runs models: lazy

    nodes = [(str(n["url"]), str(n["vkey"])) for n in devnet.read_file(network)]
    given = read_tokens(tokens) if tokens is not None else {}
    table = Table("node", "entry", "verdict", "detail", title="audit findings")
    frauds = broken = 0
    try:
        auditor = Auditor(nodes, rate, tokens=given)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    with auditor:
        for path in _bundle_files(promises or []):
            try:
                auditor.watch(Bundle.from_json(_read_file(path, "bundle")))
            except VerificationError as exc:
                raise InputError(f"{path}: {exc}") from exc
        for number in range(rounds):
            if number:
                time.sleep(interval)
            for finding in auditor.round():
                detail = finding.detail
                if finding.evidence is not None:
                    frauds += finding.verdict == "fraud"
                    broken += finding.verdict == "broken-promise"
                    out_dir.mkdir(parents=True, exist_ok=True)
                    name = finding.node.split("+", 1)[0]
                    path = out_dir / f"{finding.evidence['kind']}-{name}-{finding.index}.json"
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
    if promises:
        out.print(f"{broken} broken promises found; {auditor.watching} not logged yet (due or "
                  "overdue): audit them again later")  # fmt: skip
    if private:
        why = "no auditor token" if not given else "no token, or a refused one, for their node"
        out.print(f"{private} sampled entries were private ({why}): not audited")
