"""Tiles: where each Merkle tree node of a log is stored, and the C2SP tlog-tiles paths.

A C2SP tile ``(L, N)`` is the row of up to 256 hashes at tree level ``8 * L`` covering leaves
``[N * 256**(L+1), (N+1) * 256**(L+1))``. verinfer stores each tile together with the seven levels
inside it (a *stored tile*): row ``k`` (0..7) holds the nodes at level ``8L + k`` under the tile,
``width >> k`` of them, where ``width`` is the number of hashes in row 0. A stored tile is
``32 * (width + width//2 + ... + width//128)`` bytes; its row 0 is the C2SP tile. So every complete
node has exactly one home, a proof of a tree of 2**24 leaves needs at most three stored tiles, and
nothing is rehashed to answer it. Pure: no I/O.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from verinfer import merkle
from verinfer.errors import InputError, StorageError
from verinfer.merkle import HASH_SIZE

__all__ = [
    "FULL_SIBLINGS",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Frontier",
    "TileRow",
    "entries_path",
    "locate",
    "parse_path",
    "row_offset",
    "siblings",
    "stored_size",
    "tile_path",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT

TileRow = tuple[int, int, int, bytes]
"""A stored tile: ``(tile level, tile index, width of row 0, bytes)``."""


def locate(level: int, index: int) -> tuple[int, int, int, int]:
    """``(tile level, tile index, row, position in row)`` of the node ``(level, index)``."""
    tile_level, row = divmod(level, TILE_HEIGHT)
    shift = TILE_HEIGHT - row
    return tile_level, index >> shift, row, index & ((1 << shift) - 1)


_ROW_OFFSETS = [
    [HASH_SIZE * sum(width >> k for k in range(row)) for row in range(TILE_HEIGHT + 1)]
    for width in range(TILE_WIDTH + 1)
]


def row_offset(width: int, row: int) -> int:
    """Byte offset of ``row`` inside a stored tile whose row 0 holds ``width`` hashes."""
    return _ROW_OFFSETS[width][row]


def stored_size(width: int) -> int:
    """Size in bytes of a stored tile whose row 0 holds ``width`` hashes."""
    return row_offset(width, TILE_HEIGHT)


def _siblings_getter(position: int) -> Callable[[bytes], tuple[bytes, ...]]:
    offsets = [
        row_offset(TILE_WIDTH, row) + HASH_SIZE * ((position >> row) ^ 1)
        for row in range(TILE_HEIGHT)
    ]
    return operator.itemgetter(*(slice(offset, offset + HASH_SIZE) for offset in offsets))


FULL_SIBLINGS = [_siblings_getter(position) for position in range(TILE_WIDTH)]
"""``FULL_SIBLINGS[p](stored)``: the eight siblings of position ``p``'s path in a full tile."""
_FULL_SIZE = stored_size(TILE_WIDTH)


def siblings(stored: bytes, width: int, position: int, rows: int) -> list[bytes]:
    """The siblings, in rows ``0..rows-1``, of the path up from ``position`` in row 0.

    ``stored`` is a stored tile whose row 0 holds ``width`` hashes. This is the inner part of an
    inclusion proof, so for a full tile it is one C-level gather of eight slices.
    """
    if rows == TILE_HEIGHT and width == TILE_WIDTH and len(stored) == _FULL_SIZE:
        return list(FULL_SIBLINGS[position](stored))
    out = []
    for row in range(rows):
        sibling = (position >> row) ^ 1
        if sibling >= width >> row or len(stored) != stored_size(width):
            raise StorageError(f"row {row} position {sibling} is missing from a stored tile")
        offset = row_offset(width, row) + HASH_SIZE * sibling
        out.append(stored[offset : offset + HASH_SIZE])
    return out


def _encode_index(index: int) -> str:
    groups = []
    while True:
        index, rest = divmod(index, 1000)
        groups.append(f"{rest:03d}")
        if index == 0:
            break
    groups.reverse()
    return "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])


def _suffix(width: int | None) -> str:
    if width is None or width == TILE_WIDTH:
        return ""
    if not 1 <= width < TILE_WIDTH:
        raise InputError(f"tile width must be 1..256, got {width!r}")
    return f".p/{width}"


