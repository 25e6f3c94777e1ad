"""Evidence of misbehaviour: self-contained documents anyone can check offline, with no trust in
whoever found them. Pure: no I/O.

- ``equivocation``: one log key signed two checkpoints of the same origin and size with
  different roots, i.e. two different histories (a split view).
"""

from __future__ import annotations

import json
from typing import Any

from verinfer import note
from verinfer.errors import InputError, VerificationError

__all__ = ["EVIDENCE_TYPE", "equivocation", "verify_evidence"]

EVIDENCE_TYPE = "verinfer.evidence/v1"
_MAX_BYTES = 1 << 20


def equivocation(origin: str, vkey: str, first: str, second: str) -> dict[str, Any]:
    """Equivocation evidence: two signed checkpoints of ``origin`` of one size, two roots."""
    return {
        "type": EVIDENCE_TYPE,
        "kind": "equivocation",
        "log": origin,
        "vkey": vkey,
        "checkpoints": [first, second],
    }


def verify_evidence(document: str | bytes | dict[str, Any]) -> str:
    """Check evidence; return the verdict it proves, or raise :class:`VerificationError`."""
    if isinstance(document, str | bytes):
        if len(document) > _MAX_BYTES:
            raise VerificationError(f"malformed evidence: larger than {_MAX_BYTES} bytes")
        try:
            document = json.loads(document)
        except (ValueError, RecursionError) as exc:
            raise VerificationError(f"malformed evidence: {exc}") from exc
    fields = {"type", "kind", "log", "vkey", "checkpoints"}
    if not isinstance(document, dict) or set(document) != fields:
        found = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise VerificationError(f"malformed evidence: fields {found!r}")
    if document["type"] != EVIDENCE_TYPE or document["kind"] != "equivocation":
        raise VerificationError(f"unsupported evidence {document['type']!r} / {document['kind']!r}")
    vkey, origin, pair = document["vkey"], document["log"], document["checkpoints"]
    if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(c, str) for c in pair):
        raise VerificationError("malformed evidence: checkpoints must be two signed notes")
    if not isinstance(vkey, str) or not isinstance(origin, str):
        raise VerificationError("malformed evidence: log and vkey must be strings")
    try:
        (a, _), (b, _) = (note.verify_checkpoint(c, [vkey], origin=origin) for c in pair)
    except (VerificationError, InputError) as exc:
        raise VerificationError(f"evidence does not verify: {exc}") from exc
    if a.size != b.size:
        raise VerificationError(f"the checkpoints have sizes {a.size} and {b.size}, not one size")
    if a.root == b.root:
        raise VerificationError(f"the two checkpoints of size {a.size} have the same root")
    return (
        f"log {origin!r} (key {vkey}) signed two different trees of size {a.size}: "
        f"roots {a.root.hex()} and {b.root.hex()}"
    )
