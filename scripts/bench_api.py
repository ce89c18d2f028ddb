#!/usr/bin/env python3
"""What a query costs through the HTTP API (`POST /v1/query`) of a real running node, against the same query over
the node's control socket (what `ffnode query` uses).

    python scripts/bench_api.py --profile cpu --experts 10

Makes a node home (digits, tiny profile for its own learning) whose store also holds N randomly initialised
peer experts of the profile's size (scripts/bench_query.py's), starts `ffnode start` with the API on 127.0.0.1,
waits until it is ready (its own factories and expert trained), then times, taking the ways in turns: one image
(median and p90 of --repeats, ms) and a batch of --batch images (the best of 3, images per second), through HTTP
with one keep-alive connection (TCP_NODELAY, as curl sets it) as base64 pixels in JSON, and one image as a PNG
body, and through the control socket.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench_query import CLASSES, SHAPE, expert_store
from ffnode.daemon import control
from harness.localnet import Daemons, free_port, init_home, status, wait_for


def timed(ask: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    ask()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu", help="the peer experts' size: a profile of ffnode/profiles.py")
    p.add_argument("--experts", type=int, default=10, help="peer experts in the store (the node adds its own)")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--batch", type=int, default=2000)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        home, port = Path(tmp) / "node", free_port()
        settings = {"api": {"listen": f"127.0.0.1:{port}"}, "jobs": {"query_warm": True}}
        init_home(home, port=free_port(), data="digits", classes=CLASSES, federation="bench", profile="tiny",
                  force_profile=True, settings=settings)  # fmt: skip
        expert_store(home / "store", args.profile, args.experts, federation="bench")
        with Daemons() as daemons:
            daemons.start(home)
            t0 = time.monotonic()
            wait_for(lambda: (s := status(home)) and s["phase"] == "ready", timeout=900, what="ready", daemons=daemons)
            print(f"node ready in {time.monotonic() - t0:.0f} s with {args.experts} + 1 experts", file=sys.stderr)
            bench(home, f"http://127.0.0.1:{port}", args)


def bench(home: Path, url: str, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    one, batch = (rng.integers(0, 256, (k, *SHAPE), dtype=np.uint8) for k in (1, args.batch))
    png = io.BytesIO()
    Image.fromarray(one[0][..., 0]).save(png, format="PNG")
    pixels = {"pixels": base64.b64encode(batch.tobytes()).decode(), "shape": list(batch.shape)}
    # TCP_NODELAY, as curl and browsers set it: httpx writes a request's headers and body apart
    nodelay = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    with httpx.Client(base_url=url, timeout=300, transport=nodelay) as http:

        def api(x: np.ndarray, as_png: bool) -> None:
            if as_png:
                r = http.post("/v1/query", content=png.getvalue(), headers={"content-type": "image/png"})
            else:
                body = (
                    pixels if len(x) > 1 else {"pixels": base64.b64encode(x.tobytes()).decode(), "shape": list(x.shape)}
                )
                r = http.post("/v1/query", json=body)
            r.raise_for_status()

        ways: dict[str, Callable[[np.ndarray], None]] = {
            "http": lambda x: api(x, as_png=False),
            "http png": lambda x: api(x, as_png=len(x) == 1),  # one image as a PNG body; a batch as pixels
            "control": lambda x: control.call(home, "query", control.encode_images(x), timeout=300),
        }
        for ask in ways.values():
            ask(one)  # warm: connection, the worker's experts
        single: dict[str, list[float]] = {name: [] for name in ways}
        many: dict[str, list[float]] = {name: [] for name in ways}
        for times, x, rounds in ((single, one, args.repeats), (many, batch, 3)):
            for _ in range(rounds):
                for name, ask in ways.items():
                    times[name].append(timed(lambda ask=ask, x=x: ask(x)))
        experts = len(http.post("/v1/query", content=png.getvalue(), headers={"content-type": "image/png"})
                      .json()["experts"])  # fmt: skip
    report = {"experts": experts, "profile": args.profile, "batch": args.batch, "load_avg": os.getloadavg()[0]}
    for name in ways:
        walls = sorted(single[name])
        report[name] = {
            "one_ms_median": round(1000 * statistics.median(walls), 2),
            "one_ms_p90": round(1000 * walls[int(0.9 * len(walls))], 2),
            "batch_img_per_s": round(args.batch / min(many[name])),
        }
        r = report[name]
        print(f"{name:>8}: one image {r['one_ms_median']:6.2f} ms median (p90 {r['one_ms_p90']:.2f});"
              f" {args.batch} images {r['batch_img_per_s']:6,} img/s")  # fmt: skip
    print(json.dumps(report))
    print(f"{experts} experts answered; load average after: {report['load_avg']:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
