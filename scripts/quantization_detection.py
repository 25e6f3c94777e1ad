"""Does re-execution tell another quantization of the same model from the published one?

    python scripts/calibrate_generation.py --count 20 --decode-elsewhere gens.jsonl \\
        --save-model smollm2.onnx
    python scripts/quantization_detection.py smollm2.onnx gens.jsonl

Every block weight of the published (fp32) graph is requantized from its values to Q8_0 and to
Q4_0 (llama.cpp's formats, through ``gguf``), and the honest records decoded on the published
model are re-executed on each: a node that served another quantization is caught when they are
rejected.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from gguf import GGMLQuantizationType, quants
from onnx import numpy_helper

from verinfer.errors import VerificationError
from verinfer.modes.generation import reexecute
from verinfer.text.generation import Generation, empty_cache


def main() -> int:
    model = onnx.load(sys.argv[1])
    records = [Generation.from_json(json.loads(line))
               for line in Path(sys.argv[2]).read_text().splitlines()]  # fmt: skip
    cache = empty_cache(30, 3, 64)
    for kind in (GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_0):
        other = onnx.ModelProto()
        other.CopyFrom(model)
        for tensor in other.graph.initializer:
            if tensor.name.startswith("blk.") and len(tensor.dims) == 2:
                rows = np.ascontiguousarray(numpy_helper.to_array(tensor).T)  # blocks along `in`
                again = quants.dequantize(quants.quantize(rows, kind), kind).reshape(rows.shape)
                tensor.CopyFrom(numpy_helper.from_array(
                    np.ascontiguousarray(again.T, dtype=np.float32), tensor.name))  # fmt: skip
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(other.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])  # fmt: skip
        names = [o.name for o in session.get_outputs()]

        def run(feed: dict[str, np.ndarray], on: ort.InferenceSession = session,
                outputs: list[str] = names) -> dict[str, np.ndarray]:  # fmt: skip
            return dict(zip(outputs, on.run(None, feed), strict=True))

        rejected = 0
        for record in records:
            try:
                reexecute(record, run, cache)
            except VerificationError:
                rejected += 1
        print(f"{kind.name}: {rejected} of {len(records)} honest records rejected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
