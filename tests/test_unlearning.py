"""Exact unlearning across real daemons (tiny profile): a revoked factory is dropped everywhere, the
experts derived from it are retrained and pass the bitwise proof, a forged revocation deletes nothing,
an offline node catches up by sync when it starts, and a re-gossiped revoked manifest is refused."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ffnode.artifacts.revocation import Revocation
from ffnode.daemon import control
from ffnode.identity import Identity
from harness.localnet import Daemons, ffnode_cmd, status, wait_for
from tests.daemons import Peer, ready_chain, retrained_without, rows, wait_for_log

TIMEOUT = 180.0


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Path], list[str], Daemons]]:
    with ready_chain(tmp_path_factory.mktemp("unlearn"), TIMEOUT) as federation:
        yield federation


def own_factory(home: Path) -> dict:
    me = status(home)["peer_id"]
    return next(r for r in rows(home).values() if r["kind"] == "factory" and r["owner"] == me)


async def test_forged_revocation_deletes_nothing(fed: tuple[list[Path], list[str], Daemons]) -> None:
    homes, addrs, _ = fed
    victim = own_factory(homes[0])
    mallory = Identity(b"\x05" * 32)
    forged = Revocation(
        owner=mallory.peer_id,
        owner_key=mallory.public_key,
        federation="testnet",
        ids=[victim["id"]],
        reason="forged",
        created=int(time.time() * 1000),
        seq=99,
    )
    peer = Peer(topic="/ffnode/1/testnet/announce", seed=b"\x05" * 32, inventory=[])
    await peer.start(addrs[1])
    try:
        await peer.publish(forged.seal(mallory))
        await wait_for_log(homes[1], "not signed by its owner", "B to reject the forged revocation")
    finally:
        await peer.stop()
    for home in homes:
        assert rows(home)[victim["id"]]["state"] == "live"


def test_revocation_cascades_exactly_and_offline_node_catches_up(fed: tuple[list[Path], list[str], Daemons]) -> None:
    homes, _, daemons = fed
    a, b, c = homes
    victim = own_factory(a)
    old_experts = {h: status(h)["current_expert"] for h in (b, c)}
    assert daemons.stop(c) == 0  # C is offline while A revokes

    out = subprocess.run(
        ffnode_cmd("revoke", "--home", str(a), victim["id"][:16], "--json"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ids"] == [victim["id"]]

    def unlearned(home: Path) -> bool:
        return retrained_without(home, victim["id"], old_experts[home])

    wait_for(lambda: unlearned(b), timeout=TIMEOUT, what="B to drop the factory and retrain", daemons=daemons)
    daemons.start(c)
    wait_for(lambda: unlearned(c), timeout=TIMEOUT, what="C to catch up after restart", daemons=daemons)

    for home in (b, c):
        assert not (home / "store" / "blobs" / victim["blob"]).exists()
        assert rows(home)[old_experts[home]]["state"] == "revoked"  # superseded everywhere
        proof = control.call(home, "verify_unlearning", timeout=None)
        assert proof["bitwise_identical"] is True
        assert proof["live_lineage_clean"] is True
        assert victim["id"] in proof["revoked_ids"]
    for home in homes:  # the superseded experts no longer take part in queries
        live = {r["id"] for r in rows(home).values() if r["kind"] == "expert" and r["state"] == "live"}
        assert not live & set(old_experts.values())


async def test_regossiped_revoked_manifest_is_refused(fed: tuple[list[Path], list[str], Daemons]) -> None:
    homes, addrs, _ = fed
    revoked = [r for r in rows(homes[0]).values() if r["kind"] == "factory" and r["state"] == "revoked"]
    assert revoked, "runs after the cascade test"
    envelope = (homes[0] / "store" / "manifests" / f"{revoked[0]['id']}.msgpack").read_bytes()
    peer = Peer(topic="/ffnode/1/testnet/announce", seed=b"\x06" * 32, inventory=[envelope])
    await peer.start(addrs[1])  # served by sync on connect, and gossiped
    try:
        await peer.publish(envelope)
        await wait_for_log(homes[1], "was revoked: refusing it", "B to refuse the revoked manifest")
    finally:
        await peer.stop()
    assert rows(homes[1])[revoked[0]["id"]]["state"] == "revoked"
    assert not (homes[1] / "store" / "blobs" / revoked[0]["blob"]).exists()
