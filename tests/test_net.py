"""NetHost against real py-libp2p hosts on 127.0.0.1 (several hosts in one process)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID

from ffnode.net import Handlers, NetError, NetHost
from ffnode.net import streams as net_streams
from ffnode.net.conns import ConnLimits

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
TOPIC = "ffnode/test"


@dataclass
class Node:
    """A started NetHost plus what its handlers saw."""

    host: NetHost
    gossip: list[tuple[bytes, str]] = field(default_factory=list)
    peer_events: list[tuple[str, bool]] = field(default_factory=list)
    blobs: dict[str, Path] = field(default_factory=dict)


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for a condition set by a callback or another thread; each test bounds the wait."""
    # Polling: the conditions are plain lists/sets written from the trio thread or callbacks.
    while not predicate():  # noqa: ASYNC110
        await asyncio.sleep(0.02)


@pytest.fixture
async def make_node() -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    """Factory of started nodes; all are stopped at the end of the test."""
    nodes: list[Node] = []
    counter = iter(range(1, 255))

    async def make(
        *,
        serve_request: Callable[[str, bytes], bytes] | None = None,
        validate: Callable[[bytes, str], str | None] | None = None,
        open_blob: Callable[[str], Path | None] | None = None,
        seed: bytes | None = None,
        listen: list[str] | None = None,
        **kwargs: object,
    ) -> Node:
        node: Node
        handlers = Handlers(
            validate_gossip=validate or (lambda data, peer: None),
            on_gossip=lambda data, peer: node.gossip.append((data, peer)),
            on_peer=lambda peer, up: node.peer_events.append((peer, up)),
            serve_request=serve_request or (lambda peer, body: b"re:" + body),
            open_blob=open_blob or (lambda blob_id: node.blobs.get(blob_id)),
        )
        host = NetHost(
            seed=seed or bytes([next(counter)]) * 32,
            listen=listen or LOCAL,
            topic=TOPIC,
            handlers=handlers,
            **kwargs,  # type: ignore[arg-type]
        )
        node = Node(host)
        await host.start()
        nodes.append(node)
        return node

    yield make
    async with asyncio.timeout(20):
        for node in nodes:
            await node.host.stop()


async def connected(a: Node, b: Node) -> None:
    """Connect a to b and wait until both sides reported the peer and gossip can flow."""
    await a.host.connect(b.host.addrs[0])
    await until(lambda: (b.host.peer_id, True) in a.peer_events and (a.host.peer_id, True) in b.peer_events)


async def gossip_reaches(sender: Node, receiver: Node, data: bytes) -> None:
    """Publish until the receiver got data: the mesh may still be forming right after a connect."""
    while (data, sender.host.peer_id) not in receiver.gossip:
        await sender.host.publish(data)
        await asyncio.sleep(0.3)


async def chain(make_node, **middle: Any) -> tuple[Node, Node, Node]:
    """A <- B <- C (each bootstraps to the one before), once C is connected and A has gossiped through to it."""
    a = await make_node()
    b = await make_node(bootstrap=a.host.addrs, **middle)
    c = await make_node(bootstrap=b.host.addrs)
    await until(lambda: b.host.peer_id in c.host.connected_peers())
    await gossip_reaches(a, c, b"warm-up")
    return a, b, c


def add_blob(node: Node, tmp_path: Path, data: bytes) -> str:
    blob_id = hashlib.sha256(data).hexdigest()
    path = tmp_path / f"served-{blob_id[:8]}"
    path.write_bytes(data)
    node.blobs[blob_id] = path
    return blob_id


# --- basics -------------------------------------------------------------------------------------


async def test_start_reports_concrete_addrs_and_connect_notifies_both_sides(make_node) -> None:
    async with asyncio.timeout(30):
        a, b = await make_node(), await make_node()
        for addr in a.host.addrs:
            assert addr.endswith(f"/p2p/{a.host.peer_id}")
            assert "/tcp/0/" not in addr and "0.0.0.0" not in addr
        assert await b.host.connect(a.host.addrs[0]) == a.host.peer_id
        await until(lambda: a.host.peer_id in b.host.connected_peers())
        await until(lambda: b.host.peer_id in a.host.connected_peers())
        await until(lambda: (b.host.peer_id, True) in a.peer_events)
        assert b.peer_events == [(a.host.peer_id, True)]
        assert any(x.startswith("/ip4/127.0.0.1/tcp/") for x in b.host.peer_addrs(a.host.peer_id))


