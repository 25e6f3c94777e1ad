"""The hub: models stored by content, described by signed manifests, named by repositories.

A hub is a data directory: ``blobs/`` holds every model, manifest and repository change by CID;
``hub.sqlite`` indexes them (which changes make up each repository, which key owns each owner
name, which manifests are present). The index holds no trust: every read re-verifies the blobs
and the signatures it returns. The first key seen for an owner name is pinned, so no other key can
publish under that name here, and a pulled history must extend the local one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from verinfer import cid, note
from verinfer.errors import (
    ConflictError,
    InputError,
    LimitExceeded,
    NotFound,
    StorageError,
    VerificationError,
)
from verinfer.hub.blobs import BlobStore, Progress
from verinfer.hub.documents import (
    Change,
    History,
    Manifest,
    ZkAddendum,
    check_repository,
    check_text,
    check_version,
    parse_ref,
    verify_history,
)
from verinfer.hub.onnxmodel import Limits, analyse
from verinfer.hub.sandbox import Sandbox

__all__ = ["Hub", "Problem", "Source"]

_HEADS_RECHECK = 1.0  # seconds: how soon another process's writes to the index are seen
_NAMED = (  # does a published document name this blob?
    "SELECT 1 FROM manifests WHERE cid = ?1 OR model = ?1 "
    "UNION ALL SELECT 1 FROM changes WHERE cid = ?1 "
    "UNION ALL SELECT 1 FROM zk WHERE ?1 IN (addendum, settings, vk, srs) "
    "UNION ALL SELECT 1 FROM text_blobs WHERE tokenizer = ?1 LIMIT 1"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, vkey TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    repository TEXT NOT NULL, seq INTEGER NOT NULL, cid TEXT NOT NULL,
    PRIMARY KEY (repository, seq)
);
CREATE TABLE IF NOT EXISTS manifests (
    cid TEXT PRIMARY KEY, repository TEXT NOT NULL, version TEXT NOT NULL, model TEXT NOT NULL,
    publisher TEXT NOT NULL, time TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS text_blobs (manifest TEXT PRIMARY KEY, tokenizer TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS zk (
    manifest TEXT PRIMARY KEY, addendum TEXT NOT NULL, settings TEXT NOT NULL, vk TEXT NOT NULL,
    srs TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS changes_append_only BEFORE UPDATE ON changes
    BEGIN SELECT RAISE(ABORT, 'repository changes are append-only'); END;
CREATE TRIGGER IF NOT EXISTS owners_pinned BEFORE UPDATE ON owners
    BEGIN SELECT RAISE(ABORT, 'owner keys are pinned'); END;
"""


class Source(Protocol):
    """Where :meth:`Hub.pull` fetches from: another hub (later, a node over HTTP)."""

    def change_blobs(self, repository: str) -> list[bytes]:
        """The repository's changes, in order (bytes, unverified)."""
        ...

    def copy_blob(self, blob: str, into: BlobStore, progress: Progress | None = None) -> None:
        """Copy a blob into ``into``, which checks it against its CID."""
        ...


@dataclass(frozen=True)
class Problem:
    """A finding of :meth:`Hub.verify`: what is wrong and with which object."""

    subject: str
    message: str


