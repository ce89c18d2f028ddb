"""Exact unlearning: signed revocation, the cascade it triggers, and the proof that it was exact.

FederatedFactory's claim (arXiv 2603.16370, Sec. unlearning): because site d's contribution to every
other site is confined to its generators Γ_{d,·}, withdrawing it needs no federation-wide retraining:
delete Γ_{d,·} and retrain only the experts whose lineage contains them. An expert here is a
deterministic function  f = Train(real_d ∪ ⋃_{Γ ∈ lineage} Sample(Γ, seed), seed, config),  so the
retrained expert must be bitwise equal to one trained from scratch on the remaining lineage: the proof.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

from ffnode.artifacts.revocation import MAX_IDS, Revocation

if TYPE_CHECKING:
    from ffnode.learner import Learner

log = logging.getLogger("ffnode.unlearn")


async def revoke(learner: Learner, ids: list[str], *, reason: str) -> Revocation:
    """Sign, store (the tombstone) and gossip a revocation of this node's own artifacts."""
    me = learner.identity.peer_id
    for aid in ids:
        m = learner.store.get(aid)
        if m is None:
            raise KeyError(f"no artifact {aid[:12]} in this node's store")
        if m.owner != me:
            raise PermissionError(f"artifact {aid[:12]} belongs to {m.owner}: only its owner can revoke it")
        if learner.store.is_revoked(aid):
            raise ValueError(f"artifact {aid[:12]} is already revoked")
    r = Revocation(
        owner=me,
        owner_key=learner.identity.public_key,
        federation=learner.config.federation.name,
        ids=sorted(ids),
        reason=reason,
        created=int(time.time() * 1000),
        seq=learner.store.next_seq(me),
    )
    envelope = r.seal(learner.identity)
    learner.store.add(envelope)
    apply_revocation(learner, r)
    log.info("revoked %s: %s", [i[:12] for i in r.ids], reason)
    await learner.publish(envelope)
    return r


async def leave(learner: Learner, *, reason: str = "left the federation") -> list[Revocation]:
    """The right to be forgotten: revoke everything this node ever published and stop taking part."""
    (learner.home / "left").touch()
    me = learner.identity.peer_id
    live = [e.manifest.id for e in learner.store.entries() if e.manifest.owner == me and e.state != "revoked"]
    learner.changed.set()
    return [await revoke(learner, live[i : i + MAX_IDS], reason=reason) for i in range(0, len(live), MAX_IDS)]


def apply_revocation(learner: Learner, r: Revocation) -> None:
    """The local cascade once a revocation is accepted (the store already deleted the blobs): drop
    synthetic data drawn from the revoked factories and wake the learner, which retrains an expert
    whose lineage changed and revokes the superseded one."""
    purged = learner.purge_synthetic(set(r.ids))
    if purged:
        log.info("deleted %d synthetic set(s) drawn from revoked factories", purged)
    learner.changed.set()


def verify_unlearning(learner: Learner) -> dict[str, Any]:
    """Retrain this node's current expert from scratch on its recorded lineage and compare bytes; check
    that no revoked ID appears in the lineage of any live expert this node holds."""
    from ffnode.learner import Progress, weights_to_bytes

    store = learner.store
    revoked = {aid for r in store.revocations() for aid in r.ids}
    live_experts = store.live("expert")
    tainted = sorted({m.id for m in live_experts if revoked & set(m.lineage)})
    report: dict[str, Any] = {
        "revoked_ids": sorted(revoked),
        "live_experts": len(live_experts),
        "live_lineage_clean": not tainted,
        "tainted_experts": tainted,
        "expert": None,
        "bitwise_identical": None,
    }
    current = learner.current_expert()
    if current is None:
        return report
    factories = [store.get(aid) for aid in current.lineage]
    held = [m for m in factories if m is not None and store.blob_path(m.blob) is not None]
    report["expert"] = current.id
    if len(held) != len(current.lineage):
        report["error"] = "some lineage factories are not held here, so the expert cannot be rebuilt"
        return report
    t0 = time.perf_counter()
    weights, _ = learner.build_expert(held, current.arch, current.seed, Progress(), use_cache=False)
    rebuilt = weights_to_bytes(weights)
    report.update(
        bitwise_identical=hashlib.sha256(rebuilt).hexdigest() == current.blob,
        rebuilt_sha256=hashlib.sha256(rebuilt).hexdigest(),
        published_sha256=current.blob,
        seconds=round(time.perf_counter() - t0, 2),
    )
    return report
