"""The log through its public interface, on both back ends (SQLite file, PostgreSQL server)."""

from __future__ import annotations

import random
import socket
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from verinfer import merkle, note
from verinfer.errors import ConflictError, InputError, NotFound, StorageError, VerificationError
from verinfer.log import MAX_ENTRY_BYTES, Log, sqlite
from verinfer.log.tiles import TILE_WIDTH


def entries_for(start: int, count: int) -> list[bytes]:
    return [b"entry-%d" % i for i in range(start, start + count)]


def fill(log: Log, sizes: list[int]) -> list[bytes]:
    """Append batches of the given sizes; return the leaf hashes of everything appended."""
    hashes = []
    for count in sizes:
        batch = entries_for(log.size, count)
        log.append(batch)
        hashes += merkle.leaf_hashes(batch)
    return hashes


def test_a_new_log_has_a_signed_empty_checkpoint(log_location: str, signer: note.Signer) -> None:
    with Log.open(log_location, signer) as log:
        checkpoint, _ = note.verify_checkpoint(log.signed_checkpoint, [signer.vkey])
        assert (checkpoint.origin, checkpoint.size, checkpoint.root) == (
            signer.name,
            0,
            merkle.EMPTY_ROOT,
        )
        assert log.root() == merkle.EMPTY_ROOT
        assert log.checkpoint_sizes() == [0]


def test_batches_build_the_rfc9162_tree(log_location: str, signer: note.Signer) -> None:
    rng = random.Random(1)
    sizes = [rng.choice([1, 2, 3, 7, 100, 255, 256, 257, 600]) for _ in range(25)]
    with Log.open(log_location, signer) as log:
        hashes = []
        for count in sizes:
            batch = entries_for(log.size, count)
            appended = log.append(batch)
            hashes += merkle.leaf_hashes(batch)
            assert appended.start == len(hashes) - count
            assert appended.end == len(hashes)
            assert appended.checkpoint.root == merkle.root(hashes)
            cp, _ = note.verify_checkpoint(appended.signed_checkpoint, [signer.vkey])
            assert cp == appended.checkpoint
        for size in [0, 1, 255, 256, 257, 1000, len(hashes)]:
            assert log.root(size) == merkle.root(hashes[:size])


def test_proofs_verify_against_every_issued_checkpoint(
    log_location: str, signer: note.Signer
) -> None:
    rng = random.Random(2)
    with Log.open(log_location, signer) as log:
        hashes = fill(log, [rng.randint(1, 300) for _ in range(20)])
        issued = log.checkpoint_sizes()
        assert issued[0] == 0
        assert issued[-1] == len(hashes)
        checkpoints = {
            size: note.verify_checkpoint(log.checkpoint_at(size), [signer.vkey])[0]
            for size in issued
        }
        for size, checkpoint in checkpoints.items():
            assert checkpoint.size == size
            for index in rng.sample(range(size), min(size, 10)):
                proof = log.inclusion_proof(index, size)
                assert proof == merkle.inclusion_proof(index, hashes[:size])
                merkle.verify_inclusion(hashes[index], index, size, proof, checkpoint.root)
        # every pair of issued checkpoints is consistent: the log only ever grew
        for old in issued:
            for new in issued:
                if old <= new:
                    proof = log.consistency_proof(old, new)
                    merkle.verify_consistency(
                        old, new, checkpoints[old].root, checkpoints[new].root, proof
                    )


