"""Tile coordinates, the stored-tile layout and C2SP tlog-tiles paths (pure functions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verinfer import merkle
from verinfer.errors import InputError
from verinfer.log.tiles import (
    TILE_WIDTH,
    Frontier,
    entries_path,
    locate,
    parse_path,
    row_offset,
    stored_size,
    tile_path,
)


def test_paths_follow_the_c2sp_examples() -> None:
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(1, 0) == "tile/1/000"
    assert tile_path(2, 1000, 17) == "tile/2/x001/000.p/17"
    assert tile_path(0, 5, TILE_WIDTH) == "tile/0/005"
    assert entries_path(1234067, 1) == "tile/entries/x001/x234/067.p/1"


@given(
    st.one_of(st.none(), st.integers(0, 63)),
    st.integers(0, 10**15),
    st.one_of(st.none(), st.integers(1, 255)),
)
def test_paths_round_trip(level: int | None, index: int, width: int | None) -> None:
    path = entries_path(index, width) if level is None else tile_path(level, index, width)
    assert parse_path(path) == (level, index, width)


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/1",  # not three digits
        "tile/0/x1/000",
        "tile/0/001/002",  # non-final group without x
        "tile/0/x000/001",  # leading zero group: a second spelling of 1
        "tile/64/000",
        "tile/01/000",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/07",
        "tile/entries/000.p/",
        "tile/x/000",
        "/tile/0/000",
    ],
)
def test_malformed_paths_are_rejected(path: str) -> None:
    with pytest.raises(InputError, match="malformed tile path"):
        parse_path(path)


def test_every_node_has_one_home() -> None:
    assert locate(0, 300) == (0, 1, 0, 44)
    assert locate(8, 300) == (1, 1, 0, 44)
    assert locate(3, 5) == (0, 0, 3, 5)
    assert locate(7, 1) == (0, 0, 7, 1)
    assert locate(7, 2) == (0, 1, 7, 0)
    homes = {locate(level, index) for level in range(16) for index in range(1 << (16 - level))}
    assert len(homes) == sum(1 << (16 - level) for level in range(16))


def test_stored_tile_layout() -> None:
    assert stored_size(TILE_WIDTH) == 32 * (256 + 128 + 64 + 32 + 16 + 8 + 4 + 2)
    assert stored_size(1) == 32
    assert row_offset(5, 1) == 32 * 5
    assert row_offset(5, 2) == 32 * (5 + 2)


@given(st.lists(st.integers(1, 700), min_size=1, max_size=12))
def test_frontier_growth_matches_a_full_rebuild(batches: list[int]) -> None:
    """Growing in any batch sizes yields the same tree, and stored tiles hold exact node hashes."""
    frontier, hashes, stored = Frontier(), [], {}
    for count in batches:
        leaves = [merkle.leaf_hash(b"%d" % i) for i in range(len(hashes), len(hashes) + count)]
        frontier, rows = frontier.grow(leaves)
        hashes += leaves
        for level, index, width, data in rows:
            assert len(data) == stored_size(width)
            stored[(level, index)] = (width, data)
        assert frontier.root == merkle.root(hashes)
    for (tile_level, tile_index), (width, data) in stored.items():
        for row in range(8):
            level = 8 * tile_level + row
            for position in range(width >> row):
                index = (tile_index << (8 - row)) + position
                node = merkle.root(hashes[index << level : (index + 1) << level])
                offset = row_offset(width, row) + 32 * position
                assert data[offset : offset + 32] == node


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
        "tile/entries/x009/x223/x372/x036/x854/x775/808",
    ],
)
def test_tile_indices_beyond_what_a_log_can_hold_are_refused(path: str) -> None:
    with pytest.raises(InputError, match="index too large"):
        parse_path(path)
