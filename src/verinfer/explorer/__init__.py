"""The explorer: the pages every node serves at ``/`` (read-only, no login).

Static ES modules (no build step, nothing fetched from another host) that read the node's public
JSON API, plus one small summary of what the node knows of its network. The page that verifies a
bundle runs :mod:`verify.js <verinfer.explorer>`, the browser's implementation of the offline
verifier, entirely in the browser. Nothing here reveals a private tensor: the pages read only
what the public API already answers (receipts hold digests, not tensors).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

if TYPE_CHECKING:
    from starlette.responses import Response
    from starlette.types import Scope

    from verinfer.node.service import Node

__all__ = ["STATIC", "add_explorer"]

STATIC = Path(str(resources.files(__name__) / "static"))
MAX_SIZES = 500  # checkpoint sizes the log page charts
# what the pages may load: this node only (no CDN, no other host), no inline script
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


HEADERS = {"Content-Security-Policy": POLICY, "Cache-Control": "no-cache"}


def _page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=HEADERS)


class _Static(StaticFiles):
    """The explorer's files, each with the page's policy: a script or style opened on its own
    (or framed by another site) is held to the same rules as the page."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def add_explorer(app: FastAPI, node: Node) -> None:
    """Serve the explorer at ``/`` and its files under ``/explorer/``, and the network summary
    the network page reads (``GET /v1/explorer/network``)."""
    app.mount("/explorer", _Static(directory=STATIC), name="explorer")
    app.add_api_route("/", _page, include_in_schema=False, methods=["GET"])

    @app.get("/v1/explorer/network")
    async def network() -> dict[str, Any]:
        """What this node knows of its network: its identity, its peers, the latest checkpoint
        of every log its witness cosigned, its own newest cosigned checkpoint, the sizes at
        which its log issued checkpoints (the latest few hundred) and how much evidence of
        misbehaviour it holds. Public facts only."""
        return await run_in_threadpool(_network, node)


def _network(node: Node) -> dict[str, Any]:
    witness = node.witness
    logs = []
    for origin, vkey in sorted(witness.logs().items()):
        size, checkpoint = witness.latest(origin)
        logs.append({"origin": origin, "vkey": vkey, "size": size, "checkpoint": checkpoint,
                     "cosigned_at": witness.cosigned_at.get(origin)})  # fmt: skip
    sizes = node.log.checkpoint_sizes()
    return {
        "node": {
            "vkey": node.vkey,
            "origin": node.log.origin,
            "witness": witness.vkey,
            "engine": node.engine.identity,
            "size": node.log.size,
        },
        "peers": list(node.peers),
        "checkpoint": node.log.signed_checkpoint,
        "cosigned": node.cosigner.cosigned(0),
        "witnessed": logs,
        "checkpoint_sizes": sizes[-MAX_SIZES:],
        "checkpoints": len(sizes),
    }
