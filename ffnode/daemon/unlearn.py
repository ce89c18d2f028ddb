"""Exact unlearning: signed revocation, the cascade it triggers, and the proof that it was exact.

FederatedFactory's claim (arXiv 2603.16370, Sec. unlearning): because site d's contribution to every
other site is confined to its generators Γ_{d,·}, withdrawing it needs no federation-wide retraining:
delete Γ_{d,·} and retrain only the experts whose lineage contains them. An expert here is a
deterministic function  f = Train(real_d ∪ ⋃_{Γ ∈ lineage} Sample(Γ, seed), seed, config)  (build.py),
so the retrained expert must be bitwise equal to one trained from scratch on the remaining lineage: the proof.

The cascade has one path, `Unlearning.forget`, for revocations this node signs and for those it accepts
from peers alike. The store has already deleted the revoked blobs and tombstoned the IDs (and wakes the
learner, which retrains any expert whose lineage lost a factory and revokes the superseded one);
forget deletes what this node derived from them: the cached synthetic sets.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.revocation import MAX_IDS, Revocation
from ffnode.artifacts.store import Store
from ffnode.daemon.build import SynthCache, make_expert, weights_to_bytes
from ffnode.daemon.outbox import Outbox
from ffnode.daemon.progress import Progress
from ffnode.data.sources import ImageSet
from ffnode.query import candidates

log = logging.getLogger("ffnode.unlearn")


class Unlearning:
    def __init__(self, store: Store, outbox: Outbox, cache: SynthCache) -> None:
        self.store, self.outbox, self.cache = store, outbox, cache

    def forget(self, ids: list[str] | set[str]) -> None:
        """After a revocation is stored (own or a peer's): delete the synthetic sets drawn from its artifacts."""
        purged = self.cache.purge(set(ids))
        if purged:
            log.info("deleted %d synthetic set(s) drawn from revoked factories", purged)

    def forget_all_revoked(self) -> None:
        """At start: a crash between storing a revocation and purging must not keep derived data."""
        self.forget({aid for r in self.store.revocations() for aid in r.ids})

    async def revoke(self, ids: list[str], *, reason: str) -> Revocation:
        """Withdraw some of this node's own artifacts everywhere: sign and store, forget, then gossip."""
        r, envelope = self.outbox.sign_revocation(ids, reason=reason)
        self.forget(r.ids)
        await self.outbox.gossip(envelope)
        return r

    async def leave(self, *, reason: str = "left the federation") -> list[Revocation]:
        """The right to be forgotten: revoke everything this node ever published and stop taking part.

        Marked first, so nothing new is signed meanwhile; a node that crashes before its revocations are
        all signed finishes them at its next start (`finish_leaving`)."""
        self.outbox.mark_left()
        return await self.finish_leaving(reason=reason)

    async def finish_leaving(self, *, reason: str = "left the federation") -> list[Revocation]:
        """Revoke whatever this node still has unrevoked once it has left (nothing if it has not)."""
        if not self.outbox.left:
            return []
        live = self.outbox.own_unrevoked()
        return [await self.revoke(live[i : i + MAX_IDS], reason=reason) for i in range(0, len(live), MAX_IDS)]


def verify_unlearning(
    store: Store,
    data: ImageSet,
    current: Manifest | None,
    class_names: list[str],
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Retrain `current` (this node's expert) from scratch on its recorded lineage and compare bytes; check
    that nothing this node uses derives from a revoked ID. A peer's live expert whose lineage is revoked (its
    owner has not retrained it yet, or is offline) is held but excluded from every query (query.ExpertPool):
    it is reported in `excluded_tainted_experts`, and is a failure only if this node's own expert is tainted.
    `should_stop` aborts the rebuild (Stopping) when the node shuts down."""
    revoked = {aid for r in store.revocations() for aid in r.ids}
    live_experts = store.live("expert")
    tainted = sorted({m.id for m in live_experts if any(store.is_revoked(aid) for aid in m.lineage)})
    answering = candidates(store)
    report: dict[str, Any] = {
        "revoked_ids": sorted(revoked),
        "live_experts": len(live_experts),
        # nothing that answers queries, and not this node's own expert, derives from a revoked ID
        "live_lineage_clean": not ({m.id for m in answering} | ({current.id} if current else set())) & set(tainted),
        "excluded_tainted_experts": tainted,
        "expert": None,
        "bitwise_identical": None,
    }
    if current is None:
        return report
    factories = [store.get(aid) for aid in current.lineage]
    held = [m for m in factories if m is not None and store.blob_path(m.blob) is not None]
    report["expert"] = current.id
    if len(held) != len(current.lineage):
        report["error"] = "some lineage factories are not held here, so the expert cannot be rebuilt"
        return report
    t0 = time.perf_counter()
    built = make_expert(
        data,
        store,
        held,
        current.arch,
        current.seed,
        cache=None,
        progress=Progress(),
        class_names=class_names,
        should_stop=should_stop,
    )
    rebuilt = hashlib.sha256(weights_to_bytes(built.weights, current.owner)).hexdigest()
    report.update(
        bitwise_identical=rebuilt == current.blob,
        rebuilt_sha256=rebuilt,
        published_sha256=current.blob,
        seconds=round(time.perf_counter() - t0, 2),
    )
    return report
