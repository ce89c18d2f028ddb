#!/usr/bin/env python3
"""What answering through the query worker costs against answering in-process: the node's process never imports
torch, so its queries go to a warm worker process (ffnode.query_worker) over a pipe.

    python scripts/bench_query.py --profile cpu --experts 10

Builds a temporary store of N randomly initialised experts of the profile's size for 8x8x1 digits (10 classes)
and times, through QueryService and through an in-process ExpertPool (both warm, prior rule): one image
end-to-end (median of --repeats queries, ms) and a batch of --batch images (the best of 3, images per second).
"""

from __future__ import annotations

import argparse
import asyncio
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

CLASSES = [str(d) for d in range(10)]
SHAPE = (8, 8, 1)


def expert_store(root: Path, profile: str, n: int) -> Store:
    """N live experts, one per site, each claiming 100 real images of every class."""
    cfg = profile_for(profile, SHAPE).expert
    store = Store(root, federation="bench", classes=CLASSES)
    real = [100] * len(CLASSES)
    for i in range(n):
        site = Identity((i + 1).to_bytes(32, "big"))
        torch.manual_seed(i)
        blob = weights_to_bytes(build_expert(cfg, len(CLASSES), SHAPE).state_dict(), site.peer_id)
        arch = {"expert": cfg.to_dict(), "num_classes": len(CLASSES), "image_shape": list(SHAPE)}
        meta = {"real_counts": real, "label_counts": real, "n_real": sum(real), "n_train": sum(real)}
        m = Manifest("expert", site.peer_id, site.public_key, "bench", list(range(len(CLASSES))), CLASSES, arch,
                     store.put_blob_bytes(blob), len(blob), 1, 1, meta=meta)  # fmt: skip
        store.add(m.seal(site))
    return store


async def timed(fn: Callable[[], Awaitable[object]], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
    return times


async def bench(store: Store, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    one, batch = (rng.integers(0, 256, (k, *SHAPE), dtype=np.uint8) for k in (1, args.batch))
    pool = ExpertPool(store, len(CLASSES), SHAPE)
    service = QueryService(store, len(CLASSES), SHAPE, threads=args.threads)
    t0 = time.perf_counter()
    await service.start()
    print(f"worker started, {args.experts} experts loaded: {time.perf_counter() - t0:.2f} s")
    try:
        ways: dict[str, Callable[[np.ndarray], Awaitable[object]]] = {
            "worker": lambda x: service.query(x, CLASSES, "prior"),
            "in-process": lambda x: asyncio.to_thread(pool.query, x, CLASSES, "prior"),
        }
        for name, ask in ways.items():
            await ask(one)  # warm: the pool loads its experts here
            single = await timed(lambda ask=ask: ask(one), args.repeats)
            many = await timed(lambda ask=ask: ask(batch), 3)
            print(
                f"{name:>10}: one image {1000 * statistics.median(single):6.2f} ms median "
                f"(p90 {1000 * sorted(single)[int(0.9 * len(single))]:.2f}); "
                f"{args.batch} images {args.batch / min(many):8,.0f} img/s"
            )
    finally:
        await service.close()


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
