"""The control endpoint's handlers: what `ffnode status`, `peers`, `artifacts`, `query`, `revoke`, `leave`,
`verify-unlearning` and the trust commands ask of a running node (over its private Unix socket, daemon/control.py).
The HTTP API (ffnode/api/) calls the same methods, so both give the same answers. Each reads the node's parts;
none changes what peers can reach."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from ffnode.artifacts.charter import Membership
from ffnode.artifacts.store import Store, trust_of
from ffnode.config import TRUST_LISTS, Config, edit_trust
from ffnode.daemon import control
from ffnode.daemon.ledger import PeerState
from ffnode.daemon.unlearn import verify_unlearning
from ffnode.identity import check_blockable
from ffnode.privacy.policy import AuditPolicy
from ffnode.privacy.report import audit_rows
from ffnode.stats import QUERY_S, Histogram
from ffnode.voters import CannotAnswer, NoExperts

log = logging.getLogger("ffnode.node")


def members_view(store: Store) -> dict[str, Any]:
    """A store's charter and members, as `ffnode members --json` prints them (also of a stopped node)."""
    charter = store.charter
    if charter is None:
        return {"charter": None, "open": True, "founders": [], "threshold": 0, "members": []}
    rows = [
        {"peer": peer, "member": store.is_member(peer), "action": m.action, "seq": m.seq, "id": m.id,
         "signers": sorted(m.signers)}
        for peer, m in sorted(store.members().items())
    ]  # fmt: skip
    return {"charter": charter.id, "open": False, "federation": charter.federation,
            "founders": sorted(charter.founder_ids), "threshold": charter.threshold, "members": rows}  # fmt: skip


