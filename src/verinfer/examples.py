"""Real example models, built in place (nothing is downloaded): the demo's, the tests' and the
benchmarks'.

- :func:`sklearn_model`: a classifier trained on one of scikit-learn's bundled datasets, converted
  with skl2onnx (needs the ``demo`` extra: ``pip install verinfer[demo]``).
- :func:`light_model`: a real architecture shipped inside the ``onnx`` package (squeezenet,
  resnet50, ...). Those files carry ``ConstantOfShape(0.02)`` fills instead of weights, so their
  outputs are degenerate; with ``seed`` every fill becomes a seeded random initializer (He-scaled
  convolution and dense weights, positive batch-norm variances) and the outputs spread out.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from verinfer.errors import InputError, NotFound

__all__ = ["LIGHT", "light_model", "mlp", "sklearn_model", "sklearn_samples"]

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
_MIN_INITIALIZERS_AS_INPUTS = 4
_MERGES = frozenset({"Sum", "Add"})  # from IR 4 on, an initializer need not be a graph input


def _datasets() -> dict[str, tuple[str, str]]:
    return {"iris": ("load_iris", "logistic"), "digits": ("load_digits", "mlp"),
            "breast_cancer": ("load_breast_cancer", "tree")}  # fmt: skip


def sklearn_samples(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's features (float32) and labels."""
    try:
        from sklearn import datasets  # noqa: PLC0415 - optional, slow import
    except ImportError as exc:
        raise NotFound("scikit-learn is not installed: pip install 'verinfer[demo]'") from exc
    if dataset not in _datasets():
        raise InputError(f"unknown dataset {dataset!r}; known: {', '.join(_datasets())}")
    x, y = getattr(datasets, _datasets()[dataset][0])(return_X_y=True)
    return x.astype(np.float32), y


@functools.cache
def sklearn_model(dataset: str) -> bytes:
    """A classifier trained (deterministically) on ``dataset``, as ONNX with plain tensor outputs
    (``label`` and ``probabilities``)."""
    try:
        from skl2onnx import to_onnx  # noqa: PLC0415 - optional, slow import
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
        from sklearn.neural_network import MLPClassifier  # noqa: PLC0415
        from sklearn.tree import DecisionTreeClassifier  # noqa: PLC0415
    except ImportError as exc:
        raise NotFound(
            "scikit-learn and skl2onnx are not installed: pip install 'verinfer[demo]'"
        ) from exc
    x, y = sklearn_samples(dataset)
    estimator = {
        "logistic": LogisticRegression(max_iter=1000),
        "mlp": MLPClassifier((32,), max_iter=300, random_state=0),
        "tree": DecisionTreeClassifier(random_state=0),
    }[_datasets()[dataset][1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings do not matter here
        estimator.fit(x.astype(np.float64), y)
        model = to_onnx(estimator, x[:1], options={"zipmap": False})
    return bytes(model.SerializeToString())


def mlp(
    sizes: list[int],
    *,
    seed: int,
    batch: int | str = 1,
    softmax: bool = False,
    output: str = "y",
) -> bytes:
    """A float MLP ``sizes[0] -> ... -> sizes[-1]`` with seeded weights (scaled by
    1/sqrt(fan-in)), ReLU between layers, input ``x`` of shape ``[batch, sizes[0]]`` (``batch``
    an int or a symbolic name) and output ``output``, optionally through a softmax."""
    from onnx import TensorProto, helper  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    nodes, weights, last = [], [], "x"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = (0.1 * rng.standard_normal(fan_out)).astype(np.float32)
        weights += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]  # fmt: skip
        last = f"a{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [last], [f"r{i}"]))
            last = f"r{i}"
    final = helper.make_node("Softmax", [last], [output], axis=-1) if softmax else (
        helper.make_node("Identity", [last], [output]))  # fmt: skip
    graph = helper.make_graph(
        [*nodes, final], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, sizes[0]])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, sizes[-1]])],
        weights,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def light_model(name: str, *, seed: int | None = None) -> bytes:
    """``onnx``'s ``light_<name>.onnx``; with ``seed``, its weight fills replaced by seeded
    random weights."""
    path = LIGHT / f"light_{name}.onnx"
    if not path.is_file():
        known = sorted(p.stem.removeprefix("light_") for p in LIGHT.glob("light_*.onnx"))
        raise NotFound(f"no light model {name!r}; known: {', '.join(known)}")
    if seed is None:
        return path.read_bytes()
    model = onnx.load_model_from_string(path.read_bytes())
    _materialize(model, np.random.default_rng(seed))
    return bytes(model.SerializeToString())


def _materialize(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    """Replace every ``ConstantOfShape`` whose shape is an initializer by a seeded initializer."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, tuple[str, int]] = {}
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, (node.op_type, position))
            readers.setdefault(name, set()).add(node.op_type)
    # the last batch norm of a residual branch (its output meets the shortcut in a Sum or Add)
    # starts small, as in zero-init residual training: else activations double at every merge
    # and resnet50's softmax saturates to one-hot
    residual = {
        node.input[1]
        for node in graph.node
        if node.op_type == "BatchNormalization" and readers.get(node.output[0], set()) & _MERGES
    }
    fills = [
        node
        for node in graph.node
        if node.op_type == "ConstantOfShape" and node.input[0] in initializers
    ]
    dropped = set()
    for node in fills:
        shape = tuple(int(d) for d in numpy_helper.to_array(initializers[node.input[0]]))
        role = consumers.get(node.output[0], ("", 0))
        value = _weights(shape, role, rng)
        if node.output[0] in residual:
            value = value * np.float32(0.2)
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        if model.ir_version < _MIN_INITIALIZERS_AS_INPUTS:
            graph.input.append(onnx.helper.make_tensor_value_info(
                node.output[0], onnx.TensorProto.FLOAT, shape))  # fmt: skip
        dropped.add(node.input[0])
    kept = [node for node in graph.node if node not in fills]
    del graph.node[:]
    graph.node.extend(kept)
    still_used = {name for node in graph.node for name in node.input}
    unused = dropped - still_used
    for field in (graph.initializer, graph.input):
        items = [item for item in field if item.name not in unused]
        del field[:]
        field.extend(items)


def _weights(shape: tuple[int, ...], role: tuple[str, int], rng: np.random.Generator) -> np.ndarray:
    op, position = role
    size = int(np.prod(shape)) if shape else 1
    if op == "BatchNormalization":  # inputs: x, scale, bias, mean, var
        value = {
            1: 1.0 + 0.1 * rng.standard_normal(size),
            4: rng.uniform(0.5, 1.5, size),
        }.get(position, 0.1 * rng.standard_normal(size))
    elif op in {"Conv", "Gemm", "MatMul"} and position == 1 and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) if op == "Conv" else shape[0]
        value = rng.standard_normal(size) * np.sqrt(2.0 / max(fan_in, 1))
    else:  # biases and anything else: small
        value = 0.01 * rng.standard_normal(size)
    return np.asarray(value, np.float32).reshape(shape)
