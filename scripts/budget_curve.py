#!/usr/bin/env python3
"""What a factory budget buys: PoE, server mode and the privacy audit at multiples of the profile's factory steps.

Each point is a full testnet federation (real daemons) whose factories train `--multiples` x the profile's steps,
one job at a time with every core (`--whole-machine`: what a machine per site would get), with server mode and,
at the first point, the centralised bound. The points share one `--factory-cache`, so a point run before (or
interrupted after its factories) trains nothing again, and reports already in `--out` are reused. `--classes K`
keeps the first K classes, for a point the whole federation does not fit (its figures then say so). The table
gives, per point, the images each factory saw, what a site spent, the expert's own budget, the accuracies and the
audit's verdicts, and names the smallest budget that reaches each reference.

    python scripts/budget_curve.py --dataset bloodmnist --profile cpu --multiples 1,4,16 \\
        --chart docs/img/budget-blood.png
    python scripts/budget_curve.py --dataset bloodmnist --profile cpu --multiples 16 --classes 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import testnet
from ffnode.data.sources import default_classes, load_dataset, save_npz
from ffnode.profiles import profile_for
from harness.line_chart import PALETTE, Series, write_line_chart
from harness.partition import first_classes

# what FederatedFactory reports for single-class sites (5 seeds; its repository's analysis_results)
REFERENCES = {"bloodmnist": {"FederatedFactory PoE": 0.9425, "FederatedFactory server mode": 0.9117}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="bloodmnist")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--multiples", default="1,4,16", help="factory budgets, as multiples of the profile's steps")
    p.add_argument("--classes", type=int, default=0, help="only the first K classes, one site each (0: all)")
    p.add_argument("--max-per-class", type=int, default=0, help="at most N training images per class (0: all)")
    p.add_argument("--out", type=Path, default=None, help="reports (default: runs/budget-DATASET)")
    p.add_argument("--factory-cache", type=Path, default=None, help="default: OUT/factories")
    p.add_argument("--chart", type=Path, default=None, help="the PNG (default: OUT/budget.png)")
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds a 1x federation may take (Mx: M times)")
    p.add_argument("--base-port", type=int, default=47100)
    args = p.parse_args(argv)
    args.out = args.out or Path("runs") / f"budget-{Path(args.dataset).stem}"
    args.factory_cache = args.factory_cache or args.out / "factories"
    args.chart = args.chart or args.out / "budget.png"
    return args


def subset(args: argparse.Namespace) -> tuple[str, int]:
    """The dataset each federation reads (a file of the first K classes with --classes) and its class count."""
    classes = list(default_classes(args.dataset))
    if not args.classes or args.classes >= len(classes):
        return args.dataset, len(classes)
    path = args.out / f"{Path(args.dataset).stem}-{args.classes}-classes.npz"
    if not path.exists():
        kept = {s: first_classes(load_dataset(args.dataset, split=s), args.classes) for s in ("train", "test")}
        args.out.mkdir(parents=True, exist_ok=True)
        save_npz(path, {s: (d.images, d.labels) for s, d in kept.items()}, classes=classes[: args.classes])
    return str(path), args.classes


def point(args: argparse.Namespace, dataset: str, sites: int, multiple: float, steps: int, first: bool) -> dict:
    """One federation at `multiple` x the profile's factory steps (its report, reused if already in --out)."""
    cut = f"-{sites}-classes" if args.classes else ""
    cut += f"-{args.max_per_class}-a-class" if args.max_per_class else ""
    path = args.out / f"{args.profile}-x{multiple:g}{cut}.json"  # a point run before is reused
    if path.exists():
        return json.loads(path.read_text())
    argv = [
        "--nodes", str(sites), "--dataset", dataset, "--partition", "silo", "--profile", args.profile,
        "--force-profile", "--whole-machine", "--factory-steps", str(max(1, round(steps * multiple))),
        "--factory-cache", str(args.factory_cache), "--baselines", "server,centralised" if first else "server",
        "--timeout", str(args.timeout * max(1.0, multiple)), "--workdir", str(args.out / "work"), "--json", str(path),
        "--base-port", str(args.base_port),
    ]  # fmt: skip
    if args.max_per_class:
        argv += ["--max-per-class", str(args.max_per_class)]
    testnet.main(argv)
    return json.loads(path.read_text())


