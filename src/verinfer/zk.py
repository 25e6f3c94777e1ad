"""Zero-knowledge proofs that a model computed an output from an input, with ezkl (halo2, KZG).

The weights are fixed in the circuit (``param_visibility="fixed"``): a proof made with other
weights does not verify against this circuit's verification key. Inputs and outputs are public
instances, quantized at the scales the settings declare; :func:`verify` checks the proof *and*
that its public instances are exactly the claimed inputs and outputs, not merely that "a proof
verifies".

The structured reference string (SRS) is a file: a ceremony's in production. For development
:func:`setup` can make a local one with ``ezkl.gen_srs`` (insecure: whoever made it can forge
proofs); :func:`verify` refuses an SRS whose CID is not in ``trusted_srs`` unless
``allow_insecure_srs``. ``ezkl.get_srs`` (which downloads) is never called.

Needs the ``zk`` extra (``pip install 'verinfer[zk]'``). Proving keys stay in the caller's work
directory: never in a bundle, never in git.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from verinfer import cid
from verinfer.errors import InputError, LimitExceeded, NotFound, VerificationError

__all__ = ["MAX_LOGROWS", "Circuit", "binding", "build", "load", "prove", "setup", "verify"]

MAX_LOGROWS = 17  # 2^17 rows: a few hundred MB of proving key; larger circuits are refused
_SEED = 4242


def _ezkl() -> Any:
    try:
        import ezkl  # noqa: PLC0415 - optional, heavy
    except ImportError as exc:
        raise NotFound("zero-knowledge mode needs ezkl: pip install 'verinfer[zk]'") from exc
    return ezkl


@dataclass(frozen=True)
class Circuit:
    """A model's circuit: the files a prover needs, in ``directory``, and what a verifier needs
    (``settings``, ``vk``, ``srs``: bytes, each named by its CID)."""

    directory: Path
    settings: bytes
    vk: bytes
    srs: bytes
    logrows: int
    shapes: dict[str, list[int]] | None = None  # the input shapes symbolic dims were bound to

    @property
    def cids(self) -> dict[str, str]:
        """The CIDs of the verifier's materials."""
        return {name: cid.compute(getattr(self, name)) for name in ("settings", "vk", "srs")}


def _sample(specs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(_SEED)
    sample = {}
    for spec in specs:
        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in spec["shape"] or []]
        if np.dtype(spec["dtype"]).kind != "f":
            raise InputError(f"input {spec['name']!r} is {spec['dtype']}: zk mode takes floats")
        sample[spec["name"]] = rng.standard_normal(shape).astype(np.float32)
    return sample


def binding(
    specs: list[dict[str, Any]], dims: Mapping[str, int] | None = None
) -> dict[str, list[int]] | None:
    """The input shapes a circuit is built for: a circuit has fixed shapes, so every dimension
    of the manifest's inputs that is not fixed (a symbolic name like ``N``, or unnamed, as
    skl2onnx writes the batch) is bound to ``dims[name]`` (by symbolic name, or ``input:axis``
    for any dimension), default 1. ``None`` when every dimension is fixed already (nothing to
    bind, nothing to record). Raises :class:`InputError` for a binding that names no such
    dimension, or a size below 1."""
    dims = dict(dims or {})
    bindable: set[str] = set()
    shapes: dict[str, list[int]] = {}
    bound = False
    for spec in specs:
        if spec["shape"] is None:
            raise InputError(
                f"input {spec['name']!r} has no declared shape: a circuit needs fixed shapes"
            )
        shape = []
        for axis, dim in enumerate(spec["shape"]):
            if isinstance(dim, int):
                shape.append(dim)
                continue
            bound = True
            names = [f"{spec['name']}:{axis}"] + ([dim] if isinstance(dim, str) else [])
            bindable.update(names)
            value = next((dims[n] for n in names if n in dims), 1)  # input:axis first
            shape.append(value)
        shapes[spec["name"]] = shape
    unknown = sorted(set(dims) - bindable)
    if unknown:
        raise InputError(
            f"--dim {', '.join(unknown)}: the model has no such symbolic dimension (bindable: "
            f"{', '.join(sorted(bindable)) or 'none, every dimension is fixed'})"
        )
    small = sorted(
        name for name, value in dims.items() if not (isinstance(value, int) and value >= 1)
    )
    if small:
        raise InputError(f"--dim {', '.join(small)}: a dimension is bound to an integer >= 1")
    return shapes if bound else None


