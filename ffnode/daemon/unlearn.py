"""Exact unlearning: signed revocation, the cascade it triggers, and the proof that it was exact.

FederatedFactory's claim (arXiv 2603.16370, Sec. unlearning): because site d's contribution to every
other site is confined to its generators Γ_{d,·}, withdrawing it needs no federation-wide retraining:
delete Γ_{d,·} and retrain only the experts whose lineage contains them. An expert here is a
deterministic function  f = Train(real_d ∪ ⋃_{Γ ∈ lineage} Sample(Γ, seed), seed, config)  (jobs/build.py,
run as a job), so the retrained expert must be bitwise equal to one trained from scratch on the remaining
lineage: the proof, which rebuilds it in a job of its own, without the synthetic-set cache.

The cascade has one path, `Unlearning.forget`, for revocations this node signs and for those it accepts
from peers alike: it listens to the store's "revoked" events. The store has already deleted the revoked blobs
and tombstoned the IDs (and tells the learner, which retrains any expert whose lineage lost a factory and
revokes the superseded one); forget deletes what this node derived from them: the cached synthetic sets, and for
its own factories the factory cache's entries trained on its images of their classes (jobs.factory_cache).

A stopped node revokes and leaves too (`offline`): the revocation is signed with the key in its home into its
store, and peers get it when it next starts (they sync its inventory on connecting, and its learner retrains
what the revocation took, as after any start). Leaving also deletes what was derived from the site's data under
`work/` (factory checkpoints, EMA snapshots, audit records, synthetic sets) and the factory cache's entries of its
images, published or withheld: `erase_derived`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.revocation import MAX_IDS, Revocation
from ffnode.artifacts.store import Store, StoreEvent, limits_of, trust_of
from ffnode.config import Config
from ffnode.daemon.outbox import Outbox
from ffnode.identity import load_identity
from ffnode.jobs.factorycache import FactoryCache, class_digests, open_factory_cache
from ffnode.jobs.spec import JobResult
from ffnode.jobs.synthcache import SynthCache
from ffnode.voters import candidates

log = logging.getLogger("ffnode.unlearn")

WORK = "work"  # in the node's home: everything there is derived from the site's data or from peers' factories
DATA_FILE = "data.npz"  # under work/: the local images as jobs read them; deleted with it when the site leaves


async def _nothing_runs() -> None:
    """A stopped node runs no job."""


class Unlearning:
    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        cache: SynthCache,
        halt: Callable[[], Awaitable[None]] = _nothing_runs,
        factories: FactoryCache | None = None,
    ) -> None:
        self.store, self.outbox, self.cache, self.factories = store, outbox, cache, factories
        self.halt = halt  # kills the running job, so none writes under work/ once it is erased
        store.listen(self._on_event)

    def _on_event(self, event: StoreEvent) -> None:
        if event.kind == "revoked":
            self.forget(event.ids)

    def forget(self, ids: Iterable[str]) -> None:
        """After a revocation is stored (own or a peer's): delete the synthetic sets drawn from its artifacts, and
        the factory cache's entries of the classes of own revoked factories."""
        revoked = set(ids)
        purged = self.cache.purge(revoked)
        if purged:
            log.info("deleted %d synthetic set(s) drawn from revoked factories", purged, extra={"ids": sorted(revoked)})
        me, own = self.outbox.me, [self.store.get(aid) for aid in revoked if self.store.is_revoked(aid)]
        labels = {c for m in own if m is not None and m.kind == "factory" and m.owner == me for c in m.classes}
        if labels:
            self.purge_factories(labels)

    def purge_factories(self, labels: set[int] | None = None) -> int:
        """Delete the factory cache's entries trained on this site's images of `labels` (None: of every class it
        holds); returns how many. Without its images (work/data.npz unreadable) it deletes every entry of those
        classes, whoever's: more than needed costs a retraining, less would break exact unlearning."""
        if self.factories is None:
            return 0
        try:
            with np.load(self.outbox.home / WORK / DATA_FILE) as z:
                images, have = z["images"], z["labels"]
            classes = labels if labels is not None else set(have.tolist())
            purged = self.factories.purge(class_digests(images, have, classes))
        except (OSError, ValueError, KeyError):
            if labels is None:  # the classes it published factories of (a withheld one it cannot name)
                labels = {c for m in self.outbox.own() if m.kind == "factory" for c in m.classes}
            purged = self.factories.purge_where(lambda index: index.get("label") in labels)
        if purged:
            log.info("deleted %d factory cache entr(ies) trained on this site's images", purged)
        return purged

    def forget_all_revoked(self) -> None:
        """At start: a crash between storing a revocation and purging must not keep derived data."""
        self.forget({aid for r in self.store.revocations() for aid in r.ids})

    async def revoke(self, ids: list[str], *, reason: str) -> Revocation:
        """Withdraw some of this node's own artifacts everywhere (the outbox signs, the store's event makes
        `forget` run, then it is gossiped)."""
        return await self.outbox.revoke(ids, reason=reason)

    async def leave(self, *, reason: str = "left the federation") -> list[Revocation]:
        """The right to be forgotten: revoke everything this node ever published and stop taking part.

        Marked first, so nothing new is signed meanwhile; a node that crashes before its revocations are
        all signed finishes them at its next start (`finish_leaving`)."""
        self.outbox.mark_left()
        return await self.finish_leaving(reason=reason)

    async def finish_leaving(self, *, reason: str = "left the federation") -> list[Revocation]:
        """Revoke whatever this node still has unrevoked once it has left (nothing if it has not), then delete what
        it derived from its data (also at start: after a crash in the middle, or a training run that wrote on)."""
        if not self.outbox.left:
            return []
        live = self.outbox.own_unrevoked()
        done = [await self.revoke(live[i : i + MAX_IDS], reason=reason) for i in range(0, len(live), MAX_IDS)]
        await self.halt()
        await asyncio.to_thread(self.erase_derived)
        return done

    def erase_derived(self) -> list[Path]:
        """Delete everything under the home's work/ (factory checkpoints, EMA snapshots and audit records, the
        synthetic sets, the copy of the images jobs read: all derived from this site's data or from factories) and
        the factory cache's entries of this site's images; returns what was deleted under work/. The caller has
        halted the running job, so none writes a checkpoint after it."""
        self.purge_factories()  # before the images it reads are deleted
        work = self.outbox.home / WORK
        if not work.is_dir():
            return []
        deleted: list[Path] = []
        for entry in sorted(work.iterdir()):
            if entry == self.cache.folder:  # the cache's folder stays: the running node holds it
                deleted += [_delete(p) for p in sorted(entry.iterdir())]
            else:
                deleted.append(_delete(entry))
        if deleted:
            log.info("deleted %d file(s) and folder(s) derived from this site's data under %s", len(deleted), work)
        return deleted


def _delete(path: Path) -> Path:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    return path


async def _at_next_start(envelope: bytes) -> None:
    """A stopped node gossips nothing: its peers get what it signed by sync when it next starts."""


def offline(home: Path) -> Unlearning:
    """The unlearning of the stopped node in `home`: its store and its own key, nothing on the network. The caller
    holds the home's lock (no node may start meanwhile)."""
    config, identity = Config.load(home), load_identity(home)
    fed = config.federation
    store = Store(
        home / "store",
        federation=fed.name,
        classes=fed.classes,
        trust=trust_of(config, identity.peer_id),
        limits=limits_of(config),
    )
    outbox = Outbox(home, identity, store, fed.name, fed.classes, _at_next_start)
    factories = open_factory_cache(config.jobs.factory_cache, home)
    return Unlearning(store, outbox, SynthCache(home / WORK / "synth"), factories=factories)


async def verify_unlearning(
    store: Store, current: Manifest | None, rebuild: Callable[[list[Manifest], Manifest], Awaitable[JobResult]]
) -> dict[str, Any]:
    """Retrain `current` (this node's expert) from scratch on its recorded lineage and compare bytes; check
    that nothing this node uses derives from a revoked ID. A peer's live expert whose lineage is revoked (its
    owner has not retrained it yet, or is offline) is held but excluded from every query (query.ExpertPool):
    it is reported in `excluded_tainted_experts`, and is a failure only if this node's own expert is tainted.
    `rebuild(factories, current)` runs the expert's job again from its lineage, without any cache."""
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
    built = await rebuild(held, current)
    if not built.ok:
        report["error"] = f"the rebuild failed: {built.error}"
        return report
    rebuilt = hashlib.sha256(built.blob.read_bytes()).hexdigest()
    report.update(
        bitwise_identical=rebuilt == current.blob,
        rebuilt_sha256=rebuilt,
        published_sha256=current.blob,
        seconds=round(time.perf_counter() - t0, 2),
    )
    return report
