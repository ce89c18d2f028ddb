#!/usr/bin/env python3
"""What answering through the query worker costs against answering in-process: the node's process never imports
torch, so its queries go to a warm worker process (ffnode.query_worker) over a pipe.

    python scripts/bench_query.py --profile cpu --experts 10

Builds a temporary store of N randomly initialised experts of the profile's size for 8x8x1 digits (10 classes)
and times, through QueryService and through an in-process ExpertPool (both warm, prior rule): one image
end-to-end (median of --repeats queries, ms) and a batch of --batch images (the best of 3, images per second),
the two ways taken in turns, with the CPU time they took (this process and the worker's: on a shared machine,
the figure other processes' load changes least).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import torch

from ffnode.artifacts.blob import weights_to_bytes
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.expert.resnet import build_expert
from ffnode.identity import Identity
from ffnode.profiles import profile_for
from ffnode.query import ExpertPool
from ffnode.query_worker import QueryService
from harness.memory import cpu_s

CLASSES = [str(d) for d in range(10)]
SHAPE = (8, 8, 1)


def expert_store(root: Path, profile: str, n: int, federation: str = "bench") -> Store:
    """N live experts, one per site, each claiming 100 real images of every class."""
    cfg = profile_for(profile, SHAPE).expert
    store = Store(root, federation=federation, classes=CLASSES)
    real = [100] * len(CLASSES)
    for i in range(n):
        site = Identity((i + 1).to_bytes(32, "big"))
        torch.manual_seed(i)
        blob = weights_to_bytes(build_expert(cfg, len(CLASSES), SHAPE).state_dict(), site.peer_id)
        arch = {"expert": cfg.to_dict(), "num_classes": len(CLASSES), "image_shape": list(SHAPE)}
        meta = {"real_counts": real, "label_counts": real, "n_real": sum(real), "n_train": sum(real)}
        m = Manifest("expert", site.peer_id, site.public_key, federation, list(range(len(CLASSES))), CLASSES, arch,
                     store.put_blob_bytes(blob), len(blob), 1, 1, meta=meta)  # fmt: skip
        store.add(m.seal(site))
    return store


async def timed(ask: Callable[[], Awaitable[object]], pids: list[int]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the processes `pids`) of one query."""
    c0, t0 = sum(map(cpu_s, pids)), time.perf_counter()
    await ask()
    return time.perf_counter() - t0, sum(map(cpu_s, pids)) - c0


async def bench(store: Store, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    one, batch = (rng.integers(0, 256, (k, *SHAPE), dtype=np.uint8) for k in (1, args.batch))
    pool = ExpertPool(store, len(CLASSES), SHAPE)
    service = QueryService(store, len(CLASSES), SHAPE, threads=args.threads)
    t0 = time.perf_counter()
    await service.start()
    assert service.pid is not None
    print(f"worker started, {args.experts} experts loaded: {time.perf_counter() - t0:.2f} s")
    try:
        ways: dict[str, tuple[Callable[[np.ndarray], Awaitable[object]], list[int]]] = {
            "worker": (lambda x: service.query(x, CLASSES, "prior"), [os.getpid(), service.pid]),
            "in-process": (lambda x: asyncio.to_thread(pool.query, x, CLASSES, "prior"), [os.getpid()]),
        }
        await ways["in-process"][0](one)  # the pool loads its experts here
        # taken in turns, so that both ways see the same load on a shared machine
        single: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        many: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        for times, x, rounds in ((single, one, args.repeats), (many, batch, 3)):
            for _ in range(rounds):
                for name, (ask, pids) in ways.items():
                    times[name].append(await timed(lambda ask=ask, x=x: ask(x), pids))
        for name in ways:
            walls = sorted(wall for wall, _ in single[name])
            cpu_one = sum(cpu for _, cpu in single[name]) / len(single[name])
            cpu_many = sum(cpu for _, cpu in many[name]) / (len(many[name]) * args.batch)
            print(
                f"{name:>10}: one image {1000 * statistics.median(walls):6.2f} ms median "
                f"(p90 {1000 * walls[int(0.9 * len(walls))]:.2f}, CPU {1000 * cpu_one:.1f} ms); "
                f"{args.batch} images {args.batch / min(wall for wall, _ in many[name]):6,.0f} img/s "
                f"({1 / max(cpu_many, 1e-9):6,.0f} per CPU second)"
            )
    finally:
        await service.close()
    print(f"load average after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu", help="the experts' size: a profile of ffnode/profiles.py")
    p.add_argument("--experts", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--threads", type=int, default=0, help="the worker's torch threads (0: torch's default)")
    args = p.parse_args(argv)
    print(f"{args.experts} experts of profile {args.profile!r}, torch threads here {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(expert_store(Path(tmp), args.profile, args.experts), args))


if __name__ == "__main__":
    main()
