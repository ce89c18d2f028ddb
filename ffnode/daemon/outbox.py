"""Everything this node signs goes out through here: seal -> store -> gossip.

The outbox owns what only this node can say: its sequence numbers, its own artifacts and which of them is
its current expert, its revocations, and whether it has left the federation (the `left` mark in its home;
a node that left signs nothing new). Signing, storing and gossiping happen in that order, so a node that
crashes after storing re-announces by sync, and one whose gossip fails is still heard by sync.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.revocation import Revocation
from ffnode.artifacts.store import Store
from ffnode.events import EventLog, manifest_fields, revocation_fields
from ffnode.identity import Identity

log = logging.getLogger("ffnode.outbox")

LEFT_FILE = "left"  # in the node's home: this node has left the federation for good


class HasLeft(RuntimeError):
    """This node left the federation: it publishes nothing new."""


class Outbox:
    def __init__(
        self,
        home: Path,
        identity: Identity,
        store: Store,
        federation: str,
        class_names: list[str],
        gossip: Callable[[bytes], Awaitable[None]],
        on_left: Callable[[], None] = lambda: None,
        events: EventLog | None = None,
    ) -> None:
        self.home, self.identity, self.store, self.federation = home, identity, store, federation
        self.class_names = class_names
        self.gossip = gossip  # best effort: peers that miss it get it by sync
        self.on_left = on_left  # the learner listens: leaving changes what it must do
        self.events = events or EventLog(home)  # the home's audit trail: what this node signed, and its leaving

    @property
    def me(self) -> str:
        return self.identity.peer_id

    # -- the left mark -------------------------------------------------------------------------------
    @property
    def left(self) -> bool:
        return (self.home / LEFT_FILE).exists()

    def mark_left(self) -> None:
        (self.home / LEFT_FILE).touch()
        self.events.record("left", self.me)
        self.on_left()

    # -- own artifacts -------------------------------------------------------------------------------
    def own(self) -> list[Manifest]:
        """Every manifest this node signed, revoked ones included (a revoked factory is not retrained)."""
        return [e.manifest for e in self.store.entries() if e.manifest.owner == self.me]

    def own_unrevoked(self) -> list[str]:
        return [e.manifest.id for e in self.store.entries() if e.manifest.owner == self.me and e.state != "revoked"]

    def current_expert(self) -> Manifest | None:
        """This node's newest live expert: the one it answers with and keeps."""
        experts = [m for m in self.store.live("expert") if m.owner == self.me]
        return max(experts, key=lambda m: m.seq) if experts else None

    # -- signing -------------------------------------------------------------------------------------
    async def publish(
        self,
        kind: str,
        classes: list[int],
        arch: dict[str, Any],
        data: bytes,
        lineage: list[str],
        seed: int,
        summary: dict[str, Any],
    ) -> Manifest:
        """Store the blob (`data`: a job's out/blob, naming this node as its owner), sign and store its manifest,
        gossip it."""
        if self.left:
            raise HasLeft(f"this node left the federation: it does not publish the {kind} it made")
        blob = self.store.put_blob_bytes(data)
        m = Manifest(
            kind=kind,
            owner=self.me,
            owner_key=self.identity.public_key,
            federation=self.federation,
            classes=classes,
            class_list=list(self.class_names),
            arch=arch,
            blob=blob,
            size=len(data),
            created=int(time.time() * 1000),
            seq=self.store.next_seq(self.me),
            lineage=lineage,
            seed=seed,
            meta=_plain(summary),
        )
        envelope = m.seal(self.identity)
        self.store.add(envelope)
        self.events.record("published", self.me, **manifest_fields(m))
        names = [self.class_names[c] for c in classes[:3]]
        log.info("published %s %s (%s, %.1f MB)", kind, m.id[:12], names, len(data) / 1e6,
                 extra={"artifact": m.id, "kind": kind})  # fmt: skip
        await self.gossip(envelope)
        return m

    async def revoke(self, ids: list[str], *, reason: str) -> Revocation:
        """Withdraw own artifacts everywhere, as publishing announces them: sign and store the revocation (the
        store tombstones the IDs, deletes the blobs and tells its listeners, so the unlearning cascade has
        deleted what was derived from them before), then gossip it."""
        r, envelope = self.sign_revocation(ids, reason=reason)
        await self.gossip(envelope)
        return r

    def sign_revocation(self, ids: list[str], *, reason: str) -> tuple[Revocation, bytes]:
        """Sign and store (the tombstone: the store deletes the blobs) a revocation of own artifacts; returns it
        and its envelope (a stopped node's peers get it by sync when it next starts)."""
        for aid in ids:
            m = self.store.get(aid)
            if m is None:
                raise KeyError(f"no artifact {aid[:12]} in this node's store")
            if m.owner != self.me:
                raise PermissionError(f"artifact {aid[:12]} belongs to {m.owner}: only its owner can revoke it")
            if self.store.is_revoked(aid):
                raise ValueError(f"artifact {aid[:12]} is already revoked")
        r = Revocation(
            owner=self.me,
            owner_key=self.identity.public_key,
            federation=self.federation,
            ids=sorted(ids),
            reason=reason,
            created=int(time.time() * 1000),
            seq=self.store.next_seq(self.me),
        )
        envelope = r.seal(self.identity)
        self.store.add(envelope)
        self.events.record("revoked", self.me, **revocation_fields(r))
        log.info("revoked %s: %s", [i[:12] for i in r.ids], reason, extra={"ids": r.ids})
        return r, envelope


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """Summaries go into a signed manifest: msgpack-able scalars, int lists and maps of them only, and no NaN or
    infinity (other runtimes may not re-encode them bit for bit, which would break the signature there)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):  # the privacy audit's figures
            out[k] = _plain(v)
        elif isinstance(v, bool | str):
            out[k] = v
        elif isinstance(v, int | np.integer):
            out[k] = int(v)
        elif isinstance(v, float | np.floating) and np.isfinite(v):
            out[k] = float(v)
        elif isinstance(v, list) and all(isinstance(x, int | np.integer) for x in v):
            out[k] = [int(x) for x in v]  # per-class label counts
    return out
