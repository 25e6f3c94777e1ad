"""Operators whose output is not a function of their inputs, found by static analysis. Pure.

A model holding a random generator (``RandomUniform``, ``RandomNormal``, their ``*Like`` forms,
``Multinomial``, ``Bernoulli``) or a ``Dropout`` in training mode gives outputs that no re-run
has to reproduce: ONNX Runtime keeps the generator's state in the session, so even a seeded one
answers differently on every call. Such a model is recorded as non-reproducible and never judged
bit for bit (docs/PROTOCOL.md §8). The analysis reads the main graph, every subgraph and every
model-local function; it does not run anything, so anyone holding the model's bytes reaches the
same verdict (a verifier does not take a manifest's word for it).

It lives beside the engine because the engine needs it too (a session of such a model is never
reused), and the engine must not import the hub.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from onnx import numpy_helper

__all__ = ["RANDOM_OPERATORS", "nondeterministic_operators", "nondeterministic_operators_of"]

# (domain, op) of every operator whose output is drawn at random. The ONNX operator list has no
# other operator with a seed or a training mode (checked against onnx.defs); the com.microsoft
# ones are ONNX Runtime's fused dropouts, for a hub whose allow-list admits that domain.
RANDOM_OPERATORS = frozenset(
    {
        ("", "RandomUniform"),
        ("", "RandomNormal"),
        ("", "RandomUniformLike"),
        ("", "RandomNormalLike"),
        ("", "Multinomial"),
        ("", "Bernoulli"),
        ("com.microsoft", "BiasDropout"),
        ("com.microsoft", "BitmaskDropout"),
        ("com.microsoft", "BitmaskBiasDropout"),
    }
)
_DEFAULT = ("", "ai.onnx")


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield attribute.g
        yield from attribute.graphs


def _constant_false(graph: onnx.GraphProto, name: str) -> bool:
    """``name`` is provably the boolean ``false`` in ``graph``: an initializer the caller cannot
    override (not also a graph input) or a ``Constant`` node's value, holding one false."""
    if name in {value.name for value in graph.input}:
        return False  # an initializer listed as an input is only a default: a caller may feed it
    tensors = [init for init in graph.initializer if init.name == name]
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in _DEFAULT and list(node.output) == [name]:
            tensors += [a.t for a in node.attribute if a.name == "value" and a.HasField("t")]
    if len(tensors) != 1:
        return False
    try:
        value = numpy_helper.to_array(tensors[0])
    except Exception:  # an odd tensor proves nothing
        return False
    return bool(value.dtype == bool and value.size == 1 and not value.reshape(-1)[0])


def _dropout_trains(graph: onnx.GraphProto, node: onnx.NodeProto, opset: int) -> bool:
    """Whether a ``Dropout`` may run in training mode (then it draws a random mask)."""
    if len(node.input) >= 3 and node.input[2]:  # opset 12+: the training_mode input
        return not _constant_false(graph, node.input[2])
    for attribute in node.attribute:  # opsets 1-6: is_test (0, the default, is training)
        if attribute.name == "is_test":
            return bool(attribute.i == 0)
    return opset < 7


def _scan(graph: onnx.GraphProto, opset: int, found: set[str]) -> None:
    for node in graph.node:
        domain = "" if node.domain in _DEFAULT else node.domain
        name = node.op_type if not domain else f"{domain}:{node.op_type}"
        if (domain, node.op_type) in RANDOM_OPERATORS or (
            domain == "" and node.op_type == "Dropout" and _dropout_trains(graph, node, opset)
        ):
            found.add(name)
        for sub in _subgraphs(node):
            _scan(sub, opset, found)


def _opset(imports: Iterator[onnx.OperatorSetIdProto] | list[onnx.OperatorSetIdProto]) -> int:
    versions = [int(o.version) for o in imports if o.domain in _DEFAULT]
    return versions[0] if versions else 0


def nondeterministic_operators(model: onnx.ModelProto) -> list[str]:
    """The operators of ``model`` whose output is not a function of their inputs, sorted and
    distinct (``domain:op`` outside the default domain); empty for a reproducible model.

    Every graph counts: the main graph, every subgraph (``If``, ``Loop``, ``Scan``) and every
    model-local function, whether or not a node calls it (a conservative verdict: it only means
    the model is not judged bit for bit)."""
    found: set[str] = set()
    _scan(model.graph, _opset(list(model.opset_import)), found)
    for function in model.functions:
        opset = _opset(list(function.opset_import)) or _opset(list(model.opset_import))
        holder = onnx.GraphProto(node=function.node)  # function bodies have no initializers
        _scan(holder, opset, found)
    return sorted(found)


def nondeterministic_operators_of(data: bytes) -> list[str]:
    """:func:`nondeterministic_operators` of a model's bytes (``ValueError`` if they do not
    parse as a ``ModelProto``)."""
    try:
        model = onnx.ModelProto.FromString(data)
    except Exception as exc:  # protobuf's DecodeError, or worse, on hostile bytes
        raise ValueError(f"not an ONNX model: {exc}") from exc
    return nondeterministic_operators(model)
