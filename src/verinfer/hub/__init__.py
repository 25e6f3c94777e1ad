"""The model hub: content-addressed blobs, signed manifests and signed repository histories."""

from verinfer.hub.blobs import BlobStore
from verinfer.hub.documents import Change, History, Manifest, parse_ref, verify_history
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
