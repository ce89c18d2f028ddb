"""The audit trail and the JSON log (issue 32, item 3), on real daemons on 127.0.0.1 (tiny profile): each node's
events.jsonl records its own publications and the other's as accepted (the owner the actor), a revocation on both
nodes with its signer and reason, the operator's blocks once; `ffnode events` reads it, skipping a torn line;
`ffnode start --log-format json` writes one JSON object a line, with the peer a rejection or acceptance concerns.

Site A holds the digit 0 and site B the digit 1; B runs with the JSON log. A third node, on a small filesystem the
test fills (root only), records its local fault once the disk takes writes again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ffnode import events as events_module
from ffnode.artifacts.revocation import Revocation
from ffnode.events import EVENTS_FILE, EventLog, iso_time, read_events
from ffnode.identity import Identity
from harness.localnet import Daemons, init_home, status, wait_for
from tests.daemons import CLASSES, Peer, class_file, cli, cli_json, free_port, wait_for_log

TIMEOUT = 120.0
TOPIC = "/ffnode/1/testnet/announce"
JSON_LOG = ["sh", "-c", 'exec "$@" --log-format json', "sh"]  # Daemons runs PREFIX + `ffnode start`: this appends
REASON = "consent withdrawn"
NOBODY, MALLORY = Identity(b"\x07" * 32), Identity(b"\x06" * 32)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str, dict[Path, str], Daemons]]:
    """A and B running, each holding the other's factory: (A, B, B's address, peer ID by home, the daemons)."""
    root = tmp_path_factory.mktemp("events")
    a, b = root / "a", root / "b"
    addr_a = init_home(a, port=free_port(), data=class_file(root, [0], "zero"), classes=CLASSES, profile="tiny")
    nobody = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{NOBODY.peer_id}"  # libp2p logs the failed dial
    addr_b = init_home(b, port=free_port(), data=class_file(root, [1], "one"), classes=CLASSES, profile="tiny",
                       bootstrap=[addr_a, nobody], seed=1)  # fmt: skip
    ids = {a: addr_a.rsplit("/", 1)[-1], b: addr_b.rsplit("/", 1)[-1]}
    with Daemons() as daemons:
        daemons.start(a)
        daemons.start(b, prefix=JSON_LOG)

        def factories_exchanged() -> bool:
            return all(
                any(e["event"] == event and e["kind"] == "factory" and e["actor"] == ids[who] for e in read_events(h))
                for h in (a, b)
                for event, who in (("published", h), ("accepted", a if h == b else b))
            )

        wait_for(factories_exchanged, timeout=TIMEOUT, what="A and B to hold each other's factory", daemons=daemons)
        yield a, b, addr_b, ids, daemons


def events_of(home: Path, *options: str) -> list[dict]:
    """`ffnode events --json` of the home."""
    return cli_json("events", "--home", str(home), *options)


def test_each_node_records_its_publications_and_accepts_the_others_by_their_owner(fed) -> None:
    a, b, _, ids, _ = fed
    for home, other in ((a, b), (b, a)):
        found = events_of(home, "--event", "accepted")
        assert found and all(e["event"] == "accepted" for e in found)
        theirs = next(e for e in found if e["kind"] == "factory")
        assert theirs["actor"] == theirs["owner"] == ids[other] and theirs["via"] == ids[other]
        assert theirs["class"] == CLASSES[0 if other == a else 1] and len(theirs["artifact"]) == 64
        mine = next(e for e in events_of(home, "--event", "published") if e["kind"] == "factory")
        assert mine["actor"] == ids[home] and mine["artifact"] != theirs["artifact"]


def test_a_revocation_is_recorded_on_both_nodes_with_its_signer_and_reason(fed) -> None:
    a, b, _, ids, daemons = fed
    factory = next(e for e in read_events(a, event="published") if e["kind"] == "factory")["artifact"]
    out = cli("revoke", "--home", str(a), factory[:16], "--reason", REASON, "--json")
    assert out.returncode == 0, out.stderr

    def revoked(home: Path) -> dict | None:
        return next((e for e in events_of(home, "--event", "revoked") if factory in e["ids"]), None)

    there = wait_for(lambda: revoked(b), timeout=60, what="B to record A's revocation", daemons=daemons)
    here = revoked(a)
    assert here is not None and "via" not in here  # signed here, not received
    for e in (here, there):
        assert e["actor"] == e["owner"] == ids[a] and e["reason"] == REASON and e["ids"] == [factory]
    assert there["via"] == ids[a] and there["revocation"] == here["revocation"]
    table = cli("events", "--home", str(b), "--event", "revoked")
    assert table.returncode == 0 and "revoked" in table.stdout and REASON in table.stdout


def test_a_block_is_recorded_once_with_the_operator_as_its_actor(fed) -> None:
    a, b, _, ids, _ = fed
    for undo in ((), ("--undo",)):
        out = cli("block", *undo, ids[b], "--home", str(a))
        assert out.returncode == 0 and "the running node applied it" in out.stderr
    found = [e for e in events_of(a) if e["event"] in ("blocked", "unblocked")]
    assert [(e["event"], e["actor"], e["peer"]) for e in found] == [
        ("blocked", "operator", ids[b]),
        ("unblocked", "operator", ids[b]),
    ]


def test_a_stopped_node_records_the_operators_block_and_its_leaving(tmp_path: Path) -> None:
    home, mallory = tmp_path / "stopped", Identity(b"\x05" * 32).peer_id
    addr = init_home(home, port=free_port(), data=class_file(tmp_path, [2], "two"), classes=CLASSES, profile="tiny")
    out = cli("block", mallory, "--home", str(home))  # no node to apply it: the command records it
    assert out.returncode == 0 and "applies when the node starts" in out.stderr
    assert cli("leave", "--home", str(home)).returncode == 0
    found = [(e["event"], e["actor"], e.get("peer")) for e in events_of(home)]
    assert found == [("blocked", "operator", mallory), ("left", addr.rsplit("/", 1)[-1], None)]


def test_events_skips_a_torn_line_and_filters(tmp_path: Path) -> None:
    home = tmp_path / "n"
    init_home(home, port=free_port(), data=class_file(tmp_path, [0], "zero"), classes=CLASSES, profile="tiny")
    log = EventLog(home)
    log.record("published", "me", artifact="a" * 64, kind="factory")
    with open(home / EVENTS_FILE, "ab") as f:
        f.write(b'{"time": "2026-12-0')  # a crash in the middle of a line
    log.record("left", "me")  # starts on a line of its own
    out = cli("events", "--home", str(home), "--json")
    assert out.returncode == 0 and "events.jsonl line 2: skipped" in out.stderr
    assert [e["event"] for e in json.loads(out.stdout)] == ["published", "left"]
    assert [e["event"] for e in events_of(home, "--limit", "1")] == ["left"]
    assert events_of(home, "--event", "published")[0]["artifact"] == "a" * 64
    assert events_of(home, "--since", "2999-01-01T00:00:00") == []
    bad = cli("events", "--home", str(home), "--event", "nonsense")
    assert bad.returncode == 1 and "use one of" in bad.stderr


def test_the_trail_is_bounded_and_keeps_the_newest_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_module, "ROTATE_BYTES", 4096)
    log = EventLog(tmp_path)
    for n in range(200):  # about 60 bytes each
        log.record("accepted", "peer", n=n)
    kept = read_events(tmp_path)
    assert (tmp_path / f"{EVENTS_FILE}.1").exists() and 4096 < sum(f.stat().st_size for f in tmp_path.iterdir()) <= 8192
    assert [e["n"] for e in kept] == list(range(200 - len(kept), 200))  # the newest, in order, none twice


async def test_the_json_log_is_one_object_a_line_with_the_peer_as_a_field(fed) -> None:
    a, b, addr_b, ids, _ = fed
    mallory = MALLORY
    peer = Peer(topic=TOPIC, seed=mallory.seed, inventory=[b"not an envelope"])  # B syncs it when it connects
    await peer.start(addr_b)
    try:
        await wait_for_log(b, f'"peer": "{mallory.peer_id}"', "B to reject the bad inventory item")
    finally:
        await peer.stop()
    records = [json.loads(line) for line in (b / "node.log").read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    # every line parsed as JSON: py-libp2p's records too (its per-connection ones are DEBUG now: ffnode/logs.py)
    rejection = next(r for r in records if r.get("peer") == mallory.peer_id and r["level"] == "WARNING")
    assert rejection["message"].startswith(f"rejected a message from {mallory.peer_id}")
    accepted = next(r for r in records if r["message"].startswith("accepted factory"))
    assert accepted["peer"] == accepted["owner"] == ids[a] and len(accepted["artifact"]) == 64
    assert status(b) is not None  # still up


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MB tmpfs for the test to fill (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


async def test_a_fault_is_recorded_with_its_time_once_the_disk_takes_it(tmp_path: Path, small_disk: Path) -> None:
    c = small_disk / "c"
    addr = init_home(c, port=free_port(), data=class_file(tmp_path, [2], "two"), classes=CLASSES, profile="tiny")
    with Daemons() as daemons:
        daemons.start(c)
        # its own factory published, it waits for peers: no job writes to the disk while the test fills it
        await asyncio.to_thread(wait_for, lambda: (s := status(c)) and s["phase"] == "waiting", timeout=120,
                                what="C waiting for peers", daemons=daemons)  # fmt: skip
        peer = Peer(topic=TOPIC, seed=MALLORY.seed)
        await peer.start(addr)
        try:
            filler = fill(small_disk, c / "events.jsonl")
            tombstone = Revocation(MALLORY.peer_id, MALLORY.public_key, "testnet", ["ab" * 32], "x", 1, 1)
            await peer.publish(tombstone.seal(MALLORY))  # C must store it: the disk refuses
            await asyncio.to_thread(wait_for, lambda: (s := status(c)) and s["fault"], timeout=30,
                                    what="C to report the fault", daemons=daemons)  # fmt: skip

            def faults() -> list[dict]:
                return [e for e in read_events(c) if e["event"] in ("fault", "fault_cleared")]

            assert faults() == []  # the disk refused the event too: it waits in memory
            failed_at = time.time()
            filler.unlink()
            await asyncio.to_thread(wait_for, lambda: len(faults()) == 2, timeout=30, what="C to clear the fault",
                                    daemons=daemons)  # fmt: skip
        finally:
            await peer.stop()
    fault, cleared = faults()
    assert (fault["event"], cleared["event"]) == ("fault", "fault_cleared")
    assert fault["actor"] == cleared["actor"] == addr.rsplit("/", 1)[-1]
    assert "No space left" in fault["reason"] and cleared["reason"] == fault["reason"]
    assert fault["time"] < iso_time(failed_at) < cleared["time"]  # written late, with the time it happened


def fill(disk: Path, *tails: Path) -> Path:
    """Take every free byte of the filesystem, and the free end of the last page of each of `tails` (blank lines: an
    append that fits the page a file already holds needs no free byte); returns the file to delete to give them
    back."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    for tail in tails:
        with open(tail, "ab", buffering=0) as f, contextlib.suppress(OSError):
            for _ in range(1 << 16):
                f.write(b"\n")
    return filler
