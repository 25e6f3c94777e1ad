"""Where signing keys live: one per-user directory, files readable by the owner only.

The directory is ``$VERINFER_HOME/keys`` (``~/.verinfer/keys`` by default). A key ``NAME`` is two
files: ``NAME.skey`` (the C2SP private key, mode 0600) and ``NAME.vkey`` (its public key). The key
used when none is named is ``default``. A private key is never printed or logged; a key file that
others can read is refused, as ssh does.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from pathlib import Path

from verinfer import note
from verinfer.errors import ConflictError, InputError, NotFound

__all__ = [
    "DEFAULT",
    "HOME_ENV",
    "KeyFile",
    "default_owner",
    "generate",
    "home",
    "keys_dir",
    "load",
    "write_secret",
]

HOME_ENV = "VERINFER_HOME"
DEFAULT = "default"
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def home() -> Path:
    """verinfer's per-user directory: ``$VERINFER_HOME``, else ``~/.verinfer``."""
    override = os.environ.get(HOME_ENV)
    return Path(override) if override else Path.home() / ".verinfer"


def keys_dir() -> Path:
    """The directory of signing keys."""
    return home() / "keys"


def default_owner() -> str:
    """A key (and owner) name for this user: the login name, lower-cased and made safe."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "publisher"
    name = re.sub(r"[^a-z0-9._-]", "-", user.lower()).strip("-._") or "publisher"
    return name[:64]


def write_secret(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 holding ``text``; never overwrites."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConflictError(f"{str(path)!r} already exists; it is not overwritten") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


@dataclass(frozen=True)
class KeyFile:
    """A key in the key directory: its file name and public key."""

    file: str
    path: Path
    vkey: str


def _paths(file: str, directory: Path | None) -> tuple[Path, Path]:
    if not _FILE.fullmatch(file):
        raise InputError(f"malformed key file name {file!r}: use 1-64 of A-Z a-z 0-9 . _ -")
    base = directory or keys_dir()
    return base / f"{file}.skey", base / f"{file}.vkey"


def generate(
    name: str | None = None, *, file: str = DEFAULT, directory: Path | None = None
) -> KeyFile:
    """Create a new Ed25519 signing key named ``name`` (default: the login name)."""
    skey_path, vkey_path = _paths(file, directory)
    skey, vkey = note.generate_key(name or default_owner())
    write_secret(skey_path, skey + "\n")
    vkey_path.write_text(vkey + "\n")
    return KeyFile(file, skey_path, vkey)


def load(file: str = DEFAULT, *, directory: Path | None = None) -> note.Signer:
    """The signer of key file ``file``; refuses a key file others can read."""
    skey_path, _ = _paths(file, directory)
    try:
        mode = skey_path.stat().st_mode
    except FileNotFoundError:
        raise NotFound(
            f"no key {file!r} in {str(skey_path.parent)!r}: create one with `verinfer key generate`"
        ) from None
    if mode & 0o077:
        raise InputError(f"{str(skey_path)!r} is readable by others: chmod 600 it")
    try:
        return note.Signer(skey_path.read_text().strip())
    except InputError:
        raise InputError(f"{str(skey_path)!r} does not hold a valid signing key") from None
