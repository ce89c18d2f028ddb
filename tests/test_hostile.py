"""Hostile peers against real daemons on 127.0.0.1 (tiny profile): each attack that once stopped a node, froze
sync, shadowed an owner, steered queries or starved a class, replayed from a real libp2p peer. Every one is
rejected or contained with a log line naming the peer and the reason, the node stays up, and honest peers
keep syncing and converging (the last test starts a late joiner after all of it).

Site A holds the digits 0, 1, 2 (it needs nobody); site B holds 0 and learns 1 and 2 from A's factories. The
tests run in order and share the federation, as a real one would live through them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import msgpack
import multiaddr
import numpy as np
import pytest
import tomli_w
import torch
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.envelope import seal_record
from libp2p.peer.id import ID as LibID
from libp2p.peer.peer_record import PeerRecord

from ffnode.artifacts.codec import MAX_CLASS_LIST_BYTES, VERSION, canonical_bytes
from ffnode.artifacts.revocation import Revocation
from ffnode.daemon import control
from ffnode.data.sources import load_dataset
from ffnode.expert.resnet import build_expert
from ffnode.identity import Identity
from ffnode.net import NetError, discovery, streams
from ffnode.net.sync import MAX_REQUEST_BYTES, inventory_request, parse_inventory_response
from ffnode.profiles import profile_for
from harness.localnet import Daemons, ffnode_cmd, init_home, status, wait_for
from tests.daemons import CLASSES, Peer, class_file, configure, free_port, owned_blob, signed_manifest

BOMBER, FLOODER, STEERER, SHAPER, COUNTER, BREAKER, COPIER, SYBIL = (Identity(bytes([i]) * 32) for i in range(11, 19))
AUDITOR = Identity(bytes([19]) * 32)
PAGER = Identity(bytes([20]) * 32)
SYBIL_KEY = create_new_key_pair(SYBIL.seed)
TINY = profile_for("tiny", (8, 8, 1))
TOPIC = "/ffnode/1/testnet/announce"
TIMEOUT = 120.0
MANIFEST_LIMIT = 40  # site A's limits.manifests_per_publisher in this module
RECORDS_PER_PEER = 16  # site A's limits.records_per_peer


@dataclasses.dataclass
class Fed:
    root: Path
    a: Path
    b: Path
    addr_a: str
    daemons: Daemons


def ready(home: Path, experts: int | None = None) -> bool:
    s = status(home)
    return bool(s and s["phase"] == "ready" and (experts is None or s["artifacts"].get("expert_live") == experts))


def set_limits(home: Path, **limits: object) -> None:
    config = tomllib.loads((home / "config.toml").read_text())
    config.setdefault("limits", {}).update(limits)
    (home / "config.toml").write_text(tomli_w.dumps(config))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Fed:
    root = tmp_path_factory.mktemp("hostile")
    a, b = root / "a", root / "b"
    addr_a = init_home(a, port=free_port(), data=class_file(root, [0, 1, 2], "all"), classes=CLASSES, profile="tiny")
    init_home(
        b, port=free_port(), data=class_file(root, [0], "zero"), classes=CLASSES, bootstrap=[addr_a], profile="tiny"
    )
    set_limits(a, manifests_per_publisher=MANIFEST_LIMIT, records_per_peer=RECORDS_PER_PEER)
    set_limits(b, pending_grace_s=5.0)
    with Daemons() as daemons:
        daemons.start(a)
        daemons.start(b)
        wait_for(lambda: ready(a) and ready(b, 2), timeout=TIMEOUT, what="A and B ready", daemons=daemons)
        yield Fed(root, a, b, addr_a, daemons)
        daemons.check()  # alive after everything


def log_of(home: Path) -> str:
    return (home / "node.log").read_text()


def rejected_by(home: Path, peer: str) -> dict:
    return next((p for p in control.call(home, "peers") if p["peer_id"] == peer), {"rejected": 0})


async def until(check: Callable[[], object], what: str, daemons: Daemons) -> None:
    """Poll `check` off the event loop (60 s at most), failing early if a daemon died."""
    await asyncio.to_thread(wait_for, check, timeout=60.0, what=what, daemons=daemons)


def rss_mb(home: Path) -> float:
    pid = json.loads((home / control.RUNTIME_FILE).read_text())["pid"]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def factory_blob(tmp: Path, owner: Identity, weights: dict | None = None) -> Path:
    """A blob of `owner`'s: tiny-factory weights (or any `weights`)."""
    from ffnode.factory.model import build_unet

    if weights is None:
        torch.manual_seed(0)
        weights = build_unet(TINY.factory).state_dict()
    return owned_blob(tmp / f"blob-{owner.peer_id[-6:]}", weights, owner.peer_id)


