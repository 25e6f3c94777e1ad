"""The caller's trust decisions as one object: which node keys answer, which witness keys
count and who operates them, which publisher keys stand behind which owners, which zk setups
(SRS) are genuine. The CLI, the SDK and the explorer read the same file (docs/PROTOCOL.md §11).
Pure but for :meth:`TrustRoot.from_file`, which reads one local file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verinfer import cid, note
from verinfer.errors import Error, InputError

__all__ = ["TRUST_TYPE", "TrustRoot"]

TRUST_TYPE = "verinfer.trust/v1"
_FIELDS = {"type", "nodes", "witnesses", "operators", "publishers", "srs"}
MAX_TRUST_BYTES = 1 << 20


def _keys(values: Iterable[str], what: str) -> tuple[str, ...]:
    found = []
    for value in values:
        try:
            found.append(note.VerifierKey.parse(str(value)).vkey)
        except Error as exc:
            raise InputError(f"trust root: {what}: {exc}") from exc
    return tuple(found)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("a key is given twice")
    return found


@dataclass(frozen=True)
class TrustRoot:
    """Trusted keys, by role.

    ``nodes``: node vkeys whose signed logs you accept receipts from. ``witnesses``: cosigner
    keys that count toward a witness quorum; ``operators`` maps node and witness keys to who
    operates them (a key it does not name is its own operator; a label that is itself a vkey
    stands for that key's operator). ``publishers``: publisher vkeys; each key's name is the
    owner it may sign for (§8). ``srs``: CIDs of the zk setups you accept."""

    nodes: tuple[str, ...] = ()
    witnesses: tuple[str, ...] = ()
    operators: Mapping[str, str] = field(default_factory=dict)
    publishers: tuple[str, ...] = ()
    srs: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        nodes: Iterable[str] = (),
        *,
        witnesses: Iterable[str] = (),
        operators: Mapping[str, str] | None = None,
        publishers: Iterable[str] = (),
        srs: Iterable[str] = (),
    ) -> TrustRoot:
        """A trust root from any iterables (keys are kept as given: the verifier parses them
        where it uses them, and names a bad one in its step)."""
        return cls(
            tuple(nodes), tuple(witnesses), dict(operators or {}), tuple(publishers), tuple(srs)
        )

    def publishers_of(self, repository: str) -> tuple[str, ...]:
        """The publisher keys trusted for the owner of ``repository`` (``owner/name``)."""
        owner = repository.split("/", 1)[0]
        return tuple(k for k in self.publishers if k.split("+", 1)[0] == owner)

    def to_json(self) -> str:
        """The trust file's text."""
        value = {
            "type": TRUST_TYPE,
            "nodes": list(self.nodes),
            "witnesses": list(self.witnesses),
            "operators": dict(self.operators),
            "publishers": list(self.publishers),
            "srs": list(self.srs),
        }
        return json.dumps(value, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> TrustRoot:
        """Parse a trust file; :class:`InputError` naming the bad field. Every key is checked
        to be a well-formed vkey and every SRS a CID."""
        if len(text) > MAX_TRUST_BYTES:
            raise InputError(f"trust root: larger than {MAX_TRUST_BYTES} bytes")
        try:
            value: Any = json.loads(text, object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"trust root: not JSON: {exc}") from exc
        if not isinstance(value, dict) or value.get("type") != TRUST_TYPE:
            raise InputError(f"trust root: not a {TRUST_TYPE} object")
        unknown = sorted(set(value) - _FIELDS)
        if unknown:
            raise InputError(f"trust root: unknown fields {unknown!r}")
        lists = {}
        for name in ("nodes", "witnesses", "publishers", "srs"):
            items = value.get(name, [])
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise InputError(f"trust root: {name} must be a list of strings")
            lists[name] = items
        operators = value.get("operators", {})
        if not isinstance(operators, dict) or not all(
            isinstance(v, str) for v in operators.values()
        ):
            raise InputError("trust root: operators must map keys to operator labels")
        for item in lists["srs"]:
            try:
                cid.digest(item)
            except InputError as exc:
                raise InputError(f"trust root: srs: {exc}") from exc
        return cls(
            _keys(lists["nodes"], "nodes"),
            _keys(lists["witnesses"], "witnesses"),
            {_keys([k], "operators")[0]: v for k, v in operators.items()},
            _keys(lists["publishers"], "publishers"),
            tuple(lists["srs"]),
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TrustRoot:
        """Read a trust file (see :meth:`from_json`)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read trust root {os.fspath(path)!r}: {exc.strerror}") from exc
        try:
            return cls.from_json(data)
        except InputError as exc:
            raise InputError(f"{os.fspath(path)!r}: {exc}") from exc
