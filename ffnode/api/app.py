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

A query's images come either as the raw bytes of one PNG or JPEG (Content-Type image/png or image/jpeg), or as
JSON: {"images": [base64 PNG/JPEG, ...]}, {"pixels": base64 of B*H*W*C uint8, "shape": [B, H, W, C]} or
{"arrays": nested lists of 0..255 ints, (B, H, W, C)}; each with an optional "rule". Images must already be the
federation's size, as for `ffnode query`. Errors are {"detail": why} with a 4xx naming the problem: 400 a bad
image or body, 401/403 the token, 404 an unknown artifact, 409 a query the experts cannot answer, 413 a body
over api.max_body_mb or more than api.max_images images, 503 no experts yet or a request past api.timeout_s.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from importlib import resources
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ffnode.api.auth import Tokens, is_loopback
from ffnode.api.metrics import Metrics
from ffnode.config import ConfigError
from ffnode.data.images import load_image_file
from ffnode.data.sources import DataError
from ffnode.events import read_events
from ffnode.voters import CannotAnswer, NoExperts

VERSION = "1"
IMAGE_TYPES = ("image/png", "image/jpeg")


class QueryRequest(BaseModel):
    """One of images, pixels (+ shape) or arrays."""

    images: list[str] | None = Field(None, description="base64 of PNG or JPEG files, each of the federation's size")
    pixels: str | None = Field(None, description="base64 of B*H*W*C uint8 pixels, row-major")
    shape: list[int] | None = Field(None, description="[B, H, W, C] of `pixels`")
    arrays: list[Any] | None = Field(None, description="(B, H, W, C) nested lists of 0..255 ints")
    rule: str = Field("", description="prior | product; empty: the node's learning.poe_rule")


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


class BodyTooLarge(Exception):
    pass


class Guard:
    """Every request's limits: a body over `limit` bytes gets 413, and a request not answered within `seconds` gets
    503. A body declared over twice the limit is refused unread; a smaller excess is read (and dropped) so that
    the client, still sending, hears why rather than a reset connection."""

    def __init__(self, app: ASGIApp, limit: int, seconds: float) -> None:
        self.app, self.limit, self.seconds = app, limit, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > 2 * self.limit):  # not worth reading
            await self._refuse(413, self._too_large(), scope, receive, send)
            return
        seen, started = 0, False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # read on (up to the limit again) so the client, still sending, hears the 413
                while message.get("more_body") and seen <= 2 * self.limit:
                    message = await receive()
                    seen += len(message.get("body", b""))
                raise BodyTooLarge(self._too_large())
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(self.seconds):
                await self.app(scope, limited, watched)
        except (BodyTooLarge, TimeoutError) as exc:
            if started:  # the answer is under way: all that is left is to cut it
                raise
            too_large = isinstance(exc, BodyTooLarge)
            why = str(exc) if too_large else f"the request took longer than api.timeout_s ({self.seconds:g} s)"
            await self._refuse(413 if too_large else 503, why, scope, receive, send)

    @staticmethod
    async def _refuse(code: int, why: str, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"detail": why}, status_code=code, headers={"Connection": "close"})(scope, receive, send)

    def _too_large(self) -> str:
        return f"the request body is over api.max_body_mb ({self.limit // 2**20} MB): send fewer images per request"


