#!/usr/bin/env python3
"""What one idle node costs in memory: the figure a light node (issue 31) must bring from ~1 GB to <= 150 MB.

    python scripts/bench_node_memory.py [--nodes 2] [--json runs/node-memory.json]

Starts N `ffnode start` daemons of the `tiny` profile on 127.0.0.1 (site i holds digit i, all bootstrapped to
site 0), waits until every one is ready and idle, then reads each process's resident memory from /proc
(VmRSS, and the private part from smaps_rollup) several times over 10 s, and measures in fresh interpreters what
importing the node and the store alone costs, and whether torch comes with them.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ffnode.data.sources import load_dataset, save_npz
from harness.localnet import Daemons, init_home, status, wait_for

CLASSES = [str(d) for d in range(10)]
IMPORT_PROBE = (
    "import resource, sys; import {module}; "
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, 'torch' in sys.modules)"
)


def rss_mb(pid: int) -> tuple[float, float]:
    """(resident, private resident) MB of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])  # kB
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return fields["Rss"] / 1024, private / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def import_cost(module: str) -> dict:
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE.format(module=module)], capture_output=True, text=True)
    peak, torch = out.stdout.split()
    return {"module": module, "peak_rss_mb": int(peak), "imports_torch": torch == "True"}


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
        time.sleep(5)  # let the last gossip and sync settle
        samples = []
        for _ in range(5):
            samples.append([rss_mb(daemons.procs[h].pid) for h in homes])
            time.sleep(2)
    node_rss = max(r for sample in samples for r, _ in sample)
    node_private = max(p for sample in samples for _, p in sample)
    report |= {
        "nodes": args.nodes,
        "node_rss_mb_max": round(node_rss, 1),
        "node_private_mb_max": round(node_private, 1),
    }
    for row in report["imports"]:
        torch = "imports torch" if row["imports_torch"] else "no torch"
        print(f"import {row['module']}: peak {row['peak_rss_mb']} MB, {torch}")
    print(f"{args.nodes} idle tiny nodes: resident at most {node_rss:.0f} MB each ({node_private:.0f} MB private)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
