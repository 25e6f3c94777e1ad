"""Content identifiers: the CIDv1 raw sha2-256 vectors, verification, and malformed CIDs."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import load_vectors

from verinfer import cid
from verinfer.errors import InputError, VerificationError

CID_VECTORS = load_vectors("cids.json")["vectors"]
HELLO = next(v for v in CID_VECTORS if v["data_utf8"] == "hello world")
HELLO_CID = HELLO["cid"]


def _b32(raw: bytes) -> str:
    """Multibase base32 (lower-case, unpadded) spelled out independently of the module."""
    return "b" + base64.b32encode(raw).decode().rstrip("=").lower()


@pytest.mark.parametrize("vector", CID_VECTORS, ids=lambda v: repr(v["data_utf8"]))
def test_compute_matches_every_vector(vector: dict[str, str]) -> None:
    assert cid.compute(vector["data_utf8"].encode()) == vector["cid"]


@pytest.mark.parametrize("vector", CID_VECTORS, ids=lambda v: repr(v["data_utf8"]))
def test_digest_of_every_vector_is_the_sha256_of_its_data(vector: dict[str, str]) -> None:
    data = vector["data_utf8"].encode()
    assert cid.digest(vector["cid"]) == hashlib.sha256(data).digest()
    assert cid.from_digest(hashlib.sha256(data).digest()) == vector["cid"]


def test_vector_cid_bytes_are_prefix_and_digest() -> None:
    raw = bytes.fromhex(HELLO["cid_bytes_hex"])
    assert raw[:4] == bytes([0x01, 0x55, 0x12, 0x20])  # CIDv1, raw, sha2-256, 32 bytes
    assert cid.digest(HELLO_CID) == raw[4:]
    assert _b32(raw) == HELLO_CID


def test_verify_accepts_the_named_content() -> None:
    assert cid.verify(HELLO_CID, b"hello world") is None


def test_verify_rejects_other_content_and_names_the_cid() -> None:
    with pytest.raises(VerificationError, match=f"does not match CID '{HELLO_CID}'"):
        cid.verify(HELLO_CID, b"hello world!")


def test_verify_of_a_malformed_cid_is_an_input_error() -> None:
    with pytest.raises(InputError, match="malformed CID"):
        cid.verify(HELLO_CID[:-1], b"hello world")


def _with_last_char(text: str, char: str) -> str:
    return text[:-1] + char


# 36 bytes are 288 bits, spelled in 58 base32 characters (290 bits): the last character carries
# two padding bits that must be zero. Flipping them names the same bytes with a second spelling.
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
_SECOND_SPELLING = _with_last_char(HELLO_CID, _BASE32[_BASE32.index(HELLO_CID[-1]) | 1])
_DAG_PB_CID = _b32(bytes([0x01, 0x70, 0x12, 0x20]) + hashlib.sha256(b"hello world").digest())
_SHA1_SHAPED = _b32(bytes([0x01, 0x55, 0x11, 0x20]) + hashlib.sha256(b"hello world").digest())
_CIDV0 = "QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u"  # dag-pb CIDv0 (base58btc, no prefix)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        pytest.param("", "expected 'b' and 58 base32", id="empty"),
        pytest.param(HELLO_CID[:-1], "expected 'b' and 58 base32", id="one-char-short"),
        pytest.param(HELLO_CID + "a", "expected 'b' and 58 base32", id="one-char-long"),
        pytest.param(HELLO_CID + "====", "expected 'b' and 58 base32", id="padded"),
        pytest.param(_CIDV0, "expected 'b' and 58 base32", id="cidv0-dag-pb"),
        pytest.param("B" + HELLO_CID[1:].upper(), "expected 'b'", id="upper-case-multibase"),
        pytest.param("z" + HELLO_CID[1:], "expected 'b'", id="other-multibase-prefix"),
        pytest.param("b" + HELLO_CID[1:].upper(), "lower-case", id="upper-case-body"),
        pytest.param(HELLO_CID[:10] + "K" + HELLO_CID[11:], "lower-case", id="one-upper-char"),
        pytest.param(_with_last_char(HELLO_CID, "1"), "not base32", id="digit-1"),
        pytest.param(_with_last_char(HELLO_CID, "8"), "not base32", id="digit-8"),
        pytest.param(HELLO_CID[:20] + "=" + HELLO_CID[21:], "not base32", id="inner-padding"),
        pytest.param(HELLO_CID[:20] + "-" + HELLO_CID[21:], "not base32", id="punctuation"),
        pytest.param(HELLO_CID[:20] + "é" + HELLO_CID[21:], "not base32", id="non-ascii"),
        pytest.param(_DAG_PB_CID, "only CIDv1 raw sha2-256", id="cidv1-dag-pb"),
        pytest.param(_SHA1_SHAPED, "only CIDv1 raw sha2-256", id="other-multihash"),
        pytest.param(_SECOND_SPELLING, "non-canonical base32", id="non-zero-trailing-bits"),
        # U+0131 (dotless i) upper-cases to ASCII "I", so it decodes: only the canonical
        # re-encoding check notices that it is not the CID's one spelling.
        pytest.param(HELLO_CID[:10] + "\u0131" + HELLO_CID[11:], "non-canonical", id="dotless-i"),
    ],
)
def test_digest_rejects_malformed_cids(bad: str, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        cid.digest(bad)


def test_cidv0_of_the_same_content_is_rejected() -> None:
    assert _DAG_PB_CID.startswith("bafybei")  # what a dag-pb CIDv1 looks like
    with pytest.raises(InputError, match="unsupported CID"):
        cid.verify(_DAG_PB_CID, b"hello world")


@pytest.mark.parametrize("bad", [None, b"bafkrei", 42, ["b"]], ids=repr)
def test_digest_rejects_non_strings(bad: object) -> None:
    with pytest.raises(InputError, match="malformed CID"):
        cid.digest(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 20, 31, 33, 64])
def test_from_digest_rejects_wrong_lengths(length: int) -> None:
    with pytest.raises(InputError, match=f"got {length}"):
        cid.from_digest(b"\x00" * length)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_digest_of_compute_is_the_sha256(data: bytes) -> None:
    name = cid.compute(data)
    assert len(name) == 59
    assert name.startswith("bafkrei")  # every raw sha2-256 CIDv1 starts this way
    assert cid.digest(name) == hashlib.sha256(data).digest()
    assert cid.verify(name, data) is None


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=70)
    | st.text(alphabet=_BASE32 + "AZ18=\u0131", min_size=52, max_size=52).map("bafkrei".__add__)
)
def test_digest_of_arbitrary_text_is_input_error_or_the_one_spelling(text: str) -> None:
    try:
        raw = cid.digest(text)
    except InputError:
        return
    assert cid.from_digest(raw) == text
