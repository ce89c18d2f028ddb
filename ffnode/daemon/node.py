"""The node daemon: wires the store, the network, the learner and the control endpoint together.

Every task is owned by one asyncio.TaskGroup in `Node.run`; the libp2p world lives in its own trio
thread behind `NetHost`. Anything a peer sends goes through `Store.check`/`Store.add` (signature,
schema, federation, trust, tombstones) before it is used, and every rejection is logged with its reason
and the peer it came from. This module owns the network-facing workers (fetching blobs, syncing
inventories) and the control handlers; what to learn is the learner's, what to sign the outbox's.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffnode.arch import vet
from ffnode.artifacts.codec import WireError, describe_classes
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.revocation import Revocation
from ffnode.artifacts.store import Stale, Store, atomic_write, limits_of, trust_of
from ffnode.config import CONFIG_FILE, Config, ConfigError
from ffnode.daemon import control
from ffnode.daemon.learner import Learner
from ffnode.daemon.ledger import Ledger, PeerState
from ffnode.daemon.outbox import Outbox
from ffnode.daemon.unlearn import Unlearning, verify_unlearning
from ffnode.data.sources import ImageSet, load_dataset
from ffnode.identity import load_identity
from ffnode.jobs import make_runner
from ffnode.jobs.synthcache import SynthCache
from ffnode.net import Handlers, NetError, NetHost, Relaying
from ffnode.net.discovery import Discovery
from ffnode.net.sync import (
    MAX_PAGE_BYTES,
    MAX_PAGES,
    MAX_PEERS_BYTES,
    inventory_page,
    inventory_request,
    parse_inventory_response,
    parse_request,
    peers_request,
    peers_response,
)
from ffnode.profiles import fit_warning, site_profile
from ffnode.query import ExpertPool

log = logging.getLogger("ffnode.node")

FETCH_WORKERS = 2
SYNC_WORKERS = 4  # a peer that never answers holds one worker for SYNC_TIMEOUT_S, not the whole round
RETRY_S = 3.0  # first retry of a blob that failed to arrive; doubles per failure up to RETRY_MAX_S
RETRY_MAX_S = 300.0
SYNC_TIMEOUT_S = 30.0
FETCH_TIMEOUT_S = 600.0  # at most, for one blob from one peer; a small blob gets 60 s + size / MIN_FETCH_RATE
MIN_FETCH_RATE = 256 * 1024  # bytes/s a transfer must average after its first 60 s (a slow drip frees the worker)
SYNC_ROUND_S = 300.0  # one sync round with one peer, all its pages: a server inventing pages holds a worker this long
MAX_BAD_PER_ROUND = 256  # rejected items from one peer before the round with it is cut short
LOCK_RETRY_S = 1.0  # a CLI probing the home's lock holds it this long at most (far less in fact)


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


class Node:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.config = Config.load(home)
        self.identity = load_identity(home)
        self._lock = self._lock_home()  # before the store repairs anything: one node per home
        fed, limits = self.config.federation, self.config.limits
        if fed.allowed_publishers and self.identity.peer_id not in fed.allowed_publishers:
            raise ConfigError(
                f"{home / CONFIG_FILE}: federation.allowed_publishers does not name this node "
                f"({self.identity.peer_id}): it would refuse its own artifacts; add it"
            )
        self.store = Store(
            home / "store",
            federation=fed.name,
            classes=fed.classes,
            trust=trust_of(self.config, self.identity.peer_id),
            limits=limits_of(self.config),
            repair=True,
            vet=functools.partial(vet, limits=limits),
        )
        self._peers_request = peers_request(fed.name, fed.classes)  # discovery's question: who else is a member?
        self.outbox = Outbox(home, self.identity, self.store, fed.name, fed.classes, self._publish)
        self.cache = SynthCache(home / "work" / "synth")
        self.runner = make_runner(self.config.jobs)  # where every piece of learning runs (ffnode/jobs/)
        self.unlearning = Unlearning(self.store, self.outbox, self.cache, self._halt_jobs)
        self.pool: ExpertPool | None = None  # made once the image shape is known (Node.run)
        self.learner: Learner | None = None  # made once the local data is loaded (Node.run)
        self.ledger = Ledger(limits.peers_tracked, limits.bad_items)  # what each peer cost: counted, logged
        self.fault: str | None = None  # a local fault (disk full, ...): the node stops accepting until it clears
        self.traffic = Traffic()
        self.started = time.time()
        self.ready = asyncio.Event()  # the control endpoint answers and the host listens
        self._fetch_q: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue()
        self._queued: set[str] = set()
        self._retry: dict[str, tuple[float, float]] = {}  # artifact ID -> (current delay, next attempt)
        self._sync_q: asyncio.Queue[str] = asyncio.Queue()
        self._sync_queued: set[str] = set()  # a peer waits in the sync queue at most once
        network = self.config.network
        self.net = NetHost(
            streams_per_peer=limits.streams_per_peer,
            relaying=Relaying(
                relays=tuple(network.relays),
                reachable=network.reachable,
                hole_punch=network.hole_punch,
                serve=network.relay_service,
                serve_for=tuple(network.relay_for),
                reservations=limits.relay_reservations,
                circuits_per_peer=limits.relay_circuits_per_peer,
                circuit_mb=limits.relay_circuit_mb,
            ),
            seed=self.identity.seed,
            listen=self.config.network.listen,
            topic=self.config.topic,
            bootstrap=self.config.network.bootstrap,
            mdns=self.config.network.mdns,
            handlers=Handlers(
                validate_gossip=self._validate,
                on_gossip=self._on_gossip,
                on_peer=self._on_peer,
                serve_request=self._serve_sync,
                open_blob=self._open_blob,
            ),
        )
        self.discovery = Discovery(
            me=self.identity.peer_id,
            record=self.net.record,
            request=functools.partial(self.net.request, max_response=MAX_PEERS_BYTES),
            dial=self.net.dial,
            connected=self.net.connected_peers,
            path=home / "peers.msgpack",
            max_peers=self.config.network.max_peers,
            capacity=limits.peer_records,
            per_source=limits.records_per_peer,
            reject=self.ledger.reject,
            loopback=any(a.startswith("/ip4/127.") for a in self.config.network.listen),
        )

    # -- lifecycle -----------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; a failing task stops the node with its error."""
        try:
            data = await asyncio.to_thread(self._load_data)
            shape = self.config.image_shape or data.image_shape
            if data.image_shape != shape:
                raise ConfigError(
                    f"{self.home / CONFIG_FILE}: federation.image_shape is {self.config.federation.image_shape} but "
                    f"the local data is {'x'.join(map(str, data.image_shape))}: fix one of them"
                )
            self.pool = ExpertPool(self.store, len(self.config.federation.classes), shape)
            profile = site_profile(self.config, data.image_shape, where=self.home / CONFIG_FILE)
            if warning := fit_warning(self.config.learning.profile, data.image_shape):
                log.warning("%s (set learning.profile in %s)", warning, self.home / CONFIG_FILE)
            self.learner = Learner(
                self.config, data, profile, self.store, self.outbox, self.unlearning, self.cache, self.home / "work",
                self.runner,
            )  # fmt: skip
            await asyncio.to_thread(self.learner.save_data)
            self.store.on_change = self.learner.notify
            self.unlearning.forget_all_revoked()  # after a crash between a revocation and its purge
            await self.net.start()
            try:
                await self.unlearning.finish_leaving()  # after a crash in the middle of `ffnode leave`
                await self._serve(stop)
            finally:
                await self.net.stop()
                (self.home / control.RUNTIME_FILE).unlink(missing_ok=True)
        finally:
            self._lock.close()

    def _load_data(self) -> ImageSet:
        """Load and check the local data; bad data fails here, before the node starts anything else."""
        cfg, classes = self.config.data, self.config.federation.classes
        data = load_dataset(cfg.spec, split=cfg.split, classes=classes, bit_depth=cfg.bit_depth)
        names = [classes[c] for c in sorted(set(data.labels.tolist()))]
        log.info("local data %s: %d images of classes %s", cfg.spec, len(data.labels), names)
        return data

    async def _serve(self, stop: asyncio.Event) -> None:
        assert self.learner is not None
        control_ready = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(control.serve(self.home, self._control_handlers(), control_ready)),
                    tg.create_task(self.learner.run()),
                    tg.create_task(self._maintenance()),
                    tg.create_task(self._watch_network()),
                    tg.create_task(self.discovery.run(self._peers_request)),
                    *(tg.create_task(self._sync_worker()) for _ in range(SYNC_WORKERS)),
                    *(tg.create_task(self._fetch_worker()) for _ in range(FETCH_WORKERS)),
                ]
                await control_ready.wait()
                atomic_write(self.home / control.RUNTIME_FILE, json.dumps(self._runtime_info()).encode())
                log.info("node %s listening on %s", self.identity.peer_id, " ".join(self.net.addrs))
                self.ready.set()
                await stop.wait()
                log.info("stopping")  # cancelling the learner kills its running job
                for task in tasks:
                    task.cancel()
        finally:
            try:
                self.discovery.save()  # the members this run met: a restart needs no bootstrap node
            except OSError as exc:
                log.warning("could not save known peers: %s", exc)

    async def _halt_jobs(self) -> None:
        if self.learner is not None:
            await self.learner.halt()

    async def _watch_network(self) -> None:
        """A node without its network would look alive and learn nothing: stop with an error instead."""
        await self.net.wait_ended()
        raise NetError("the libp2p host stopped on its own (its error is logged above): restart the node")

    def _lock_home(self) -> Any:
        """Take the home's lock for the node's lifetime (the kernel drops it however the process ends), then
        delete what a killed node left: its `node.json` and `control.sock` say nothing about this run. The lock
        is retried for LOCK_RETRY_S, since `ffnode id`/`status` probe it for an instant (`control.lock_held`)."""
        f = control.lock_home(self.home, wait=LOCK_RETRY_S)
        if f is None:
            raise ConfigError(f"another node is already running in {self.home}: stop it first")
        for stale in (control.RUNTIME_FILE, control.SOCKET_FILE):
            (self.home / stale).unlink(missing_ok=True)
        return f

    def _runtime_info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "peer_id": self.identity.peer_id, "addrs": self.net.addrs}

    # -- what peers send -----------------------------------------------------------------------------
    # Every path of peer input ends here, and none lets an exception out: a message that breaks a rule costs
    # that message (WireError: logged with the peer, counted against it); one that hits a bug costs that
    # message too (logged with its traceback); a local fault (OSError: the disk) degrades the node until
    # `_maintenance` sees the disk work again, and is not the peer's fault.
    def _validate(self, data: bytes, peer: str) -> str | None:
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
            log.exception("checking a message from %s failed", peer)
            self.ledger.reject(peer, f"internal error on its message: {exc!r}", data, quiet=True)
            return repr(exc)
        return None

    def _local_fault(self, what: str, exc: OSError) -> None:
        if self.fault is None:
            log.error("local fault while %s: %s; accepting nothing until it clears", what, exc)
        self.fault = f"{what}: {exc}"

    def _on_gossip(self, data: bytes, peer: str) -> None:
        self._accept(data, peer)

    def _accept(self, data: bytes, peer: str) -> None:
        state = self.ledger.seen(peer)
        if self.fault is not None or self.ledger.known_bad(data) is not None:
            return  # a fault: peers offer it again by sync once it clears; a known bad one: counted already
        try:
            msg = self.store.add(data)
        except Stale as exc:  # an honest peer that has not caught up yet: not its fault, but never checked twice
            log.debug("refused a stale message from %s: %s", peer, exc)
            self.ledger.remember_bad(data, str(exc))
            return
        except WireError as exc:
            self.ledger.reject(peer, str(exc), data)
            return
        except OSError as exc:
            self._local_fault(f"storing a message from {peer}", exc)
            return
        except Exception as exc:  # a bug reachable from peer input: drop the message, keep the node
            log.exception("storing a message from %s failed", peer)
            self.ledger.reject(peer, f"internal error on its message: {exc!r}", data, quiet=True)
            return
        self.ledger.accepted(state)
        if isinstance(msg, Manifest):
            log.info("accepted %s %s of %s", msg.kind, msg.id[:12], msg.owner)
            self._queue_fetch(msg.id, peer)
        elif isinstance(msg, Revocation):
            log.info("accepted revocation of %s by %s (%s)", [i[:12] for i in msg.ids], msg.owner, msg.reason)
            self.unlearning.forget(msg.ids)

    def _on_peer(self, peer: str, connected: bool) -> None:
        self.ledger.seen(peer, connected=connected)
        if connected:
            self._retry.clear()  # a new peer may hold what nobody served so far
            self._queue_sync(peer)

    def _serve_sync(self, peer: str, body: bytes) -> bytes:
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
            reply = inventory_page(*self.store.inventory(), cursor)
        self.traffic.add("sync", len(reply))
        return reply

    def _open_blob(self, blob: str) -> Path | None:
        path = self.store.blob_path(blob)
        if path is not None:
            self.traffic.add("blob", path.stat().st_size)
        return path

    async def _publish(self, envelope: bytes) -> None:
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

    async def _fetch_worker(self) -> None:
        while True:
            aid, hint = await self._fetch_q.get()
            try:
                await self._fetch(aid, hint)
            except Exception:  # a bug must cost this fetch, never the node (peers' bytes reach this code)
                log.exception("fetching %s failed", aid[:12])
            finally:
                self._queued.discard(aid)

    async def _fetch(self, aid: str, hint: str | None) -> None:
        if self.fault is not None:
            return  # `_maintenance` queues it again once the fault clears
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
                log.warning("fetching %s %s from %s failed: %s", m.kind, aid[:12], peer, exc)
                self.ledger.reject(peer, f"its blob for {m.kind} {aid[:12]}: {exc}", quiet=True)
                if self.store.get(aid) is None:
                    return  # the manifest itself was invalid (its blob is not its owner's): dropped
                continue
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                self._local_fault(f"fetching {m.kind} {aid[:12]}", exc)
                return
            except (NetError, TimeoutError) as exc:
                tmp.unlink(missing_ok=True)
                log.warning("fetching %s %s from %s failed: %s", m.kind, aid[:12], peer, exc)
                continue
            self.traffic.add("fetched", m.size)
            self._retry.pop(aid, None)
            seconds = time.monotonic() - t0
            path = self.net.connection_paths().get(peer, "gone")
            log.info(
                "verified %s %s (%d bytes) from %s in %.2f s (%.2f MB/s, %s)",
                m.kind, aid[:12], m.size, peer, seconds, m.size / 1e6 / max(seconds, 1e-6), path,
            )  # fmt: skip
            return
        # nobody served it yet: `_maintenance` queues it again, backing off so a blob nobody has costs little
        delay = min(RETRY_MAX_S, 2 * self._retry.get(aid, (RETRY_S / 2, 0.0))[0])
        self._retry[aid] = (delay, time.monotonic() + delay)

    def _queue_sync(self, peer: str) -> None:
        if peer not in self._sync_queued:
            self._sync_queued.add(peer)
            self._sync_q.put_nowait(peer)

    async def _sync_worker(self) -> None:
        while True:
            peer = await self._sync_q.get()
            try:
                await self._sync(peer)
            except Exception:  # a bug must cost this round with this peer, never the node
                log.exception("sync with %s failed", peer)
            finally:
                self._sync_queued.discard(peer)

    async def _sync(self, peer: str) -> None:
        """An inventory round with the peer; if it answered as a member of our federation, ask for its peers."""
        if not await self._sync_inventory(peer):
            return
        try:
            async with asyncio.timeout(SYNC_TIMEOUT_S):
                await self.discovery.ask(peer, self._peers_request)
        except WireError as exc:
            self.ledger.reject(peer, f"its peers response: {exc}")
        except (NetError, TimeoutError) as exc:
            log.warning("peers request to %s failed: %s", peer, exc)

    async def _sync_inventory(self, peer: str) -> bool:
        """Read the peer's inventory page by page; accept each envelope not held yet, as if gossiped. A round is
        bounded in pages, time and rejected items, and every page but the last must hold something. True if
        the peer served its whole inventory for our federation."""
        cursor, rejected_before = "", self.ledger.peer(peer).rejected
        try:
            async with asyncio.timeout(SYNC_ROUND_S):
                for _ in range(MAX_PAGES):
                    async with asyncio.timeout(SYNC_TIMEOUT_S):
                        request = inventory_request(self.config.federation.name, self.config.federation.classes, cursor)
                        reply = await self.net.request(peer, request, max_response=MAX_PAGE_BYTES)
                    manifests, revocations, cursor = parse_inventory_response(reply)
                    if cursor and not manifests + revocations:
                        raise WireError("an empty page that is not the last")
                    for data in manifests + revocations:  # manifests first: a revocation frees what it names
                        if not self.store.knows(data):
                            self._accept(data, peer)
                    if self.ledger.peer(peer).rejected - rejected_before > MAX_BAD_PER_ROUND:
                        log.warning("sync with %s cut short: more than %d bad items", peer, MAX_BAD_PER_ROUND)
                        return False
                    if not cursor:
                        return True
                    await asyncio.sleep(0)  # a long inventory must not hold the loop
                log.warning("sync with %s stopped after %d pages; the rest waits for the next round", peer, MAX_PAGES)
                return True
        except WireError as exc:
            self.ledger.reject(peer, f"its inventory: {exc}")
        except (NetError, TimeoutError) as exc:
            log.warning("sync with %s failed: %s", peer, exc)
        return False

    async def _maintenance(self) -> None:
        """Retry blobs that did not arrive; re-ask every peer for its inventory now and then; clear a local
        fault once the disk takes a write again (and then ask every peer again for what was dropped)."""
        last_sync = time.monotonic()
        for m in self.store.pending():
            self._queue_fetch(m.id, None)
        while True:
            await asyncio.sleep(RETRY_S)
            if self.fault is not None and await asyncio.to_thread(self._disk_works):
                log.info("local fault cleared (%s): accepting again", self.fault)
                self.fault = None
                last_sync = 0.0
            now = time.monotonic()
            for m in self.store.pending():
                if self._retry.get(m.id, (0.0, 0.0))[1] <= now:
                    self._queue_fetch(m.id, None)
            if time.monotonic() - last_sync > self.config.network.sync_interval_s:
                last_sync = time.monotonic()
                for peer in self.net.connected_peers():
                    self._queue_sync(peer)

    def _disk_works(self) -> bool:
        probe = self.store.root / "tmp" / "probe"
        try:
            atomic_write(probe, b"\0" * 65536)  # about one manifest
            probe.unlink()
            return True
        except OSError:
            return False

    # -- control endpoint ----------------------------------------------------------------------------
    def _control_handlers(self) -> dict[str, control.Handler]:
        return {
            "status": self._status,
            "runtime": self._runtime,
            "peers": self._peers,
            "artifacts": self._artifacts,
            "query": self._query,
            "revoke": self._revoke,
            "leave": self._leave,
            "verify_unlearning": self._verify,
            "reload_trust": self._reload_trust,
        }

    async def _runtime(self, args: dict) -> dict[str, Any]:
        """What `ffnode id` shows of a running node: its pid, peer ID and listen addresses."""
        return self._runtime_info()

    async def _status(self, args: dict) -> dict[str, Any]:
        assert self.learner is not None and self.pool is not None
        classes = self.config.federation.classes
        # in a thread: a query may hold the pool while it loads experts
        cover = await asyncio.to_thread(self.pool.coverage, classes, self.config.learning.poe_rule)
        p = self.learner.progress
        entries = self.store.entries()
        counts: dict[str, int] = {}
        for e in entries:
            key = f"{e.manifest.kind}_{e.state}"
            counts[key] = counts.get(key, 0) + 1
        return {
            "running": True,
            "state": "running",
            "peer_id": self.identity.peer_id,
            "addrs": self.net.addrs,
            "federation": self.config.federation.name,
            "classes": self.config.federation.classes,
            "local_classes": [self.config.federation.classes[c] for c in self.learner.local_classes()],
            "phase": p.phase,
            "task": p.task,
            "progress": [p.done, p.total],
            "eta_s": p.eta_s(),  # the current piece of work at its pace so far; None if not yet known
            "missing_classes": p.missing or [],
            # classes the experts that answer queries cannot answer now, why, and why a query is refused if it is
            "answering_experts": cover["experts"],
            "uncovered_classes": cover["uncovered_classes"],
            "uncovered_why": cover["uncovered_why"],
            "query_refusal": cover["refusal"],
            "artifacts": counts,
            "current_expert": (e.id if (e := self.outbox.current_expert()) else None),
            "connected_peers": len(self.net.connected_peers()),
            "relayed_peers": sum(p == "relayed" for p in self.net.connection_paths().values()),
            "peer_records": {"known": len(self.discovery.book.entries), "refused": self.discovery.book.refused},
            "bytes_sent": self.traffic.sent,
            "traffic": {
                "blob": self.traffic.blob_bytes,
                "sync": self.traffic.sync_bytes,
                "gossip": self.traffic.gossip_bytes,
                "fetched": self.traffic.fetched_bytes,
            },
            "uptime_s": round(time.time() - self.started, 1),
            "compute": self.runner.compute,  # core-seconds per phase, over every job this node ran
            "jobs": self.runner.jobs,
            "fault": self.fault,
            "store_damaged": self.store.damaged,  # quarantined at start; peers send those artifacts again
            "own_missing": [m.id for m in self.store.pending() if m.owner == self.identity.peer_id],
            # own factories that failed their privacy audit: not published (ffnode audit shows the figures)
            "withheld_factories": {self.config.federation.classes[c]: why for c, why in self.learner.withheld.items()},
        }

    async def _peers(self, args: dict) -> list[dict[str, Any]]:
        published: dict[str, dict[str, int]] = {}
        for e in self.store.entries():
            by_kind = published.setdefault(e.manifest.owner, {})
            by_kind[e.manifest.kind] = by_kind.get(e.manifest.kind, 0) + (e.state != "revoked")
        connected, paths = set(self.net.connected_peers()), self.net.connection_paths()
        known = self.ledger.snapshot()
        book = self.discovery.book.rows()
        bootstrap = {a.rsplit("/p2p/", 1)[-1] for a in self.config.network.bootstrap}
        ids = (set(known) | connected | set(published) | set(book)) - {self.identity.peer_id}
        return [
            {
                "peer_id": pid,
                "addrs": self.net.peer_addrs(pid),
                "connected": pid in connected,
                "path": paths.get(pid),
                "learnt": "bootstrap" if pid in bootstrap else book.get(pid, {}).get("source", "inbound"),
                "member": book.get(pid, {}).get("member", False),
                "record_addrs": book.get(pid, {}).get("record_addrs", []),
                "dial_failures": book.get(pid, {}).get("dial_failures", 0),
                "last_seen": known.get(pid, PeerState()).last_seen or None,
                "published": published.get(pid, {}),
                "accepted": known.get(pid, PeerState()).accepted,
                "rejected": known.get(pid, PeerState()).rejected,
                "last_rejection": known.get(pid, PeerState()).last_rejection,
                "trusted": self.store.trust.trusts(pid),
            }
            for pid in sorted(ids)
        ]

    async def _reload_trust(self, args: dict) -> dict[str, Any]:
        """Apply the trust settings of config.toml (ffnode block / quarantine edited it) to everything held."""
        fresh = Config.load(self.home)
        fed = self.config.federation
        fed.allowed_publishers = fresh.federation.allowed_publishers
        fed.denied_publishers = fresh.federation.denied_publishers
        fed.quarantined = fresh.federation.quarantined
        self.store.set_trust(trust_of(self.config, self.identity.peer_id))
        log.info("trust changed: %d allowed, %d denied, %d quarantined", *(len(x) for x in (
            fed.allowed_publishers, fed.denied_publishers, fed.quarantined)))  # fmt: skip
        return {"denied_publishers": fed.denied_publishers, "quarantined": fed.quarantined}

    async def _artifacts(self, args: dict) -> list[dict[str, Any]]:
        return self.store.rows(self.config.federation.classes)

    async def _query(self, args: dict) -> dict[str, Any]:
        assert self.pool is not None
        images = control.decode_images(args)
        rule = args.get("rule") or self.config.learning.poe_rule
        return await asyncio.to_thread(self.pool.query, images, self.config.federation.classes, rule)

    async def _revoke(self, args: dict) -> dict[str, Any]:
        ids = [self.store.resolve(i) for i in args["ids"]]
        r = await self.unlearning.revoke(ids, reason=args.get("reason") or "revoked by operator")
        return {"revocation": r.id, "ids": r.ids}

    async def _leave(self, args: dict) -> dict[str, Any]:
        revocations = await self.unlearning.leave()
        return {"revocations": [r.id for r in revocations], "ids": [i for r in revocations for i in r.ids]}

    async def _verify(self, args: dict) -> dict[str, Any]:
        assert self.learner is not None
        return await verify_unlearning(self.store, self.outbox.current_expert(), self.learner.rebuild)