def _check_binding(specs: list[dict[str, Any]], shapes: Mapping[str, Any]) -> None:
    """``shapes`` (an endorsement's) fit the manifest's inputs: the same names and ranks, the
    fixed dims equal, every dim a positive integer."""
    if sorted(shapes) != sorted(spec["name"] for spec in specs):
        raise InputError(f"the circuit's input shapes {shapes!r} do not name the model's inputs")
    for spec in specs:
        shape = shapes[spec["name"]]
        declared = spec["shape"]
        if (
            not isinstance(shape, list)
            or declared is None
            or len(shape) != len(declared)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
            or any(isinstance(w, int) and w != d for d, w in zip(shape, declared, strict=True))
        ):
            raise InputError(
                f"the circuit's shape {shape!r} for input {spec['name']!r} does not fit the "
                f"model's {declared!r}"
            )


def _bind(model: bytes, shapes: Mapping[str, list[int]]) -> bytes:
    """The model with its inputs' dims fixed to ``shapes`` (what ezkl compiles): the outputs'
    and intermediate values' non-fixed dims are left for ezkl to infer."""
    proto = onnx.load_model_from_string(model)
    for value in proto.graph.input:
        if value.name in shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name], strict=True):
                dim.Clear()
                dim.dim_value = size
    for value in proto.graph.output:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
    del proto.graph.value_info[:]
    return bytes(proto.SerializeToString())


def _bound_specs(
    specs: list[dict[str, Any]], shapes: Mapping[str, list[int]] | None
) -> list[dict[str, Any]]:
    if shapes is None:
        return specs
    return [{**spec, "shape": shapes[spec["name"]]} for spec in specs]


def _input_json(inputs: Mapping[str, np.ndarray], names: list[str]) -> str:
    missing = [n for n in names if n not in inputs]
    if missing or set(inputs) - set(names):
        raise InputError(f"zk inputs must be exactly {names!r}, got {sorted(inputs)!r}")
    return json.dumps({"input_data": [np.asarray(inputs[n]).reshape(-1).tolist() for n in names]})


