"""Signed promises: a node's answer before its receipt is durable in its log. Pure: no I/O.

Certificate Transparency's signed certificate timestamp, for receipts: the node answers as soon
as the outputs exist with a signed statement that receipts *will* be entries of its log by
``deadline`` (the node's maximum merge delay). One statement covers a batch: the receipts a worker
answered together, promised as entries ``index`` to ``index + count - 1`` in order, bound by the
RFC 9162 Merkle tree hash of their leaf hashes (``root``). The node signs once per batch, and each
answer carries the batch statement and its receipt's inclusion proof in the batch's tree (the
bundle's ``proof``; empty for a batch of one, whose root is the receipt's leaf hash). The statement
is a C2SP signed note, signed by the node's log key, whose text is one line of RFC 8785 canonical
JSON::

    {"count":3,"deadline":1764892800,"index":41,"log":"<the log's origin>",
     "node":"<the node's vkey>","root":"<base64 tree hash>","type":"verinfer.promise/v1"}

Every field is covered by the signature; each receipt is bound through its leaf hash and its path
to ``root`` (a second preimage of SHA-256 would be needed to bind another leaf at a position), so
the promise stays small and the receipt's bytes are the ones that will be logged. The path shows
the holder the leaf hashes of the other receipts of its batch, which the log will publish anyway.
The text is one line, so it can never parse as a checkpoint (three or more lines, the second a
decimal size), and its ``type`` tells it from the other JSON documents a node signs.

A promise is kept when a signed checkpoint of size > the entry's index holds the receipt's leaf
there (the upgrade: :meth:`verinfer.client.Client.upgrade`). It is provably broken by a checkpoint
of the same log and key, of size > the index, with an inclusion proof of *another* leaf at that
index (:func:`verinfer.verify.evidence.broken_promise`): conclusive at any time, since a log is
append-only and entry ``index`` can never become the promised one, so no clock is needed. A tree
too small proves nothing (docs/PROTOCOL.md, section 15): a promise past its deadline that no
checkpoint covers yet is *overdue*, a fault but not evidence.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from verinfer import canonical, merkle, note
from verinfer.errors import InputError, VerificationError

__all__ = ["PROMISE_TYPE", "Promise", "open_promise", "open_promise_of", "sign_promise"]

PROMISE_TYPE = "verinfer.promise/v1"
_FIELDS = {"type", "log", "node", "index", "count", "root", "deadline"}
_MAX_INT = (1 << 53) - 1  # I-JSON's safe integers: canonical JSON has no larger ones
MAX_BATCH = 1 << 16  # receipts one promise may cover (a path of at most 16 hashes)
# a JSON string of these characters is its own canonical form: nothing to escape
_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
# the fields in RFC 8785 order: the text of every batch in promise mode, without the encoder
_TEMPLATE = (
    '{"count":%d,"deadline":%d,"index":%d,"log":"%s","node":"%s","root":"%s","type":"'
    + PROMISE_TYPE
    + '"}\n'
)


@dataclass(frozen=True)
class Promise:
    """A verified promise: node ``node`` will log leaf hash ``leaf`` as entry ``index`` of log
    ``log`` by ``deadline`` (Unix seconds). ``signed`` is the signed note (of the whole batch)
    and ``path`` the leaf's inclusion proof in the batch's tree."""

    log: str
    node: str
    index: int
    leaf: bytes
    deadline: int
    signed: str
    path: tuple[bytes, ...] = ()

    @property
    def when(self) -> str:
        """The deadline in UTC, for messages."""
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.deadline))


def sign_promise(
    signer: note.Signer, *, log: str, index: int, receipts: Sequence[bytes], deadline: int
) -> tuple[str, list[list[bytes]]]:
    """The signed note of a promise to log ``receipts`` as entries ``index``, ``index + 1``,
    ... by ``deadline``, and each receipt's path in the batch's tree (the bundle's proof)."""
    count = len(receipts)
    if not 1 <= count <= MAX_BATCH:
        raise InputError(f"a promise covers 1 to {MAX_BATCH} receipts, got {count}")
    if not 0 <= index <= _MAX_INT - count or not 0 <= deadline <= _MAX_INT:
        raise InputError(f"a promise's index and deadline are 0..2^53-1, got {index}, {deadline}")
    root, paths = merkle.root_and_paths(merkle.leaf_hashes(receipts))
    encoded = base64.b64encode(root).decode()
    if _PLAIN.fullmatch(log + signer.vkey):
        text = _TEMPLATE % (count, deadline, index, log, signer.vkey, encoded)
    else:
        body = {
            "type": PROMISE_TYPE,
            "log": log,
            "node": signer.vkey,
            "index": index,
            "count": count,
            "root": encoded,
            "deadline": deadline,
        }
        text = canonical.dumps(body).decode() + "\n"
    return signer.sign(text), paths


def open_promise(
    signed: str, trusted: Iterable[str], *, receipt: bytes, index: int, path: Sequence[bytes]
) -> Promise:
    """Parse and verify a promise signed by the node key it names, which must be ``trusted``,
    that ``receipt`` will be entry ``index`` (``path``: its inclusion proof in the batch's
    tree); :class:`VerificationError` naming what is wrong."""
    return open_promise_of(signed, trusted, leaf=merkle.leaf_hash(receipt), index=index, path=path)


def open_promise_of(
    signed: str, trusted: Iterable[str], *, leaf: bytes, index: int, path: Sequence[bytes]
) -> Promise:
    """:func:`open_promise` for a receipt known by its leaf hash (evidence carries no receipt)."""
    if not isinstance(signed, str):
        raise VerificationError("malformed promise: must be a signed note's text")
    body, vkey = note.open_json(signed.encode(), "promise", PROMISE_TYPE, "node")
    if set(body) != _FIELDS:
        raise VerificationError(f"malformed promise: fields {sorted(body)!r}")
    if vkey not in set(trusted):
        raise VerificationError(f"the promise's node {vkey!r} is not a trusted key")
    start, count, deadline, log = body["index"], body["count"], body["deadline"], body["log"]
    for name, value in (("index", start), ("count", count), ("deadline", deadline)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INT:
            raise VerificationError(f"malformed promise: {name} {value!r}")
    if not 1 <= count <= MAX_BATCH or start + count > _MAX_INT:
        raise VerificationError(f"malformed promise: count {count!r}")
    if not isinstance(log, str) or not log:
        raise VerificationError(f"malformed promise: log {log!r}")
    try:
        root = base64.b64decode(body["root"], validate=True)
    except (TypeError, ValueError, binascii.Error) as exc:
        raise VerificationError("malformed promise: root is not base64") from exc
    if len(root) != merkle.HASH_SIZE:
        raise VerificationError(f"malformed promise: root is {len(root)} bytes, not 32")
    if not isinstance(index, int) or isinstance(index, bool) or not start <= index < start + count:
        raise VerificationError(
            f"the promise covers entries {start} to {start + count - 1}, not entry {index!r}"
        )
    try:
        merkle.verify_inclusion(leaf, index - start, count, list(path), root)
    except VerificationError as exc:
        raise VerificationError(
            f"the promise does not cover this receipt as entry {index}: {exc}"
        ) from exc
    return Promise(log, vkey, index, leaf, deadline, signed, tuple(path))
