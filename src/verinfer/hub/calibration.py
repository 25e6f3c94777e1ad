"""How far apart honest answers may be across CPU kernel classes, measured at publish.

ONNX Runtime picks its kernels by instruction set at run time, with no switch to pin them, so a
float model's low bits differ between, say, an AVX-512 and an AVX2 machine. Calibration runs the
model on seeded inputs natively and under ``qemu-x86_64 -cpu <model>`` for each emulated CPU
(Haswell: AVX2 without AVX-512; Nehalem: SSE4.2, no AVX), measures the largest absolute
difference of any float output between any two of these runs, and declares ``margin`` times that
as the bound (``determinism.tolerance`` in the manifest, signed by the publisher). Two emulated
classes that differ from each other mean at least one differs from the publisher's own, whatever
its class (an AVX2 publisher measured nothing against Haswell alone). Integer and boolean
outputs must agree exactly; if they do not, the model is refused for cross-class comparison.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from verinfer import engine, tensors
from verinfer.errors import InputError, LimitExceeded, NotFound

__all__ = ["CALIBRATION_SEED", "EMULATED", "MARGIN", "calibrate"]

CALIBRATION_SEED = 1337
# qemu CPU models to emulate: Haswell (AVX2 + FMA, no AVX-512), Nehalem (SSE4.2, no AVX)
EMULATED = ("Haswell", "Nehalem")
MARGIN = 4.0
_WORKER = "import sys; from verinfer.hub.calibration import _worker; _worker(sys.argv[1])"


def calibrate(
    data: bytes,
    inputs: list[dict[str, Any]],
    *,
    cpus: tuple[str, ...] = EMULATED,
    samples: int = 3,
    margin: float = MARGIN,
    timeout: float = 900.0,
) -> dict[str, Any]:
    """The cross-class tolerance of the model ``data`` whose inputs the manifest describes."""
    from verinfer.hub.onnxmodel import _probe_input  # noqa: PLC0415 - avoids an import cycle

    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        raise NotFound("calibration needs qemu-x86_64 (Debian: apt-get install qemu-user)")
    rng = np.random.default_rng(CALIBRATION_SEED)
    feeds = [{spec["name"]: _probe_input(spec, rng) for spec in inputs} for _ in range(samples)]
    session = engine.load_session(data)
    names = [output.name for output in session.get_outputs()]
    native = [dict(zip(names, session.run(None, feed), strict=True)) for feed in feeds]
    classes = {engine.kernel_class()}
    deviation = 0.0
    runs: list[tuple[str, list[dict[str, np.ndarray]]]] = [("this machine", native)]
    with tempfile.TemporaryDirectory(prefix="verinfer-calibrate-") as tmp:
        work = Path(tmp)
        (work / "model.onnx").write_bytes(data)
        for number, feed in enumerate(feeds):
            (work / f"in-{number}.npz").write_bytes(tensors.encode_binary(feed))
        for cpu in cpus:
            try:
                done = subprocess.run(
                    [qemu, "-cpu", cpu, sys.executable, "-c", _WORKER, str(work)],
                    capture_output=True, text=True, timeout=timeout, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired as exc:
                raise LimitExceeded(f"calibration under {cpu} ran past {timeout:g} s") from exc
            if done.returncode != 0:
                raise InputError(f"calibration under {cpu} failed: {done.stderr.strip()[-300:]}")
            classes.add((work / "class.txt").read_text().strip())
            got = [
                tensors.decode_binary((work / f"out-{n}.npz").read_bytes()) for n in range(samples)
            ]
            for label, earlier in runs:  # every pair of classes may meet in a comparison
                where = cpu if label == "this machine" else f"{cpu} (against {label})"
                for expected, found in zip(earlier, got, strict=True):
                    deviation = max(deviation, _deviation(expected, found, where))
            runs.append((cpu, got))
    return {
        "abs": deviation * margin,
        "observed": deviation,
        "margin": margin,
        "classes": sorted(classes),
        "emulated": list(cpus),
        "samples": samples,
        "seed": CALIBRATION_SEED,
    }


def _deviation(expected: dict[str, np.ndarray], got: dict[str, np.ndarray], cpu: str) -> float:
    worst = 0.0
    for name, want in expected.items():
        have = got[name]
        if want.shape != have.shape or want.dtype != have.dtype:
            raise InputError(f"output {name!r} has another shape or dtype under {cpu}")
        if want.dtype.kind != "f":
            if not np.array_equal(want, have):
                raise InputError(
                    f"integer output {name!r} differs under {cpu}: no tolerance can cover it"
                )
            continue
        if not (np.isfinite(want).all() and np.isfinite(have).all()):
            raise InputError(f"output {name!r} is not finite on the calibration inputs")
        diff = np.abs(want.astype(np.float64) - have.astype(np.float64))
        worst = max(worst, float(diff.max(initial=0.0)))
    return worst


def _worker(directory: str) -> None:
    """Run under the emulator: the model on every ``in-N.npz``, outputs to ``out-N.npz``."""
    work = Path(directory)
    session = engine.load_session((work / "model.onnx").read_bytes())
    names = [output.name for output in session.get_outputs()]
    for path in sorted(work.glob("in-*.npz")):
        feed = tensors.decode_binary(path.read_bytes())
        outputs = dict(zip(names, session.run(None, feed), strict=True))
        (work / path.name.replace("in-", "out-")).write_bytes(tensors.encode_binary(outputs))
    (work / "class.txt").write_text(engine.kernel_class() + "\n")
