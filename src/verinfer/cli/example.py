"""``verinfer example``: the models (and sample inputs) the README's commands use, built in place
from the package's own examples (nothing is downloaded)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from verinfer import examples, tensors
from verinfer.cli._app import app, err, out
from verinfer.errors import InputError


def _sklearn(dataset: str) -> tuple[bytes, dict[str, np.ndarray]]:
    features, _ = examples.sklearn_samples(dataset)
    return examples.sklearn_model(dataset), {"X": features[:2]}


def _squeezenet() -> tuple[bytes, dict[str, np.ndarray]]:
    image = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    return examples.light_model("squeezenet", seed=1), {"data_0": image}


def _mlp() -> tuple[bytes, dict[str, np.ndarray]]:
    """A 4-8-3 MLP with seeded weights and a fixed batch of 1: small enough for zk mode."""
    return examples.mlp([4, 8, 3], seed=1), {"x": np.array([[0.5, -1.0, 0.25, 2.0]], np.float32)}


EXAMPLES: dict[str, tuple[str, Callable[[], tuple[bytes, dict[str, np.ndarray]]]]] = {
    "iris": (
        "scikit-learn logistic regression on iris (X: float32[N, 4])",
        lambda: _sklearn("iris"),
    ),
    "digits": ("scikit-learn MLP on digits (X: float32[N, 64])", lambda: _sklearn("digits")),
    "breast_cancer": (
        "scikit-learn decision tree on breast cancer (X: float32[N, 30])",
        lambda: _sklearn("breast_cancer"),
    ),
    "squeezenet": (
        "squeezenet 1.0 from the onnx package, seeded weights (data_0: float32[1, 3, 224, 224])",
        _squeezenet,
    ),
    "mlp": ("a 4-8-3 MLP with seeded weights, for zk mode (x: float32[1, 4])", _mlp),
}


@app.command()
def example(
    name: Annotated[str, typer.Argument(help=f"one of: {', '.join(EXAMPLES)}")],
    out_file: Annotated[Path, typer.Option("--out", help="where to write the .onnx model")],
    inputs: Annotated[
        Path | None,
        typer.Option(help="also write sample inputs for it here (.npz, .npy or .json)"),
    ] = None,
) -> None:
    """Write an example model (and sample inputs) built from the package's own examples."""
    if name not in EXAMPLES:
        raise InputError(f"unknown example {name!r}; known: {', '.join(EXAMPLES)}")
    what, make = EXAMPLES[name]
    model, sample = make()
    out_file.write_bytes(model)
    out.print(f"wrote {out_file}: {what}", markup=False)
    if inputs is None:
        return
    if inputs.suffix == ".npz":
        inputs.write_bytes(tensors.encode_binary(sample))
    elif inputs.suffix == ".json":
        inputs.write_text(json.dumps(tensors.encode_json(sample)) + "\n")
    elif inputs.suffix == ".npy" and len(sample) == 1:
        ((input_name, array),) = sample.items()
        if inputs.stem != input_name:
            err.print(f"note: a .npy is named after its file: rename it {input_name}.npy")
        np.save(inputs, array, allow_pickle=False)
    else:
        raise InputError(f"--inputs {str(inputs)!r}: write .npz, .json or .npy")
    out.print(f"wrote {inputs}: sample inputs {', '.join(sample)}", markup=False)
