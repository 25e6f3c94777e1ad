"""C2SP signed notes, checkpoints and cosignatures: vectors, interop, malformed input, fuzzing."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors import load_vectors

from verinfer import note
from verinfer.errors import InputError, VerificationError

NOTE_VECTORS = load_vectors("signed_notes.json")["vectors"]
SPEC = NOTE_VECTORS[0]  # C2SP signed-note.md example
GOLANG = NOTE_VECTORS[1]  # golang.org/x/mod/sumdb/note example (deterministic signing)

EM_DASH = "\u2014"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _key_id(name: str, algorithm: int, public: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public)[:4], spelled out independently of the module."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([algorithm]) + public).digest()[:4]


def make_keys(name: str, seed: bytes, algorithm: int = 0x01) -> tuple[str, str]:
    """A deterministic ``(skey, vkey)`` pair, built by hand from an Ed25519 seed."""
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    key_id = _key_id(name, algorithm, public).hex()
    skey = f"PRIVATE+KEY+{name}+{key_id}+{_b64(bytes([algorithm]) + seed)}"
    return skey, f"{name}+{key_id}+{_b64(bytes([algorithm]) + public)}"


def _line(name: str, raw: bytes) -> str:
    return f"{EM_DASH} {name} {_b64(raw)}\n"


LOG_NAME = "example.com/behind-the-sofa"
LOG_SEED = bytes(range(32))
LOG_SKEY, LOG_VKEY = make_keys(LOG_NAME, LOG_SEED)
LOG = note.Signer(LOG_SKEY)
WITNESS_NAME = "witness.example.com/w1"
WITNESS_SEED = bytes(range(32, 64))
WITNESS_SKEY, WITNESS_VKEY = make_keys(WITNESS_NAME, WITNESS_SEED, 0x04)
WITNESS = note.Signer(WITNESS_SKEY)
# Another key with the log's name: a different key ID, so it does not vouch for the log's notes.
IMPOSTOR_SKEY, IMPOSTOR_VKEY = make_keys(LOG_NAME, bytes(range(64, 96)))

# The checkpoint of the tlog-cosignature spec example, and one with extension lines.
CHECKPOINT_TEXT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)
CHECKPOINT = note.Checkpoint(
    LOG_NAME, 20852163, base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
)
TIMESTAMP = 1679315147

SIGNED = LOG.sign(CHECKPOINT_TEXT)
LOG_LINE = SIGNED[len(CHECKPOINT_TEXT) + 1 :]
LOG_ID = _key_id(LOG_NAME, 0x01, LOG.key.public)


def _spec_note() -> str:
    return SPEC["text"] + "\n" + _line("example.com/foo", base64.b64decode(SPEC["signature_b64"]))


# ---------------------------------------------------------------------------------------------
# Vectors and key round trips.


def test_spec_example_note_verifies_with_its_vkey() -> None:
    verified = note.verify(_spec_note(), [SPEC["vkey"]])
    assert verified.text == SPEC["text"]
    assert verified.unverified == ()
    (signature,) = verified.verified
    assert (signature.name, signature.key_id, signature.timestamp) == (
        "example.com/foo",
        0x530D903A,
        None,
    )
    assert signature.line == _spec_note()[len(SPEC["text"]) + 1 :]
    assert note.verify(_spec_note().encode(), [SPEC["vkey"]]) == verified


def test_spec_example_vkey_parses_to_its_parts() -> None:
    key = note.VerifierKey.parse(SPEC["vkey"])
    assert (key.name, key.key_id, key.algorithm) == (
        "example.com/foo",
        0x530D903A,
        note.ALG_ED25519,
    )
    assert len(key.public) == 32
    assert key.vkey == str(key) == SPEC["vkey"]


def test_golang_signer_reproduces_the_signature_byte_for_byte() -> None:
    signer = note.Signer(GOLANG["skey"])
    expected = GOLANG["text"] + "\n" + f"{EM_DASH} PeterNeumann {GOLANG['signature_b64']}\n"
    assert signer.sign(GOLANG["text"]) == expected
    assert signer.vkey == GOLANG["vkey"]
    assert signer.name == "PeterNeumann"
    assert note.verify(expected, [GOLANG["vkey"]]).text == GOLANG["text"]


def test_keys_built_by_hand_match_the_signer() -> None:
    assert LOG.vkey == LOG_VKEY
    assert WITNESS.vkey == WITNESS_VKEY
    assert note.VerifierKey.parse(WITNESS_VKEY).algorithm == note.ALG_COSIGNATURE_V1


def test_generate_key_round_trips_for_note_signatures() -> None:
    skey, vkey = note.generate_key("example.org/log")
    signer = note.Signer(skey)
    assert signer.vkey == vkey
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 0x01
    verified = note.verify(signer.sign("hello\n"), [vkey])
    assert verified.text == "hello\n"
    assert verified.verified[0].timestamp is None
    with pytest.raises(InputError, match="only cosigner keys"):
        signer.signature_line("hello\n", timestamp=TIMESTAMP)


def test_generate_key_round_trips_for_cosignatures() -> None:
    skey, vkey = note.generate_key("witness.example.org", cosigner=True)
    witness = note.Signer(skey)
    assert witness.vkey == vkey
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 0x04
    cosigned = note.attach(SIGNED, [witness.signature_line(CHECKPOINT_TEXT, timestamp=TIMESTAMP)])
    verified = note.verify(cosigned, [LOG_VKEY, vkey])
    assert [(s.name, s.timestamp) for s in verified.verified] == [
        (LOG_NAME, None),
        ("witness.example.org", TIMESTAMP),
    ]
    # without an explicit timestamp, the cosignature carries the current time
    before = int(time.time())
    line = witness.signature_line(CHECKPOINT_TEXT)
    (cosignature,) = note.verify(CHECKPOINT_TEXT + "\n" + line, [vkey]).verified
    assert cosignature.timestamp is not None
    assert before <= cosignature.timestamp <= int(time.time())


def test_two_generated_keys_differ() -> None:
    assert note.generate_key("a.example")[0] != note.generate_key("a.example")[0]


@pytest.mark.parametrize("name", ["", "has space", "has+plus", "tab\tname", "new\nline"])
def test_generate_key_rejects_bad_names(name: str) -> None:
    with pytest.raises(InputError, match="bad key name"):
        note.generate_key(name)


# ---------------------------------------------------------------------------------------------
# Cosignatures (C2SP tlog-cosignature/v1): interoperability with signatures made by hand.


def _cosigned_message(text: str, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + text.encode()


def _hand_made_cosignature(text: str, timestamp: int, *, message: bytes | None = None) -> str:
    private = Ed25519PrivateKey.from_private_bytes(WITNESS_SEED)
    signature = private.sign(_cosigned_message(text, timestamp) if message is None else message)
    key_id = _key_id(WITNESS_NAME, 0x04, private.public_key().public_bytes_raw())
    return _line(WITNESS_NAME, key_id + timestamp.to_bytes(8, "big") + signature)


def test_a_hand_made_cosignature_verifies_and_reports_its_timestamp() -> None:
    cosigned = SIGNED + _hand_made_cosignature(CHECKPOINT_TEXT, TIMESTAMP)
    verified = note.verify(cosigned, [LOG_VKEY, WITNESS_VKEY])
    assert verified.text == CHECKPOINT_TEXT
    witness = next(s for s in verified.verified if s.name == WITNESS_NAME)
    assert witness.timestamp == TIMESTAMP
    checkpoint, _ = note.verify_checkpoint(cosigned, [WITNESS_VKEY], origin=LOG_NAME)
    assert checkpoint == CHECKPOINT


def test_signer_cosignature_is_the_c2sp_format() -> None:
    line = WITNESS.signature_line(CHECKPOINT_TEXT, timestamp=TIMESTAMP)
    assert line == _hand_made_cosignature(CHECKPOINT_TEXT, TIMESTAMP)  # Ed25519 is deterministic
    raw = base64.b64decode(line.split(" ")[2])
    public = Ed25519PrivateKey.from_private_bytes(WITNESS_SEED).public_key()
    assert raw[:4] == _key_id(WITNESS_NAME, 0x04, public.public_bytes_raw())
    assert int.from_bytes(raw[4:12], "big") == TIMESTAMP
    public.verify(raw[12:], _cosigned_message(CHECKPOINT_TEXT, TIMESTAMP))  # raises if wrong


def test_signer_note_signature_is_ed25519_over_the_text() -> None:
    raw = base64.b64decode(LOG_LINE.split(" ")[2])
    assert raw[:4] == LOG_ID
    Ed25519PrivateKey.from_private_bytes(LOG_SEED).public_key().verify(
        raw[4:], CHECKPOINT_TEXT.encode()
    )


def test_cosignatures_cover_extension_lines() -> None:
    text = CHECKPOINT_TEXT + "extension line\n"
    cosigned = LOG.sign(text) + _hand_made_cosignature(text, TIMESTAMP)
    assert note.verify(cosigned, [WITNESS_VKEY]).verified[0].timestamp == TIMESTAMP
    without = LOG.sign(text) + _hand_made_cosignature(CHECKPOINT_TEXT, TIMESTAMP)
    with pytest.raises(VerificationError, match="invalid signature by trusted key"):
        note.verify(without, [WITNESS_VKEY])


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(CHECKPOINT_TEXT.encode(), id="bare-checkpoint"),
        pytest.param(_cosigned_message(CHECKPOINT_TEXT, TIMESTAMP + 1), id="other-time"),
        pytest.param(b"cosignature/v2\ntime 1679315147\n" + CHECKPOINT_TEXT.encode(), id="v2"),
        pytest.param(b"cosignature/v1\ntime 01679315147\n" + CHECKPOINT_TEXT.encode(), id="zero"),
    ],
)
def test_a_cosignature_over_another_message_is_rejected(message: bytes) -> None:
    cosigned = SIGNED + _hand_made_cosignature(CHECKPOINT_TEXT, TIMESTAMP, message=message)
    with pytest.raises(VerificationError, match=f"invalid signature by trusted key {WITNESS_NAME}"):
        note.verify(cosigned, [LOG_VKEY, WITNESS_VKEY])


def test_a_cosignature_timestamp_above_2_63_is_rejected() -> None:
    cosigned = SIGNED + _hand_made_cosignature(CHECKPOINT_TEXT, 1 << 63)
    with pytest.raises(VerificationError, match="timestamp 9223372036854775808 > 2"):
        note.verify(cosigned, [LOG_VKEY, WITNESS_VKEY])


def test_the_largest_cosignature_timestamp_is_accepted() -> None:
    cosigned = SIGNED + _hand_made_cosignature(CHECKPOINT_TEXT, (1 << 63) - 1)
    verified = note.verify(cosigned, [WITNESS_VKEY])
    assert verified.verified[0].timestamp == (1 << 63) - 1


@pytest.mark.parametrize("timestamp", [-1, 1 << 63])
def test_signer_rejects_cosignature_timestamps_out_of_range(timestamp: int) -> None:
    with pytest.raises(InputError, match="out of range"):
        WITNESS.signature_line(CHECKPOINT_TEXT, timestamp=timestamp)


def test_a_note_signature_is_not_a_cosignature() -> None:
    # the same seed as a note-signing key: a different key ID, so never mistaken for the witness
    skey, vkey = make_keys(WITNESS_NAME, WITNESS_SEED, 0x01)
    signed = note.Signer(skey).sign(CHECKPOINT_TEXT)
    with pytest.raises(VerificationError, match="not signed by any trusted key"):
        note.verify(signed, [WITNESS_VKEY])
    assert note.verify(signed, [vkey]).verified[0].timestamp is None


# ---------------------------------------------------------------------------------------------
# attach


def test_attach_adds_cosignature_lines_once() -> None:
    line = WITNESS.signature_line(CHECKPOINT_TEXT, timestamp=TIMESTAMP)
    once = note.attach(SIGNED, [line])
    assert once == SIGNED + line
    assert note.attach(once, [line]) == once
    assert note.attach(once, [line.rstrip("\n")]) == once
    assert note.attach(SIGNED, [line.rstrip("\n")]) == once
    assert note.attach(once, []) == once


def test_attach_adds_a_line_given_twice_only_once() -> None:
    line = WITNESS.signature_line(CHECKPOINT_TEXT, timestamp=TIMESTAMP)
    assert note.attach(SIGNED, [line, line]) == SIGNED + line


def test_attach_rejects_a_malformed_note_or_line() -> None:
    with pytest.raises(VerificationError, match="malformed note"):
        note.attach(CHECKPOINT_TEXT, [LOG_LINE])
    with pytest.raises(VerificationError, match="must start with"):
        note.attach(SIGNED, ["not a signature line"])


# ---------------------------------------------------------------------------------------------
# Checkpoints (C2SP tlog-checkpoint)


def test_checkpoint_text_is_the_c2sp_body() -> None:
    assert CHECKPOINT.text == CHECKPOINT_TEXT
    assert note.Checkpoint.from_text(CHECKPOINT_TEXT) == CHECKPOINT


def test_checkpoint_round_trips_with_extension_lines() -> None:
    root = b"\x01" * 32
    checkpoint = note.Checkpoint("example.com/log", 0, root, ("ext one", "— ext two"))
    assert checkpoint.text == f"example.com/log\n0\n{_b64(root)}\next one\n— ext two\n"
    assert note.Checkpoint.from_text(checkpoint.text) == checkpoint


@settings(max_examples=200, deadline=None)
@given(
    origin=st.text(min_size=1, max_size=30).filter(lambda s: "\n" not in s),
    size=st.integers(0, (1 << 63) - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(st.text(min_size=1, max_size=20).filter(lambda s: "\n" not in s)),
)
def test_checkpoint_text_round_trips(
    origin: str, size: int, root: bytes, extensions: list[str]
) -> None:
    checkpoint = note.Checkpoint(origin, size, root, tuple(extensions))
    assert note.Checkpoint.from_text(checkpoint.text) == checkpoint


_ROOT_B64 = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"o\n007\n{_ROOT_B64}\n", id="leading-zeros"),
        pytest.param(f"o\n00\n{_ROOT_B64}\n", id="double-zero"),
        pytest.param(f"o\n-1\n{_ROOT_B64}\n", id="negative"),
        pytest.param(f"o\n+1\n{_ROOT_B64}\n", id="plus-sign"),
        pytest.param(f"o\n0x10\n{_ROOT_B64}\n", id="hex"),
        pytest.param(f"o\n1e3\n{_ROOT_B64}\n", id="exponent"),
        pytest.param(f"o\n1.0\n{_ROOT_B64}\n", id="decimal-point"),
        pytest.param(f"o\n 1\n{_ROOT_B64}\n", id="leading-space"),
        pytest.param(f"o\n1 \n{_ROOT_B64}\n", id="trailing-space"),
        pytest.param(f"o\n1_000\n{_ROOT_B64}\n", id="underscore"),
        pytest.param(f"o\n\u0661\n{_ROOT_B64}\n", id="arabic-indic-digit"),
        pytest.param(f"o\n\n{_ROOT_B64}\n", id="empty-size"),
        pytest.param(f"o\n9223372036854775808\n{_ROOT_B64}\n", id="size-2-to-the-63"),
        pytest.param(f"o\n1\n{_b64(b'x' * 31)}\n", id="root-31-bytes"),
        pytest.param(f"o\n1\n{_b64(b'x' * 33)}\n", id="root-33-bytes"),
        pytest.param("o\n1\n\n", id="root-empty"),
        pytest.param("o\n1\n!!!!\n", id="root-bad-base64"),
        pytest.param(f"o\n1\n{_ROOT_B64[:-1]}\n", id="root-missing-padding"),
        pytest.param(f"o\n1\n{_ROOT_B64[:-2]}J=\n", id="root-non-canonical-base64"),
        pytest.param(f"o\n1\n{_ROOT_B64.replace('/', '_')}\n", id="root-url-safe-base64"),
        pytest.param(f"\n1\n{_ROOT_B64}\n", id="empty-origin"),
        pytest.param(f"o\n1\n{_ROOT_B64}\n\n", id="empty-extension-line"),
        pytest.param(f"o\n1\n{_ROOT_B64}\next\n\nmore\n", id="empty-line-between-extensions"),
        pytest.param("o\n1\n", id="two-lines"),
        pytest.param("o\n", id="one-line"),
        pytest.param("", id="empty"),
        pytest.param(f"o\n1\n{_ROOT_B64}", id="no-trailing-newline"),
    ],
)
def test_malformed_checkpoints_are_rejected(text: str) -> None:
    with pytest.raises(VerificationError, match="malformed checkpoint"):
        note.Checkpoint.from_text(text)


def test_the_largest_checkpoint_size_is_accepted() -> None:
    text = f"o\n9223372036854775807\n{_ROOT_B64}\n"
    assert note.Checkpoint.from_text(text).size == (1 << 63) - 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (("", 1, b"x" * 32, ()), "origin"),
        (("a\nb", 1, b"x" * 32, ()), "origin"),
        (("o", -1, b"x" * 32, ()), "size"),
        (("o", 1 << 63, b"x" * 32, ()), "size"),
        (("o", 1, b"x" * 31, ()), "root must be 32 bytes"),
        (("o", 1, b"x" * 32, ("",)), "extension"),
        (("o", 1, b"x" * 32, ("a\nb",)), "extension"),
    ],
)
def test_checkpoint_constructor_rejects_bad_fields(fields: tuple, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        note.Checkpoint(*fields)


def test_verify_checkpoint_returns_the_checkpoint_and_note() -> None:
    checkpoint, verified = note.verify_checkpoint(SIGNED, [LOG_VKEY], origin=LOG_NAME)
    assert checkpoint == CHECKPOINT
    assert verified.text == CHECKPOINT_TEXT
    assert note.verify_checkpoint(SIGNED, [LOG_VKEY])[0] == CHECKPOINT


def test_verify_checkpoint_with_the_wrong_origin_fails() -> None:
    with pytest.raises(
        VerificationError, match=r"checkpoint origin is 'example\.com/behind-the-sofa'"
    ):
        note.verify_checkpoint(SIGNED, [LOG_VKEY], origin="example.com/other")


def test_verify_checkpoint_of_a_signed_non_checkpoint_fails() -> None:
    with pytest.raises(VerificationError, match="malformed checkpoint"):
        note.verify_checkpoint(LOG.sign("just a note\n"), [LOG_VKEY])


def test_verify_checkpoint_checks_the_signature_first() -> None:
    with pytest.raises(VerificationError, match="not signed by any trusted key"):
        note.verify_checkpoint(SIGNED, [IMPOSTOR_VKEY], origin=LOG_NAME)


# ---------------------------------------------------------------------------------------------
# Malformed notes


def _non_canonical(b64: str) -> str:
    """The same bytes with a non-zero padding bit: base64 that decodes but is not canonical."""
    assert b64.endswith("=")
    last = len(b64.rstrip("=")) - 1
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return b64[:last] + alphabet[alphabet.index(b64[last]) | 1] + b64[last + 1 :]


_LOG_SIG_B64 = LOG_LINE.split(" ")[2].rstrip("\n")
_LOG_RAW = base64.b64decode(_LOG_SIG_B64)
_TAMPERED = _LOG_RAW[:10] + bytes([_LOG_RAW[10] ^ 1]) + _LOG_RAW[11:]
_OTHER_ID = bytes([LOG_ID[0] ^ 1]) + LOG_ID[1:]
_LONG_TEXT = "x" * (note.MAX_LINE_BYTES + 1) + "\n"
_HUGE_TEXT = ("y" * 1000 + "\n") * (note.MAX_NOTE_BYTES // 1000)
_UNKNOWN_LINES = "".join(_line(f"k{i}.example", bytes(68)) for i in range(note.MAX_SIGNATURES))

MALFORMED_NOTES = [
    pytest.param(CHECKPOINT_TEXT + LOG_LINE, "no blank line before the signatures", id="no-blank"),
    pytest.param(CHECKPOINT_TEXT + "\n", "no signature lines", id="no-signatures"),
    pytest.param(SIGNED[:-1], "does not end with a newline", id="no-final-newline"),
    pytest.param("", "does not end with a newline", id="empty"),
    pytest.param(b"", "does not end with a newline", id="empty-bytes"),
    pytest.param("\n\n", "no signature lines", id="only-blank-line"),
    pytest.param(
        SIGNED.replace(_LOG_SIG_B64, "!!!!" + _LOG_SIG_B64[4:]), "bad base64", id="bad-base64"
    ),
    pytest.param(SIGNED.replace(_LOG_SIG_B64, _LOG_SIG_B64[:-1]), "bad base64", id="no-padding"),
    pytest.param(
        SIGNED.replace(_LOG_SIG_B64, _non_canonical(_LOG_SIG_B64)),
        "non-canonical base64",
        id="non-canonical-base64",
    ),
    pytest.param(
        SIGNED.replace(_LOG_SIG_B64, _LOG_SIG_B64.replace("=", "") + "=="),
        "bad base64",
        id="extra-padding",
    ),
    pytest.param(
        CHECKPOINT_TEXT + "\n" + _line(LOG_NAME, LOG_ID), "signature too short", id="4-bytes"
    ),
    pytest.param(CHECKPOINT_TEXT + "\n" + f"{EM_DASH} {LOG_NAME} \n", "too short", id="empty-sig"),
    pytest.param(
        CHECKPOINT_TEXT + "\n" + _line(LOG_NAME, _OTHER_ID + _LOG_RAW[4:]),
        "not signed by any trusted key",
        id="wrong-key-id",
    ),
    pytest.param(
        CHECKPOINT_TEXT + "\n" + _line(LOG_NAME, _TAMPERED),
        f"invalid signature by trusted key {LOG_NAME}\\+{LOG_ID.hex()}",
        id="tampered-signature",
    ),
    pytest.param(
        CHECKPOINT_TEXT + "\n" + _line(LOG_NAME, _LOG_RAW[:-1]),
        "has the wrong length",
        id="signature-63-bytes",
    ),
    pytest.param(
        CHECKPOINT_TEXT + "\n" + _line(LOG_NAME, _LOG_RAW + b"\x00"),
        "has the wrong length",
        id="signature-65-bytes",
    ),
    pytest.param(
        SIGNED.replace("20852163", "20852164"), "invalid signature by trusted key", id="other-text"
    ),
    pytest.param(SIGNED.encode().replace(b"sofa", b"sof\xff"), "not valid UTF-8", id="bad-utf8"),
    pytest.param(
        SIGNED.encode().replace(b"sofa", b"sof\xed\xa0\x80"), "not valid UTF-8", id="utf8-surrogate"
    ),
    pytest.param(SIGNED.replace("sofa", "sof\ud800"), "not valid UTF-8", id="lone-surrogate"),
    pytest.param(SIGNED.replace("sofa", "sof\r"), "control character", id="cr-in-text"),
    pytest.param(SIGNED.replace("\n", "\r\n"), "control character", id="crlf"),
    pytest.param(SIGNED.replace("sofa", "sof\t"), "control character", id="tab-in-text"),
    pytest.param(SIGNED.replace("sofa", "sof\x00"), "control character", id="nul-in-text"),
    pytest.param(SIGNED.replace("sofa", "sof\x1b"), "control character", id="escape-in-text"),
    pytest.param(SIGNED.replace(f"{EM_DASH} ", f"{EM_DASH}\t"), "control character", id="tab-sig"),
    pytest.param(
        LOG.sign(_LONG_TEXT), f"a line is longer than {note.MAX_LINE_BYTES} bytes", id="long-line"
    ),
    pytest.param(
        SIGNED + _UNKNOWN_LINES, f"more than {note.MAX_SIGNATURES} signatures", id="too-many"
    ),
    pytest.param(LOG.sign(_HUGE_TEXT), f"larger than {note.MAX_NOTE_BYTES} bytes", id="huge"),
    pytest.param(
        LOG.sign(_HUGE_TEXT).encode(), f"larger than {note.MAX_NOTE_BYTES} bytes", id="huge-bytes"
    ),
    pytest.param(SIGNED + LOG_LINE, "duplicate signature by", id="duplicate-line"),
    pytest.param(
        SIGNED + _line(LOG_NAME, LOG_ID + bytes(64)), "duplicate signature by", id="same-key-twice"
    ),
    pytest.param(SIGNED.replace(EM_DASH, "-"), "must start with '— '", id="hyphen"),
    pytest.param(SIGNED.replace(EM_DASH, "\u2013"), "must start with '— '", id="en-dash"),
    pytest.param(SIGNED.replace(f"{EM_DASH} ", EM_DASH), "must start with '— '", id="no-space"),
    pytest.param(SIGNED.replace(f"{EM_DASH} ", f" {EM_DASH} "), "must start with", id="indent"),
    pytest.param(SIGNED.replace(f"{LOG_NAME} ", f"{LOG_NAME}  "), "bad signature line", id="2sp"),
    pytest.param(SIGNED.replace(f"{EM_DASH} ", f"{EM_DASH}  "), "bad signature line", id="2sp-b"),
    pytest.param(SIGNED.replace("=\n", "= \n"), "bad signature line", id="trailing-space"),
    pytest.param(SIGNED.replace(f"{LOG_NAME} ", ""), "bad signature line", id="no-name"),
    pytest.param(SIGNED.replace(f" {LOG_NAME} ", "  "), "bad signature line", id="empty-name"),
    pytest.param(
        SIGNED.replace(f"{EM_DASH} {LOG_NAME}", f"{EM_DASH} example.com+sofa"),
        "bad signature line",
        id="plus-in-name",
    ),
    pytest.param(
        SIGNED.replace(f"{EM_DASH} {LOG_NAME}", f"{EM_DASH} example.com\u00a0sofa"),
        "bad signature line",
        id="nbsp-in-name",
    ),
    pytest.param(SIGNED + "\n", "no signature lines", id="blank-line-at-end"),
    # the text ends at the last blank line, so here the log's signature line is part of the text
    pytest.param(
        SIGNED + "\n" + _line("x", bytes(68)), "not signed by any trusted key", id="blank-in-block"
    ),
    pytest.param(None, "expected text, got NoneType", id="none"),
    pytest.param(42, "expected text, got int", id="int"),
]


@pytest.mark.parametrize(("signed", "reason"), MALFORMED_NOTES)
def test_malformed_notes_are_rejected(signed: str | bytes, reason: str) -> None:
    with pytest.raises(VerificationError, match=reason):
        note.verify(signed, [LOG_VKEY])


def test_the_limits_themselves_are_accepted() -> None:
    longest = "x" * note.MAX_LINE_BYTES + "\n"
    assert note.verify(LOG.sign(longest), [LOG_VKEY]).text == longest
    many = SIGNED + "".join(_line(f"k{i}.example", bytes(68)) for i in range(99))
    verified = note.verify(many, [LOG_VKEY])
    assert len(verified.unverified) == note.MAX_SIGNATURES - 1
    body = ("y" * 1000 + "\n") * ((note.MAX_NOTE_BYTES - 200) // 1001)
    assert note.verify(LOG.sign(body), [LOG_VKEY]).text == body


def test_unknown_signatures_are_ignored_and_kept() -> None:
    unknown = _line("someone.example", bytes(68))
    verified = note.verify(SIGNED + unknown, [LOG_VKEY])
    assert verified.text == CHECKPOINT_TEXT
    assert [s.name for s in verified.unverified] == ["someone.example"]
    assert [s.line for s in verified.unverified] == [unknown]


def test_the_text_ends_at_the_last_blank_line() -> None:
    text = "first\n\nsecond\n"
    verified = note.verify(LOG.sign(text), [LOG_VKEY])
    assert verified.text == text


def test_parse_returns_text_and_signature_lines() -> None:
    text, signatures = note.parse(SIGNED + _line("someone.example", bytes(6)))
    assert text == CHECKPOINT_TEXT
    assert [(s.name, s.key_id) for s in signatures] == [
        (LOG_NAME, int.from_bytes(LOG_ID, "big")),
        ("someone.example", 0),
    ]
    assert signatures[1].signature == b"\x00\x00"


# ---------------------------------------------------------------------------------------------
# Trusted keys


def test_a_different_key_with_the_same_name_is_not_trusted() -> None:
    with pytest.raises(VerificationError, match="not signed by any trusted key"):
        note.verify(SIGNED, [IMPOSTOR_VKEY])


def test_a_note_signed_by_an_impostor_is_not_trusted() -> None:
    forged = note.Signer(IMPOSTOR_SKEY).sign(CHECKPOINT_TEXT)
    with pytest.raises(VerificationError, match="not signed by any trusted key"):
        note.verify(forged, [LOG_VKEY])


def test_no_trusted_keys_trusts_nothing() -> None:
    with pytest.raises(VerificationError, match=f"signed by: {LOG_NAME}\\+{LOG_ID.hex()}"):
        note.verify(SIGNED, [])


def test_one_failing_trusted_signature_rejects_the_note() -> None:
    bad_witness = _line(WITNESS_NAME, _key_id(WITNESS_NAME, 4, WITNESS.key.public) + bytes(72))
    with pytest.raises(VerificationError, match=f"invalid signature by trusted key {WITNESS_NAME}"):
        note.verify(SIGNED + bad_witness, [LOG_VKEY, WITNESS_VKEY])
    # while a verifier that does not trust the witness ignores that line
    assert note.verify(SIGNED + bad_witness, [LOG_VKEY]).text == CHECKPOINT_TEXT


def test_two_trusted_keys_colliding_on_name_and_id_are_an_input_error() -> None:
    log_key = note.VerifierKey.parse(LOG_VKEY)
    impostor = note.VerifierKey(
        LOG_NAME, log_key.key_id, 0x01, note.Signer(IMPOSTOR_SKEY).key.public
    )
    with pytest.raises(InputError, match="two trusted keys share name and key ID"):
        note.verify(SIGNED, [log_key, impostor])


def test_the_same_trusted_key_twice_is_fine() -> None:
    log_key = note.VerifierKey.parse(LOG_VKEY)
    assert note.verify(SIGNED, [LOG_VKEY, log_key, LOG_VKEY]).text == CHECKPOINT_TEXT


def test_trusted_keys_may_be_any_iterable() -> None:
    assert note.verify(SIGNED, iter([LOG_VKEY])).text == CHECKPOINT_TEXT


def _vkey_with(key_material: bytes, *, name: str = LOG_NAME) -> str:
    """A vkey with a correct key ID for ``key_material`` (type byte and key), however odd."""
    key_id = _key_id(name, key_material[0], key_material[1:]).hex()
    return f"{name}+{key_id}+{_b64(key_material)}"


_LOG_PUBLIC = LOG.key.public
_LOG_VKEY_ID = LOG_ID.hex()
_LOG_VKEY_KEY = LOG_VKEY.split("+", 2)[2]

MALFORMED_VKEYS = [
    pytest.param("", "expected name\\+keyid\\+key", id="empty"),
    pytest.param(f"{LOG_NAME}+{_LOG_VKEY_ID}", "expected name\\+keyid\\+key", id="two-parts"),
    pytest.param(LOG_NAME, "expected name\\+keyid\\+key", id="one-part"),
    pytest.param(f"+{_LOG_VKEY_ID}+{_LOG_VKEY_KEY}", "bad key name", id="empty-name"),
    pytest.param(f"a b+{_LOG_VKEY_ID}+{_LOG_VKEY_KEY}", "bad key name", id="space-in-name"),
    pytest.param(f"x+{LOG_VKEY}", "key ID must be 8 lower-case hex digits", id="plus-in-name"),
    pytest.param(
        f"{LOG_NAME}+{_LOG_VKEY_ID.upper()}+{_LOG_VKEY_KEY}", "8 lower-case hex", id="upper-hex"
    ),
    pytest.param(f"{LOG_NAME}+{_LOG_VKEY_ID[:7]}+{_LOG_VKEY_KEY}", "8 lower-case hex", id="7-hex"),
    pytest.param(f"{LOG_NAME}+0{_LOG_VKEY_ID}+{_LOG_VKEY_KEY}", "8 lower-case hex", id="9-hex"),
    pytest.param(f"{LOG_NAME}+zzzzzzzz+{_LOG_VKEY_KEY}", "8 lower-case hex", id="not-hex"),
    pytest.param(
        f"{LOG_NAME}+{_OTHER_ID.hex()}+{_LOG_VKEY_KEY}", "key ID does not match", id="id-mismatch"
    ),
    pytest.param(f"{LOG_NAME}+{_LOG_VKEY_ID}+!!!!", "bad base64 key", id="bad-base64"),
    pytest.param(
        f"{LOG_NAME}+{_LOG_VKEY_ID}+{_LOG_VKEY_KEY}=", "bad base64 key", id="trailing-padding"
    ),
    pytest.param(
        _vkey_with(b"\x01" + _LOG_PUBLIC[:31]), "expected an Ed25519 key", id="31-byte-key"
    ),
    pytest.param(
        _vkey_with(b"\x01" + _LOG_PUBLIC + b"\x00"), "expected an Ed25519 key", id="33-byte-key"
    ),
    pytest.param(_vkey_with(b"\x02" + _LOG_PUBLIC), "expected an Ed25519 key", id="type-0x02"),
    pytest.param(_vkey_with(b"\x06" + _LOG_PUBLIC), "expected an Ed25519 key", id="type-0x06"),
    pytest.param(_vkey_with(b"\xff" + _LOG_PUBLIC), "expected an Ed25519 key", id="type-0xff"),
    pytest.param(None, "expected name\\+keyid\\+key", id="none"),
]


@pytest.mark.parametrize(("vkey", "reason"), MALFORMED_VKEYS)
def test_malformed_vkeys_are_input_errors(vkey: str, reason: str) -> None:
    with pytest.raises(InputError, match=f"malformed vkey .*{reason}"):
        note.VerifierKey.parse(vkey)
    with pytest.raises(InputError, match=f"malformed vkey .*{reason}"):
        note.verify(SIGNED, [LOG_VKEY, vkey])


def _skey_with(material: bytes, *, name: str = LOG_NAME, key_id: str = _LOG_VKEY_ID) -> str:
    return f"PRIVATE+KEY+{name}+{key_id}+{_b64(material)}"


MALFORMED_SKEYS = [
    pytest.param("", "expected PRIVATE\\+KEY\\+name\\+keyid\\+key", id="empty"),
    pytest.param(LOG_SKEY.replace("PRIVATE+KEY+", ""), "expected PRIVATE", id="no-prefix"),
    pytest.param(LOG_SKEY.replace("PRIVATE+KEY", "PUBLIC+KEY"), "expected PRIVATE", id="public"),
    pytest.param(LOG_SKEY.replace("PRIVATE+KEY", "private+key"), "expected PRIVATE", id="lower"),
    pytest.param(LOG_VKEY, "expected PRIVATE", id="a-vkey"),
    pytest.param(f"PRIVATE+KEY+{LOG_NAME}+{_LOG_VKEY_ID}", "expected PRIVATE", id="four-parts"),
    pytest.param(_skey_with(b"\x01" + LOG_SEED, name=""), "bad key name", id="empty-name"),
    pytest.param(_skey_with(b"\x01" + LOG_SEED, name="a b"), "bad key name", id="space-name"),
    pytest.param(_skey_with(b"\x01" + LOG_SEED, key_id="zzzzzzzz"), "key ID does not", id="hex"),
    pytest.param(
        _skey_with(b"\x01" + LOG_SEED, key_id=_LOG_VKEY_ID.upper()), "key ID does not", id="upper"
    ),
    pytest.param(
        _skey_with(b"\x01" + LOG_SEED, key_id=_OTHER_ID.hex()), "key ID does not", id="mismatch"
    ),
    pytest.param(LOG_SKEY[:-4] + "!!!!", "bad base64 key", id="bad-base64"),
    pytest.param(LOG_SKEY + "=", "bad base64 key", id="extra-padding"),
    pytest.param(_skey_with(b"\x01" + LOG_SEED[:31]), "expected an Ed25519 seed", id="31-bytes"),
    pytest.param(_skey_with(b"\x01" + LOG_SEED + b"\x00"), "Ed25519 seed", id="33-bytes"),
    pytest.param(_skey_with(LOG_SEED), "expected an Ed25519 seed", id="no-type-byte"),
    pytest.param(_skey_with(b"\x02" + LOG_SEED), "expected an Ed25519 seed", id="type-0x02"),
    pytest.param(None, "expected PRIVATE", id="none"),
]


@pytest.mark.parametrize(("skey", "reason"), MALFORMED_SKEYS)
def test_malformed_skeys_are_input_errors(skey: str, reason: str) -> None:
    with pytest.raises(InputError, match=f"malformed skey.*{reason}") as caught:
        note.Signer(skey)
    # and neither the error nor its causes show (a part of) the seed
    shown = caught.value.diagnostics()
    for secret in (_b64(b"\x01" + LOG_SEED), _b64(LOG_SEED), LOG_SEED.hex()):
        assert all(secret[i : i + 12] not in shown for i in range(len(secret) - 12)), shown


def test_signer_repr_and_str_never_show_the_private_key() -> None:
    seed_b64 = _b64(b"\x01" + LOG_SEED)
    for shown in (repr(LOG), str(LOG), repr(LOG.key), str(LOG.key), f"{LOG}", f"{LOG!r}"):
        assert LOG_SKEY not in shown
        assert seed_b64 not in shown
        assert LOG_SEED.hex() not in shown
        assert repr(LOG_SEED) not in shown
    assert LOG_VKEY in repr(LOG)


@pytest.mark.parametrize(
    "text",
    ["no newline", "", "tab\there\n", "cr\r\n", "nul\x00\n", "surrogate\ud800\n"],
    ids=repr,
)
def test_signer_rejects_text_that_is_not_note_text(text: str) -> None:
    with pytest.raises(InputError, match="note text"):
        LOG.sign(text)
    with pytest.raises(InputError, match="note text"):
        WITNESS.signature_line(text, timestamp=TIMESTAMP)


# ---------------------------------------------------------------------------------------------
# Fuzzing: untrusted input only ever fails with VerificationError.

_B64_CHARS = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_signature_lines = st.builds(
    lambda name, raw: f"{EM_DASH} {name} {_b64(raw)}",
    st.sampled_from([LOG_NAME, WITNESS_NAME, "x"]) | st.text(max_size=8),
    st.binary(max_size=80)
    | st.binary(min_size=64, max_size=64).map(LOG_ID.__add__)
    | st.binary(min_size=72, max_size=72).map(_key_id(WITNESS_NAME, 4, WITNESS.key.public).__add__),
)
_note_like_text = st.lists(
    st.text(max_size=20)
    | st.just("")
    | _signature_lines
    | st.text(_B64_CHARS, max_size=12).map(f"{EM_DASH} {LOG_NAME} ".__add__),
    max_size=8,
).map(lambda lines: "\n".join(lines) + "\n")


@settings(max_examples=400, deadline=None)
@given(st.text() | st.binary() | _note_like_text | _note_like_text.map(str.encode))
def test_parse_and_verify_of_arbitrary_input_only_raise_verification_error(
    signed: str | bytes,
) -> None:
    with contextlib.suppress(VerificationError):
        note.parse(signed)
    try:
        verified = note.verify(signed, [LOG_VKEY, WITNESS_VKEY])
    except VerificationError:
        return
    assert verified.verified  # only possible with a real signature, which fuzzing cannot forge


FUZZ_NOTE = (
    SIGNED
    + _line("unknown.example", b"\x00\x01\x02\x03" + bytes(64))
    + WITNESS.signature_line(CHECKPOINT_TEXT, timestamp=TIMESTAMP)
).encode()

_mutation = st.tuples(
    st.sampled_from(["replace", "delete", "insert", "truncate"]),
    st.integers(0, len(FUZZ_NOTE) - 1),
    st.integers(0, 255),
)


def _mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    for kind, where, value in mutations:
        position = where % max(len(data), 1)
        if kind == "replace":
            data = data[:position] + bytes([value]) + data[position + 1 :]
        elif kind == "delete":
            data = data[:position] + data[position + 1 :]
        elif kind == "insert":
            data = data[:position] + bytes([value]) + data[position:]
        else:
            data = data[:position]
    return data


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_mutation, min_size=1, max_size=3))
def test_a_mutated_note_fails_or_verifies_the_original_text(
    mutations: list[tuple[str, int, int]],
) -> None:
    mutated = _mutate(FUZZ_NOTE, mutations)
    try:
        verified = note.verify(mutated, [LOG_VKEY, WITNESS_VKEY])
    except VerificationError:
        return
    assert verified.text == CHECKPOINT_TEXT
    assert verified.verified


_SIGNED_PART = len(CHECKPOINT_TEXT.encode()) + 1  # the text and the blank line after it


@settings(max_examples=300, deadline=None)
@given(st.integers(0, _SIGNED_PART - 1), st.integers(1, 255))
def test_every_byte_of_the_text_and_blank_line_is_protected(position: int, xor: int) -> None:
    mutated = bytearray(FUZZ_NOTE)
    mutated[position] ^= xor
    with pytest.raises(
        VerificationError,
        match=r"^(invalid signature by trusted key example\.com/behind-the-sofa\+"
        r"|malformed note: )",
    ):
        note.verify(bytes(mutated), [LOG_VKEY, WITNESS_VKEY])


@settings(max_examples=300, deadline=None)
@given(
    st.text()
    | st.lists(st.text(max_size=12) | st.text("0123456789-+ ", max_size=20), max_size=6).map(
        lambda lines: "\n".join(lines) + "\n"
    )
)
def test_checkpoint_from_arbitrary_text_only_raises_verification_error(text: str) -> None:
    try:
        checkpoint = note.Checkpoint.from_text(text)
    except VerificationError:
        return
    assert checkpoint.text == text


@settings(max_examples=100, deadline=None)
@given(
    public=st.binary(min_size=32, max_size=32),
    algorithm=st.sampled_from([0x01, 0x04]),
    signature=st.binary(max_size=80),
)
def test_arbitrary_trusted_keys_and_signatures_only_raise_verification_error(
    public: bytes, algorithm: int, signature: bytes
) -> None:
    vkey = _vkey_with(bytes([algorithm]) + public, name="k")
    key_id = bytes.fromhex(vkey.split("+")[1])
    signed = "text\n\n" + _line("k", key_id + signature)
    with pytest.raises(
        VerificationError,
        match=r"^(malformed note: signature too short|signature by k\+[0-9a-f]{8} has the wrong "
        r"length|invalid signature by trusted key k\+)",
    ):
        note.verify(signed, [vkey])
