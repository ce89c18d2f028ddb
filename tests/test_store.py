"""The store after a crash: partial transfers and blobs that do not match their name are discarded by the
node at start; readers (the CLI) never touch files. Acceptance rules are covered by the protocol vectors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ffnode.artifacts.codec import WireError
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.identity import Identity

ALICE = Identity(bytes(range(32)))


def manifest(data: bytes, seq: int) -> Manifest:
    return Manifest(
        kind="factory",
        owner=ALICE.peer_id,
        owner_key=ALICE.public_key,
        federation="f",
        classes=[0],
        arch={},
        blob=hashlib.sha256(data).hexdigest(),
        size=len(data),
        created=1,
        seq=seq,
    )


def published(store: Store, data: bytes, seq: int) -> Manifest:
    store.put_blob_bytes(data)
    m = manifest(data, seq)
    store.add(m.seal(ALICE))
    return m


def test_repair_discards_partial_and_corrupt_files(tmp_path: Path) -> None:
    store = Store(tmp_path, federation="f")
    good, bad = published(store, b"good weights", 1), published(store, b"bad weights", 2)
    (tmp_path / "blobs" / bad.blob).write_bytes(b"bad weightz")  # bit rot / torn write
    (tmp_path / "tmp" / "x.part").write_bytes(b"half a blob")

    reader = Store(tmp_path, federation="f")  # the CLI: looks, changes nothing
    assert (tmp_path / "tmp" / "x.part").exists() and (tmp_path / "blobs" / bad.blob).exists()

    node = Store(tmp_path, federation="f", repair=True)
    assert not any((tmp_path / "tmp").iterdir())
    assert node.entry(good.id).state == "live"
    assert node.entry(bad.id).state == "pending"  # fetched again from a peer
    assert reader.entry(good.id).state == "live"


def test_fetched_blob_must_match_manifest(tmp_path: Path) -> None:
    store = Store(tmp_path, federation="f")
    data = b"weights"
    m = manifest(data, 1)
    store.add(m.seal(ALICE))
    for wrong in (b"weightz", b"weight", b"weights!"):
        tmp = store.tmp_path(m.blob)
        tmp.write_bytes(wrong)
        with pytest.raises(WireError, match="manifest says"):
            store.put_blob_file(tmp, m)
        assert not tmp.exists() and store.entry(m.id).state == "pending"
    tmp = store.tmp_path(m.blob)
    tmp.write_bytes(data)
    store.put_blob_file(tmp, m)
    assert store.entry(m.id).state == "live"


def test_a_blob_belongs_to_one_owner(tmp_path: Path) -> None:
    """Otherwise anyone could name a victim's blob in a manifest of their own and keep it alive (and
    served, and used) after the victim revokes it."""
    store = Store(tmp_path, federation="f")
    published(store, b"victim weights", 1)
    mallory = Identity(b"\x05" * 32)
    squat = Manifest(
        **{**manifest(b"victim weights", 1).body(), "owner": mallory.peer_id, "owner_key": mallory.public_key}
    )
    with pytest.raises(WireError, match="already published by another owner"):
        store.add(squat.seal(mallory))
