"""Review 4 of the segment archive: each finding as a test, which failed before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from verinfer import tensors
from verinfer.node import archive as archive_module
from verinfer.node.archive import TensorArchive, _header, _record


def _segments(root: Path) -> list[Path]:
    return sorted((root / "segments").glob("*.seg"))


def test_a_map_bigger_than_the_pending_cap_is_still_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_module, "_MAX_PENDING_BYTES", 1 << 16)  # stands for 256 MiB
    archive = TensorArchive(tmp_path / "tensors", retention=3600)
    try:
        big = {"y": np.arange(1 << 15, dtype=np.float32)}  # 128 KiB, nothing else pending
        digest = tensors.map_digest(big)
        archive.put(digest, big)
        archive.flush()
        assert tensors.map_digest(tensors.decode_binary(archive.get(digest))) == digest
    finally:
        archive.close()


def test_a_forged_header_in_a_torn_record_does_not_shadow_another_map(tmp_path: Path) -> None:
    root = tmp_path / "tensors"
    victim = {"x": np.arange(6, dtype=np.float32)}
    digest = tensors.map_digest(victim)
    first = TensorArchive(root, retention=3600)
    first.put(digest, victim)  # the victim's map, intact, in the first run's segment
    first.close()
    forged = _header(TensorArchive.check(digest), 16) + bytes(16)  # names the victim
    attack = {"a": np.frombuffer(forged + bytes(200), dtype=np.uint8)}
    second = TensorArchive(root, retention=3600)
    second.put(tensors.map_digest(attack), attack)
    second.close()
    segment = _segments(root)[-1]
    data = segment.read_bytes()
    at = data.find(forged)
    assert at > 0
    segment.write_bytes(data[: at + len(forged) + 8])  # a crash tore the attacker's record
    third = TensorArchive(root, retention=3600)
    try:
        served = tensors.decode_binary(third.get(digest))
        assert tensors.map_digest(served) == digest
    finally:
        third.close()


def test_a_damaged_header_loses_one_record_even_when_its_payload_forges_one(
    tmp_path: Path,
) -> None:
    root = tmp_path / "tensors"
    victims = [{"v": np.full(4, i, dtype=np.int64)} for i in range(3)]
    raws = [TensorArchive.check(tensors.map_digest(v)) for v in victims]
    tail = 100  # the attacker's payload bytes after the forged header
    swallowed = tail + sum(_record(raw, v).length for raw, v in zip(raws, victims, strict=True))
    forged = _header(bytes(32), swallowed)
    attack = {"a": np.frombuffer(forged + bytes(tail), dtype=np.uint8)}
    archive = TensorArchive(root, retention=3600)
    archive.put(tensors.map_digest(attack), attack)
    archive.flush()  # the attacker's record first, then the victims'
    for raw, v in zip(raws, victims, strict=True):
        archive.put("sha256:" + raw.hex(), v)
    archive.close()
    (segment,) = _segments(root)
    data = bytearray(segment.read_bytes())
    assert data.find(forged) > 0
    data[10] ^= 1  # one flipped bit in the attacker's record header
    segment.write_bytes(bytes(data))
    reopened = TensorArchive(root, retention=3600)
    try:
        for raw in raws:
            digest = "sha256:" + raw.hex()
            assert tensors.map_digest(tensors.decode_binary(reopened.get(digest))) == digest
    finally:
        reopened.close()


def test_a_damaged_newest_copy_falls_back_to_an_intact_older_one(tmp_path: Path) -> None:
    root = tmp_path / "tensors"
    kept = {"x": np.arange(12, dtype=np.float64)}
    digest = tensors.map_digest(kept)
    for _ in range(2):  # named in two runs: a record in each run's segment
        archive = TensorArchive(root, retention=3600)
        archive.put(digest, kept)
        archive.close()
    newest = _segments(root)[-1]
    data = bytearray(newest.read_bytes())
    data[-1] ^= 0xFF  # the newest copy's last tensor byte, a flipped byte on disk
    newest.write_bytes(bytes(data))
    reopened = TensorArchive(root, retention=3600)
    try:
        assert tensors.map_digest(tensors.decode_binary(reopened.get(digest))) == digest
    finally:
        reopened.close()
