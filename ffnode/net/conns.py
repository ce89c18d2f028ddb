"""How many connections one host can make a node hold, bounded by py-libp2p's own resource manager.

    limits.connections           connections in all (the resource manager's established total; its global count,
                                 which includes handshakes under way, gets room for `inbound_connections` more)
    limits.inbound_connections   accepted connections at once, handshakes included (the swarm's inbound limiter)
    limits.connections_per_peer  connections of one peer ID (the resource manager's)
    limits.connections_per_ip    connections of one remote IP address, checked before the handshake (a gate of
                                 ours: peer IDs cost nothing to make, so the per-peer bound alone binds nobody)

Two things in py-libp2p 0.8.1 are set aside. Graceful degradation lowers the limits each time they are reached,
for good: off. And its inbound handler holds its slot until the whole swarm ends, not the connection, so after
`inbound_connections` accepted connections over a node's life every new one was refused before its handshake
(`hold_slot_per_connection`). A refused connection is counted by reason and logged, at most once a minute per
reason with the count since, so a flood costs log lines at a fixed rate.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.network.config import ConnectionConfig
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.connection_gate import ConnectionGate
from libp2p.network.swarm import Swarm
from libp2p.rcmgr import ResourceLimits, ResourceManager
from libp2p.rcmgr.connection_limits import ConnectionLimits
from multiaddr import Multiaddr

log = logging.getLogger("ffnode.net")

LOG_EVERY_S = 60.0  # one line per reason at most this often


class Refusals:
    """Connections refused, by reason; thread-safe enough for counters (the trio thread writes, others read)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._logged: dict[str, tuple[float, int]] = {}  # reason -> (when last logged, count then)

    def refuse(self, reason: str, detail: str = "") -> None:
        """`reason` is one of a few fixed kinds (a metrics label); `detail` (who, how many) goes to the log only."""
        self.counts[reason] += 1
        now, n = time.monotonic(), self.counts[reason]
        last, then = self._logged.get(reason, (float("-inf"), 0))
        if now - last >= LOG_EVERY_S:
            more = f"; {n - then - 1} more since the last line" if n - then > 1 else ""
            log.warning("refused a connection: %s%s%s", reason, f" ({detail})" if detail else "", more)
            self._logged[reason] = (now, n)


class _Manager(ResourceManager):
    """py-libp2p's resource manager, telling `refusals` what it blocks."""

    def __init__(self, refusals: Refusals, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._refusals = refusals

    def _record_blocked_resource(self, resource_type: str, direction: str = "unknown", scope: str = "system") -> None:
        super()._record_blocked_resource(resource_type, direction, scope)
        self._refusals.refuse(f"the {scope} limit on {resource_type} ({direction})")


class PerIpGate(ConnectionGate):
    """The swarm's gate (asked before an inbound handshake), also refusing an IP that holds `per_ip` connections."""

    def __init__(self, per_ip: int, refusals: Refusals) -> None:
        super().__init__()
        self.per_ip, self._refusals = per_ip, refusals
        self.held: collections.Counter[str] = collections.Counter()  # remote IP -> open connections

    async def is_allowed(self, remote_addr: Multiaddr) -> bool:
        ip = ip_of(remote_addr)
        if ip is not None and self.held[ip] >= self.per_ip:
            self._refusals.refuse("limits.connections_per_ip", f"{ip} holds {self.held[ip]}")
            return False
        return await super().is_allowed(remote_addr)

    def opened(self, conn: Any) -> None:
        if (ip := _conn_ip(conn)) is not None:
            self.held[ip] += 1

    def closed(self, conn: Any) -> None:
        if (ip := _conn_ip(conn)) is not None and self.held[ip] > 0:
            self.held[ip] -= 1
            if not self.held[ip]:
                del self.held[ip]


def ip_of(addr: Multiaddr) -> str | None:
    for proto in ("ip4", "ip6"):
        try:
            return str(ipaddress.ip_address(addr.value_for_protocol(proto)))
        except Exception:  # noqa: BLE001 - not in this address (py-libp2p raises its own kinds)
            continue
    return None


def _conn_ip(conn: Any) -> str | None:
    try:
        remote = conn.muxed_conn.get_remote_address()
        return str(ipaddress.ip_address(remote[0])) if remote else None
    except (AttributeError, TypeError, ValueError, IndexError):
        return None  # a relayed connection, or one without an address: counted by the relay's own limits


def resource_manager(limits: ConnLimits, refusals: Refusals) -> ResourceManager:
    return _Manager(
        refusals,
        limits=ResourceLimits(max_connections=limits.total + limits.inbound, max_streams=64 * limits.total),
        connection_limits=ConnectionLimits(
            max_established_total=limits.total,
            max_established_inbound=limits.inbound,
            max_established_per_peer=limits.per_peer,
        ),
        enable_graceful_degradation=False,
    )


@dataclass(frozen=True)
class ConnLimits:
    """The bounds above, as the node's [limits] give them."""

    total: int = 256
    inbound: int = 128
    per_peer: int = 4
    per_ip: int = 64


DEFAULTS = ConnLimits()


def connection_config(limits: ConnLimits) -> ConnectionConfig:
    """The swarm's own settings at its defaults, but for the total and per-peer bounds (its watermarks must not
    exceed the total)."""
    d = ConnectionConfig()
    low = min(d.low_watermark, limits.total)
    return ConnectionConfig(
        max_connections=limits.total, high_watermark=limits.total, low_watermark=low,
        min_connections=min(d.min_connections, low), max_connections_per_peer=limits.per_peer,
    )  # fmt: skip


def hold_slot_per_connection(swarm: Swarm, inbound: int, gate: PerIpGate) -> None:
    """Install `gate`, size the inbound limiter, and make an accepted connection's handler (which holds its inbound
    slot) end when that connection closes, not when the swarm does. The handler is py-libp2p's own for TCP, gate
    check, upgrade, then a wait: only the wait differs."""
    swarm.connection_gate = gate
    swarm._inbound_limiter = trio.CapacityLimiter(inbound)

    async def handle(read_write_closer: Any, maddr: Multiaddr, failure_event: Any) -> None:
        remote = swarm._build_remote_multiaddr(read_write_closer)
        if remote is not None and not await swarm.connection_gate.is_allowed(remote):
            await _close(read_write_closer)
            return
        raw_conn = RawConnection(read_write_closer, False)
        try:
            muxed = await swarm.upgrade_inbound_raw_conn(raw_conn, maddr)
        except Exception as exc:  # noqa: BLE001 - the library's failed upgrades, as it handles them
            log.debug("inbound connection from %s failed its upgrade: %s", remote, exc)
            await _close(raw_conn)
            return
        closed: Callable[[], Any] | None = getattr(getattr(muxed, "event_closed", None), "wait", None)
        await (closed() if closed is not None else swarm.manager.wait_finished())

    swarm._do_handle_inbound_connection = handle  # type: ignore[method-assign]


async def _close(conn: Any) -> None:
    try:
        await conn.close()
    except Exception:  # noqa: BLE001 - closing what failed: nothing more to do
        pass
