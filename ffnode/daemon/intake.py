"""What peers send, and what the node asks of them: gossip validation and acceptance, blob fetches, inventory
sync, and the node's local fault state.

Every path of peer input ends here, and none lets an exception out: a message that breaks a rule costs that
message (WireError: logged with the peer, counted against it in the ledger); one that hits a bug costs that
message too (logged with its traceback); a local fault (OSError: the disk) degrades the node until `maintenance`
sees the disk work again, and is not the peer's fault. Anything accepted went through `Store.check`/`Store.add`
(signature, schema, federation, class list, trust, tombstones) first, and is recorded in the home's events (its
owner as the actor, the peer it came through as `via`), as are the local fault and its clearing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ffnode.artifacts.charter import Membership
from ffnode.artifacts.codec import WireError, describe_classes
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.revocation import Revocation
from ffnode.artifacts.store import Stale, Store, atomic_write
from ffnode.config import Config
from ffnode.daemon.ledger import Ledger
from ffnode.events import EventLog, manifest_fields, membership_event, membership_fields, revocation_fields
from ffnode.net import NetError, NetHost
from ffnode.net.discovery import Discovery
from ffnode.net.sync import (
    MAX_PAGE_BYTES,
    MAX_PAGES,
    inventory_page,
    inventory_request,
    parse_inventory_response,
    parse_request,
    peers_request,
    peers_response,
)

log = logging.getLogger("ffnode.node")

FETCH_WORKERS = 2
SYNC_WORKERS = 4  # a peer that never answers holds one worker for SYNC_TIMEOUT_S, not the whole round
# Peers re-asked for their inventory every network.sync_interval_s, in turns: a round's few repair what gossip
# dropped as well as all would (every member holds the same inventory), and each peer's turn comes within
# connected / SYNC_PEERS_PER_ROUND rounds. Asking all of them cost every node (peers x inventory) work per round:
# in a federation of N, N^2 across the machine. A new connection is synced at once, whatever the turn.
SYNC_PEERS_PER_ROUND = 8
RETRY_S = 3.0  # first retry of a blob that failed to arrive; doubles per failure up to RETRY_MAX_S
RETRY_MAX_S = 300.0
SYNC_TIMEOUT_S = 30.0
FETCH_TIMEOUT_S = 600.0  # at most, for one blob from one peer; a small blob gets 60 s + size / MIN_FETCH_RATE
MIN_FETCH_RATE = 256 * 1024  # bytes/s a transfer must average after its first 60 s (a slow drip frees the worker)
SYNC_ROUND_S = 300.0  # one sync round with one peer, all its pages: a server inventing pages holds a worker this long
MAX_BAD_PER_ROUND = 256  # rejected items from one peer before the round with it is cut short


@dataclass
class Traffic:
    """Application bytes this node sent: blobs and inventories served, announcements published."""

    blob_bytes: int = 0
    sync_bytes: int = 0
    gossip_bytes: int = 0
    fetched_bytes: int = 0
    # bumped from the loop, the network thread and worker threads: `+=` on an attribute is not atomic
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, kind: str, n: int) -> None:
        with self._lock:
            setattr(self, f"{kind}_bytes", getattr(self, f"{kind}_bytes") + n)

    @property
    def sent(self) -> int:
        return self.blob_bytes + self.sync_bytes + self.gossip_bytes


class Intake:
    """The node's side of every exchange with peers. `net` and `discovery` are set by the node once made (they
    call back into this object)."""

    def __init__(self, config: Config, store: Store, ledger: Ledger, events: EventLog) -> None:
        self.config, self.store, self.ledger, self.events = config, store, ledger, events
        self.net: NetHost
        self.discovery: Discovery
        self.traffic = Traffic()
        self.fault: str | None = None  # a local fault (disk full, ...): the node stops accepting until it clears
        self.peers_request = peers_request(config.federation.name, config.federation.classes)  # who else is a member?
        self._fetch_q: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue()
        self._queued: set[str] = set()
        self._retry: dict[str, tuple[float, float]] = {}  # artifact ID -> (current delay, next attempt)
        self._sync_q: asyncio.Queue[str] = asyncio.Queue()
        self._sync_queued: set[str] = set()  # a peer waits in the sync queue at most once
        self._sync_turn = 0  # where the next periodic round starts among the connected peers
        self._deferred: list[dict[str, str]] = []  # each running sync round's accepted manifests, fetched at its end

    def validate(self, data: bytes, peer: str) -> str | None:
        """Gossip validator, called on the network thread: reject before anything is forwarded. Never waits
        for the store's lock (the loop may hold it across a disk write)."""
        if (reason := self.ledger.known_bad(data)) is not None:
            return reason
        try:
            self.store.check(data, wait=False)
        except Stale as exc:
            return str(exc)  # not forwarded, not held against the peer
        except WireError as exc:
            self.ledger.reject(peer, str(exc), data, quiet=True)  # the network thread logs it
            return str(exc)
        except Exception as exc:  # a bug reachable from peer input: drop the message, keep the node
            log.exception("checking a message from %s failed", peer, extra={"peer": peer})
            self.ledger.reject(peer, f"internal error on its message: {exc!r}", data, quiet=True)
            return repr(exc)
        return None

    def _local_fault(self, what: str, exc: OSError) -> None:
        if self.fault is None:
            log.error("local fault while %s: %s; accepting nothing until it clears", what, exc)
            self.events.record("fault", self.net.peer_id, reason=f"{what}: {exc}")
        self.fault = f"{what}: {exc}"

    def on_gossip(self, data: bytes, peer: str) -> None:
        self._accept(data, peer)

    def _accept(self, data: bytes, peer: str, later: dict[str, str] | None = None) -> None:
        """Check and store one envelope; fetch an accepted manifest's blob now, or after the sync round that
        brought it (`later`: ID -> peer), once the round's revocations are applied too."""
        state = self.ledger.seen(peer)
        if self.fault is not None or self.ledger.known_bad(data) is not None:
            return  # a fault: peers offer it again by sync once it clears; a known bad one: counted already
        try:
            msg = self.store.add(data)
        except Stale as exc:  # an honest peer that has not caught up yet: not its fault, but never checked twice
            log.debug("refused a stale message from %s: %s", peer, exc, extra={"peer": peer})
            self.ledger.remember_bad(data, str(exc))
            return
        except WireError as exc:
            self.ledger.reject(peer, str(exc), data)
            return
        except OSError as exc:
            self._local_fault(f"storing a message from {peer}", exc)
            return
        except Exception as exc:  # a bug reachable from peer input: drop the message, keep the node
            log.exception("storing a message from %s failed", peer, extra={"peer": peer})
            self.ledger.reject(peer, f"internal error on its message: {exc!r}", data, quiet=True)
            return
        self.ledger.accepted(state)
        if isinstance(msg, Manifest):
            fields = manifest_fields(msg)
            self.events.record("accepted", msg.owner, **fields, via=peer, state=self._state(msg.id))
            log.info("accepted %s %s of %s", msg.kind, msg.id[:12], msg.owner, extra={"peer": peer, **fields})
            if later is None:
                self._queue_fetch(msg.id, peer)
            else:
                later[msg.id] = peer
        elif isinstance(msg, Revocation):
            self.events.record("revoked", msg.owner, **revocation_fields(msg), via=peer)
            log.info("accepted revocation of %s by %s (%s)", [i[:12] for i in msg.ids], msg.owner, msg.reason,
                     extra={"peer": peer, "owner": msg.owner, "ids": msg.ids})  # fmt: skip
        elif isinstance(msg, Membership):  # None: a duplicate, two copies passed the validator before either was stored
            self.membership_changed(msg, peer)

    def membership_changed(self, m: Membership, via: str) -> None:
        """Record and log a membership message the store took (it applied it to what is held already), and forget
        which envelopes were refused: a newly admitted member's manifests, offered again, are judged afresh."""
        self.ledger.forget_bad()
        self.events.record(membership_event(m), "charter", **membership_fields(m), via=via)
        log.info("membership: %s %s (seq %d, signed by %d founders)", m.action, m.peer, m.seq, len(m.signers),
                 extra={"peer": via, "member": m.peer})  # fmt: skip

    def _owner(self, aid: str) -> str | None:
        m = self.store.get(aid)
        return m.owner if m is not None else None

    def _state(self, aid: str) -> str | None:
        """An artifact's state here (pending, or untrusted, refused, revoked ... at once), None if dropped meanwhile."""
        try:
            return self.store.entry(aid).state
        except KeyError:
            return None

    def on_peer(self, peer: str, connected: bool) -> None:
        self.ledger.seen(peer, connected=connected)
        if connected:  # its own artifacts that nobody served are worth asking for now; the rest keep their backoff
            now = time.monotonic()
            for aid, (delay, _) in list(self._retry.items()):
                if self._owner(aid) == peer:
                    self._retry[aid] = (delay, now)
            self.queue_sync(peer)

    def serve_sync(self, peer: str, body: bytes) -> bytes:
        """One page of the inventory, or our peer records (worker thread; a WireError resets the stream and is
        logged there)."""
        kind, federation, class_list, cursor = parse_request(body)
        fed = self.config.federation
        if federation != fed.name:  # counted and logged within the peer's budget; the stream is reset
            self.ledger.reject(peer, f"its {kind} is for federation {federation[:64]!r}, not {fed.name!r}")
            raise WireError(f"{kind} refused: another federation")
        if class_list != fed.classes:  # the same federation name, another class list: a label would mean another class
            self.ledger.reject(
                peer,
                f"its {kind} names federation {federation!r} with classes {describe_classes(class_list)}, "
                f"but this federation's are {describe_classes(fed.classes)}: not served (check federation.classes)",
            )
            raise WireError(f"{kind} refused: another class list")
        if kind == "peers_req":
            reply = peers_response(self.discovery.answer())
        else:
            reply = inventory_page(*self.store.inventory(), cursor, members=self.store.memberships())
        self.traffic.add("sync", len(reply))
        return reply

    def open_blob(self, blob: str) -> Path | None:
        path = self.store.blob_path(blob)
        if path is not None:
            self.traffic.add("blob", path.stat().st_size)
        return path

    async def publish(self, envelope: bytes) -> None:
        try:
            await self.net.publish(envelope)
            self.traffic.add("gossip", len(envelope))
        except NetError as exc:  # peers still get it by sync
            log.warning("publish failed (%s); peers will get it by sync", exc)

    # -- background work -----------------------------------------------------------------------------
    def _queue_fetch(self, aid: str, hint: str | None) -> None:
        if aid not in self._queued:
            self._queued.add(aid)
            self._fetch_q.put_nowait((aid, hint))

    async def fetch_worker(self) -> None:
        while True:
            aid, hint = await self._fetch_q.get()
            try:
                await self._fetch(aid, hint)
            except Exception:  # a bug must cost this fetch, never the node (peers' bytes reach this code)
                log.exception("fetching %s failed", aid[:12], extra={"artifact": aid})
            finally:
                self._queued.discard(aid)

    async def _fetch(self, aid: str, hint: str | None) -> None:
        if self.fault is not None:
            return  # `maintenance` queues it again once the fault clears
        try:
            entry = self.store.entry(aid)
        except KeyError:
            return  # dropped or compacted meanwhile
        if entry.state != "pending":
            return
        m = entry.manifest
        connected = self.net.connected_peers()
        candidates = [p for p in dict.fromkeys([m.owner, hint, *connected]) if p in connected]  # the owner first
        for peer in candidates:
            tmp, t0 = self.store.tmp_path(m.blob), time.monotonic()
            try:
                async with asyncio.timeout(min(FETCH_TIMEOUT_S, 60.0 + m.size / MIN_FETCH_RATE)):
                    await self.net.fetch_blob(peer, m.blob, m.size, tmp)
                await asyncio.to_thread(self.store.put_blob_file, tmp, m)  # hashes the file: off the loop
            except WireError as exc:  # the bytes the peer served break a rule: counted against it
                tmp.unlink(missing_ok=True)
                log.warning("fetching %s %s from %s failed: %s", m.kind, aid[:12], peer, exc,
                            extra={"peer": peer, "artifact": aid})  # fmt: skip
                self.ledger.reject(peer, f"its blob for {m.kind} {aid[:12]}: {exc}", quiet=True)
                if self.store.get(aid) is None:
                    return  # the manifest itself was invalid (its blob is not its owner's): dropped
                continue
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                self._local_fault(f"fetching {m.kind} {aid[:12]}", exc)
                return
            except (NetError, TimeoutError) as exc:  # other bytes than signed, a stall; or it does not hold it
                tmp.unlink(missing_ok=True)
                lacks = "peer refused" in str(exc)  # "not found": it does not hold it (yet), nobody's fault
                log.log(logging.DEBUG if lacks else logging.WARNING, "fetching %s %s from %s failed: %s", m.kind,
                        aid[:12], peer, exc, extra={"peer": peer, "artifact": aid})  # fmt: skip
                continue
            self.traffic.add("fetched", m.size)
            self._retry.pop(aid, None)
            seconds = time.monotonic() - t0
            path = self.net.connection_paths().get(peer, "gone")
            log.info(
                "verified %s %s (%d bytes) from %s in %.2f s (%.2f MB/s, %s)",
                m.kind, aid[:12], m.size, peer, seconds, m.size / 1e6 / max(seconds, 1e-6), path,
                extra={"peer": peer, "artifact": aid},
            )  # fmt: skip
            return
        # nobody served it yet: `maintenance` queues it again, backing off so a blob nobody has costs little (one
        # request per connected peer every RETRY_MAX_S), and says so once per artifact, not once per peer and try
        delay = min(RETRY_MAX_S, 2 * self._retry.get(aid, (RETRY_S / 2, 0.0))[0])
        if aid not in self._retry:
            log.info("no peer served the blob of %s %s of %s (asked %d); asking again, less and less often, up to "
                     "every %.0f s", m.kind, aid[:12], m.owner, len(candidates), RETRY_MAX_S,
                     extra={"artifact": aid, "owner": m.owner})  # fmt: skip
        self._retry[aid] = (delay, time.monotonic() + delay)

    def queue_sync(self, peer: str) -> None:
        if peer not in self._sync_queued:
            self._sync_queued.add(peer)
            self._sync_q.put_nowait(peer)

    async def sync_worker(self) -> None:
        while True:
            peer = await self._sync_q.get()
            try:
                await self._sync(peer)
            except Exception:  # a bug must cost this round with this peer, never the node
                log.exception("sync with %s failed", peer, extra={"peer": peer})
            finally:
                self._sync_queued.discard(peer)

    async def _sync(self, peer: str) -> None:
        """An inventory round with the peer; if it answered as a member of our federation and its peers request is
        due (always on a new connection), ask for its peers."""
        if not await self._sync_inventory(peer) or not self.discovery.book.claim_exchange(peer, time.monotonic()):
            return
        try:
            async with asyncio.timeout(SYNC_TIMEOUT_S):
                await self.discovery.ask(peer, self.peers_request)
        except WireError as exc:
            self.ledger.reject(peer, f"its peers response: {exc}")
        except (NetError, TimeoutError) as exc:
            log.warning("peers request to %s failed: %s", peer, exc, extra={"peer": peer})

    async def _sync_inventory(self, peer: str) -> bool:
        """Read the peer's inventory page by page; accept each envelope not held yet, as if gossiped. A round is
        bounded in pages, time and rejected items, and every page but the last must hold something. True if
        the peer served its whole inventory for our federation."""
        cursor, rejected_before = "", self.ledger.peer(peer).rejected
        later: dict[str, str] = {}  # manifests accepted this round: fetched once the whole round is applied
        self._deferred.append(later)
        try:
            async with asyncio.timeout(SYNC_ROUND_S):
                for _ in range(MAX_PAGES):
                    async with asyncio.timeout(SYNC_TIMEOUT_S):
                        request = inventory_request(self.config.federation.name, self.config.federation.classes, cursor)
                        reply = await self.net.request(peer, request, max_response=MAX_PAGE_BYTES)
                    manifests, revocations, cursor, members = parse_inventory_response(reply)
                    if cursor and not members + manifests + revocations:
                        raise WireError("an empty page that is not the last")
                    # who is a member before whose manifests; manifests before revocations: a revocation frees them
                    for data in members + manifests + revocations:
                        if not self.store.knows(data):
                            self._accept(data, peer, later)
                    if self.ledger.peer(peer).rejected - rejected_before > MAX_BAD_PER_ROUND:
                        log.warning("sync with %s cut short: more than %d bad items", peer, MAX_BAD_PER_ROUND,
                                    extra={"peer": peer})  # fmt: skip
                        return False
                    if not cursor:
                        return True
                    await asyncio.sleep(0)  # a long inventory must not hold the loop
                log.warning("sync with %s stopped after %d pages; the rest waits for the next round", peer, MAX_PAGES,
                            extra={"peer": peer})  # fmt: skip
                return True
        except WireError as exc:
            self.ledger.reject(peer, f"its inventory: {exc}")
        except (NetError, TimeoutError) as exc:
            log.warning("sync with %s failed: %s", peer, exc, extra={"peer": peer})
        finally:  # the round's revocations are applied: fetch what they left pending (_fetch skips the rest)
            self._deferred.remove(later)
            for aid, hint in later.items():
                self._queue_fetch(aid, hint)
        return False

    async def maintenance(self) -> None:
        """Retry blobs that did not arrive; re-ask peers for their inventory now and then, a few a round in turns;
        clear a local fault once the disk takes a write again (and then ask peers again for what was dropped)."""
        last_sync = time.monotonic()
        for m in self.store.pending():
            self._queue_fetch(m.id, None)
        while True:
            await asyncio.sleep(RETRY_S)
            if self.fault is not None and await asyncio.to_thread(self._disk_works):
                log.info("local fault cleared (%s): accepting again", self.fault)
                self.events.record("fault_cleared", self.net.peer_id, reason=self.fault)
                self.fault = None
                last_sync = 0.0
            now = time.monotonic()
            waiting = {aid for later in self._deferred for aid in later}  # for their sync round to end
            pending = self.store.pending()
            self._retry = {m.id: self._retry[m.id] for m in pending if m.id in self._retry}  # the rest left pending
            for m in pending:
                if self._retry.get(m.id, (0.0, 0.0))[1] <= now and m.id not in waiting:
                    self._queue_fetch(m.id, None)
            if time.monotonic() - last_sync > self.config.network.sync_interval_s:
                last_sync = time.monotonic()
                peers = sorted(self.net.connected_peers())
                start = self._sync_turn % len(peers) if peers else 0
                for peer in (peers[start:] + peers[:start])[:SYNC_PEERS_PER_ROUND]:
                    self.queue_sync(peer)
                self._sync_turn = start + SYNC_PEERS_PER_ROUND

    def _disk_works(self) -> bool:
        probe = self.store.root / "tmp" / "probe"
        try:
            atomic_write(probe, b"\0" * 65536)  # about one manifest
            probe.unlink()
            return True
        except OSError:
            return False
