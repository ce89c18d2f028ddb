"""The local control endpoint: a Unix socket in the node's home that only the node's user can reach.

One JSON request per connection, one JSON reply: `{"cmd": NAME, "args": {...}}` ->
`{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`. A query's images travel as
`encode_images` writes them (base64 of the uint8 pixels, and their shape). File permissions are the access
control (socket 0600 inside a 0700 home), so no token is needed and nothing listens on the network.

Whether a node runs is decided by whether its socket answers, never by the files it leaves: after a `kill -9`
`control.sock` and `node.json` stay behind. `node_state` tells running, starting (the home's lock is held,
the socket not up yet) and stopped apart; `call` raises `NotRunning` when no node answers.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

log = logging.getLogger("ffnode.control")

SOCKET_FILE = "control.sock"
RUNTIME_FILE = "node.json"  # pid and listen addresses of the running node, for `ffnode id` and scripts
LOCK_FILE = "node.lock"  # held (flock) by the node for its lifetime
MAX_REQUEST = 256 * 2**20  # a query may carry a batch of images

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlError(Exception):
    """The node is not running or refused the request; the message says which."""


class NotRunning(ControlError):
    """No node answers on the home's control socket (none there, or a stale one a killed node left)."""


async def serve(home: Path, handlers: dict[str, Handler], ready: asyncio.Event) -> None:
    """Serve until cancelled. Each handler gets the request's args; a raised exception becomes an error
    reply (its message), never a dead server."""
    path = home / SOCKET_FILE

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline())
            handler = handlers.get(request.get("cmd"))
            if handler is None:
                reply = {"ok": False, "error": f"unknown command {request.get('cmd')!r}; known: {sorted(handlers)}"}
            else:
                reply = {"ok": True, "result": await handler(request.get("args") or {})}
        except Exception as exc:  # reported to the caller; the server goes on
            log.debug("control request failed", exc_info=True)
            reply = {"ok": False, "error": str(exc) or type(exc).__name__}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    sock = private_socket(path)
    try:
        server = await asyncio.start_unix_server(on_client, sock=sock, limit=MAX_REQUEST)
    except BaseException:
        sock.close()
        path.unlink(missing_ok=True)
        raise
    ready.set()
    try:
        async with server:
            await server.serve_forever()
    finally:
        path.unlink(missing_ok=True)


def private_socket(path: Path) -> socket.socket:
    """A listening Unix socket at `path` (replacing a stale one) that only this user can connect to, made without
    touching the process's umask, which is shared by every thread (a umask changed around an await once gave
    other threads' new folders mode 0700/0600). It is bound inside a fresh 0700 folder beside `path`, where
    nobody else can reach it, made 0600 there, and then renamed into place: there is no moment at which
    another user could connect."""
    private = Path(tempfile.mkdtemp(prefix=".c", dir=path.parent))  # mode 0700
    bound = private / "s"  # no longer than `path`: a Unix socket path has at most 107 bytes
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(bound))
        os.chmod(bound, 0o600)
        sock.listen(100)
        sock.setblocking(False)
        os.replace(bound, path)  # atomically over a stale socket from a crash
    except BaseException:
        sock.close()
        raise
    finally:
        bound.unlink(missing_ok=True)
        private.rmdir()
    return sock


def node_state(home: Path, timeout: float = 5.0) -> str:
    """The node's state: "running" (its control socket answers), "starting" (a node holds the home's lock, its
    socket is not up yet, or it is stopping) or "stopped" (nobody holds the lock: whatever `control.sock` and
    `node.json` say is stale, e.g. after a `kill -9`)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(home / SOCKET_FILE))
            return "running"
        except OSError:
            pass
    return "starting" if lock_held(home) else "stopped"


def lock_home(home: Path, wait: float = 0.0) -> IO[str] | None:
    """The home's node lock, taken exclusively and held for as long as the returned file stays open (the kernel
    drops it however the process ends); None if another process still holds it after `wait` seconds."""
    f = open(home / LOCK_FILE, "a")  # noqa: SIM115 - the caller owns it: closing it releases the lock
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() >= deadline:
                f.close()
                return None
            time.sleep(0.05)


def lock_held(home: Path) -> bool:
    """Whether a process holds the home's node lock. Probes it with a shared lock held for an instant (a node
    that starts in that instant retries: `Node._lock_home`); creates nothing."""
    try:
        fd = os.open(home / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock
    return False


def encode_images(images: np.ndarray) -> dict[str, Any]:
    """A (B, H, W, C) uint8 batch as query args."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    return {"images": base64.b64encode(images.tobytes()).decode(), "shape": list(images.shape)}


def decode_images(args: dict[str, Any]) -> np.ndarray:
    """The batch `encode_images` wrote, as a writable array; ValueError if the shape does not fit the bytes."""
    shape = args.get("shape")
    if not isinstance(shape, list) or len(shape) != 4 or not all(type(x) is int and x > 0 for x in shape):
        raise ValueError(f"query shape must be 4 positive ints (B, H, W, C), got {shape!r}")
    pixels = bytearray(base64.b64decode(args.get("images", "")))
    if len(pixels) != int(np.prod(shape)):
        raise ValueError(f"query holds {len(pixels)} bytes, not the {int(np.prod(shape))} of shape {shape}")
    return np.frombuffer(pixels, dtype=np.uint8).reshape(shape)


def call(home: Path, cmd: str, args: dict[str, Any] | None = None, *, timeout: float | None = 30.0) -> Any:
    """Blocking client for the CLI and scripts."""
    path = home / SOCKET_FILE
    if not path.exists():
        raise NotRunning(f"the node at {home} is not running (no {path}): start it with `ffnode start --home {home}`")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            raise NotRunning(f"the node at {home} is not running (stale {path}): start it again") from None
        try:
            sock.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
            chunks = []
            while chunk := sock.recv(1 << 20):
                chunks.append(chunk)
            reply = json.loads(b"".join(chunks))
        except (OSError, ValueError) as exc:  # socket.timeout is an OSError; a cut-off reply a ValueError
            raise ControlError(f"the node at {home} did not answer {cmd!r} ({exc or 'timed out'})") from None
    if not reply["ok"]:
        raise ControlError(reply["error"])
    return reply["result"]
