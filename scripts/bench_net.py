"""Measure ffnode.net over loopback, every host in its own process.

    python scripts/bench_net.py                # all three measurements
    python scripts/bench_net.py --only blob --chunk 262144

1. blob: MB/s of fetch_blob between two processes, 20 MB and 50 MB blobs, median of --repeats.
2. gossip: --nodes hosts (star bootstrap to node 0, or --chain), ~2 KB announcements published in
   turn by every node, one every --interval seconds; latency = receive time - send time (one
   machine, one clock). "to all nodes" is, per announcement, the time until the last node has it.
3. late joiner: a fresh process bootstraps to one node and asks it for its inventory on connect;
   times start() -> connected -> inventory received.

Goals: >= 100 MB/s blob transfer, p95 <= 250 ms announcement latency with 16 nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing as mp
import os
import statistics
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

from ffnode.net import Handlers, NetHost
from ffnode.net import streams as net_streams

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
TOPIC = "ffnode/bench"
ANNOUNCEMENT_BYTES = 2048
# What a node answers to an inventory request: 200 manifest ids and sizes, as a daemon might.
INVENTORY = msgpack.packb([{"id": hashlib.sha256(b"%d" % i).hexdigest(), "size": 10**7} for i in range(200)])
# Announcement layout: sender index, sequence number, send time (time.time()), then padding.
STAMP = struct.Struct(">HId")


def handlers(**overrides: Any) -> Handlers:
    fields: dict[str, Any] = {
        "validate_gossip": lambda data, peer: None,
        "on_gossip": lambda data, peer: None,
        "on_peer": lambda peer, up: None,
        "serve_request": lambda peer, body: b"",
        "open_blob": lambda blob_id: None,
    }
    fields.update(overrides)
    return Handlers(**fields)


def seed(index: int) -> bytes:
    return hashlib.sha256(b"bench-%d" % index).digest()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- blob -----------------------------------------------------------------------------------------


def blob_server(blob_dir: str, chunk: int, addr_q: Any, done: Any) -> None:
    net_streams.BLOB_CHUNK = chunk
    blobs = {p.name: p for p in Path(blob_dir).iterdir()}

    async def main() -> None:
        host = NetHost(seed=seed(1000), listen=LOCAL, topic=TOPIC, handlers=handlers(open_blob=blobs.get))
        await host.start()
        cpu = time.process_time()  # an idle host costs ~nothing: this is the serving cost
        addr_q.put(host.addrs[0])
        await asyncio.get_running_loop().run_in_executor(None, done.wait)
        addr_q.put(time.process_time() - cpu)
        await host.stop()

    asyncio.run(main())


def blob_client(addr: str, sizes: dict[str, int], repeats: int, out_dir: str, result_q: Any) -> None:
    async def main() -> None:
        host = NetHost(seed=seed(1001), listen=LOCAL, topic=TOPIC, handlers=handlers())
        await host.start()
        peer = await host.connect(addr)
        results: dict[int, list[float]] = {}
        cpu_ms_per_mb: list[float] = []
        for blob_id, size in sizes.items():
            dest = Path(out_dir) / f"fetched-{blob_id[:8]}"
            for _ in range(repeats):
                start, cpu = time.perf_counter(), time.process_time()
                await host.fetch_blob(peer, blob_id, size, dest)
                results.setdefault(size, []).append(size / (time.perf_counter() - start) / 1e6)
                cpu_ms_per_mb.append((time.process_time() - cpu) * 1000 / (size / 1e6))
                dest.unlink()
        await host.stop()
        result_q.put((results, statistics.median(cpu_ms_per_mb)))

    asyncio.run(main())


def bench_blob(ctx: mp.context.BaseContext, sizes_mb: list[int], repeats: int, chunk: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        blob_dir = Path(tmp) / "blobs"
        blob_dir.mkdir()
        sizes: dict[str, int] = {}
        for mb in sizes_mb:
            data = os.urandom(mb * 1_000_000)
            blob_id = hashlib.sha256(data).hexdigest()
            (blob_dir / blob_id).write_bytes(data)
            sizes[blob_id] = len(data)
        addr_q, result_q, done = ctx.Queue(), ctx.Queue(), ctx.Event()
        server = ctx.Process(target=blob_server, args=(str(blob_dir), chunk, addr_q, done))
        server.start()
        client = ctx.Process(target=blob_client, args=(addr_q.get(timeout=60), sizes, repeats, tmp, result_q))
        client.start()
        results, client_cpu = result_q.get(timeout=600)
        client.join()
        done.set()
        server_cpu = addr_q.get(timeout=60) * 1000 / (sum(sizes.values()) * repeats / 1e6)
        server.join()
    print(f"blob transfer, server chunk {chunk // 1024} KiB, {repeats} runs each (MB/s):")
    for size, rates in results.items():
        runs = " ".join(f"{r:.0f}" for r in rates)
        print(f"  {size / 1e6:.0f} MB: median {statistics.median(rates):.1f} MB/s  (runs: {runs})")
    # CPU cost does not depend on what else the machine runs: 1000 / (ms per MB) bounds MB/s.
    print(f"  CPU per MB (all threads): receiver {client_cpu:.1f} ms, sender {server_cpu:.1f} ms")


# --- gossip -----------------------------------------------------------------------------------------


def gossip_node(index: int, bootstrap: list[str], ctl: Any, report_q: Any, plan: dict[str, Any]) -> None:
    """One host: report its address, publish its share of announcements, report receive times."""
    received: list[tuple[int, int, float, float]] = []  # sender, seq, sent, received

    def on_gossip(data: bytes, peer: str) -> None:
        sender, seq, sent = STAMP.unpack_from(data)
        received.append((sender, seq, sent, time.time()))

    async def main() -> None:
        linked = asyncio.Event()
        host = NetHost(
            seed=seed(index),
            listen=LOCAL,
            topic=TOPIC,
            bootstrap=bootstrap,
            handlers=handlers(
                on_gossip=on_gossip,
                on_peer=lambda peer, up: linked.set(),
                serve_request=lambda peer, body: INVENTORY,
            ),
        )
        await host.start()
        report_q.put(("addr", index, host.addrs[0]))
        loop = asyncio.get_running_loop()
        await linked.wait()
        report_q.put(("connected", index, len(host.connected_peers())))
        t0 = await loop.run_in_executor(None, ctl.get)  # common start time from the parent
        padding = os.urandom(ANNOUNCEMENT_BYTES - STAMP.size)
        for seq in range(plan["messages"]):
            if seq % plan["nodes"] != index:
                continue
            await asyncio.sleep(max(0.0, t0 + seq * plan["interval"] - time.time()))
            await host.publish(STAMP.pack(index, seq, time.time()) + padding)
        await asyncio.sleep(max(0.0, t0 + plan["messages"] * plan["interval"] + 2.0 - time.time()))
        report_q.put(("done", index, received))
        await loop.run_in_executor(None, ctl.get)  # stay up until everyone reported
        await host.stop()

    asyncio.run(main())


def late_joiner(bootstrap: str, report_q: Any) -> None:
    async def main() -> None:
        marks: dict[str, float] = {}
        got = asyncio.Event()
        host: NetHost

        async def sync(peer: str) -> None:
            inventory = msgpack.unpackb(await host.request(peer, b"inventory?"))
            marks["inventory"] = time.perf_counter()
            marks["entries"] = len(inventory)
            got.set()

        def on_peer(peer: str, up: bool) -> None:
            if up and "connected" not in marks:
                marks["connected"] = time.perf_counter()
                tasks.add(asyncio.ensure_future(sync(peer)))

        tasks: set[asyncio.Future[None]] = set()
        host = NetHost(
            seed=seed(999), listen=LOCAL, topic=TOPIC, bootstrap=[bootstrap], handlers=handlers(on_peer=on_peer)
        )
        start = time.perf_counter()
        await host.start()
        marks["started"] = time.perf_counter()
        async with asyncio.timeout(30):
            await got.wait()
        for task in tasks:
            await task
        await host.stop()
        report_q.put({k: v - start if k != "entries" else v for k, v in marks.items()})

    asyncio.run(main())


def bench_gossip(ctx: mp.context.BaseContext, nodes: int, messages: int, interval: float, chain: bool) -> None:
    procs: list[mp.process.BaseProcess] = []
    try:
        run_gossip(ctx, procs, nodes, messages, interval, chain)
    finally:
        for proc in procs:  # a failed run must not leave 16 hosts behind
            if proc.is_alive():
                proc.terminate()


def run_gossip(
    ctx: mp.context.BaseContext,
    procs: list[mp.process.BaseProcess],
    nodes: int,
    messages: int,
    interval: float,
    chain: bool,
) -> None:
    plan = {"nodes": nodes, "messages": messages, "interval": interval}
    report_q = ctx.Queue()
    ctls = [ctx.Queue() for _ in range(nodes)]
    addrs: dict[int, str] = {}
    linked: dict[int, int] = {}  # node -> peers when it first reported a connection
    start = time.perf_counter()
    for i in range(nodes):
        if i == 0:
            bootstrap: list[str] = []
        else:
            bootstrap = [addrs[i - 1] if chain else addrs[0]]
        proc = ctx.Process(target=gossip_node, args=(i, bootstrap, ctls[i], report_q, plan), daemon=True)
        proc.start()
        procs.append(proc)
        while i not in addrs:
            kind, index, value = report_q.get(timeout=120)
            (addrs if kind == "addr" else linked)[index] = value
    while len(linked) < nodes:
        kind, index, value = report_q.get(timeout=120)
        linked[index] = value
    print(f"{nodes} hosts up and connected in {time.perf_counter() - start:.1f} s")
    # Let the mesh settle (event-driven GRAFT plus a few 1 s heartbeats) before measuring.
    time.sleep(3.0)
    t0 = time.time() + 0.5
    for q in ctls:
        q.put(t0)
    received: dict[int, list[tuple[int, int, float, float]]] = {}
    while len(received) < nodes:
        kind, index, value = report_q.get(timeout=messages * interval + 120)
        if kind == "done":
            received[index] = value

    # Late joiner while the network is still up: bootstraps to the last node.
    joiner_q = ctx.Queue()
    joiner = ctx.Process(target=late_joiner, args=(addrs[nodes - 1], joiner_q), daemon=True)
    procs.append(joiner)
    joiner.start()
    marks = joiner_q.get(timeout=60)
    joiner.join()
    for q in ctls:
        q.put(None)
    for proc in procs:
        proc.join(timeout=30)

    per_delivery: list[float] = []
    to_all: list[float] = []
    missing = 0
    for seq in range(messages):
        sender = seq % nodes
        lat = [
            (recv - sent) * 1000
            for idx, recs in received.items()
            if idx != sender
            for s, q, sent, recv in recs
            if q == seq and s == sender
        ]
        per_delivery += lat
        missing += (nodes - 1) - len(lat)
        if len(lat) == nodes - 1:
            to_all.append(max(lat))
    topology = "chain" if chain else "star"
    print(
        f"gossip, {nodes} hosts ({topology} bootstrap), {messages} x {ANNOUNCEMENT_BYTES} B announcements,"
        f" one every {interval * 1000:.0f} ms:"
    )
    if to_all:
        print(
            f"  latency to all nodes: p50 {quantile(to_all, 0.5):.1f} ms, p95 {quantile(to_all, 0.95):.1f} ms,"
            f" max {max(to_all):.1f} ms ({len(to_all)} of {messages} announcements reached every node)"
        )
    if per_delivery:
        print(f"  per delivery: p50 {quantile(per_delivery, 0.5):.1f} ms, p95 {quantile(per_delivery, 0.95):.1f} ms")
    print(f"  deliveries missing: {missing} of {messages * (nodes - 1)}")
    print("  received per node:", " ".join(str(len(received[i])) for i in range(nodes)))
    print(
        f"late joiner: start() {marks['started'] * 1000:.0f} ms, connected {marks['connected'] * 1000:.0f} ms,"
        f" inventory received {marks['inventory'] * 1000:.0f} ms after start() was called"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["blob", "gossip"], help="run one measurement (gossip includes late joiner)")
    parser.add_argument("--chunk", type=int, default=net_streams.BLOB_CHUNK, help="server chunk size in bytes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--messages", type=int, default=160)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between announcements")
    parser.add_argument("--chain", action="store_true", help="chain bootstrap instead of star")
    args = parser.parse_args()
    # spawn: each host gets a fresh interpreter, no threads inherited mid-flight.
    ctx = mp.get_context("spawn")
    print(f"{os.cpu_count()} CPU cores")
    if args.only in (None, "blob"):
        bench_blob(ctx, [20, 50], args.repeats, args.chunk)
    if args.only in (None, "gossip"):
        bench_gossip(ctx, args.nodes, args.messages, args.interval, args.chain)


if __name__ == "__main__":
    main()
