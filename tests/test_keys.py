"""The key directory: per-user, overridable, private files, never overwritten."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from verinfer import keys, note
from verinfer.errors import ConflictError, InputError, NotFound


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(keys.HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home"


def test_the_directory_follows_the_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert keys.keys_dir() == home / "keys"
    monkeypatch.delenv(keys.HOME_ENV)
    assert keys.home() == Path.home() / ".verinfer"


def test_generate_creates_a_private_default_key(home: Path) -> None:
    created = keys.generate()
    assert created.path == home / "keys" / "default.skey"
    assert created.path.stat().st_mode & 0o777 == 0o600
    assert (home / "keys").stat().st_mode & 0o777 == 0o700
    assert (home / "keys" / "default.vkey").read_text().strip() == created.vkey
    signer = keys.load()
    assert signer.vkey == created.vkey
    assert signer.name == keys.default_owner()
    note.VerifierKey.parse(created.vkey)


def test_named_keys_and_no_overwrite() -> None:
    alice = keys.generate("alice", file="alice")
    assert keys.load("alice").name == "alice"
    with pytest.raises(ConflictError, match="already exists"):
        keys.generate("alice", file="alice")
    assert keys.load("alice").vkey == alice.vkey  # the first key is intact


def test_unsafe_or_missing_key_files_are_refused(home: Path) -> None:
    with pytest.raises(NotFound, match="verinfer key generate"):
        keys.load()
    created = keys.generate()
    os.chmod(created.path, 0o640)
    with pytest.raises(InputError, match="readable by others: chmod 600"):
        keys.load()
    os.chmod(created.path, 0o600)
    created.path.write_text("PRIVATE+KEY+garbage\n")
    with pytest.raises(InputError, match="does not hold a valid signing key") as caught:
        keys.load()
    assert "garbage" not in caught.value.diagnostics()  # key material never reaches messages
    with pytest.raises(InputError, match="malformed key file name"):
        keys.load("../escape")
