"""Invite-only federations (issue 34 item 6): the charter and membership rules on a store, the charter files the
CLI passes between founders, and real daemons on 127.0.0.1: a Sybil flood of 200 fresh keys costs only rejected
messages, an invited site joins with one command, a removed member is dropped everywhere."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from ffnode.artifacts.charter import Charter, Membership, cosign, open_charter, open_membership, seal_cosigned
from ffnode.artifacts.codec import WireError, canonical_bytes, decode
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.revocation import Revocation
from ffnode.artifacts.store import CHARTER_FILE, Store, Trust
from ffnode.daemon import control
from ffnode.identity import Identity
from ffnode.net.sync import inventory_page, parse_inventory_response
from harness.localnet import Daemons, status, wait_for
from tests.daemons import CLASSES, Peer, class_file, configure, free_port, owned_blob, signed_manifest

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


# -- real daemons: founders A (running) and B (a home that only signs), an invited site C, a member M -----------
def ffnode(*words: str) -> str:
    """The CLI in this process (no interpreter start per command); its stdout. It must succeed."""
    from typer.testing import CliRunner

    from ffnode.cli import app

    result = CliRunner().invoke(app, list(words))
    assert result.exit_code == 0, f"ffnode {' '.join(words)}: {result.output}{result.exception!r}"
    return result.stdout


def init(home: Path, data: Path, bootstrap: str = "") -> str:
    port = free_port()
    words = ["--home", str(home), "--listen", f"/ip4/127.0.0.1/tcp/{port}", "--data", str(data), "--classes",
             ",".join(CLASSES), "--federation", "testnet", "--profile", "tiny", "--threads", "1", "--json"]  # fmt: skip
    info = json.loads(ffnode("init", *words, *(["--bootstrap", bootstrap] if bootstrap else [])))
    configure(home, privacy={"audit": False}, network={"sync_interval_s": 5.0})
    return f"/ip4/127.0.0.1/tcp/{port}/p2p/{info['peer_id']}"


def states(home: Path, owner: str) -> list[str]:
    return [r["state"] for r in control.call(home, "artifacts") if r["owner"] == owner]


def member_factory(tmp: Path, member: Identity) -> tuple[Manifest, Path]:
    """M's tiny factory, real weights (a site samples it), its blob naming M."""
    import torch

    from ffnode.factory.model import build_unet
    from ffnode.profiles import profile_for

    tiny = profile_for("tiny", (8, 8, 1)).factory
    torch.manual_seed(0)
    blob = owned_blob(tmp / "m-blob", build_unet(tiny).state_dict(), member.peer_id)
    return signed_manifest(member, blob, kind="factory", classes=[2], arch=tiny.to_dict(), seq=1), blob


async def test_a_sybil_flood_costs_only_rejections_an_invited_site_joins_a_removed_member_is_dropped(
    tmp_path: Path,
) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    addr_a = init(a, class_file(tmp_path, [0], "zero"))
    init(b, class_file(tmp_path, [0], "zero-b"))
    a_id, b_id = (json.loads(ffnode("id", "--home", str(h), "--json"))["peer_id"] for h in (a, b))
    charter = tmp_path / "charter.ffc"
    ffnode("charter", "--home", str(a), "--founder", b_id, "--threshold", "2", "--out", str(charter))
    assert json.loads(ffnode("sign", "--home", str(b), str(charter), "--json"))["complete"]
    for home in (a, b):
        ffnode("join", "--home", str(home), str(charter))
    m = Identity(os.urandom(32))  # a member site, played by a real libp2p peer of the test

    def admitted_by_both(peer: str, action: str, name: str) -> dict:
        """B drafts the membership message, A signs last: A's node (running or not) takes it."""
        path = tmp_path / f"{name}.ffc"
        ffnode("invite" if action == "admit" else "remove", "--home", str(b), peer, "--out", str(path))
        return json.loads(ffnode("sign", "--home", str(a), str(path), "--json"))

    assert admitted_by_both(m.peer_id, "admit", "m")["complete"]
    factory, blob = member_factory(tmp_path, m)
    sybils = [Identity(os.urandom(32)) for _ in range(200)]
    flood = [signed_manifest(s, blob, kind="factory", classes=[1], arch=factory.arch, seq=1).seal(s) for s in sybils]
    relay = Peer(topic="/ffnode/1/testnet/announce", seed=os.urandom(32), inventory=flood, blobs={factory.blob: blob})
    member = Peer(topic="/ffnode/1/testnet/announce", seed=m.seed, inventory=[factory.seal(m)],
                  blobs={factory.blob: blob})  # fmt: skip
    with Daemons() as daemons:
        daemons.start(a)
        await asyncio.to_thread(wait_for, lambda: status(a), timeout=120, what="A up", daemons=daemons)
        # the flood: 200 fresh keys, each a valid signed factory, by gossip and in the relay's inventory
        await relay.start(addr_a)
        for data in flood:
            await relay.publish(data)
            await asyncio.sleep(0.01)
        relay_id = relay.host.peer_id  # type: ignore[union-attr]

        def rejected() -> int:
            return next((p["rejected"] for p in control.call(a, "peers") if p["peer_id"] == relay_id), 0)

        await asyncio.to_thread(wait_for, lambda: rejected() >= 200, timeout=120, what="200 rejections",
                                daemons=daemons)  # fmt: skip
        owners = {r["owner"] for r in control.call(a, "artifacts")}
        assert not owners & {s.peer_id for s in sybils}  # not one held
        assert relay.served == []  # nothing fetched
        log = (a / "node.log").read_text()
        assert "is not a member of charter" in log and log.count(f"rejected a message from {relay_id}") <= 21
        await relay.stop()
        # the admitted member publishes: A fetches and uses its factory
        await member.start(addr_a)
        await member.publish(factory.seal(m))
        await asyncio.to_thread(wait_for, lambda: states(a, m.peer_id) == ["live"], timeout=120, what="M live at A",
                                daemons=daemons)  # fmt: skip
        # C is invited (B drafts, A signs: A's running node gossips it) and joins with one command
        c_addr = init(c, class_file(tmp_path, [1], "one"), bootstrap=addr_a)
        c_id = c_addr.rsplit("/", 1)[1]
        invitation = admitted_by_both(c_id, "admit", "c")
        assert invitation["complete"] and invitation["node_running"]
        ffnode("join", "--home", str(c), invitation["file"])
        daemons.start(c)
        await asyncio.to_thread(wait_for, lambda: status(c) and states(c, m.peer_id) == ["live"], timeout=180,
                                what="C to hold M's factory", daemons=daemons)  # fmt: skip
        await asyncio.to_thread(wait_for, lambda: "live" in states(a, c_id), timeout=240,
                                what="A to use C's own factory", daemons=daemons)  # fmt: skip
        # M is removed: dropped at A and C, and what it publishes next is refused
        assert admitted_by_both(m.peer_id, "remove", "m-out")["complete"]
        for home in (a, c):
            await asyncio.to_thread(wait_for, lambda h=home: states(h, m.peer_id) == ["untrusted"], timeout=60,
                                    what=f"M dropped at {home.name}", daemons=daemons)  # fmt: skip
        view = json.loads(ffnode("members", "--home", str(c), "--json"))
        assert {r["peer"]: r["member"] for r in view["members"]} == {m.peer_id: False, c_id: True}
        assert view["founders"] == sorted([a_id, b_id]) and view["threshold"] == 2
        await member.stop()
    events = [json.loads(line) for line in (c / "events.jsonl").read_text().splitlines()]
    assert {(e["event"], e["peer"]) for e in events if e["actor"] == "charter"} >= {("removed", m.peer_id)}
