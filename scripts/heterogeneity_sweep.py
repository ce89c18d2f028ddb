#!/usr/bin/env python3
"""The paper's heterogeneity sweep (its Figure 5): accuracy as label skew grows, one chart per dataset.

For each partition (Dirichlet alpha 1.0, 0.3, 0.1, 0.03, then silo) it runs FedAvg, FedProx, FedDyn and
SCAFFOLD at their tuned settings on the testnet's own split (in process, --jobs at a time), and a full
testnet federation (real daemons, scripts/testnet.py --baselines server) for ffnode's PoE and server mode;
the centralised bound is trained once. Partitions left out of --ffnode get the baselines only, for datasets
where a federation per partition does not fit the machine: their ffnode points are missing from the chart,
not guessed. `--fl-lr` runs the baselines again at other learning rates (settings tuned on one dataset need
not carry over: on BloodMNIST the digits' lr 0.1 kills FedAvg's CNN in its first rounds), and the chart shows
each method at the rate that ended best in each partition: chosen on the test split, which flatters the
baselines, never ffnode. Reports already in --out are reused, so an interrupted sweep resumes where it stopped;
with --factory-cache a federation run again trains none of the factories it finished before.

python scripts/heterogeneity_sweep.py --dataset digits --nodes 10 --chart docs/img/hetero-digits.png
python scripts/heterogeneity_sweep.py --dataset bloodmnist --nodes 8 --profile cpu --fl-rounds 50 --fl-lr 0.01 \\
    --patience 300 --ffnode silo --chart docs/img/hetero-blood.png
python scripts/heterogeneity_sweep.py --dataset bloodmnist --nodes 8 --profile cpu --patience 300 --no-fl \
    --partitions dirichlet:1.0,dirichlet:0.1 --whole-machine --factory-cache runs/hetero-bloodmnist/factories
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import testnet
from ffnode.artifacts.store import atomic_write
from harness.line_chart import PALETTE, Series, write_line_chart
from harness.report_chart import FL_NAMES

PARTITIONS = ("dirichlet:1.0", "dirichlet:0.3", "dirichlet:0.1", "dirichlet:0.03", "silo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--profile", default="default")
    p.add_argument("--partitions", default=",".join(PARTITIONS), help="comma-separated, in chart order")
    p.add_argument("--ffnode", default=None, help="partitions that get a full federation (default: all)")
    p.add_argument("--out", type=Path, default=None, help="reports go here (default: runs/hetero-DATASET)")
    p.add_argument("--chart", type=Path, default=None, help="the PNG (default: OUT/hetero.png)")
    p.add_argument("--timeout", type=float, default=3600.0, help="per federation, seconds")
    p.add_argument(
        "--patience", type=float, default=None,
        help="learning.patience_s at every site: how long a class nobody supplies (all its factories withheld) is "
        "waited for after the last factory arrived (default: the node's 600)",
    )  # fmt: skip
    p.add_argument("--fl-rounds", type=int, default=None, help="the FL baselines' rounds (default: their tuned 200)")
    p.add_argument(
        "--fl-lr", default="", metavar="LR,...",
        help="learning rates to run the FL baselines at besides their tuned ones; each method is charted at its best",
    )  # fmt: skip
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="baseline runs in parallel, one thread each")
    p.add_argument("--chart-only", action="store_true", help="draw from the reports in --out, run nothing")
    p.add_argument("--no-fl", action="store_true", help="run the federations only (FL baseline reports as they are)")
    p.add_argument(
        "--factory-cache", type=Path, default=None,
        help="one factory cache for every federation: a point run again trains none of the factories it finished",
    )  # fmt: skip
    p.add_argument("--whole-machine", action="store_true", help="each site's jobs one at a time with every core")
    args = p.parse_args(argv)
    args.partitions = args.partitions.split(",")
    try:
        args.fl_lr = [float(x) for x in args.fl_lr.split(",") if x]
    except ValueError:
        p.error(f"--fl-lr takes numbers separated by commas, not {args.fl_lr!r}")
    args.ffnode = set(args.partitions if args.ffnode is None else args.ffnode.split(","))
    if unknown := args.ffnode - set(args.partitions) - {""}:
        p.error(f"--ffnode names partitions not in --partitions: {', '.join(sorted(unknown))}")
    args.out = args.out or Path(f"runs/hetero-{args.dataset}")
    args.chart = args.chart or args.out / "hetero.png"
    return args


def report_path(args: argparse.Namespace, partition: str, kind: str, lr: float | None = None) -> Path:
    """Where one partition's `federation` or `baselines` report lives (`centralized` has no partition); the
    baselines at an --fl-lr rate have their own."""
    kind += f"-lr{lr:g}" if lr is not None else ""
    return args.out / (f"{partition.replace(':', '-')}-{kind}.json" if partition else f"{kind}.json")


def federation_cmd(args: argparse.Namespace, partition: str, out: Path) -> list[str]:
    """The testnet command of one partition's federation, server mode its only baseline (the rest run here)."""
    cmd = [sys.executable, str(Path(__file__).with_name("testnet.py"))]
    cmd += ["--dataset", args.dataset, "--nodes", str(args.nodes), "--partition", partition]
    cmd += ["--profile", args.profile, "--json", str(out), "--workdir", str(args.out / "work")]
    cmd += ["--timeout", str(args.timeout), "--baselines", "server"]
    if args.patience is not None:
        cmd += ["--set", f"all:learning.patience_s={args.patience}"]
    if args.factory_cache is not None:
        cmd += ["--factory-cache", str(args.factory_cache)]
    if args.whole_machine:
        cmd += ["--whole-machine"]
    return cmd


