"""``verinfer key``: signing keys."""

from __future__ import annotations

from typing import Annotated

import typer

from verinfer import keys
from verinfer.cli._app import KeyOption, app, out

# -- keys ---------------------------------------------------------------------------------------

key_app = typer.Typer(help="Signing keys (in $VERINFER_HOME/keys, default ~/.verinfer/keys).")
app.add_typer(key_app, name="key")


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
