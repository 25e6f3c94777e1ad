"""The two steps every bundle passes whatever its mode: (1) a checkpoint signed by the trusted
node key the receipt names, for the receipt's log, and (2) the receipt's inclusion in that
checkpoint's tree. Pure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from verinfer import merkle, note
from verinfer.errors import Error, VerificationError
from verinfer.note import Checkpoint

if TYPE_CHECKING:
    from verinfer.verify.bundle import Bundle

__all__ = ["Report", "checkpoint_of", "inclusion", "public_key"]

Report = Callable[[str], None]
"""Called with a line describing each step that passed."""


def checkpoint_of(bundle: Bundle, trusted: Sequence[str]) -> Checkpoint:
    """(1) the checkpoint is signed by a trusted node key, the one the receipt names."""
    receipt = bundle.receipt
    if receipt["node"] not in trusted:
        raise VerificationError(
            f"step 1 (checkpoint): the receipt's node {receipt['node']!r} is not a trusted key"
        )
    try:
        checkpoint, _ = note.verify_checkpoint(bundle.checkpoint, [receipt["node"]])
    except (VerificationError, Error) as exc:
        raise VerificationError(f"step 1 (checkpoint): {exc}") from exc
    if checkpoint.origin != receipt["log"]:
        raise VerificationError(
            f"step 1 (checkpoint): checkpoint of log {checkpoint.origin!r}, receipt names "
            f"{receipt['log']!r}"
        )
    return checkpoint


def inclusion(bundle: Bundle, checkpoint: Checkpoint) -> None:
    """(2) the receipt's exact bytes are a leaf of the tree the checkpoint signs."""
    try:
        merkle.verify_inclusion(
            merkle.leaf_hash(bundle.receipt.data),
            bundle.index,
            checkpoint.size,
            list(bundle.proof),
            checkpoint.root,
        )
    except VerificationError as exc:
        raise VerificationError(f"step 2 (inclusion): {exc}") from exc


def public_key(vkey: str) -> str:
    """The key material of a vkey ``name+hash+key`` (its name could be chosen freely); the key's
    base64 may itself hold ``+``, so it is everything after the second ``+``."""
    return vkey.split("+", 2)[-1]
