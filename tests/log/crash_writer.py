"""A log writer that a crash test kills: ``crash_writer.py LOCATION SKEY MODE PAUSE_AT``.

Appends batches forever and prints ``COMMITTED <size> <root hex>`` after each durable commit.
In mode ``pause`` the batch number PAUSE_AT (each one too large for the journal) stops inside its
SQLite transaction (entries and tiles written, checkpoint not yet) and prints ``IN-TRANSACTION``,
so the test can kill it exactly there. In mode ``random`` batches take the journal's path,
SQLite's, and the lone waited-for entry's (its checkpoint signed on another thread while its
record syncs) in turn.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from verinfer import note
from verinfer.log import Log
from verinfer.log.tiles import TileRow

BATCH = 1500  # a record of ~320 KB: the journal's path (synced append, tables a moment later)
LARGE = 5200  # over the journal's 1 MiB record cap: committed by SQLite itself, synced


def main(location: str, skey: str, mode: str, pause_at: int) -> None:
    log = Log.open(location, note.Signer(skey))
    batches = 0
    if mode == "pause":
        store = log._store
        write_tiles = store._upsert_tiles  # type: ignore[attr-defined]

        def paused(tiles: Sequence[TileRow]) -> None:
            write_tiles(tiles)
            if batches == pause_at:
                print("IN-TRANSACTION", flush=True)
                time.sleep(600)

        store._upsert_tiles = paused  # type: ignore[attr-defined]
    while True:
        start = log.size
        # pause: inside SQLite's own transaction; random: the three paths, in turn
        count = LARGE if mode == "pause" else (BATCH, LARGE, 1)[batches % 3]
        appended = log.append(
            [b"crash-%d-" % i + b"r" * 200 for i in range(start, start + count)], waited=count == 1
        )
        print(f"COMMITTED {appended.end} {appended.checkpoint.root.hex()}", flush=True)
        batches += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