async def test_start_fails_with_net_error_when_port_is_taken(make_node) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        addr = f"/ip4/127.0.0.1/tcp/{sock.getsockname()[1]}"
        with pytest.raises(NetError, match=addr):
            async with asyncio.timeout(20):
                await make_node(listen=[addr])


async def test_a_port_another_host_listens_on_is_refused_and_port_0_still_works(make_node) -> None:
    """py-libp2p listens with SO_REUSEPORT: without the check a second host bound the same port and split the
    inbound connections with the first."""
    async with asyncio.timeout(30):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        a = await make_node(listen=[f"/ip4/127.0.0.1/tcp/{port}"])
        with pytest.raises(NetError, match=f"127.0.0.1:{port} is in use by another process"):
            await make_node(listen=[f"/ip4/127.0.0.1/tcp/{port}"])
        b, c = await make_node(), await make_node()  # port 0: any free port, each its own
        assert len({x.host.addrs[0] for x in (a, b, c)}) == 3
        assert await c.host.connect(a.host.addrs[0]) == a.host.peer_id  # a still serves its port


async def test_connect_to_nobody_raises_net_error(make_node) -> None:
    a, b = await make_node(), await make_node()
    dead = b.host.addrs[0]
    await b.host.stop()
    async with asyncio.timeout(20):
        with pytest.raises(NetError, match="connect to"):
            await a.host.connect(dead)


async def test_gossip_flows_both_ways_along_a_bootstrap_chain(make_node) -> None:
    """C bootstraps to B, B to A: an announcement from A reaches C and one from C reaches A."""
    async with asyncio.timeout(40):
        a, b, c = await chain(make_node)
        await gossip_reaches(a, c, b"from-a")
        await gossip_reaches(c, a, b"from-c")
        assert (b"from-a", a.host.peer_id) in b.gossip
        # Own messages are not echoed back to the daemon.
        assert all(peer != a.host.peer_id for _, peer in a.gossip)


async def test_a_burst_of_publishes_is_paced_and_fully_delivered(make_node) -> None:
    """Unpaced, py-libp2p delivered 10 of a burst of 50 (queue sizes and its 10 msg/s spam cap)."""
    async with asyncio.timeout(30):
        a, _, c = await chain(make_node)
        burst = [b"burst-%d" % i for i in range(30)]
        await asyncio.gather(*(a.host.publish(m) for m in burst))
        await until(lambda: all((m, a.host.peer_id) in c.gossip for m in burst))
        # Concurrent publishes have no defined order; each arrives exactly once.
        assert sorted(m for m, _ in c.gossip if m.startswith(b"burst-")) == sorted(burst)


async def test_rejected_gossip_is_neither_delivered_nor_forwarded(make_node, caplog) -> None:
    async with asyncio.timeout(40):

        def no_bad(data: bytes, peer: str) -> str | None:
            return "contains bad" if b"bad" in data else None

        a, b, c = await chain(make_node, validate=no_bad)
        await a.host.publish(b"bad-1")
        await gossip_reaches(a, c, b"good-2")
        assert all(b"bad" not in data for data, _ in b.gossip + c.gossip)
        assert any("contains bad" in r.message and a.host.peer_id in r.message for r in caplog.records)


async def test_oversized_gossip_is_dropped_with_a_log_line(make_node, caplog) -> None:
    async with asyncio.timeout(40):
        small = await make_node(max_gossip_bytes=1000)
        big = await make_node(max_gossip_bytes=10_000)
        await connected(big, small)
        with pytest.raises(NetError, match="exceeds"):
            await small.host.publish(b"x" * 1001)
        await gossip_reaches(big, small, b"small-enough")
        await big.host.publish(b"y" * 5000)
        await gossip_reaches(big, small, b"after-big")
        assert all(len(data) <= 1000 for data, _ in small.gossip)
        assert any("5000 bytes exceeds" in r.message for r in caplog.records)


# --- sync protocol ------------------------------------------------------------------------------


