"""The model hub: content-addressed blobs, signed manifests and signed repository histories.

The signed documents (:mod:`verinfer.hub.documents`) are pure and import nothing heavy, so a
verifier can check manifests without ONNX, ONNX Runtime or a database; the rest of the hub loads
on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from verinfer.hub.documents import Change, History, Manifest, parse_ref, verify_history

if TYPE_CHECKING:
    from verinfer.hub.blobs import BlobStore
    from verinfer.hub.hub import Hub, Problem, Source
    from verinfer.hub.onnxmodel import Limits, inspect_model
    from verinfer.hub.sandbox import Sandbox

__all__ = [
    "BlobStore",
    "Change",
    "History",
    "Hub",
    "Limits",
    "Manifest",
    "Problem",
    "Sandbox",
    "Source",
    "inspect_model",
    "parse_ref",
    "verify_history",
]

_LAZY = {
    "BlobStore": "verinfer.hub.blobs",
    "Hub": "verinfer.hub.hub",
    "Problem": "verinfer.hub.hub",
    "Source": "verinfer.hub.hub",
    "Limits": "verinfer.hub.onnxmodel",
    "inspect_model": "verinfer.hub.onnxmodel",
    "Sandbox": "verinfer.hub.sandbox",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'verinfer.hub' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
