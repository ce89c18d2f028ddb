"""Invite-only federations (issue 34 item 6): the charter and membership rules on a store, the charter files the
CLI passes between founders, and real daemons on 127.0.0.1: a Sybil flood of 200 fresh keys costs only rejected
messages, an invited site joins with one command, a removed member is dropped everywhere."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from ffnode.artifacts.charter import Charter, Membership, cosign, open_charter, open_membership, seal_cosigned
from ffnode.artifacts.codec import WireError, canonical_bytes, decode
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.revocation import Revocation
from ffnode.artifacts.store import CHARTER_FILE, Store, Trust
from ffnode.identity import Identity
from ffnode.net.sync import inventory_page, parse_inventory_response

ALICE, BOB, CAROL = Identity(bytes(range(32))), Identity(b"\x01" * 32), Identity(b"\x02" * 32)
DAVE, MALLORY = Identity(b"\x04" * 32), Identity(b"\x05" * 32)


def make_charter(*founders: Identity, threshold: int = 2, federation: str = "f") -> bytes:
    body = {"federation": federation, "founders": sorted(f.public_key for f in founders), "threshold": threshold,
            "created": 1}  # fmt: skip
    data = seal_cosigned("charter", body, founders[0])
    for f in founders[1:]:
        data = cosign(data, f)
    return data


CHARTER = make_charter(ALICE, BOB, CAROL)
CHARTER_ID = open_charter(CHARTER).id


def membership(peer: Identity, action: str, seq: int, *signers: Identity, charter: str = CHARTER_ID) -> bytes:
    data = seal_cosigned("membership", Membership(charter, peer.peer_id, action, seq, seq).body(), signers[0])
    for s in signers[1:]:
        data = cosign(data, s)
    return data


def sealed_manifest(owner: Identity, seq: int, tag: bytes = b"") -> tuple[Manifest, bytes]:
    data = save_safetensors({"w": np.frombuffer(hashlib.sha256(tag + owner.public_key).digest(), np.float32).copy()},
                            metadata={"owner": owner.peer_id})  # fmt: skip
    m = Manifest("factory", owner.peer_id, owner.public_key, "f", [0], ["a", "b"], {}, hashlib.sha256(data).hexdigest(),
                 len(data), seq, seq)  # fmt: skip
    return m, data


def chartered_store(root: Path) -> Store:
    root.mkdir(parents=True, exist_ok=True)
    (root / CHARTER_FILE).write_bytes(CHARTER)
    return Store(root, federation="f", classes=["a", "b"], trust=Trust(charter=CHARTER_ID), repair=True)


def test_a_charter_needs_every_founder_and_a_membership_message_the_threshold(tmp_path: Path) -> None:
    charter = open_charter(CHARTER)
    assert charter.founder_ids == {ALICE.peer_id, BOB.peer_id, CAROL.peer_id} and charter.threshold == 2
    with pytest.raises(WireError, match="exactly its founders"):
        open_charter(cosign(make_charter(ALICE, BOB), MALLORY))  # a key that is no founder signed too
    two_of_three = seal_cosigned("charter", decode(CHARTER)["body"], ALICE)
    with pytest.raises(WireError, match="exactly its founders"):
        open_charter(cosign(two_of_three, BOB))
    for body, why in (({"threshold": 4}, "threshold"), ({"threshold": 0}, "threshold"),
                      ({"founders": [BOB.public_key, ALICE.public_key]}, "ascending"),
                      ({"federation": "a/b"}, "federation")):  # fmt: skip
        with pytest.raises(WireError, match=why):
            Charter.from_body(decode(CHARTER)["body"] | body)
    with pytest.raises(ValueError, match="signed this"):
        cosign(CHARTER, ALICE)
    assert open_membership(membership(DAVE, "admit", 1, ALICE, BOB), charter).signers == {ALICE.peer_id, BOB.peer_id}
    for data, why in (
        (membership(DAVE, "admit", 1, ALICE), "only 1 founders"),
        (membership(DAVE, "admit", 1, ALICE, MALLORY), "not a founder"),
        (membership(DAVE, "admit", 1, ALICE, BOB, charter="ab" * 32), "not this federation's"),
        (membership(ALICE, "remove", 1, BOB, CAROL), "founder cannot be removed"),
    ):
        with pytest.raises(WireError, match=why):
            open_membership(data, charter)
    env = decode(membership(DAVE, "admit", 1, ALICE, BOB))
    env["sigs"][1]["sig"] = env["sigs"][0]["sig"]  # Bob's key under Alice's signature
    with pytest.raises(WireError, match="bad signature"):
        open_membership(canonical_bytes(env), charter)
    env["sigs"][1] = env["sigs"][0]
    with pytest.raises(WireError, match="signs twice"):
        open_membership(canonical_bytes(env), charter)


def test_membership_applies_to_what_is_held_and_only_the_newest_counts(tmp_path: Path) -> None:
    store = chartered_store(tmp_path / "s")
    dave, dave_blob = sealed_manifest(DAVE, 1)
    with pytest.raises(WireError, match="not a member"):
        store.add(dave.seal(DAVE))
    with pytest.raises(WireError, match="not a member"):  # a revocation naming nothing held, by a non-member
        store.add(Revocation(DAVE.peer_id, DAVE.public_key, "f", ["ab" * 32], "x", 1, 2).seal(DAVE))
    alice, _ = sealed_manifest(ALICE, 1)
    assert store.add(alice.seal(ALICE)) is not None  # a founder is a member without admission
    assert store.add(membership(DAVE, "admit", 1, ALICE, BOB)) is not None
    assert store.add(membership(DAVE, "admit", 1, ALICE, BOB)) is None  # a duplicate
    store.add(dave.seal(DAVE))
    tmp = store.tmp_path(dave.blob)
    tmp.write_bytes(dave_blob)
    store.put_blob_file(tmp, dave)
    assert store.entry(dave.id).state == "live"
    served = [aid for aid, _ in store.inventory()[0]]
    assert dave.id in served
    changes: list[str] = []
    store.listen(lambda e: changes.append(e.kind))
    assert store.add(membership(DAVE, "remove", 2, BOB, CAROL)) is not None
    assert changes == ["trust"] and store.entry(dave.id).state == "untrusted"  # retroactive, like a block
    assert dave.id not in [aid for aid, _ in store.inventory()[0]]  # nobody else would take it
    with pytest.raises(WireError, match="not newer"):  # a peer that missed the removal offers the admission
        store.add(membership(DAVE, "admit", 1, ALICE, BOB))
    with pytest.raises(WireError, match="not a member"):
        store.add(sealed_manifest(DAVE, 3, b"new")[0].seal(DAVE))
    # only the newest message of each peer is kept, and it survives a restart
    assert [p.name for p in (tmp_path / "s" / "members").iterdir()] == [f"{store.members()[DAVE.peer_id].id}.msgpack"]
    again = Store(tmp_path / "s", federation="f", classes=["a", "b"], trust=Trust(charter=CHARTER_ID))
    assert again.entry(dave.id).state == "untrusted" and not again.is_member(DAVE.peer_id)
    assert again.add(membership(DAVE, "admit", 3, ALICE, CAROL)) is not None
    assert again.entry(dave.id).state == "live"  # re-admitted: what it published is used again


def test_an_open_federation_is_unchanged_and_refuses_membership_messages(tmp_path: Path) -> None:
    store = Store(tmp_path, federation="f", classes=["a", "b"])
    assert store.is_member(MALLORY.peer_id) and store.memberships() == []
    with pytest.raises(WireError, match="pins no charter"):
        store.add(membership(DAVE, "admit", 1, ALICE, BOB))
    page = inventory_page([("ab" * 32, b"m")], [], "")
    assert b"members" not in page and parse_inventory_response(page) == ([b"m"], [], "", [])
    with pytest.raises(WireError, match="missing"):
        Store(tmp_path / "t", federation="f", trust=Trust(charter=CHARTER_ID))
    (tmp_path / "t" / CHARTER_FILE).write_bytes(make_charter(ALICE, BOB))
    with pytest.raises(WireError, match="not the pinned"):
        Store(tmp_path / "t", federation="f", trust=Trust(charter=CHARTER_ID))


def test_pages_carry_membership_messages_first() -> None:
    members = [("00" * 32, b"c1"), ("01" * 32, b"c2")]
    pages, cursor = [], ""
    while True:
        page = parse_inventory_response(inventory_page([("02" * 32, b"m")], [("03" * 32, b"r")], cursor, 1, members))
        pages.append(page)
        if not (cursor := page[2]):
            break
    assert [p[3] + p[0] + p[1] for p in pages] == [[b"c1"], [b"c2"], [b"m"], [b"r"]]
