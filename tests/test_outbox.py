"""daemon/outbox.py and daemon/unlearn.py on a real store, without a network: what this node signs, in
which order, what it refuses to sign, and how leaving finishes after a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ffnode.artifacts.blob import weights_to_bytes
from ffnode.artifacts.codec import decode
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.daemon.outbox import HasLeft, Outbox
from ffnode.daemon.unlearn import Unlearning
from ffnode.identity import Identity
from ffnode.jobs.synthcache import SynthCache

CLASSES = ["0", "1", "2"]


class Gossip:
    """Records what the outbox gossips, in order."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def __call__(self, envelope: bytes) -> None:
        self.sent.append(decode(envelope)["t"])


def make(tmp_path: Path, seed: bytes = b"\x01" * 32) -> tuple[Outbox, Unlearning, Store, Gossip]:
    store = Store(tmp_path / "store", federation="testnet")
    gossip = Gossip()
    outbox = Outbox(tmp_path, Identity(seed), store, "testnet", CLASSES, gossip)
    return outbox, Unlearning(store, outbox, SynthCache(tmp_path / "synth")), store, gossip


async def publish(outbox: Outbox, kind: str = "factory", label: int = 0) -> Manifest:
    blob = weights_to_bytes({"w": torch.full((4,), float(label))}, outbox.me)  # as a job writes it
    return await outbox.publish(kind, [label], {"x": 1}, blob, [], 7, {"seconds": 1.5, "bad": float("nan")})


async def test_publish_stores_then_gossips_with_fresh_sequence_numbers(tmp_path: Path) -> None:
    outbox, _, store, gossip = make(tmp_path)
    changes: list[str] = []
    store.listen(lambda event: changes.append(event.kind))
    a, b = await publish(outbox, label=0), await publish(outbox, label=1)
    assert (a.seq, b.seq) == (1, 2)
    assert gossip.sent == ["manifest", "manifest"]
    assert store.entry(a.id).state == "live" and changes == ["stored", "stored"]  # each told the listeners
    assert a.meta == {"seconds": 1.5}  # NaN never goes into a signed manifest
    assert [m.id for m in outbox.own()] == [a.id, b.id]


async def test_only_own_unrevoked_artifacts_can_be_revoked(tmp_path: Path) -> None:
    outbox, unlearning, store, _ = make(tmp_path)
    other, *_ = make(tmp_path / "other", seed=b"\x02" * 32)
    theirs = await publish(other, label=2)
    store.add(other.store._raw[theirs.id])  # noqa: SLF001 - a peer's manifest as sync would bring it
    with pytest.raises(PermissionError):
        await unlearning.revoke([theirs.id], reason="not mine")
    mine = await publish(outbox)
    r = await unlearning.revoke([mine.id], reason="test")
    assert r.seq > mine.seq and store.is_revoked(mine.id)
    with pytest.raises(ValueError, match="already revoked"):
        await unlearning.revoke([mine.id], reason="twice")


async def test_a_node_that_left_signs_nothing_new_and_finishes_leaving_at_start(tmp_path: Path) -> None:
    outbox, unlearning, store, _ = make(tmp_path)
    factory = await publish(outbox)
    expert = await publish(outbox, "expert", 0)
    outbox.mark_left()  # a crash right after the mark: nothing revoked yet
    with pytest.raises(HasLeft):
        await publish(outbox, label=1)
    restarted, unlearning_again, store_again, _ = make(tmp_path)
    revocations = await unlearning_again.finish_leaving()
    assert sorted(i for r in revocations for i in r.ids) == sorted([factory.id, expert.id])
    assert restarted.own_unrevoked() == []
    assert await unlearning_again.finish_leaving() == []  # idempotent
    fresh, unlearning_fresh, *_ = make(tmp_path / "stays")
    await publish(fresh)
    assert await unlearning_fresh.finish_leaving() == []  # a node that did not leave revokes nothing


async def test_a_revocation_stored_from_anywhere_runs_the_one_cascade(tmp_path: Path) -> None:
    """The store tells its listeners "revoked": the unlearning cascade deletes the synthetic sets drawn from the
    revoked factory whether this node signed the revocation or a peer's arrived by gossip or sync."""
    outbox, unlearning, store, gossip = make(tmp_path)
    peer, *_ = make(tmp_path / "peer", seed=b"\x03" * 32)
    mine, theirs = await publish(outbox, label=0), await publish(peer, label=1)
    store.add(peer.store._raw[theirs.id])  # noqa: SLF001 - a peer's manifest as sync would bring it
    for m in (mine, theirs):
        unlearning.cache.put(m.classes[0], [m.id], 4, 0, np.zeros((4, 8, 8, 1), np.uint8), np.zeros(4, np.int64))
    events: list[tuple[str, tuple[str, ...]]] = []
    store.listen(lambda e: events.append((e.kind, e.ids)))
    await outbox.revoke([mine.id], reason="withdrawn")  # one call, as publishing
    r, _ = peer.sign_revocation([theirs.id], reason="left")
    store.add(peer.store._raw[r.id])  # noqa: SLF001 - the peer's revocation, as gossip brings it
    assert events == [("revoked", (mine.id,)), ("revoked", (theirs.id,))]
    assert not list(unlearning.cache.folder.glob("*.json"))  # both sets deleted by the cascade
    assert gossip.sent[-1] == "revocation"
