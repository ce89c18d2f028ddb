"""The routes of the HTTP API (version 1). Each calls the control handlers the CLI reaches, so an answer here is
the answer `ffnode query` / `status` / ... gives. The OpenAPI document is generated from this file
(`GET /openapi.json`); no route loads anything from the internet (no Swagger UI).

    POST /v1/query          images -> the PoE's answer (predictions, probabilities, rule, experts, coverage)
    GET  /v1/status         what `ffnode status --json` shows
    GET  /v1/peers          `ffnode peers --json`
    GET  /v1/artifacts      `ffnode artifacts --json`
    GET  /v1/audit          `ffnode audit --json`
    GET  /v1/events         `ffnode events --json` (?limit=N)
    POST /v1/revoke         {"ids": [...], "reason": "..."}                 token
    POST /v1/block          {"peer": ID, "undo": false}                     token
    POST /v1/quarantine     {"artifact": ID, "undo": false}                 token
    POST /v1/leave          {"confirm": true}                               token
    GET  /metrics           Prometheus text format (metrics.py)
    GET  /                  the status page

A query's body is one image or a JSON batch (decode.py says which forms). Images must already be the federation's
size, as for `ffnode query`. Who may do what, and the limits every request meets, are guard.py's. Errors are
{"detail": why} with a 4xx naming the problem: 400 a bad image or body, 401/403 the token, 404 an unknown
artifact, 409 a query the experts cannot answer, 413 a body over its limit or more than api.max_images images,
415 another content type, 503 no experts yet, too many requests at once, or a request past api.timeout_s.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from ffnode.api.auth import Tokens
from ffnode.api.decode import IMAGE_TYPES, QueryError, QueryRequest, decode_query
from ffnode.api.guard import BodyTooLarge, Guard
from ffnode.api.metrics import Metrics
from ffnode.config import ConfigError
from ffnode.events import read_events
from ffnode.voters import CannotAnswer, NoExperts

VERSION = "1"


class Expert(BaseModel):
    id: str
    owner: str


class QueryAnswer(BaseModel):
    predictions: list[str]
    labels: list[int]
    probabilities: list[list[float]]
    classes: list[str]
    rule: str
    experts: list[Expert]
    uncovered_classes: list[str]
    uncovered_why: dict[str, str]


class Revoke(BaseModel):
    ids: list[str] = Field(..., min_length=1, description="artifact IDs or unique prefixes, this node's own")
    reason: str = Field("revoked by operator", max_length=512)


class Block(BaseModel):
    peer: str
    undo: bool = False


class Quarantine(BaseModel):
    artifact: str
    undo: bool = False


class Leave(BaseModel):
    confirm: bool = Field(..., description="must be true: the node revokes everything it published")


def create_app(node: Any, handlers: Any) -> FastAPI:
    """The API of a running node (daemon/node.py's Node) through its control handlers."""
    cfg = node.config.api
    metrics = Metrics(node, handlers)
    app = FastAPI(title="ffnode", version=VERSION, docs_url=None, redoc_url=None,
                  description="A FederatedFactory node's HTTP API: queries, state, actions, metrics.")  # fmt: skip

    app.add_middleware(
        Guard, tokens=Tokens(node.home), hosts=frozenset(h.lower() for h in cfg.allowed_hosts),
        limit=cfg.max_body_mb * 2**20, seconds=cfg.timeout_s, concurrency=cfg.concurrency,
    )  # fmt: skip
    decoding = asyncio.Semaphore(1)  # one body decoded at a time: its memory is bounded by one body's

    @app.exception_handler(BodyTooLarge)  # raised in a route reading the body
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 413, headers={"Connection": "close"})

    @app.post(
        "/v1/query", response_model=QueryAnswer,
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": QueryRequest.model_json_schema()},
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
        }}},
    )  # fmt: skip
    async def query(request: Request, rule: str = "") -> dict[str, Any]:
        """Classify images by Product-of-Experts over the node's live experts, as `ffnode query --json` does."""
        body = await request.body()
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        shape = node.pool.image_shape if node.pool is not None else None
        if shape is None:
            raise HTTPException(503, "the node is still loading its data: ask again in a moment")
        async with decoding:
            try:
                images, named = await asyncio.to_thread(
                    decode_query, body, kind, shape, node.config.data.bit_depth, cfg.max_images
                )
            except QueryError as exc:
                raise HTTPException(exc.code, str(exc)) from None
        rule = named or rule
        try:
            return await handlers.answer(images, rule)
        except NoExperts as exc:
            raise HTTPException(503, str(exc)) from None
        except CannotAnswer as exc:
            raise HTTPException(409, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    async def call(handler: Any, args: dict[str, Any] | None = None) -> Any:
        try:
            return await handler(args or {})
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0] if exc.args else exc)) from None
        except (ValueError, ConfigError) as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        """Phase, progress, peers, artifacts, jobs and faults: `ffnode status --json`."""
        return await call(handlers.status)

    @app.get("/v1/peers")
    async def peers() -> list[dict[str, Any]]:
        """Every peer this node knows: `ffnode peers --json`."""
        return await call(handlers.peers)

    @app.get("/v1/artifacts")
    async def artifacts() -> list[dict[str, Any]]:
        """Every artifact held, with its state: `ffnode artifacts --json`."""
        return await call(handlers.artifacts)

    @app.get("/v1/audit")
    async def audit() -> list[dict[str, Any]]:
        """The privacy audits of this site's factories and its peers': `ffnode audit --json`."""
        return await call(handlers.audit)

    @app.get("/v1/events")
    async def events(limit: int = 100) -> list[dict[str, Any]]:
        """The audit trail (events.jsonl), newest last: `ffnode events --json`."""
        if not 0 < limit <= 100_000:
            raise HTTPException(400, "limit must be 1 to 100000")
        return await asyncio.to_thread(read_events, node.home, limit)

    @app.post("/v1/revoke")
    async def revoke(req: Revoke) -> dict[str, Any]:
        """Revoke own artifacts (`ffnode revoke`): deleted everywhere, everything derived retrained without them."""
        return await call(handlers.revoke, {"ids": req.ids, "reason": req.reason})

    @app.post("/v1/block")
    async def block(req: Block) -> dict[str, Any]:
        """Stop using a publisher's artifacts (`ffnode block`); undo: trust it again."""
        return await call(handlers.trust, {"what": "block", "value": req.peer, "undo": req.undo})

    @app.post("/v1/quarantine")
    async def quarantine(req: Quarantine) -> dict[str, Any]:
        """Keep an artifact but never use it (`ffnode quarantine`); undo: use it again."""
        return await call(handlers.trust, {"what": "quarantine", "value": req.artifact, "undo": req.undo})

    @app.post("/v1/leave")
    async def leave(req: Leave) -> dict[str, Any]:
        """Withdraw from the federation (`ffnode leave`): revoke everything this node published."""
        if not req.confirm:
            raise HTTPException(400, 'leave revokes everything this node published: send {"confirm": true}')
        return await call(handlers.leave)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    page = resources.files("ffnode.api")

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((page / "page.html").read_text(), headers=_PAGE_HEADERS)

    @app.get("/page.js", include_in_schema=False)
    async def script() -> Response:
        return Response((page / "page.js").read_text(), media_type="text/javascript", headers=_PAGE_HEADERS)

    return app


_PAGE_HEADERS = {  # the page runs only its own script and talks only to this node
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
