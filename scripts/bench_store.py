#!/usr/bin/env python3
"""How the store's queries scale with the manifests it holds: the learner calls pending() and live() on the
event loop every round, and every message a peer sends goes through check().

    python scripts/bench_store.py --manifests 20000

Creates N signed factory manifests of N/100 owners (no blobs: all pending) in a temporary store, then times
pending(), live(), entries(), inventory() and check() of a new manifest (median of 20 calls each).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Limits, Store
from ffnode.identity import Identity


def manifest(owner: Identity, seq: int) -> Manifest:
    blob = f"{seq:064x}"
    return Manifest(
        "factory",
        owner.peer_id,
        owner.public_key,
        "bench",
        [seq % 10],
        [str(d) for d in range(10)],
        {},
        blob,
        1000,
        seq,
        seq,
    )


def median_ms(fn, repeats: int = 20) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifests", type=int, default=20_000)
    args = p.parse_args(argv)
    owners = [Identity(i.to_bytes(32, "big")) for i in range(1, max(2, args.manifests // 100) + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp), federation="bench", limits=Limits(manifests_per_publisher=10**6, publishers=10**6))
        t0 = time.perf_counter()
        for i in range(args.manifests):
            owner = owners[i % len(owners)]
            store.add(manifest(owner, 1 + i // len(owners)).seal(owner))
        fill = time.perf_counter() - t0
        fresh = manifest(owners[0], 10**6).seal(owners[0])
        print(f"{args.manifests} manifests of {len(owners)} owners stored in {fill:.1f} s")
        for name, fn in (
            ("pending()", store.pending),
            ("live()", store.live),
            ("entries()", store.entries),
            ("inventory()", store.inventory),
            ("check(new manifest)", lambda: store.check(fresh)),
        ):
            print(f"{name:22s} {median_ms(fn):8.2f} ms")


if __name__ == "__main__":
    main()
