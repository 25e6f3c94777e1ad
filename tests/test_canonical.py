"""Canonical JSON (RFC 8785): the RFC's examples, strict parsing, and values with no encoding."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from verinfer import canonical
from verinfer.errors import InputError, VerificationError

# RFC 8785 §3.2.2: the example input and its canonical form, byte for byte.
RFC8785_INPUT = r"""{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"""
RFC8785_OUTPUT = (
    b'{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    b'"string":"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
)

# RFC 8785 §3.2.3: properties are sorted by their UTF-16 code units, so U+1F600 (surrogates
# D83D DE00) comes before U+FB33, although its code point is larger.
RFC8785_SORTING_INPUT = r"""{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"""
RFC8785_SORTED_KEYS = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]

# RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical number text.
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),  # minus zero
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def _float(bits_hex: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits_hex))[0]
    return value


def test_rfc8785_example_is_encoded_byte_for_byte() -> None:
    assert canonical.dumps(json.loads(RFC8785_INPUT)) == RFC8785_OUTPUT


def test_rfc8785_example_output_is_accepted_by_loads() -> None:
    assert canonical.loads(RFC8785_OUTPUT) == json.loads(RFC8785_INPUT)


def test_keys_are_sorted_by_utf16_code_units() -> None:
    encoded = canonical.dumps(json.loads(RFC8785_SORTING_INPUT))
    assert list(json.loads(encoded)) == RFC8785_SORTED_KEYS
    assert encoded.startswith(b'{"\\r":"Carriage Return","1":"One","\xc2\x80":"Control"')
    assert canonical.loads(encoded) == json.loads(RFC8785_SORTING_INPUT)


@pytest.mark.parametrize(("bits_hex", "text"), RFC8785_NUMBERS)
def test_numbers_are_formatted_as_in_rfc8785_appendix_b(bits_hex: str, text: str) -> None:
    assert canonical.dumps(_float(bits_hex)) == text.encode()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ([1e30, 4.50, 6, 2e-3, 1e-27], b"[1e+30,4.5,6,0.002,1e-27]"),  # RFC 8785 §3.2.2.3
        (1.0, b"1"),
        (-0.0, b"0"),
        (0.1, b"0.1"),
        (1e21, b"1e+21"),
        (1e-7, b"1e-7"),
        (9007199254740991, b"9007199254740991"),
        (-9007199254740991, b"-9007199254740991"),
    ],
    ids=repr,
)
def test_numbers_have_one_spelling(value: Any, text: bytes) -> None:
    assert canonical.dumps(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("\u20ac", b'"\xe2\x82\xac"'),  # non-ASCII is written as UTF-8, not escaped
        ("\x0f", b'"\\u000f"'),  # other control characters as lower-case \u00xx
        ("\n\t\r\b\f", b'"\\n\\t\\r\\b\\f"'),  # the five with short escapes
        ('"\\', b'"\\"\\\\"'),
        ("/", b'"/"'),  # the solidus is not escaped
        ("\x7f", b'"\x7f"'),  # DEL is not a JSON control character
        ("\U0001f600", b'"\xf0\x9f\x98\x80"'),
    ],
    ids=repr,
)
def test_strings_are_escaped_as_in_rfc8785(value: str, text: bytes) -> None:
    assert canonical.dumps(value) == text
    assert canonical.loads(text) == value


def test_literals_and_nesting() -> None:
    assert canonical.dumps({"b": [None, True, False], "a": {}}) == b'{"a":{},"b":[null,true,false]}'


@pytest.mark.parametrize(
    "data",
    [b"null", b"true", b"0", b"-1", b'""', b"[]", b"{}", b'{"a":[1,{"b":"c"}]}', b"1e+21"],
    ids=repr,
)
def test_loads_accepts_canonical_bytes(data: bytes) -> None:
    value = canonical.loads(data)
    assert canonical.dumps(value) == data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b'{"a": 1}', "not in RFC 8785 canonical form", id="space-after-colon"),
        pytest.param(b'{"a":1} ', "not in RFC 8785 canonical form", id="trailing-space"),
        pytest.param(b'{"a":1}\n', "not in RFC 8785 canonical form", id="trailing-newline"),
        pytest.param(b' {"a":1}', "not in RFC 8785 canonical form", id="leading-space"),
        pytest.param(b"[1, 2]", "not in RFC 8785 canonical form", id="space-in-array"),
        pytest.param(b'{"b":1,"a":2}', "not in RFC 8785 canonical form", id="unsorted-keys"),
        pytest.param(b'{"a":1,"a":1}', "not in RFC 8785 canonical form", id="duplicate-keys"),
        pytest.param(b'{"a":1,"a":2}', "not in RFC 8785 canonical form", id="duplicate-keys-2"),
        pytest.param(b"1.0", "not in RFC 8785 canonical form", id="float-one"),
        pytest.param(b"4.50", "not in RFC 8785 canonical form", id="trailing-zero"),
        pytest.param(b"1E30", "not in RFC 8785 canonical form", id="upper-case-exponent"),
        pytest.param(b"-0", "not in RFC 8785 canonical form", id="minus-zero"),
        pytest.param(b'"\\u0041"', "not in RFC 8785 canonical form", id="needless-escape"),
        pytest.param(b'"\\u000F"', "not in RFC 8785 canonical form", id="upper-case-escape"),
        pytest.param(b'"\\/"', "not in RFC 8785 canonical form", id="escaped-solidus"),
        pytest.param(b'"\\u20ac"', "not in RFC 8785 canonical form", id="escaped-non-ascii"),
        pytest.param(b"NaN", "malformed canonical JSON: NaN is not JSON", id="nan"),
        pytest.param(b"[Infinity]", "malformed canonical JSON: Infinity", id="infinity"),
        pytest.param(b"-Infinity", "malformed canonical JSON: -Infinity", id="minus-infinity"),
        pytest.param(b'"\xff"', "malformed canonical JSON: 'utf-8' codec", id="invalid-utf8"),
        pytest.param(b'"\xc3"', "malformed canonical JSON: 'utf-8' codec", id="truncated-utf8"),
        pytest.param(b'"\xed\xa0\x80"', "malformed canonical JSON: 'utf-8'", id="utf8-surrogate"),
        pytest.param(b'"\\ud800"', "no canonical JSON form", id="lone-surrogate-escape"),
        pytest.param(b"\xef\xbb\xbf{}", "malformed canonical JSON", id="byte-order-mark"),
        pytest.param(b"", "malformed canonical JSON: Expecting value", id="empty"),
        pytest.param(b"{", "malformed canonical JSON: Expecting", id="truncated"),
        pytest.param(b"[1,]", "malformed canonical JSON", id="trailing-comma"),
        pytest.param(b"9007199254740993", "not in RFC 8785 canonical form", id="unsafe-integer"),
    ],
)
def test_loads_rejects_non_canonical_bytes(data: bytes, reason: str) -> None:
    with pytest.raises(VerificationError, match=reason):
        canonical.loads(data)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param(math.nan, "nan is not representable", id="nan"),
        pytest.param(math.inf, "inf", id="infinity"),
        pytest.param([-math.inf], "inf", id="minus-infinity-in-list"),
        pytest.param({1, 2}, "unsupported type", id="set"),
        pytest.param({"a": {1}}, "unsupported type", id="nested-set"),
        pytest.param(b"bytes", "unsupported type", id="bytes"),
        pytest.param(object(), "unsupported type", id="object"),
        pytest.param({1: "a"}, "keys must be strings", id="int-key"),
        pytest.param(2**53, "safe integer", id="integer-2-to-the-53"),
        pytest.param(-(2**53), "safe integer", id="integer-minus-2-to-the-53"),
        pytest.param("\ud800", "non-UTF-8", id="lone-surrogate"),
    ],
)
def test_dumps_of_unencodable_values_is_an_input_error(value: object, reason: str) -> None:
    with pytest.raises(InputError, match=f"no canonical JSON form: .*{reason}"):
        canonical.dumps(value)


def test_canonical_text_of_a_large_float_is_accepted_by_loads() -> None:
    # RFC 8785 writes floats below 1e21 without an exponent, e.g. 2^53 and 1e20 as integers.
    # That is their canonical form, so loads must accept what dumps produced.
    for value in (2.0**53, 1e20, _float("4430000000000000")):
        data = canonical.dumps(value)
        assert canonical.loads(data) == value


def test_loads_of_deeply_nested_input_is_a_verification_error() -> None:
    # 20 kB of brackets: untrusted input must fail as malformed, not crash the parser.
    with pytest.raises(VerificationError, match="malformed canonical JSON"):
        canonical.loads(b"[" * 10_000 + b"]" * 10_000)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_loads_inverts_dumps(value: Any) -> None:
    data = canonical.dumps(value)
    assert canonical.loads(data) == value
    assert canonical.dumps(canonical.loads(data)) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | _json_values.map(lambda v: json.dumps(v).encode()))
def test_loads_of_arbitrary_bytes_is_canonical_or_a_verification_error(data: bytes) -> None:
    try:
        value = canonical.loads(data)
    except VerificationError:
        return
    assert canonical.dumps(value) == data


_simple_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text()
    | st.sampled_from(
        ["\x00\x1f\x7f\u2028\u2029\ud7ff\ue000\uffff\U0001f600", "\ud800", '"\\/\b\f\n\r\t']
    )
    | st.integers(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127)), children, max_size=4)
        | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=1000, deadline=None)
@given(_simple_values)
def test_the_fast_path_is_byte_identical_to_rfc8785(value: Any) -> None:
    """Float-free values go through json.dumps; the bytes must equal the reference library's."""
    try:
        expected = bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, ValueError):
        with pytest.raises(InputError, match=r"^value has no canonical JSON form: "):
            canonical.dumps(value)
        return
    assert canonical.dumps(value) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(max_size=12), min_size=3, max_size=3),
    st.one_of(st.none(), st.text(max_size=12)),
)
def test_a_receipts_fast_encoding_is_its_rfc8785_form(
    texts: list[str], manifest: str | None
) -> None:
    """Receipt.create writes plain-ASCII receipts from a template: byte for byte what the
    rfc8785 package makes of the same fields, and any other text takes the general path."""
    from verinfer.verify import Receipt  # noqa: PLC0415

    log, node, engine = texts
    receipt = Receipt.create(
        log=log,
        node=node,
        model="bafkreid2azwuun2tob3kapyrytxf4myoeycuy2u7fsqx6mvfautwojcqlu",
        manifest=manifest,
        inputs="sha256:" + "ab" * 32,
        outputs="sha256:" + "cd" * 32,
        mode="attested",
        engine=engine,
        time="2026-12-01T00:00:00.000Z",
        nonce=None,
    )
    assert receipt.data == rfc8785.dumps(receipt.body)
