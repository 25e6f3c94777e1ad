"""Fixtures for the hub tests: a shared sandbox, a hub in a temporary directory, keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from verinfer import note
from verinfer.hub import Hub, Sandbox


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """One sandbox worker for the whole session (each hub would otherwise start its own)."""
    with Sandbox() as shared:
        yield shared


@pytest.fixture
def hub(tmp_path: Path, sandbox: Sandbox) -> Iterator[Hub]:
    with Hub(tmp_path / "hub", sandbox=sandbox) as opened:
        yield opened


@pytest.fixture
def alice() -> note.Signer:
    return note.Signer(note.generate_key("alice")[0])


@pytest.fixture
def mallory() -> note.Signer:
    """Another key that claims the same owner name."""
    return note.Signer(note.generate_key("alice")[0])
