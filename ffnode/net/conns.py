"""How many connections one host can make a node hold: py-libp2p's own bounds, and the inbound handler they need.

    limits.connections           connections in all: the swarm's `max_connections` (checked as a connection is
                                 registered) and the resource manager's count, which includes handshakes under way
                                 and so gets room for `inbound_connections` more
    limits.connections_per_peer  connections of one peer ID (the swarm's; it trims a peer's extras after 20 s)
    limits.inbound_connections   accepted connections at once, handshakes included
    limits.connections_per_ip    accepted connections of one remote IP at once, handshakes included (peer IDs cost
                                 nothing to make, so the per-peer bound alone binds nobody)

The last two are counted by ffnode's inbound handler (`guard_inbound`), which replaces py-libp2p 0.8.1's: that one
held each accepted connection's slot until the whole swarm ended, so after 250 accepted connections in a node's
life every new one was refused before its handshake. Ours counts a connection from its arrival to its close, with
no await between the check and the count, so simultaneous arrivals cannot all pass; it sees only direct inbound
connections (outbound dials and relayed circuits are not an IP's). Graceful degradation (which lowers the limits
each time they are reached, for good) is off. py-libp2p's `ConnectionLimits` are not used: in 0.8.1 each
connection they refuse leaks a unit of the resource manager's count, so a peer dialling past them could wedge the
node (and `add_conn` is wrapped to close the scope of any connection it refuses, for the same reason). A refused
connection is counted by limit and logged at most once a minute per limit, with the count since.

Who dials is discovery's alone (`network.max_peers` members, net/discovery.py): py-libp2p 0.8.1's swarm also runs an
AutoConnector that dials every peer in the peerstore until it holds the midpoint of its watermarks (178 here), which
at 64 sites gave each node 46-63 connections and the nodes 1.6 of the machine's 2 cores. `leave_dialling_to_discovery`
keeps it from starting. (The library's pruner cannot trim instead: it spares any connection with an open stream, and
gossipsub keeps one open on each.)
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any

from libp2p.network.config import ConnectionConfig
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.swarm import Swarm
from libp2p.rcmgr import ResourceLimits, ResourceManager
from multiaddr import Multiaddr

log = logging.getLogger("ffnode.net")

LOG_EVERY_S = 60.0  # one line per limit at most this often


@dataclass(frozen=True)
class ConnLimits:
    """The bounds above, as the node's [limits] give them."""

    total: int = 256
    inbound: int = 128
    per_peer: int = 4
    per_ip: int = 64


DEFAULTS = ConnLimits()


class Refusals:
    """Connections or streams refused, by limit (the trio thread counts; status and /metrics copy the counter)."""

    def __init__(self, what: str = "a connection") -> None:
        self.what = what
        self.counts: collections.Counter[str] = collections.Counter()
        self._logged: dict[str, tuple[float, int]] = {}  # limit -> (when last logged, count then)

    def refuse(self, limit: str, detail: str = "") -> None:
        """`limit` is one of a few fixed names (a metrics label); `detail` (who, how many) goes to the log only."""
        self.counts[limit] += 1
        now, n = time.monotonic(), self.counts[limit]
        last, then = self._logged.get(limit, (float("-inf"), 0))
        if now - last >= LOG_EVERY_S:
            more = f"; {n - then - 1} more since the last line" if n - then > 1 else ""
            log.warning("refused %s: %s%s%s", self.what, limit, f" ({detail})" if detail else "", more)
            self._logged[limit] = (now, n)


