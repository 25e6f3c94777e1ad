"""The baseline of bench_node.py: FastAPI + uvicorn + ONNX Runtime, and no verification.

Usage: python benchmarks/baseline_server.py MODEL.onnx PORT
It answers POST /infer {"inputs": {name: tensor}} with {"outputs": {name: tensor}}, tensors in
verinfer's JSON form decoded and encoded exactly as the node does (small outputs as lists, large
ones as base64): the node's wire format, without digests, receipts, log or proofs.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from verinfer import engine, tensors
from verinfer.node.app import _RAW_FROM


def main() -> None:
    model, port = sys.argv[1], int(sys.argv[2])
    session = ort.InferenceSession(model, engine.session_options(1), providers=[engine.PROVIDER])
    app = FastAPI()

    @app.post("/infer")
    async def infer(body: dict[str, Any]) -> JSONResponse:
        feed = await run_in_threadpool(tensors.decode_json, body["inputs"])  # as the node does
        values = await run_in_threadpool(session.run, None, feed)
        names = [output.name for output in session.get_outputs()]
        outputs: dict[str, np.ndarray] = dict(zip(names, values, strict=True))
        return JSONResponse({"outputs": tensors.encode_json(outputs, raw_from=_RAW_FROM)})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
