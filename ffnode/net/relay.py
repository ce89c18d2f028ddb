"""Circuit relay v2 and DCUtR as ffnode runs them: the settings, py-libp2p's relay with two holes closed, and
per-peer limits on the streams these protocols open (the library has none).

A relay carries only Noise-encrypted bytes between two peers: it can refuse or cut a circuit, never read or alter
what travels in it (artifacts are signed end to end anyway). Runs in the host's trio thread (host.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import multiaddr
from libp2p.abc import IHost, INetStream
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.dcutr import PROTOCOL_ID as DCUTR_PROTOCOL_ID
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID, CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport

from ffnode.net import streams
from ffnode.net.conns import Refusals

log = logging.getLogger("ffnode.net")

# DCUtR's direct dial before it tries a simultaneous open; a dropped SYN otherwise costs the library's 10 s.
HOLE_PUNCH_DIAL_S = 5
# One hole-punch session per peer at a time and per this many seconds: each makes us dial addresses it names.
HOLE_PUNCH_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Relaying:
    """Which relays this node reserves a slot on, whether it is reachable directly, and, if it relays for others,
    how much."""

    relays: tuple[
        str, ...
    ] = ()  # full multiaddrs of relays to keep a reservation on (only they may open circuits to us)
    reachable: bool = True  # False: advertise only relayed addresses (behind NAT, no inbound connections)
    hole_punch: bool = True  # DCUtR: try to turn a relayed connection into a direct one
    serve: bool = False  # relay for others
    serve_for: tuple[str, ...] = ()  # peer IDs that may reserve a slot here; empty: anyone
    reservations: int = 64  # peers holding a slot on this relay at once
    circuits_per_peer: int = 8  # relayed connections to one reserved peer at once
    circuit_mb: int = 16384  # bytes one relayed connection may carry, both ways (py-libp2p: 0 is not unlimited)


class _Circuits(CircuitV2Protocol):
    """py-libp2p's circuit relay v2 with two holes closed: a reservation is made in the name of the connection's
    peer (the library trusts a peer ID inside the message, so one connection could fill every slot with made-up
    IDs), only `serve_for` may reserve when it is set, and only our own relays may open a circuit to us (the
    library accepts one from any peer, and each is a new "peer" of the attacker's choosing)."""

    def __init__(self, host: IHost, relaying: Relaying, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._serve_for = set(relaying.serve_for)
        self._our_relays = {info_from_p2p_addr(multiaddr.Multiaddr(a)).peer_id for a in relaying.relays}

    async def _handle_reserve(self, stream: INetStream, msg: HopMessage) -> None:
        msg.ClearField("peer")  # the library then uses the connection's peer
        peer = stream.muxed_conn.peer_id
        if self._serve_for and peer.to_base58() not in self._serve_for:
            log.warning("refused a relay reservation of %s: not in network.relay_for", peer)
            await streams.reset_quietly(stream)
            return
        await super()._handle_reserve(stream, msg)

    async def _handle_stop_stream(self, stream: INetStream) -> None:
        relay = stream.muxed_conn.peer_id
        if relay not in self._our_relays:
            log.warning("refused a relayed connection offered by %s: not one of network.relays", relay)
            await streams.reset_quietly(stream)
            return
        await super()._handle_stop_stream(stream)


def relay_services(host: IHost, r: Relaying) -> tuple[CircuitV2Transport, list[Any]]:
    """The circuit transport (dials /p2p-circuit addresses, makes reservations) and the services the host runs:
    the relay protocol, and DCUtR where hole punching is on."""
    relay = _Circuits(
        host,
        r,
        limits=RelayLimits(
            duration=0,  # a circuit lives as long as its connection: federations hold links for hours
            data=r.circuit_mb * 2**20,
            max_circuit_conns=r.circuits_per_peer,
            max_reservations=r.reservations,
        ),
        allow_hop=r.serve,
    )
    roles = RelayRole.STOP | RelayRole.CLIENT | (RelayRole.HOP if r.serve else RelayRole(0))
    services = [relay] + ([DCUtRProtocol(host, dial_timeout=HOLE_PUNCH_DIAL_S)] if r.hole_punch else [])
    return CircuitV2Transport(host, relay, RelayConfig(roles=roles)), services


def limit_relay_streams(host: IHost, r: Relaying, refused: Refusals) -> None:
    """Per-peer stream limits on the relay and hole-punch protocols, once their services registered them:
    circuits through this relay per source peer, and one hole-punch session per peer at a time and per minute."""
    handlers, circuits = host.get_mux().handlers, r.circuits_per_peer
    limits = {
        HOP_PROTOCOL_ID: streams.PerPeerLimit(circuits, refused, "relay.circuits_per_peer"),
        STOP_PROTOCOL_ID: streams.PerPeerLimit(circuits, refused, "relay.circuits_per_peer"),
        DCUTR_PROTOCOL_ID: streams.PerPeerLimit(1, refused, "hole punches per peer", HOLE_PUNCH_INTERVAL_S),
    }
    for protocol, limit in limits.items():
        if handlers.get(protocol) is not None:
            host.set_stream_handler(protocol, limit.wrap(handlers[protocol]))
