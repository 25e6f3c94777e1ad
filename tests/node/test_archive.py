"""The tensor archive: maps appended to segment files by a writer thread, read back checked
against their digest, a torn or damaged record never served, old segments pruned, and a full
disk or an overload costing records, never answers."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from verinfer import tensors
from verinfer.errors import InputError, NotFound, StorageError
from verinfer.node import archive as archive_module
from verinfer.node.archive import TensorArchive, _record

MAPS: list[dict[str, np.ndarray]] = [
    {"x": np.arange(6, dtype=np.float32).reshape(2, 3)},
    {  # several dtypes, a scalar, empty tensors, a big-endian and a strided input
        "half": np.array([1.5, -2.0], dtype=np.float16),
        "flags": np.array([[True, False]]),
        "scalar": np.array(7, dtype=np.int64),
        "empty": np.zeros((0, 3), dtype=np.float64),
        "nothing": np.zeros((2, 0, 4), dtype=np.uint8),
        "big": np.arange(5, dtype=">i4"),
        "strided": np.arange(20, dtype=np.uint64).reshape(4, 5)[:, ::2],
        "ünïcode name": np.array([-1, 1], dtype=np.int8),
    },
    {"image": np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)},
]


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[TensorArchive]:
    kept = TensorArchive(tmp_path / "tensors", retention=3600)
    try:
        yield kept
    finally:
        kept.close()


def _served(archive: TensorArchive, digest: str) -> dict[str, np.ndarray]:
    return tensors.decode_binary(archive.get(digest))


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return tensors.map_digest(a) == tensors.map_digest(b)


def _segments(archive: TensorArchive) -> list[Path]:
    return sorted((archive.root / "segments").glob("*.seg"))


def test_maps_round_trip_through_a_segment(archive: TensorArchive) -> None:
    digests = [tensors.map_digest(m) for m in MAPS]
    for digest, arrays in zip(digests, MAPS, strict=True):
        archive.put(digest, arrays)
    archive.flush()
    (segment,) = _segments(archive)
    for digest, arrays in zip(digests, MAPS, strict=True):
        served = _served(archive, digest)
        assert _same(served, arrays)
        found = archive.where(digest)
        assert found is not None
        assert found[0] == segment
    shapes = {name: array.shape for name, array in _served(archive, digests[1]).items()}
    assert shapes == {name: array.shape for name, array in MAPS[1].items()}
    with pytest.raises(NotFound, match=r"no tensors 'sha256:0{64}' are kept here"):
        archive.get("sha256:" + "0" * 64)


def test_maps_not_yet_written_are_served_from_memory(archive: TensorArchive) -> None:
    first, second = MAPS[0], MAPS[2]
    with archive._io:  # the writer is held: it takes what is pending, then waits to write it
        archive.put(tensors.map_digest(first), first)
        time.sleep(0.1)  # the writer has taken the first map (it waits _GATHER, 10 ms)
        archive.put(tensors.map_digest(second), second)  # and this one stays pending
        assert archive.where(tensors.map_digest(first)) is None  # not written yet
        assert _same(_served(archive, tensors.map_digest(first)), first)
        assert _same(_served(archive, tensors.map_digest(second)), second)
    archive.flush()
    assert archive.where(tensors.map_digest(second)) is not None


def test_a_reopened_archive_rebuilds_its_index(tmp_path: Path) -> None:
    root = tmp_path / "tensors"
    first = TensorArchive(root)
    for arrays in MAPS:
        first.put(tensors.map_digest(arrays), arrays)
    first.close()
    again = TensorArchive(root)
    try:
        for arrays in MAPS:
            assert _same(_served(again, tensors.map_digest(arrays)), arrays)
        extra = {"y": np.ones(3, dtype=np.int32)}
        again.put(tensors.map_digest(extra), extra)
        again.flush()
        assert len(_segments(again)) == 2  # a new run appends to a segment of its own
    finally:
        again.close()


def test_a_torn_tail_loses_only_its_record(tmp_path: Path) -> None:
    root = tmp_path / "tensors"
    first = TensorArchive(root)
    for arrays in MAPS:  # one write each, in order
        first.put(tensors.map_digest(arrays), arrays)
        first.flush()
    torn = first.where(tensors.map_digest(MAPS[2]))
    first.close()
    assert torn is not None
    segment, offset, length = torn
    with open(segment, "r+b") as stream:  # a crash in the middle of the last record
        stream.truncate(offset + length // 2)
    again = TensorArchive(root)
    try:
        for arrays in MAPS[:2]:
            assert _same(_served(again, tensors.map_digest(arrays)), arrays)
        with pytest.raises(NotFound, match="are kept here"):
            again.get(tensors.map_digest(MAPS[2]))
        again.put(tensors.map_digest(MAPS[2]), MAPS[2])  # named again: kept anew
        again.flush()
        assert _same(_served(again, tensors.map_digest(MAPS[2])), MAPS[2])
    finally:
        again.close()


@pytest.mark.parametrize("reopened", [False, True], ids=["current", "sealed"])
@pytest.mark.parametrize("where", ["payload", "header"])
def test_a_damaged_record_is_reported_never_served(
    tmp_path: Path, where: str, reopened: bool
) -> None:
    digest, after = tensors.map_digest(MAPS[0]), tensors.map_digest(MAPS[2])
    archive = TensorArchive(tmp_path / "tensors")
    archive.put(digest, MAPS[0])
    archive.flush()
    archive.put(after, MAPS[2])
    archive.flush()
    found = archive.where(digest)
    assert found is not None
    segment, offset, length = found
    data = bytearray(segment.read_bytes())
    data[offset + (length - 1 if where == "payload" else 10)] ^= 0x01
    segment.write_bytes(bytes(data))
    if reopened:
        archive.close()
        archive = TensorArchive(tmp_path / "tensors")
    try:
        if where == "header" and reopened:  # the scan skips it: not a record any more
            with pytest.raises(NotFound, match="are kept here"):
                archive.get(digest)
        else:
            with pytest.raises(StorageError, match=rf"the kept tensors '{digest}' are damaged"):
                archive.get(digest)
        assert _same(_served(archive, after), MAPS[2])  # the record after it is intact
    finally:
        archive.close()


def test_digests_sharing_a_prefix_are_told_apart_in_a_sealed_segment(tmp_path: Path) -> None:
    first, second = ("sha256:" + "ab" * 8 + tail * 24 for tail in ("01", "02"))
    archive = TensorArchive(tmp_path / "tensors")
    # the writer trusts put's digests
    archive._write(
        {d: _record(archive.check(d), m) for d, m in ((first, MAPS[0]), (second, MAPS[2]))}
    )
    places = archive.where(first), archive.where(second)
    archive.close()
    again = TensorArchive(tmp_path / "tensors")
    try:
        assert (again.where(first), again.where(second)) == places
        assert places[0] != places[1]
        assert again.where("sha256:" + "ab" * 8 + "03" * 24) is None
        with pytest.raises(StorageError, match=rf"the kept tensors '{first}' are damaged"):
            again.get(first)  # its record holds other tensors than its digest names
    finally:
        again.close()


def test_prune_deletes_old_segments_and_keeps_maps_named_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tensors"
    named, forgotten = MAPS[0], MAPS[2]
    first = TensorArchive(root, retention=3600)
    for arrays in (named, forgotten):
        first.put(tensors.map_digest(arrays), arrays)
    first.close()
    (old,) = (root / "segments").glob("*.seg")
    then = time.time() - 3600 - 60
    os.utime(old, (then, then))  # past retention, within the slack for re-dating
    again = TensorArchive(root, retention=3600)  # prunes at open: kept
    try:
        assert old.exists()
        again.put(tensors.map_digest(named), named)  # named again: re-appended to a new segment
        again.flush()
        found = again.where(tensors.map_digest(named))
        assert found is not None
        assert found[0] != old
        size = found[0].stat().st_size
        again.put(tensors.map_digest(named), named)  # moments later: no work at all
        again.flush()
        assert found[0].stat().st_size == size
        then = time.time() - 3600 - 3600
        os.utime(old, (then, then))
        assert again.prune() == 1
        assert not old.exists()
        assert _same(_served(again, tensors.map_digest(named)), named)
        with pytest.raises(NotFound, match="are kept here"):
            again.get(tensors.map_digest(forgotten))
        # named again while its record is in the current segment: the segment is re-dated
        os.utime(found[0], (then, then))
        monkeypatch.setattr(archive_module, "_TOUCH_EVERY", 0.0)
        again.put(tensors.map_digest(named), named)
        again.flush()
        assert found[0].stat().st_size == size
        assert found[0].stat().st_mtime > time.time() - 60
        assert again.prune() == 0
    finally:
        again.close()


def test_under_overload_serving_beats_archiving(
    archive: TensorArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_module, "_MAX_PENDING_BYTES", 4096)
    big = {"x": np.ones(1000, dtype=np.float32)}  # 4,000 bytes
    other = {"x": np.zeros(1000, dtype=np.float32)}
    with archive._io:  # the disk is slow: nothing is written
        archive.put(tensors.map_digest(big), big)
        archive.put(tensors.map_digest(other), other)  # past the bound: dropped at once
        with pytest.raises(NotFound, match="are kept here"):
            archive.get(tensors.map_digest(other))
    archive.flush()
    archive.put(tensors.map_digest(other), other)  # not remembered as kept: tried again
    archive.flush()
    assert _same(_served(archive, tensors.map_digest(big)), big)
    assert _same(_served(archive, tensors.map_digest(other)), other)


def test_a_full_disk_costs_records_not_answers(
    archive: TensorArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    before, lost, after = MAPS
    archive.put(tensors.map_digest(before), before)
    archive.flush()
    writev = os.writev

    def full(fd: int, buffers: Any) -> int:
        written = writev(fd, [bytes(buffers[0])[:30]])  # part of a record, then the disk is full
        assert written == 30
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive_module.os, "writev", full)
    archive.put(tensors.map_digest(lost), lost)  # no error reaches the answer
    archive.flush()
    monkeypatch.setattr(archive_module.os, "writev", writev)
    with pytest.raises(NotFound, match="are kept here"):
        archive.get(tensors.map_digest(lost))
    for arrays in (lost, after):  # the failed map is not remembered as kept: tried again
        archive.put(tensors.map_digest(arrays), arrays)
    archive.flush()
    archive.close()
    again = TensorArchive(archive.root)  # the torn bytes were cut off: nothing after is hidden
    try:
        for arrays in MAPS:
            assert _same(_served(again, tensors.map_digest(arrays)), arrays)
    finally:
        again.close()


def test_tensors_kept_by_an_earlier_version_are_still_served_and_pruned(
    archive: TensorArchive,
) -> None:
    arrays, other = MAPS[0], MAPS[2]
    digest = tensors.map_digest(arrays)
    legacy = archive.root / digest[7:9] / f"{digest[7:]}.npz"
    legacy.parent.mkdir()
    legacy.write_bytes(tensors.encode_binary(arrays))
    assert _same(_served(archive, digest), arrays)
    wrong = tensors.map_digest(other)  # a file whose contents are not its name's
    swapped = archive.root / wrong[7:9] / f"{wrong[7:]}.npz"
    swapped.parent.mkdir(exist_ok=True)
    swapped.write_bytes(tensors.encode_binary(arrays))
    with pytest.raises(StorageError, match=rf"the kept tensors '{wrong}' are damaged"):
        archive.get(wrong)
    then = time.time() - 3 * 3600
    os.utime(legacy, (then, then))
    assert archive.prune() == 1
    with pytest.raises(NotFound, match="are kept here"):
        archive.get(digest)


@pytest.mark.parametrize(
    "digest",
    ["md5:abc", "sha256:" + "A" * 64, "sha256:" + "0" * 63, "sha256:../" + "0" * 61, None],
)
def test_malformed_digests_are_refused(archive: TensorArchive, digest: Any) -> None:
    message = r"malformed tensor digest .*: expected sha256:<64 hex>"
    for call in (
        lambda: archive.put(digest, MAPS[0]),
        lambda: archive.put(digest, MAPS[0], public=True),
        lambda: archive.get(digest),
        lambda: archive.is_public(digest),
        lambda: archive.where(digest),
        lambda: archive.check(digest),
    ):
        with pytest.raises(InputError, match=message):
            call()


def test_segments_rotate_and_a_map_named_again_moves_to_the_current_one(
    archive: TensorArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_module, "_SEGMENT_BYTES", 1)  # every write opens a new segment
    for arrays in MAPS:
        archive.put(tensors.map_digest(arrays), arrays)
        archive.flush()
    segments = _segments(archive)
    assert len(segments) == 3
    for arrays, segment in zip(MAPS, segments, strict=True):
        found = archive.where(tensors.map_digest(arrays))
        assert found is not None
        assert found[0] == segment
    first = tensors.map_digest(MAPS[0])
    archive.put(first, MAPS[0])  # within minutes of its naming: nothing is written
    archive.flush()
    assert len(_segments(archive)) == 3
    monkeypatch.setattr(archive_module, "_TOUCH_EVERY", 0.0)  # as if ten minutes had passed
    archive.put(first, MAPS[0])  # its record is in an older segment: copied to the current one
    archive.flush()
    found = archive.where(first)
    assert found is not None
    assert found[0] == _segments(archive)[-1] != segments[0]
    archive.close()
    again = TensorArchive(archive.root)
    try:  # the newest record of each map wins when the index is rebuilt
        assert again.where(first) == found
        for arrays in MAPS:
            assert _same(_served(again, tensors.map_digest(arrays)), arrays)
    finally:
        again.close()
