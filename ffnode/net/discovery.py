"""Discovery: from one bootstrap address to the whole federation, with addresses signed by the peer they describe.

Over the sync protocol a node answers a `peers_req` with its own signed peer record and the records of the
federation members it is connected to now (a member: a peer that answered an inventory request for this
federation). A record is libp2p's routing record (RFC 0003: a protobuf `Envelope` in the domain
"libp2p-peer-record", payload type 0x0301, around a `PeerRecord` with the peer ID, a sequence number and
addresses), so an address can be forged only by the peer it names, and any libp2p implementation can read it.
A node dials what it learns until it holds `max_peers` connections (the target degree: every member, in a
federation of up to that many sites), redials lost members with backoff, and keeps the records of members it
was connected to on disk, so that a restart needs neither the bootstrap node nor anyone it named. Members that
dial it count too: above `max_peers + TRIM_SLACK` members connected it hangs up on members connected longer than
TRIM_GRACE_S (never its relays) down to `max_peers` (the dialling's count: with two counts one undoes the other),
and does not dial those again for TRIM_BACKOFF_S; a peer whose connection ended is not redialled by this node for
REDIAL_AFTER_LOSS_S either (it may have hung up on us; if it restarted, it dials us). (At 64 sites that all start
at once, every node dialled 32 and was dialled by as many: 46-63 connections each, and a node's CPU grows with its
connections.)

What a peer can make a node spend here: at most `MAX_RECORDS` records per response and `MAX_ADDRS`
addresses per record; at most `records_per_peer` records learnt through one peer of peers that are not (yet)
members; a book of `peer_records` entries (only non-members are ever evicted); `DIALS_PER_ROUND` dials every
`DIAL_INTERVAL_S`, each peer's redial backing off to `DIAL_BACKOFF_MAX_S`.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import multiaddr
from libp2p.crypto.keys import KeyType, PrivateKey
from libp2p.peer.envelope import ENVELOPE_DOMAIN, PEER_RECORD_CODEC, seal_record, unmarshal_envelope
from libp2p.peer.id import ID
from libp2p.peer.peer_record import PeerRecord

from ffnode.artifacts.codec import WireError
from ffnode.artifacts.store import atomic_write
from ffnode.net.sync import MAX_PEER_RECORDS as MAX_RECORDS
from ffnode.net.sync import parse_peers_response

log = logging.getLogger("ffnode.discovery")

MAX_RECORD_BYTES = 2048  # one envelope: a key, a signature and MAX_ADDRS addresses fit in well under 1 KiB
MAX_ADDRS = 8
MAX_ADDR_CHARS = 256
DIAL_INTERVAL_S = 2.0
DIALS_PER_ROUND = 4
DIAL_TIMEOUT_S = 10.0
DIAL_BACKOFF_START_S = 2.0
DIAL_BACKOFF_MAX_S = 300.0
# Re-ask a connected member for its peers EXCHANGE_MIN_S after it told us something new, twice as late after each
# answer that held nothing new, up to EXCHANGE_MAX_S: every ask is a stream and every record a signature to check,
# and at a fixed 15 s that was most of an idle node's CPU in a federation of 32 (a newcomer is not missed: it
# syncs and asks on connecting, and dials every member it learns of)
EXCHANGE_MIN_S = 15.0
EXCHANGE_MAX_S = 300.0
SAVE_INTERVAL_S = 10.0
TRIM_SLACK = 8  # connections above max_peers before any is closed: a joining node always finds room
TRIM_GRACE_S = 30.0  # a connection younger than this is never closed (a joining node's first links)
TRIM_BACKOFF_S = 300.0  # a peer hung up on is not dialled again by this node for this long
REDIAL_AFTER_LOSS_S = 60.0  # nor one whose connection ended (others are dialled meanwhile)
# The address forms a record may carry (the first two protocols, in order, after an optional relay part).
_DIALABLE = {("ip4", "tcp"), ("ip6", "tcp"), ("dns", "tcp"), ("dns4", "tcp"), ("dns6", "tcp")}


def seal(private_key: PrivateKey, addrs: Iterable[str], seq: int | None = None) -> bytes:
    """Our signed peer record (envelope bytes) for `addrs`; a trailing /p2p/<our id> is dropped from each."""
    peer = ID.from_pubkey(private_key.get_public_key())
    suffix = f"/p2p/{peer.to_base58()}"
    plain = [a[: -len(suffix)] if a.endswith(suffix) else a for a in addrs]
    record = PeerRecord(peer, [multiaddr.Multiaddr(a) for a in dict.fromkeys(plain)], seq)
    return seal_record(record, private_key).marshal_envelope()


def own_record(private_key: PrivateKey, addrs: Iterable[str]) -> bytes | None:
    """What we advertise: at most MAX_ADDRS addresses, loopback ones only if all are (a record of 0.0.0.0's
    interfaces would otherwise name 127.0.0.1 to remote peers); None if there is nothing to advertise."""
    addrs = list(addrs)
    remote = [a for a in addrs if not _is_loopback(a)]
    chosen = (remote or addrs)[:MAX_ADDRS]
    return seal(private_key, chosen) if chosen else None


def _is_loopback(addr: str) -> bool:
    """Whether addr's host is this machine: 127.0.0.0/8, ::1, an IPv4-mapped ::ffff:127.x.x.x (a dual-stack socket
    reaches it as 127.x.x.x), or the name localhost or one under .localhost (RFC 6761), in any letter case."""
    _, proto, host, *_ = [*addr.split("/"), "", "", ""]
    if proto in ("ip4", "ip6"):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return ip.is_loopback or (mapped is not None and mapped.is_loopback)
    name = host.lower().rstrip(".")
    return proto in ("dns", "dns4", "dns6") and (name == "localhost" or name.endswith(".localhost"))


@dataclass(frozen=True)
class Record:
    peer_id: str
    seq: int
    addrs: tuple[str, ...]  # each dialable, ending in /p2p/<peer_id>
    envelope: bytes


def open_record(data: bytes, *, loopback: bool = True) -> Record:
    """Verify a signed peer record; WireError naming what is wrong. `loopback`: whether loopback addresses are
    acceptable (only for a node that itself listens on loopback: a remote peer has no business naming them)."""
    if not isinstance(data, bytes) or len(data) > MAX_RECORD_BYTES:
        raise WireError(f"a peer record must be at most {MAX_RECORD_BYTES} bytes")
    try:
        env = unmarshal_envelope(data)
    except Exception as exc:
        raise WireError(f"unreadable peer record envelope: {exc}") from None
    if env.public_key.get_type() != KeyType.Ed25519:  # the spec's key type; RSA ones verify 200 times slower
        raise WireError("peer record signed with a key that is not Ed25519")
    if env.payload_type != PEER_RECORD_CODEC:
        raise WireError(f"peer record of payload type {env.payload_type.hex()}, expected {PEER_RECORD_CODEC.hex()}")
    try:
        env.validate(ENVELOPE_DOMAIN)
    except Exception:
        raise WireError("peer record signature does not verify") from None
    try:
        record = env.record()
    except Exception as exc:
        raise WireError(f"unreadable peer record: {exc}") from None
    if ID.from_pubkey(env.public_key) != record.peer_id:
        raise WireError("peer record signed by another key than the peer it names")
    if not 0 < len(record.addrs) <= MAX_ADDRS:
        raise WireError(f"a peer record must carry 1 to {MAX_ADDRS} addresses, not {len(record.addrs)}")
    peer = record.peer_id.to_base58()
    try:
        texts = [str(a) for a in record.addrs]
    except Exception as exc:  # binary multiaddrs that do not decode (a bad dns name, an unknown protocol)
        raise WireError(f"undecodable address in a peer record: {exc}") from None
    addrs = tuple(_dialable(a, peer, loopback) for a in texts)
    return Record(peer, int(record.seq), addrs, data)


def _dialable(addr: str, peer: str, loopback: bool) -> str:
    """addr with /p2p/<peer> appended, if it is a form we dial: [relay addr/p2p/<relay>/p2p-circuit] + ip/dns + tcp,
    to a unicast host."""
    if len(addr) > MAX_ADDR_CHARS:
        raise WireError(f"peer record address longer than {MAX_ADDR_CHARS} characters")
    relay, circuit, direct = addr.rpartition("/p2p-circuit")
    target = relay if circuit else direct
    if circuit and direct not in ("", f"/p2p/{peer}"):
        raise WireError(f"relay address {addr!r} ends in something else than the record's peer")
    try:
        maddr = multiaddr.Multiaddr(target)
        protos = [p.name for p in maddr.protocols()]
        host = maddr.value_for_protocol(protos[0]) if protos else ""
    except Exception:
        raise WireError(f"unparsable address {addr[:80]!r} in a peer record") from None
    wanted = 3 if circuit else 2  # a relay address must name the relay: ip/tcp/p2p
    if len(protos) != wanted or tuple(protos[:2]) not in _DIALABLE or (circuit and protos[2] != "p2p"):
        raise WireError(f"address {addr[:80]!r} is not a dialable ip/dns + tcp address")
    if protos[0] in ("ip4", "ip6"):
        ip = ipaddress.ip_address(host)
        if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
            raise WireError(f"address {addr[:80]!r} is not a unicast host")
    if not loopback and _is_loopback(target):
        raise WireError(f"address {addr[:80]!r} is a loopback address")
    if not circuit and protos[-1] == "p2p":
        raise WireError(f"address {addr[:80]!r} names a peer")
    return f"{relay}/p2p-circuit/p2p/{peer}" if circuit else f"{addr}/p2p/{peer}"


@dataclass
class Entry:
    record: Record
    source: str  # "bootstrap", "direct" (the peer's own record), "via <peer>", "saved"
    member: bool = False  # served us a complete inventory of this federation (now or in an earlier run)
    failures: int = 0
    next_dial: float = 0.0
    last_exchange: float = 0.0
    exchange_every: float = EXCHANGE_MIN_S


class PeerBook:
    """The records this node knows, how it learnt each, and whom to dial next. Thread-safe: the sync server
    reads it on a worker thread.

    Members are what the book is for; every other entry is a candidate that counts against the share of the
    peer it was learnt through (`per_source`) until it turns out to be a member, and only candidates are ever
    evicted."""

    def __init__(self, me: str, *, capacity: int, per_source: int) -> None:
        self.me = me
        self.capacity = capacity
        self.per_source = per_source
        self.entries: dict[str, Entry] = {}
        self.refused = 0  # records not taken for a limit (capacity or one source's share)
        self.dirty = False  # members' records changed since the last save
        self._lock = threading.Lock()

    def learn(self, record: Record, source: str, *, member: bool = False) -> bool:
        """Take a verified record; True if it is new or newer than what we held. A newer record replaces the
        addresses but not the dial backoff: a key that re-signs every exchange gains no extra dials."""
        if record.peer_id == self.me:
            return False
        with self._lock:
            old = self.entries.get(record.peer_id)
            if old is not None:
                if record.seq <= old.record.seq:
                    return False
                old.record = record
                self.dirty |= old.member
                return True
            if source.startswith("via "):
                candidates = sum(1 for e in self.entries.values() if e.source == source and not e.member)
                if candidates >= self.per_source:
                    self.refused += 1
                    return False
            if len(self.entries) >= self.capacity and not self._evict():
                self.refused += 1
                return False
            self.entries[record.peer_id] = Entry(record, source, member=member)
            return True

    def _evict(self) -> bool:
        """Drop the candidate that failed most, the oldest of those; False if the book holds only members."""
        candidates = [e for e in self.entries.values() if not e.member]
        if not candidates:
            return False
        victim = max(candidates, key=lambda e: e.failures)  # max keeps the first (oldest) of equals
        del self.entries[victim.record.peer_id]
        return True

    def connected(self, peer: str, member: bool) -> None:
        with self._lock:
            e = self.entries.get(peer)
            if e is not None:
                e.failures, e.next_dial = 0, 0.0
                self.dirty |= member and not e.member
                e.member = e.member or member

    def is_member(self, peer: str) -> bool:
        with self._lock:
            return (e := self.entries.get(peer)) is not None and e.member

    def hold_off(self, peer: str, until: float) -> None:
        """Dial `peer` no sooner than `until` (we hung up on it, or lost it)."""
        with self._lock:
            e = self.entries.get(peer)
            if e is not None:
                e.next_dial = max(e.next_dial, until)

    def failed(self, peer: str, now: float) -> None:
        with self._lock:
            e = self.entries.get(peer)
            if e is not None:
                e.failures += 1
                e.next_dial = now + min(DIAL_BACKOFF_MAX_S, DIAL_BACKOFF_START_S * 2 ** (e.failures - 1))

    def due(self, now: float, connected: set[str], max_peers: int) -> list[Record]:
        """Whom to dial now: unconnected peers out of backoff, members first, at most DIALS_PER_ROUND, while
        fewer than max_peers members are connected (other connections take no member's place)."""
        with self._lock:
            members = sum(1 for p in connected if (e := self.entries.get(p)) is not None and e.member)
            room = max(0, min(DIALS_PER_ROUND, max_peers - members))
            ready = [e for p, e in self.entries.items() if p not in connected and e.next_dial <= now]
            ready.sort(key=lambda e: (not e.member, e.failures))
            for e in ready[:room]:  # in flight: no second dial of it until this one ended
                e.next_dial = now + DIAL_TIMEOUT_S
            return [e.record for e in ready[:room]]

    def exchange_due(self, now: float, connected: set[str]) -> list[str]:
        """Connected members whose next peers request is due, stamped as asked."""
        with self._lock:
            due = [
                p
                for p, e in self.entries.items()
                if p in connected and e.member and now - e.last_exchange > e.exchange_every
            ]
            for p in due:
                self.entries[p].last_exchange = now
            return due

    def claim_exchange(self, peer: str, now: float) -> bool:
        """Whether `peer` is due a peers request (one not in the book always is), stamped as asked if so."""
        with self._lock:
            e = self.entries.get(peer)
            if e is None:
                return True
            if now - e.last_exchange <= e.exchange_every:
                return False
            e.last_exchange = now
            return True

    def exchanged(self, peer: str, new: int) -> None:
        """Pace the next peers request of `peer`: soon after news, twice as late after none (EXCHANGE_MAX_S)."""
        with self._lock:
            e = self.entries.get(peer)
            if e is not None:
                e.exchange_every = EXCHANGE_MIN_S if new else min(EXCHANGE_MAX_S, 2 * e.exchange_every)

    def vouched(self, connected: set[str]) -> list[bytes]:
        """Envelopes of connected members: what we pass on to other members."""
        with self._lock:
            live = [e for p, e in self.entries.items() if p in connected and e.member]
            return [e.record.envelope for e in live[: MAX_RECORDS - 1]]

    def saved(self) -> list[bytes]:
        """Envelopes of every member: what a restart dials first (they come back with source "saved")."""
        with self._lock:
            self.dirty = False
            return [e.record.envelope for e in self.entries.values() if e.member]

    def source(self, peer: str) -> str | None:
        with self._lock:
            e = self.entries.get(peer)
            return e.source if e else None

    def rows(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                p: {
                    "source": e.source,
                    "member": e.member,
                    "record_addrs": list(e.record.addrs),
                    "dial_failures": e.failures,
                }
                for p, e in self.entries.items()
            }


def to_trim(me: str, since: dict[str, float], now: float, max_peers: int, protected: frozenset[str]) -> list[str]:
    """Whom of the members connected (`since`: since when) to hang up on: none up to `max_peers + TRIM_SLACK`;
    above, enough of those connected for TRIM_GRACE_S or longer (not `protected`) to come back to `max_peers`, in an
    order of our own (a hash of both IDs), so that nodes over their bound do not all drop the same peer."""
    if len(since) <= max_peers + TRIM_SLACK:
        return []
    settled = [p for p, t in since.items() if now - t >= TRIM_GRACE_S and p not in protected]
    settled.sort(key=lambda p: hashlib.sha256(f"{me} {p}".encode()).digest())
    return settled[: len(since) - max_peers]


class Discovery:
    """Keeps the node connected to its federation: learns records from members, dials, saves what worked.

    `ask(peer)` sends one peers request (the daemon calls it after a good inventory round, which makes the peer
    a member); `run()` is the dial loop; `answer()` builds the response to a peers request.
    """

    def __init__(
        self,
        *,
        me: str,
        record: Callable[[], bytes | None],
        request: Callable[[str, bytes], Any],
        dial: Callable[[str, list[str]], Any],
        connected: Callable[[], list[str]],
        path: Path,
        max_peers: int,
        capacity: int,
        per_source: int,
        reject: Callable[[str, str], None],
        loopback: bool,
        hang_up: Callable[[str], Any],
        protected: frozenset[str] = frozenset(),
    ) -> None:
        self.book = PeerBook(me, capacity=capacity, per_source=per_source)
        self._record, self._request, self._dial, self._connected = record, request, dial, connected
        self._hang_up, self._protected = hang_up, protected  # protected: our relays, never hung up on
        self._since: dict[str, float] = {}  # connected peer -> since when (as this loop first saw it)
        self._path, self._max_peers, self._reject = path, max_peers, reject
        self._loopback = loopback  # loopback addresses are acceptable only to a node that listens on one
        self._opened: OrderedDict[bytes, Record] = OrderedDict()  # envelopes already verified: checked once
        self._load()

    def _load(self) -> None:
        if not self._path.exists():
            return
        try:
            saved = msgpack.unpackb(self._path.read_bytes(), raw=False)
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            log.warning("ignoring %s (%s): peers will be learnt again from the bootstrap list", self._path, exc)
            return
        for item in saved if isinstance(saved, list) else []:
            try:
                self.book.learn(open_record(item, loopback=self._loopback), "saved", member=True)
            except (WireError, ValueError, TypeError) as exc:
                log.warning("ignoring a saved peer record in %s: %s", self._path, exc)

    def save(self) -> None:
        atomic_write(self._path, msgpack.packb(self.book.saved(), use_bin_type=True))

    def answer(self) -> list[bytes]:
        """Our own record (if we have an address to give), then those of the members connected now."""
        own = self._record()
        return ([own] if own else []) + self.book.vouched(set(self._connected()))

    def take(self, peer: str, records: list[bytes]) -> int:
        """Learn from one peers response of `peer`. Returns how many records were new or newer."""
        new = 0
        for data in records[:MAX_RECORDS]:
            try:
                record = self._open(data)
            except WireError as exc:
                self._reject(peer, f"its peer record: {exc}")
                continue
            source = "direct" if record.peer_id == peer else f"via {peer}"
            if self.book.learn(record, source):
                new += 1
                if source != "direct":
                    log.info("learnt peer %s from %s: %s", record.peer_id, peer, " ".join(record.addrs))
        self.book.connected(peer, member=True)
        return new

    def _open(self, data: bytes) -> Record:
        """open_record, once per distinct envelope: members pass on the same records at every exchange."""
        record = self._opened.get(data)
        if record is None:
            record = self._opened[data] = open_record(data, loopback=self._loopback)
            while len(self._opened) > self.book.capacity:
                self._opened.popitem(last=False)
        else:
            self._opened.move_to_end(data)
        return record

    async def ask(self, peer: str, request: bytes) -> None:
        """Send our peers request (`sync.peers_request`: it names our federation and its class list)."""
        reply = await self._request(peer, request)
        self.book.exchanged(peer, self.take(peer, parse_peers_response(reply)))

    async def run(self, request: bytes) -> None:
        """Dial due records; re-ask connected members for their peers; save members' records now and then."""
        last_save = time.monotonic()
        while True:
            now = time.monotonic()
            connected = set(self._connected())
            for peer in connected:
                self.book.connected(peer, member=False)
            for peer in self._since.keys() - connected:
                self.book.hold_off(peer, now + REDIAL_AFTER_LOSS_S)
            self._since = {p: self._since.get(p, now) for p in connected}
            members = {p: t for p, t in self._since.items() if self.book.is_member(p)}
            trims = to_trim(self.book.me, members, now, self._max_peers, self._protected)
            for peer in trims:
                self.book.hold_off(peer, now + TRIM_BACKOFF_S)
                connected.discard(peer)
            dials = self.book.due(now, connected, self._max_peers)
            asks = self.book.exchange_due(now, connected)
            await asyncio.gather(*(self._try_dial(r) for r in dials), *(self._try_ask(p, request) for p in asks),
                                 *(self._try_hang_up(p) for p in trims))  # fmt: skip
            if self.book.dirty and now - last_save > SAVE_INTERVAL_S:
                last_save = now
                try:
                    await asyncio.to_thread(self.save)
                except OSError as exc:
                    log.warning("could not save known peers to %s: %s", self._path, exc)
            await asyncio.sleep(DIAL_INTERVAL_S)

    async def _try_dial(self, record: Record) -> None:
        try:
            async with asyncio.timeout(DIAL_TIMEOUT_S):
                await self._dial(record.peer_id, list(record.addrs))
        except Exception as exc:  # NetError, TimeoutError: the peer is down or the address is wrong
            self.book.failed(record.peer_id, time.monotonic())
            log.info("dial of %s failed: %s", record.peer_id, exc)
            return
        self.book.connected(record.peer_id, member=False)
        log.info("connected to %s (learnt %s)", record.peer_id, self.book.source(record.peer_id))

    async def _try_hang_up(self, peer: str) -> None:
        try:
            await self._hang_up(peer)
            log.info("hung up on %s: over network.max_peers (%d) connections", peer, self._max_peers)
        except Exception as exc:  # NetError: gone already, or the host is stopping
            log.debug("hanging up on %s failed: %s", peer, exc)

    async def _try_ask(self, peer: str, request: bytes) -> None:
        try:
            async with asyncio.timeout(DIAL_TIMEOUT_S):
                await self.ask(peer, request)
        except WireError as exc:
            self._reject(peer, f"its peers response: {exc}")
        except Exception as exc:
            log.info("peers request to %s failed: %s", peer, exc)