def setup(
    model: bytes,
    inputs: list[dict[str, Any]],
    directory: str | os.PathLike[str],
    *,
    srs: bytes | None = None,
    max_logrows: int = MAX_LOGROWS,
    dims: Mapping[str, int] | None = None,
) -> Circuit:
    """Settings (calibrated on seeded inputs), the compiled circuit and its keys, in
    ``directory``. ``inputs`` are the manifest's input specs; their dimensions that are not
    fixed are bound by ``dims`` (see :func:`binding`; the circuit's ``shapes``). Without
    ``srs``, a local (insecure, development-only) SRS is generated."""
    ezkl = _ezkl()
    work = Path(directory)
    work.mkdir(parents=True, exist_ok=True)
    shapes = binding(inputs, dims)
    published, inputs = model, _bound_specs(inputs, shapes)
    model = _bind(model, shapes) if shapes else model
    (work / "model.onnx").write_bytes(model)
    names = [spec["name"] for spec in inputs]
    (work / "names.json").write_text(json.dumps(names))
    (work / "sample.json").write_text(_input_json(_sample(inputs), names))
    args = ezkl.PyRunArgs()
    args.input_visibility = "public"
    args.output_visibility = "public"
    args.param_visibility = "fixed"  # the weights are part of the circuit, hence of the key
    paths = {name: str(work / name) for name in ("settings.json", "model.ezkl", "vk.key",
                                                  "pk.key", "kzg.srs")}  # fmt: skip
    try:
        ezkl.gen_settings(str(work / "model.onnx"), paths["settings.json"], py_run_args=args)
        ezkl.calibrate_settings(
            str(work / "sample.json"), str(work / "model.onnx"), paths["settings.json"],
            "resources",
        )  # fmt: skip
    except Exception as exc:  # ezkl raises plain exceptions; name the operator if it can
        raise InputError(_unsupported(model, str(exc))) from exc
    settings = Path(paths["settings.json"]).read_bytes()
    logrows = _logrows(settings)
    if logrows > max_logrows:
        raise LimitExceeded(
            f"the circuit needs 2^{logrows} rows (a proving key of about "
            f"{_key_mib(logrows):,} MiB); the budget is 2^{max_logrows} rows (about "
            f"{_key_mib(max_logrows):,} MiB): use a model with fewer parameters or operations"
        )
    if srs is None:
        ezkl.gen_srs(paths["kzg.srs"], logrows)
        srs = Path(paths["kzg.srs"]).read_bytes()
    return build(published, inputs, settings, srs, work, shapes=shapes)


def _key_mib(logrows: int) -> int:
    """The proving key's size grows with the rows: about 4 KiB a row (132 MiB at 2^15)."""
    return (1 << logrows) * 4 // 1024


def _unsupported(model: bytes, message: str) -> str:
    found = re.search(r"Unimplemented\((\w+)\)", message)
    if found:
        return f"operator {found.group(1)} is not supported by the zk prover (ezkl)"
    operators = sorted({n.op_type for n in onnx.load_model_from_string(model).graph.node})
    return (
        f"the model cannot be made a circuit (its operators: {', '.join(operators)}): "
        f"{message.strip().splitlines()[0] if message.strip() else 'ezkl refused it'}"
    )