async def test_sync_request_round_trip_and_large_response(make_node) -> None:
    async with asyncio.timeout(30):
        big = os.urandom(3 * 2**20)
        a = await make_node(serve_request=lambda peer, body: big if body == b"big" else b"re:" + body)
        b = await make_node()
        await connected(b, a)
        assert await b.host.request(a.host.peer_id, b"inventory?") == b"re:inventory?"
        assert await b.host.request(a.host.peer_id, b"big") == big
        with pytest.raises(NetError, match=a.host.peer_id):
            await b.host.request(a.host.peer_id, b"big", max_response=2**20)
        # The oversized response reset only that stream.
        assert await b.host.request(a.host.peer_id, b"again") == b"re:again"


async def test_failing_handler_resets_the_stream_but_keeps_the_connection(make_node, tmp_path) -> None:
    async with asyncio.timeout(30):

        def serve(peer: str, body: bytes) -> bytes:
            if body == b"boom":
                raise RuntimeError("handler failed")
            return b"ok"

        def open_blob(blob_id: str) -> Path | None:
            raise OSError("disk on fire")

        a = await make_node(serve_request=serve, open_blob=open_blob)
        b = await make_node()
        await connected(b, a)
        with pytest.raises(NetError, match="sync request"):
            await b.host.request(a.host.peer_id, b"boom")
        assert await b.host.request(a.host.peer_id, b"fine") == b"ok"
        with pytest.raises(NetError, match="0" * 64):
            await b.host.fetch_blob(a.host.peer_id, "0" * 64, 10, tmp_path / "never")
        assert not (tmp_path / "never").exists()
        assert await b.host.request(a.host.peer_id, b"fine") == b"ok"
        assert a.host.peer_id in b.host.connected_peers()


async def test_peer_vanishing_mid_request_raises_and_node_keeps_running(make_node) -> None:
    async with asyncio.timeout(30):
        entered, release = threading.Event(), threading.Event()

        def slow(peer: str, body: bytes) -> bytes:
            entered.set()
            release.wait(10)
            return b"late"

        a = await make_node(serve_request=slow)
        b = await make_node()
        c = await make_node()
        await connected(b, a)
        pending = asyncio.ensure_future(b.host.request(a.host.peer_id, b"x"))
        await until(entered.is_set)
        # The server stops while its handler is still busy: stop() does not wait for the handler.
        await a.host.stop()
        with pytest.raises(NetError, match=a.host.peer_id):
            await pending
        release.set()
        await connected(b, c)
        assert await b.host.request(c.host.peer_id, b"still") == b"re:still"


async def test_cancelling_the_caller_cancels_the_trio_side(make_node) -> None:
    async with asyncio.timeout(30):
        release = threading.Event()
        a = await make_node(serve_request=lambda peer, body: b"slow" if release.wait(10) else b"")
        b = await make_node()
        await connected(b, a)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await b.host.request(a.host.peer_id, b"x")
        assert time.monotonic() - start < 2
        release.set()
        # The abandoned stream was reset; the connection serves the next request.
        assert await b.host.request(a.host.peer_id, b"x") == b"slow"


# --- blob protocol ------------------------------------------------------------------------------


async def test_fetch_blob_writes_the_verified_file(make_node, tmp_path) -> None:
    async with asyncio.timeout(30):
        a, b = await make_node(), await make_node()
        data = os.urandom(3 * 2**20 + 12345)
        blob_id = add_blob(a, tmp_path, data)
        await connected(b, a)
        dest = tmp_path / "fetched"
        await b.host.fetch_blob(a.host.peer_id, blob_id, len(data), dest)
        assert dest.read_bytes() == data
        empty_id = add_blob(a, tmp_path, b"")
        await b.host.fetch_blob(a.host.peer_id, empty_id, 0, tmp_path / "empty")
        assert (tmp_path / "empty").read_bytes() == b""


async def test_fetch_blob_failures_leave_no_file(make_node, tmp_path) -> None:
    async with asyncio.timeout(30):
        a, b = await make_node(), await make_node()
        data = os.urandom(2**20)
        blob_id = add_blob(a, tmp_path, data)
        # Served under an id that is not its hash (a corrupted or lying server).
        wrong_id = hashlib.sha256(b"something else").hexdigest()
        a.blobs[wrong_id] = a.blobs[blob_id]
        await connected(b, a)
        dest = tmp_path / "dest"
        cases = [
            ("0" * 64, len(data), "not found"),
            (blob_id, len(data) + 1, "declares"),
            (wrong_id, len(data), "sha256 mismatch"),
        ]
        for bid, size, reason in cases:
            with pytest.raises(NetError, match=reason) as info:
                await b.host.fetch_blob(a.host.peer_id, bid, size, dest)
            assert bid in str(info.value) and a.host.peer_id in str(info.value)
            assert not dest.exists()