def create_app(node: Any, handlers: Any) -> FastAPI:
    """The API of a running node (daemon/node.py's Node) through its control handlers."""
    cfg = node.config.api
    tokens = Tokens(node.home)
    metrics = Metrics(node, handlers)
    app = FastAPI(title="ffnode", version=VERSION, docs_url=None, redoc_url=None,
                  description="A FederatedFactory node's HTTP API: queries, state, actions, metrics.")  # fmt: skip

    # async: FastAPI runs a plain `def` dependency in a thread pool, a hop that cost each request tens of ms here
    async def reader(request: Request) -> None:
        """Open on loopback; from elsewhere, the token."""
        if not is_loopback(request.client.host if request.client else None):
            await writer(request)

    async def writer(request: Request) -> None:
        why = tokens.check(request.headers.get("authorization"))
        if why is not None:
            code = 401 if "needs" in why else 403
            raise HTTPException(code, why, headers={"WWW-Authenticate": "Bearer"} if code == 401 else None)

    app.add_middleware(Guard, limit=cfg.max_body_mb * 2**20, seconds=cfg.timeout_s)

    @app.exception_handler(BodyTooLarge)  # raised in a route reading the body
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 413, headers={"Connection": "close"})

    @app.post(
        "/v1/query", response_model=QueryAnswer, dependencies=[Depends(reader)],
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
        if kind in IMAGE_TYPES:
            images = _decode_files([body], shape, node.config.data.bit_depth, cfg.max_images)
        elif kind == "application/json":
            try:
                req = QueryRequest.model_validate_json(body)
            except ValidationError as exc:
                raise HTTPException(400, f"the body is not a query: {_first_error(exc)}") from None
            rule = req.rule or rule
            images = _decode_json(req, shape, node.config.data.bit_depth, cfg.max_images)
        else:
            raise HTTPException(415, f"Content-Type {kind or 'none'}: send image/png, image/jpeg or application/json")
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

    @app.get("/v1/status", dependencies=[Depends(reader)])
    async def status() -> dict[str, Any]:
        """Phase, progress, peers, artifacts, jobs and faults: `ffnode status --json`."""
        return await call(handlers.status)

    @app.get("/v1/peers", dependencies=[Depends(reader)])
    async def peers() -> list[dict[str, Any]]:
        """Every peer this node knows: `ffnode peers --json`."""
        return await call(handlers.peers)

    @app.get("/v1/artifacts", dependencies=[Depends(reader)])
    async def artifacts() -> list[dict[str, Any]]:
        """Every artifact held, with its state: `ffnode artifacts --json`."""
        return await call(handlers.artifacts)

    @app.get("/v1/audit", dependencies=[Depends(reader)])
    async def audit() -> list[dict[str, Any]]:
        """The privacy audits of this site's factories and its peers': `ffnode audit --json`."""
        return await call(handlers.audit)

    @app.get("/v1/events", dependencies=[Depends(reader)])
    async def events(limit: int = 100) -> list[dict[str, Any]]:
        """The audit trail (events.jsonl), newest last: `ffnode events --json`."""
        if not 0 < limit <= 100_000:
            raise HTTPException(400, "limit must be 1 to 100000")
        return await asyncio.to_thread(read_events, node.home, limit)

    @app.post("/v1/revoke", dependencies=[Depends(writer)])
    async def revoke(req: Revoke) -> dict[str, Any]:
        """Revoke own artifacts (`ffnode revoke`): deleted everywhere, everything derived retrained without them."""
        return await call(handlers.revoke, {"ids": req.ids, "reason": req.reason})

    @app.post("/v1/block", dependencies=[Depends(writer)])
    async def block(req: Block) -> dict[str, Any]:
        """Stop using a publisher's artifacts (`ffnode block`); undo: trust it again."""
        return await call(handlers.trust, {"what": "block", "value": req.peer, "undo": req.undo})

    @app.post("/v1/quarantine", dependencies=[Depends(writer)])
    async def quarantine(req: Quarantine) -> dict[str, Any]:
        """Keep an artifact but never use it (`ffnode quarantine`); undo: use it again."""
        return await call(handlers.trust, {"what": "quarantine", "value": req.artifact, "undo": req.undo})

    @app.post("/v1/leave", dependencies=[Depends(writer)])
    async def leave(req: Leave) -> dict[str, Any]:
        """Withdraw from the federation (`ffnode leave`): revoke everything this node published."""
        if not req.confirm:
            raise HTTPException(400, 'leave revokes everything this node published: send {"confirm": true}')
        return await call(handlers.leave)

    @app.get("/metrics", dependencies=[Depends(reader)], include_in_schema=False)
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


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    return f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"


class _Upload(io.BytesIO):
    """An uploaded file's bytes, named in error messages as the request's n-th image."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label


def _decode_files(files: list[bytes], shape: tuple[int, int, int], bit_depth: int, most: int) -> np.ndarray:
    if not files:
        raise HTTPException(400, "no images: send at least one")
    if len(files) > most:
        raise HTTPException(413, f"{len(files)} images: over api.max_images ({most}); split the batch")
    try:
        return np.stack([
            load_image_file(_Upload(data, f"image {i}"), shape, bit_depth) for i, data in enumerate(files)
        ])  # fmt: skip
    except DataError as exc:
        raise HTTPException(400, str(exc)) from None


def _decode_json(req: QueryRequest, shape: tuple[int, int, int], bit_depth: int, most: int) -> np.ndarray:
    given = [k for k in ("images", "pixels", "arrays") if getattr(req, k) is not None]
    if len(given) != 1:
        raise HTTPException(400, f"give exactly one of images, pixels or arrays (got {given or 'none'})")
    if req.images is not None:
        try:
            files = [base64.b64decode(s, validate=True) for s in req.images]
        except (binascii.Error, ValueError):
            raise HTTPException(400, "images: each must be the base64 of a PNG or JPEG file") from None
        return _decode_files(files, shape, bit_depth, most)
    if req.pixels is not None:
        if req.shape is None or len(req.shape) != 4:
            raise HTTPException(400, "pixels need shape [B, H, W, C]")
        try:
            raw = base64.b64decode(req.pixels, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(400, "pixels: not base64") from None
        b = req.shape[0]
        if b <= 0 or b > most:
            raise HTTPException(413 if b > most else 400, f"shape {req.shape}: 1 to api.max_images ({most}) images")
        if tuple(req.shape[1:]) != shape:
            raise HTTPException(400, f"shape {req.shape}: the federation's images are {list(shape)} (H, W, C)")
        if len(raw) != b * int(np.prod(shape)):
            raise HTTPException(400, f"pixels hold {len(raw)} bytes, not the {b * int(np.prod(shape))} of {req.shape}")
        return np.frombuffer(raw, np.uint8).reshape(b, *shape).copy()
    try:
        array = np.asarray(req.arrays)
    except ValueError:
        raise HTTPException(400, "arrays: not a rectangular (B, H, W, C) array") from None
    if array.ndim != 4 or tuple(array.shape[1:]) != shape or not len(array):
        raise HTTPException(400, f"arrays are {list(array.shape)}: give (B, {', '.join(map(str, shape))})")
    if len(array) > most:
        raise HTTPException(413, f"{len(array)} images: over api.max_images ({most}); split the batch")
    if array.dtype.kind not in "iu" or array.min() < 0 or array.max() > 255:
        raise HTTPException(400, "arrays: pixels must be integers from 0 to 255")
    return array.astype(np.uint8)