# -- 1. a remote kill with a few hundred bytes ----------------------------------------------------------
async def test_deeply_nested_messages_cost_only_themselves(fed: Fed, tmp_path: Path) -> None:
    nested: list = []
    for _ in range(600):
        nested = [nested]
    body = {"kind": "factory", "arch": {"x": nested}}
    bomb = msgpack.packb({"v": VERSION, "t": "manifest", "body": body, "sig": b"\0" * 64}, use_bin_type=True)
    assert len(bomb) < 1000
    peer = Peer(topic=TOPIC, seed=BOMBER.seed, inventory=[bomb])
    await peer.start(fed.addr_a)  # A asks for the inventory on connect
    try:
        await peer.publish(bomb)
        await until(lambda: rejected_by(fed.a, BOMBER.peer_id)["rejected"] >= 1, "A to reject the bomb", fed.daemons)
    finally:
        await peer.stop()
    assert "nest deeper than" in log_of(fed.a)
    fed.daemons.check()
    assert ready(fed.a) and ready(fed.b, 2)


# -- 2. a frozen sync: more manifests than one frame could hold, and more than the quota ------------------
async def test_one_key_cannot_flood_the_store_and_big_inventories_are_paged(fed: Fed, tmp_path: Path) -> None:
    blob = factory_blob(tmp_path, FLOODER)
    pad = "x" * 60_000  # each manifest ~60 KiB: 40 of them make an inventory far above one 1 MiB page
    inventory = [
        signed_manifest(
            FLOODER, blob, kind="factory", classes=[1], arch=TINY.factory.to_dict(), seq=100 + i, meta={"pad": pad}
        ).seal(FLOODER)
        for i in range(MANIFEST_LIMIT + 10)
    ]
    peer = Peer(topic=TOPIC, seed=FLOODER.seed, inventory=inventory)  # the blob is never served
    await peer.start(fed.addr_a)
    try:

        def held() -> int:
            return sum(r["owner"] == FLOODER.peer_id for r in control.call(fed.a, "artifacts"))

        await until(lambda: held() >= MANIFEST_LIMIT, "A to take Mallory's manifests up to the quota", fed.daemons)
        await until(lambda: "manifests_per_publisher" in log_of(fed.a), "the quota to be logged", fed.daemons)
        # a page is at most 1 MiB: read A's inventory as any peer would, page by page
        cursor, pages, items = "", 0, 0
        while True:
            body = await peer.host.request(status(fed.a)["peer_id"], inventory_request("testnet", CLASSES, cursor))
            assert len(body) <= 1 << 20
            manifests, revocations, cursor, _ = parse_inventory_response(body)
            pages, items = pages + 1, items + len(manifests) + len(revocations)
            if not cursor:
                break
    finally:
        await peer.stop()
    assert held() == MANIFEST_LIMIT and pages >= 3
    assert items == len(control.call(fed.a, "artifacts"))


# -- 3. queries no single publisher controls ----------------------------------------------------------------
def expert_arch(**changes: object) -> dict:
    return {"expert": TINY.expert.to_dict(), "num_classes": 3, "image_shape": [8, 8, 1], "synth_per_class": 8,
            "profile": "tiny"} | changes  # fmt: skip


def expert_meta(real: list[int], synth: int = 8) -> dict:
    total = [r + (0 if r else synth) for r in real]
    return {"real_counts": real, "label_counts": total, "n_real": sum(real), "n_train": sum(total)}


