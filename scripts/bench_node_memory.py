#!/usr/bin/env python3
"""What one idle node costs in memory: the figure a light node (issue 31) must bring from ~1 GB to <= 150 MB.

    python scripts/bench_node_memory.py [--nodes 2] [--json runs/node-memory.json]

Starts N `ffnode start` daemons of the `tiny` profile on 127.0.0.1 (site i holds digit i, all bootstrapped to
site 0), waits until every one is ready and idle, then reads from /proc, five times over 10 s, each node
process's resident memory (VmRSS, and the private part from smaps_rollup) and that of the processes below it:
an idle node runs no job, so what runs there is its query worker (experts loaded, `jobs.query_warm`). It also
measures in fresh interpreters what importing the node and the store alone costs, and whether torch comes
with them: the node must import none, its workers do.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ffnode.data.sources import load_dataset, save_npz
from harness.localnet import Daemons, free_port, init_home, status, wait_for
from harness.memory import children_of, descendants, rss_mb

CLASSES = [str(d) for d in range(10)]
TARGET_MB = 150  # issue 31: an idle light node, resident
IMPORT_PROBE = (
    "import resource, sys; import {module}; "
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, 'torch' in sys.modules)"
)


def private_mb(pid: int) -> float:
    """The resident memory only `pid` holds (no shared library page), from /proc/<pid>/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])  # kB
    return (fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)) / 1024


def import_cost(module: str) -> dict:
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE.format(module=module)], capture_output=True, text=True)
    peak, torch = out.stdout.split()
    return {"module": module, "peak_rss_mb": int(peak), "imports_torch": torch == "True"}


def sample(pid: int) -> dict:
    """One node now: itself (resident, private) and the processes below it (their count and resident total)."""
    below = descendants(pid, children_of())
    workers_mb = sum(map(rss_mb, below))
    return {"node": rss_mb(pid), "private": private_mb(pid), "workers": len(below), "workers_mb": workers_mb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    report: dict = {"imports": [import_cost(m) for m in ("ffnode.artifacts.store", "ffnode.daemon.node")]}
    with tempfile.TemporaryDirectory() as tmp, Daemons() as daemons:
        root, addrs, homes = Path(tmp), [], []
        digits = load_dataset("digits", classes=CLASSES)
        for i in range(args.nodes):
            home, data = root / f"site{i}", root / f"class{i}.npz"
            keep = digits.labels == i % 10
            save_npz(data, {"train": (digits.images[keep], digits.labels[keep])}, CLASSES)
            addrs.append(
                init_home(
                    home, port=free_port(), data=data, classes=CLASSES, bootstrap=addrs[:1], profile="tiny", seed=i
                )
            )
            homes.append(home)
            daemons.start(home)
        for home in homes:
            wait_for(lambda h=home: (s := status(h)) and s["phase"] in ("ready", "waiting"), timeout=600,
                     what=f"{home.name} idle", daemons=daemons)  # fmt: skip
        time.sleep(5)  # let the last gossip and sync settle, and a warm query worker load its experts
        samples = []
        for _ in range(5):
            samples += [sample(daemons.procs[h].pid) for h in homes]
            time.sleep(2)
    node = max(s["node"] for s in samples)
    with_workers = max(s["node"] + s["workers_mb"] for s in samples)
    report |= {
        "nodes": args.nodes,
        "node_rss_mb_max": round(node, 1),
        "node_private_mb_max": round(max(s["private"] for s in samples), 1),
        "workers_max": max(s["workers"] for s in samples),  # processes below one idle node (its query worker)
        "node_with_workers_rss_mb_max": round(with_workers, 1),
        "target_mb": TARGET_MB,
    }
    for row in report["imports"]:
        torch = "imports torch" if row["imports_torch"] else "no torch"
        print(f"import {row['module']}: peak {row['peak_rss_mb']} MB, {torch}")
    print(
        f"{args.nodes} idle tiny nodes: the node process resident at most {node:.0f} MB each "
        f"({report['node_private_mb_max']:.0f} MB private); target <= {TARGET_MB} MB "
        f"{'met' if node <= TARGET_MB else 'missed'}"
    )
    if report["workers_max"]:
        print(f"with the {report['workers_max']} process(es) below it (query worker): {with_workers:.0f} MB")
    else:
        print("no process ran below an idle node (no query worker)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
