"""``attested``: one node's signed receipt in its public log, nothing more. The answer is as
good as the node; what makes lying costly is that the receipt is logged and signed."""

from __future__ import annotations

from dataclasses import dataclass

from verinfer.modes._base import Mode

__all__ = ["Attested"]


@dataclass(frozen=True)
class Attested(Mode):
    """A signed, logged receipt; no evidence."""

    syntax = "attested"
    serves_text = True
