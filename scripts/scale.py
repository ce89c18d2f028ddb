#!/usr/bin/env python3
"""How the testnet scales on one machine: memory and wall time as the number of sites grows.

Runs scripts/testnet.py once per size (each in its own process, without baselines unless asked), every size's
sites sharing the machine's one pool of job slots, and draws from the reports (each report's `memory`, sampled
over every daemon and its workers, and `wall_s`) a JSON summary and a chart. With `--partition silo` and more
sites than classes, each class is split over several single-class sites (scripts/harness/partition.py).
Reports already in --out are reused, so an interrupted run resumes where it stopped; delete one to run it again.
Every option scale.py does not know goes to testnet.py as is.

    python scripts/scale.py --sizes 10,32,64 --dataset bloodmnist --partition silo --profile cpu --timeout 7200
    python scripts/scale.py --sizes 3,6 --dataset runs/digits012.npz --profile tiny --out runs/scale-small
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ffnode.artifacts.store import atomic_write
from harness.report_chart import write_scale_chart

TESTNET = Path(__file__).with_name("testnet.py")
OWN = ("--nodes", "--json", "--workdir")  # scale.py sets these per size


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="other options: see testnet.py --help")
    p.add_argument("--sizes", default="10,32,64", help="numbers of sites, comma-separated")
    p.add_argument("--out", type=Path, default=Path("runs/scale"), help="one report per size, the summary, the chart")
    p.add_argument("--chart-only", action="store_true", help="draw from the reports in --out, run nothing")
    args, testnet_args = p.parse_known_args(argv)
    try:
        args.sizes = sorted({int(x) for x in args.sizes.split(",")})
    except ValueError:
        p.error(f"--sizes takes whole numbers separated by commas, not {args.sizes!r}")
    if not args.sizes or args.sizes[0] < 1:
        p.error("--sizes: at least one size, each at least 1")
    if taken := [a for a in testnet_args if a.split("=", 1)[0] in OWN]:
        p.error(f"scale.py sets {', '.join(OWN)} itself: drop {' '.join(taken)}")
    return args, testnet_args


def run_size(args: argparse.Namespace, testnet_args: list[str], n: int, out: Path) -> None:
    """One testnet of `n` sites in its own process: nothing of one size's run stays in the next."""
    cmd = [sys.executable, str(TESTNET), "--no-baselines", *testnet_args]  # a later --baselines wins
    cmd += ["--nodes", str(n), "--json", str(out), "--workdir", str(args.out / "work")]
    subprocess.run(cmd, check=True)


def summary(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per size: the figures the chart draws, and what a site costs on average."""
    rows = []
    for r in sorted(reports, key=lambda r: r["nodes"]):
        m = r["memory"]
        rows.append({
            "nodes": r["nodes"],
            "wall_s": r["wall_s"],
            "workers": r["workers"],
            **m,
            "total_pss_mb_per_site": round(m["total_pss_mb_max"] / r["nodes"], 1),
            "job_core_s": r["compute"]["core_s_total"],
            "poe_accuracy_mean": r["poe_accuracy"]["mean"],
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args, testnet_args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = {n: args.out / f"sites-{n}.json" for n in args.sizes}
    for n, out in paths.items():
        if args.chart_only or out.exists():
            continue
        t0 = time.time()
        print(f"{n} sites ...", file=sys.stderr, flush=True)
        try:
            run_size(args, testnet_args, n, out)
        except subprocess.CalledProcessError as e:  # the smaller sizes, and the chart, still count
            print(f"{n} sites failed ({e}); see {args.out / 'work'}", file=sys.stderr, flush=True)
            continue
        print(f"{n} sites done in {time.time() - t0:.0f} s -> {out}", file=sys.stderr, flush=True)
    reports = [json.loads(p.read_text()) for p in paths.values() if p.exists()]
    if not reports:
        raise SystemExit(f"error: no reports in {args.out} for sizes {args.sizes}")
    rows = summary(reports)
    atomic_write(args.out / "scale.json", json.dumps(rows, indent=2).encode())
    first = reports[0]
    title = f"{Path(first['dataset']).name}, {first['partition']}, profile {first['profile']}: memory and time by sites"
    subtitle = f"{first['workers']} shared job workers, {first['hardware']['cpus']} cores; peaks sampled each second"
    write_scale_chart(reports, chart := args.out / "scale.png", title, subtitle)
    for row in rows:
        print(
            f"{row['nodes']:4d} sites: {row['wall_s']:7.0f} s, memory peak {row['total_rss_mb_max']:7.0f} MB resident "
            f"({row['total_pss_mb_max']:.0f} MB PSS, {row['total_pss_mb_per_site']:.0f} per site), largest node "
            f"{row['node_rss_mb_max']:.0f} MB, workers {row['workers_rss_mb_max']:.0f} MB"
        )
    print(f"summary {args.out / 'scale.json'}, chart {chart}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
