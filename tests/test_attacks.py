"""Bad input from a real peer: a hostile libp2p peer on 127.0.0.1 sends a running daemon every kind of
broken or forged message and serves broken blobs. Each is rejected with a log line naming it, nothing
is stored, and the node keeps running."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest

from ffnode.artifacts.codec import VERSION, canonical_bytes, decode, seal
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.revocation import Revocation
from ffnode.daemon import control
from ffnode.identity import Identity
from ffnode.profiles import profile_for
from harness.localnet import Daemons, init_home, status, wait_for
from tests.daemons import CLASSES, PASSING_AUDIT, Peer, class_file, free_port

ATTACKER = Identity(b"\x07" * 32)


def manifest(blob: bytes, *, seq: int, owner: Identity = ATTACKER, federation: str = "testnet") -> Manifest:
    return Manifest(
        kind="factory",
        owner=owner.peer_id,
        owner_key=owner.public_key,
        federation=federation,
        classes=[0],
        class_list=CLASSES,
        arch={},
        blob=hashlib.sha256(blob).hexdigest(),
        size=len(blob),
        created=int(time.time() * 1000),
        seq=seq,
        meta=PASSING_AUDIT,
    )


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("attacked")
    home = root / "a"
    addr = init_home(home, port=free_port(), data=class_file(root, [0, 1, 2], "all"), classes=CLASSES, profile="tiny")
    with Daemons() as daemons:
        daemons.start(home)
        wait_for(lambda: (s := status(home)) and s["phase"] == "ready", timeout=120, what="node ready", daemons=daemons)
        yield home, addr
        daemons.check()  # still alive after everything


def attacker_row(home: Path) -> dict:
    return next((p for p in control.call(home, "peers") if p["peer_id"] == ATTACKER.peer_id), {"rejected": 0})


async def test_forged_and_malformed_gossip_is_rejected(node: tuple[Path, str], tmp_path: Path) -> None:
    home, addr = node
    own = control.call(home, "artifacts")
    victim = next(r for r in own if r["kind"] == "factory")
    good = manifest(b"weights", seq=1)
    env = decode(good.seal(ATTACKER))
    flipped = canonical_bytes({**env, "sig": bytes([env["sig"][0] ^ 1]) + env["sig"][1:]})
    impostor = Identity(b"\x09" * 32)
    body = {**good.body(), "owner": impostor.peer_id}  # claims another owner, signed with the attacker's key
    bad = {
        "malformed msgpack": b"\xc1\x00\xff",
        "unknown type": canonical_bytes({"v": VERSION, "t": "weird", "body": {}, "sig": b"\0" * 64}),
        "wrong version": canonical_bytes({"v": 99, "t": "manifest", "body": good.body(), "sig": b"\0" * 64}),
        "bad signature": flipped,
        "owner mismatch": seal("manifest", body, ATTACKER),
        "oversized": b"\x00" * (70 * 1024),
        "other federation": manifest(b"w", seq=2, federation="elsewhere").seal(ATTACKER),
        "forged revocation": Revocation(
            owner=ATTACKER.peer_id,
            owner_key=ATTACKER.public_key,
            federation="testnet",
            ids=[victim["id"]],
            reason="forged",
            created=1,
            seq=3,
        ).seal(ATTACKER),
    }
    peer = Peer(topic="/ffnode/1/testnet/announce")
    await peer.start(addr)
    try:
        for data in bad.values():
            await peer.publish(data)
        # the oversized one may be dropped by the transport before validation; the rest must be counted
        await asyncio.to_thread(
            wait_for,
            lambda: attacker_row(home)["rejected"] >= len(bad) - 1,
            timeout=30,
            what="the node to reject the forged messages",
        )
    finally:
        await peer.stop()
    after = {r["id"]: r for r in control.call(home, "artifacts")}
    assert set(after) == {r["id"] for r in own}  # nothing stored
    assert after[victim["id"]]["state"] == "live"  # the forged revocation deleted nothing
    log = (home / "node.log").read_text()
    for needle in (
        "malformed msgpack",
        "unknown message type",
        "unsupported version",
        "bad signature",
        "owner does not match",
        "is not this node's",
        "not signed by its owner",
    ):
        assert needle in log, needle
    assert status(home)["phase"] == "ready"


@pytest.mark.parametrize("served", [b"WEIGHTS", b"weight", b"weights+extra"], ids=["wrong-hash", "short", "long"])
async def test_blob_that_does_not_match_its_manifest_is_never_stored(
    node: tuple[Path, str], tmp_path: Path, served: bytes
) -> None:
    """A validly signed manifest whose blob is served with other bytes (wrong hash, shorter, longer)."""
    home, addr = node
    seq = 10 + len(served)
    good = manifest(b"weights", seq=seq)
    blob_file = tmp_path / "blob"
    blob_file.write_bytes(served)
    peer = Peer(topic="/ffnode/1/testnet/announce", inventory=[good.seal(ATTACKER)], blobs={good.blob: blob_file})
    await peer.start(addr)  # the node asks for the inventory on connect and tries to fetch the blob
    try:

        def tried() -> bool:
            text = (home / "node.log").read_text()
            return f"fetching factory {good.id[:12]}" in text

        await asyncio.to_thread(wait_for, tried, timeout=30, what="a failed fetch")
    finally:
        await peer.stop()
    row = next(r for r in control.call(home, "artifacts") if r["id"] == good.id)
    assert row["state"] == "pending" and not row["verified"]
    assert not (home / "store" / "blobs" / good.blob).exists()
    assert not any((home / "store" / "tmp").iterdir())  # no partial file left behind
    assert status(home)["phase"] == "ready"


async def test_a_signed_factory_that_cannot_be_loaded_is_skipped(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A node waiting for class 2 gets a validly signed factory for it whose blob (hash and size correct)
    is garbage, not a weight file naming its owner: the node drops that manifest at the fetch with a log
    line, keeps waiting for class 2, and stays up."""
    root = tmp_path_factory.mktemp("garbage")
    home = root / "a"
    addr = init_home(home, port=free_port(), data=class_file(root, [0, 1], "two"), classes=CLASSES, profile="tiny")
    garbage = root / "garbage.safetensors"
    garbage.write_bytes(b"not safetensors at all")
    bad = manifest(garbage.read_bytes(), seq=1)
    bad = Manifest(**{**bad.body(), "classes": [2], "arch": profile_for("tiny", (8, 8, 1)).factory.to_dict()})
    with Daemons() as daemons:
        daemons.start(home)
        wait_for(
            lambda: (s := status(home)) and s["phase"] == "waiting", timeout=120, what="node waiting", daemons=daemons
        )
        peer = Peer(topic="/ffnode/1/testnet/announce", inventory=[bad.seal(ATTACKER)], blobs={bad.blob: garbage})
        await peer.start(addr)
        try:
            await asyncio.to_thread(
                wait_for,
                lambda: "not a weight file naming its owner" in (home / "node.log").read_text(),
                timeout=60,
                what="the node to drop the broken factory",
                daemons=daemons,
            )
        finally:
            await peer.stop()
        s = status(home)
        assert s["phase"] == "waiting" and s["missing_classes"] == ["2"]
        assert bad.id not in {r["id"] for r in control.call(home, "artifacts")}  # dropped, not kept pending
        daemons.check()