def row(multiple: float, r: dict[str, Any]) -> dict[str, Any]:
    """The figures of one point that the table and chart show."""
    c, p = r["compute"], r["privacy"]
    n = sum(1 for s in c["per_site_core_s"] if s) or 1
    cached = "factories" not in c["core_s"]  # every factory came from the cache: what training cost is not here
    return {
        "multiple": multiple,
        "sites": r["nodes"],
        "factory_images": r["budget"]["factory_images"],
        "factories_cached": cached,  # then the spend is the profile's stated cost, not a measurement
        "factory_core_s_per_site": r["budget"]["factory_core_s"]
        if cached
        else round((c["core_s"]["factories"] + c["core_s"].get("audit", 0.0)) / n, 1),
        "expert_images": c["expert_train_images_mean"],
        "expert_core_s_per_site": round(c["core_s"].get("expert", 0.0) / n, 1),
        "poe": r["poe_accuracy"]["mean"],
        "server": r.get("server_mode", {}).get("accuracy"),
        "centralised": r.get("baselines", {}).get("centralized", {}).get("accuracy"),
        "mia_auc_mean": p["mia_auc_mean"],
        "verdicts": p["verdicts"],
        "withheld": sum(map(len, p["withheld"].values())),
    }


def reached(rows: list[dict], references: dict[str, float]) -> dict[str, str]:
    """For each reference, the smallest budget whose PoE (server mode for a server reference) reaches it."""
    out = {}
    for name, level in references.items():
        key = "server" if "server" in name else "poe"
        hits = [r for r in rows if r[key] is not None and r[key] >= level]
        best = max(rows, key=lambda r: r[key] or 0.0)
        out[name] = (
            f"reached at {min(hits, key=lambda r: r['multiple'])['multiple']:g}x"
            if hits
            else f"not reached: best {best[key]:.4f} at {best['multiple']:g}x, {level - best[key]:.4f} short"
        )
    return out


def chart(path: Path, dataset: str, rows: list[dict], references: dict[str, float]) -> None:
    flat = [Series(f"{k}", [(0.0, v)], PALETTE[2 + i], flat=True) for i, (k, v) in enumerate(references.items())]
    central = [r["centralised"] for r in rows if r["centralised"] is not None]
    if central:
        flat.append(Series("centralised (real data)", [(0.0, central[0])], PALETTE[7], flat=True))
    series = [
        Series("ffnode PoE", [(r["factory_images"], r["poe"]) for r in rows], PALETTE[0]),
        Series("ffnode server mode", [(r["factory_images"], r["server"]) for r in rows if r["server"]], PALETTE[1]),
        *flat,
    ]
    sites = sorted({r["sites"] for r in rows})
    subtitle = f"{dataset}, {'/'.join(map(str, sites))} single-class sites, each job with the whole machine"
    ticks = [(r["factory_images"], f"{r['factory_images']:,} ({r['multiple']:g}x)") for r in rows]
    write_line_chart(path, "Accuracy against each factory's budget", subtitle, series,
                     x_label="images seen per factory (log axis)", x_log=True, x_ticks=ticks)  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    dataset, sites = subset(args)
    shape = load_dataset(dataset, split="test").image_shape
    steps = profile_for(args.profile, shape).factory.train_steps
    multiples = [float(m) for m in args.multiples.split(",")]
    rows = [row(m, point(args, dataset, sites, m, steps, i == 0)) for i, m in enumerate(multiples)]
    references = REFERENCES.get(Path(args.dataset).stem, {})
    for r in rows:
        print(json.dumps(r), flush=True)
    for name, said in reached(rows, references).items():
        print(f"{name}: {said}", flush=True)
    chart(args.chart, args.dataset, rows, references)
    print(f"chart written to {args.chart}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