def _logrows(settings: bytes) -> int:
    try:
        return int(json.loads(settings)["run_args"]["logrows"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"malformed circuit settings: {exc}") from exc


def build(
    model: bytes,
    inputs: list[dict[str, Any]],
    settings: bytes,
    srs: bytes,
    directory: str | os.PathLike[str],
    *,
    shapes: Mapping[str, list[int]] | None = None,
) -> Circuit:
    """The circuit and keys of ``model`` from given ``settings`` and ``srs`` (no calibration):
    how a node rebuilds the circuit a publisher endorsed, its inputs bound to the endorsed
    ``shapes`` if any. Key generation is deterministic, so the verification key it gives is the
    publisher's exactly when the model, binding, settings and SRS are."""
    ezkl = _ezkl()
    work = Path(directory)
    work.mkdir(parents=True, exist_ok=True)
    if shapes is not None:
        _check_binding(inputs, shapes)
        model = _bind(model, shapes)
        (work / "shapes.json").write_text(json.dumps(dict(shapes)))
    (work / "model.onnx").write_bytes(model)
    (work / "names.json").write_text(json.dumps([spec["name"] for spec in inputs]))
    outputs = [o.name for o in onnx.load_model_from_string(model).graph.output]
    (work / "outputs.json").write_text(json.dumps(outputs))
    (work / "settings.json").write_bytes(settings)
    (work / "kzg.srs").write_bytes(srs)
    logrows = _logrows(settings)
    if logrows > MAX_LOGROWS:
        raise LimitExceeded(f"the circuit has 2^{logrows} rows; at most 2^{MAX_LOGROWS} are built")
    try:
        ezkl.compile_circuit(str(work / "model.onnx"), str(work / "model.ezkl"),
                             str(work / "settings.json"))  # fmt: skip
        ezkl.setup(str(work / "model.ezkl"), str(work / "vk.key"), str(work / "pk.key"),
                   str(work / "kzg.srs"))  # fmt: skip
    except Exception as exc:
        raise InputError(f"circuit setup failed: {exc}") from exc
    bound = {name: list(shape) for name, shape in shapes.items()} if shapes else None
    return Circuit(work, settings, (work / "vk.key").read_bytes(), srs, logrows, bound)


def load(directory: str | os.PathLike[str]) -> Circuit | None:
    """A circuit built earlier in ``directory`` (with its proving key), or ``None``."""
    work = Path(directory)
    needed = ("settings.json", "vk.key", "pk.key", "kzg.srs", "model.ezkl", "names.json",
              "outputs.json")  # fmt: skip
    if not all((work / name).is_file() for name in needed):
        return None
    settings = (work / "settings.json").read_bytes()
    shapes = (
        json.loads((work / "shapes.json").read_text()) if (work / "shapes.json").is_file() else None
    )
    return Circuit(work, settings, (work / "vk.key").read_bytes(),
                   (work / "kzg.srs").read_bytes(), _logrows(settings), shapes)  # fmt: skip


def prove(
    circuit: Circuit, inputs: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], bytes]:
    """Run the circuit on ``inputs`` and prove it: ``(outputs, proof)``. The outputs are the
    circuit's (the model's computation at the settings' fixed-point scales), as float32."""
    ezkl = _ezkl()
    work = circuit.directory
    names = json.loads((work / "names.json").read_text())
    for name, shape in (circuit.shapes or {}).items():
        given = list(np.shape(inputs[name])) if name in inputs else None
        if given is not None and given != shape:
            raise InputError(
                f"input {name!r} has shape {given}, but the zk circuit was built for "
                f"{shape} (its symbolic dimensions were bound at zk-setup, recorded in the "
                f"endorsement): send that shape, or ask the publisher for a circuit with --dim"
            )
    with tempfile.TemporaryDirectory(dir=work, prefix="prove-") as tmp:
        request = Path(tmp)
        (request / "input.json").write_text(_input_json(inputs, names))
        try:
            ezkl.gen_witness(str(request / "input.json"), str(work / "model.ezkl"),
                             str(request / "witness.json"), vk_path=str(work / "vk.key"),
                             srs_path=str(work / "kzg.srs"))  # fmt: skip
            ezkl.prove(str(request / "witness.json"), str(work / "model.ezkl"),
                       str(work / "pk.key"), str(request / "proof.json"),
                       srs_path=str(work / "kzg.srs"))  # fmt: skip
        except Exception as exc:
            raise InputError(f"proving failed: {exc}") from exc
        proof = (request / "proof.json").read_bytes()
    shapes = json.loads(circuit.settings)["model_instance_shapes"][len(names) :]
    output_names = json.loads((work / "outputs.json").read_text())
    rescaled = json.loads(proof)["pretty_public_inputs"]["rescaled_outputs"]
    outputs = {
        name: np.array([float(v) for v in values], dtype=np.float32).reshape(shape)
        for name, values, shape in zip(output_names, rescaled, shapes, strict=True)
    }
    return outputs, _strip(proof)


def _strip(proof: bytes) -> bytes:
    """The proof as ezkl verifies it, without the prover's convenience copies."""
    document = json.loads(proof)
    document.pop("pretty_public_inputs", None)
    return json.dumps(document, sort_keys=True).encode()


def _felts(values: Iterable[float], scale: int) -> list[int]:
    ezkl = _ezkl()
    return [int.from_bytes(bytes.fromhex(ezkl.float_to_felt(float(v), scale)), "little")
            for v in values]  # fmt: skip