class Hub:
    """A model hub in the data directory ``root``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        limits: Limits | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.root = Path(root)
        self.limits = limits or Limits()
        self.blobs = BlobStore(self.root / "blobs")
        self._sandbox = sandbox
        self._own_sandbox = sandbox is None
        self._facts: dict[str, dict[str, Any]] = {}  # analyses by model CID (a CID never changes)
        self._tolerances: dict[str, dict[str, Any]] = {}  # calibrations by model CID
        self._lock = threading.Lock()
        self._heads: dict[str, str | None] = {}  # repository -> latest change, see head()
        self._generation = 0  # bumped by every write this hub commits
        self._data_version = -1
        self._heads_checked = -_HEADS_RECHECK
        path = self.root / "hub.sqlite"
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open hub index {str(path)!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"Hub({str(self.root)!r})"

    def close(self) -> None:
        """Close the index and stop the sandbox this hub started."""
        self._db.close()
        if self._own_sandbox and self._sandbox is not None:
            self._sandbox.close()

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- index --------------------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"hub index: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                self._generation += 1  # (under the lock) the heads in memory may be stale
                self._heads.clear()
            except sqlite3.IntegrityError as exc:
                raise ConflictError(f"hub index changed meanwhile: {exc}") from exc
            except sqlite3.Error as exc:
                raise StorageError(f"hub index: {exc}") from exc

    def pinned_owner(self, owner: str) -> str | None:
        """The vkey pinned for an owner name here, if any."""
        rows = self._query("SELECT vkey FROM owners WHERE owner = ?", (owner,))
        return str(rows[0][0]) if rows else None

    def head(self, repository: str) -> str | None:
        """The CID of the repository's latest change in the index (cheap; not verified).

        Answered from memory: this hub's own writes update it at once, another process's
        writes to the same index within ``_HEADS_RECHECK`` seconds.
        """
        now = time.monotonic()
        if now - self._heads_checked > _HEADS_RECHECK:
            version = self._query("PRAGMA data_version")[0][0]  # moves on others' commits
            if version != self._data_version:
                self._data_version = version
                self._forget_heads()
            self._heads_checked = now
        generation = self._generation
        try:
            return self._heads[repository]
        except KeyError:
            pass
        rows = self._query(
            "SELECT cid FROM changes WHERE repository = ? ORDER BY seq DESC LIMIT 1", (repository,)
        )
        head = str(rows[0][0]) if rows else None
        with self._lock:
            if generation == self._generation:  # no write since the read began
                self._heads[repository] = head
        return head

    def _forget_heads(self) -> None:
        with self._lock:
            self._generation += 1
            self._heads.clear()

    def repositories(self) -> list[str]:
        """Every repository with at least one change here."""
        rows = self._query("SELECT DISTINCT repository FROM changes ORDER BY 1")
        return [str(row[0]) for row in rows]

    # -- Source, for pulls from this hub ------------------------------------------------------

    def change_blobs(self, repository: str) -> list[bytes]:
        """The repository's change documents, in order, each checked against its CID."""
        check_repository(repository)
        rows = self._query(
            "SELECT seq, cid FROM changes WHERE repository = ? ORDER BY seq", (repository,)
        )
        for position, (seq, _) in enumerate(rows):
            if seq != position:
                raise StorageError(f"the index of {repository!r} lacks change {position}")
        return [self.blobs.get(str(row[1])) for row in rows]

    def copy_blob(self, blob: str, into: BlobStore, progress: Progress | None = None) -> None:
        """Copy one of this hub's blobs into another store (checked on both sides)."""
        self.blobs.copy_into(blob, into, progress=progress)

    # -- reading ------------------------------------------------------------------------------

    def history(self, repository: str) -> History:
        """The verified history of a repository (:class:`NotFound` if it has none here)."""
        owner, _ = check_repository(repository)
        changes = self.change_blobs(repository)
        if not changes:
            raise NotFound(f"no repository {repository!r} in this hub")
        return verify_history(repository, changes, self.pinned_owner(owner))

    def manifest(self, manifest_cid: str) -> Manifest:
        """A verified manifest by CID."""
        try:
            data = self.blobs.get(manifest_cid)
        except NotFound:
            raise NotFound(f"no manifest {manifest_cid!r} in this hub") from None
        return Manifest.from_bytes(data, manifest_cid)

    def resolve(self, ref: str) -> Manifest:
        """The manifest named by ``owner/name[@version|tag]`` or by a manifest or model CID."""
        if ref.startswith("b") and "/" not in ref:
            cid.digest(ref)
            rows = self._query(
                "SELECT cid FROM manifests WHERE cid = ? OR model = ? ORDER BY rowid",
                (ref, ref),
            )
            if not rows:
                raise NotFound(f"no manifest or model {ref!r} in this hub")
            return self.manifest(str(rows[0][0]))
        repository, selector = parse_ref(ref)
        history = self.history(repository)
        try:
            _, manifest_cid = history.resolve(selector)
        except LookupError:
            known = ", ".join([*history.versions, *history.tags]) or "none"
            raise NotFound(
                f"{repository!r} has no version or tag {selector or 'latest'!r} (known: {known})"
            ) from None
        manifest = self.manifest(manifest_cid)
        if manifest.repository != repository or manifest.publisher != history.owner:
            raise VerificationError(
                f"manifest {manifest_cid!r} does not belong to {repository!r} as published"
            )
        return manifest

    def models(
        self, *, owner: str | None = None, tag: str | None = None, text: str | None = None
    ) -> list[Manifest]:
        """The manifests present here, newest first, filtered by owner, manifest tag or text."""
        rows = self._query("SELECT cid FROM manifests ORDER BY time DESC, repository, version")
        found = []
        for (manifest_cid,) in rows:
            manifest = self.manifest(str(manifest_cid))
            body = manifest.body
            if owner is not None and manifest.repository.split("/")[0] != owner:
                continue
            if tag is not None and tag not in body["tags"]:
                continue
            if text is not None and text.lower() not in (
                f"{manifest.repository} {body['description']}".lower()
            ):
                continue
            found.append(manifest)
        return found

    def export(
        self, ref: str, destination: str | os.PathLike[str], progress: Progress | None = None
    ) -> Manifest:
        """Write the model named by ``ref`` to a file; it appears only if its bytes check out."""
        manifest = self.resolve(ref)
        self.blobs.copy_to(manifest.model, destination, progress=progress)
        return manifest

    # -- writing ------------------------------------------------------------------------------

    def _pin(self, db: sqlite3.Connection, owner: str, vkey: str) -> None:
        row = db.execute("SELECT vkey FROM owners WHERE owner = ?", (owner,)).fetchone()
        if row is None:
            db.execute("INSERT INTO owners (owner, vkey) VALUES (?, ?)", (owner, vkey))
        elif row[0] != vkey:
            raise ConflictError(
                f"owner {owner!r} belongs to key {row[0]!r} in this hub, not to {vkey!r}"
            )

    def _index(self, db: sqlite3.Connection, manifest: Manifest) -> None:
        db.execute(
            "INSERT OR IGNORE INTO manifests (cid, repository, version, model, publisher, time) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                manifest.cid,
                manifest.repository,
                manifest.version,
                manifest.model,
                manifest.publisher,
                manifest.body["time"],
            ),
        )
        text = manifest.text
        if text is not None:  # the tokenizer blob is part of the publication
            db.execute(
                "INSERT OR IGNORE INTO text_blobs (manifest, tokenizer) VALUES (?, ?)",
                (manifest.cid, text["tokenizer"]),
            )

    def analyse(self, model_cid: str, *, calibrate: bool = False) -> dict[str, Any]:
        """The manifest facts of a stored model, from the sandboxed checks and probe.

        Raises :class:`InputError` if the hub refuses the model; the refused blob is deleted
        unless an indexed manifest or change names it.
        """
        if not self.blobs.has(model_cid):
            raise NotFound(f"no blob {model_cid!r}: upload the model first")
        known = self._facts.get(model_cid)
        if known is not None:
            return dict(known)
        try:
            facts = self._analyse(model_cid)
        except InputError:
            if not self._referenced(model_cid):  # never a manifest, change or published model
                self.blobs.delete(model_cid)
            raise
        self._facts[model_cid] = facts
        if calibrate:  # once per model: it runs the model under an emulator
            from verinfer.hub.calibration import calibrate as measure  # noqa: PLC0415

            tolerance = self._tolerances.get(model_cid)
            if tolerance is None:
                tolerance = measure(self.blobs.get(model_cid), facts["inputs"])
                self._tolerances[model_cid] = tolerance
            facts = {**facts, "determinism": {**facts["determinism"], "tolerance": tolerance}}
        return dict(facts)

    def _referenced(self, blob: str) -> bool:
        """Whether any indexed manifest or change names the blob (then it is never deleted)."""
        return bool(self._query(_NAMED, (blob,)))

    def zk_setup(
        self,
        ref: str,
        signer: note.Signer,
        *,
        srs: bytes | None = None,
        dims: Mapping[str, int] | None = None,
    ) -> ZkAddendum:
        """Build the zero-knowledge circuit of a published model (weights fixed in it) and
        publish the signer's endorsement of it: the settings, verification key and SRS as blobs,
        and a signed :class:`ZkAddendum` naming them. Without ``srs``, a local development SRS is
        generated (verifiers refuse it unless told otherwise). ``dims`` binds the inputs'
        dimensions that are not fixed (by symbolic name or ``input:axis``; default 1): the
        addendum records the bound shapes, and nodes refuse zk requests of other shapes."""
        from verinfer import zk  # noqa: PLC0415 - optional, heavy

        manifest = self.resolve(ref)
        circuit = zk.setup(
            self.blobs.get(manifest.model),
            manifest.body["inputs"],
            self.root / "zk" / manifest.model,
            srs=srs,
            dims=dims,
        )
        names = {key: self.blobs.put(getattr(circuit, key)) for key in ("settings", "vk", "srs")}
        addendum = ZkAddendum.create(
            manifest, logrows=circuit.logrows, signer=signer, shapes=circuit.shapes, **names
        )
        self.accept_zk(addendum.data)
        return addendum

    def accept_zk(self, data: bytes) -> ZkAddendum:
        """Keep a signed zk addendum whose manifest and materials are stored here."""
        from verinfer.zk import MAX_LOGROWS  # noqa: PLC0415 - optional, heavy

        named = ZkAddendum.manifest_named(data)
        if not self._query("SELECT 1 FROM manifests WHERE cid = ?", (named,)):
            raise NotFound(f"manifest {named!r} is not published here")
        manifest = self.manifest(named)
        addendum = ZkAddendum.from_bytes(data, manifest)
        if addendum.body["logrows"] > MAX_LOGROWS:
            raise InputError(
                f"the circuit has 2^{addendum.body['logrows']} rows; nodes build at most "
                f"2^{MAX_LOGROWS}"
            )
        rows = self._query("SELECT addendum FROM zk WHERE manifest = ?", (manifest.cid,))
        if rows and rows[0][0] != addendum.cid:
            current = ZkAddendum.from_bytes(self.blobs.get(str(rows[0][0])), manifest)
            if addendum.body["time"] <= current.body["time"]:
                raise ConflictError(
                    "a newer zk addendum is published for this manifest: an older one cannot "
                    "replace it"
                )
        for name in ("settings", "vk", "srs"):
            if not self.blobs.has(addendum.body[name]):
                raise NotFound(f"the addendum's {name} blob {addendum.body[name]!r} is not here")
        self.blobs.put(addendum.data)
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO zk (manifest, addendum, settings, vk, srs) "
                "VALUES (?, ?, ?, ?, ?)",
                (manifest.cid, addendum.cid, addendum.body["settings"], addendum.body["vk"],
                 addendum.body["srs"]),
            )  # fmt: skip
        return addendum

    def zk_addendum(self, manifest_cid: str) -> ZkAddendum:
        """The zk addendum endorsed for a manifest, re-verified."""
        rows = self._query("SELECT addendum FROM zk WHERE manifest = ?", (manifest_cid,))
        if not rows:
            raise NotFound(f"no zero-knowledge circuit is endorsed for manifest {manifest_cid!r}")
        return ZkAddendum.from_bytes(
            self.blobs.get(str(rows[0][0])), self.manifest(manifest_cid), str(rows[0][0])
        )

    def remove(self, blob: str) -> None:
        """Delete a blob that no published document names (an administrative operation).

        A blob a manifest or change names is refused with :class:`ConflictError`: what a name
        resolves to never changes.
        """
        cid.digest(blob)
        with self._transaction() as db:  # against a concurrent publish naming it
            named = db.execute(_NAMED, (blob,)).fetchall()
            if named:
                raise ConflictError(
                    f"blob {blob!r} is published (a manifest or change names it), and published "
                    "versions are immutable"
                )
            self.blobs.delete(blob)
            self._facts.pop(blob, None)

    def unpublished(self) -> list[tuple[str, int, float]]:
        """The blobs no published document names: ``(cid, size, modification time)``."""
        referenced = {
            row[0]
            for row in self._query(
                "SELECT cid FROM manifests UNION SELECT model FROM manifests "
                "UNION SELECT cid FROM changes UNION SELECT addendum FROM zk "
                "UNION SELECT settings FROM zk UNION SELECT vk FROM zk UNION SELECT srs FROM zk "
                "UNION SELECT tokenizer FROM text_blobs"
            )
        }
        found = []
        for blob in self.blobs:
            if blob not in referenced:
                try:
                    stat = self.blobs.path(blob).stat()
                except FileNotFoundError:  # removed meanwhile
                    continue
                found.append((blob, stat.st_size, stat.st_mtime))
        return found

    def make_room(self, incoming: int, *, quota: int, max_age: float) -> None:
        """Before an unauthenticated upload of ``incoming`` bytes: delete unpublished blobs
        older than ``max_age`` seconds, then refuse (:class:`LimitExceeded`) if the unpublished
        ones and the upload would exceed ``quota`` bytes."""
        now = time.time()
        total = 0
        for blob, size, modified in self.unpublished():
            if now - modified > max_age:
                with contextlib.suppress(NotFound, ConflictError):  # published meanwhile
                    self.remove(blob)
            else:
                total += size
        if total + incoming > quota:
            raise LimitExceeded(
                f"the node holds {total} bytes of unpublished uploads and its quota is {quota}: "
                f"publish them, or retry within {max_age:.0f} s when they expire"
            )

    def accept(self, manifest_data: bytes, change_data: list[bytes]) -> Manifest:
        """Publish documents signed elsewhere (a remote publisher): a manifest and the changes
        that extend its repository's history.

        (1) The manifest verifies and its model is stored here; (2) the hub's own analysis of
        the model accepts it and agrees with the manifest on every fact, the determinism
        verdict included, and a declared tolerance is the one this hub's calibration measured
        (:meth:`_check_facts`); (3) the changes extend this hub's history of the repository,
        signed by the pinned owner key, and the first of them publishes this manifest.
        """
        manifest = Manifest.from_bytes(manifest_data)
        owner, _ = check_repository(manifest.repository)
        if not self.blobs.has(manifest.model):
            raise NotFound(f"model {manifest.model!r} is not stored here: upload it first")
        text = manifest.text
        if text is not None and not self.blobs.has(text["tokenizer"]):
            raise NotFound(f"tokenizer {text['tokenizer']!r} is not stored here: upload it first")
        self._check_facts(manifest)
        history = self._history_or_empty(manifest.repository)
        pinned = self.pinned_owner(owner)
        full = verify_history(
            manifest.repository,
            [change.data for change in history.changes] + change_data,
            pinned or manifest.publisher,
        )
        new = list(full.changes[len(history.changes) :])
        if not new or new[0].body.get("manifest") != manifest.cid:
            raise VerificationError("the first new change must publish this manifest")
        if new[0].body["version"] != manifest.version:
            raise VerificationError(
                f"the change publishes version {new[0].body['version']!r}, the manifest "
                f"{manifest.version!r}"
            )
        if any(change.body["action"] == "publish" for change in new[1:]):
            raise InputError("publish one version per request")
        self._commit(manifest.repository, owner, full.owner, new, manifest)
        return manifest

    def _check_facts(self, manifest: Manifest, *, pulled: bool = False) -> None:
        """The manifest states what this hub's own analysis of the model finds; raise
        :class:`VerificationError` naming the first field that differs.

        Every fact but ``determinism`` must be equal. Of ``determinism``, ``engine`` names the
        engine that probed the model for the publisher and may differ (another runtime version
        or kernel class); the verdict (``bit_identical``, ``nondeterministic``, the probe's
        ``seed``, ``runs`` and ``threads``, whether it failed with an ``error``) may not: a
        node must never host, as bit-reproducible, a model its own probe finds otherwise. A
        declared ``tolerance`` must be exactly what this hub's calibration measured (it is
        deterministic on one pair of kernel classes); calibration runs qemu for minutes, so it
        is not started here: ``POST /v1/blobs/{cid}/analysis?calibrate=true`` (admin) first.
        A pulled manifest's tolerance is compared only if this hub calibrated the model (a hub
        of another kernel class cannot reproduce the measurement; see PROTOCOL.md §8).
        """
        body = manifest.body
        facts = self.analyse(manifest.model)
        for key in sorted(set(facts) | {"analysis"}):  # an optional fact must be absent in both
            value = facts.get(key)
            if key != "determinism" and body.get(key) != value:
                raise VerificationError(
                    f"the manifest says {key} = {body.get(key)!r}, but the model has {value!r}"
                )
        declared, measured = body["determinism"], facts["determinism"]
        for key in ("bit_identical", "nondeterministic", "seed", "runs", "threads", "inputs"):
            if declared.get(key) != measured.get(key):
                raise VerificationError(
                    f"the manifest says determinism.{key} = {declared.get(key)!r}, but this "
                    f"node's probe of the model found {measured.get(key)!r}"
                )
        if ("error" in declared) != ("error" in measured):
            raise VerificationError(
                f"the manifest says determinism.error = {declared.get('error')!r}, but this "
                f"node's probe found {measured.get('error')!r}"
            )
        if not isinstance(declared.get("engine"), str):
            raise VerificationError(
                f"the manifest says determinism.engine = {declared.get('engine')!r}: not an "
                "engine identity"
            )
        if "tolerance" not in declared:
            return
        own = self._tolerances.get(manifest.model)
        if own is None:
            if pulled:  # the publisher's signed claim, checked by the node it published through
                return
            raise VerificationError(
                f"the manifest says determinism.tolerance = {declared['tolerance']!r}, but this "
                f"node has not calibrated model {manifest.model!r}: ask it to first (POST "
                f"/v1/blobs/{manifest.model}/analysis?calibrate=true, admin token)"
            )
        for key in sorted(set(own) | set(declared["tolerance"])):
            if declared["tolerance"].get(key) != own.get(key):
                raise VerificationError(
                    f"the manifest says determinism.tolerance.{key} = "
                    f"{declared['tolerance'].get(key)!r}, but this node's calibration measured "
                    f"{own.get(key)!r}"
                )

    def _analyse(self, model_cid: str) -> dict[str, Any]:
        with self._lock:
            if self._sandbox is None:
                self._sandbox = Sandbox(memory=self.limits.memory)
        facts: dict[str, Any] = self._sandbox.call(
            analyse_file,
            str(self.blobs.path(model_cid)),
            model_cid,
            self.limits,
            timeout=self.limits.timeout,
            what="the model",
        )
        return facts

    def publish(
        self,
        model: str | os.PathLike[str] | bytes,
        *,
        repository: str,
        version: str,
        signer: note.Signer,
        description: str = "",
        license: str = "",
        tags: tuple[str, ...] = (),
        progress: Progress | None = None,
        calibrate: bool = False,
        text: Mapping[str, Any] | None = None,
        tokenizer: bytes | None = None,
        finite_inputs: bool = False,
    ) -> Manifest:
        """Check, store and publish a model as ``repository@version``; move ``latest`` to it.

        ``text`` and ``tokenizer``: a text model's manifest section (without the tokenizer's
        CID, which is filled in) and its tokenizer blob, stored with it.

        ``calibrate``: also measure the model's tolerance across CPU kernel classes (under
        qemu; :mod:`verinfer.hub.calibration`) and declare it in the manifest.
        ``finite_inputs``: nodes refuse inputs holding NaN or infinity for this version.

        Raises :class:`InputError` for a model the hub refuses (naming the problem) and
        :class:`ConflictError` if the version exists or the owner name belongs to another key.
        """
        owner, _ = check_repository(repository)
        check_version(version)
        for tag in tags:
            check_version(tag, "tag")  # before anything is stored
        if signer.name != owner:
            raise InputError(
                f"repository {repository!r} belongs to owner {owner!r}, but the signing key is "
                f"named {signer.name!r}"
            )
        pinned = self.pinned_owner(owner)
        if pinned is not None and pinned != signer.vkey:
            raise ConflictError(f"owner {owner!r} belongs to key {pinned!r} in this hub")
        history = self._history_or_empty(repository)
        if version in history.versions:
            raise ConflictError(
                f"{repository}@{version} is already published (manifest "
                f"{history.versions[version]!r}); published versions are immutable"
            )
        if isinstance(model, bytes):
            if len(model) > self.limits.max_bytes:
                raise InputError(
                    f"the model is {len(model)} bytes, above the limit of {self.limits.max_bytes}"
                )
            model_cid = self.blobs.put(model)
        else:
            model_cid = self.blobs.put_file(
                model, max_bytes=self.limits.max_bytes, progress=progress
            )
        facts = self.analyse(model_cid, calibrate=calibrate)
        if (text is None) != (tokenizer is None):
            raise InputError("a text model is published with both its text section and tokenizer")
        if text is not None and tokenizer is not None:
            text = check_text({**text, "tokenizer": self.blobs.put(tokenizer)})
        manifest = Manifest.create(
            facts,
            repository=repository,
            version=version,
            model=model_cid,
            signer=signer,
            description=description,
            license=license,
            tags=tags,
            text=text,
            finite_inputs=finite_inputs,
        )
        publish, latest = history.publication(signer, version, manifest.cid)
        self._commit(repository, owner, signer.vkey, [publish, latest], manifest)
        return manifest

    def tag(self, repository: str, tag: str, version: str, signer: note.Signer) -> Change:
        """Point ``tag`` of a repository at a published version (owner's key only)."""
        history = self.history(repository)
        if signer.vkey != history.owner:
            raise InputError(f"only the owner's key {history.owner!r} may move tags")
        if version not in history.versions:
            raise NotFound(f"{repository!r} has no version {version!r}")
        change = Change.create(
            repository=repository,
            seq=len(history.changes),
            prev=history.head,
            signer=signer,
            version=version,
            tag=tag,
        )
        self._commit(repository, repository.split("/", maxsplit=1)[0], signer.vkey, [change], None)
        return change

    def _history_or_empty(self, repository: str) -> History:
        try:
            return self.history(repository)
        except NotFound:
            return verify_history(repository, [])

    def _commit(
        self,
        repository: str,
        owner: str,
        vkey: str,
        changes: list[Change],
        manifest: Manifest | None,
    ) -> None:
        """Store the documents, then index them in one transaction (blobs first: no dangling)."""
        if manifest is not None:
            self.blobs.put(manifest.data)
        for change in changes:
            self.blobs.put(change.data)
        with self._transaction() as db:
            self._pin(db, owner, vkey)
            for change in changes:
                db.execute(
                    "INSERT INTO changes (repository, seq, cid) VALUES (?, ?, ?)",
                    (repository, change.body["seq"], change.cid),
                )
            if manifest is not None:
                self._index(db, manifest)

    def pull(
        self,
        ref: str,
        source: Source,
        *,
        trusted_owner: str | None = None,
        progress: Progress | None = None,
    ) -> Manifest:
        """Fetch ``owner/name[@version|tag]`` from ``source``, verifying everything.

        The source's history must verify, be signed by the owner key pinned here (or
        ``trusted_owner``), and extend the history already here; a source that rewrote
        history is a fork and raises :class:`ConflictError` naming both changes.
        """
        repository, selector = parse_ref(ref)
        owner, _ = check_repository(repository)
        pinned = self.pinned_owner(owner)
        if trusted_owner is not None and pinned is not None and trusted_owner != pinned:
            raise ConflictError(f"owner {owner!r} is pinned here to {pinned!r}")
        remote = source.change_blobs(repository)
        if not remote:
            raise NotFound(f"the source has no repository {repository!r}")
        history = verify_history(repository, remote, pinned or trusted_owner)
        local = self._history_or_empty(repository)
        for seq, change in enumerate(local.changes):
            theirs = history.changes[seq].cid if seq < len(history.changes) else None
            if theirs != change.cid:
                raise ConflictError(
                    f"the source's history of {repository!r} differs from this hub's at change "
                    f"{seq} (here {change.cid!r}, there {theirs!r}): one of them was forked"
                )
        try:
            _, manifest_cid = history.resolve(selector)
        except LookupError:
            raise NotFound(f"{repository!r} has no version or tag {selector!r}") from None
        source.copy_blob(manifest_cid, self.blobs)
        manifest = self.manifest(manifest_cid)
        if manifest.repository != repository or manifest.publisher != history.owner:
            raise VerificationError(f"manifest {manifest_cid!r} does not belong to {repository!r}")
        if not self.blobs.has(manifest.model) or not _intact(self.blobs, manifest.model):
            source.copy_blob(manifest.model, self.blobs, progress)
        text = manifest.text  # a text model's tokenizer is part of its publication
        if text is not None and not self.blobs.has(text["tokenizer"]):
            source.copy_blob(text["tokenizer"], self.blobs)
        # the model is as hostile as an upload, and the facts are the publisher's word: the
        # same checks as a publication here (once per model: the analysis is cached)
        try:
            self._check_facts(manifest, pulled=True)
        except InputError as exc:  # refused here: a bad source, like one that lies
            raise VerificationError(f"the source's model of {repository!r}: {exc}") from exc
        new = list(history.changes[len(local.changes) :])
        for change in new:
            self.blobs.put(change.data)
        with self._transaction() as db:
            self._pin(db, owner, history.owner)
            for change in new:
                db.execute(
                    "INSERT INTO changes (repository, seq, cid) VALUES (?, ?, ?)",
                    (repository, change.body["seq"], change.cid),
                )
            self._index(db, manifest)
        return manifest

    # -- auditing -----------------------------------------------------------------------------

    def verify(self, ref: str | None = None) -> list[Problem]:
        """Recheck hashes and signatures of one model, or of everything here; list problems."""
        problems: list[Problem] = []

        def check(subject: str, step: Callable[[], object]) -> None:
            try:
                step()
            except (VerificationError, StorageError, NotFound) as exc:
                problems.append(Problem(subject, str(exc)))

        if ref is not None:
            manifest = self.resolve(ref)
            check(manifest.model, lambda: self.blobs.check(manifest.model))
            return problems
        for repository in self.repositories():
            check(repository, lambda r=repository: self.history(r))  # type: ignore[misc]
        for manifest_cid, model_cid in self._query("SELECT cid, model FROM manifests"):
            check(str(manifest_cid), lambda c=manifest_cid: self.manifest(c))  # type: ignore[misc]
            check(str(model_cid), lambda c=model_cid: self.blobs.check(c))  # type: ignore[misc]
        return problems


def _intact(blobs: BlobStore, blob: str) -> bool:
    try:
        blobs.check(blob)
    except StorageError:
        return False
    return True


def analyse_file(path: str, model_cid: str, limits: Limits) -> dict[str, Any]:
    """Read a stored model and analyse it (runs inside the sandbox)."""
    with open(path, "rb") as handle:
        data = handle.read(limits.max_bytes + 1)
    return analyse(data, model_cid, limits)
