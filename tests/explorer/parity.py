"""One verification specification, two implementations: the cases both verifiers are run on.

:func:`mutations` makes every single-field mutation of a real bundle (each field of the bundle,
of its receipt, of its checkpoint's lines and of its evidence, recursively into replicas, changed
to a set of other values, deleted, or added to); :func:`python_verdict` is what ``verinfer
verify`` concludes about one (the steps that passed, then ``valid`` or the error it prints).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from verinfer import cid, merkle, note, tensors
from verinfer.errors import Error
from verinfer.verify import Bundle, Receipt, verify_bundle

Options = Mapping[str, Any]  # the options verify.js takes: trusted, inputs, outputs, ...


def python_verdict(text: str, options: Options) -> dict[str, Any]:
    """The Python verifier's verdict on ``text`` in verify.js's form."""
    steps: list[str] = []

    def claimed(name: str) -> Any:  # tensors, or their JSON text as `verinfer verify` reads it
        given = options.get(name)
        if given is None:
            return None
        return tensors.decode_json(json.loads(given) if isinstance(given, str) else given)

    try:
        bundle = Bundle.from_json(text)
        verify_bundle(
            bundle,
            options["trusted"],
            inputs=claimed("inputs"),
            outputs=claimed("outputs"),
            report=steps.append,
            witnesses=options.get("witnesses", ()),
            quorum=options.get("quorum", 0),
            operators=options.get("operators"),
        )
    except Error as exc:
        return {"ok": False, "steps": steps, "error": str(exc)}
    return {"ok": True, "steps": steps, "error": None}


def _changed(text: str) -> str:
    """``text`` with its middle character replaced by another of the same kind."""
    if not text:
        return "x"
    at = len(text) // 2
    old = text[at]
    new = "B" if old == "A" else "A"
    if old.isdigit():
        new = "1" if old == "0" else "0"
    elif old.islower():
        new = "b" if old == "a" else "a"
    return text[:at] + new + text[at + 1 :]


def _values(value: Any) -> Iterator[tuple[str, Any]]:
    """Other values for one field: of the same kind, and of every other JSON kind."""
    if isinstance(value, str):
        yield "changed", _changed(value)
        yield "empty", ""
        yield "extended", value + "x"
        yield "truncated", value[:-1]
    elif isinstance(value, bool):
        yield "negated", not value
    elif isinstance(value, int):
        yield "plus 1", value + 1
        yield "minus 1", value - 1
        yield "negative", -1
        yield "fraction", value + 0.5
    elif isinstance(value, list):
        yield "empty", []
        for position in range(len(value)):
            yield f"without {position}", value[:position] + value[position + 1 :]
        if value:
            yield "last twice", [*value, value[-1]]
    elif isinstance(value, dict):
        yield "empty", {}
        yield "extra key", {**value, "extra": 1}
    kinds: list[tuple[str, Any]] = [
        ("null", None), ("true", True), ("zero", 0), ("text", "x"), ("list", []), ("object", {})
    ]  # fmt: skip
    for name, other in kinds:
        if type(other) is not type(value) or (isinstance(value, str) and value == other):
            yield name, other


def _receipt_text(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _tree_mutations(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every single-field mutation of a JSON value, as (what, mutated value)."""
    for what, other in _values(value):
        if json.dumps(other) != json.dumps(value):  # a change, not the same value again
            yield f"{path} {what}", other
    if isinstance(value, dict):
        for key in sorted(value):
            yield f"{path}.{key} deleted", {k: v for k, v in value.items() if k != key}
            for what, other in _field_mutations(key, value[key], f"{path}.{key}"):
                yield what, {**value, key: other}
    elif isinstance(value, list):
        for position, item in enumerate(value):
            for what, other in _tree_mutations(item, f"{path}[{position}]"):
                yield what, [*value[:position], other, *value[position + 1 :]]