class ControlHandlers:
    def __init__(self, node: Any) -> None:
        self.node = node  # the running daemon.node.Node (not imported: it imports this module)
        self.query_seconds = Histogram(QUERY_S)  # answered queries, from the CLI and the HTTP API alike
        self.queries = {"answered": 0, "refused": 0, "failed": 0}
        self.query_images = 0

    def table(self) -> dict[str, control.Handler]:
        return {
            "status": self.status,
            "runtime": self.runtime,
            "peers": self.peers,
            "artifacts": self.artifacts,
            "query": self.query,
            "revoke": self.revoke,
            "leave": self.leave,
            "verify_unlearning": self.verify,
            "reload_trust": self.reload_trust,
            "trust": self.trust,
            "audit": self.audit,
            "membership": self.membership,
            "members": self.members,
        }

    async def runtime(self, args: dict) -> dict[str, Any]:
        """What `ffnode id` shows of a running node: its pid, peer ID and listen addresses."""
        node = self.node
        return node.runtime_info()

    async def status(self, args: dict) -> dict[str, Any]:
        node = self.node
        assert node.learner is not None and node.pool is not None
        classes = node.config.federation.classes
        cover = await node.pool.coverage(classes, node.config.learning.poe_rule)  # from the manifests alone
        p = node.learner.progress
        entries = node.store.entries()
        counts: dict[str, int] = {}
        for e in entries:
            key = f"{e.manifest.kind}_{e.state}"
            counts[key] = counts.get(key, 0) + 1
        return {
            "running": True,
            "state": "running",
            "peer_id": node.identity.peer_id,
            "addrs": node.net.addrs,
            "federation": node.config.federation.name,
            "classes": node.config.federation.classes,
            "local_classes": [node.config.federation.classes[c] for c in node.learner.local_classes()],
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
            "current_expert": (e.id if (e := node.outbox.current_expert()) else None),
            "connected_peers": len(node.net.connected_peers()),
            "relayed_peers": sum(p == "relayed" for p in node.net.connection_paths().values()),
            "peer_records": {"known": len(node.discovery.book.entries), "refused": node.discovery.book.refused},
            "connections_refused": dict(node.net.refusals.counts),  # by the limit that refused them (net/conns.py)
            "streams_refused": dict(node.net.stream_refusals.counts),  # reset by a per-peer limit (net/streams.py)
            "bytes_sent": node.intake.traffic.sent,
            "traffic": {
                "blob": node.intake.traffic.blob_bytes,
                "sync": node.intake.traffic.sync_bytes,
                "gossip": node.intake.traffic.gossip_bytes,
                "fetched": node.intake.traffic.fetched_bytes,
            },
            "uptime_s": round(time.time() - node.started, 1),
            "api": f"http://{listen}/" if (listen := node.config.api.listen) else None,  # its page; /v1, /metrics
            "compute": node.runner.compute,  # core-seconds per phase, over every job this node ran
            "jobs": node.runner.jobs,
            "query_failures": node.pool.failures,
            "fault": node.intake.fault,
            "store_damaged": node.store.damaged,  # quarantined at start; peers send those artifacts again
            "own_missing": [m.id for m in node.store.pending() if m.owner == node.identity.peer_id],
            # own factories that failed their privacy audit: not published (ffnode audit shows the figures)
            "withheld_factories": {node.config.federation.classes[c]: why for c, why in node.learner.withheld.items()},
        }

    async def peers(self, args: dict) -> list[dict[str, Any]]:
        node = self.node
        published: dict[str, dict[str, int]] = {}
        for e in node.store.entries():
            by_kind = published.setdefault(e.manifest.owner, {})
            by_kind[e.manifest.kind] = by_kind.get(e.manifest.kind, 0) + (e.state != "revoked")
        connected, paths = set(node.net.connected_peers()), node.net.connection_paths()
        known = node.ledger.snapshot()
        book = node.discovery.book.rows()
        bootstrap = {a.rsplit("/p2p/", 1)[-1] for a in node.config.network.bootstrap}
        ids = (set(known) | connected | set(published) | set(book)) - {node.identity.peer_id}
        return [
            {
                "peer_id": pid,
                "addrs": node.net.peer_addrs(pid),
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
                "trusted": node.store.trusts(pid),
            }
            for pid in sorted(ids)
        ]

    async def reload_trust(self, args: dict) -> dict[str, Any]:
        """Apply the trust settings of config.toml (ffnode block / quarantine edited it) to everything held."""
        node = self.node
        fresh = Config.load(node.home)
        fed = node.config.federation
        fed.allowed_publishers = fresh.federation.allowed_publishers
        fed.denied_publishers = fresh.federation.denied_publishers
        fed.quarantined = fresh.federation.quarantined
        node.store.set_trust(trust_of(node.config, node.identity.peer_id))
        log.info("trust changed: %d allowed, %d denied, %d quarantined", *(len(x) for x in (
            fed.allowed_publishers, fed.denied_publishers, fed.quarantined)))  # fmt: skip
        return {"denied_publishers": fed.denied_publishers, "quarantined": fed.quarantined}

    async def artifacts(self, args: dict) -> list[dict[str, Any]]:
        node = self.node
        return node.store.rows(node.config.federation.classes)

    async def query(self, args: dict) -> dict[str, Any]:
        return await self.answer(control.decode_images(args), args.get("rule") or "")

    async def answer(self, images: np.ndarray, rule: str = "") -> dict[str, Any]:
        """The PoE's answer for (B, H, W, C) uint8 images, by the query worker; counted for the metrics.
        NoExperts/CannotAnswer when refused, ValueError for a bad batch or rule, WorkerError if the worker failed."""
        node = self.node
        assert node.pool is not None
        t0, rule = time.monotonic(), rule or node.config.learning.poe_rule
        try:
            result = await node.pool.query(images, node.config.federation.classes, rule)
        except (NoExperts, CannotAnswer, ValueError):
            self.queries["refused"] += 1
            raise
        except Exception:
            self.queries["failed"] += 1
            raise
        self.queries["answered"] += 1
        self.query_images += len(images)
        self.query_seconds.observe(time.monotonic() - t0)
        return result

    async def audit(self, args: dict) -> list[dict[str, Any]]:
        """The audit table `ffnode audit --json` prints (ffnode/privacy/report.py)."""
        node = self.node
        policy = AuditPolicy.of(node.config.privacy)
        return await asyncio.to_thread(audit_rows, node.home, node.config, node.store, node.identity.peer_id, policy)

    async def trust(self, args: dict) -> dict[str, Any]:
        """Block a publisher or quarantine an artifact (args: what = block | quarantine, value, undo), as
        `ffnode block` / `ffnode quarantine` do: recorded in config.toml, then applied to everything held."""
        node, what, value, undo = self.node, args.get("what"), args.get("value"), bool(args.get("undo"))
        if what not in TRUST_LISTS or not isinstance(value, str) or not value:
            raise ValueError(f"trust: what must be one of {sorted(TRUST_LISTS)} and value a non-empty string")
        if what == "quarantine":
            value = node.store.resolve(value)  # KeyError names an unknown or ambiguous ID
        elif not undo:
            check_blockable(value, node.identity.peer_id)
        await asyncio.to_thread(edit_trust, node.home, what, value, not undo)
        return await self.reload_trust({})

    async def membership(self, args: dict) -> dict[str, Any]:
        """Take a membership message the founders signed (`ffnode invite`, `remove`, `sign` once it has enough
        signatures): stored, applied to everything held, and gossiped (peers also get it by sync)."""
        node, data = self.node, bytes.fromhex(args["envelope"])
        m = await asyncio.to_thread(node.store.add, data)  # WireError: the CLI shows why it was refused
        if isinstance(m, Membership):
            node.intake.membership_changed(m, node.identity.peer_id)
            await node.intake.publish(data)
        return await self.members({})

    async def members(self, args: dict) -> dict[str, Any]:
        """The pinned charter and every peer's standing under it (`ffnode members`)."""
        return members_view(self.node.store)

    async def revoke(self, args: dict) -> dict[str, Any]:
        node = self.node
        ids = [node.store.resolve(i) for i in args["ids"]]
        r = await node.unlearning.revoke(ids, reason=args.get("reason") or "revoked by operator")
        return {"revocation": r.id, "ids": r.ids}

    async def leave(self, args: dict) -> dict[str, Any]:
        node = self.node
        revocations = await node.unlearning.leave()
        return {"revocations": [r.id for r in revocations], "ids": [i for r in revocations for i in r.ids]}

    async def verify(self, args: dict) -> dict[str, Any]:
        node = self.node
        assert node.learner is not None
        return await verify_unlearning(node.store, node.outbox.current_expert(), node.learner.rebuild)
