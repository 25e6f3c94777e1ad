"""A C2SP ``tlog-witness``: cosigns a log's checkpoint only when it is proven consistent with the
last checkpoint of that log it cosigned, so no log can show two histories to parties that check
cosignatures.

State (the logs it witnesses, the latest cosigned checkpoint of each, the equivocation evidence
it found) lives in one SQLite file; checking the old size and recording the new checkpoint happen
in one transaction, so two concurrent submissions cannot roll a log back.

Two checkpoints of one size with different roots, both signed by the log's key, are
**equivocation evidence** (:func:`verinfer.verify.evidence.equivocation`): the witness keeps it
and serves it; anyone can check it offline.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from verinfer import canonical, merkle, note
from verinfer.errors import (
    ConflictError,
    Error,
    InputError,
    LimitExceeded,
    StorageError,
    VerificationError,
)
from verinfer.verify.evidence import equivocation

__all__ = ["MAX_PROOF_LINES", "Refusal", "Witness", "add_checkpoint_body"]

MAX_PROOF_LINES = 63
MAX_EVIDENCE = 10_000
_MAX_BODY = 64 << 10

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (origin TEXT PRIMARY KEY, vkey TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS latest (
    origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL, checkpoint TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY, origin TEXT NOT NULL, doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (
    origin TEXT NOT NULL, size INTEGER NOT NULL, root BLOB NOT NULL, checkpoint TEXT NOT NULL,
    PRIMARY KEY (origin, size)
);
CREATE TRIGGER IF NOT EXISTS logs_pinned BEFORE UPDATE ON logs
    BEGIN SELECT RAISE(ABORT, 'a witnessed log key is pinned'); END;
"""


