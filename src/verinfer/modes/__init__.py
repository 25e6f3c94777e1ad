"""Verification modes, one module each, as one family.

A mode is parsed from its text by :func:`parse` and then asked, never compared as a string:
how many nodes answer it (:attr:`Mode.nodes`), what its bundle's evidence is
(:meth:`Mode.evidence`), how that evidence is checked offline (:meth:`Mode.check_evidence`,
:meth:`Mode.check_claims`), and what a node must do for it (:attr:`Mode.rerun_judged`,
:attr:`Mode.proven`, :meth:`Mode.stated`).

- :mod:`~verinfer.modes.attested`: a signed receipt in the node's log;
- :mod:`~verinfer.modes.replicated`: K nodes agree (and the one ``within_tolerance`` rule);
- :mod:`~verinfer.modes.optimistic`: open to challenge, settled by
  :mod:`~verinfer.modes.dispute`'s game;
- :mod:`~verinfer.modes.zk`: a zero-knowledge proof of the endorsed circuit.

Adding a mode is adding a module with a :class:`Mode` subclass and listing it in
:data:`FAMILY`.
"""

from __future__ import annotations

from verinfer.errors import InputError
from verinfer.modes._base import NO_EVIDENCE, Claims, Context, Evidence, Mode
from verinfer.modes.attested import Attested
from verinfer.modes.optimistic import Optimistic
from verinfer.modes.replicated import Replicated
from verinfer.modes.zk import Zk

__all__ = [
    "FAMILY",
    "MODES",
    "NO_EVIDENCE",
    "Attested",
    "Claims",
    "Context",
    "Evidence",
    "Mode",
    "Optimistic",
    "Replicated",
    "Zk",
    "parse",
]

FAMILY: tuple[type[Mode], ...] = (Attested, Replicated, Optimistic, Zk)
MODES = tuple(family.syntax for family in FAMILY)  # K = 2..16 distinct nodes agree;
# S = the challenge window in seconds; a receipt always states it ("optimistic:86400")


def parse(text: object, *, receipt: bool = False) -> Mode:
    """The mode ``text`` names; :class:`InputError` naming the modes available otherwise.
    ``receipt``: as a receipt states it (an optimistic receipt states its window)."""
    if isinstance(text, str):
        for family in FAMILY:
            found = family.parse(text, receipt=receipt)
            if found is not None:
                return found
    raise InputError(
        f"mode {text!r} is not available; available: attested, replicated:K (K = 2..16), "
        "optimistic[:S] (a challenge window of S = 10..31536000 seconds), zk"
    )
