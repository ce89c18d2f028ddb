#!/usr/bin/env python3
"""What an idle node costs in CPU when it has many peers: the figure that decides how many sites one machine can
simulate (docs/benchmarks.md, "Scale").

    python scripts/bench_idle_cpu.py --nodes 16 --window 120 [--json runs/idle-cpu.json]

Starts N `ffnode start` daemons of the `tiny` profile on 127.0.0.1 (site i holds digit i mod 10, all bootstrapped
to site 0, jobs through one shared pool of 2), waits until every one is ready with every site's expert and has
met every other site, lets gossip and sync settle for --settle seconds, then reads each node process's CPU time
(user + system, all its threads; not its jobs or query worker, which idle nodes do not run) and its bytes
sent (status.traffic) over --window seconds. Prints the mean and largest share of a core per node.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from ffnode.data.sources import load_dataset, save_npz
from harness.localnet import Daemons, free_port, init_home, status, wait_for
from harness.memory import cpu_s

CLASSES = [str(d) for d in range(10)]


def sent(home: Path) -> int:
    s = status(home)
    return sum(s["traffic"][k] for k in ("blob", "sync", "gossip")) if s else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=16)
    p.add_argument("--window", type=float, default=120.0)
    p.add_argument("--settle", type=float, default=30.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    n = args.nodes
    with tempfile.TemporaryDirectory() as tmp, Daemons() as daemons:
        root, addrs, homes = Path(tmp), [], []
        digits = load_dataset("digits", classes=CLASSES)
        jobs = {"jobs": {"slots": str(root / "slots"), "workers": 2}}
        for i in range(n):
            home, data = root / f"site{i}", root / f"class{i}.npz"
            keep = digits.labels == i % 10
            save_npz(data, {"train": (digits.images[keep], digits.labels[keep])}, CLASSES)
            addrs.append(init_home(home, port=free_port(), data=data, classes=CLASSES, bootstrap=addrs[:1],
                                   profile="tiny", seed=i, settings=jobs))  # fmt: skip
            homes.append(home)
            daemons.start(home)
        t0 = time.monotonic()

        def settled(h: Path) -> bool:
            s = status(h)
            return (
                bool(s)
                and s["phase"] == "ready"
                and s["artifacts"].get("expert_live", 0) == n
                and (s["connected_peers"] >= n - 1)
            )

        for home in homes:
            wait_for(lambda h=home: settled(h), timeout=1800, what=f"{home.name} ready, meshed", daemons=daemons)
        ready_s = time.monotonic() - t0
        time.sleep(args.settle)
        pids = [daemons.procs[h].pid for h in homes]
        c0, b0, w0 = [cpu_s(p) for p in pids], [sent(h) for h in homes], time.monotonic()
        time.sleep(args.window)
        c1, b1, w1 = [cpu_s(p) for p in pids], [sent(h) for h in homes], time.monotonic()
    share = [100 * (b - a) / (w1 - w0) for a, b in zip(c0, c1, strict=True)]
    rate = [(b - a) / (w1 - w0) for a, b in zip(b0, b1, strict=True)]
    report = {
        "nodes": n,
        "ready_s": round(ready_s, 1),
        "window_s": round(w1 - w0, 1),
        "cpu_pct_mean": round(sum(share) / n, 2),
        "cpu_pct_max": round(max(share), 2),
        "cpu_cores_all": round(sum(share) / 100, 3),
        "sent_bytes_per_s_mean": round(sum(rate) / n),
        "load_avg": os.getloadavg()[0],
    }
    print(f"{n} idle nodes, each with {n - 1} peers: {report['cpu_pct_mean']:.2f} % of a core each on average "
          f"(largest {report['cpu_pct_max']:.2f} %), {report['cpu_cores_all']:.2f} cores in all; "
          f"{report['sent_bytes_per_s_mean']:,} B/s sent each")  # fmt: skip
    print(json.dumps(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