def _field_mutations(key: str, value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if key == "receipt" and isinstance(value, str):  # its fields, and its exact bytes
        body = json.loads(value)
        for what, other in _tree_mutations(body, path):
            yield what, _receipt_text(other) if isinstance(other, dict) else other
        yield f"{path} with spaces", json.dumps(body, sort_keys=True)
    elif key == "checkpoint" and isinstance(value, str):  # each line of the signed note
        lines = value.split("\n")
        for position, line in enumerate(lines):
            for what, other in (("changed", _changed(line)), ("dropped", None), ("twice", line)):
                if other is None:
                    changed = lines[:position] + lines[position + 1 :]
                elif what == "twice":
                    changed = [*lines[: position + 1], line, *lines[position + 1 :]]
                else:
                    changed = [*lines[:position], other, *lines[position + 1 :]]
                yield f"{path} line {position} {what}", "\n".join(changed)
        yield from _tree_mutations(value, path)
    else:
        yield from _tree_mutations(value, path)


def mutations(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    """Every single-field mutation of ``bundle`` (its dict form), as (what, JSON text)."""
    found = [(f"(whole) {what}", json.dumps(other)) for what, other in _values(bundle)]
    for key in sorted(bundle):
        found.append((f"{key} deleted", json.dumps({k: v for k, v in bundle.items() if k != key})))
        for what, other in _field_mutations(key, bundle[key], key):
            found.append((what, json.dumps({**bundle, key: other})))
    found.append(("extra field", json.dumps({**bundle, "extra": 1})))
    return found


# ---------------------------------------------------------------------------------------------
# Crafted bundles: a log of our own key, for what a dishonest node could hand over that no
# single-field mutation of a real bundle reaches (numbers JSON.parse would read otherwise,
# tree sizes above 2^53, names Python and JavaScript space differently, tensors out of range)


def _x(dtype: str, values: Any) -> str:
    """The JSON text of inputs {"x": a tensor of ``values``}."""
    return json.dumps({"x": {"dtype": dtype, "shape": [len(values)], "data": values}})


def crafted() -> list[tuple[str, str, dict[str, Any]]]:
    """(what, bundle text, options) of bundles signed by a fresh log key, and claimed inputs."""
    skey, vkey = note.generate_key("crafted.example/log")
    signer = note.Signer(skey)
    trusted = {"trusted": [vkey]}

    def bundle(
        inputs: Any,
        size: int = 1,
        proof: tuple[bytes, ...] = (),
        line: str = "",
        cosignatures: tuple[str, ...] = (),
    ) -> str:
        digest = tensors.map_digest(inputs)
        receipt = Receipt.create(log="crafted.example/log", node=vkey, model=cid.compute(b"m"),
                                 manifest=None, inputs=digest, outputs=digest, mode="attested",
                                 engine="onnxruntime/x86_64", time="2026-01-01T00:00:00.000Z",
                                 nonce=None)  # fmt: skip
        root = merkle.leaf_hash(receipt.data)
        for sibling in proof:
            root = hashlib.sha256(b"\x01" + root + sibling).digest()
        signed = signer.sign(f"crafted.example/log\n{size}\n{base64.b64encode(root).decode()}\n")
        value = {"type": "verinfer.bundle/v1", "receipt": receipt.data.decode(), "index": 0,
                 "proof": [base64.b64encode(p).decode() for p in proof],
                 "checkpoint": signed + line, "cosignatures": list(cosignatures),
                 "evidence": {}}  # fmt: skip
        return json.dumps(value)

    def of(dtype: str, values: Any) -> dict[str, np.ndarray]:
        return {"x": np.array(values, dtype=dtype)}

    forty_four = bundle(of("int8", [44]))
    right = tuple(hashlib.sha256(bytes([i])).digest() for i in range(53))
    return [
        ("crafted", forty_four, {**trusted, "inputs": _x("int8", [44])}),
        ("crafted: a BOM before the bundle", "\ufeff" + forty_four, trusted),
        ("crafted: index 0.0", forty_four.replace('"index": 0', '"index": 0.0'), trusted),
        ("crafted: index 1e0", forty_four.replace('"index": 0', '"index": 1e0'), trusted),
        # a proof for a tree of 2^53 leaves, a checkpoint of 2^53 + 1 (the same double)
        ("crafted: tree size 2^53 + 1", bundle(of("int8", [44]), 2**53 + 1, right), trusted),
        (
            "crafted: U+0085 in a signature name",
            bundle(of("int8", [44]), line="\u2014 a\u0085b AAAAAAA=\n"),
            trusted,
        ),
        (
            "crafted: U+FEFF in a signature name",
            bundle(of("int8", [44]), line="\u2014 a\ufeffb AAAAAAA=\n"),
            trusted,
        ),
        # U+0ECE: assigned in Unicode 15, printable to the browser, not to Python 3.11
        (
            "crafted: a cosignature line of a character new in Unicode 15",
            bundle(of("int8", [44]), cosignatures=("\u2014 w\u0ece AAAAAAA=\n",)),
            trusted,
        ),
        ("crafted: int8 300", forty_four, {**trusted, "inputs": _x("int8", [300])}),
        ("crafted: uint8 -1", bundle(of("uint8", [255])), {**trusted, "inputs": _x("uint8", [-1])}),
        (
            "crafted: int64 2^53 + 1",
            bundle(of("int64", [2**53])),
            {**trusted, "inputs": _x("int64", [2**53 + 1])},
        ),
        (
            "crafted: -0 for -0.0",
            bundle(of("float32", [-0.0])),
            {**trusted, "inputs": '{"x": {"dtype": "float32", "shape": [1], "data": [-0]}}'},
        ),
        (
            "crafted: -0 for 0.0",
            bundle(of("float32", [0.0])),
            {**trusted, "inputs": '{"x": {"dtype": "float32", "shape": [1], "data": [-0]}}'},
        ),
        (
            "crafted: float32 1e39",
            bundle(of("float32", [np.inf])),
            {**trusted, "inputs": _x("float32", [1e39])},
        ),
        (
            "crafted: NaN",
            bundle(of("float32", [np.nan])),
            {**trusted, "inputs": '{"x": {"dtype": "float32", "shape": [1], "data": [NaN]}}'},
        ),
        ("crafted: int8 44.0", forty_four, {**trusted, "inputs": _x("int8", [44.0])}),
        (
            "crafted: shape [1.0]",
            forty_four,
            {**trusted, "inputs": '{"x": {"dtype": "int8", "shape": [1.0], "data": [44]}}'},
        ),
        (
            "crafted: an extra key",
            forty_four,
            {**trusted, "inputs": '{"x": {"dtype": "int8", "shape": [1], "data": [44], "n": 1}}'},
        ),
        (
            "crafted: shape [0] with data",
            bundle({"x": np.zeros(0, np.int8)}),
            {**trusted, "inputs": '{"x": {"dtype": "int8", "shape": [0], "data": [44]}}'},
        ),
        (
            "crafted: bool byte 2",
            bundle({"x": np.frombuffer(b"\x02", np.bool_)}),
            {**trusted, "inputs": '{"x": {"dtype": "bool", "shape": [1], "base64": "Ag=="}}'},
        ),
        (
            "crafted: the same key twice in the inputs",
            forty_four,  # json.loads keeps the last
            {
                **trusted,
                "inputs": '{"x": {"dtype": "int8", "shape": [1], "data": [1]}, '
                '"x": {"dtype": "int8", "shape": [1], "data": [44]}}',
            },
        ),
    ]
