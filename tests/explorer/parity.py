"""One verification specification, two implementations: the cases both verifiers are run on.

:func:`mutations` makes every single-field mutation of a real bundle (each field of the bundle,
of its receipt, of its checkpoint's lines and of its evidence, recursively into replicas, changed
to a set of other values, deleted, or added to); :func:`python_verdict` is what ``verinfer
verify`` concludes about one (the steps that passed, then ``valid`` or the error it prints).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from verinfer import tensors
from verinfer.errors import Error
from verinfer.verify import Bundle, verify_bundle

Options = Mapping[str, Any]  # the options verify.js takes: trusted, inputs, outputs, ...


def python_verdict(text: str, options: Options) -> dict[str, Any]:
    """The Python verifier's verdict on ``text`` in verify.js's form."""
    steps: list[str] = []
    try:
        bundle = Bundle.from_json(text)
        verify_bundle(
            bundle,
            options["trusted"],
            inputs=tensors.decode_json(options["inputs"]) if "inputs" in options else None,
            outputs=tensors.decode_json(options["outputs"]) if "outputs" in options else None,
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