async def test_one_publisher_cannot_steer_or_break_queries(fed: Fed, tmp_path: Path) -> None:
    test = load_dataset("digits", split="test", classes=[str(i) for i in range(10)])
    keep = test.labels < 3
    images, labels = test.images[keep][:60], test.labels[keep][:60]
    args = control.encode_images(images)
    before = control.call(fed.a, "query", args)
    torch.manual_seed(0)
    weights = build_expert(TINY.expert, 3, (8, 8, 1)).state_dict()
    small = build_expert(TINY.expert, 3, (4, 4, 1)).state_dict()
    liar = [10**7, 0, 0]  # "ten million real images of class 0": under MAX_COUNT, far over any site
    plan = [  # (owner, weights, arch, meta): every one signed and served by its owner
        (SHAPER, small, expert_arch(image_shape=[4, 4, 1]), expert_meta([5, 0, 0])),  # made every query fail
        (COUNTER, weights, expert_arch(), expert_meta([2**31, 0, 0])),  # counts far past any site
        (STEERER, weights, expert_arch(), expert_meta(liar)),
        (STEERER, weights, expert_arch(), expert_meta(liar)),  # more experts of one owner: still one vote
    ]
    # synthetic counts must come from factories of the lineage: the steerer cites A's, which anyone can name
    factories = {r["classes"][0]: r["id"] for r in control.call(fed.a, "artifacts") if r["kind"] == "factory"}
    cited = sorted(factories[c] for c in ("1", "2"))
    experts, blobs = [], {}
    for i, (owner, w, arch, meta) in enumerate(plan):
        blob = owned_blob(tmp_path / f"e{i}", w, owner.peer_id)
        lineage = cited if owner is STEERER else []
        m = signed_manifest(
            owner, blob, kind="expert", classes=[0, 1, 2], arch=arch, seq=1 + i, meta=meta, lineage=lineage
        )
        experts.append((owner, m))
        blobs[m.blob] = blob
    peers = []
    for owner in (SHAPER, COUNTER, STEERER):
        mine = [m.seal(owner) for o, m in experts if o is owner]
        peers.append(Peer(topic=TOPIC, seed=owner.seed, inventory=mine, blobs=blobs))
    for peer in peers:
        await peer.start(fed.addr_a)
    try:

        def live() -> set[str]:
            return {r["id"] for r in control.call(fed.a, "artifacts") if r["state"] == "live"}

        await until(lambda: {m.id for _, m in experts} <= live(), "A to fetch the attackers' experts", fed.daemons)
        after = control.call(fed.a, "query", args)  # the 4x4 expert breaks nothing
    finally:
        for peer in peers:
            await peer.stop()
    used = {e["id"]: e["owner"] for e in after["experts"]}
    assert sorted(used.values()) == sorted({*used.values()})  # one vote per owner
    assert experts[3][1].id in used and experts[2][1].id not in used  # the steerer's newest expert only
    assert SHAPER.peer_id not in used.values() and COUNTER.peer_id not in used.values()
    log = log_of(fed.a)
    assert "takes [4, 4, 1] images" in log and "holds something other than counts" in log
    predicted = np.asarray(after["labels"])
    assert np.mean(predicted[labels != 0] != 0) > 0.5  # the liar's prior does not make class 0 everyone's answer
    assert set(before["labels"]) == {0, 1, 2}
    fed.daemons.check()


# -- 4. a broken factory cannot starve a class ---------------------------------------------------------------
async def test_a_broken_factory_is_blamed_for_its_own_failure(fed: Fed, tmp_path: Path) -> None:
    broken = factory_blob(tmp_path, BREAKER, {"w": torch.zeros(4)})  # loads, but fits no UNet of its arch
    m = signed_manifest(BREAKER, broken, kind="factory", classes=[1], arch=TINY.factory.to_dict(), seq=20)
    peer = Peer(topic=TOPIC, seed=BREAKER.seed, inventory=[m.seal(BREAKER)], blobs={m.blob: broken})
    await peer.start(fed.addr_a)
    try:
        await until(lambda: f"skipping factory {m.id[:12]}" in log_of(fed.b), "B to skip the broken one", fed.daemons)
        await until(lambda: ready(fed.b, None), "B ready again", fed.daemons)
    finally:
        await peer.stop()
    b_id = status(fed.b)["peer_id"]
    expert = next(
        r for r in control.call(fed.b, "artifacts") if r["kind"] == "expert" and r["owner"] == b_id and
        r["state"] == "live"
    )  # fmt: skip
    a_factories = {r["id"] for r in control.call(fed.b, "artifacts") if r["kind"] == "factory" and r["state"] == "live"
                   and r["owner"] == status(fed.a)["peer_id"]}  # fmt: skip
    assert m.id not in expert["lineage"] and set(expert["lineage"]) <= a_factories and len(expert["lineage"]) == 2


