"""asyncio facade over a py-libp2p host that lives in its own trio thread.

py-libp2p 0.8.1 is trio-only, so each NetHost runs `trio.run()` in a dedicated thread and every
libp2p object is touched only there. This module owns all cross-thread calls:

* asyncio -> trio: `trio_token.run_sync_soon(nursery.start_soon, ...)`; the result comes back with
  `loop.call_soon_threadsafe`, so the asyncio loop never blocks on the trio thread (the one
  exception is the sync `peer_addrs()` lookup). Cancelling the awaiting asyncio caller cancels the
  trio task's scope.
* trio -> asyncio: `loop.call_soon_threadsafe` for on_gossip / on_peer.

Every trio task is started in the host's nursery (started by `start()`, cancelled by `stop()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.address_validation import get_available_interfaces

from ffnode.net import streams
from ffnode.net.conns import (
    DEFAULTS,
    ConnLimits,
    Refusals,
    connection_config,
    guard_inbound,
    leave_dialling_to_discovery,
    resource_manager,
)
from ffnode.net.discovery import own_record
from ffnode.net.relay import Relaying, limit_relay_streams, relay_services

log = logging.getLogger("ffnode.net")
T = TypeVar("T")

# py-libp2p 0.8.1's yamux answers every read with a WINDOW_UPDATE frame (its PY_YAMUX_RELEASE_ON_READ defaults on):
# one more encrypted write and syscall per gossip message received, 15 % of a 64-site node's CPU (py-spy). Off, it
# releases credit as go-yamux does, once half the window is read. Read at each read, so setting it here suffices;
# an operator's own setting wins.
os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")

# Minimum gap between two local publishes. py-libp2p drops bursts silently (32-entry queues) and
# its spam protection accepts 10 msgs/s per topic per forwarding peer by default: 10/s keeps even
# stock py-libp2p peers accepting everything we originate.
PUBLISH_INTERVAL = 0.1
# What our own nodes accept per forwarding peer: a forwarder relays everyone's announcements, so
# the per-peer cap must cover the whole federation's rate, not one node's.
MAX_INBOUND_MSGS_PER_SECOND = 200.0
# Gossipsub mesh degree. The usual bound (D_high = 12) breaks a star: a hub that everyone
# bootstrapped to prunes its mesh down to D, and in py-libp2p 0.8.1 a heartbeat PRUNE carries no
# peer exchange while publishes go to mesh peers only, so a pruned node whose only connection is
# the hub neither sends nor receives gossip (measured: 7 of 15 leaves got nothing). Federations
# are small (tens of sites) and announcements a few KB, so we keep meshes unpruned up to 64 peers.
MESH_DEGREE = 8
MESH_DEGREE_LOW = 6
MESH_DEGREE_HIGH = 64
# Offered gossipsub versions, newest first; /meshsub/1.0.0 keeps old peers able to join.
GOSSIP_PROTOCOLS = [PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID]
# Bootstrap redial backoff (seconds): first retry, cap, and how often a live link is re-checked
# in case a disconnect notification was missed.
BOOTSTRAP_BACKOFF_START = 0.5
BOOTSTRAP_BACKOFF_MAX = 30.0
BOOTSTRAP_RECHECK = 5.0
NEGATIVE_DIAL_CACHE_S = 1.0
# How long a cancelled asyncio caller waits for the trio side to finish its cleanup (reset the
# stream, delete a partial blob) before giving up on it.
CANCEL_CLEANUP_WAIT = 5.0
# Bound on closing connections at stop(); it ends shielded writes blocked on a peer's window.
STOP_DISCONNECT_WAIT = 2.0


class NetError(Exception):
    """A network operation failed; the message names the peer/blob and what failed."""


def check_listen(addrs: Sequence[str | multiaddr.Multiaddr]) -> None:
    """NetError unless every TCP address in `addrs` is free to listen on.

    py-libp2p 0.8.1 binds its listeners with SO_REUSEPORT (transport/tcp/tcp.py, so that hole-punch dials can
    leave from the listen port), and Linux lets a second socket of the same user bind and listen on that port
    beside the first: a second node would start, and inbound connections be split between the two. A socket
    without SO_REUSEPORT cannot bind beside a listening one, whoever holds it, so binding one here (SO_REUSEADDR
    only: connections of an earlier run in TIME_WAIT do not count) tells whether the port is free. Port 0 (any
    free port) always is."""
    for addr in addrs:
        ma = multiaddr.Multiaddr(str(addr))
        protocols = {p.name for p in ma.protocols()}
        if "tcp" not in protocols or not protocols & {"ip4", "ip6"}:
            continue
        v6 = "ip6" in protocols
        family, ip = (socket.AF_INET6 if v6 else socket.AF_INET), ma.value_for_protocol("ip6" if v6 else "ip4")
        port = int(ma.value_for_protocol("tcp"))
        if port == 0:
            continue
        where = f"[{ip}]:{port}" if v6 else f"{ip}:{port}"
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((ip, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    why = f"{where} is in use by another process (another ffnode?)"
                    todo = "stop it, or pick another port (network.listen in the node's config.toml)"
                elif exc.errno == errno.EADDRNOTAVAIL:
                    why, todo = f"{ip} is not an address of this machine", "listen on one of its own addresses"
                elif exc.errno == errno.EACCES:
                    why, todo = f"port {port} needs privileges this process lacks", "pick a port above 1023"
                else:
                    why, todo = f"{where}: {exc.strerror or exc}", "pick another address"
                raise NetError(f"cannot listen on {ma}: {why}: {todo}") from None


@dataclass(frozen=True)
class Handlers:
    """The daemon's callbacks; see each field for the thread it runs on."""

    # (data, origin peer id) -> None to accept, else the rejection reason. Runs in the trio thread
    # (pure CPU, thread-safe, fast). The origin is the message's signer, already authenticated.
    validate_gossip: Callable[[bytes, str], str | None]
    # Accepted messages from other peers; runs on the asyncio loop.
    on_gossip: Callable[[bytes, str], None]
    # (peer id, connected) on the asyncio loop: once when the first connection to a peer opens,
    # once when the last one closes.
    on_peer: Callable[[str, bool], None]
    # (peer id, request body) -> response body for the sync protocol; runs in a worker thread.
    serve_request: Callable[[str, bytes], bytes]
    # Blob id -> file to stream, or None if not served. Thread-safe (runs in a worker thread).
    open_blob: Callable[[str], Path | None]


