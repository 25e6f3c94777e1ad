"""The log: an append-only RFC 9162 Merkle tree of entries with signed C2SP checkpoints.

Appends happen in batches (group commit): the entries, the stored tiles they change and one new
signed checkpoint are written in a single transaction, so the signature cost is shared by the
batch and a crash leaves the last committed checkpoint and everything it covers intact (or, with
SQLite, a batch the tables lost in the store's journal, replayed when the log opens). Every
checkpoint extends the previous one by construction: only the writer's in-memory frontier, loaded
from and checked against the latest checkpoint, produces new tree hashes.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from verinfer import merkle
from verinfer.errors import InputError, NotFound, StorageError, VerificationError
from verinfer.log.postgres import PostgresStore
from verinfer.log.sqlite import SqliteStore
from verinfer.log.store import SCHEMA_VERSION, Store
from verinfer.log.tiles import (
    FULL_SIBLINGS,
    TILE_HEIGHT,
    TILE_WIDTH,
    Frontier,
    locate,
    row_offset,
    siblings,
    stored_size,
)
from verinfer.merkle import HASH_SIZE, Node
from verinfer.note import Checkpoint, Signer, verify_checkpoint

__all__ = ["DEFAULT_CACHE_TILES", "MAX_ENTRY_BYTES", "Appended", "Log", "open_store"]

MAX_ENTRY_BYTES = 0xFFFF  # C2SP entry bundles prefix each entry with a uint16 length
DEFAULT_CACHE_TILES = 4096  # full stored tiles kept in memory: at most 64 MiB
_REPLAY_CHUNK = 16 * TILE_WIDTH
_TAIL_CACHE = 4096  # tops of inclusion paths: (size, inner) -> hashes; a few per tree size


class _Signing:
    """Signs one log's checkpoints, on a thread of its own when the store asks for it: a store
    that syncs a journal hands the signature aside just before it waits for the disk, which
    hides the 35 us (90 us right after an ONNX Runtime run) of an Ed25519 signature.

    One checkpoint at a time (the log's appends are serialized); the note is handed out only
    when the store calls for it, after its batch is durable."""

    def __init__(self, signer: Signer) -> None:
        self._signer = signer
        self._text = ""
        self._aside = False
        self._owed = False  # handed aside, not collected yet
        self._jobs: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._notes: queue.SimpleQueue[str | BaseException] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self) -> str:
        if not self._owed:
            return self._signer.sign(self._text)
        note = self._notes.get()
        self._owed = False
        if isinstance(note, BaseException):
            raise note
        return note

    def prepare(self, text: str, *, aside: bool) -> _Signing:
        """Ready to sign ``text``: this object, for the store's commit. ``aside``: the store may
        hand the signature to this object's thread (see :meth:`Log.append`)."""
        if self._owed:  # a commit that failed after handing the last one aside
            self._owed = False
            self._notes.get()
        self._text = text
        self._aside = aside
        return self

    def aside(self) -> None:
        with self._lock:  # against close(): a job queued is a job signed
            if self._closed or not self._aside or self._owed:
                return  # signed by the caller instead
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="verinfer-log-signer", daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # no thread to spare: the caller signs
                    return
                self._thread = thread
            self._owed = True
            self._jobs.put(self._text)

    def _run(self) -> None:
        while (text := self._jobs.get()) is not None:
            try:
                self._notes.put(self._signer.sign(text))
            except BaseException as exc:  # handed to the committing thread
                self._notes.put(exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._jobs.put(None)  # after any job queued: the signer signs it first
        if thread is not None:
            thread.join()


class _LRU:
    """A small thread-safe LRU map of immutable stored tiles."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self.items: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> bytes | None:
        # lock-free: dict reads are atomic, and a key evicted meanwhile only loses its refresh
        value = self.items.get(key)
        if value is not None:
            try:  # noqa: SIM105 - contextlib.suppress costs ~1 us on this hot path
                self.items.move_to_end(key)
            except KeyError:
                pass
        return value

    def put(self, key: tuple[int, int], value: bytes) -> None:
        if self._capacity <= 0:
            return
        with self._lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self._capacity:
                self.items.popitem(last=False)


def open_store(location: str) -> Store:
    """The store at ``location``: a ``postgresql://`` URL, or a data directory for SQLite."""
    if location.startswith(("postgresql://", "postgres://")):
        return PostgresStore(location)
    return SqliteStore.in_directory(location)


@dataclass(frozen=True)
class Appended:
    """The result of one committed batch: its first index and the checkpoint that covers it."""

    start: int
    checkpoint: Checkpoint
    signed_checkpoint: str

    @property
    def end(self) -> int:
        """One past the index of the last entry of the batch."""
        return self.checkpoint.size


class Log:
    """An append-only transparency log stored in a :class:`~verinfer.log.store.Store`.

    Thread-safe: appends are serialized, reads may run at any time and only ever see committed
    state.
    """

    def __init__(
        self,
        store: Store,
        signer: Signer,
        *,
        origin: str | None = None,
        cache_tiles: int = DEFAULT_CACHE_TILES,
    ) -> None:
        self._store = store
        self._signer = signer
        self._signing = _Signing(signer)
        self._write_lock = threading.Lock()
        self._full_tiles = _LRU(cache_tiles)
        self._tails: dict[tuple[int, int], list[bytes]] = {}
        meta = store.read_meta()
        if not meta:
            origin = origin or signer.name
            empty = Checkpoint(origin, 0, merkle.EMPTY_ROOT)
            store.initialize({"origin": origin, "vkey": signer.vkey}, signer.sign(empty.text))
            meta = store.read_meta()
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise StorageError(f"unsupported log schema version {meta.get('schema_version')!r}")
        if meta.get("vkey") != signer.vkey:
            raise InputError(
                f"this log is signed by {meta.get('vkey')!r}, not by the given key {signer.vkey!r}"
            )
        if origin is not None and origin != meta["origin"]:
            raise InputError(f"this log's origin is {meta['origin']!r}, not {origin!r}")
        self.origin: str = meta["origin"]
        self._frontier = Frontier()  # until loaded, every node is read from the store
        self._frontier, self._signed = self._load()
        for start, entries in store.unapplied():
            # durable but lost by the tables: appended again, the checkpoint re-signed (Ed25519
            # is deterministic, so it is the very note that was issued)
            if start != self.size:
                raise StorageError(f"a batch to replay starts at {start}; the log has {self.size}")
            self.append(entries)

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str],
        signer: Signer,
        *,
        origin: str | None = None,
        cache_tiles: int = DEFAULT_CACHE_TILES,
    ) -> Log:
        """Open (creating if new) the log at a data directory or a ``postgresql://`` URL."""
        store = open_store(os.fspath(location))
        try:
            return cls(store, signer, origin=origin, cache_tiles=cache_tiles)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        """Close the store."""
        self._signing.close()
        self._store.close()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Log(origin={self.origin!r}, size={self.size}, store={self._store!r})"

    # -- state ------------------------------------------------------------------------------

    @property
    def vkey(self) -> str:
        """The verifier key that signs this log's checkpoints."""
        return self._signer.vkey

    @property
    def size(self) -> int:
        """The number of committed entries."""
        return self._frontier.size

    @property
    def signed_checkpoint(self) -> str:
        """The latest signed checkpoint note."""
        return self._signed

    def _load(self) -> tuple[Frontier, str]:
        """Load the frontier and check it against the latest signed checkpoint."""
        size, signed = self._store.head()
        checkpoint = self._check_checkpoint(signed, size)
        edge_nodes = [
            (lvl, (size >> lvl) - 1) for lvl in range(size.bit_length()) if size >> lvl & 1
        ]
        edge = dict(zip((lvl for lvl, _ in edge_nodes), self._read_nodes(edge_nodes), strict=True))
        partial = {}
        for tile_level in range(max(1, (size.bit_length() + TILE_HEIGHT - 1) // TILE_HEIGHT)):
            count = size >> (TILE_HEIGHT * tile_level)
            width = count % TILE_WIDTH
            if width:
                index = count >> TILE_HEIGHT
                stored = self._store.read_tiles([(tile_level, index)]).get((tile_level, index))
                if stored is None or stored[0] != width or len(stored[1]) != stored_size(width):
                    raise StorageError(f"tile ({tile_level}, {index}) does not match size {size}")
                partial[tile_level] = (index, stored[1])
        frontier = Frontier(size, edge, partial)
        if frontier.root != checkpoint.root:
            raise StorageError(
                f"the stored tree of size {size} has root {frontier.root.hex()}, but the latest "
                f"checkpoint says {checkpoint.root.hex()}: the store is corrupt"
            )
        return frontier, signed

    def _check_checkpoint(self, signed: str, size: int) -> Checkpoint:
        try:
            checkpoint, _ = verify_checkpoint(signed, [self.vkey], origin=self.origin)
        except VerificationError as exc:
            raise StorageError(f"stored checkpoint at size {size} does not verify: {exc}") from exc
        if checkpoint.size != size:
            raise StorageError(f"stored checkpoint at size {size} says size {checkpoint.size}")
        return checkpoint

    # -- writing ----------------------------------------------------------------------------

    def append(self, entries: Sequence[bytes], *, waited: bool = False) -> Appended:
        """Append a batch of entries and commit it with a new signed checkpoint.

        Returns when the batch is durable. On any error nothing of the batch is committed and the
        log is unchanged, unless the store had made it durable (a failure after its journal record
        was written: the store then refuses commits until the log is reopened, which replays the
        record). ``waited``: a caller is waiting for this batch alone, so the store may
        have the checkpoint signed on another thread while it syncs (a thread handoff costs CPU
        that only a waiting caller's latency repays; under load, or for promised entries, the
        CPU is what counts).
        """
        if not entries:
            raise InputError("cannot append an empty batch")
        if set(map(type, entries)) != {bytes} or max(map(len, entries)) > MAX_ENTRY_BYTES:
            for position, entry in enumerate(entries):
                if not isinstance(entry, bytes):
                    raise InputError(f"entry {position} is {type(entry).__name__}, not bytes")
                if len(entry) > MAX_ENTRY_BYTES:
                    raise InputError(
                        f"entry {position} is {len(entry)} bytes; at most {MAX_ENTRY_BYTES}"
                    )
        leaf_hashes = merkle.leaf_hashes(entries)
        with self._write_lock:
            old = self._frontier
            new, tiles = old.grow(leaf_hashes)
            checkpoint = Checkpoint(self.origin, new.size, new.root)
            signing = self._signing.prepare(checkpoint.text, aside=waited)
            signed = self._store.commit(old.size, entries, tiles, (new.size, signing))
            if not isinstance(signed, str) or not signed.startswith(checkpoint.text):
                raise StorageError(
                    f"the store returned no note of the checkpoint of size {new.size}"
                )
            self._frontier, self._signed = new, signed
        return Appended(old.size, checkpoint, signed)

    # -- reading ----------------------------------------------------------------------------

    def _read_tiles(
        self, keys: Iterable[tuple[int, int]], frontier: Frontier | None = None
    ) -> dict[tuple[int, int], tuple[int, bytes]]:
        """Stored tiles: partial ones from the frontier, full ones from the cache or the store."""
        frontier = frontier or self._frontier  # one immutable snapshot for the whole read
        found: dict[tuple[int, int], tuple[int, bytes]] = {}
        missing = set()
        for key in keys:
            partial = frontier.tiles.get(key[0])
            if partial is not None and partial[0] == key[1]:
                found[key] = ((frontier.size >> (TILE_HEIGHT * key[0])) % TILE_WIDTH, partial[1])
            elif (cached := self._full_tiles.get(key)) is not None:
                found[key] = (TILE_WIDTH, cached)
            else:
                missing.add(key)
        if missing:
            for key, (width, data) in self._store.read_tiles(missing).items():
                if len(data) != stored_size(width):
                    raise StorageError(f"stored tile {key} is truncated: the store is corrupt")
                found[key] = (width, data)
                if width == TILE_WIDTH:  # full tiles never change: safe to keep
                    self._full_tiles.put(key, data)
        return found

    @staticmethod
    def _nodes_in(
        tiles: dict[tuple[int, int], tuple[int, bytes]],
        nodes: Sequence[Node],
        places: Sequence[tuple[int, int, int, int]],
    ) -> list[bytes]:
        out = []
        for (level, index), (tile_level, tile_index, row, position) in zip(
            nodes, places, strict=True
        ):
            width, stored = tiles.get((tile_level, tile_index), (0, b""))
            if position >= width >> row:
                raise StorageError(f"tree node ({level}, {index}) is missing from the store")
            offset = row_offset(width, row) + HASH_SIZE * position
            out.append(stored[offset : offset + HASH_SIZE])
        return out

    def _read_nodes(self, nodes: Sequence[Node]) -> list[bytes]:
        """Hashes of complete subtrees, from the stored tiles (at most one store read per call)."""
        places = [locate(level, index) for level, index in nodes]
        return self._nodes_in(self._read_tiles({(p[0], p[1]) for p in places}), nodes, places)

    def _check_size(self, size: int | None) -> int:
        current = self.size
        if size is None:
            return current
        if not 0 <= size <= current:
            raise InputError(f"tree size {size!r} is outside the log's 0..{current}")
        return size

    def root(self, size: int | None = None) -> bytes:
        """The root hash at ``size`` (default: the latest), in O(log n) reads."""
        return merkle.root_from(self._check_size(size), self._read_nodes)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` entries.

        The same proof as :func:`verinfer.merkle.inclusion_proof_from`, assembled for the stored
        layout: the siblings below the path's top come eight at a time out of one stored tile
        per tile level, and the top of the path, which depends only on the tree size and the
        level where the path meets the right edge, is computed once and kept.
        """
        frontier = self._frontier  # one snapshot: its partial tiles match its size
        tree_size = frontier.size if size is None else self._check_size(size)
        if not 0 <= index < tree_size:
            raise InputError(f"entry index {index!r} is outside a tree of size {tree_size}")
        inner = merkle.inclusion_inner(index, tree_size)
        tail = self._tails.get((tree_size, inner))
        low = inner - 1  # levels whose sibling is a complete node in the leaf's own tiles
        keys: list[tuple[int, int]] = []
        shift = 0
        while shift < low:
            shift += TILE_HEIGHT
            keys.append((len(keys), index >> shift))
        if tail is None:
            tail, tiles = self._inclusion_tail(tree_size, inner, keys, frontier)
        else:
            gathered = self._gather_cached(index, low, keys, frontier)
            if gathered is not None:
                return gathered + tail
            tiles = self._read_tiles(keys, frontier)
        proof: list[bytes] = []
        for key in keys:
            width, stored = tiles.get(key, (0, b""))
            shift = TILE_HEIGHT * key[0]
            rows = low - shift
            proof += siblings(stored, width, (index >> shift) & (TILE_WIDTH - 1), min(rows, 8))
        return proof + tail

    def _gather_cached(
        self, index: int, low: int, keys: list[tuple[int, int]], frontier: Frontier
    ) -> list[bytes] | None:
        """The path's siblings if all its tiles are in memory (the common, warm case)."""
        cached = self._full_tiles.items
        proof: list[bytes] = []
        for key in keys:
            shift = TILE_HEIGHT * key[0]
            position = (index >> shift) & (TILE_WIDTH - 1)
            rows = min(low - shift, TILE_HEIGHT)
            partial = frontier.tiles.get(key[0])
            if partial is not None and partial[0] == key[1]:
                width = (frontier.size >> shift) % TILE_WIDTH
                proof += siblings(partial[1], width, position, rows)
                continue
            stored = cached.get(key)
            if stored is None:
                return None
            if rows == TILE_HEIGHT:  # cached tiles are full and length-checked: gather at once
                proof += FULL_SIBLINGS[position](stored)
            else:
                proof += siblings(stored, TILE_WIDTH, position, rows)
            try:  # noqa: SIM105 - as in _LRU.get
                cached.move_to_end(key)
            except KeyError:  # evicted meanwhile: it only loses its refresh
                pass
        return proof

    def _inclusion_tail(
        self, size: int, inner: int, keys: list[tuple[int, int]], frontier: Frontier
    ) -> tuple[list[bytes], dict[tuple[int, int], tuple[int, bytes]]]:
        """The top of the inclusion paths that meet the right edge at ``inner`` (then kept),
        and the stored tiles ``keys`` read in the same store round trip."""
        right, left = merkle.inclusion_tail(size, inner)
        nodes = right + left
        places = [locate(level, node) for level, node in nodes]
        tiles = self._read_tiles([*keys, *((p[0], p[1]) for p in places)], frontier)
        hashes = self._nodes_in(tiles, nodes, places)
        tail = hashes[len(right) :]
        if right:
            tail.insert(0, merkle.fold_right(hashes[: len(right)]))
        if len(self._tails) >= _TAIL_CACHE:
            self._tails.clear()
        self._tails[size, inner] = tail
        return tail, tiles

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """The RFC 9162 consistency proof from ``size1`` to ``size2`` (default: the latest)."""
        tree_size = self._check_size(size2)
        if not 0 <= size1 <= tree_size:
            raise InputError(f"tree size {size1!r} is outside 0..{tree_size}")
        return merkle.consistency_proof_from(size1, tree_size, self._read_nodes)

    def leaf_hash(self, index: int) -> bytes:
        """The leaf hash of entry ``index``."""
        if not 0 <= index < self.size:
            raise NotFound(f"no entry {index!r}; the log has {self.size}")
        return self._read_nodes([(0, index)])[0]

    def entries(self, start: int, end: int) -> list[bytes]:
        """Entries ``[start, end)``, each checked against its leaf hash."""
        if not 0 <= start <= end <= self.size:
            raise InputError(
                f"entry range [{start!r}, {end!r}) is outside the log's 0..{self.size}"
            )
        if start == end:
            return []
        data = self._store.read_entries(start, end)
        if len(data) != end - start:
            raise StorageError(f"entries [{start}, {end}) are incomplete in the store")
        expected = self._read_nodes([(0, index) for index in range(start, end)])
        for index, (entry, leaf) in enumerate(zip(data, expected, strict=True), start):
            if merkle.leaf_hash(entry) != leaf:
                raise StorageError(f"entry {index} does not match its leaf hash: store is corrupt")
        return data

    def find(self, leaf_hash: bytes) -> int:
        """The index of the first entry whose RFC 9162 leaf hash is ``leaf_hash``."""
        if not isinstance(leaf_hash, bytes) or len(leaf_hash) != 32:
            raise InputError("a leaf hash is 32 bytes")
        found = []
        for tile, hashes in self._store.find_leaf_tiles(leaf_hash):
            for offset in range(0, len(hashes), 32):  # only aligned matches are leaf hashes
                if hashes[offset : offset + 32] == leaf_hash:
                    found.append(tile * TILE_WIDTH + offset // 32)
        for index in sorted(found):
            if index < self.size and merkle.leaf_hash(self.entry(index)) == leaf_hash:
                return index
        raise NotFound(f"no entry with leaf hash {leaf_hash.hex()} in the log")

    def entry(self, index: int) -> bytes:
        """Entry ``index``, checked against its leaf hash."""
        if not 0 <= index < self.size:
            raise NotFound(f"no entry {index!r}; the log has {self.size}")
        return self.entries(index, index + 1)[0]

    def checkpoint_at(self, size: int) -> str:
        """The signed checkpoint the log issued at ``size``."""
        if not isinstance(size, int) or not 0 <= size <= self.size:
            raise NotFound(f"the log issued no checkpoint at size {size!r}")
        signed = self._store.checkpoint(size)
        if signed is None:
            raise NotFound(f"the log issued no checkpoint at size {size!r}")
        return signed

    def checkpoint_sizes(self) -> list[int]:
        """The sizes at which the log issued checkpoints, ascending."""
        return self._store.checkpoint_sizes()

    def tile(self, level: int, index: int, width: int | None = None) -> bytes:
        """The C2SP tile ``tile/<level>/<index>[.p/<width>]`` (row 0 of the stored tile)."""
        stored = self._read_tiles({(level, index)}).get((level, index))
        wanted = TILE_WIDTH if width is None else width
        if not 1 <= wanted <= TILE_WIDTH:
            raise InputError(f"tile width must be 1..256, got {width!r}")
        if stored is None or stored[0] < wanted:
            raise NotFound(f"tile {level}/{index} of width {wanted} does not exist (yet)")
        return stored[1][: HASH_SIZE * wanted]

    def entry_bundle(self, index: int, width: int | None = None) -> bytes:
        """The C2SP entry bundle ``tile/entries/<index>[.p/<width>]``."""
        wanted = TILE_WIDTH if width is None else width
        if not 1 <= wanted <= TILE_WIDTH:
            raise InputError(f"entry bundle width must be 1..256, got {width!r}")
        start = index * TILE_WIDTH
        if index < 0 or start + wanted > self.size:
            raise NotFound(f"entry bundle {index} of width {wanted} does not exist (yet)")
        return b"".join(len(e).to_bytes(2, "big") + e for e in self.entries(start, start + wanted))

    # -- auditing ---------------------------------------------------------------------------

    def verify(self) -> None:
        """Recompute the whole log from its entries and check every stored hash and checkpoint.

        O(n): meant for audits, tests and recovery, not for serving. Raises
        :class:`VerificationError` naming the first inconsistency.
        """
        size = self.size
        sizes = [s for s in self.checkpoint_sizes() if s <= size]  # later ones: not this tree
        boundaries = sorted({*sizes, *range(_REPLAY_CHUNK, size, _REPLAY_CHUNK), size})
        checkpoints = set(sizes)
        frontier = Frontier()
        for end in boundaries:
            if end > frontier.size:
                leaves = [merkle.leaf_hash(e) for e in self._store.read_entries(frontier.size, end)]
                if len(leaves) != end - frontier.size:
                    raise VerificationError(f"entries below {end} are missing")
                frontier, rows = frontier.grow(leaves)
                self._compare_tiles([row for row in rows if row[2] == TILE_WIDTH])
            if end in checkpoints:
                # (1) every issued checkpoint is signed by the log and (2) matches the replayed tree
                try:
                    checkpoint = self._check_checkpoint(self.checkpoint_at(end), end)
                except StorageError as exc:
                    raise VerificationError(str(exc)) from exc
                if checkpoint.root != frontier.root:
                    raise VerificationError(f"checkpoint at size {end} does not match the entries")
        # (3) the partial tiles at the right edge match too (full tiles were compared on the way)
        self._compare_tiles(
            [
                (level, index, (size >> (TILE_HEIGHT * level)) % TILE_WIDTH, data)
                for level, (index, data) in frontier.tiles.items()
            ]
        )

    def _compare_tiles(self, rows: Sequence[tuple[int, int, int, bytes]]) -> None:
        """The stored tiles hold ``rows``; a stored tile a later batch widened (appends go on
        while a log is verified) must extend the row: each of its rows starts with the row's."""
        stored = self._store.read_tiles([(level, index) for level, index, _, _ in rows])
        for level, index, width, data in rows:
            found_width, found = stored.get((level, index), (0, b""))
            if (
                not width <= found_width <= TILE_WIDTH
                or len(found) != stored_size(found_width)
                or any(
                    found[row_offset(found_width, row) :][: HASH_SIZE * (width >> row)]
                    != data[row_offset(width, row) : row_offset(width, row + 1)]
                    for row in range(TILE_HEIGHT)
                )
            ):
                raise VerificationError(
                    f"stored tile ({level}, {index}) does not match the entries"
                )
