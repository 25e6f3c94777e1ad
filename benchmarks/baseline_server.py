"""The baseline of bench_node.py: FastAPI + uvicorn + ONNX Runtime, and no verification.

Usage: python benchmarks/baseline_server.py MODEL.onnx PORT
It answers POST /infer {"inputs": {name: {"dtype", "shape", "base64"}}} with the outputs in the
same form: the same wire format as verinfer's node, without digests, receipts, log or proofs.
"""

from __future__ import annotations

import base64
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from verinfer import engine


def main() -> None:
    model, port = sys.argv[1], int(sys.argv[2])
    session = ort.InferenceSession(model, engine.session_options(1), providers=[engine.PROVIDER])
    app = FastAPI()

    @app.post("/infer")
    async def infer(body: dict[str, Any]) -> dict[str, Any]:
        feed = {
            name: np.frombuffer(base64.b64decode(item["base64"]), dtype=item["dtype"]).reshape(
                item["shape"]
            )
            for name, item in body["inputs"].items()
        }
        values = await run_in_threadpool(session.run, None, feed)
        names = [output.name for output in session.get_outputs()]
        return {
            "outputs": {
                name: {
                    "dtype": value.dtype.name,
                    "shape": list(value.shape),
                    "base64": base64.b64encode(np.ascontiguousarray(value).tobytes()).decode(),
                }
                for name, value in zip(names, values, strict=True)
            }
        }

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
