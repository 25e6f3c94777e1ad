"""What every sub-app of the ``verinfer`` command shares: the app, its consoles, and the
readers that turn files and flags into tensors, keys and trust decisions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from verinfer import cid, keys, note, tensors
from verinfer.client import Publishers
from verinfer.errors import InputError, VerificationError
from verinfer.hub import Hub, Manifest
from verinfer.modes.dispute import Verdict
from verinfer.verify import Bundle, TrustRoot

app = typer.Typer(
    name="verinfer",
    help="Verifiable inference: every answer comes with a proof anyone can check offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: flags without "<bool>", no markup in help text
)
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False, soft_wrap=True)


# -- inference and verification -----------------------------------------------------------------


def _read_tensors(path: Path, what: str, *, plain: bool = False) -> dict[str, Any]:
    """Tensors from a .json (verinfer's JSON form), .npz or .npy file (named after the file).

    ``plain``: a .json tensor may also be plain nested lists, ``{"x": [[5.1, 3.5]]}``, kept as
    lists for the model's signature to type (:func:`verinfer.tensors.from_plain`)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} file {str(path)!r}: {exc.strerror}") from exc
    if path.suffix == ".json":
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise InputError(f"{what} file {str(path)!r} is not JSON: {exc}") from exc
        if plain and isinstance(value, dict) and value:
            lists = {k: v for k, v in value.items() if tensors.is_plain(v)}
            explicit = {k: v for k, v in value.items() if k not in lists}
            return {**(tensors.decode_json(explicit) if explicit else {}), **lists}
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


def _read_trust_root(path: Path) -> TrustRoot:
    """A trust root file (``verinfer.trust/v1`` JSON), or a trust file of node vkeys."""
    try:
        head = path.read_bytes()[:64].lstrip()
    except OSError as exc:
        raise InputError(f"cannot read trust file {str(path)!r}: {exc.strerror}") from exc
    if not head.startswith(b"{"):
        return TrustRoot.of(_read_trust(path))
    root = TrustRoot.from_file(path)
    if not root.nodes:
        raise InputError(f"trust root {str(path)!r} lists no node keys")
    return root


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


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from exc


KeyOption = Annotated[str, typer.Option("--key", help="key file name in the key directory")]
HubOption = Annotated[
    Path | None, typer.Option("--hub", help="hub data directory (default: $VERINFER_HOME/hub)")
]
NodeOption = Annotated[
    str | None, typer.Option("--node", help="act on a node (URL) instead of the local hub")
]
SourceNodeOption = Annotated[str | None, typer.Option("--node", help="the node (URL) to pull from")]


def _hub(path: Path | None) -> Hub:
    return Hub(path or keys.home() / "hub")


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