def tile_path(level: int, index: int, width: int | None = None) -> str:
    """The C2SP path ``tile/<L>/<N>[.p/<W>]``."""
    if not 0 <= level <= 63 or index < 0:
        raise InputError(f"bad tile coordinates level={level!r} index={index!r}")
    return f"tile/{level}/{_encode_index(index)}{_suffix(width)}"


def entries_path(index: int, width: int | None = None) -> str:
    """The C2SP path ``tile/entries/<N>[.p/<W>]`` of an entry bundle."""
    if index < 0:
        raise InputError(f"bad entry bundle index {index!r}")
    return f"tile/entries/{_encode_index(index)}{_suffix(width)}"


_PATH = re.compile(
    r"tile/(?P<level>entries|0|[1-9][0-9]?)/(?P<index>(?:x[0-9]{3}/)*[0-9]{3})(?:\.p/(?P<width>[1-9][0-9]{0,2}))?"
)


def parse_path(path: str) -> tuple[int | None, int, int | None]:
    """Parse a tile or entry-bundle path into ``(level or None for entries, index, width)``."""
    match = _PATH.fullmatch(path)
    if match is None:
        raise InputError(f"malformed tile path {path!r}")
    level = None if match["level"] == "entries" else int(match["level"])
    groups = match["index"].replace("x", "").split("/")
    if len(groups) > 1 and groups[0] == "000":
        raise InputError(f"malformed tile path {path!r}: leading zero group")
    if len(groups) > 7:  # 7 groups of 3 digits hold every index a log can reach (< 2**63)
        raise InputError(f"malformed tile path {path!r}: index too large")
    index = int("".join(groups))
    if index > 2**63 - 1:
        raise InputError(f"malformed tile path {path!r}: index too large")
    width = int(match["width"]) if match["width"] else None
    if (level is not None and level > 63) or (width is not None and width >= TILE_WIDTH):
        raise InputError(f"malformed tile path {path!r}: level or width out of range")
    return level, index, width


@dataclass(frozen=True)
class Frontier:
    """What an appender keeps in memory: the tree size, its right edge and the partial tiles.

    ``edge`` is the compact right edge of :func:`verinfer.merkle.extend`; ``tiles`` maps a tile
    level to ``(tile index, stored tile)`` for the partial tile at the right edge of that level.
    """

    size: int = 0
    edge: dict[int, bytes] = field(default_factory=dict)
    tiles: dict[int, tuple[int, bytes]] = field(default_factory=dict)

    @property
    def root(self) -> bytes:
        """The root hash of the tree."""
        return merkle.edge_root(self.size, self.edge)

    def grow(self, leaf_hashes: list[bytes]) -> tuple[Frontier, list[TileRow]]:
        """The frontier after appending ``leaf_hashes``, and every stored tile that changed."""
        size, new_size = self.size, self.size + len(leaf_hashes)
        edge, created = merkle.extend(size, self.edge, leaf_hashes)
        tiles = dict(self.tiles)
        changed: list[TileRow] = []
        tile_level = 0
        while (new_size >> (TILE_HEIGHT * tile_level)) > (size >> (TILE_HEIGHT * tile_level)):
            base = TILE_HEIGHT * tile_level
            old_count, new_count = size >> base, new_size >> base
            for index in range(old_count >> TILE_HEIGHT, ((new_count - 1) >> TILE_HEIGHT) + 1):
                first = index << TILE_HEIGHT
                width = min(TILE_WIDTH, new_count - first)
                old_width = max(0, old_count - first)
                old = self.tiles[tile_level][1] if old_width else b""
                rows = []
                for row in range(TILE_HEIGHT):
                    kept = old[row_offset(old_width, row) : row_offset(old_width, row + 1)]
                    level = base + row
                    added = b""
                    if level < len(created):
                        start = size >> level
                        low = max(index << (TILE_HEIGHT - row), start) - start
                        high = (index << (TILE_HEIGHT - row)) + (width >> row) - start
                        added = b"".join(created[level][low:high])
                    rows.append(kept + added)
                stored = b"".join(rows)
                assert len(stored) == stored_size(width), (tile_level, index, width)
                changed.append((tile_level, index, width, stored))
                if width < TILE_WIDTH:
                    tiles[tile_level] = (index, stored)
                else:
                    tiles.pop(tile_level, None)
            tile_level += 1
        return Frontier(new_size, edge, tiles), changed
