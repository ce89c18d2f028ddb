"""The node daemon: wires the store, the network, the learner, the job runner and the control endpoint together.

Every task is owned by one asyncio.TaskGroup in `Node.run`; the libp2p world lives in its own trio thread behind
`NetHost`. What peers send is the intake's (intake.py: validation, fetch and sync workers, the fault state), what
operators ask the handlers' (handlers.py), what to learn the learner's, what to sign the outbox's; the learning
itself runs as jobs in other processes (ffnode/jobs/), so this process imports no torch.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ffnode.arch import vet
from ffnode.artifacts.store import Store, atomic_write, limits_of, trust_of
from ffnode.config import CONFIG_FILE, Config, ConfigError
from ffnode.daemon import control
from ffnode.daemon.handlers import ControlHandlers
from ffnode.daemon.intake import FETCH_WORKERS, SYNC_WORKERS, Intake
from ffnode.daemon.learner import Learner
from ffnode.daemon.ledger import Ledger
from ffnode.daemon.outbox import Outbox
from ffnode.daemon.unlearn import DATA_FILE, Unlearning
from ffnode.data.sources import DataError, ImageSet
from ffnode.events import EventLog
from ffnode.identity import load_identity
from ffnode.jobs import make_runner
from ffnode.jobs.factorycache import open_factory_cache
from ffnode.jobs.synthcache import SynthCache
from ffnode.net import Handlers, NetError, NetHost, Relaying
from ffnode.net.conns import ConnLimits
from ffnode.net.discovery import Discovery
from ffnode.net.sync import MAX_PEERS_BYTES
from ffnode.profiles import fit_warning, site_profile
from ffnode.query_worker import QueryService

log = logging.getLogger("ffnode.node")

LOCK_RETRY_S = 1.0  # a CLI probing the home's lock holds it this long at most (far less in fact)


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
        self.cache = SynthCache(home / "work" / "synth")
        self.factories = open_factory_cache(self.config.jobs.factory_cache, home)  # own factories, across homes
        self.runner = make_runner(self.config.jobs)  # where every piece of learning runs (ffnode/jobs/)
        self.ledger = Ledger(limits.peers_tracked, limits.bad_items)  # what each peer cost: counted, logged
        self.events = EventLog(home)  # the audit trail: what was published, accepted, revoked, blocked, by whom
        self.events.watch_trust(self.store)
        self.outbox = Outbox(
            home, self.identity, self.store, fed.name, fed.classes, self._gossip, self._wake_learner, self.events
        )
        self.unlearning = Unlearning(self.store, self.outbox, self.cache, self._halt_jobs, self.factories)
        self.intake = Intake(self.config, self.store, self.ledger, self.events)  # what peers send
        self.pool: QueryService | None = None  # made once the image shape is known (Node.run)
        self.learner: Learner | None = None  # made once the local data is loaded (Node.run)
        self.started = time.time()
        self.ready = asyncio.Event()  # the control endpoint answers and the host listens
        network = self.config.network
        self.net = NetHost(
            streams_per_peer=limits.streams_per_peer,
            conn_limits=ConnLimits(
                limits.connections, limits.inbound_connections, limits.connections_per_peer, limits.connections_per_ip
            ),
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
                validate_gossip=self.intake.validate,
                on_gossip=self.intake.on_gossip,
                on_peer=self.intake.on_peer,
                serve_request=self.intake.serve_sync,
                open_blob=self.intake.open_blob,
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
            hang_up=self.net.hang_up,
            protected=frozenset(a.rsplit("/p2p/", 1)[-1] for a in self.config.network.relays),
        )
        self.intake.net, self.intake.discovery = self.net, self.discovery

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
            jobs = self.config.jobs
            self.pool = QueryService(
                self.store, len(self.config.federation.classes), shape,
                threads=self.config.learning.threads, idle_s=jobs.query_idle_s, warm=jobs.query_warm,
            )  # fmt: skip
            profile = site_profile(self.config, data.image_shape, where=self.home / CONFIG_FILE)
            if warning := fit_warning(self.config.learning.profile, data.image_shape):
                log.warning("%s (set learning.profile in %s)", warning, self.home / CONFIG_FILE)
            self.learner = Learner(
                self.config, data, profile, self.store, self.outbox, self.unlearning, self.cache, self.home / "work",
                self.runner, self.factories,
            )  # fmt: skip
            self.store.listen(lambda _: self._wake_learner())  # every change may make something due
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
        """Read and check the local data in a process of its own (ffnode/data/extract.py), into the file every job
        reads; bad data fails here, before the node starts anything else."""
        cfg, classes = self.config.data, self.config.federation.classes
        path = self.home / "work" / DATA_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "ffnode.data.extract", "--split", cfg.split, "--classes", json.dumps(classes),
               "--bit-depth", str(cfg.bit_depth), "--", cfg.spec, str(path)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            raise DataError(done.stderr.strip() or f"reading {cfg.spec} failed (exit {done.returncode})")
        with np.load(path) as z:
            data = ImageSet(z["images"], z["labels"], tuple(classes))
        names = [classes[c] for c in sorted(set(data.labels.tolist()))]
        log.info("local data %s: %d images of classes %s", cfg.spec, len(data.labels), names)
        return data

    async def _serve(self, stop: asyncio.Event) -> None:
        assert self.learner is not None and self.pool is not None
        control_ready = asyncio.Event()
        handlers = ControlHandlers(self)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(control.serve(self.home, handlers.table(), control_ready)),
                    tg.create_task(self.learner.run()),
                    tg.create_task(self.intake.maintenance()),
                    tg.create_task(self._watch_network()),
                    tg.create_task(self.discovery.run(self.intake.peers_request)),
                    *(tg.create_task(self.intake.sync_worker()) for _ in range(SYNC_WORKERS)),
                    *(tg.create_task(self.intake.fetch_worker()) for _ in range(FETCH_WORKERS)),
                ]
                await control_ready.wait()
                atomic_write(self.home / control.RUNTIME_FILE, json.dumps(self.runtime_info()).encode())
                log.info("node %s listening on %s", self.identity.peer_id, " ".join(self.net.addrs))
                if self.config.api.listen:  # fastapi and uvicorn load only when the HTTP API is on
                    from ffnode.api.server import serve as serve_api

                    tasks.append(tg.create_task(serve_api(self, handlers)))
                self.ready.set()
                tasks.append(tg.create_task(self.pool.start()))  # the query worker, if jobs.query_warm
                await stop.wait()
                log.info("stopping")  # cancelling the learner kills its running job
                for task in tasks:
                    task.cancel()
        finally:
            await self.pool.close()
            try:
                self.discovery.save()  # the members this run met: a restart needs no bootstrap node
            except OSError as exc:
                log.warning("could not save known peers: %s", exc)

    async def _gossip(self, envelope: bytes) -> None:
        await self.intake.publish(envelope)

    def _wake_learner(self) -> None:
        if self.learner is not None:
            self.learner.notify()

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

    def runtime_info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "peer_id": self.identity.peer_id, "addrs": self.net.addrs}