def run_baselines(job: tuple[argparse.Namespace, str, str, float | None, Path]) -> str:
    """`which` baselines (fl | centralised) on the testnet's own split of `partition`, one torch thread."""
    import torch

    args, partition, which, lr, out = job
    torch.set_num_threads(1)
    targs = testnet.parse_args(
        ["--dataset", args.dataset, "--nodes", str(args.nodes), "--partition", partition or "silo"]
        + ["--profile", args.profile, "--baselines", which]
        + (["--fl-rounds", str(args.fl_rounds)] if args.fl_rounds else [])
        + (["--fl-lr", str(lr)] if lr is not None else [])
    )
    classes = list(testnet.default_classes(args.dataset))
    parts, train, test = testnet.split_data(targs, classes)
    report = {
        "dataset": args.dataset,
        "nodes": args.nodes,
        "partition": partition,
        "profile": args.profile,
        "seed": targs.seed,
        "classes_per_site": [len(set(train.labels[p].tolist())) for p in parts],
        "baselines": testnet.baselines(targs, parts, train, test, len(classes)),
    }
    atomic_write(out, json.dumps(report, indent=1).encode())
    return f"{partition or 'all data'}: {which} baselines{f' at lr {lr:g}' if lr is not None else ''} -> {out}"


def label(partition: str) -> str:
    return "silo" if partition == "silo" else f"alpha {partition.split(':', 1)[1]}"


def load(args: argparse.Namespace, partition: str, kind: str, lr: float | None = None) -> dict:
    f = report_path(args, partition, kind, lr)
    return json.loads(f.read_text()) if f.exists() else {}


def best_baselines(args: argparse.Namespace, partition: str) -> dict[str, dict]:
    """Each FL method's run that ended best in `partition`, over its tuned rate and every --fl-lr rate."""
    best: dict[str, dict] = {}
    for lr in [None, *args.fl_lr]:
        for name, run in load(args, partition, "baselines", lr).get("baselines", {}).items():
            if name not in best or run["accuracy"] > best[name]["accuracy"]:
                best[name] = run
    return best


