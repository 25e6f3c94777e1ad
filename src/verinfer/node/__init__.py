"""A verinfer node: the in-process inference pipeline (the HTTP server builds on it)."""

from verinfer.node.service import Node, Result, load_or_create_key

__all__ = ["Node", "Result", "load_or_create_key"]