def lying_blob_server(extra: int, stall: bool = False):
    """A serve_blob that declares the true size but sends `extra` more (or fewer) bytes, or stalls."""

    async def serve(stream, open_blob) -> None:
        request = net_streams._unpack(await net_streams.read_frame(stream, 4096), "blob_get")
        path = open_blob(request["id"])
        data = path.read_bytes()
        header = {"t": "blob_hdr", "v": 1, "ok": True, "size": len(data)}
        await net_streams.write_frame(stream, net_streams._pack(header))
        if stall:
            await net_streams.write_all(stream, data[: len(data) // 2])
            await trio.sleep(30)
        body = data + b"\0" * extra if extra >= 0 else data[:extra]
        await net_streams.write_all(stream, body)
        await stream.close()

    return serve


@pytest.mark.parametrize(("extra", "reason"), [(-100, "stream ended"), (100, "more than the declared")])
async def test_blob_shorter_or_longer_than_declared_fails(make_node, tmp_path, monkeypatch, extra, reason) -> None:
    async with asyncio.timeout(30):
        monkeypatch.setattr(net_streams, "serve_blob", lying_blob_server(extra))
        a = await make_node()  # the lying server: its handler is bound at start
        monkeypatch.undo()
        b = await make_node()
        data = os.urandom(600_000)
        blob_id = add_blob(a, tmp_path, data)
        await connected(b, a)
        dest = tmp_path / "dest"
        with pytest.raises(NetError, match=reason):
            await b.host.fetch_blob(a.host.peer_id, blob_id, len(data), dest)
        assert not dest.exists()


async def test_blob_server_stalling_mid_transfer_fails_within_the_stall_timeout(
    make_node, tmp_path, monkeypatch
) -> None:
    async with asyncio.timeout(30):
        monkeypatch.setattr(net_streams, "serve_blob", lying_blob_server(0, stall=True))
        a = await make_node()
        monkeypatch.undo()
        b = await make_node()
        data = os.urandom(2**20)
        blob_id = add_blob(a, tmp_path, data)
        await connected(b, a)
        dest = tmp_path / "dest"
        start = time.monotonic()
        with pytest.raises(NetError, match="stalled"):
            await b.host.fetch_blob(a.host.peer_id, blob_id, len(data), dest, stall_timeout=1.0)
        assert time.monotonic() - start < 4
        assert not dest.exists()
        # A caller that gives up (asyncio.timeout) cancels the fetch; the partial file is gone too.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await b.host.fetch_blob(a.host.peer_id, blob_id, len(data), dest)
        assert not dest.exists()
        assert await b.host.request(a.host.peer_id, b"alive") == b"re:alive"


# --- resilience ---------------------------------------------------------------------------------


async def test_malformed_meshsub_stream_does_not_kill_pubsub(make_node) -> None:
    """The 6 bytes 05ffffffffff on a raw /meshsub/1.1.0 stream (a protobuf DecodeError inside
    py-libp2p's pubsub handler) must leave the victim fully working."""
    async with asyncio.timeout(40):
        victim = await make_node()
        attacker = await make_node()
        await connected(attacker, victim)

        async def send_garbage() -> None:
            # Runs in the attacker's trio thread, through its real libp2p host.
            stream = await attacker.host._host.new_stream(ID.from_base58(victim.host.peer_id), ["/meshsub/1.1.0"])
            await stream.write(bytes.fromhex("05ffffffffff"))
            await trio.sleep(0.5)

        await attacker.host._call("send garbage", send_garbage)
        fresh = await make_node()
        await connected(fresh, victim)
        await gossip_reaches(victim, fresh, b"victim-to-fresh")
        await gossip_reaches(fresh, victim, b"fresh-to-victim")
        assert await fresh.host.request(victim.host.peer_id, b"sync") == b"re:sync"
        assert await victim.host.request(fresh.host.peer_id, b"sync") == b"re:sync"


async def test_bootstrap_peer_that_restarts_is_reconnected(make_node) -> None:
    async with asyncio.timeout(40):
        a = await make_node(seed=b"\xaa" * 32)
        port_addr = a.host.addrs[0].split("/p2p/")[0]
        b = await make_node(bootstrap=a.host.addrs)
        await until(lambda: (a.host.peer_id, True) in b.peer_events)
        await a.host.stop()
        await until(lambda: (a.host.peer_id, False) in b.peer_events)
        a2 = await make_node(seed=b"\xaa" * 32, listen=[port_addr])
        await until(lambda: b.peer_events.count((a.host.peer_id, True)) == 2)
        await gossip_reaches(a2, b, b"back")


async def test_mdns_discovers_and_connects_local_peers(make_node) -> None:
    async with asyncio.timeout(20):  # discovery on loopback takes 1.5-3.5 s
        a, b = await make_node(mdns=True), await make_node(mdns=True)
        await until(lambda: (b.host.peer_id, True) in a.peer_events and (a.host.peer_id, True) in b.peer_events)


def crash_trio_thread(host: NetHost) -> None:
    """Make libp2p's trio world die the way an unguarded bug would: an exception escaping a callback."""

    def boom() -> None:
        raise RuntimeError("injected libp2p crash")

    assert host._token is not None
    host._token.run_sync_soon(boom)


async def test_wait_ended_returns_when_libp2p_dies_on_its_own(make_node, caplog) -> None:
    async with asyncio.timeout(10):
        a, b = await make_node(), await make_node()
        await connected(a, b)
        waiter = asyncio.create_task(a.host.wait_ended())
        await asyncio.sleep(0.2)
        assert not waiter.done()  # a healthy host does not end
        crash_trio_thread(a.host)
        await waiter
        await until(lambda: (b.host.peer_id, False) in a.peer_events)  # its peers are reported gone
    assert "crashed" in caplog.text


# --- connection limits (net/conns.py) --------------------------------------------------------------------------


async def test_inbound_slots_come_back_when_connections_close(make_node) -> None:
    """A node accepting at most 3 connections at once: 6 peers in turn connect and leave, then a 7th still gets
    in. py-libp2p held each inbound slot until its swarm ended, so the 4th connection of the node's life was
    refused before its handshake, and so was every one after."""
    async with asyncio.timeout(90):
        server = await make_node(conn_limits=ConnLimits(total=8, inbound=3, per_peer=2, per_ip=8))
        for i in range(7):
            client = await make_node(seed=bytes([200 + i]) * 32)
            assert await client.host.connect(server.host.addrs[0]) == server.host.peer_id, f"connection {i + 1}"
            await until(lambda c=client: c.host.peer_id in server.host.connected_peers())
            await client.host.stop()
            await until(lambda c=client: c.host.peer_id not in server.host.connected_peers())
        assert not server.host.refusals.counts


async def test_one_ip_holds_at_most_its_connections_and_the_refusals_are_counted(make_node, caplog) -> None:
    """Under limits.connections_per_ip = 2, two peers from 127.0.0.1 get in, a third (another key, the same IP)
    is refused before its handshake (each of the dialler's tries), counted and logged once; when one of the two
    leaves, the third gets in."""
    async with asyncio.timeout(90):
        server = await make_node(conn_limits=ConnLimits(total=8, inbound=8, per_peer=2, per_ip=2))
        a, b, c = [await make_node(seed=bytes([210 + i]) * 32) for i in range(3)]
        for client in (a, b):
            await client.host.connect(server.host.addrs[0])
        with pytest.raises(NetError):
            await c.host.connect(server.host.addrs[0])
        refused = dict(server.host.refusals.counts)  # py-libp2p's dialler tries again: each try is refused
        assert list(refused) == ["limits.connections_per_ip"] and refused["limits.connections_per_ip"] >= 1
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused a connection")]
        assert said == ["refused a connection: limits.connections_per_ip (127.0.0.1 holds 2)"], said
        assert c.host.peer_id not in server.host.connected_peers()
        await a.host.stop()
        await until(lambda: a.host.peer_id not in server.host.connected_peers())
        for _ in range(50):  # the slot is the IP's again once the server has seen the connection close
            try:
                assert await c.host.connect(server.host.addrs[0]) == server.host.peer_id
                break
            except NetError:
                await asyncio.sleep(0.2)
        await until(lambda: c.host.peer_id in server.host.connected_peers())
