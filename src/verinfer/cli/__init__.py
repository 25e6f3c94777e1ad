"""The ``verinfer`` command: one sub-app per concern, each turning flags into the SDK's trust and
policy objects and calling public names only.

Exit codes: 0 success, 1 a verification or operation failed (reason on stderr), 2 usage error.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from typing import Annotated, Any

import typer

from verinfer.cli import demo, devnet, example, inference, keys, models, node, text, verification
from verinfer.cli._app import app, err
from verinfer.errors import Error

__all__ = ["app", "main"]
_COMMANDS = (
    demo,
    devnet,
    example,
    inference,
    keys,
    models,
    node,
    text,
    verification,
)  # each registers its own


_METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "file": "FILE"}


def _metavar(param: Any) -> str:
    """``TEXT``, ``INTEGER``, ``PATH``, ``[a|b]``: what an option's value is, as click says it."""
    descriptor = getattr(param, "type_descriptor", None)
    choices = getattr(descriptor, "choices", None)
    if choices:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in choices) + "]"
    try:
        label = str(param.display_type(None)).strip("<>")
    except Exception:  # typer internals: the plain fallback is always right
        return "VALUE"
    label = label.removeprefix("list[").removesuffix("]")
    return _METAVARS.get(label, label.upper())


def _plain_metavars(command: Any) -> None:
    """Help as click writes it, ``--tag TEXT`` and ``FILE``: typer renders Python types
    (``<str>``, ``<list[str]>``, ``{file}``), which read as if flags took such values.
    (typer vendors its own click: its classes are matched by their ``param_type_name``.)"""
    for param in command.params:
        if param.metavar is not None:
            continue
        if param.param_type_name == "argument":
            name = (param.name or "value").upper()
            param.metavar = name
            usage = name if param.required else f"[{name}]"  # typer writes {name}
            param._usage_display_name = lambda usage=usage: usage
            param.display_type_rich = lambda ctx: None  # "FILE", not "FILE <file>"
        elif param.param_type_name == "option" and not param.is_flag:
            param.metavar = _metavar(param)
    for child in getattr(command, "commands", {}).values():
        _plain_metavars(child)


def _version(value: bool) -> None:
    if value:
        print(f"verinfer {version('verinfer')}")
        raise typer.Exit


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Verifiable inference: every answer comes with a proof anyone can check offline."""


def main() -> None:
    """Entry point: verinfer errors become exit code 1 with the reason on stderr."""
    command = typer.main.get_command(app)
    _plain_metavars(command)
    try:
        command(prog_name="verinfer")
    except Error as exc:
        err.print(f"error: {exc}", markup=False)  # no Rich markup: "verinfer[demo]" stays
        sys.exit(1)
