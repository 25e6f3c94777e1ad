"""C2SP signed notes, checkpoints and cosignatures, with Ed25519.

- ``signed-note``: a UTF-8 text, a blank line, and signature lines ``— <name> base64(id || sig)``.
  Keys have a text form: ``vkey = name+hex(id)+base64(type || public)`` and
  ``skey = PRIVATE+KEY+name+hex(id)+base64(type || seed)``; the key ID is
  ``SHA-256(name || 0x0A || type || public)[:4]``.
- ``tlog-checkpoint``: the note text ``origin\\nsize\\nbase64(root)\\n[extension lines]``.
- ``tlog-cosignature/v1``: a witness signature (type 0x04) over
  ``cosignature/v1\\ntime <t>\\n`` followed by the checkpoint text; the signature is
  ``uint64 big-endian timestamp || Ed25519 signature``.

Pure: no I/O. Everything parsed from untrusted text raises
:class:`~verinfer.errors.VerificationError` ``malformed <thing>: <reason>``; malformed keys given by
the caller raise :class:`~verinfer.errors.InputError`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from verinfer import canonical
from verinfer.errors import InputError, VerificationError

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_LINE_BYTES",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "Checkpoint",
    "Note",
    "Signature",
    "Signer",
    "VerifierKey",
    "attach",
    "generate_key",
    "parse",
    "verify",
    "verify_checkpoint",
]

ALG_ED25519 = 0x01  # signed-note: Ed25519 over the note text
ALG_COSIGNATURE_V1 = 0x04  # tlog-cosignature: timestamped Ed25519 witness cosignature

MAX_NOTE_BYTES = 1 << 20  # a whole signed note
MAX_LINE_BYTES = 16 << 10  # any one line (the spec allows post-quantum signatures near 5 kB)
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16

_SIG_PREFIX = "— "  # em dash, space
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_COSIGNATURE_HEADER = "cosignature/v1\n"
_MAX_TIMESTAMP = (1 << 63) - 1
_SIZE_PATTERN = re.compile(r"0|[1-9][0-9]{0,18}")
_SIGNATURE_LENGTH = {ALG_ED25519: 64, ALG_COSIGNATURE_V1: 8 + 64}


def _valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() or c < " " for c in name)


def _key_id(name: str, algorithm: int, public: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([algorithm]) + public).digest()
    return int.from_bytes(digest[:4], "big")


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64: valid alphabet, padding, and one spelling per value."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"malformed {what}: bad base64 {text!r}") from exc
    if base64.b64encode(raw).decode() != text:
        raise VerificationError(f"malformed {what}: non-canonical base64 {text!r}")
    return raw


@dataclass(frozen=True)
class VerifierKey:
    """A public key that may verify note signatures (``ALG_ED25519``) or cosignatures."""

    name: str
    key_id: int
    algorithm: int
    public: bytes

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        """Parse ``name+hex(id)+base64(type || key)``; raise :class:`InputError` if malformed."""
        parts = vkey.split("+", 2) if isinstance(vkey, str) else []
        if len(parts) != 3:
            raise InputError(f"malformed vkey {vkey!r}: expected name+keyid+key")
        name, id_hex, key_b64 = parts
        if not _valid_name(name):
            raise InputError(f"malformed vkey {vkey!r}: bad key name {name!r}")
        if not re.fullmatch(r"[0-9a-f]{8}", id_hex):
            raise InputError(f"malformed vkey {vkey!r}: key ID must be 8 lower-case hex digits")
        try:
            raw = _b64decode(key_b64, "vkey")
        except VerificationError as exc:
            raise InputError(f"malformed vkey {vkey!r}: bad base64 key") from exc
        if len(raw) != 33 or raw[0] not in _SIGNATURE_LENGTH:
            raise InputError(f"malformed vkey {vkey!r}: expected an Ed25519 key of type 0x01/0x04")
        key = cls(name, int(id_hex, 16), raw[0], raw[1:])
        if _key_id(name, raw[0], raw[1:]) != key.key_id:
            raise InputError(f"malformed vkey {vkey!r}: key ID does not match the key")
        return key

    @functools.cached_property
    def vkey(self) -> str:
        """The text form of this key."""
        key_b64 = base64.b64encode(bytes([self.algorithm]) + self.public).decode()
        return f"{self.name}+{self.key_id:08x}+{key_b64}"

    def __str__(self) -> str:
        return self.vkey


class Signer:
    """Signs notes (``ALG_ED25519`` keys) or cosigns checkpoints (``ALG_COSIGNATURE_V1`` keys).

    The private key never appears in ``repr`` or ``str``.
    """

    def __init__(self, skey: str) -> None:
        parts = skey.split("+", 4) if isinstance(skey, str) else []
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise InputError("malformed skey: expected PRIVATE+KEY+name+keyid+key")
        name, id_hex, key_b64 = parts[2:]
        if not _valid_name(name):
            raise InputError(f"malformed skey: bad key name {name!r}")
        try:
            raw = _b64decode(key_b64, "skey")
        except VerificationError:
            # "from None": the cause would quote the private key
            raise InputError(f"malformed skey for {name!r}: bad base64 key") from None
        if len(raw) != 33 or raw[0] not in _SIGNATURE_LENGTH:
            raise InputError(f"malformed skey for {name!r}: expected an Ed25519 seed")
        self._private = Ed25519PrivateKey.from_private_bytes(raw[1:])
        public = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key = VerifierKey(name, _key_id(name, raw[0], public), raw[0], public)
        if id_hex != f"{self.key.key_id:08x}":
            raise InputError(f"malformed skey for {name!r}: key ID does not match the key")

    @property
    def name(self) -> str:
        """The key name."""
        return self.key.name

    @property
    def vkey(self) -> str:
        """The public verifier key in text form."""
        return self.key.vkey

    def __repr__(self) -> str:
        return f"Signer({self.vkey!r})"

    def signature_line(self, text: str, *, timestamp: int | None = None) -> str:
        """One signature line over ``text`` (a cosignature if this is a cosigner key)."""
        _check_text(text)
        if self.key.algorithm == ALG_COSIGNATURE_V1:
            stamp = int(time.time()) if timestamp is None else timestamp
            if not 0 <= stamp <= _MAX_TIMESTAMP:
                raise InputError(f"cosignature timestamp {stamp!r} is out of range")
            raw = stamp.to_bytes(8, "big") + self._private.sign(_cosigned_message(text, stamp))
        elif timestamp is not None:
            raise InputError("only cosigner keys (type 0x04) sign a timestamp")
        else:
            raw = self._private.sign(text.encode())
        encoded = base64.b64encode(self.key.key_id.to_bytes(4, "big") + raw).decode()
        return f"{_SIG_PREFIX}{self.name} {encoded}\n"

    def sign(self, text: str) -> str:
        """The signed note: ``text``, a blank line and this key's signature line."""
        return text + "\n" + self.signature_line(text)


