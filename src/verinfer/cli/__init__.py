"""The ``verinfer`` command: one sub-app per concern, each turning flags into the SDK's trust and
policy objects and calling public names only.

Exit codes: 0 success, 1 a verification or operation failed (reason on stderr), 2 usage error.
"""

from __future__ import annotations

import sys

from verinfer.cli import demo, devnet, inference, keys, models, node, text, verification
from verinfer.cli._app import app, err
from verinfer.errors import Error

__all__ = ["app", "main"]
_COMMANDS = (
    demo,
    devnet,
    inference,
    keys,
    models,
    node,
    text,
    verification,
)  # each registers its own


def main() -> None:
    """Entry point: verinfer errors become exit code 1 with the reason on stderr."""
    try:
        app()
    except Error as exc:
        err.print(f"error: {exc}")
        sys.exit(1)
