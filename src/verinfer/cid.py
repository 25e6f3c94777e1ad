"""Content identifiers: CIDv1, multicodec raw (0x55), sha2-256 multihash, base32 lower-case.

A CID is ``"b" + base32(0x01 0x55 0x12 0x20 || sha256(data))`` without padding. Every blob in
verinfer is named this way and checked against its CID whenever it is read or copied.
"""

from __future__ import annotations

import base64
import hashlib

from verinfer.errors import InputError, VerificationError

__all__ = ["compute", "digest", "from_digest", "verify"]

# CIDv1 || multicodec raw || multihash sha2-256 || digest length 32
_PREFIX = bytes([0x01, 0x55, 0x12, 0x20])
_MULTIBASE_BASE32 = "b"
_ENCODED_LENGTH = 59  # "b" + ceil(36 * 8 / 5) characters


def from_digest(sha256_digest: bytes) -> str:
    """The CID of data whose SHA-256 digest is ``sha256_digest``."""
    if len(sha256_digest) != 32:
        raise InputError(f"a sha2-256 digest is 32 bytes, got {len(sha256_digest)}")
    encoded = base64.b32encode(_PREFIX + sha256_digest).decode("ascii").rstrip("=").lower()
    return _MULTIBASE_BASE32 + encoded


def compute(data: bytes) -> str:
    """The CID of ``data``."""
    return from_digest(hashlib.sha256(data).digest())


def digest(cid: str) -> bytes:
    """The SHA-256 digest named by ``cid``; raises :class:`InputError` if it is malformed."""
    if not isinstance(cid, str) or len(cid) != _ENCODED_LENGTH or not cid.startswith("b"):
        raise InputError(f"malformed CID {cid!r}: expected 'b' and 58 base32 characters")
    body = cid[1:]
    if body != body.lower():
        raise InputError(f"malformed CID {cid!r}: base32 must be lower-case")
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except ValueError as exc:
        raise InputError(f"malformed CID {cid!r}: not base32") from exc
    if raw[:4] != _PREFIX:
        raise InputError(f"unsupported CID {cid!r}: only CIDv1 raw sha2-256 is accepted")
    if from_digest(raw[4:]) != cid:  # rejects non-zero padding bits, i.e. a second spelling
        raise InputError(f"malformed CID {cid!r}: non-canonical base32")
    return raw[4:]


def verify(cid: str, data: bytes) -> None:
    """Return ``None`` if ``data`` is the content named by ``cid``; raise otherwise."""
    expected = digest(cid)
    if hashlib.sha256(data).digest() != expected:
        raise VerificationError(f"content does not match CID {cid!r} (got {compute(data)!r})")
