"""The store on its own: repair after a crash, blob ownership against copies, tombstones that bind only their
signer, compaction, trust applied to what is already held, and the per-publisher limits. The wire-level rules
are covered by the protocol vectors (test_protocol.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from ffnode.artifacts.codec import WireError
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.revocation import Revocation
from ffnode.artifacts.store import Limits, Store, Trust
from ffnode.identity import Identity

ALICE = Identity(bytes(range(32)))
MALLORY = Identity(b"\x05" * 32)


def weights(tag: bytes, owner: Identity = ALICE) -> bytes:
    """A small safetensors blob naming `owner`, different for every tag."""
    values = np.frombuffer(hashlib.sha256(tag).digest(), dtype=np.float32)
    return save_safetensors({"w": values.copy()}, metadata={"owner": owner.peer_id})


def manifest(data: bytes, seq: int, owner: Identity = ALICE, kind: str = "factory") -> Manifest:
    return Manifest(
        kind=kind,
        owner=owner.peer_id,
        owner_key=owner.public_key,
        federation="f",
        classes=[0],
        class_list=["a", "b"],
        arch={},
        blob=hashlib.sha256(data).hexdigest(),
        size=len(data),
        created=seq,
        seq=seq,
    )


def revocation(ids: list[str], seq: int, owner: Identity = ALICE) -> bytes:
    r = Revocation(owner.peer_id, owner.public_key, "f", sorted(ids), "test", seq, seq)
    return r.seal(owner)


def published(store: Store, data: bytes, seq: int, owner: Identity = ALICE, kind: str = "factory") -> Manifest:
    store.put_blob_bytes(data)
    m = manifest(data, seq, owner, kind)
    store.add(m.seal(owner))
    return m


def fetched(store: Store, m: Manifest, data: bytes) -> None:
    tmp = store.tmp_path(m.blob)
    tmp.write_bytes(data)
    store.put_blob_file(tmp, m)


def test_repair_discards_partial_corrupt_and_orphan_files(tmp_path: Path) -> None:
    store = Store(tmp_path, federation="f")
    good, bad = published(store, weights(b"good"), 1), published(store, weights(b"bad"), 2)
    (tmp_path / "blobs" / bad.blob).write_bytes(weights(b"bad!"))  # bit rot / torn write
    (tmp_path / "tmp" / "x.part").write_bytes(b"half a blob")
    orphan = store.put_blob_bytes(weights(b"a crash before its manifest"))

    reader = Store(tmp_path, federation="f")  # the CLI: looks, changes nothing
    assert (tmp_path / "tmp" / "x.part").exists() and (tmp_path / "blobs" / bad.blob).exists()
    assert (tmp_path / "blobs" / orphan).exists()

    node = Store(tmp_path, federation="f", repair=True)
    assert not any((tmp_path / "tmp").iterdir())
    assert node.entry(good.id).state == "live"
    assert node.entry(bad.id).state == "pending"  # fetched again from a peer
    assert not (tmp_path / "blobs" / orphan).exists()
    assert reader.entry(good.id).state == "live"


def test_damaged_files_never_fail_a_start_and_are_fetched_again(tmp_path: Path) -> None:
    """One flipped byte in a manifest, an empty manifest, a revocation whose type was bit-flipped, a rotten blob
    and temp files of interrupted writes: readers skip and name them, the node quarantines them, nothing fails,
    and the same envelopes from a peer are accepted again."""
    store = Store(tmp_path, federation="f")
    flipped, emptied, rotten = (published(store, weights(t), i + 1) for i, t in enumerate((b"a", b"b", b"c")))
    victim = published(store, weights(b"revoked"), 4)
    kill = revocation([victim.id], 5)
    rid = store.add(kill).id
    envelopes = {m.id: m.seal(ALICE) for m in (flipped, emptied)}
    path = tmp_path / "manifests" / f"{flipped.id}.msgpack"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    (tmp_path / "manifests" / f"{emptied.id}.msgpack").write_bytes(b"")
    rpath = tmp_path / "revocations" / f"{rid}.msgpack"
    rpath.write_bytes(rpath.read_bytes().replace(b"revocation", b"revncation"))
    (tmp_path / "blobs" / rotten.blob).write_bytes(weights(b"bit rot"))
    temps = [tmp_path / d / f".{rid}.msgpack.123.456.tmp" for d in ("manifests", "revocations")]
    for t in temps:
        t.write_bytes(b"half")

    reader = Store(tmp_path, federation="f")  # `ffnode artifacts` with the node stopped: no exception, no change
    assert len(reader.damaged) == 3 and all("msgpack" in d for d in reader.damaged)
    assert all(t.exists() for t in temps) and path.exists()
    rows = {r["id"]: r for r in reader.rows(["0"], verify=True)}
    assert rows[rotten.id]["state"] == "live" and rows[rotten.id]["verified"] is False  # hashed: caught
    assert {r["id"]: r for r in reader.rows(["0"])}[rotten.id]["verified"] is None  # not hashed: says so

    node = Store(tmp_path, federation="f", repair=True)
    assert len(node.damaged) == 4  # and the rotten blob
    assert not any(t.exists() for t in temps) and not path.exists()
    assert len(list((tmp_path / "quarantine").iterdir())) == 4
    assert node.entry(rotten.id).state == "pending"  # fetched again from a peer
    for aid, env in envelopes.items():  # a peer's sync offers them again
        assert node.add(env).id == aid
    assert node.add(kill).id == rid and node.entry(victim.id).state == "revoked"
    assert Store(tmp_path, federation="f", repair=True).damaged == []  # healed: the next start is clean


def test_fetched_blob_must_match_manifest(tmp_path: Path) -> None:
    store = Store(tmp_path, federation="f")
    data = weights(b"w")
    m = manifest(data, 1)
    store.add(m.seal(ALICE))
    for wrong in (data[:-1] + b"!", data[:-1], data + b"!"):
        tmp = store.tmp_path(m.blob)
        tmp.write_bytes(wrong)
        with pytest.raises(WireError, match="manifest says"):
            store.put_blob_file(tmp, m)
        assert not tmp.exists() and store.entry(m.id).state == "pending"
    fetched(store, m, data)
    assert store.entry(m.id).state == "live"


def test_a_copy_under_another_key_neither_shadows_nor_outlives_the_owner(tmp_path: Path) -> None:
    """Mallory re-signs Alice's blob as his own before this node sees Alice's manifest."""
    data = weights(b"alice's factory")
    alice, copy = manifest(data, 1), manifest(data, 1, MALLORY)
    store = Store(tmp_path, federation="f")
    store.add(copy.seal(MALLORY))  # the blob is not held yet: nothing to check it against
    store.add(alice.seal(ALICE))  # Alice's own is accepted, whoever was first
    with pytest.raises(WireError, match="names owner"):
        fetched(store, copy, data)  # the bytes name Alice: Mallory's manifest is invalid and dropped
    assert store.get(copy.id) is None
    fetched(store, alice, data)
    assert store.entry(alice.id).state == "live"
    with pytest.raises(WireError, match="names owner|was refused"):
        store.add(copy.seal(MALLORY))  # offered again once the blob is held
    store.add(revocation([alice.id], 2))  # Alice's revocation is honoured and nothing of hers stays
    assert store.entry(alice.id).state == "revoked" and not (tmp_path / "blobs" / alice.blob).exists()
    assert store.blob_path(alice.blob) is None


def test_a_tombstone_binds_only_its_signer(tmp_path: Path) -> None:
    store = Store(tmp_path, federation="f")
    data = weights(b"w")
    m = manifest(data, 1)
    store.add(revocation([m.id], 5, MALLORY))  # Mallory "revokes" Alice's artifact before it is known
    store.add(m.seal(ALICE))
    fetched(store, m, data)
    assert store.entry(m.id).state == "live" and not store.is_revoked(m.id)


def test_a_revoked_expert_is_compacted_to_its_tombstone(tmp_path: Path) -> None:
    store = Store(tmp_path, federation="f")
    expert = published(store, weights(b"expert"), 1, kind="expert")
    store.add(revocation([expert.id], 2))
    assert store.get(expert.id) is None  # only its tombstone is left
    assert not (tmp_path / "manifests" / f"{expert.id}.msgpack").exists()
    row = next(r for r in store.rows(["0"]) if r["id"] == expert.id)
    assert (row["kind"], row["state"]) == ("-", "revoked")
    with pytest.raises(WireError, match="was revoked"):
        Store(tmp_path, federation="f").add(expert.seal(ALICE))  # also after a restart
    assert [aid for aid, _ in store.inventory()[0]] == []


def test_trust_applies_to_what_is_held_and_revocations_still_count(tmp_path: Path) -> None:
    store = Store(tmp_path, federation="f")
    m = published(store, weights(b"mallory's", MALLORY), 1, MALLORY)
    assert store.entry(m.id).state == "live"
    store.set_trust(Trust(denied=frozenset({MALLORY.peer_id})))
    assert store.entry(m.id).state == "untrusted" and store.live() == [] and store.blob_path(m.blob) is None
    restarted = Store(tmp_path, federation="f", trust=Trust(allowed=frozenset({ALICE.peer_id})))
    assert restarted.entry(m.id).state == "untrusted"
    restarted.add(revocation([m.id], 2, MALLORY))  # an untrusted owner still withdraws what it published
    assert restarted.entry(m.id).state == "revoked" and not (tmp_path / "blobs" / m.blob).exists()
    quarantined = Store(tmp_path, federation="f", trust=Trust(quarantined=frozenset({m.id})))
    assert quarantined.entry(m.id).state == "revoked"  # revocation outranks quarantine


def test_one_publisher_cannot_fill_the_store(tmp_path: Path) -> None:
    limits = Limits(manifests_per_publisher=3, blob_bytes_per_publisher=10_000, store_bytes=20_000, publishers=2)
    store = Store(tmp_path, federation="f", limits=limits)
    for seq in (1, 2, 3):
        store.add(manifest(weights(b"%d" % seq, MALLORY), seq, MALLORY).seal(MALLORY))
    with pytest.raises(WireError, match="manifests_per_publisher"):
        store.add(manifest(weights(b"4", MALLORY), 4, MALLORY).seal(MALLORY))
    big = Manifest(**{**manifest(weights(b"big"), 1).body(), "size": 10_001})
    with pytest.raises(WireError, match="blob_mb_per_publisher"):
        store.add(big.seal(ALICE))
    store.add(manifest(weights(b"alice"), 2).seal(ALICE))  # Alice's share is her own
    third = Identity(b"\x03" * 32)
    with pytest.raises(WireError, match="publishers"):
        store.add(manifest(weights(b"x", third), 1, third).seal(third))
    many = revocation([hashlib.sha256(b"%d" % i).hexdigest() for i in range(5)], 9, ALICE)
    with pytest.raises(WireError, match="tombstones_per_publisher"):
        Store(tmp_path / "t", federation="f", limits=Limits(tombstones_per_publisher=4)).add(many)


def test_revocations_cannot_bypass_the_tombstone_quota(tmp_path: Path) -> None:
    store = Store(tmp_path, federation="f", limits=Limits(tombstones_per_publisher=10))
    mine = published(store, weights(b"f", MALLORY), 1, MALLORY)
    store.add(revocation([mine.id], 2, MALLORY))  # freeing a held artifact: always honoured
    junk = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(20)]
    with pytest.raises(WireError, match="tombstones_per_publisher"):
        store.add(revocation([mine.id, *junk], 3, MALLORY))  # naming a revoked one again frees nothing
    with pytest.raises(WireError, match="twice"):
        store.add(revocation([junk[0], junk[0]], 4, MALLORY))


def test_pending_manifests_reserve_no_store_space(tmp_path: Path) -> None:
    data = weights(b"honest")
    store = Store(tmp_path, federation="f", limits=Limits(store_bytes=len(data) + 10))
    for seq in range(1, 6):  # blobs nobody serves: pending for ever
        store.add(manifest(weights(b"%d" % seq, MALLORY), seq, MALLORY).seal(MALLORY))
    m = manifest(data, 1)
    store.add(m.seal(ALICE))
    fetched(store, m, data)  # an honest blob still fits
    assert store.entry(m.id).state == "live"


def test_a_tainted_peer_expert_left_out_of_queries_is_no_unlearning_failure(tmp_path: Path) -> None:
    """Mallory's expert derives from Alice's factory, which Alice revoked; Mallory is offline and never retrains.
    Queries leave his expert out, so the proof passes and names it; it fails only for a tainted own expert."""
    from ffnode.daemon.unlearn import verify_unlearning
    from ffnode.voters import candidates

    store = Store(tmp_path, federation="f")
    factory = published(store, weights(b"f"), 1)
    tainted = published_expert(store, weights(b"e", MALLORY), 1, MALLORY, lineage=[factory.id])
    clean = published_expert(store, weights(b"e2"), 2, ALICE, lineage=[])
    store.add(revocation([factory.id], 3))
    assert [m.id for m in candidates(store)] == [clean.id]

    async def never(*_: object) -> None:
        raise AssertionError("nothing to rebuild: the own expert's lineage is not held")

    proof = asyncio.run(verify_unlearning(store, None, never))  # type: ignore[arg-type]
    assert proof["live_lineage_clean"] and proof["excluded_tainted_experts"] == [tainted.id]
    own = asyncio.run(verify_unlearning(store, tainted, never))  # type: ignore[arg-type]
    assert not own["live_lineage_clean"]


def published_expert(store: Store, data: bytes, seq: int, owner: Identity, lineage: list[str]) -> Manifest:
    store.put_blob_bytes(data)
    m = dataclasses.replace(manifest(data, seq, owner, "expert"), lineage=lineage)
    store.add(m.seal(owner))
    return m


def test_a_peers_factory_without_a_passing_audit_is_refused_held_but_never_used(tmp_path: Path) -> None:
    from ffnode.privacy.policy import AuditPolicy

    store = Store(tmp_path, federation="f", trust=Trust(audits=AuditPolicy(), me=ALICE.peer_id))
    own = published(store, weights(b"own"), 1)  # this node's own factory passed its own audit before it was published
    theirs = published(store, weights(b"theirs", MALLORY), 1, owner=MALLORY)
    entry = store.entry(theirs.id)
    assert entry.state == "refused" and "no privacy audit" in entry.reason
    assert [m.id for m in store.live()] == [own.id]  # its blob is held, yet it is not used (nor ever fetched)
    store.set_trust(Trust(me=ALICE.peer_id))  # an operator who no longer requires audits
    assert store.entry(theirs.id).state == "live"


def test_manifests_of_another_class_list_or_federation_are_set_aside_at_load(tmp_path: Path) -> None:
    """The operator reordered the classes (or renamed the federation) after the store filled: what was accepted
    under the old identity is never used or served under the new one, and the node says so."""
    store = Store(tmp_path, federation="f", classes=["a", "b"], repair=True)
    m = store.add(manifest(weights(b"x"), 1).seal(ALICE))
    assert m is not None and store.knows(manifest(weights(b"x"), 1).seal(ALICE))
    reader = Store(tmp_path, federation="f", classes=["b", "a"])  # the CLI: looks, moves nothing
    assert reader.entries() == []
    assert "['a', 'b'] (2 classes) is not this federation's ['b', 'a']" in reader.damaged[0]
    assert Store(tmp_path, federation="g", classes=["a", "b"]).entries() == []
    node = Store(tmp_path, federation="f", classes=["b", "a"], repair=True)  # the node: into quarantine/, logged
    assert node.entries() == [] and node.inventory() == ([], [])
    assert not (tmp_path / "manifests" / f"{m.id}.msgpack").exists()
    assert any(p.name.startswith("manifests-") for p in (tmp_path / "quarantine").iterdir())


def test_a_compacted_experts_seq_no_longer_counts_as_after_a_restart(tmp_path: Path) -> None:
    """The replay check looks at held messages only: a running node and a restarted one (which cannot know the
    compacted manifest's seq) must give the same verdict, and a revoked factory, kept, keeps its seq."""
    store = Store(tmp_path, federation="f")
    expert = published(store, weights(b"expert"), 1, kind="expert")
    factory = published(store, weights(b"factory"), 2)
    store.add(revocation([expert.id, factory.id], 3))
    again = manifest(weights(b"new"), 1)  # the compacted expert's seq
    replay = manifest(weights(b"newer"), 2)  # the revoked factory's seq: it is still held
    restarted = Store(tmp_path, federation="f")  # the same store, loaded from disk
    for node in (store, restarted):
        assert node.add(again.seal(ALICE)) is not None
        with pytest.raises(WireError, match="replayed sequence number"):
            node.add(replay.seal(ALICE))