def verify(  # noqa: PLR0917 - the proof and the three materials it is checked against
    proof: bytes,
    settings: bytes,
    vk: bytes,
    srs: bytes,
    inputs: Sequence[np.ndarray],
    outputs: Sequence[np.ndarray],
    *,
    trusted_srs: Iterable[str] = (),
    allow_insecure_srs: bool = False,
) -> None:
    """Check ``proof`` against the circuit's verification key and that its public instances
    are exactly ``inputs`` and ``outputs``, in the model's order, quantized at the settings'
    scales; each output must be exactly a value the circuit can produce (a multiple of its
    quantum) and have the circuit's shape. Raises :class:`VerificationError` naming what
    failed."""
    ezkl = _ezkl()
    srs_cid = cid.compute(srs)
    if srs_cid not in set(trusted_srs) and not allow_insecure_srs:
        raise VerificationError(
            f"the SRS {srs_cid} is not a trusted one: a locally generated SRS lets its maker "
            "forge proofs (allow it explicitly for development)"
        )
    try:
        document = json.loads(proof)
        columns = document["instances"]
        if not isinstance(columns, list) or len(columns) != 1:
            raise ValueError("the proof must have exactly one instance column")
        # ezkl writes field elements as 0x-prefixed hex of their little-endian bytes
        instances = [int.from_bytes(bytes.fromhex(h.removeprefix("0x")), "little")
                     for h in columns[0]]  # fmt: skip
        parsed = json.loads(settings)
        run = parsed["run_args"]
        if (run["input_visibility"], run["output_visibility"], run["param_visibility"]) != (
            "Public", "Public", "Fixed"
        ):  # fmt: skip
            raise ValueError("the circuit must have public inputs and outputs and fixed weights")
        input_scales = list(parsed["model_input_scales"])
        output_scales = list(parsed["model_output_scales"])
        shapes = [list(shape) for shape in parsed["model_instance_shapes"]]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise VerificationError(f"malformed proof or settings: {exc}") from exc
    if len(inputs) != len(input_scales) or len(outputs) != len(output_scales):
        raise VerificationError(
            f"the circuit has {len(input_scales)} inputs and {len(output_scales)} outputs; "
            f"{len(inputs)} and {len(outputs)} were given"
        )
    expected: list[int] = []
    tensors_and_scales = [(np.asarray(a), s, False) for a, s in zip(inputs, input_scales,
                                                                     strict=True)]  # fmt: skip
    tensors_and_scales += [(np.asarray(a), s, True) for a, s in zip(outputs, output_scales,
                                                                    strict=True)]  # fmt: skip
    for (array, scale, is_output), shape in zip(tensors_and_scales, shapes, strict=True):
        if int(np.prod(shape)) != array.size or not np.isfinite(array).all():
            raise VerificationError(
                f"a tensor of shape {list(array.shape)} is not the circuit's {shape}, or is "
                "not finite"
            )
        if is_output:
            quanta = array.astype(np.float64).reshape(-1) * float(2**scale)
            if array.dtype != np.float32 or not np.array_equal(quanta, np.round(quanta)):
                raise VerificationError(
                    "the outputs are not values the circuit produces (float32 multiples of "
                    f"2^-{scale})"
                )
        expected += _felts(array.reshape(-1), scale)
    if instances != expected:
        raise VerificationError(
            "the proof's public instances are not the claimed inputs and outputs (after the "
            "settings' quantization)"
        )
    with tempfile.TemporaryDirectory(prefix="verinfer-zk-") as tmp:
        work = Path(tmp)
        for name, data in (("proof.json", proof), ("settings.json", settings), ("vk.key", vk),
                           ("kzg.srs", srs)):  # fmt: skip
            (work / name).write_bytes(data)
        try:
            valid = ezkl.verify(str(work / "proof.json"), str(work / "settings.json"),
                                str(work / "vk.key"), str(work / "kzg.srs"))  # fmt: skip
        except Exception as exc:  # ezkl raises on a proof that does not verify
            raise VerificationError(f"the proof does not verify: {exc}") from exc
    if not valid:
        raise VerificationError("the proof does not verify against the verification key")
