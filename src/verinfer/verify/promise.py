"""Signed promises: a node's answer before its receipt is durable in its log. Pure: no I/O.

Certificate Transparency's signed certificate timestamp, for receipts: the node answers as soon
as the outputs exist with a signed statement that the receipt *will* be entry ``index`` of its log
by ``deadline`` (the node's maximum merge delay). The statement is a C2SP signed note, signed by
the node's log key, whose text is one line of RFC 8785 canonical JSON::

    {"deadline":1764892800,"index":41,"leaf":"<base64 RFC 9162 leaf hash of the receipt>",
     "log":"<the log's origin>","node":"<the node's vkey>","type":"verinfer.promise/v1"}

Every field is covered by the signature; the receipt itself is bound through its leaf hash, so the
promise stays small and the receipt's bytes are the ones that will be logged. The text is one line,
so it can never parse as a checkpoint (three or more lines, the second a decimal size), and its
``type`` tells it from the other JSON documents a node signs.

A promise is kept when a signed checkpoint of size > ``index`` holds the receipt's leaf at
``index`` (the upgrade: :meth:`verinfer.client.Client.upgrade`). It is provably broken by
(see :func:`verinfer.verify.evidence.broken_promise`):

- a checkpoint of the same log and key, of size > ``index``, with an inclusion proof of *another*
  leaf at ``index``: conclusive at any time (a log is append-only: entry ``index`` can never
  become the promised one), so no clock is needed;
- a checkpoint of size <= ``index`` cosigned by a witness the checker trusts with a timestamp at
  or past ``deadline``: that witness attests that the log had shown it nothing larger by then.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from verinfer import canonical, merkle, note
from verinfer.errors import InputError, VerificationError

__all__ = ["PROMISE_TYPE", "Promise", "open_promise", "sign_promise"]

PROMISE_TYPE = "verinfer.promise/v1"
_FIELDS = {"type", "log", "node", "index", "leaf", "deadline"}
_MAX_INT = (1 << 53) - 1  # I-JSON's safe integers: canonical JSON has no larger ones
# a JSON string of these characters is its own canonical form: nothing to escape
_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
# the fields in RFC 8785 order: the text of every answer in promise mode, without the encoder
_TEMPLATE = (
    '{"deadline":%d,"index":%d,"leaf":"%s","log":"%s","node":"%s","type":"' + PROMISE_TYPE + '"}\n'
)


@dataclass(frozen=True)
class Promise:
    """A verified promise: node ``node`` will log leaf hash ``leaf`` as entry ``index`` of log
    ``log`` by ``deadline`` (Unix seconds). ``signed`` is the signed note."""

    log: str
    node: str
    index: int
    leaf: bytes
    deadline: int
    signed: str

    def promises(self, receipt: bytes) -> bool:
        """Whether this promise is about the receipt of these exact bytes."""
        return merkle.leaf_hash(receipt) == self.leaf

    @property
    def when(self) -> str:
        """The deadline in UTC, for messages."""
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.deadline))


def sign_promise(
    signer: note.Signer, *, log: str, index: int, receipt: bytes, deadline: int
) -> str:
    """The signed note of a promise to log ``receipt`` as entry ``index`` by ``deadline``."""
    if not 0 <= index <= _MAX_INT or not 0 <= deadline <= _MAX_INT:
        raise InputError(f"a promise's index and deadline are 0..2^53-1, got {index}, {deadline}")
    leaf = base64.b64encode(merkle.leaf_hash(receipt)).decode()
    if _PLAIN.fullmatch(log + signer.vkey):
        return signer.sign(_TEMPLATE % (deadline, index, leaf, log, signer.vkey))
    body = {
        "type": PROMISE_TYPE,
        "log": log,
        "node": signer.vkey,
        "index": index,
        "leaf": leaf,
        "deadline": deadline,
    }
    return signer.sign(canonical.dumps(body).decode() + "\n")


def open_promise(signed: str, trusted: Iterable[str]) -> Promise:
    """Parse and verify a promise signed by the node key it names, which must be ``trusted``;
    :class:`VerificationError` naming what is wrong."""
    if not isinstance(signed, str):
        raise VerificationError("malformed promise: must be a signed note's text")
    body, vkey = note.open_json(signed.encode(), "promise", PROMISE_TYPE, "node")
    if set(body) != _FIELDS:
        raise VerificationError(f"malformed promise: fields {sorted(body)!r}")
    if vkey not in set(trusted):
        raise VerificationError(f"the promise's node {vkey!r} is not a trusted key")
    index, deadline, log = body["index"], body["deadline"], body["log"]
    for name, value in (("index", index), ("deadline", deadline)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INT:
            raise VerificationError(f"malformed promise: {name} {value!r}")
    if not isinstance(log, str) or not log:
        raise VerificationError(f"malformed promise: log {log!r}")
    try:
        leaf = base64.b64decode(body["leaf"], validate=True)
    except (TypeError, ValueError, binascii.Error) as exc:
        raise VerificationError("malformed promise: leaf is not base64") from exc
    if len(leaf) != merkle.HASH_SIZE:
        raise VerificationError(f"malformed promise: leaf is {len(leaf)} bytes, not 32")
    return Promise(log, vkey, index, leaf, deadline, signed)
