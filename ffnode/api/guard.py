"""The gate every request passes before a route reads a byte of its body: who may (auth.py's rules), how many at
once, how large, how long.

    not a page file, and an action or not open to this client -> the token, else 401/403 (nothing read)
    api.concurrency requests in flight already                -> 503
    a body over its limit (an action's ACTION_BODY, else api.max_body_mb)          -> 413
    not answered within api.timeout_s                         -> 503
"""

from __future__ import annotations

import asyncio

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ffnode.api.auth import Tokens, reads_open

ACTIONS = frozenset({"/v1/revoke", "/v1/block", "/v1/quarantine", "/v1/leave"})
PAGE = frozenset({"/", "/page.js", "/openapi.json"})  # hold no data: the page asks for the token it needs itself
ACTION_BODY = 64 * 1024


class BodyTooLarge(Exception):
    pass


class Guard:
    def __init__(
        self, app: ASGIApp, *, tokens: Tokens, hosts: frozenset[str], limit: int, seconds: float, concurrency: int
    ) -> None:
        self.app, self.tokens, self.hosts = app, tokens, hosts
        self.limit, self.seconds, self.concurrency = limit, seconds, concurrency
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, headers = scope["path"], dict(scope["headers"])
        if path not in PAGE:
            client = scope["client"][0] if scope.get("client") else None
            if path in ACTIONS or not reads_open(client, headers.get(b"host", b"").decode("latin-1"), self.hosts):
                refusal = self.tokens.check(headers.get(b"authorization", b"").decode("latin-1") or None)
                if refusal is not None:
                    extra = {"WWW-Authenticate": "Bearer"} if refusal[0] == 401 else {}
                    await _refuse(*refusal, scope, receive, send, extra)
                    return
        if self.in_flight >= self.concurrency:
            why = f"{self.concurrency} requests are being served (api.concurrency): try again in a moment"
            await _refuse(503, why, scope, receive, send, {"Retry-After": "1"})
            return
        self.in_flight += 1
        try:
            await self._serve(scope, receive, send, ACTION_BODY if path in ACTIONS else self.limit, headers)
        finally:
            self.in_flight -= 1

    async def _serve(self, scope: Scope, receive: Receive, send: Send, limit: int, headers: dict) -> None:
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > 2 * limit):  # not worth reading
            await _refuse(413, _too_large(limit), scope, receive, send)
            return
        seen, started = 0, False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:  # read on (up to the limit again) so the client, still sending, hears the 413
                while message.get("more_body") and seen <= 2 * limit:
                    message = await receive()
                    seen += len(message.get("body", b""))
                raise BodyTooLarge(_too_large(limit))
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
            await _refuse(413 if too_large else 503, why, scope, receive, send)


def _too_large(limit: int) -> str:
    if limit == ACTION_BODY:
        return f"an action's body is at most {ACTION_BODY // 1024} KiB"
    return f"the request body is over api.max_body_mb ({limit // 2**20} MB): send fewer images per request"


async def _refuse(
    code: int, why: str, scope: Scope, receive: Receive, send: Send, headers: dict[str, str] | None = None
) -> None:
    response = JSONResponse({"detail": why}, status_code=code, headers={"Connection": "close", **(headers or {})})
    await response(scope, receive, send)