def draw(args: argparse.Namespace) -> None:
    central = load(args, "", "centralized").get("baselines", {}).get("centralized")
    reports = {}
    for p in args.partitions:
        federation, fl = load(args, p, "federation"), best_baselines(args, p)
        if federation or fl:
            reports[p] = federation | {"baselines": fl | ({"centralized": central} if central else {})}
    if not reports:
        raise SystemExit(f"error: no reports in {args.out}: run the sweep first")
    pos = {p: i for i, p in enumerate(args.partitions)}

    def points(get) -> list[tuple[float, float]]:
        out = []
        for p, r in reports.items():
            try:
                out.append((float(pos[p]), float(get(r))))
            except (KeyError, TypeError):
                pass  # this partition's report lacks the figure (baselines only): no point, not a guess
        return out

    series = [
        Series("ffnode PoE", points(lambda r: r["poe_accuracy"]["mean"]), PALETTE[0]),
        Series("ffnode server mode", points(lambda r: r["server_mode"]["accuracy"]), PALETTE[1]),
    ]
    series += [
        Series(name, points(lambda r, k=key: r["baselines"][k]["accuracy"]), PALETTE[2 + i])
        for i, (key, name) in enumerate(FL_NAMES.items())
    ]
    if central:
        series.append(Series("centralised (pooled)", [(0.0, central["accuracy"])], (90, 90, 90), flat=True))
    title = f"{args.dataset}: {args.nodes} sites, profile {args.profile}: accuracy as label skew grows"
    rounds = args.fl_rounds or "their tuned"
    subtitle = f"Dirichlet(alpha) label split, then one class per site (silo); FL baselines tuned, {rounds} rounds"
    if args.fl_lr:
        subtitle += f", best of tuned lr and {', '.join(f'{lr:g}' for lr in args.fl_lr)}"
    ran = [label(p) for p in args.partitions if "poe_accuracy" in reports.get(p, {})]
    if len(ran) < len(args.partitions):
        subtitle += f"; ffnode run at {', '.join(ran) or 'none'} only"
    write_line_chart(
        args.chart,
        title,
        subtitle,
        [s for s in series if s.points],
        x_label="partition (more skew to the right)",
        x_ticks=[(float(i), label(p)) for i, p in enumerate(args.partitions)],
    )
    print(f"chart written to {args.chart}", file=sys.stderr)
    for p, r in reports.items():  # which rate each method was charted at
        runs = [
            f"{k} {v['accuracy']:.3f} at lr {v['settings']['lr']:g}"
            for k, v in r["baselines"].items()
            if "settings" in v
        ]
        print(f"{label(p)}: {', '.join(runs)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.chart_only:
        jobs = [(args, "", "centralised", None, report_path(args, "", "centralized"))]
        for lr in [None, *args.fl_lr]:
            jobs += [(args, p, "fl", lr, report_path(args, p, "baselines", lr)) for p in args.partitions]
        todo = [j for j in jobs if not j[4].exists() and not args.no_fl]
        t0 = time.time()
        print(f"baselines: {len(todo)} of {len(jobs)} reports to make, {args.jobs} at a time ...", file=sys.stderr)
        with ProcessPoolExecutor(args.jobs) as pool:
            for line in pool.map(run_baselines, todo):
                print(f"[{time.time() - t0:5.0f} s] {line}", file=sys.stderr, flush=True)
        for partition in (p for p in args.partitions if p in args.ffnode):
            out = report_path(args, partition, "federation")
            if out.exists() and "server_mode" in json.loads(out.read_text()):
                print(f"{partition}: reusing {out}", file=sys.stderr)
                continue
            t0 = time.time()
            print(f"{partition}: federation ...", file=sys.stderr, flush=True)
            try:
                subprocess.run(federation_cmd(args, partition, out), check=True)  # a process of its own
            except subprocess.CalledProcessError as e:  # the other partitions, and the chart, still count
                print(f"{partition}: federation failed ({e}); see {args.out / 'work'}", file=sys.stderr, flush=True)
                continue
            print(f"{partition}: federation done in {time.time() - t0:.0f} s -> {out}", file=sys.stderr, flush=True)
    draw(args)


if __name__ == "__main__":
    main()