# -- 5. model bombs -------------------------------------------------------------------------------------------
async def test_model_bombs_are_refused_before_anything_is_built(fed: Fed, tmp_path: Path) -> None:
    blob = factory_blob(tmp_path, BOMBER)
    huge = dataclasses.replace(TINY.factory, block_out_channels=(1024, 1024), norm_num_groups=4).to_dict()
    deep = TINY.factory.to_dict() | {"layers_per_block": 10**6}  # building it alone would take 35 minutes
    slow = dataclasses.replace(TINY.factory, sample_steps=10**6).to_dict()
    wide = expert_arch(expert=dataclasses.replace(TINY.expert, width=4096, blocks=(8, 8)).to_dict())
    tiny = TINY.factory.to_dict()
    edm = tiny | {"prediction_type": "edm", "sampler": "edm-dpmsolver++", "sigma_max": 1e30}  # overflowing sigmas
    bombs = [  # (why it is refused, the manifest)
        ("parameters: over this node's limit", signed_manifest(BOMBER, blob, kind="factory", classes=[2], arch=huge,
                                                               seq=30)),
        ("out of bounds", signed_manifest(BOMBER, blob, kind="factory", classes=[2], arch=deep, seq=34)),
        ("sampler steps", signed_manifest(BOMBER, blob, kind="factory", classes=[2], arch=slow, seq=31)),
        ("sigma_max <= 1e4", signed_manifest(BOMBER, blob, kind="factory", classes=[2], arch=edm, seq=35)),
        ("bytes of weights", signed_manifest(BOMBER, blob, kind="factory", classes=[2], arch=tiny, seq=32,
                                             size=4 * 2**30)),
        ("out of bounds", signed_manifest(BOMBER, blob, kind="expert", classes=[0, 1, 2], arch=wide, seq=33,
                                          meta=expert_meta([1, 0, 0]))),
    ]  # fmt: skip
    peer = Peer(topic=TOPIC, seed=BOMBER.seed, inventory=[m.seal(BOMBER) for _, m in bombs])
    rss = rss_mb(fed.a)
    await peer.start(fed.addr_a)

    def refused() -> bool:
        lines = log_of(fed.a).splitlines()
        return all(any(f"{m.kind} {m.id[:12]}" in line and why in line for line in lines) for why, m in bombs)

    try:
        await until(refused, "A to refuse every bomb", fed.daemons)
    finally:
        await peer.stop()
    bombs = dict((m.id, m) for _, m in bombs)
    held = {r["id"] for r in control.call(fed.a, "artifacts")}
    assert not held & {m.id for m in bombs.values()}
    assert rss_mb(fed.a) < rss + 200  # nothing of 23 GiB (or 4 GiB) was allocated
    fed.daemons.check()


# -- 5b. another class list, at its largest -------------------------------------------------------------------
async def test_another_class_list_at_its_largest_costs_only_its_own_messages(fed: Fed, tmp_path: Path) -> None:
    """A peer of the same federation name but another class list, every bound at its worst: the longest class
    list a request may carry, a request one past MAX_REQUEST_BYTES, a signed manifest with that list. Each costs
    one reset stream or one dropped message, counted against the peer and logged in bounded lines."""
    liar = Identity(bytes([21]) * 32)
    worst = [f"{i:02d}" + "\u00e9" * 31 for i in range(60)]  # 64 UTF-8 bytes each, 3,963 encoded (limit 4,096)
    assert len(canonical_bytes(worst)) <= MAX_CLASS_LIST_BYTES
    blob = owned_blob(tmp_path / "w", {"w": torch.zeros(4)}, liar.peer_id)
    foreign = signed_manifest(liar, blob, kind="factory", classes=[0], arch=TINY.factory.to_dict(), seq=1,
                              class_list=worst)  # fmt: skip
    peer = Peer(topic=TOPIC, seed=liar.seed)
    await peer.start(fed.addr_a)
    a_id = status(fed.a)["peer_id"]
    held = {r["id"] for r in control.call(fed.a, "artifacts")}
    try:
        assert peer.host is not None
        with pytest.raises(NetError):  # refused: the stream is reset
            await peer.host.request(a_id, inventory_request("testnet", worst, ""))
        too_big = canonical_bytes({"t": "inv_req", "v": VERSION, "federation": "testnet", "cursor": "",
                                   "class_list": [f"{i:03d}" + "x" * 60 for i in range(128)]})  # fmt: skip
        assert len(too_big) > MAX_REQUEST_BYTES
        with pytest.raises(NetError):
            await peer.host.request(a_id, too_big)
        await peer.publish(foreign.seal(liar))
        await until(lambda: rejected_by(fed.a, liar.peer_id)["rejected"] >= 2, "A to count the refusals", fed.daemons)
    finally:
        await peer.stop()
    assert foreign.id not in {r["id"] for r in control.call(fed.a, "artifacts")} and held <= {
        r["id"] for r in control.call(fed.a, "artifacts")
    }
    lines = [line for line in log_of(fed.a).splitlines() if liar.peer_id in line]
    assert any("is not this federation's" in line for line in lines)  # both lists named ...
    assert max(map(len, lines)) < 1500  # ... in bounded lines, whatever the peer sent
    assert status(fed.a)["phase"] == "ready"
    fed.daemons.check()


