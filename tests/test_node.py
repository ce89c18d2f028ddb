"""The daemon in-process on 127.0.0.1: what it does when its own parts fail, and its shared counters."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from ffnode.artifacts.manifest import Manifest
from ffnode.daemon.intake import Traffic
from ffnode.daemon.node import Node
from ffnode.identity import Identity
from ffnode.net import NetError
from harness.localnet import Daemons, init_home, status, wait_for
from tests.daemons import CLASSES, class_file, free_port
from tests.test_net import crash_trio_thread


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "node"
    init_home(home, port=free_port(), data=class_file(tmp_path, [0], "zero"), classes=CLASSES, profile="tiny")
    return home


async def test_a_node_whose_network_dies_stops_with_an_error(home: Path) -> None:
    node = Node(home)
    stop = asyncio.Event()
    run = asyncio.create_task(node.run(stop))
    async with asyncio.timeout(60):
        await node.ready.wait()
        crash_trio_thread(node.net)
        with pytest.raises(ExceptionGroup) as info:
            await run
    assert info.group_contains(NetError, match="libp2p host stopped on its own")
    assert not (home / "node.json").exists()  # its runtime file is gone: `ffnode status` says it is down


def test_a_peer_waits_in_the_sync_queue_once(home: Path) -> None:
    node = Node(home)
    try:
        for _ in range(3):
            node.intake.queue_sync("peer-a")
        node.intake.queue_sync("peer-b")
        assert node.intake._sync_q.qsize() == 2
    finally:
        node._lock.close()


def test_traffic_counts_every_byte_from_many_threads() -> None:
    traffic = Traffic()

    def bump() -> None:
        for _ in range(20_000):
            traffic.add("blob", 3)
            traffic.add("sync", 1)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (traffic.blob_bytes, traffic.sync_bytes, traffic.sent) == (240_000, 80_000, 320_000)


def test_ffnode_start_shows_a_failed_daemon_task_as_one_line(monkeypatch, capsys) -> None:
    import ffnode.cli as cli

    def failing_daemon(**_: object) -> None:
        raise ExceptionGroup("unhandled errors in a TaskGroup", [NetError("the libp2p host stopped on its own")])

    monkeypatch.setattr(cli, "app", failing_daemon)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == "error: the libp2p host stopped on its own"

    def buggy_daemon(**_: object) -> None:
        raise ExceptionGroup("unhandled errors in a TaskGroup", [ZeroDivisionError("a bug")])

    monkeypatch.setattr(cli, "app", buggy_daemon)
    with pytest.raises(ExceptionGroup):  # a bug keeps its traceback
        cli.main()


def test_the_gossip_validator_never_waits_for_the_store(home: Path) -> None:
    """The validator runs on the network thread; the loop may hold the store's lock across a disk write."""
    node = Node(home)
    try:
        peer = Identity(b"\x44" * 32)
        m = Manifest("factory", peer.peer_id, peer.public_key, "testnet", [1], CLASSES, {}, "a" * 64, 100, 1, 1)
        data = m.seal(peer)
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with node.store._lock:
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait(5)
        t0 = time.perf_counter()
        reason = node.intake.validate(data, peer.peer_id)  # stateless checks only while the lock is busy
        took = time.perf_counter() - t0
        release.set()
        holder.join()
        assert took < 1.0 and reason is None
        assert node.intake.validate(data, peer.peer_id) is None  # and the full check once it is free
    finally:
        node._lock.close()


def test_a_message_stored_twice_is_taken_once_without_an_error(home: Path, caplog) -> None:
    """Two copies of one envelope can pass the gossip validator before either is stored (it arrives from two
    peers at once): the second is a duplicate, neither a membership change nor a bug (it once raised in the
    membership branch and was logged as an error on a BloodMNIST testnet)."""
    node = Node(home)
    try:
        peer = Identity(b"\x44" * 32)
        m = Manifest("factory", peer.peer_id, peer.public_key, "testnet", [1], CLASSES, {}, "a" * 64, 100, 1, 1)
        data = m.seal(peer)
        assert node.intake.validate(data, "peer-a") is None and node.intake.validate(data, "peer-b") is None
        with caplog.at_level("INFO"):
            node.intake.on_gossip(data, "peer-a")
            node.intake.on_gossip(data, "peer-b")
        assert not [r for r in caplog.records if r.levelname == "ERROR"]
        assert [r.getMessage() for r in caplog.records].count(f"accepted factory {m.id[:12]} of {peer.peer_id}") == 1
        assert node.store.get(m.id) is not None and node.ledger.reasons() == {}
    finally:
        node._lock.close()


def test_the_peer_table_is_bounded(home: Path) -> None:
    node = Node(home)
    try:
        node.ledger.peers_tracked = 5
        for i in range(50):
            node.ledger.reject(f"peer-{i}", "test")
        assert list(node.ledger.peers) == [f"peer-{i}" for i in range(45, 50)]  # the most recently seen
    finally:
        node._lock.close()


def test_sigterm_ends_the_process_promptly_and_cleanly(tmp_path: Path) -> None:
    """Stopped in the middle of training a factory, the process (not only its log line) is gone within seconds,
    exits 0 and prints no traceback: the exit once took 10-14 s under load."""
    home = tmp_path / "busy"
    init_home(home, port=free_port(), data=class_file(tmp_path, [0], "zero"), classes=CLASSES, profile="default")
    with Daemons() as daemons:
        daemons.start(home)
        wait_for(
            lambda: (s := status(home)) and s["phase"] == "factories", timeout=60, what="training", daemons=daemons
        )
        time.sleep(2)
        t0 = time.monotonic()
        assert daemons.stop(home, grace=30) == 0
        assert time.monotonic() - t0 < 5
    log = (home / "node.log").read_text()
    assert "node stopped" in log and "Traceback" not in log