class _QuietShutdown(logging.Filter):
    """Drops py-libp2p's "[ADDCONN_FAIL] ... Nursery is closed" warning with its traceback: a connection that
    arrives while the host closes, harmless, yet it printed a traceback on every clean stop. And its
    "[ADDCONN_DENY]" line, one per refused attempt: net/conns.py counts those and logs them at a fixed rate."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        closing = msg.startswith("[ADDCONN_FAIL]") and "Nursery is closed" in record.getMessage()
        return not (closing or msg.startswith("[ADDCONN_DENY]"))


logging.getLogger("libp2p.network.swarm").addFilter(_QuietShutdown())


class _Call:
    """Trio-side state of one asyncio -> trio call; touched only in the trio thread."""

    def __init__(self) -> None:
        self.cancelled = False
        self.scope: trio.CancelScope | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


class _ConnectionWatcher(INotifee):
    """Turns swarm connection events into per-peer up/down transitions."""

    def __init__(self, owner: NetHost) -> None:
        self._owner = owner

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._owner._t_conn_opened(conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._owner._t_conn_closed(conn)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


class NetHost:
    """One libp2p peer: gossip on one topic, the sync and blob stream protocols, bootstrap."""

    def __init__(
        self,
        *,
        seed: bytes,
        listen: Sequence[str],
        topic: str,
        handlers: Handlers,
        bootstrap: Sequence[str] = (),
        mdns: bool = False,
        sync_protocol: str = "/ffnode/sync/1.0.0",
        blob_protocol: str = "/ffnode/blob/1.0.0",
        max_gossip_bytes: int = 64 * 1024,
        streams_per_peer: int = 8,
        relaying: Relaying = Relaying(),
        conn_limits: ConnLimits = DEFAULTS,
    ) -> None:
        if len(seed) != 32:
            raise ValueError(f"seed must be 32 bytes, got {len(seed)}")
        if not listen:
            raise ValueError("at least one listen address is needed")
        self._key_pair = create_new_key_pair(seed)
        self._id = ID.from_pubkey(self._key_pair.public_key)
        self._listen = [multiaddr.Multiaddr(a) for a in listen]
        self._topic = topic
        self._handlers = handlers
        self._bootstrap = list(bootstrap)
        self._mdns = mdns
        self._sync_protocol = sync_protocol
        self._blob_protocol = blob_protocol
        self._max_gossip_bytes = max_gossip_bytes
        self._streams_per_peer = streams_per_peer
        self._record: tuple[list[str], bytes | None] | None = None  # (addresses, our signed record of them)
        self._relaying = relaying
        self._conn_limits = conn_limits
        self.refusals = Refusals()  # connections refused by a limit, by limit (net/conns.py)
        self.stream_refusals = Refusals("a stream")  # streams reset by a per-peer limit (net/streams.py)
        self._reserved: dict[str, str] = {}  # relay multiaddr -> our circuit address through it (trio thread writes)

        # Shared between threads: set once by the trio thread before readiness, then read-only.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._addrs: list[str] = []
        # Peers with at least one open connection; written by the trio thread only.
        self._connected: set[str] = set()
        self._stop_lock = threading.Lock()
        self._stopping = False
        self._running = False
        self._ended: asyncio.Event | None = None  # set on the loop when the trio thread ends, for any reason

        # Trio-thread-only state.
        self._host: IHost | None = None
        self._pubsub: Pubsub | None = None
        self._stop_event: trio.Event | None = None
        self._conns: dict[str, set[INetConn]] = {}
        self._paths: dict[str, str] = {}
        self._circuit: CircuitV2Transport | None = None
        self._peer_gone: dict[str, trio.Event] = {}
        self._publish_lock: trio.Lock | None = None
        self._last_publish = float("-inf")
        self._mdns_found: trio.MemorySendChannel[PeerInfo] | None = None

    # --- public facade (asyncio side) --------------------------------------------------------

    @property
    def peer_id(self) -> str:
        return self._id.to_base58()

    @property
    def addrs(self) -> list[str]:
        """Concrete listen multiaddrs with /p2p/<peer_id>; empty before start()."""
        return list(self._addrs)

    async def start(self) -> None:
        """Start the trio thread; return once listening and subscribed to the topic."""
        if self._thread is not None:
            raise NetError(f"host {self.peer_id} was already started")
        check_listen(self._listen)  # py-libp2p would share a port another node listens on (SO_REUSEPORT)
        self._loop = asyncio.get_running_loop()
        self._ended = asyncio.Event()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name=f"ffnode-net-{self.peer_id[-8:]}", daemon=True
        )
        self._thread.start()
        try:
            await ready
        except BaseException:
            # Listening failed, or our caller gave up: leave no thread behind either way.
            await self.stop()
            raise
        self._running = True

    async def stop(self) -> None:
        """Close all connections, end the trio thread and join it. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._running = False
        with self._stop_lock:
            self._stopping = True
            token = self._token
        if token is not None:
            try:
                token.run_sync_soon(self._t_request_stop)
            except trio.RunFinishedError:
                pass  # the trio thread already ended
        await asyncio.get_running_loop().run_in_executor(None, thread.join)

    async def wait_ended(self) -> None:
        """Return when the libp2p thread has ended: after stop(), or when libp2p crashed on its own."""
        if self._ended is None:
            raise NetError(f"host {self.peer_id} was never started")
        await self._ended.wait()

    async def connect(self, addr: str) -> str:
        """Dial a /ip4/../tcp/../p2p/.. multiaddr; return the peer id."""
        return await self._call(f"connect to {addr}", self._t_connect, addr)

    async def dial(self, peer_id: str, addrs: Sequence[str]) -> None:
        """Connect to peer_id at any of addrs (full multiaddrs ending in its /p2p/ id)."""
        await self._call(f"dial of {peer_id}", self._t_dial, peer_id, list(addrs))

    async def hang_up(self, peer_id: str) -> None:
        """Close every connection to peer_id (discovery, over its bound)."""
        await self._call(f"hang-up on {peer_id}", self._t_hang_up, peer_id)

    async def _t_hang_up(self, peer_id: str) -> None:
        assert self._host is not None
        await self._host.disconnect(ID.from_base58(peer_id))

    def record(self) -> bytes | None:
        """Our signed peer record of the addresses peers can dial us at (None while there are none, e.g. behind
        NAT before a relay granted a slot); sealed again when they change."""
        addrs = self.advertised()
        if self._record is None or self._record[0] != addrs:
            self._record = (addrs, own_record(self._key_pair.private_key, addrs))
        return self._record[1]

    def advertised(self) -> list[str]:
        """Where peers can reach us: the listen addresses (unless unreachable), then our relayed addresses."""
        direct = list(self._addrs) if self._relaying.reachable else []
        return direct + sorted(self._reserved.values())

    def connection_paths(self) -> dict[str, str]:
        """peer id -> "direct" or "relayed" (relayed only if every connection to it goes through a relay)."""
        return dict(self._paths)

    async def publish(self, data: bytes) -> None:
        """Publish on the topic; paced to PUBLISH_INTERVAL so bursts are not dropped."""
        if len(data) > self._max_gossip_bytes:
            raise NetError(f"gossip of {len(data)} bytes exceeds the {self._max_gossip_bytes}-byte limit")
        await self._call(f"publish on {self._topic}", self._t_publish, data)

    async def request(self, peer_id: str, body: bytes, *, max_response: int = 16 * 2**20) -> bytes:
        """One request/response exchange with peer_id on the sync protocol."""
        return await self._call(f"sync request to {peer_id}", self._t_request, peer_id, body, max_response)

    async def fetch_blob(
        self, peer_id: str, blob_id: str, size: int, dest: Path, *, stall_timeout: float = 10.0
    ) -> None:
        """Stream blob_id from peer_id into dest, verified (size and sha256); no partial file on error."""
        if not streams.BLOB_ID_RE.fullmatch(blob_id):
            raise NetError(f"invalid blob id {blob_id!r}: need 64 lowercase hex chars")
        await self._call(
            f"fetch of blob {blob_id} from {peer_id}",
            self._t_fetch_blob,
            peer_id,
            blob_id,
            size,
            Path(dest),
            stall_timeout,
        )

    def connected_peers(self) -> list[str]:
        return list(self._connected)

    def peer_addrs(self, peer_id: str) -> list[str]:
        """Known addresses of peer_id (blocks the caller for one trio-thread hop)."""
        token = self._token
        if not self._running or token is None:
            return []
        try:
            return trio.from_thread.run_sync(self._t_peer_addrs, peer_id, trio_token=token)
        except trio.RunFinishedError:
            return []

    def connection_counts(self) -> dict[str, int]:
        """libp2p's own count of open connections (its swarm's metrics: total, inbound, outbound, peers), read in
        the trio thread (one hop); empty while the host is not running."""
        token = self._token
        if not self._running or token is None:
            return {}
        try:
            return trio.from_thread.run_sync(self._t_connection_counts, trio_token=token)
        except trio.RunFinishedError:
            return {}

    # --- cross-thread plumbing ---------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run fn(*args) as a task in the host's trio nursery and await its result.

        Exceptions become NetError naming `what`. If the asyncio caller is cancelled, the trio task
        is cancelled and we wait (bounded) for its cleanup, so a cancelled fetch leaves no file.
        """
        token, nursery, loop = self._token, self._nursery, asyncio.get_running_loop()
        if not self._running or token is None or nursery is None:
            raise NetError(f"{what}: host {self.peer_id} is not running")
        fut: asyncio.Future[T] = loop.create_future()
        call = _Call()

        async def runner() -> None:
            outcome: tuple[BaseException | None, Any] = (NetError(f"{what}: host stopped"), None)
            try:
                if call.cancelled:
                    return
                with trio.CancelScope() as call.scope:
                    try:
                        outcome = (None, await fn(*args))
                    except NetError as exc:
                        outcome = (exc, None)
                    except Exception as exc:
                        error = NetError(f"{what} failed: {exc!r}")
                        error.__cause__ = exc
                        outcome = (error, None)
            finally:
                self._to_loop(_settle, fut, outcome)

        def submit() -> None:
            # Runs in the trio thread. An exception escaping a run_sync_soon callback would crash
            # trio itself, hence the guard for a nursery that is already closing.
            try:
                nursery.start_soon(runner)
            except RuntimeError:
                self._to_loop(_settle, fut, (NetError(f"{what}: host is stopping"), None))

        try:
            token.run_sync_soon(submit)
        except trio.RunFinishedError:
            raise NetError(f"{what}: host {self.peer_id} is not running") from None
        try:
            # shield: our cancellation must not cancel fut, we still want its completion below.
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            try:
                token.run_sync_soon(call.cancel)
            except trio.RunFinishedError:
                pass
            await asyncio.wait({fut}, timeout=CANCEL_CLEANUP_WAIT)
            if fut.done() and not fut.cancelled():
                fut.exception()  # mark retrieved: the caller is gone, nobody else will look
            raise

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Schedule fn(*args) on the asyncio loop from the trio thread."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_run_callback, fn, args)
        except RuntimeError:  # the loop is closed: the daemon is gone, nothing to deliver to
            log.debug("asyncio loop closed; dropped %s%r", getattr(fn, "__name__", fn), args[:1])

    def _thread_main(self, ready: asyncio.Future[None]) -> None:
        try:
            trio.run(self._t_main, ready)
        except BaseException:
            log.exception("libp2p host %s crashed; it no longer serves or connects", self.peer_id)
        finally:
            self._running = False
            # Every on_peer(True) gets its False, even when libp2p died without closing connections.
            for peer in list(self._connected):
                self._to_loop(self._handlers.on_peer, peer, False)
            self._connected.clear()
            # Wakes start() if the thread ended before readiness; a no-op otherwise.
            error = NetError(f"host {self.peer_id} ended while starting on {[str(a) for a in self._listen]}")
            self._to_loop(_settle, ready, (error, None))
            assert self._ended is not None
            self._to_loop(self._ended.set)

    # --- trio side ----------------------------------------------------------------------------

    async def _t_main(self, ready: asyncio.Future[None]) -> None:
        """Build the host, run it until stop(); a failure before readiness goes to start()."""
        self._stop_event = trio.Event()
        self._publish_lock = trio.Lock()
        with self._stop_lock:
            self._token = trio.lowlevel.current_trio_token()
            if self._stopping:
                self._stop_event.set()

        noise = NoiseTransport(self._key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
        host = new_host(
            key_pair=self._key_pair,
            # noise + yamux only: new_host otherwise offers four security transports, and mplex
            # moves blobs 5x slower.
            sec_opt={NOISE_PROTOCOL_ID: noise},
            muxer_opt={YAMUX_PROTOCOL_ID: Yamux},
            listen_addrs=self._listen,
            enable_mDNS=self._mdns,
            resource_manager=resource_manager(self._conn_limits, self.refusals),
            connection_config=connection_config(self._conn_limits),
        )
        guard_inbound(host.get_network(), self._conn_limits, self.refusals)
        leave_dialling_to_discovery(host.get_network())
        gossipsub = GossipSub(
            protocols=GOSSIP_PROTOCOLS,
            degree=MESH_DEGREE,
            degree_low=MESH_DEGREE_LOW,
            degree_high=MESH_DEGREE_HIGH,
            heartbeat_initial_delay=0.1,
            # The library default (120 s) leaves an underfilled mesh unrepaired for minutes. Its adaptive mode
            # would stretch the interval to 30-60 s whenever its health score is low, which an idle federation's
            # always is (no traffic, no scores): off, and every 2 s, so a mesh is repaired within seconds.
            heartbeat_interval=2,
            adaptive_gossip_enabled=False,
            max_messages_per_topic_per_second=MAX_INBOUND_MSGS_PER_SECOND,
        )
        pubsub = Pubsub(host, gossipsub)
        pubsub.set_topic_validator(self._topic, self._t_validate, False)
        # Our two protocols make the node read disk and hold buffers for a peer: at most streams_per_peer
        # of them run for one peer at once (a peer opening 120 streams it never reads cost 2 GB unbounded).
        limit = streams.PerPeerLimit(self._streams_per_peer, self.stream_refusals, "limits.streams_per_peer")
        host.set_stream_handler(
            self._sync_protocol,
            limit.wrap(functools.partial(streams.serve_sync, serve_request=self._handlers.serve_request)),
        )
        host.set_stream_handler(
            self._blob_protocol,
            limit.wrap(functools.partial(streams.serve_blob, open_blob=self._handlers.open_blob)),
        )
        # Guard every stream handler, ours and py-libp2p's own (identify, ping, and the /meshsub/*
        # handler Pubsub registered). An exception escaping a handler lands in the connection's
        # nursery: for ours it breaks that connection; for pubsub's, a malformed RPC such as the 6
        # bytes 05ffffffffff (a protobuf DecodeError it does not catch) takes libp2p down for every
        # peer. Guarded, only the offending stream is reset. Wrapping the entry points covers any
        # other parse bug on the same paths and needs no detect-and-restart logic.
        streams.guard_all(host)
        host.get_network().register_notifee(_ConnectionWatcher(self))
        # py-libp2p refuses, for 60 s, any dial of a peer whose addresses all failed once (a private cache of
        # its swarm). A site that starts a few seconds before its bootstrap node would then sit alone for a
        # minute; our own redial loops back off already, so the cache only needs to absorb a burst.
        negative_cache = getattr(host.get_network(), "_negative_peer_cache", None)
        if negative_cache is not None:
            negative_cache._ttl = NEGATIVE_DIAL_CACHE_S
        self._host, self._pubsub = host, pubsub

        r = self._relaying
        self._circuit, services = relay_services(host, r)

        async with host.run(self._listen):
            try:
                self._addrs = self._t_resolve_addrs(host)
            except NetError as exc:
                self._to_loop(_settle, ready, (exc, None))
                return
            async with contextlib.AsyncExitStack() as running:
                for service in (pubsub, gossipsub, *services):
                    await running.enter_async_context(background_trio_service(service))
                for service in services:
                    await service.event_started.wait()
                limit_relay_streams(host, r, self.stream_refusals)
                streams.guard_all(host)  # the relay and DCUtR handlers registered only now
                await pubsub.wait_until_ready()
                subscription = await pubsub.subscribe(self._topic)
                # Two nurseries: `calls` owns the tasks run for asyncio callers, `background` the
                # host's own loops. At stop the loops go first, so that no bootstrap redial races
                # the disconnects; then connections close, ending any blocked call; then the calls.
                async with trio.open_nursery() as calls:
                    self._nursery = calls
                    async with trio.open_nursery() as background:
                        background.start_soon(self._t_deliver_gossip, subscription)
                        for addr in self._bootstrap:
                            background.start_soon(self._t_keep_connected, addr)
                        for addr in r.relays:
                            background.start_soon(self._t_keep_reserved, addr, background)
                        if self._mdns:
                            await background.start(self._t_mdns_dialer)
                        log.info("host %s listening on %s, topic %s", self.peer_id, self._addrs, self._topic)
                        self._to_loop(_settle, ready, (None, None))
                        await self._stop_event.wait()
                        background.cancel_scope.cancel()
                    await self._t_disconnect_all()
                    calls.cancel_scope.cancel()
        log.info("host %s stopped", self.peer_id)

    def _t_request_stop(self) -> None:
        assert self._stop_event is not None
        self._stop_event.set()

    async def _t_disconnect_all(self) -> None:
        """Close every connection, so that tasks blocked in shielded writes end promptly."""
        assert self._host is not None
        with trio.move_on_after(STOP_DISCONNECT_WAIT):
            for peer in self._host.get_network().connections.copy():
                try:
                    await self._host.disconnect(peer)
                except Exception:  # best effort during shutdown: host.run() closes the rest
                    log.debug("disconnect from %s at stop failed", peer, exc_info=True)

    def _t_resolve_addrs(self, host: IHost) -> list[str]:
        """Concrete addresses we listen on; NetError naming any address that failed to bind.

        py-libp2p only logs a failed bind (e.g. port in use) and runs on without that listener.
        """
        bound = host.get_addrs()
        concrete: list[str] = []
        for wanted in self._listen:
            ip, port = wanted.value_for_protocol("ip4"), int(wanted.value_for_protocol("tcp"))
            matches = [
                a
                for a in bound
                if a.value_for_protocol("ip4") == ip and (port == 0 or int(a.value_for_protocol("tcp")) == port)
            ]
            if not matches:
                raise NetError(f"cannot listen on {wanted}")
            for a in matches:
                actual_port = int(a.value_for_protocol("tcp"))
                if ip == "0.0.0.0":
                    # A wildcard address is not dialable: advertise each IPv4 interface instead.
                    for iface in get_available_interfaces(actual_port):
                        if str(iface).startswith("/ip4/"):
                            concrete.append(f"{iface}/p2p/{self.peer_id}")
                else:
                    concrete.append(str(a))
        return list(dict.fromkeys(concrete))

    def _t_conn_opened(self, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id.to_base58()
        conns = self._conns.setdefault(peer, set())
        conns.add(conn)
        self._t_update_path(peer)
        if peer not in self._connected:
            self._connected.add(peer)
            log.info("peer %s connected (%s)", peer, self._paths.get(peer))
            self._to_loop(self._handlers.on_peer, peer, True)

    def _t_conn_closed(self, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id.to_base58()
        conns = self._conns.get(peer, set())
        conns.discard(conn)
        self._t_update_path(peer)
        if conns or peer not in self._connected:
            return
        self._conns.pop(peer, None)
        self._connected.discard(peer)
        log.info("peer %s disconnected", peer)
        gone = self._peer_gone.pop(peer, None)
        if gone is not None:
            gone.set()
        self._to_loop(self._handlers.on_peer, peer, False)

    def _t_update_path(self, peer: str) -> None:
        paths = {_path_of(c) for c in self._conns.get(peer, ())}
        old = self._paths.get(peer)
        new = ("direct" if "direct" in paths else "relayed") if paths else None
        if new is None:
            self._paths.pop(peer, None)
        else:
            self._paths[peer] = new
        if old and new and old != new:
            log.info("connection to %s is now %s", peer, new)  # a hole punch worked, or the direct link went

    def _t_validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Pubsub topic validator: size limit, then the daemon's validate_gossip.

        Runs after py-libp2p checked the signature, so msg.from_id is the authenticated signer.
        Our own publishes pass (publish() checked their size; the daemon vouches for them).
        """
        if forwarder == self._id:
            return True
        try:
            origin = ID(msg.from_id).to_base58()
        except Exception:
            log.warning("dropped gossip forwarded by %s: unreadable origin id", forwarder)
            return False
        if len(msg.data) > self._max_gossip_bytes:
            log.warning(
                "dropped gossip from %s (via %s): %d bytes exceeds the %d-byte limit",
                origin,
                forwarder,
                len(msg.data),
                self._max_gossip_bytes,
            )
            return False
        try:
            reason = self._handlers.validate_gossip(msg.data, origin)
        except Exception:
            log.exception("validate_gossip raised on a message from %s; rejected", origin)
            return False
        if reason is not None:
            log.warning("rejected gossip from %s (via %s): %s", origin, forwarder, reason[:300],
                        extra={"peer": origin, "via": forwarder})  # fmt: skip
            return False
        return True

    async def _t_deliver_gossip(self, subscription: Any) -> None:
        """Hand accepted messages from other peers to the asyncio loop."""
        while True:
            msg = await subscription.get()
            origin = ID(msg.from_id)
            if origin == self._id:
                continue  # the daemon knows what it published
            self._to_loop(self._handlers.on_gossip, msg.data, origin.to_base58())

    async def _t_keep_connected(self, addr: str) -> None:
        """Dial a bootstrap peer until connected, and again after a drop once this node holds no other connection:
        a node with peers has discovery to keep it in the federation, and a bootstrap node that every site
        redialled at once after it hung up on them (over `network.max_peers`) would never settle."""
        assert self._host is not None
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            log.error("ignoring bootstrap address %r: %s", addr, exc)
            return
        peer = info.peer_id.to_base58()
        backoff, first = BOOTSTRAP_BACKOFF_START, True  # first: not yet connected to it since the start
        while True:
            # Taken before dialling, so a drop right after the dial still wakes us.
            gone = self._peer_gone.setdefault(peer, trio.Event())
            if peer not in self._connected and (first or not self._connected):
                try:
                    await self._host.connect(info)
                except Exception as exc:
                    backoff = await _retry_later(f"bootstrap dial {addr}", exc, backoff)
                    continue
            first = first and peer not in self._connected
            backoff = BOOTSTRAP_BACKOFF_START
            with trio.move_on_after(BOOTSTRAP_RECHECK):
                await gone.wait()

    async def _t_mdns_dialer(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dial peers that mDNS discovers; py-libp2p only records them in the peerstore."""
        assert self._host is not None and self._token is not None
        send, receive = trio.open_memory_channel[PeerInfo](64)
        token = self._token

        def on_discovered(info: PeerInfo) -> None:
            # Called on zeroconf's thread: hop into trio without blocking; a full queue only
            # loses a rediscovery that mDNS repeats anyway.
            def put() -> None:
                try:
                    send.send_nowait(info)
                except (trio.WouldBlock, trio.ClosedResourceError):
                    pass

            try:
                token.run_sync_soon(put)
            except trio.RunFinishedError:
                pass

        # peerDiscovery is a process-wide singleton: unregister, or a stopped host keeps receiving.
        peerDiscovery.register_peer_discovered_handler(on_discovered)
        try:
            task_status.started()
            async with receive:
                async for info in receive:
                    peer = info.peer_id.to_base58()
                    if peer == self.peer_id or peer in self._connected:
                        continue
                    try:
                        await self._host.connect(info)
                    except Exception as exc:
                        log.info("dial of mDNS-discovered peer %s failed: %s", peer, exc)
        finally:
            peerDiscovery.unregister_peer_discovered_handler(on_discovered)

    async def _t_connect(self, addr: str) -> str:
        assert self._host is not None
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            raise NetError(f"connect to {addr}: not a /p2p/ multiaddr ({exc})") from exc
        try:
            await self._host.connect(info)
        except Exception as exc:
            raise NetError(f"connect to {addr} failed: {exc!r}") from exc
        return info.peer_id.to_base58()

    async def _t_dial(self, peer_id: str, addrs: list[str]) -> None:
        """Direct addresses first (one connect over all of them), then each relayed one through its relay."""
        assert self._host is not None and self._circuit is not None
        try:
            peer = ID.from_base58(peer_id)
            maddrs = [multiaddr.Multiaddr(a) for a in addrs]
        except Exception as exc:
            raise NetError(f"dial of {peer_id}: bad peer id or address ({exc})") from exc
        direct = [a for a in maddrs if "/p2p-circuit" not in str(a)]
        errors = []
        if direct:
            try:
                await self._host.connect(PeerInfo(peer, direct))
                return
            except Exception as exc:
                errors.append(repr(exc))
        for relayed in (a for a in maddrs if "/p2p-circuit" in str(a)):
            # py-libp2p's swarm refuses /p2p-circuit addresses: the relay transport dials and registers the
            # connection itself
            try:
                await self._circuit.dial(relayed)
                return
            except Exception as exc:
                errors.append(f"via relay: {exc!r}")
        raise NetError(f"dial of {peer_id} failed: {'; '.join(errors) or 'no address'}")

    async def _t_keep_reserved(self, addr: str, nursery: trio.Nursery) -> None:
        """Hold a reservation on a relay: connect, reserve (py-libp2p refreshes it before expiry), and reserve
        again whenever the connection to the relay was lost."""
        assert self._host is not None and self._circuit is not None
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            log.error("ignoring relay address %r: %s", addr, exc)
            return
        relay, backoff = info.peer_id.to_base58(), BOOTSTRAP_BACKOFF_START
        while True:
            gone = self._peer_gone.setdefault(relay, trio.Event())
            try:
                if relay not in self._connected:
                    await self._host.connect(info)
                stream = await self._host.new_stream(info.peer_id, [HOP_PROTOCOL_ID])
                try:
                    reserved = await self._circuit.reserve(stream, info.peer_id, nursery)
                finally:
                    await streams.close_quietly(stream)
                if not reserved:
                    raise NetError("the relay refused a reservation")
            except Exception as exc:
                backoff = await _retry_later(f"reservation on relay {addr}", exc, backoff)
                continue
            granted = trio.current_time()
            self._reserved[addr] = f"{addr}/p2p-circuit"
            log.info("reserved a slot on relay %s: reachable at %s/p2p/%s", relay, self._reserved[addr], self.peer_id)
            await gone.wait()
            self._reserved.pop(addr, None)
            log.info("lost the connection to relay %s: reserving again", relay)
            if trio.current_time() - granted < BOOTSTRAP_BACKOFF_MAX:  # a relay that keeps dropping us: back off
                backoff = await _retry_later(f"the reservation on relay {addr}", NetError("dropped"), backoff)
            else:
                backoff = BOOTSTRAP_BACKOFF_START

    async def _t_publish(self, data: bytes) -> None:
        assert self._pubsub is not None and self._publish_lock is not None
        async with self._publish_lock:
            await trio.sleep_until(self._last_publish + PUBLISH_INTERVAL)
            # Shielded: publish only queues RPCs, and a half-run publish is worse than a late one.
            with trio.CancelScope(shield=True):
                await self._pubsub.publish(self._topic, data)
            self._last_publish = trio.current_time()

    async def _t_open_stream(self, peer_id: str, protocol: str) -> INetStream:
        assert self._host is not None
        try:
            peer = ID.from_base58(peer_id)
        except Exception as exc:
            raise NetError(f"invalid peer id {peer_id!r}") from exc
        try:
            return await self._host.new_stream(peer, [protocol])
        except Exception as exc:
            raise NetError(f"cannot open {protocol} stream to {peer_id}: {exc!r}") from exc

    async def _t_request(self, peer_id: str, body: bytes, max_response: int) -> bytes:
        stream = await self._t_open_stream(peer_id, self._sync_protocol)
        try:
            return await streams.sync_request(stream, body, max_response)
        except Exception as exc:
            await streams.reset_quietly(stream)
            raise NetError(f"sync request to {peer_id} failed: {exc!r}") from exc
        except BaseException:
            await streams.reset_quietly(stream)
            raise

    async def _t_fetch_blob(self, peer_id: str, blob_id: str, size: int, dest: Path, stall_timeout: float) -> None:
        stream = await self._t_open_stream(peer_id, self._blob_protocol)
        try:
            await streams.fetch_blob(stream, blob_id, size, dest, stall_timeout)
        except BaseException as exc:
            await streams.reset_quietly(stream)
            with trio.CancelScope(shield=True):  # also on cancellation: no partial file, ever
                await trio.to_thread.run_sync(functools.partial(dest.unlink, missing_ok=True))
            if isinstance(exc, Exception):
                raise NetError(f"fetch of blob {blob_id} from {peer_id} failed: {exc}") from exc
            raise

    def _t_connection_counts(self) -> dict[str, int]:
        assert self._host is not None
        return {k: int(v) for k, v in self._host.get_network().get_metrics().items()}

    def _t_peer_addrs(self, peer_id: str) -> list[str]:
        assert self._host is not None
        try:
            addrs = self._host.get_peerstore().addrs(ID.from_base58(peer_id))
        except Exception:  # unknown or malformed peer id: no known addresses
            return []
        return [str(a) if "/p2p/" in str(a) else f"{a}/p2p/{peer_id}" for a in addrs]


async def _retry_later(what: str, exc: Exception, backoff: float) -> float:
    """Log a failed attempt, wait `backoff` seconds, return the next wait (doubled, capped)."""
    log.info("%s failed (%s); retrying in %.1f s", what, exc, backoff)
    await trio.sleep(backoff)
    return min(backoff * 2, BOOTSTRAP_BACKOFF_MAX)


def _path_of(conn: INetConn) -> str:
    try:
        addrs = [str(a) for a in conn.get_transport_addresses()]
    except Exception:  # a half-open connection: count it as direct, the next event corrects it
        return "direct"
    return "relayed" if any("/p2p-circuit" in a for a in addrs) else "direct"


def _settle(fut: asyncio.Future[Any], outcome: tuple[BaseException | None, Any]) -> None:
    """Resolve fut on the asyncio loop, unless its awaiter was cancelled meanwhile."""
    if fut.done():
        return
    error, result = outcome
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


def _run_callback(fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    """Run a daemon callback on the loop; its exceptions are logged, not lost in the loop."""
    try:
        fn(*args)
    except Exception:
        log.exception("%s%r raised", getattr(fn, "__qualname__", fn), args[:1])