# -- 6. a stream flood -------------------------------------------------------------------------------------
async def test_a_stream_flood_costs_the_flooder_only(fed: Fed) -> None:
    peer = Peer(topic=TOPIC, seed=FLOODER.seed)
    await peer.start(fed.addr_a)
    a_id = status(fed.a)["peer_id"]
    rss = rss_mb(fed.a)
    opened: list = []  # held open until the peer stops

    async def flood() -> None:
        """120 sync streams (trio side): 60 send a request and never read the answer, 60 send nothing at all
        (each of those would hold a server task for the 30 s request timeout)."""
        request = inventory_request("testnet", CLASSES, "")
        for i in range(120):
            try:
                stream = await peer.host._t_open_stream(a_id, "/ffnode/sync/1.0.0")
                if i % 2:
                    await streams.write_frame(stream, request)
                    await stream.close_write()
                opened.append(stream)
            except Exception:  # reset by A, over its streams_per_peer
                pass
        await trio.sleep(5)  # A answers what it accepts into buffers nobody drains

    try:
        await peer.host._call("flood", flood)  # a reset stream may only show when its opener next reads
        grown = rss_mb(fed.a) - rss

        def capped() -> bool:  # 60 silent streams hold a server task each: all but 8 at a time are reset
            return status(fed.a)["streams_refused"].get("limits.streams_per_peer", 0) >= 50

        await until(capped, "A to cap the flood", fed.daemons)
        honest = Peer(topic=TOPIC, seed=b"\x30" * 32)  # another peer still syncs with A meanwhile
        await honest.start(fed.addr_a)
        try:
            page = await honest.host.request(a_id, inventory_request("testnet", CLASSES, ""))
            assert parse_inventory_response(page)[0]
        finally:
            await honest.stop()
    finally:
        await peer.stop()
    print(f"stream flood: A's resident memory grew {grown:.1f} MB (from {rss:.0f} MB)")  # for the record (-s)
    assert grown < 150, f"A grew {grown:.0f} MB under the flood"
    fed.daemons.check()


