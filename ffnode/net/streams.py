"""Wire rules of ffnode's two stream protocols, and their trio-side code.

Framing (both protocols)
    Every message is a 4-byte big-endian unsigned length followed by that many bytes of body.
    A receiver that reads a declared length above its limit resets the stream without reading
    the body. Limits: sync request 1 MiB, sync response `max_response` chosen by the caller
    (16 MiB by default), blob request and blob header 4 KiB.

Sync, `/ffnode/sync/1.0.0` (request/response, e.g. "send me your inventory")
    The client opens a stream, sends one framed request body and half-closes its write side.
    The server answers with one framed response body and closes. Bodies are opaque bytes to the
    transport (the daemon defines them). A server that fails to build a response resets the stream.

Blob, `/ffnode/blob/1.0.0` (one weight file, named by its sha256)
    The client sends one frame whose body is msgpack `{"t": "blob_get", "v": 1, "id": <hex>}`,
    where id is the 64-char lowercase hex sha256 of the file, and half-closes its write side.
    The server answers one frame, msgpack `{"t": "blob_hdr", "v": 1, "ok": True, "size": N}`,
    followed by exactly N raw bytes (no further framing; written in 1 MiB chunks), then closes.
    If it does not serve the blob it answers `{"t": "blob_hdr", "v": 1, "ok": False,
    "error": "not found"}` and closes. The client checks that exactly `size` bytes arrive (the
    size it expects from the manifest; a header or stream that disagrees is an error) and that their
    sha256 equals the id; it never keeps a partial or unverified file.

Errors
    Any malformed frame, unknown message or limit violation resets the stream. Stream handlers
    never let an exception escape: in py-libp2p 0.8.1 an escaping exception breaks the whole
    connection (the peer's next stream fails to negotiate).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF

from ffnode.artifacts.codec import WireError, decode, is_version
from ffnode.net.conns import Refusals

log = logging.getLogger("ffnode.net")

FRAME_HEADER = struct.Struct(">I")
MAX_SYNC_REQUEST = 1 << 20
MAX_BLOB_FRAME = 4096
# Server write size. 64 KiB gave 81-85 MB/s vs 110-115 MB/s for 256 KiB-1 MiB (shared/notes/libp2p.md);
# between those two, 1 MiB costs the sender 4.6-5.4 ms of CPU per MB vs 6.0-6.2 ms for 256 KiB
# (scripts/bench_net.py --chunk, 2 cores), so 1 MiB.
BLOB_CHUNK = 1 << 20
# A shielded chunk write that makes no progress for this long is abandoned (stream reset);
# it bounds how long a stalled reader can pin a server task.
WRITE_STALL_TIMEOUT = 30.0
BLOB_ID_RE = re.compile(r"[0-9a-f]{64}")


class FrameError(Exception):
    """A peer broke the framing rules (oversized or truncated frame, bad message)."""


class BlobError(Exception):
    """A blob transfer failed; the message says what went wrong (the caller adds peer and blob)."""


def peer_of(stream: INetStream) -> str:
    """Base58 id of the remote peer, for logs and handlers."""
    return stream.muxed_conn.peer_id.to_base58()


async def read_exactly(stream: INetStream, n: int) -> bytes:
    """Read exactly n bytes; FrameError if the stream ends first."""
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = await stream.read(n - len(buf))
        except StreamEOF:
            chunk = b""
        if not chunk:
            raise FrameError(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


async def read_frame(stream: INetStream, limit: int) -> bytes:
    """Read one length-prefixed frame; FrameError if its declared length exceeds limit."""
    (length,) = FRAME_HEADER.unpack(await read_exactly(stream, FRAME_HEADER.size))
    if length > limit:
        raise FrameError(f"declared frame length {length} exceeds limit {limit}")
    return await read_exactly(stream, length)


async def write_all(stream: INetStream, data: bytes) -> None:
    """Write data shielded from cancellation.

    Cancelling py-libp2p in the middle of a write can kill the whole connection (pitfall 2), so a
    write is never cancelled from outside; a stalled one gives up after WRITE_STALL_TIMEOUT.
    """
    with trio.CancelScope(shield=True) as scope:
        scope.relative_deadline = WRITE_STALL_TIMEOUT
        await stream.write(data)
    if scope.cancelled_caught:
        raise FrameError(f"write stalled for {WRITE_STALL_TIMEOUT:.0f} s")
    # Let a pending outer cancellation take effect now that the write is complete.
    await trio.lowlevel.checkpoint_if_cancelled()


async def write_frame(stream: INetStream, body: bytes) -> None:
    await write_all(stream, FRAME_HEADER.pack(len(body)) + body)


async def reset_quietly(stream: INetStream) -> None:
    """Reset a stream during cleanup; shielded so a cancelled task can still do it."""
    with trio.CancelScope(shield=True):
        try:
            await stream.reset()
        except Exception:  # the stream or connection may already be gone; nothing left to do
            log.debug("reset of a %s stream failed", stream.get_protocol(), exc_info=True)


async def close_quietly(stream: INetStream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.close()
        except Exception:  # the peer may have reset first; the stream is finished either way
            log.debug("close of a %s stream failed", stream.get_protocol(), exc_info=True)


StreamHandler = Callable[[INetStream], Awaitable[None]]


def guard_handler(protocol: str, handler: StreamHandler) -> StreamHandler:
    """Wrap a stream handler so that no exception escapes it.

    py-libp2p runs handlers inside the connection's nursery: an exception escaping a handler breaks
    the connection (pitfall 1) and, for pubsub's own handler, can take the whole service down. The
    wrapper logs with the peer id, resets the stream, and lets Cancelled through.
    """

    async def guarded(stream: INetStream) -> None:
        try:
            await handler(stream)
        except Exception as exc:
            try:
                peer = peer_of(stream)
            except Exception:  # a half-built stream may lack its connection; the log still helps
                peer = "?"
            log.warning("%s stream from %s failed: %s; stream reset", protocol, peer, repr(exc)[:300])
            await reset_quietly(stream)

    guarded.ffnode_guarded = True  # type: ignore[attr-defined]
    return guarded


def guard_all(host: Any) -> None:
    """Guard every stream handler the host has that is not guarded yet (services register theirs late)."""
    for protocol, handler in list(host.get_mux().handlers.items()):
        if handler is not None and not getattr(handler, "ffnode_guarded", False):
            host.set_stream_handler(protocol, guard_handler(protocol, handler))


class PerPeerLimit:
    """At most `limit` concurrent server streams per remote peer, and (with `interval`) at most one new one per
    `interval` seconds; a stream over either is reset at once and counted in `refusals` under `name` (logged once a
    minute with the count since: a flood costs the flooder, not the operator's log). Trio-thread state only."""

    def __init__(self, limit: int, refusals: Refusals, name: str, interval: float = 0.0) -> None:
        self.limit, self.interval, self.refusals, self.name = limit, interval, refusals, name
        self.active: dict[str, int] = {}
        self.last: dict[str, float] = {}  # peer -> start of its last stream (kept for peers seen within interval)

    def wrap(self, handler: StreamHandler) -> StreamHandler:
        async def limited(stream: INetStream) -> None:
            peer, now, protocol = peer_of(stream), trio.current_time(), stream.get_protocol()
            if self.active.get(peer, 0) >= self.limit:
                self.refusals.refuse(self.name, f"{peer} opened more than {self.limit} {protocol} streams at once")
                await reset_quietly(stream)
                return
            if now - self.last.get(peer, -self.interval) < self.interval:
                self.refusals.refuse(self.name, f"{peer} opened {protocol} streams faster than one per "
                                     f"{self.interval:.0f} s")  # fmt: skip
                await reset_quietly(stream)
                return
            if self.interval:
                self.last = {p: t for p, t in self.last.items() if now - t < self.interval}  # bounded by the rate
                self.last[peer] = now
            self.active[peer] = self.active.get(peer, 0) + 1
            try:
                await handler(stream)
            finally:
                self.active[peer] -= 1
                if not self.active[peer]:
                    del self.active[peer]

        return limited


# --- sync protocol ---------------------------------------------------------------------------


async def _read_request(stream: INetStream, limit: int) -> bytes:
    """A server reads its one request frame within WRITE_STALL_TIMEOUT: a silent client must not pin a task."""
    with trio.move_on_after(WRITE_STALL_TIMEOUT) as scope:
        return await read_frame(stream, limit)
    assert scope.cancelled_caught
    raise FrameError(f"no request within {WRITE_STALL_TIMEOUT:.0f} s")


async def serve_sync(stream: INetStream, serve_request: Callable[[str, bytes], bytes]) -> None:
    """Server side of one sync exchange; serve_request runs in a worker thread (it may touch disk)."""
    peer = peer_of(stream)
    body = await _read_request(stream, MAX_SYNC_REQUEST)
    # abandon_on_cancel: stop() must not wait for a slow daemon handler; its late result is dropped.
    response = await trio.to_thread.run_sync(serve_request, peer, body, abandon_on_cancel=True)
    await write_frame(stream, response)
    await close_quietly(stream)


async def sync_request(stream: INetStream, body: bytes, max_response: int) -> bytes:
    """Client side: send the request, half-close, read the single response frame."""
    await write_frame(stream, body)
    await stream.close_write()
    response = await read_frame(stream, max_response)
    await close_quietly(stream)
    return response


# --- blob protocol ---------------------------------------------------------------------------


def _pack(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)  # unsigned: key order as written (protocol/README.md)


def _unpack(body: bytes, expected_type: str) -> dict[str, Any]:
    """The same decoding rules as every other message (codec.decode): no duplicate keys, v exactly 1."""
    try:
        message = decode(body, max_bytes=MAX_BLOB_FRAME)
    except WireError as exc:
        raise FrameError(f"undecodable msgpack body: {exc}") from exc
    if not isinstance(message, dict) or message.get("t") != expected_type or not is_version(message.get("v")):
        raise FrameError(f"expected a v1 {expected_type!r} message")
    return message


async def serve_blob(stream: INetStream, open_blob: Callable[[str], Path | None]) -> None:
    """Server side: answer one blob_get with a header and the raw bytes."""
    request = _unpack(await _read_request(stream, MAX_BLOB_FRAME), "blob_get")
    blob_id = request.get("id")
    if not isinstance(blob_id, str) or not BLOB_ID_RE.fullmatch(blob_id):
        raise FrameError("blob_get without a valid 64-char lowercase hex id")
    path = await trio.to_thread.run_sync(open_blob, blob_id, abandon_on_cancel=True)
    if path is None:
        await write_frame(stream, _pack({"t": "blob_hdr", "v": 1, "ok": False, "error": "not found"}))
        await close_quietly(stream)
        return
    # File I/O runs in worker threads so a slow disk never stalls the trio thread's other peers.
    with await trio.to_thread.run_sync(open, path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        await write_frame(stream, _pack({"t": "blob_hdr", "v": 1, "ok": True, "size": size}))
        sent = 0
        while sent < size:
            chunk = await trio.to_thread.run_sync(f.read, min(BLOB_CHUNK, size - sent))
            if not chunk:
                raise BlobError(f"blob {blob_id} file shrank while being sent ({sent} of {size})")
            await write_all(stream, chunk)
            sent += len(chunk)
    await close_quietly(stream)


async def fetch_blob(stream: INetStream, blob_id: str, size: int, dest: Path, stall_timeout: float) -> None:
    """Client side: request blob_id and stream exactly `size` verified bytes into dest.

    Raises BlobError (or FrameError) on any failure; the caller deletes dest. Every read is bounded
    by stall_timeout, so a server that stops sending fails the fetch instead of hanging it.
    """

    async def read_some(n: int) -> bytes:
        with trio.move_on_after(stall_timeout):
            try:
                return await stream.read(n)
            except StreamEOF:
                return b""
        raise BlobError(f"stalled: no bytes for {stall_timeout:g} s")

    await write_frame(stream, _pack({"t": "blob_get", "v": 1, "id": blob_id}))
    await stream.close_write()
    header: dict[str, Any] | None = None
    with trio.move_on_after(stall_timeout):
        header = _unpack(await read_frame(stream, MAX_BLOB_FRAME), "blob_hdr")
    if header is None:
        raise BlobError(f"stalled: no header within {stall_timeout:g} s")
    if header.get("ok") is not True:
        raise BlobError(f"peer refused: {header.get('error', 'no reason given')}")
    if type(header.get("size")) is not int or header["size"] != size:
        raise BlobError(f"peer declares {header.get('size')} bytes, expected {size}")

    digest = hashlib.sha256()
    received = 0
    with await trio.to_thread.run_sync(open, dest, "wb") as f:
        pending = bytearray()
        while received < size:
            chunk = await read_some(min(BLOB_CHUNK, size - received))
            if not chunk:
                raise BlobError(f"stream ended after {received} of {size} bytes")
            received += len(chunk)
            pending += chunk
            # Hash and write ~1 MiB at a time, in the trio thread: about 1 ms per MiB (page-cache
            # write), and measured 20% less CPU per MB than a worker-thread hop per chunk.
            if len(pending) >= BLOB_CHUNK or received == size:
                digest.update(pending)
                f.write(pending)
                pending.clear()
    extra = await read_some(1)
    if extra:
        raise BlobError(f"peer sent more than the declared {size} bytes")
    if digest.hexdigest() != blob_id:
        raise BlobError(f"sha256 mismatch: got {digest.hexdigest()}")
    await close_quietly(stream)
