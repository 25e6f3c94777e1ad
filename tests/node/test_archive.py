"""The tensor archive: kept by map digest, re-dated without a syscall per answer, and a failed
write is tried again by the next answer that names the same tensors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from verinfer import tensors
from verinfer.node.archive import TensorArchive


def test_a_failed_write_is_retried_by_the_next_put(tmp_path: Path) -> None:
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    digest = tensors.map_digest(arrays)
    archive = TensorArchive(tmp_path / "tensors")
    try:
        shard = Path(archive.path(digest)).parent
        shard.write_bytes(b"not a directory")  # the write's mkdir fails: an OSError
        archive.put(digest, arrays)
        archive.flush()
        assert not archive.path(digest).exists()
        shard.unlink()
        archive.put(digest, arrays)  # not skipped as "kept moments ago"
        archive.flush()
        assert tensors.decode_binary(archive.get(digest))["x"].tolist() == arrays["x"].tolist()
        # kept already: re-dated, and a second put within minutes costs no syscall at all
        os.utime(archive.path(digest), (1.0, 1.0))
        archive.put(digest, arrays)
        assert archive.path(digest).stat().st_mtime == 1.0
    finally:
        archive.close()


def test_prune_keeps_what_was_re_dated_within_the_window(tmp_path: Path) -> None:
    arrays = {"y": np.ones(3, dtype=np.int64)}
    digest = tensors.map_digest(arrays)
    archive = TensorArchive(tmp_path / "tensors", retention=3600)
    try:
        archive.put(digest, arrays)
        archive.flush()
        path = archive.path(digest)
        now = path.stat().st_mtime
        os.utime(path, (now - 3600 - 60, now - 3600 - 60))  # past retention, within the slack
        assert archive.prune() == 0
        os.utime(path, (now - 3600 - 3600, now - 3600 - 3600))
        assert archive.prune() == 1
        assert not path.exists()
    finally:
        archive.close()