class Refusal(Error):  # noqa: N818 - reads better at call sites, like NotFound
    """The witness does not cosign; ``status`` is the C2SP tlog-witness HTTP status and ``body``
    what to answer (for 409, the size of the latest cosigned checkpoint)."""

    def __init__(self, status: int, message: str, body: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def add_checkpoint_body(old: int, proof: list[bytes], signed: str) -> bytes:
    """The body of a C2SP ``add-checkpoint`` request."""
    lines = [f"old {old}"] + [base64.b64encode(h).decode() for h in proof]
    return ("\n".join(lines) + "\n\n" + signed).encode()


def _parse(body: bytes) -> tuple[int, list[bytes], str]:
    if len(body) > _MAX_BODY:
        raise Refusal(400, f"the request is larger than {_MAX_BODY} bytes")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise Refusal(400, "the request is not UTF-8") from None
    head, separator, signed = text.partition("\n\n")
    if not separator:
        raise Refusal(400, "the request needs an old size line, proof lines, an empty line")
    lines = head.split("\n")
    first = lines[0]
    digits = first.removeprefix("old ")
    if not first.startswith("old ") or not digits.isdigit() or (digits != "0" and digits[0] == "0"):
        raise Refusal(400, f"malformed old size line {first[:40]!r}")
    proof = []
    for position, line in enumerate(lines[1:]):
        try:
            raw = base64.b64decode(line, validate=True)
        except (ValueError, binascii.Error):
            raise Refusal(400, f"consistency proof line {position} is not base64") from None
        if len(raw) != 32:
            raise Refusal(400, f"consistency proof line {position} is not a 32-byte hash")
        proof.append(raw)
    if len(proof) > MAX_PROOF_LINES:
        raise Refusal(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    return int(digits), proof, signed


class Witness:
    """A witness with a cosigner key (``note.generate_key(..., cosigner=True)``)."""

    def __init__(self, path: str | Path, signer: note.Signer) -> None:
        self.signer = signer
        self._lock = threading.Lock()
        self.cosigned_at: dict[str, float] = {}  # origin -> when it last cosigned (this process)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")  # persisted before it answers
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open witness state {str(path)!r}: {exc}") from exc

    @property
    def vkey(self) -> str:
        """The key its cosignatures verify under."""
        return self.signer.vkey

    def close(self) -> None:
        """Close the state file."""
        self._db.close()

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"witness state: {exc}") from exc

    def trust(self, origin: str, vkey: str) -> None:
        """Witness the log ``origin`` signed by ``vkey``; a log's key, once set, is pinned."""
        note.VerifierKey.parse(vkey)
        self._run("INSERT OR IGNORE INTO logs (origin, vkey) VALUES (?, ?)", (origin, vkey))
        pinned = self.logs().get(origin)
        if pinned != vkey:
            raise ConflictError(f"the witness already knows log {origin!r} under key {pinned!r}")

    def logs(self) -> dict[str, str]:
        """The witnessed logs: origin -> vkey."""
        return {str(o): str(k) for o, k in self._run("SELECT origin, vkey FROM logs")}

    def latest(self, origin: str) -> tuple[int, str | None]:
        """The size of the latest checkpoint of ``origin`` cosigned here, and that checkpoint."""
        rows = self._run("SELECT size, checkpoint FROM latest WHERE origin = ?", (origin,))
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, None)

    def evidence(self) -> list[dict[str, Any]]:
        """The evidence found here or accepted (:meth:`record`), oldest first."""
        return [json.loads(doc) for (doc,) in self._run("SELECT doc FROM evidence ORDER BY id")]

    def record(self, document: dict[str, Any]) -> bool:
        """Keep evidence the caller has verified; ``False`` if it was already kept."""
        text = canonical.dumps(document).decode()
        if self._run("SELECT 1 FROM evidence WHERE doc = ?", (text,)):
            return False
        if self._run("SELECT count(*) FROM evidence")[0][0] >= MAX_EVIDENCE:
            raise LimitExceeded(f"this node keeps at most {MAX_EVIDENCE} pieces of evidence")
        self._run(
            "INSERT INTO evidence (origin, doc) VALUES (?, ?)", (str(document.get("log")), text)
        )
        return True

    def held(self) -> list[str]:
        """The latest cosigned checkpoint of every witnessed log (what this witness gossips)."""
        return [str(row[0]) for row in self._run("SELECT checkpoint FROM latest ORDER BY origin")]

    def gossip(self, signed: str) -> dict[str, Any] | None:
        """Compare a checkpoint someone saw with every checkpoint of that log seen here.

        A validly signed checkpoint of a witnessed log whose size was seen here with another
        root is equivocation evidence: it is recorded and returned. Otherwise the checkpoint is
        remembered for later comparisons and ``None`` is returned. :class:`Refusal` (404, 403,
        400) for unknown logs, bad signatures and malformed notes.
        """
        try:
            text, _ = note.parse(signed)
        except VerificationError as exc:
            raise Refusal(400, f"malformed checkpoint: {exc}") from exc
        origin = text.split("\n", 1)[0]
        vkey = self.logs().get(origin)
        if vkey is None:
            raise Refusal(404, f"this witness does not witness log {origin!r}")
        try:
            checkpoint, _ = note.verify_checkpoint(signed, [vkey])
        except (VerificationError, InputError) as exc:
            raise Refusal(403, f"the checkpoint is not signed by the log's key: {exc}") from exc
        with self._lock:
            try:
                return self._compare(checkpoint, signed, vkey)
            except sqlite3.Error as exc:
                raise StorageError(f"witness state: {exc}") from exc

    def _compare(
        self, checkpoint: note.Checkpoint, signed: str, vkey: str
    ) -> dict[str, Any] | None:
        db = self._db
        row = db.execute(
            "SELECT root, checkpoint FROM seen WHERE origin = ? AND size = ?",
            (checkpoint.origin, checkpoint.size),
        ).fetchone()
        if row is None:
            db.execute(
                "INSERT OR IGNORE INTO seen (origin, size, root, checkpoint) VALUES (?,?,?,?)",
                (checkpoint.origin, checkpoint.size, checkpoint.root, signed),
            )
            return None
        if bytes(row[0]) == checkpoint.root:
            return None
        doc = equivocation(checkpoint.origin, vkey, str(row[1]), signed)
        text = canonical.dumps(doc).decode()
        if not db.execute("SELECT 1 FROM evidence WHERE doc = ?", (text,)).fetchone():
            db.execute(
                "INSERT INTO evidence (origin, doc) VALUES (?, ?)", (checkpoint.origin, text)
            )
        return doc

    def add_checkpoint(self, body: bytes) -> str:
        """C2SP ``add-checkpoint``: the cosignature line(s), or :class:`Refusal`."""
        old, proof, signed = _parse(body)
        try:
            text, _ = note.parse(signed)
            origin = text.split("\n", 1)[0]
        except VerificationError as exc:
            raise Refusal(400, f"malformed checkpoint: {exc}") from exc
        vkey = self.logs().get(origin)
        if vkey is None:
            raise Refusal(404, f"this witness does not witness log {origin!r}")
        try:
            checkpoint, _ = note.verify_checkpoint(signed, [vkey])
        except VerificationError as exc:
            raise Refusal(403, f"the checkpoint is not signed by the log's key: {exc}") from exc
        except InputError as exc:
            raise Refusal(400, f"malformed checkpoint: {exc}") from exc
        if old > checkpoint.size:
            raise Refusal(400, f"old size {old} is above the checkpoint's size {checkpoint.size}")
        with self._lock:
            try:
                return self._record(old, proof, signed, checkpoint, vkey)
            except sqlite3.Error as exc:
                raise StorageError(f"witness state: {exc}") from exc

    def _record(
        self, old: int, proof: list[bytes], signed: str, checkpoint: note.Checkpoint, vkey: str
    ) -> str:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT size, root, checkpoint FROM latest WHERE origin = ?", (checkpoint.origin,)
            ).fetchone()
            size, root, previous = (row[0], bytes(row[1]), row[2]) if row else (0, b"", None)
            if old != size:
                raise Refusal(409, f"the latest cosigned size is {size}, not {old}", f"{size}\n")
            if old == checkpoint.size and previous is not None and root != checkpoint.root:
                doc = equivocation(checkpoint.origin, vkey, previous, signed)
                db.execute(
                    "INSERT INTO evidence (origin, doc) VALUES (?, ?)",
                    (checkpoint.origin, canonical.dumps(doc).decode()),
                )
                db.execute("COMMIT")
                raise Refusal(
                    409,
                    f"log {checkpoint.origin!r} signed two different trees of size {size}: "
                    "equivocation evidence recorded",
                    f"{size}\n",
                )
            if old == 0 and proof:
                raise Refusal(400, "the consistency proof must be empty from size 0")
            if 0 < old < checkpoint.size:
                try:
                    merkle.verify_consistency(old, checkpoint.size, root, checkpoint.root, proof)
                except VerificationError as exc:
                    raise Refusal(422, f"the consistency proof does not verify: {exc}") from exc
            if self._compare(checkpoint, signed, vkey) is not None:  # gossip saw another root
                db.execute("COMMIT")
                raise Refusal(
                    409,
                    f"log {checkpoint.origin!r} showed another tree of size {checkpoint.size} "
                    "elsewhere: equivocation evidence recorded",
                    f"{size}\n",
                )
            db.execute(
                "INSERT OR REPLACE INTO latest (origin, size, root, checkpoint) VALUES (?,?,?,?)",
                (checkpoint.origin, checkpoint.size, checkpoint.root, signed),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        line = self.signer.signature_line(checkpoint.text)
        self.cosigned_at[checkpoint.origin] = time.time()
        return line
