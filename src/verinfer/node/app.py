"""The node's HTTP API (FastAPI): inference with proof bundles, the log, the hub's read side.

Every error is a JSON body ``{"code": ..., "message": ...}`` with a 4xx status (503 for a
store or capacity failure on the node's side); the message names the bad field or value.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any, TypeVar

import uvicorn
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verinfer import __version__, tensors
from verinfer.errors import (
    AuthError,
    ConflictError,
    Error,
    InputError,
    LimitExceeded,
    NotFound,
    StorageError,
    VerificationError,
)
from verinfer.explorer import add_explorer
from verinfer.hub.documents import Manifest
from verinfer.log.tiles import parse_path
from verinfer.modes.dispute import MAX_DEADLINE, MIN_DEADLINE, decode_npz
from verinfer.node.access import bearer
from verinfer.node.service import ADMIN_TOKEN_FILE, Node
from verinfer.witness import Refusal

__all__ = [
    "BODY_TIMEOUT",
    "HEADER_TIMEOUT",
    "MAX_ANALYSES",
    "MAX_BODY_BYTES",
    "MAX_EVIDENCE_CHECKS",
    "MAX_HEADER_BYTES",
    "MAX_PENDING",
    "UPLOAD_QUOTA",
    "UPLOAD_TTL",
    "create_app",
    "serve",
    "timed_protocol",
]

T = TypeVar("T")

MAX_BODY_BYTES = 64 << 20
_MAX_INT = 2**63 - 1  # what the stores can hold: larger indices are refused by validation
MAX_PENDING = 256
MAX_ANALYSES = 8  # model analyses (and publishes, which analyse) running or queued at once
MAX_EVIDENCE_CHECKS = 16  # submitted evidence being checked (a model re-run each) or queued
HEADER_TIMEOUT = 10.0  # seconds a request's head may take to arrive
BODY_TIMEOUT = 30.0  # seconds a request's body may stall while the node reads it
MAX_HEADER_BYTES = 64 << 10  # bytes of a request's head (request line and headers)
_RAW_FROM = 256  # outputs of this many elements or more are answered as base64
UPLOAD_QUOTA = 4 << 30  # bytes of unpublished uploads a node holds at most
UPLOAD_TTL = 3600.0  # seconds an unpublished upload is kept when room is needed

_STATUS: list[tuple[type[Error], int, str]] = [
    (AuthError, 401, "unauthorized"),
    (NotFound, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (LimitExceeded, 503, "over_limit"),
    (VerificationError, 422, "verification_failed"),
    (InputError, 400, "bad_input"),
    (StorageError, 503, "storage_unavailable"),
]


_NPZ_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/x-npz": {"schema": {"type": "string", "format": "binary"}}},
    }
}


_JSON_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
_TEXT_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}}
}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


class _Busy(LimitExceeded):
    """A lane is full: answered 503 with ``Retry-After``."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Lane:
    """Slow work on threads of its own, behind a bounded queue.

    A model's analysis runs in the hub's sandbox, one at a time, for up to minutes. On the
    thread pool every other route shares (40 threads), 45 analyses waiting for the sandbox held
    every thread, and witnessing, gossip, the model list and blob reads stopped answering. A
    lane runs its calls on ``workers`` threads of its own and admits at most ``limit`` of them
    (running or queued); beyond that it refuses with 503 and ``Retry-After``.
    """

    def __init__(
        self, what: str, *, workers: int, limit: int, retry_after: int, metric: str,
        registry: CollectorRegistry,
    ) -> None:  # fmt: skip
        if limit < 1:
            raise InputError(f"a queue of {what} must admit at least 1, got {limit!r}")
        self.what, self.limit, self.retry_after = what, limit, retry_after
        self.admitted = 0  # only touched on the event loop: no lock
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=f"verinfer-{metric}")
        Gauge(metric, f"{what} running or queued", registry=registry).set_function(
            lambda: self.admitted
        )

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` on the lane's threads; :class:`_Busy` if ``limit`` calls are in."""
        if self.admitted >= self.limit:
            raise _Busy(
                f"{self.admitted} {self.what} are running or queued, the most this node "
                f"takes at once; retry in {self.retry_after} s",
                self.retry_after,
            )
        self.admitted += 1
        try:
            return await asyncio.wrap_future(self._executor.submit(work))
        finally:
            self.admitted -= 1

    def close(self) -> None:
        """Drop what is queued (what runs finishes on its own)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _closing(*lanes: _Lane) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """The app's lifespan: when the server stops, the lanes drop what they have queued."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for lane in lanes:
                lane.close()

    return lifespan


class ChallengeRequest(BaseModel):
    """``POST /v1/disputes``: challenge an optimistic answer, with this node as the referee."""

    model_config = ConfigDict(extra="forbid")

    bundle: dict[str, Any] = Field(description="the bundle of the optimistic answer challenged")
    inputs: str = Field(description="the receipt's inputs, base64 .npz")
    challenger: str = Field(description="URL of the node that disputes the answer")
    defendant: str | None = Field(
        default=None, description="URL of the node that signed it (else looked up in peers)"
    )
    deadline: float = Field(
        default=30.0, ge=MIN_DEADLINE, le=MAX_DEADLINE, description="seconds per round"
    )


class OpeningRequest(BaseModel):
    """``POST /v1/disputes/party/opening``: a referee opens a dispute with this node."""

    model_config = ConfigDict(extra="forbid")

    dispute: dict[str, Any] = Field(description="the dispute header")
    inputs: str = Field(description="the receipt's inputs, base64 .npz")


class StateRequest(BaseModel):
    """``POST /v1/disputes/party/state``: this side's signed root of one state."""

    model_config = ConfigDict(extra="forbid")

    dispute: str = Field(description="the dispute ID")
    step: int = Field(ge=0, le=_MAX_INT)


class RevealRequest(StateRequest):
    """``POST /v1/disputes/party/reveal``: one state's leaves and some of its tensors."""

    names: list[str] = Field(max_length=1 << 16)


class InferRequest(BaseModel):
    """``POST /v1/infer``: a model reference, named tensors in the JSON form, a mode, a nonce."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="owner/name[@version|tag], or a model or manifest CID")
    inputs: dict[str, Any] = Field(
        description="named tensors in verinfer's JSON form, or plainly as nested lists (a "
        'number for rank 0) typed by the model\'s signature: {"x": [[5.1, 3.5, 1.4, 0.2]]}'
    )
    mode: str = Field(default="attested", description="verification mode")
    nonce: str | None = Field(
        default=None, description="a fresh client nonce (1-128 of A-Za-z0-9_-)"
    )
    audit: str = Field(
        default="private",
        description="who may read the inputs and outputs: private (the requester, with the "
        "answer's capabilities, and the operator's auditors) or public (anyone; the receipt "
        "says so)",
    )
    durability: str = Field(
        default="durable",
        description="durable (answer once the receipt is in the log, with its inclusion proof) "
        "or promise (answer at once with the node's signed promise to log the receipt at a "
        "stated index by a deadline; upgrade it later)",
    )


class PublishRequest(BaseModel):
    """``POST /v1/repositories/{owner}/{name}/changes``: signed documents, as their text."""

    model_config = ConfigDict(extra="forbid")

    manifest: str = Field(description="the signed manifest note")
    changes: list[str] = Field(description="the signed changes that publish it, in order")


def _metrics(node: Node) -> tuple[CollectorRegistry, Counter, Histogram]:
    registry = CollectorRegistry()
    requests = Counter(
        "verinfer_requests", "HTTP requests answered", ["route", "status"], registry=registry
    )
    latency = Histogram(
        "verinfer_inference_seconds",
        "attested inference latency, from request to bundle",
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        registry=registry,
    )
    Gauge("verinfer_log_size", "entries in the node's log", registry=registry).set_function(
        lambda: node.log.size
    )
    Gauge(
        "verinfer_promises_broken",
        "promised receipts that were not logged where promised (a crash or a failing disk)",
        registry=registry,
    ).set_function(lambda: node.broken_promises)
    Gauge("verinfer_log_commits", "batches committed since start", registry=registry).set_function(
        lambda: node.sequencer.commits
    )
    return registry, requests, latency


class _Guard:
    """Pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs a task and a stream per
    request): refuses bodies without a ``Content-Length`` (411) or above the limit (413) before
    anything is read, and counts every answer by route and status."""

    def __init__(
        self, app: ASGIApp, *, upload_limit: int, max_body_bytes: int, requests: Counter
    ) -> None:
        self.app, self.upload_limit, self.max_body_bytes = app, upload_limit, max_body_bytes
        self.requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        upload = method == "PUT" and scope["path"] == "/v1/blobs"
        limit = self.upload_limit if upload else self.max_body_bytes
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        refusal = None
        if length is None and method in ("POST", "PUT", "PATCH"):
            refusal = _error(411, "length_required", "send a Content-Length (no chunked bodies)")
        elif length is not None and (not length.isdigit() or int(length) > limit):
            refusal = _error(
                413, "body_too_large", f"this request's body may be at most {limit} bytes"
            )
        if refusal is not None:
            await refusal(scope, receive, send)
            self.requests.labels("other", str(refusal.status_code)).inc()
            return
        status = 500

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except ClientDisconnect:  # gone (or cut off as too slow) while sending its body:
            status = 499  # nobody to answer, nothing to log
        finally:
            route = getattr(scope.get("route"), "path", "other")
            self.requests.labels(route, str(status)).inc()


def create_app(
    node: Node,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_pending: int = MAX_PENDING,
    upload_quota: int = UPLOAD_QUOTA,
    upload_ttl: float = UPLOAD_TTL,
    max_analyses: int = MAX_ANALYSES,
) -> FastAPI:
    """The HTTP application serving ``node``.

    Unpublished uploads may hold at most ``upload_quota`` bytes; one unpublished for
    ``upload_ttl`` seconds is deleted when room is needed.

    At most ``max_pending`` inferences are admitted at once (running or queued for the node's
    workers); beyond that the node answers 503 with ``Retry-After`` instead of queueing without
    bound. Model analyses (and the publishes that analyse) run on a thread of their own, at most
    ``max_analyses`` admitted at once, and submitted evidence (checked by re-executing the
    model) on two, at most :data:`MAX_EVIDENCE_CHECKS` admitted, so that neither ever holds the
    threads every other route shares (the witness, gossip, reads).
    """
    registry, requests, latency = _metrics(node)
    pending = 0
    analyses = _Lane("model analyses", workers=1, limit=max_analyses, retry_after=5,
                     metric="verinfer_analyses", registry=registry)  # fmt: skip
    checks = _Lane("evidence checks", workers=2, limit=MAX_EVIDENCE_CHECKS, retry_after=5,
                   metric="verinfer_evidence_checks", registry=registry)  # fmt: skip
    app = FastAPI(
        lifespan=_closing(analyses, checks),
        title="verinfer node",
        version=__version__,
        description="Verifiable inference: every answer carries a bundle anyone can check offline.",
        # the node exports Prometheus metrics itself; FastAPI's OpenTelemetry hooks would look
        # up the tracer and meter providers on every request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )

    @app.exception_handler(Error)
    async def _verinfer_error(_: Request, exc: Error) -> JSONResponse:
        if isinstance(exc, _Busy):
            busy = _error(503, "over_limit", str(exc))
            busy.headers["Retry-After"] = str(exc.retry_after)
            return busy
        for kind, status, code in _STATUS:
            if isinstance(exc, kind):
                return _error(status, code, str(exc))
        return _error(400, "error", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', ()))}: {item.get('msg', '')}"
            for item in exc.errors()
        )
        return _error(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "http_error", str(exc.detail))

    app.add_middleware(
        _Guard, upload_limit=node.hub.limits.max_bytes, max_body_bytes=max_body_bytes,
        requests=requests,
    )  # fmt: skip

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness, with the node's key and log size."""
        return {"status": "ok", "vkey": node.vkey, "log_size": node.log.size}

    @app.get("/v1/node")
    async def identity() -> dict[str, Any]:
        """Who this node is: its vkey, its log's origin, its witness key, its engine identity."""
        return {
            "vkey": node.vkey,
            "origin": node.log.origin,
            "witness": node.witness.vkey,
            "engine": node.engine.identity,
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics: requests by route and status, inference latency, log size."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def answer(model: str, decode: Callable[[], dict[str, Any]], *, mode: str,
                     nonce: str | None, audit: str, durability: str) -> Response:  # fmt: skip
        nonlocal pending
        if pending >= max_pending:
            response = _error(503, "over_limit", f"{pending} inferences are pending; retry")
            response.headers["Retry-After"] = "1"
            return response
        pending += 1
        try:
            started = time.perf_counter()
            inputs = await run_in_threadpool(decode)  # up to max_input_bytes: off the loop
            result = await node.ainfer(
                model, inputs, mode=mode, nonce=nonce, audit=audit, durability=durability
            )
            latency.observe(time.perf_counter() - started)
        finally:
            pending -= 1
        receipt = result.bundle.receipt
        # a ready JSONResponse: FastAPI's generic encoder would walk the whole answer again
        return JSONResponse(
            {
                "outputs": tensors.encode_json(result.outputs, raw_from=_RAW_FROM),
                "bundle": result.bundle.to_dict(),
                "manifest": result.manifest.cid,
                # the requester's keys to its own tensors (GET /v1/tensors/{digest})
                "capabilities": {
                    digest: node.access.capability(digest)
                    for digest in (receipt["inputs"], receipt["outputs"])
                },
            }
        )

    @app.post("/v1/infer")
    async def infer(request: InferRequest) -> Any:
        """Run a model; answer the outputs and the bundle that proves the node's statement."""
        return await answer(
            request.model,
            lambda: tensors.decode_json(
                request.inputs,
                max_bytes=node.max_input_bytes,
                # a plain list takes its dtype and shape from the model's signature
                signature=lambda: node.resolve(request.model).body["inputs"],
            ),
            mode=request.mode,
            nonce=request.nonce,
            audit=request.audit,
            durability=request.durability,
        )

    @app.post("/v1/infer/npz", openapi_extra=_NPZ_BODY)
    async def infer_npz(
        request: Request,
        *,
        model: str = Query(description="owner/name[@version|tag], or a model or manifest CID"),
        mode: str = Query("attested", description="verification mode"),
        nonce: str | None = Query(None, description="a fresh client nonce"),
        audit: str = Query(
            "private",
            description="private (default) or public: who may read the inputs and outputs",
        ),
        durability: str = Query("durable", description="durable (default) or promise"),
    ) -> Any:
        """:code:`/v1/infer` with the inputs as an ``.npz`` body (binary, no base64): for large
        tensors. The answer is the same JSON."""
        data = await request.body()  # bounded by the body limit
        return await answer(
            model,
            lambda: tensors.decode_binary(data, max_bytes=node.max_input_bytes),
            mode=mode,
            nonce=nonce,
            audit=audit,
            durability=durability,
        )

    admin = _admin_check(node)
    _add_log_routes(app, node)
    _add_trust_routes(app, node, checks)
    _add_hub_routes(app, node, admin, upload_quota, upload_ttl, analyses=analyses)
    _add_dispute_routes(app, node)
    _add_admin_routes(app, node, admin)
    from verinfer.node.openai import add_text_routes  # noqa: PLC0415 - text models are optional

    add_text_routes(app, node)
    add_explorer(app, node)
    return app


def _admin_check(node: Node) -> Callable[..., Awaitable[None]]:
    """A dependency: the request carries ``Authorization: Bearer <the node's admin token>``."""

    async def admin(
        authorization: str | None = Header(None, description="Bearer <DATA/admin.token>"),
    ) -> None:
        if authorization is None or not authorization.startswith("Bearer "):
            raise AuthError(
                "this operation needs the node's admin token: send Authorization: Bearer "
                f"<the contents of {ADMIN_TOKEN_FILE} in the node's data directory>"
            )
        if not hmac.compare_digest(authorization[7:].encode(), node.admin_token.encode()):
            raise AuthError("the admin token is wrong")

    return admin


class PeersRequest(BaseModel):
    """``PUT /v1/peers``: the node URLs to fetch missing models from."""

    model_config = ConfigDict(extra="forbid")

    peers: list[str] = Field(description="http(s)://host[:port] URLs, at most 64")


def _add_admin_routes(app: FastAPI, node: Node, admin: Callable[..., Awaitable[None]]) -> None:
    """The node's peers (anyone reads them; changing them needs the admin token)."""

    @app.get("/v1/peers")
    async def peers() -> dict[str, list[str]]:
        """The node URLs this node fetches missing models from."""
        return {"peers": node.peers}

    @app.put("/v1/peers", dependencies=[Depends(admin)])
    async def set_peers(request: PeersRequest) -> dict[str, list[str]]:
        """Replace the peers (admin token required); kept across restarts."""
        return {"peers": await run_in_threadpool(node.set_peers, request.peers)}


def _add_log_routes(app: FastAPI, node: Node) -> None:
    """The log: checkpoints, entries, proofs and C2SP tiles."""

    @app.get("/v1/log/checkpoint", response_class=PlainTextResponse)
    async def checkpoint() -> str:
        """The latest signed checkpoint (a C2SP signed note)."""
        return node.log.signed_checkpoint

    @app.get("/v1/log/checkpoint/{size}", response_class=PlainTextResponse)
    async def checkpoint_at(size: int = FastAPIPath(ge=0, le=_MAX_INT)) -> str:
        """The signed checkpoint the log issued at ``size``."""
        return node.log.checkpoint_at(size)

    @app.get("/v1/log/entries/{index}")
    async def entry(index: int = FastAPIPath(ge=0, le=_MAX_INT)) -> Response:
        """One log entry (a receipt), checked against its leaf hash."""
        return Response(node.log.entry(index), media_type="application/json")

    @app.get("/v1/log/proof/inclusion")
    async def inclusion(
        index: int | None = Query(None, ge=0, le=_MAX_INT),
        hash: str | None = Query(None, description="the entry's leaf hash, base64"),
        size: int | None = Query(None, ge=0, le=_MAX_INT),
    ) -> dict[str, Any]:
        """The inclusion proof of entry ``index`` (or of the entry whose RFC 9162 leaf hash is
        ``hash``) in the tree of ``size`` (default: latest), with the entry itself (base64 of
        its exact bytes)."""
        if (index is None) == (hash is None):
            raise InputError("give exactly one of index and hash")
        if hash is not None:
            try:
                leaf = base64.b64decode(hash, validate=True)
            except ValueError:
                raise InputError(f"hash {hash[:60]!r} is not base64") from None
            index = await run_in_threadpool(node.log.find, leaf)
        assert index is not None  # one of the two was given
        tree = node.log.size if size is None else size
        proof = node.log.inclusion_proof(index, tree)
        return {
            "index": index,
            "size": tree,
            "proof": [base64.b64encode(h).decode() for h in proof],
            "entry": base64.b64encode(node.log.entry(index)).decode(),
        }

    @app.get("/v1/log/proof/consistency")
    async def consistency(
        old: int = Query(ge=0, le=_MAX_INT), size: int | None = Query(None, ge=0, le=_MAX_INT)
    ) -> dict[str, Any]:
        """The consistency proof from ``old`` to ``size`` (default: latest)."""
        tree = node.log.size if size is None else size
        proof = node.log.consistency_proof(old, tree)
        return {"old": old, "size": tree, "proof": [base64.b64encode(h).decode() for h in proof]}

    @app.get("/v1/log/cosigned", response_class=PlainTextResponse)
    async def cosigned(size: int = Query(0, ge=0, le=_MAX_INT)) -> str:
        """The newest checkpoint of at least ``size`` entries with the cosignatures of the peers'
        witnesses gathered for it (a C2SP signed note: the node's signature, then theirs)."""
        found = node.cosigner.cosigned(size)
        if found is None:
            raise NotFound(f"no checkpoint of size >= {size} has been cosigned yet")
        return found

    @app.get("/tile/{path:path}")
    async def tile(path: str) -> Response:
        """C2SP tlog-tiles: ``tile/<L>/<N>[.p/<W>]`` and ``tile/entries/<N>[.p/<W>]``."""
        level, index, width = parse_path(f"tile/{path}")
        data = (
            node.log.entry_bundle(index, width)
            if level is None
            else node.log.tile(level, index, width)
        )
        return Response(data, media_type="application/octet-stream")


def _add_trust_routes(app: FastAPI, node: Node, checks: _Lane) -> None:
    """Witnessing (C2SP tlog-witness), gossip, evidence, and the tensors auditors re-run."""

    @app.post("/add-checkpoint", openapi_extra=_TEXT_BODY)
    async def add_checkpoint(request: Request) -> Response:
        """C2SP tlog-witness: cosign a peer's checkpoint, given a consistency proof from the last
        one cosigned here. 409 (``text/x.tlog.size``) names that size."""
        body = await request.body()
        try:
            line = await run_in_threadpool(node.witness.add_checkpoint, body)
        except Refusal as exc:
            if exc.body is not None:
                return Response(exc.body, status_code=exc.status, media_type="text/x.tlog.size")
            return _error(exc.status, "witness_refused", str(exc))
        return PlainTextResponse(line)

    @app.post("/v1/gossip", openapi_extra=_TEXT_BODY)
    async def gossip(request: Request) -> Response:
        """Tell this node's witness a checkpoint you saw (a signed note of a log it witnesses):
        if it saw another tree of that size, the answer carries the equivocation evidence."""
        body = await request.body()
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise InputError("the checkpoint is not UTF-8") from None
        try:
            found = await run_in_threadpool(node.witness.gossip, text)
        except Refusal as exc:
            return _error(exc.status, "witness_refused", str(exc))
        return JSONResponse({"equivocation": found})

    @app.get("/v1/tensors/{digest}")
    async def kept_tensors(
        digest: str,
        authorization: str | None = Header(
            None, description="Bearer <the answer's capability, an auditor token or admin token>"
        ),
    ) -> Response:
        """The inputs or outputs a logged receipt's digest names (``.npz``), checked against
        the digest before they are served: to anyone if a public receipt names them, else only
        to the requester (the capability answered with the inference) and the operator's
        auditors. Private or not, the refusal is the same 403, so it does not tell whether
        the tensors are kept."""
        node.archive.check(digest)  # a malformed digest is a 400 before anything is looked up
        public = node.archive.is_public(digest)
        if not public:
            reader = await run_in_threadpool(node.access.reader, digest, bearer(authorization))
            if reader is None:
                return _error(
                    403,
                    "private",
                    f"the tensors {digest} are private to their requester: send Authorization: "
                    "Bearer <the capability answered with the inference, or an auditor token "
                    "this node's operator issued>",
                )
        data = await run_in_threadpool(node.archive.get, digest)
        # a caller's private data: no cache on the way keeps a copy
        headers = {} if public else {"Cache-Control": "private, no-store"}
        return Response(data, media_type="application/x-npz", headers=headers)

    @app.get("/v1/evidence")
    async def evidence() -> list[dict[str, Any]]:
        """Evidence of misbehaviour this node found (its witness) or accepted after checking
        it: check any of it offline with ``verinfer evidence verify``."""
        return await run_in_threadpool(node.witness.evidence)

    @app.post("/v1/evidence", openapi_extra=_JSON_BODY)
    async def submit_evidence(request: Request) -> dict[str, Any]:
        """Submit evidence (equivocation, fraud or a convicting dispute verdict) about a log this
        node witnesses; the node checks it before keeping it (fraud and disputes: by
        re-executing the model, which must be stored here)."""
        document = await request.body()
        verdict, kept = await checks.run(lambda: node.judge(document))
        return {"verdict": verdict, "kept": kept}


def _add_dispute_routes(app: FastAPI, node: Node) -> None:
    """Disputes of optimistic answers: this node as a referee, and as a side."""
    disputes = node.disputes

    def inputs_of(text: str) -> dict[str, Any]:
        return decode_npz(text, "inputs", max_bytes=node.max_input_bytes)

    @app.post("/v1/disputes")
    async def challenge(request: ChallengeRequest) -> Response:
        """Challenge an optimistic answer: this node referees the game between the challenger
        and the node that answered, and answers the signed verdict (kept under its ID)."""
        verdict = await run_in_threadpool(
            lambda: disputes.referee(request.bundle, request.inputs, challenger=request.challenger,
                                     defendant=request.defendant, deadline=request.deadline)
        )  # fmt: skip
        return Response(verdict.data, media_type="application/json")

    @app.get("/v1/disputes/{dispute}")
    async def verdict(dispute: str) -> Response:
        """A verdict this node signed as a referee (check it offline: ``verinfer verdict``)."""
        data = await run_in_threadpool(disputes.verdict, dispute)
        return Response(data, media_type="application/json")

    @app.post("/v1/disputes/party/opening")
    async def opening(request: OpeningRequest) -> dict[str, str]:
        """As a side: trace the disputed execution and sign the opening."""

        def open_() -> str:  # decoding up to max_input_bytes is work: off the event loop
            return disputes.opening(request.dispute, inputs_of(request.inputs))

        return {"message": await run_in_threadpool(open_)}

    @app.post("/v1/disputes/party/state")
    async def state(request: StateRequest) -> dict[str, Any]:
        """As a side: the root of a state, with its inclusion proof in the trace it signed."""
        return await run_in_threadpool(disputes.state, request.dispute, request.step)

    @app.post("/v1/disputes/party/reveal")
    async def reveal(request: RevealRequest) -> dict[str, Any]:
        """As a side: a state's leaves and the named tensors of it."""

        def reveal_() -> dict[str, Any]:  # encoding the tensors is work: off the event loop
            shown = disputes.reveal(request.dispute, request.step, request.names)
            return {"leaves": [list(leaf) for leaf in shown.leaves], "tensors": shown.npz()}

        return await run_in_threadpool(reveal_)


def _add_hub_routes(
    app: FastAPI,
    node: Node,
    admin: Callable[..., Awaitable[None]],
    upload_quota: int,
    upload_ttl: float,
    *,
    analyses: _Lane,
) -> None:
    """The hub: models, manifests, repository histories, blobs, and publishing."""

    @app.get("/v1/models")
    async def models(
        owner: str | None = None, tag: str | None = None, q: str | None = None
    ) -> list[dict[str, Any]]:
        """Published models, newest first, filtered by owner, tag or text."""
        return [
            {
                "repository": m.repository,
                "version": m.version,
                "model": m.model,
                "manifest": m.cid,
                "publisher": m.publisher,
                "description": m.body["description"],
                "time": m.body["time"],
            }
            for m in await run_in_threadpool(node.hub.models, owner=owner, tag=tag, text=q)
        ]

    @app.get("/v1/manifests/{ref:path}")
    async def manifest(ref: str) -> Response:
        """A signed manifest (its exact bytes) by CID or ``owner/name[@version|tag]``."""
        return Response(node.hub.resolve(ref).data, media_type="text/plain; charset=utf-8")

    uploading = 0  # bytes of uploads in flight, counted against the quota

    @app.put("/v1/blobs")
    async def upload(request: Request) -> dict[str, str]:
        """Store a blob (a model), streamed and hashed as it arrives; answers its CID.

        Anyone may upload, so unpublished uploads share a quota and expire: a blob no
        published manifest names is deleted after ``upload_ttl`` seconds to make room.
        """
        nonlocal uploading
        limit = node.hub.limits.max_bytes
        incoming = int(request.headers.get("content-length", limit))
        uploading += incoming  # reserved before the check: concurrent uploads see each other
        try:
            await run_in_threadpool(
                node.hub.make_room, uploading, quota=upload_quota, max_age=upload_ttl
            )
            with node.hub.blobs.writer(max_bytes=limit) as writer:
                async for chunk in request.stream():
                    writer.write(chunk)
                blob = await run_in_threadpool(writer.commit)
        finally:
            uploading -= incoming
        return {"cid": blob}

    @app.delete("/v1/blobs/{blob}", dependencies=[Depends(admin)])
    async def delete_blob(blob: str) -> dict[str, str]:
        """Delete a blob no published document names (admin token required)."""
        await run_in_threadpool(node.hub.remove, blob)
        return {"deleted": blob}

    @app.post("/v1/blobs/{blob}/analysis")
    async def analysis(
        blob: str,
        calibrate: bool = Query(
            False,
            description="also measure the tolerance across CPU kernel classes (minutes of CPU "
            "under an emulator: needs the admin token)",
        ),
        authorization: str | None = Header(None, description="Bearer <DATA/admin.token>"),
    ) -> dict[str, Any]:
        """The hub's checks and probe of a stored model: the facts a manifest must state."""
        if calibrate:
            await admin(authorization)
        facts: dict[str, Any] = await analyses.run(
            lambda: node.hub.analyse(blob, calibrate=calibrate)
        )
        return facts

    @app.get("/v1/repositories/{owner}/{name}/changes")
    async def history(owner: str, name: str) -> dict[str, list[str]]:
        """A repository's signed changes, in order (verify them with the owner's key)."""
        return {"changes": [c.decode() for c in node.hub.change_blobs(f"{owner}/{name}")]}

    @app.post("/v1/repositories/{owner}/{name}/changes")
    async def publish(owner: str, name: str, request: PublishRequest) -> dict[str, str]:
        """Publish a version signed by its owner: the manifest and the changes that add it."""
        try:
            manifest_data = request.manifest.encode()
            change_data = [c.encode() for c in request.changes]
        except UnicodeEncodeError as exc:
            raise InputError("documents must be valid Unicode") from exc
        claimed = Manifest.from_bytes(manifest_data).repository
        if claimed != f"{owner}/{name}":  # checked before anything is accepted
            raise InputError(f"the manifest is for {claimed!r}, not {owner}/{name}")
        # accepting analyses the model (in the sandbox) unless it was analysed here already
        manifest = await analyses.run(lambda: node.hub.accept(manifest_data, change_data))
        return {"manifest": manifest.cid, "model": manifest.model}

    @app.post("/v1/zk/addenda", openapi_extra=_TEXT_BODY)
    async def zk_addendum(request: Request) -> dict[str, str]:
        """Publish a zk addendum (the manifest publisher's signed endorsement of a circuit);
        upload its settings, verification key and SRS blobs first."""
        addendum = await run_in_threadpool(node.hub.accept_zk, await request.body())
        return {"addendum": addendum.cid, "manifest": addendum.body["manifest"]}

    @app.get("/v1/zk/{manifest}")
    async def zk_for(manifest: str) -> Response:
        """The zk addendum endorsed for a manifest (a signed note)."""
        found = await run_in_threadpool(node.hub.zk_addendum, manifest)
        return Response(found.data, media_type="text/plain; charset=utf-8")

    @app.get("/v1/blobs/{blob}")
    async def blob(blob: str) -> FileResponse:
        """A blob's bytes, hash-checked before they are served."""
        await run_in_threadpool(node.hub.blobs.check, blob)  # hashing stays off the event loop
        return FileResponse(node.hub.blobs.path(blob), media_type="application/octet-stream")


def _refusal(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 error answer that closes the connection, written by the protocol
    itself (no request reached the app)."""
    body = json.dumps({"code": reason.lower().replace(" ", "_"), "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def timed_protocol(
    *,
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol with the deadlines it lacks (it has only a keep-alive
    timeout, armed after a response): a request's head must arrive within ``header_timeout``
    seconds of its first byte (or of the connection, for the first request) and within
    ``max_header_bytes``; a body must not stall for ``body_timeout`` seconds while the server
    is reading it. A connection that misses one is answered 408 (or 431) and closed, so slow
    clients cannot hold connections, and the memory of half-read requests, for ever.

    The deadlines live in the protocol because no ASGI middleware sees a request before its
    head is complete.
    """
    base: type[Any]
    try:  # the parser uvicorn's "auto" picks: httptools if it is installed, else h11
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415

        base = HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is a dependency
        from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: PLC0415

        base = H11Protocol

    class Timed(base):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None
        _header_bytes = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(header_timeout, self._header_expired)

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timers()
            super().connection_lost(exc)

        def _cancel_timers(self) -> None:
            for timer in (self._header_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._header_timer = self._body_timer = None

        def data_received(self, data: bytes) -> None:
            before = self.cycle
            head = before is None or not before.more_body
            earlier = self._header_bytes  # of this head, in earlier reads
            if not head:  # a body arriving: not stalled
                self._arm_body()
            elif self._header_timer is None:  # a new head (on a kept-alive connection)
                self._header_timer = self.loop.call_later(header_timeout, self._header_expired)
            super().data_received(data)
            cycle = self.cycle
            complete = cycle is not before and cycle is not None
            if head:  # one read may hold a head and the start of its body: count the head only
                end = data.find(b"\r\n\r\n") if complete else -1
                if end >= 0:
                    self._header_bytes = earlier + end + 4
                else:  # incomplete; or its blank line began in the previous read
                    self._header_bytes = earlier + (3 if complete else len(data))
                if self._header_bytes > max_header_bytes:
                    self._close(
                        _refusal(431, "Request Header Fields Too Large",
                                 f"a request's head may be at most {max_header_bytes} bytes")
                    )  # fmt: skip
                    return
            if self.transport.is_closing():
                self._cancel_timers()
            elif complete:  # a head is complete
                if self._header_timer is not None:
                    self._header_timer.cancel()
                self._header_timer, self._header_bytes = None, 0
                if cycle.more_body:
                    self._arm_body()
            if cycle is not None and not cycle.more_body and self._body_timer is not None:
                self._body_timer.cancel()  # the body is complete
                self._body_timer = None

        def _arm_body(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
            self._body_timer = self.loop.call_later(body_timeout, self._body_expired)

        def _answering(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _header_expired(self) -> None:
            self._header_timer = None
            if self.flow.read_paused:  # the server stopped reading (a pipelined request): the
                self._header_timer = self.loop.call_later(header_timeout, self._header_expired)
                return  # client is not the slow one
            refusal = _refusal(
                408, "Request Timeout",
                f"a request's head must arrive within {header_timeout:g} s",
            )  # fmt: skip
            self._close(None if self._answering() else refusal)

        def _body_expired(self) -> None:
            self._body_timer = None
            cycle = self.cycle
            if self.flow.read_paused or getattr(cycle, "waiting_for_100_continue", False):
                self._arm_body()  # the app has not asked for more yet: not the client's stall
                return
            started = cycle is not None and cycle.response_started
            refusal = _refusal(
                408, "Request Timeout",
                f"the request's body stalled for {body_timeout:g} s",
            )  # fmt: skip
            self._close(None if started else refusal)

        def _close(self, answer: bytes | None) -> None:
            self._cancel_timers()
            if not self.transport.is_closing():
                if answer is not None:
                    self.transport.write(answer)
                self.transport.close()

    return Timed


def serve(
    node: Node,
    *,
    host: str = "127.0.0.1",
    port: int = 8600,
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
) -> None:
    """Serve ``node`` until SIGINT or SIGTERM, then return so the caller can close it.

    uvicorn finishes in-flight requests, then re-raises the signal it caught; the handlers
    installed here receive it instead of the default one, which would kill the process before
    the node commits its queue and closes its log. Slow clients are cut off (see
    :func:`timed_protocol`).
    """
    caught: list[int] = []

    def note_signal(signum: int, _: FrameType | None) -> None:
        caught.append(signum)

    previous = {sig: signal.signal(sig, note_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.run(
            create_app(node),
            host=host,
            port=port,
            log_level="warning",
            proxy_headers=False,
            http=timed_protocol(header_timeout=header_timeout, body_timeout=body_timeout),
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