class _Manager(ResourceManager):
    """py-libp2p's resource manager, telling `refusals` what it blocks (never raising into it: an exception there
    would count against its circuit breaker)."""

    def __init__(self, refusals: Refusals, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._refusals = refusals

    def _record_blocked_resource(self, resource_type: str, direction: str = "unknown", scope: str = "system") -> None:
        super()._record_blocked_resource(resource_type, direction, scope)
        try:
            self._refusals.refuse(f"limits.connections ({scope} {resource_type})", direction)
        except Exception:  # noqa: BLE001 - counting must not refuse connections
            log.exception("counting a refused connection failed")


def resource_manager(limits: ConnLimits, refusals: Refusals) -> ResourceManager:
    return _Manager(
        refusals,
        limits=ResourceLimits(max_connections=limits.total + limits.inbound, max_streams=64 * limits.total),
        enable_graceful_degradation=False,
    )


def connection_config(limits: ConnLimits) -> ConnectionConfig:
    """The swarm's own settings at its defaults, but for the total and per-peer bounds (its watermarks must not
    exceed the total)."""
    d = ConnectionConfig()
    low = min(d.low_watermark, limits.total)
    return ConnectionConfig(
        max_connections=limits.total, high_watermark=limits.total, low_watermark=low,
        min_connections=min(d.min_connections, low), max_connections_per_peer=limits.per_peer,
    )  # fmt: skip


class InboundGuard:
    """The inbound handler: counts each accepted connection, and its IP's, from arrival to close (trio thread)."""

    def __init__(self, swarm: Swarm, limits: ConnLimits, refusals: Refusals) -> None:
        self.swarm, self.limits, self.refusals = swarm, limits, refusals
        self.inbound = 0
        self.by_ip: collections.Counter[str] = collections.Counter()

    async def handle(self, read_write_closer: Any, maddr: Multiaddr) -> None:
        remote = self.swarm._build_remote_multiaddr(read_write_closer)
        ip = ip_of(remote) if remote is not None else None
        if self.inbound >= self.limits.inbound:
            self.refusals.refuse("limits.inbound_connections", f"{self.inbound} held")
            await _close(read_write_closer)
            return
        if ip is not None and self.by_ip[ip] >= self.limits.per_ip:
            self.refusals.refuse("limits.connections_per_ip", f"{ip} holds {self.by_ip[ip]}")
            await _close(read_write_closer)
            return
        self.inbound += 1  # no await since the checks: arrivals at the same moment cannot all pass
        if ip is not None:
            self.by_ip[ip] += 1
        try:
            await self._serve(read_write_closer, maddr, remote)
        finally:
            self.inbound -= 1
            if ip is not None:
                self.by_ip[ip] -= 1
                if not self.by_ip[ip]:
                    del self.by_ip[ip]

    async def _serve(self, read_write_closer: Any, maddr: Multiaddr, remote: Multiaddr | None) -> None:
        """py-libp2p's own steps for a TCP connection (its gate, the upgrade), then a wait that ends with the
        connection, not with the swarm."""
        if remote is not None and not await self.swarm.connection_gate.is_allowed(remote):
            await _close(read_write_closer)
            return
        raw_conn = RawConnection(read_write_closer, False)
        try:
            muxed = await self.swarm.upgrade_inbound_raw_conn(raw_conn, maddr)
        except Exception as exc:  # noqa: BLE001 - a failed upgrade ends this connection, as the library's does
            log.debug("an inbound connection from %s failed its upgrade: %s", remote, exc)
            await _close(raw_conn)
            return
        await muxed.event_closed.wait()  # Yamux, the only muxer the node offers, sets it however the connection ends


def guard_inbound(swarm: Swarm, limits: ConnLimits, refusals: Refusals) -> InboundGuard:
    """Make `swarm` accept through an InboundGuard, and close the resource scope of any connection its `add_conn`
    refuses (py-libp2p 0.8.1 leaves it open: a unit of its count lost for good each time)."""
    guard = InboundGuard(swarm, limits, refusals)
    swarm._handle_inbound_connection = guard.handle  # type: ignore[method-assign]
    add_conn = swarm.add_conn

    async def add_conn_closing_scope(muxed_conn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await add_conn(muxed_conn, *args, **kwargs)
        except BaseException as exc:
            if (scope := getattr(muxed_conn, "_resource_scope", None)) is not None:
                scope.close()  # idempotent: a connection that got as far as its SwarmConn released it already
            if isinstance(exc, Exception) and any(w in str(exc).lower() for w in ("denied", "limit")):
                refusals.refuse("limits.connections (at registration)", str(exc)[:120])
            raise

    swarm.add_conn = add_conn_closing_scope  # type: ignore[method-assign]
    return guard


def leave_dialling_to_discovery(swarm: Swarm) -> None:
    """Keep the swarm's AutoConnector from starting (before the swarm runs): it is never `_started`, so its periodic
    task and its dial on each disconnect return at once."""

    async def not_started() -> None:
        return None

    swarm.auto_connector.start = not_started  # type: ignore[method-assign]


def ip_of(addr: Multiaddr) -> str | None:
    for proto in ("ip4", "ip6"):
        try:
            return str(ipaddress.ip_address(addr.value_for_protocol(proto)))
        except Exception:  # noqa: BLE001 - not in this address (py-libp2p raises its own kinds)
            continue
    return None


async def _close(conn: Any) -> None:
    try:
        await conn.close()
    except Exception:  # noqa: BLE001 - closing what failed: nothing more to do
        pass