def generate_key(name: str, *, cosigner: bool = False) -> tuple[str, str]:
    """A fresh ``(skey, vkey)`` pair; ``cosigner=True`` makes a tlog-cosignature/v1 key."""
    if not _valid_name(name):
        raise InputError(f"bad key name {name!r}: must be non-empty, without spaces or '+'")
    algorithm = ALG_COSIGNATURE_V1 if cosigner else ALG_ED25519
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = _key_id(name, algorithm, public)
    seed_b64 = base64.b64encode(bytes([algorithm]) + seed).decode()
    skey = f"PRIVATE+KEY+{name}+{key_id:08x}+{seed_b64}"
    return skey, VerifierKey(name, key_id, algorithm, public).vkey


def _cosigned_message(text: str, timestamp: int) -> bytes:
    return f"{_COSIGNATURE_HEADER}time {timestamp}\n{text}".encode()


def _check_text(text: str) -> None:
    """Note text must be non-empty UTF-8 ending in a newline, with no other control characters."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise InputError("note text must be a str ending in a newline")
    if _CONTROL.search(text):
        raise InputError("note text must not contain control characters other than newline")
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise InputError("note text is not valid Unicode") from exc


@dataclass(frozen=True)
class Signature:
    """One signature line. ``timestamp`` is set for cosignatures."""

    name: str
    key_id: int
    signature: bytes
    timestamp: int | None = None

    @property
    def line(self) -> str:
        """The signature line, as it appears in a note."""
        encoded = base64.b64encode(self.key_id.to_bytes(4, "big") + self.signature).decode()
        return f"{_SIG_PREFIX}{self.name} {encoded}\n"


@dataclass(frozen=True)
class Note:
    """A note whose text was verified: ``verified`` are the signatures of trusted keys."""

    text: str
    verified: tuple[Signature, ...]
    unverified: tuple[Signature, ...]


def parse(signed: str | bytes) -> tuple[str, list[Signature]]:
    """Split a signed note into its text and signature lines, checking only its structure."""
    if isinstance(signed, bytes):
        if len(signed) > MAX_NOTE_BYTES:
            raise VerificationError(f"malformed note: larger than {MAX_NOTE_BYTES} bytes")
        try:
            signed = signed.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VerificationError("malformed note: not valid UTF-8") from exc
    if not isinstance(signed, str):
        raise VerificationError(f"malformed note: expected text, got {type(signed).__name__}")
    try:
        encoded = signed.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise VerificationError("malformed note: not valid UTF-8") from exc
    if len(encoded) > MAX_NOTE_BYTES:
        raise VerificationError(f"malformed note: larger than {MAX_NOTE_BYTES} bytes")
    if _CONTROL.search(signed):
        raise VerificationError("malformed note: contains a control character")
    if not signed.endswith("\n"):
        raise VerificationError("malformed note: does not end with a newline")
    if any(len(line.encode()) > MAX_LINE_BYTES for line in signed.split("\n")):
        raise VerificationError(f"malformed note: a line is longer than {MAX_LINE_BYTES} bytes")
    split = signed.rfind("\n\n")
    if split < 0:
        raise VerificationError("malformed note: no blank line before the signatures")
    text, block = signed[: split + 1], signed[split + 2 :]
    lines = block[:-1].split("\n") if block else []
    if not lines:
        raise VerificationError("malformed note: no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    signatures = []
    seen: set[tuple[str, int]] = set()
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise VerificationError(f"malformed note: signature line {line!r} must start with '— '")
        fields = line[len(_SIG_PREFIX) :].split(" ")
        if len(fields) != 2 or not _valid_name(fields[0]):
            raise VerificationError(f"malformed note: bad signature line {line!r}")
        raw = _b64decode(fields[1], "note signature")
        if len(raw) < 5:
            raise VerificationError(f"malformed note: signature too short in {line!r}")
        key_id = int.from_bytes(raw[:4], "big")
        if (fields[0], key_id) in seen:
            raise VerificationError(
                f"malformed note: duplicate signature by {fields[0]}+{key_id:08x}"
            )
        seen.add((fields[0], key_id))
        signatures.append(Signature(fields[0], key_id, raw[4:]))
    return text, signatures


def _trusted(vkeys: Iterable[str | VerifierKey]) -> dict[tuple[str, int], VerifierKey]:
    keys: dict[tuple[str, int], VerifierKey] = {}
    for item in vkeys:
        key = item if isinstance(item, VerifierKey) else VerifierKey.parse(item)
        other = keys.setdefault((key.name, key.key_id), key)
        if other != key:
            raise InputError(f"two trusted keys share name and key ID: {other} and {key}")
    return keys


def _check_signature(text: str, sig: Signature, key: VerifierKey) -> Signature:
    who = f"{sig.name}+{sig.key_id:08x}"
    if len(sig.signature) != _SIGNATURE_LENGTH[key.algorithm]:
        raise VerificationError(f"signature by {who} has the wrong length")
    public = Ed25519PublicKey.from_public_bytes(key.public)
    timestamp = None
    if key.algorithm == ALG_COSIGNATURE_V1:
        timestamp = int.from_bytes(sig.signature[:8], "big")
        if timestamp > _MAX_TIMESTAMP:
            raise VerificationError(f"cosignature by {who} has timestamp {timestamp} > 2^63-1")
        message, raw = _cosigned_message(text, timestamp), sig.signature[8:]
    else:
        message, raw = text.encode(), sig.signature
    try:
        public.verify(raw, message)
    except InvalidSignature as exc:
        raise VerificationError(f"invalid signature by trusted key {who}") from exc
    return Signature(sig.name, sig.key_id, sig.signature, timestamp)


def verify(signed: str | bytes, vkeys: Iterable[str | VerifierKey]) -> Note:
    """Verify a signed note against trusted keys; raise :class:`VerificationError` on failure.

    Signatures by unknown keys are ignored (kept in ``Note.unverified``); a signature by a trusted
    key that does not verify rejects the whole note; at least one trusted signature must verify.
    """
    trusted = _trusted(vkeys)
    text, signatures = parse(signed)
    verified, unverified = [], []
    for sig in signatures:
        key = trusted.get((sig.name, sig.key_id))
        if key is None:
            unverified.append(sig)
        else:
            verified.append(_check_signature(text, sig, key))
    if not verified:
        signers = ", ".join(f"{s.name}+{s.key_id:08x}" for s in signatures)
        raise VerificationError(f"note is not signed by any trusted key (signed by: {signers})")
    return Note(text, tuple(verified), tuple(unverified))


def attach(signed: str, lines: Iterable[str]) -> str:
    """Add signature lines (e.g. cosignatures) to a signed note, skipping ones it already has."""
    parse(signed)
    present = set(signed.split("\n"))
    extra = []
    for line in lines:
        bare = line.rstrip("\n")
        if bare not in present:
            present.add(bare)
            extra.append(bare + "\n")
    out = signed + "".join(extra)
    parse(out)
    return out


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint: the log's origin, tree size and root hash."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise InputError(f"bad checkpoint origin {self.origin!r}")
        if not 0 <= self.size <= _MAX_TIMESTAMP:
            raise InputError(f"bad checkpoint size {self.size!r}")
        if len(self.root) != 32:
            raise InputError(f"checkpoint root must be 32 bytes, got {self.root!r}")
        if any(not line or "\n" in line for line in self.extensions):
            raise InputError(f"bad checkpoint extension lines {self.extensions!r}")

    @property
    def text(self) -> str:
        """The note text of this checkpoint."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text; raise :class:`VerificationError` if malformed."""
        if not text.endswith("\n"):
            raise VerificationError("malformed checkpoint: does not end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise VerificationError(f"malformed checkpoint: {len(lines)} lines, expected >= 3")
        origin, size, root_b64, *extensions = lines
        if not origin:
            raise VerificationError("malformed checkpoint: empty origin")
        if not _SIZE_PATTERN.fullmatch(size) or int(size) > _MAX_TIMESTAMP:
            raise VerificationError(f"malformed checkpoint: bad tree size {size!r}")
        root = _b64decode(root_b64, "checkpoint root")
        if len(root) != 32:
            raise VerificationError(f"malformed checkpoint: root is {len(root)} bytes, not 32")
        if any(not line for line in extensions):
            raise VerificationError("malformed checkpoint: empty extension line")
        return cls(origin, int(size), root, tuple(extensions))


def verify_checkpoint(
    signed: str | bytes, vkeys: Iterable[str | VerifierKey], *, origin: str | None = None
) -> tuple[Checkpoint, Note]:
    """Verify a signed checkpoint; with ``origin``, also require that origin."""
    note = verify(signed, vkeys)
    checkpoint = Checkpoint.from_text(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise VerificationError(f"checkpoint origin is {checkpoint.origin!r}, expected {origin!r}")
    return checkpoint, note


# ---------------------------------------------------------------------------------------------
# Signed JSON documents: a signed note whose text is one line of RFC 8785 canonical JSON


def sign_json(body: Mapping[str, Any], signer: Signer) -> bytes:
    """The signed-note bytes of a JSON document."""
    return signer.sign(canonical.dumps(dict(body)).decode() + "\n").encode()


def open_json(
    data: bytes, kind: str, expected_type: str, signer_field: str
) -> tuple[dict[str, Any], str]:
    """Parse and verify a signed JSON document of ``expected_type`` whose field
    ``signer_field`` names the vkey that must have signed it: ``(body, vkey)``."""
    try:
        text, _ = parse(data)
        body = canonical.loads(text.removesuffix("\n").encode())
    except (VerificationError, InputError) as exc:
        raise VerificationError(f"malformed {kind}: {exc}") from exc
    if not isinstance(body, dict) or body.get("type") != expected_type:
        raise VerificationError(f"malformed {kind}: not a {expected_type} document")
    signer = body.get(signer_field)
    try:
        key = VerifierKey.parse(signer)  # type: ignore[arg-type]
        verify(data, [key])
    except InputError as exc:
        raise VerificationError(f"malformed {kind}: bad {signer_field} key: {exc}") from exc
    except VerificationError as exc:
        raise VerificationError(f"{kind} signature: {exc}") from exc
    return body, signer  # type: ignore[return-value]
