"""Loads the test vectors kept in ``tests/vectors/`` (copied from the project's shared set)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS_DIR = Path(__file__).parent / "vectors"


def load_vectors(name: str) -> Any:
    """The parsed JSON of ``tests/vectors/<name>``; fails loudly if the file is missing."""
    path = VECTORS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"test vector file {path} is missing: the repository must carry its own copy of "
            f"the shared vectors (cp shared/vectors/*.json tests/vectors/)"
        )
    return json.loads(path.read_text(encoding="utf-8"))