# -- 7. the trust list: retroactive, never blocking unlearning ------------------------------------------------
def cli(*words: str) -> str:
    out = subprocess.run(ffnode_cmd(*words), capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_blocking_a_publisher_applies_to_what_is_held_and_its_revocations_still_count(fed: Fed) -> None:
    def mallory_rows() -> list[dict]:
        return [r for r in control.call(fed.a, "artifacts") if r["owner"] == STEERER.peer_id]

    live_before = [r for r in mallory_rows() if r["state"] == "live"]
    assert live_before  # Mallory's experts from the query test
    cli("block", STEERER.peer_id, "--home", str(fed.a))
    assert all(r["state"] in ("untrusted", "revoked") for r in mallory_rows())
    peer_row = next(p for p in control.call(fed.a, "peers") if p["peer_id"] == STEERER.peer_id)
    assert peer_row["trusted"] is False
    assert STEERER.peer_id not in {e["owner"] for e in control.call(fed.a, "query", control.encode_images(
        np.zeros((1, 8, 8, 1), np.uint8)))["experts"]}  # fmt: skip
    # a blocked publisher may still withdraw what it published, and the node honours it
    withdraw = Revocation(STEERER.peer_id, STEERER.public_key, "testnet", sorted(r["id"] for r in live_before),
                          "withdrawn", 1, 10_000)  # fmt: skip
    peer = Peer(topic=TOPIC, seed=STEERER.seed)
    await peer.start(fed.addr_a)
    try:
        await peer.publish(withdraw.seal(STEERER))
        await until(lambda: all(r["state"] == "revoked" for r in mallory_rows() if r["id"] in withdraw.ids),
                    "A to honour the blocked publisher's revocation", fed.daemons)  # fmt: skip
    finally:
        await peer.stop()
    cli("block", "--undo", STEERER.peer_id, "--home", str(fed.a))
    assert "denied_publishers = []" in (fed.a / "config.toml").read_text()


def test_an_allow_list_without_the_node_itself_is_refused(tmp_path: Path) -> None:
    from ffnode.config import ConfigError
    from ffnode.daemon.node import Node

    home = tmp_path / "n"
    init_home(home, port=free_port(), data=class_file(tmp_path, [0], "zero"), classes=CLASSES, profile="tiny")
    config = tomllib.loads((home / "config.toml").read_text())
    config["federation"]["allowed_publishers"] = [BOMBER.peer_id]
    (home / "config.toml").write_text(tomli_w.dumps(config))
    with pytest.raises(ConfigError, match="does not name this node"):
        Node(home)


# -- discovery: forged addresses and a flood of fresh identities ---------------------------------------------
async def test_forged_and_flooded_peer_records_cost_only_their_sender(fed: Fed) -> None:
    """SYBIL answers A's peers requests with a record forged for another key, one with too many addresses and
    a fresh batch of 60 valid records of new identities (at a closed port) each time: A rejects the two, keeps
    at most limits.records_per_peer of the rest, dials those with backoff, and goes on."""
    closed = f"/ip4/127.0.0.1/tcp/{free_port()}"
    served = [0]

    def records() -> list[bytes]:
        own = discovery.seal(SYBIL_KEY.private_key, peer.host.addrs)
        claim = PeerRecord(LibID.from_base58(STEERER.peer_id), [multiaddr.Multiaddr(closed)], 1)
        forged = seal_record(claim, SYBIL_KEY.private_key).marshal_envelope()
        wide = discovery.seal(SYBIL_KEY.private_key, [f"/ip4/127.0.0.{i}/tcp/1" for i in range(1, 10)])
        fresh = [discovery.seal(create_new_key_pair(os.urandom(32)).private_key, [closed]) for _ in range(60)]
        served[0] += 1
        return [own, forged, wide, *fresh]

    peer = Peer(topic=TOPIC, seed=SYBIL.seed, records=records)
    await peer.start(fed.addr_a)
    try:
        await until(lambda: "its peer record: peer record signed by another key" in log_of(fed.a),
                    "A to reject the forged record", fed.daemons)  # fmt: skip
        await until(lambda: served[0] >= 2, "a second peers request from A", fed.daemons)

        def via_sybil() -> list[dict]:
            return [p for p in control.call(fed.a, "peers") if p["learnt"] == f"via {SYBIL.peer_id}"]

        assert 0 < len(via_sybil()) <= RECORDS_PER_PEER  # 120 offered over two answers
        await until(lambda: any(p["dial_failures"] for p in via_sybil()), "A to dial them, and fail", fed.daemons)
        assert rejected_by(fed.a, SYBIL.peer_id)["rejected"] >= 2
        assert STEERER.peer_id not in {p["peer_id"] for p in via_sybil()}
        assert "1 to 8 addresses" in log_of(fed.a)
    finally:
        await peer.stop()
    assert ready(fed.a)


# -- privacy audits: figures a site cannot judge, text made to look like markup ----------------------------------
async def test_crafted_audit_figures_get_a_factory_refused_and_cost_nothing_else(fed: Fed, tmp_path: Path) -> None:
    """AUDITOR serves three factories: one whose audit's distance is rich markup made to look like a pass, one
    claiming one attacked member (which would switch off the noise allowance) with a perfect attack, and one
    whose levels fill the envelope. A holds all three as refused, never fetches their blobs, shows its tables,
    and stays ready."""
    from tests.daemons import PASSING_AUDIT

    blob = factory_blob(tmp_path, AUDITOR)
    honest = PASSING_AUDIT["audit"]
    audits = [
        honest | {"distance": "[/] [bold green]passes[/]"},
        honest | {"mia_members": 1, "mia_auc": 1.0},
        honest | {"levels": list(range(1000)) * 7},  # ~20 KB of ints: bounded by the envelope, judged once
    ]
    manifests = [
        signed_manifest(
            AUDITOR, blob, kind="factory", classes=[1], arch=TINY.factory.to_dict(), seq=1 + i, meta={"audit": a}
        )  # fmt: skip
        for i, a in enumerate(audits)
    ]
    peer = Peer(
        topic=TOPIC, seed=AUDITOR.seed, inventory=[m.seal(AUDITOR) for m in manifests], blobs={manifests[0].blob: blob}
    )
    await peer.start(fed.addr_a)
    try:

        def refused() -> list[dict]:
            return [
                r for r in control.call(fed.a, "artifacts") if r["owner"] == AUDITOR.peer_id and r["state"] == "refused"
            ]

        await until(lambda: len(refused()) == 3, "A to hold AUDITOR's three factories as refused", fed.daemons)
    finally:
        await peer.stop()
    reasons = [r["reason"] for r in refused()]
    assert not any("[" in why for why in reasons) and any("fewer members" in why for why in reasons), reasons
    assert not (fed.a / "store" / "blobs" / manifests[0].blob).exists()  # never fetched
    assert "refused" in cli("artifacts", "--home", str(fed.a))  # the table, with the peer's text in it
    assert "[/] [bold green]passes[/]" not in cli("audit", "--home", str(fed.a))
    assert rejected_by(fed.a, AUDITOR.peer_id)["rejected"] == 0  # validly signed: refused, not held against it
    assert ready(fed.a)
    fed.daemons.check()


# -- after all of it ---------------------------------------------------------------------------------------
def test_a_late_joiner_still_syncs_and_converges(fed: Fed) -> None:
    """C holds class 2 and lacks class 1, for which A serves 40 of FLOODER's factories whose blobs nobody has:
    class 1 is covered by A's own factory, so they hold C's expert back not at all (they used to, a minute each),
    and each costs C's log one line (it used to be a warning per peer asked, at every retry)."""
    c = fed.root / "c"
    init_home(c, port=free_port(), data=class_file(fed.root, [2], "two"), classes=CLASSES, bootstrap=[fed.addr_a],
              profile="tiny", seed=5)  # fmt: skip
    set_limits(c, pending_grace_s=60.0)
    configure(c, network={"sync_interval_s": 5.0})  # what gossip missed comes by a sync round: 5 s apart
    started = time.monotonic()
    fed.daemons.start(c)
    wait_for(lambda: ready(c), timeout=TIMEOUT, what="the late joiner ready", daemons=fed.daemons)
    assert time.monotonic() - started < 55 and "has not arrived in" not in log_of(c)
    a_live = {r["id"] for r in control.call(fed.a, "artifacts") if r["state"] == "live"}

    def all_fetched() -> bool:  # ready needs only what C's expert uses; the rest arrives right after
        return a_live <= {r["id"] for r in control.call(c, "artifacts") if r["state"] == "live"}

    # by gossip, or by a later sync round for what A accepted while C joined (seen at 70 s on a busy machine)
    wait_for(all_fetched, timeout=120, what="C to hold all that A holds", daemons=fed.daemons)
    c_rows = {r["id"]: r for r in control.call(c, "artifacts")}
    flooded = [r for r in c_rows.values() if r["owner"] == FLOODER.peer_id]
    assert len(flooded) == MANIFEST_LIMIT  # A's whole inventory arrived, page by page (far above one frame)
    # blobs nobody has cost a line each, not a warning per peer per try (A and B refuse them at every retry)
    said = log_of(c)
    assert all(said.count(f"no peer served the blob of factory {r['id'][:12]}") == 1 for r in flooded), said[-3000:]
    assert "WARNING ffnode.node: fetching" not in said
    assert os.path.exists(c / "node.json")


# -- paging: a revocation on a later page --------------------------------------------------------------------
async def test_a_revocation_on_a_later_page_stops_the_fetch_of_what_it_revokes(fed: Fed, tmp_path: Path) -> None:
    """PAGER serves its inventory one envelope a page: three factories of its own, then its revocation of all three
    (a joining node met this order: manifests first, revocations last). A applies the whole round before it fetches
    anything, so it never asks PAGER for one of those blobs, though PAGER serves them, and holds all three revoked."""
    from ffnode.factory.model import build_unet

    manifests = []
    for label in range(3):  # three different blobs
        torch.manual_seed(label)
        (tmp_path / str(label)).mkdir()
        blob = factory_blob(tmp_path / str(label), PAGER, build_unet(TINY.factory).state_dict())
        m = signed_manifest(PAGER, blob, kind="factory", classes=[label], arch=TINY.factory.to_dict(), seq=label + 1)
        manifests.append((m, blob))
    revocation = Revocation(PAGER.peer_id, PAGER.public_key, "testnet", sorted(m.id for m, _ in manifests),
                            "withdrawn", int(time.time() * 1000), 10)  # fmt: skip
    inventory = [m.seal(PAGER) for m, _ in manifests] + [revocation.seal(PAGER)]
    peer = Peer(topic=TOPIC, seed=PAGER.seed, inventory=inventory, blobs={m.blob: b for m, b in manifests},
                page_bytes=1)  # fmt: skip

    def revoked() -> bool:
        rows = {r["id"]: r["state"] for r in control.call(fed.a, "artifacts")}
        return all(rows.get(m.id) == "revoked" for m, _ in manifests)

    await peer.start(fed.addr_a)
    try:
        await until(revoked, "A to hold PAGER's three factories revoked", fed.daemons)
        await asyncio.sleep(2 * 3.0)  # a fetch queued by the round, or by the retry loop (every 3 s), would be made
    finally:
        await peer.stop()
    asked = set(peer.served) & {m.blob for m, _ in manifests}  # A asks every peer for blobs nobody served yet
    assert not asked, "A fetched a blob whose revocation was in the same round"


# -- blob squatting: a byte-identical copy under another key ------------------------------------------------
def test_a_copy_under_another_key_neither_shadows_nor_outlives_the_owner(fed: Fed, tmp_path: Path) -> None:
    """COPIER re-signs A's class-2 factory blob, byte for byte, as its own class-0 factory and serves it to a
    joining site first. The joiner still accepts A's factory, drops the copy (its blob names A), and A's
    revocation deletes the blob there: nothing of A's stays live under COPIER's name."""
    a_id = status(fed.a)["peer_id"]
    original = next(
        r for r in control.call(fed.a, "artifacts") if r["owner"] == a_id and r["kind"] == "factory" and
        r["classes"] == ["2"]
    )  # fmt: skip
    blob = tmp_path / "copied"
    blob.write_bytes((fed.a / "store" / "blobs" / original["blob"]).read_bytes())
    copy = signed_manifest(COPIER, blob, kind="factory", classes=[0], arch=TINY.factory.to_dict(), seq=1)
    assert copy.blob == original["blob"]

    async def serve_then_join() -> Path:
        peer = Peer(topic=TOPIC, seed=COPIER.seed, inventory=[copy.seal(COPIER)], blobs={copy.blob: blob})
        await peer.start(fed.addr_a)
        d = fed.root / "d"
        init_home(d, port=free_port(), data=class_file(fed.root, [1], "one-more"), classes=CLASSES,
                  bootstrap=[peer.host.addrs[0], fed.addr_a], profile="tiny", seed=7)  # fmt: skip
        fed.daemons.start(d)
        try:
            await until(lambda: f"manifest {copy.id[:12]} dropped" in log_of(d), "D to drop the copy", fed.daemons)
        finally:
            await peer.stop()
        return d

    d = asyncio.run(serve_then_join())
    wait_for(lambda: ready(d), timeout=TIMEOUT, what="D ready", daemons=fed.daemons)
    rows = {r["id"]: r for r in control.call(d, "artifacts")}
    assert rows[original["id"]]["state"] == "live" and copy.id not in rows
    assert rejected_by(d, COPIER.peer_id)["rejected"] >= 1
    cli("revoke", original["id"], "--home", str(fed.a))
    wait_for(
        lambda: {r["id"]: r for r in control.call(d, "artifacts")}[original["id"]]["state"] == "revoked",
        timeout=60,
        what="D to honour A's revocation",
        daemons=fed.daemons,
    )
    assert not (d / "store" / "blobs" / original["blob"]).exists()
    assert copy.id not in {r["id"] for r in control.call(d, "artifacts")}
