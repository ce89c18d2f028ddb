"""Run the HTTP API inside the node's event loop: uvicorn on a socket the node binds itself (so a taken port is a
clear error, not uvicorn's exit), without uvicorn's signal handlers (the node owns SIGINT/SIGTERM) or its logging
setup (the node's stays). Cancelling `serve` stops accepting, lets requests in flight finish for up to
SHUTDOWN_S, then returns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ffnode.api.app import create_app
from ffnode.api.auth import ensure_token, is_loopback
from ffnode.config import CONFIG_FILE, ConfigError

log = logging.getLogger("ffnode.api")

SHUTDOWN_S = 2.0
KEEP_ALIVE_S = 5  # an idle connection is closed this long after its last answer
HEADER_S = 10.0  # ... and this long after it opened, if no request came


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with two more limits: at most `max_connections` open at once (a new one beyond
    closes the oldest idle one, or itself if none is idle), and a connection that has not sent a whole request's
    headers HEADER_S after it opened is closed (uvicorn's own keep-alive timeout starts only after a first answer:
    idle connections were free, and held every slot)."""

    max_connections = 64

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.opened = self.loop.time()
        if len(self.connections) > self.max_connections:  # make room: the oldest idle one goes, else this one
            idle = [c for c in self.connections if c is not self and c._idle()]
            (min(idle, key=lambda c: c.opened) if idle else self).transport.close()
        self.loop.call_later(HEADER_S, self._no_request)

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _no_request(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the node's own handlers stop it, and cancel `serve`


def bind(listen: str, where: str) -> socket.socket:
    """A listening socket on "host:port" ("[::1]:port" for IPv6); ConfigError naming the field if it cannot be."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto named: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP, and with Nagle on
    # every answer's body waited for the client's delayed ACK (40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(128)
        sock.setblocking(False)
    except (OSError, ValueError) as exc:
        sock.close()
        raise ConfigError(
            f"{where}: api.listen {listen!r} cannot be used ({exc}): pick another address or port"
        ) from None
    return sock


async def serve(node: Any, handlers: Any) -> None:
    """Serve the node's API on `api.listen` until cancelled."""
    cfg = node.config.api
    sock = bind(cfg.listen, str(node.home / CONFIG_FILE))
    host = cfg.listen.rpartition(":")[0].strip("[]")
    if not is_loopback(host):  # clients from elsewhere need the token: make sure there is one to give them
        ensure_token(node.home)
    protocol = type("Protocol", (_Protocol,), {"max_connections": cfg.max_connections})
    config = uvicorn.Config(
        create_app(node, handlers), http=protocol, log_config=None, access_log=False, lifespan="off",
        server_header=False, proxy_headers=False,  # the client is the socket's peer, whatever headers say
        timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=SHUTDOWN_S,
    )  # fmt: skip
    server = _Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    log.info("HTTP API on http://%s (status page at /, metrics at /metrics)", cfg.listen)
    try:
        await asyncio.shield(serving)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await serving
        sock.close()
