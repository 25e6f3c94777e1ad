"""Who a client trusts: node keys per URL, and publisher keys per owner name.

Both are the client's own decision, never a node's: given explicitly, or pinned on first use in a
JSON file under ``$VERINFER_HOME`` (``known_nodes.json``, ``known_publishers.json``). A pin is
never replaced silently: a different key later is refused with a message naming both keys and
the file. Reading and writing these small files is the only I/O here.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from verinfer import keys, note
from verinfer.errors import InputError, VerificationError
from verinfer.hub.documents import History, check_repository, verify_history

__all__ = ["NodeKeys", "Publishers", "StaleHistory"]

_LOG = logging.getLogger("verinfer.client")
_FILES = threading.Lock()  # one read-modify-write of a pin file at a time in this process

Notify = Callable[[str], None]
"""Called with a one-line notice when a key is pinned on first use."""


class StaleHistory(VerificationError):  # noqa: N818 - a VerificationError, named for what it is
    """A node served a shorter history of a repository than this client has already seen (it
    withheld the newest changes, or has not fetched them yet): its answer is not accepted, and a
    :class:`~verinfer.client.Network` asks another node."""


def _read_object(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} {str(path)!r}: {exc}") from exc
    if not isinstance(value, dict):
        raise InputError(f"{what} {str(path)!r} is not a JSON object")
    return value


def _write_object(path: Path, value: Mapping[str, Any]) -> None:
    """Replace ``path`` atomically (a unique temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(json.dumps(value, indent=1, sort_keys=True) + "\n")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _log_notice(message: str) -> None:
    _LOG.warning("%s", message)


class NodeKeys:
    """Which node keys to accept: the given ones, or whatever was pinned on first use per URL."""

    def __init__(self, trusted: Iterable[str] | None, known: str | os.PathLike[str] | None) -> None:
        self.trusted = None if trusted is None else list(trusted)
        for vkey in self.trusted or []:
            note.VerifierKey.parse(vkey)
        self.known = Path(known) if known else keys.home() / "known_nodes.json"

    def check(self, url: str, vkey: object) -> str:
        """Check a node's key against the policy (pinning it on first use); return it."""
        if not isinstance(vkey, str):
            raise VerificationError(f"node {url} sent no key")
        if self.trusted is not None:
            if vkey not in self.trusted:
                raise VerificationError(f"node {url} has key {vkey!r}, which is not trusted")
            return vkey
        with _FILES:
            known = _read_object(self.known, "known nodes")
            pinned = known.get(url)
            if pinned is None:
                known[url] = vkey
                _write_object(self.known, known)
                return vkey
        if pinned != vkey:
            raise VerificationError(
                f"node {url} now presents key {vkey!r}, but {pinned!r} was pinned on first use "
                f"({self.known}); remove that entry only if the change is expected"
            )
        return vkey


def _by_owner(trusted: Iterable[str] | Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Explicit publisher keys by owner name; a key whose name is not its owner can never sign
    for that owner (§8), so it is refused here rather than never matching."""
    pairs: list[tuple[str, str]] = []
    if isinstance(trusted, Mapping):
        pairs = [(str(owner), vkey) for owner, found in trusted.items() for vkey in found]
    else:
        pairs = [(note.VerifierKey.parse(vkey).name, vkey) for vkey in trusted]
    owners: dict[str, list[str]] = {}
    for owner, vkey in pairs:
        name = note.VerifierKey.parse(vkey).name
        if name != owner:
            raise InputError(
                f"publisher key {vkey!r} is named {name!r}; it cannot sign for owner {owner!r}"
            )
        owners.setdefault(owner, []).append(vkey)
    return owners


class Publishers:
    """Which publisher keys may stand behind an owner name: the client's trust decision.

    ``trusted``: explicit keys, as a list of vkeys (each key's name is its owner) or a mapping of
    owner -> vkeys. Then only those owners resolve, and only to those keys. Without them, the
    first key seen for an owner is pinned in ``known`` (default
    ``$VERINFER_HOME/known_publishers.json``) with a notice (``notify``, by default a warning on
    the ``verinfer.client`` logger), and a different key later is refused. A first-come pin on
    some node is never a trust anchor: only this client's decision is.

    It also remembers, per repository, the longest signed history it verified (the number of
    changes and the head's CID; in memory, and in ``known`` when one is in use), and refuses a
    history that is shorter (:class:`StaleHistory`) or that does not extend it (a fork).
    One object may be shared by many clients (a :class:`~verinfer.client.Network`'s are).
    """

    def __init__(
        self,
        trusted: Iterable[str] | Mapping[str, Iterable[str]] = (),
        *,
        known: str | os.PathLike[str] | None = None,
        notify: Notify | None = None,
    ) -> None:
        owners = _by_owner(trusted)
        self.explicit: dict[str, list[str]] | None = owners or None
        if known is not None:
            self.known: Path | None = Path(known)
        else:
            self.known = None if owners else keys.home() / "known_publishers.json"
        self._notify = notify or _log_notice
        self._heads: dict[str, tuple[int, str]] = {}  # repository -> (changes, head CID)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        how = f"explicit {sorted(self.explicit)}" if self.explicit else f"pinned in {self.known}"
        return f"Publishers({how})"

    def keys_for(self, owner: str, offered: str) -> list[str]:
        """The keys trusted for ``owner``. On first use (no explicit keys, nothing pinned),
        ``offered`` is pinned for it and the notice is given. Raises
        :class:`VerificationError` when no key can be trusted for ``owner``."""
        if self.explicit is not None:
            found = self.explicit.get(owner)
            if not found:
                raise VerificationError(
                    f"no publisher key is trusted for owner {owner!r} (trusted owners: "
                    f"{', '.join(sorted(self.explicit))}): give its key to trust it"
                )
            return list(found)
        assert self.known is not None
        with _FILES:
            state = _read_object(self.known, "known publishers")
            owners = state.setdefault("owners", {})
            if not isinstance(owners, dict):
                raise InputError(f"known publishers {str(self.known)!r}: 'owners' is not an object")
            pinned = owners.get(owner)
            if pinned is None:
                note.VerifierKey.parse(offered)
                owners[owner] = offered
                _write_object(self.known, state)
                pinned = offered
                self._notify(
                    f"trusting publisher key {offered!r} for owner {owner!r} on first use "
                    f"(pinned in {self.known}); verify it out of band"
                )
        return [str(pinned)]

    def check(self, owner: str, vkey: str, what: str) -> None:
        """``vkey`` may sign for ``owner`` (``what`` names the document for the message)."""
        trusted = self.keys_for(owner, vkey)
        if vkey in trusted:
            return
        if self.explicit is not None:
            raise VerificationError(
                f"{what} is signed by {vkey!r}, which is not a publisher key trusted for owner "
                f"{owner!r} (trusted: {', '.join(trusted)}): another key squats the name"
            )
        raise VerificationError(
            f"{what} is signed by {vkey!r}, but {trusted[0]!r} was pinned for owner {owner!r} on "
            f"first use ({self.known}); another key squats the name, or the owner changed keys: "
            "remove that entry only if the change is expected"
        )

    def history(self, repository: str, changes: Sequence[bytes]) -> History:
        """A repository's signed history, verified: signatures and chain (§8), signed by a key
        trusted for its owner, and extending (never shorter than, never forking) the longest
        history of it this client has seen."""
        owner, _ = check_repository(repository)
        history = verify_history(repository, changes)
        if not history.changes:
            raise VerificationError(f"the node serves no signed history of {repository!r}")
        self.check(owner, history.owner, f"the history of {repository!r}")
        size, head = len(history.changes), str(history.head)
        with self._lock:
            seen = self._heads.get(repository)
            stored = self._stored(repository)
            if stored is not None and (seen is None or stored[0] > seen[0]):
                seen = stored
            if seen is not None:
                if size < seen[0]:
                    raise StaleHistory(
                        f"the node serves {size} changes of {repository!r}, but this client has "
                        f"already verified {seen[0]} (head {seen[1]}): a stale or withheld "
                        "history is not accepted"
                    )
                if history.changes[seen[0] - 1].cid != seen[1]:
                    raise VerificationError(
                        f"the history of {repository!r} forks from the one this client verified "
                        f"before: change {seen[0] - 1} is {history.changes[seen[0] - 1].cid}, "
                        f"not {seen[1]} (the owner's key signed two histories)"
                    )
            if seen is None or size > seen[0]:
                self._heads[repository] = (size, head)
                self._store(repository, size, head)
        return history

    def _stored(self, repository: str) -> tuple[int, str] | None:
        if self.known is None:
            return None
        with _FILES:
            found = _read_object(self.known, "known publishers").get("repositories", {})
        entry = found.get(repository) if isinstance(found, dict) else None
        if not isinstance(entry, dict):
            return None
        size, head = entry.get("changes"), entry.get("head")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            return None
        return (size, head) if isinstance(head, str) else None

    def _store(self, repository: str, size: int, head: str) -> None:
        if self.known is None:
            return
        with _FILES:
            state = _read_object(self.known, "known publishers")
            found = state.setdefault("repositories", {})
            if not isinstance(found, dict):
                raise InputError(
                    f"known publishers {str(self.known)!r}: 'repositories' is not an object"
                )
            previous = found.get(repository)
            if (
                isinstance(previous, dict)
                and isinstance(previous.get("changes"), int)
                and previous["changes"] >= size  # another client of this file went further
            ):
                return
            found[repository] = {"changes": size, "head": head}
            _write_object(self.known, state)