def test_stored_proofs_equal_the_reference_across_three_tile_levels(
    tmp_path: Path, signer: note.Signer
) -> None:
    """The tile-gathering proof path against the generic planner, at every kind of boundary."""
    rng = random.Random(3)
    with Log.open(tmp_path / "data", signer) as log:
        hashes = fill(log, [20_000] * 3 + [10_001])  # 70,001 entries: tiles at levels 0, 1, 2
        sizes = [1, 2, 3, 255, 256, 257, 511, 512, 65_535, 65_536, 65_537, 70_000, log.size]
        for size in sizes + rng.sample(range(1, log.size), 20):
            edges = {0, size - 1, size // 2, 255, 256, 65_535, 65_536} & set(range(size))
            for index in sorted(edges | set(rng.sample(range(size), min(size, 30)))):
                expected = merkle.inclusion_proof_from(index, size, log._read_nodes)
                assert log.inclusion_proof(index, size) == expected, (index, size)
                assert log.inclusion_proof(index, size) == expected  # again, from the caches
        for index in [0, 255, 256, 70_000]:  # the reference over the leaf list, at full size
            assert log.inclusion_proof(index) == merkle.inclusion_proof(index, hashes)


def test_reopening_continues_the_same_tree(log_location: str, signer: note.Signer) -> None:
    with Log.open(log_location, signer) as log:
        hashes = fill(log, [300, 1, 44])
        first = log.signed_checkpoint
    with Log.open(log_location, signer) as log:
        assert log.size == len(hashes)
        assert log.signed_checkpoint == first
        hashes += fill(log, [513, 2])
        assert log.root() == merkle.root(hashes)
        log.verify()


def test_entries_are_read_back_by_index_and_range(log_location: str, signer: note.Signer) -> None:
    with Log.open(log_location, signer) as log:
        fill(log, [10, 300])
        assert log.entries(0, 310) == entries_for(0, 310)
        assert log.entries(255, 258) == entries_for(255, 3)
        assert log.entries(5, 5) == []
        assert log.entry(309) == b"entry-309"
        assert log.leaf_hash(7) == merkle.leaf_hash(b"entry-7")
        with pytest.raises(NotFound, match="no entry 310"):
            log.entry(310)
        with pytest.raises(InputError, match="outside the log"):
            log.entries(300, 311)
        with pytest.raises(InputError, match="outside the log"):
            log.entries(-1, 2)


def test_tiles_and_entry_bundles_follow_c2sp(log_location: str, signer: note.Signer) -> None:
    with Log.open(log_location, signer) as log:
        hashes = fill(log, [256 * 3 + 17])
        assert log.tile(0, 0) == b"".join(hashes[:256])
        assert log.tile(0, 3, 17) == b"".join(hashes[768:785])
        assert log.tile(0, 3, 5) == b"".join(hashes[768:773])  # a smaller checkpoint's view
        level1 = log.tile(1, 0, 3)
        assert [level1[i * 32 : (i + 1) * 32] for i in range(3)] == [
            merkle.root(hashes[i * 256 : (i + 1) * 256]) for i in range(3)
        ]
        with pytest.raises(NotFound, match=r"tile 0/3 of width 256 does not exist \(yet\)"):
            log.tile(0, 3)  # not full yet
        with pytest.raises(NotFound, match=r"tile 1/0 of width 4 does not exist \(yet\)"):
            log.tile(1, 0, 4)
        with pytest.raises(InputError, match="width"):
            log.tile(0, 0, 0)
        bundle = log.entry_bundle(3, 17)
        decoded, position = [], 0
        while position < len(bundle):
            length = int.from_bytes(bundle[position : position + 2], "big")
            decoded.append(bundle[position + 2 : position + 2 + length])
            position += 2 + length
        assert decoded == entries_for(768, 17)
        assert len(log.entry_bundle(0)) == sum(2 + len(e) for e in entries_for(0, 256))
        with pytest.raises(NotFound, match=r"entry bundle 3 of width 18 does not exist \(yet\)"):
            log.entry_bundle(3, 18)


def test_proofs_read_few_tiles_and_never_rehash_entries(
    tmp_path: Path, signer: note.Signer
) -> None:
    """Proofs come from stored tiles: no entry is read, and a handful of tiles per proof."""
    with Log.open(tmp_path / "data", signer, cache_tiles=0) as log:
        fill(log, [4096] * 20 + [123])
        store = log._store
        calls: list[int] = []
        read_tiles = store.read_tiles

        def counting(keys):  # type: ignore[no-untyped-def]
            calls.append(len(keys))
            return read_tiles(keys)

        store.read_tiles = counting  # type: ignore[method-assign]
        store.read_entries = lambda *a: pytest.fail("a proof read entries")  # type: ignore[method-assign]
        size = log.size  # 82,043 entries: three tile levels
        for index in [0, 1, 255, 256, 65535, 65536, size - 1]:
            calls.clear()
            log.inclusion_proof(index, size)
            assert len(calls) <= 1  # one store round trip at most (none at the right edge)
            assert sum(calls) <= 2 * 3  # at most two stored tiles per tile level
        for old in [1, 256, 65536, size - 1]:
            calls.clear()
            log.consistency_proof(old, size)
            assert len(calls) <= 1
            assert sum(calls) <= 2 * 3


def test_bad_batches_are_rejected_and_change_nothing(
    log_location: str, signer: note.Signer
) -> None:
    with Log.open(log_location, signer) as log:
        fill(log, [3])
        before = log.signed_checkpoint
        with pytest.raises(InputError, match="empty batch"):
            log.append([])
        with pytest.raises(InputError, match="entry 1 is str, not bytes"):
            log.append([b"ok", "text", b"ok"])  # type: ignore[list-item]
        with pytest.raises(InputError, match=f"entry 0 is {MAX_ENTRY_BYTES + 1} bytes"):
            log.append([b"x" * (MAX_ENTRY_BYTES + 1)])
        assert log.signed_checkpoint == before
        assert log.size == 3
        log.append([b"", b"x" * MAX_ENTRY_BYTES])  # the limits themselves are fine
        log.verify()


def test_proof_requests_outside_the_tree_are_input_errors(
    log_location: str, signer: note.Signer
) -> None:
    with Log.open(log_location, signer) as log:
        fill(log, [5])
        with pytest.raises(InputError, match="outside"):
            log.inclusion_proof(5)
        with pytest.raises(InputError, match="outside"):
            log.inclusion_proof(0, 6)
        with pytest.raises(InputError, match="outside"):
            log.consistency_proof(6)
        with pytest.raises(InputError, match="outside"):
            log.root(6)
        with pytest.raises(NotFound, match="no checkpoint at size 4"):
            log.checkpoint_at(4)


def test_a_log_opens_only_with_its_own_key_and_origin(
    log_location: str, signer: note.Signer
) -> None:
    with Log.open(log_location, signer, origin="example.com/log-a") as log:
        fill(log, [2])
    other = note.Signer(note.generate_key("log.test.verinfer.example/a")[0])
    with pytest.raises(InputError, match="this log is signed by"):
        Log.open(log_location, other)
    with pytest.raises(InputError, match=r"origin is 'example\.com/log-a'"):
        Log.open(log_location, signer, origin="example.com/log-b")
    with Log.open(log_location, signer) as log:
        assert log.origin == "example.com/log-a"


def test_a_second_writer_gets_a_conflict_not_a_fork(
    log_location: str, signer: note.Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not log_location.startswith("postgresql://"):  # SQLite: one opener at a time
        monkeypatch.setattr(sqlite, "_OPEN_WAIT", 0.0)
        with Log.open(log_location, signer) as first:
            first.append([b"a"])
            with pytest.raises(StorageError, match="open elsewhere"):
                Log.open(log_location, signer)
        with Log.open(log_location, signer) as log:  # closed: the next opener gets in
            assert log.entries(0, 1) == [b"a"]
        return
    first = Log.open(log_location, signer)
    second = Log.open(log_location, signer)
    try:
        first.append([b"a"])
        with pytest.raises(ConflictError, match="another writer"):
            second.append([b"b"])
        assert second.size == 0  # its view did not move: nothing half-applied
        first.append([b"c"])
    finally:
        first.close()
        second.close()
    with Log.open(log_location, signer) as log:
        assert log.entries(0, 2) == [b"a", b"c"]
        log.verify()


def test_readers_during_appends_see_only_committed_verifiable_state(
    log_location: str, signer: note.Signer
) -> None:
    with Log.open(log_location, signer) as log:
        fill(log, [1])
        stop = threading.Event()
        failures: list[BaseException] = []

        def reader() -> None:
            rng = random.Random(3)
            try:
                while not stop.is_set():
                    checkpoint, _ = note.verify_checkpoint(log.signed_checkpoint, [signer.vkey])
                    index = rng.randrange(checkpoint.size)
                    proof = log.inclusion_proof(index, checkpoint.size)
                    leaf = merkle.leaf_hash(log.entry(index))
                    merkle.verify_inclusion(leaf, index, checkpoint.size, proof, checkpoint.root)
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            for count in [1, 5, 50, 255, 3, 700, 2]:
                log.append(entries_for(log.size, count))
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert not failures, failures


Execute = Callable[[str, tuple[object, ...]], list[tuple[object, ...]]]


def _tamper(location: str, change: Callable[[Execute], None]) -> None:
    """Change the store behind the log's back, after dropping its append-only guards.

    ``change`` gets an ``execute(sql, params)`` that takes ``?`` placeholders on both back ends.
    """
    if location.startswith("postgresql://"):
        with psycopg.connect(location, autocommit=True) as conn:
            for table in ("entries", "tiles", "checkpoints"):
                conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")

            def execute(sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
                cursor = conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
                return cursor.fetchall() if cursor.description else []

            change(execute)
    else:
        db = sqlite3.connect(Path(location) / "log.sqlite", isolation_level=None)
        for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        ).fetchall():
            db.execute(f"DROP TRIGGER {name}")
        change(lambda sql, params: db.execute(sql, params).fetchall())
        db.close()


def test_an_altered_entry_is_never_served(log_location: str, signer: note.Signer) -> None:
    with Log.open(log_location, signer) as log:
        fill(log, [300])
    _tamper(
        log_location,
        lambda execute: execute("UPDATE entries SET data = ? WHERE idx = 42", (b"evil",)),
    )
    with Log.open(log_location, signer) as log:
        with pytest.raises(StorageError, match="entry 42 does not match its leaf hash"):
            log.entries(40, 45)
        with pytest.raises(StorageError, match="entry 42"):
            log.entry(42)
        assert log.entry(41) == b"entry-41"
        with pytest.raises(VerificationError, match="entries"):
            log.verify()


def _flip_tile(execute: Execute, level: int, index: int) -> None:
    [(data,)] = execute("SELECT hashes FROM tiles WHERE level = ? AND idx = ?", (level, index))
    flipped = bytes(b ^ 1 for b in bytes(data))  # type: ignore[arg-type]
    execute("UPDATE tiles SET hashes = ? WHERE level = ? AND idx = ?", (flipped, level, index))


def test_an_altered_tree_is_caught_on_open(log_location: str, signer: note.Signer) -> None:
    with Log.open(log_location, signer) as log:
        fill(log, [300])
    # the partial level-0 tile holds most of the right edge: the root no longer matches
    _tamper(log_location, lambda execute: _flip_tile(execute, 0, 1))
    with pytest.raises(StorageError, match="the store is corrupt"):
        Log.open(log_location, signer)


def test_an_altered_full_tile_is_caught_by_verify(log_location: str, signer: note.Signer) -> None:
    with Log.open(log_location, signer) as log:
        fill(log, [600])
    _tamper(log_location, lambda execute: _flip_tile(execute, 0, 0))
    with Log.open(log_location, signer) as log:  # the right edge is intact, so it opens
        with pytest.raises(StorageError, match="entry 0 does not match"):
            log.entry(0)
        with pytest.raises(VerificationError, match=r"stored tile \(0, 0\)"):
            log.verify()


def test_a_truncated_tile_is_caught_on_open(log_location: str, signer: note.Signer) -> None:
    with Log.open(log_location, signer) as log:
        fill(log, [300])
    _tamper(
        log_location,
        lambda execute: execute(
            "UPDATE tiles SET hashes = ? WHERE level = 0 AND idx = 1", (b"\x00" * 40,)
        ),
    )
    with pytest.raises(StorageError, match=r"tile \(0, 1\) is truncated"):
        Log.open(log_location, signer)


def test_a_truncated_full_tile_fails_a_proof_not_silently(
    log_location: str, signer: note.Signer
) -> None:
    with Log.open(log_location, signer) as log:
        fill(log, [600])
    _tamper(
        log_location,
        lambda execute: execute(
            "UPDATE tiles SET hashes = ? WHERE level = 0 AND idx = 0", (b"\x00" * 40,)
        ),
    )
    with Log.open(log_location, signer) as log:  # the right edge is intact, so it opens
        for index in (0, 17, 255):
            with pytest.raises(StorageError, match=r"tile \(0, 0\) is truncated"):
                log.inclusion_proof(index)


def test_a_forged_checkpoint_is_caught_on_open(log_location: str, signer: note.Signer) -> None:
    with Log.open(log_location, signer) as log:
        fill(log, [3])
    forger = note.Signer(note.generate_key(signer.name)[0])
    forged = forger.sign(note.Checkpoint(signer.name, 4, b"\x07" * 32).text)
    _tamper(
        log_location,
        lambda execute: execute("INSERT INTO checkpoints (size, note) VALUES (?, ?)", (4, forged)),
    )
    with pytest.raises(StorageError, match="does not verify"):
        Log.open(log_location, signer)


def test_the_store_refuses_to_rewrite_history(log_location: str, signer: note.Signer) -> None:
    with Log.open(log_location, signer) as log:
        fill(log, [TILE_WIDTH + 1])
    if log_location.startswith("postgresql://"):
        with psycopg.connect(log_location, autocommit=True) as conn:
            for statement in (
                "UPDATE entries SET data = 'x' WHERE idx = 0",
                "DELETE FROM entries WHERE idx = 0",
                "DELETE FROM checkpoints WHERE size = 0",
                "UPDATE tiles SET width = 1 WHERE level = 0 AND idx = 0",
            ):
                with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                    conn.execute(statement)
    else:
        db = sqlite3.connect(Path(log_location) / "log.sqlite")
        for statement in (
            "UPDATE entries SET data = x'00' WHERE idx = 0",
            "DELETE FROM entries WHERE idx = 0",
            "DELETE FROM checkpoints WHERE size = 0",
            "UPDATE tiles SET width = 1 WHERE level = 0 AND idx = 0",
        ):
            with pytest.raises(sqlite3.IntegrityError, match=r"append-only|only ever widen"):
                db.execute(statement)
        db.close()


def test_an_unreachable_postgres_is_a_storage_error_without_the_password(
    postgres_server: object, signer: note.Signer
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://verinfer:s3cret-pw@127.0.0.1:{port}/nowhere?connect_timeout=5"
    with pytest.raises(StorageError, match="cannot open log database") as caught:
        Log.open(url, signer)
    assert "s3cret-pw" not in str(caught.value)
    assert "s3cret-pw" not in caught.value.diagnostics()


def test_a_full_tile_is_served_from_cache_and_store_alike(
    tmp_path: Path, signer: note.Signer
) -> None:
    with Log.open(tmp_path / "data", signer) as log:
        hashes = fill(log, [600])
        cold = log.tile(0, 1)  # from the store
        assert log.tile(0, 1) == cold == b"".join(hashes[256:512])  # then from the cache
        assert log.tile(0, 2, 88) == b"".join(hashes[512:600])  # the partial one, from memory


def test_an_entry_is_found_by_its_leaf_hash(log_location: str, signer: note.Signer) -> None:
    """Clients holding a receipt ask for its proof by leaf hash: found in full tiles, in the
    partial last one, after reopening; a hash that is no leaf, or straddles two, is not."""
    with Log.open(log_location, signer) as log:
        log.append([b"entry %d" % i for i in range(300)])
        log.append([b"entry 300", b"entry 0"])  # a repeated entry: the first index answers
        for index in (0, 1, 255, 256, 299, 300):
            assert log.find(merkle.leaf_hash(b"entry %d" % index)) == index
        assert log.find(merkle.leaf_hash(b"entry 0")) == 0
        tile = log.tile(0, 0)
        straddling = tile[16:48]  # the second half of one hash and the first of the next
        for missing in (merkle.leaf_hash(b"no such entry"), straddling):
            with pytest.raises(NotFound, match="no entry with leaf hash"):
                log.find(missing)
        with pytest.raises(InputError, match="32 bytes"):
            log.find(b"short")
    with Log.open(log_location, signer) as reopened:
        assert reopened.find(merkle.leaf_hash(b"entry 257")) == 257
