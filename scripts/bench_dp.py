"""The privacy/accuracy trade-off of DP-SGD factories (issue 35 item 4): single-class sites, each factory trained at
epsilon 1, 4, 10 and without DP at the same budget (the profile's steps and batch), audited as a node audits it;
then server mode (one classifier on synthetic images only) and the PoE over the sites' experts, on the test split.

Runs in-process, one setting after another, through the node's own build functions (`make_factory`: holdout
split, DP plan, training, audit; `synthesize`, `train_expert`). Prints one line per setting and, with --json, writes
every figure (each factory's meta.dp and audit); --chart draws the curve (--from: from a finished --json).

    nice -n 19 python scripts/bench_dp.py --dataset digits --profile default --json runs/dp-digits.json
    nice -n 19 python scripts/bench_dp.py --dataset bloodmnist --profile cpu --epsilons 1,4,10,none
    nice -n 19 python scripts/bench_dp.py --dataset digits --classes 3 --steps 60 --no-poe   # minutes, not hours
    python scripts/bench_dp.py --from runs/dp-blood.json --chart docs/img/dp-blood.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ffnode.config import PrivacyConfig
from ffnode.data import load_dataset
from ffnode.data.sources import ImageSet
from ffnode.expert.resnet import expert_from_weights
from ffnode.expert.train import train_expert
from ffnode.jobs.build import make_factory
from ffnode.jobs.progress import Progress
from ffnode.poe import poe_predict
from ffnode.profiles import expert_for, profile_for
from ffnode.synth import synthesize
from harness.line_chart import PALETTE, Series, write_line_chart
from harness.metrics import accuracy
from harness.partition import first_classes


def run_setting(
    epsilon: float | None, train: ImageSet, test: ImageSet, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Every site's factory at `epsilon` (None: without DP), then server mode and PoE."""
    profile = profile_for(args.profile, train.image_shape)
    cfg = dataclasses.replace(profile.factory, train_steps=args.steps) if args.steps else profile.factory
    privacy = PrivacyConfig(dp_epsilon=epsilon or 0.0, snapshots=0, audit_samples=args.audit_samples)
    k = len(train.classes)
    t0 = time.perf_counter()
    factories, rows = [], []
    for label in range(k):
        built = make_factory(train, label, cfg, args.seed, privacy, work / f"eps-{epsilon}-{label}", Progress())
        audit = built.summary.get("audit", {})
        rows.append({"label": label, "withheld": built.withheld, "dp": built.summary.get("dp"), "audit": audit})
        if built.weights is not None:
            factories.append((label, built.weights, cfg))
    factory_s = time.perf_counter() - t0
    per_class = args.per_class or profile.synth_per_class
    synth_x, synth_y = synthesize(factories, per_class, seed=args.seed)
    server_w, _ = train_expert(synth_x, synth_y, k, expert_for(profile, len(synth_y)), seed=args.seed)
    server = expert_from_weights(server_w, profile.expert, k, train.image_shape)
    out: dict[str, Any] = {
        "epsilon": epsilon,
        "factories": rows,
        "published": len(factories),
        "factory_seconds": round(factory_s, 1),
        "server_accuracy": accuracy(np.asarray(poe_predict([server], test.images)[0]), test.labels),
    }
    if not args.no_poe:  # each site: its real class plus synthetic images of every other class
        experts = []
        for label in range(k):
            own = train.labels == label
            other = synth_y != label
            x = np.concatenate([train.images[own], synth_x[other]])
            y = np.concatenate([train.labels[own], synth_y[other]])
            w, _ = train_expert(x, y, k, expert_for(profile, len(y)), seed=args.seed + label)
            experts.append(expert_from_weights(w, profile.expert, k, train.image_shape))
        out["poe_accuracy"] = accuracy(np.asarray(poe_predict(experts, test.images)[0]), test.labels)
    aucs = [r["audit"]["mia_auc"] for r in rows if r["audit"]]
    out["mia_auc_mean"] = float(np.mean(aucs)) if aucs else None
    out["epsilon_spent_max"] = max((r["dp"]["epsilon"] for r in rows if r["dp"]), default=None)
    return out


def chart(path: Path, report: dict[str, Any]) -> None:
    """PoE, server mode and the mean attack AUC at each epsilon (a categorical axis, no DP at the right)."""
    rows = sorted(report["results"], key=lambda r: r["epsilon"] or float("inf"))  # no DP last
    names = [f"epsilon {r['epsilon']:g}" if r["epsilon"] else "no DP" for r in rows]
    series = [
        Series("ffnode PoE", [(i, r["poe_accuracy"]) for i, r in enumerate(rows) if "poe_accuracy" in r], PALETTE[0]),
        Series("server mode", [(i, r["server_accuracy"]) for i, r in enumerate(rows)], PALETTE[1]),
        Series("attack AUC (loss, mean)", [(i, r["mia_auc_mean"]) for i, r in enumerate(rows) if r["mia_auc_mean"]],
               PALETTE[3]),
    ]  # fmt: skip
    a = report["args"]
    steps, synth = a["steps"] or "the profile's", a["per_class"] or "the profile's"
    subtitle = (f"{report['dataset']}, {report['classes']} single-class sites, profile {report['profile']}, "
                f"factory steps {steps}, {synth} synthetic images a class")  # fmt: skip
    write_line_chart(path, "Accuracy against the DP budget of every factory", subtitle, series,
                     x_label="privacy budget of each factory (DP-SGD)", y_label="accuracy / attack AUC",
                     x_ticks=[(float(i), n) for i, n in enumerate(names)])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--classes", type=int, default=0, help="only the first K classes (default: all)")
    parser.add_argument("--epsilons", default="1,4,10,none", help="comma-separated; 'none' trains without DP")
    parser.add_argument("--steps", type=int, default=0, help="override the profile's factory steps (every setting)")
    parser.add_argument("--per-class", type=int, default=0, help="override the profile's synth_per_class")
    parser.add_argument("--audit-samples", type=int, default=500)
    parser.add_argument("--no-poe", action="store_true", help="server mode only (one expert per setting, not K)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--chart", type=Path, help="draw the curve here (PNG); with --from, from a finished --json")
    parser.add_argument("--from", dest="source", type=Path, help="run nothing: chart the report in this --json")
    args = parser.parse_args()
    if args.source:
        if not args.chart:
            parser.error("--from needs --chart")
        chart(args.chart, json.loads(args.source.read_text()))
        return
    torch.set_num_threads(args.threads)

    train, test = load_dataset(args.dataset, split="train"), load_dataset(args.dataset, split="test")
    if args.classes:
        train, test = first_classes(train, args.classes), first_classes(test, args.classes)
    settings = [None if e.strip() == "none" else float(e) for e in args.epsilons.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for epsilon in settings:
            r = run_setting(epsilon, train, test, args, Path(tmp))
            results.append(r)
            poe = f"  PoE {r['poe_accuracy']:.3f}" if "poe_accuracy" in r else ""
            auc = f"{r['mia_auc_mean']:.3f}" if r["mia_auc_mean"] is not None else "-"
            print(f"epsilon {epsilon or 'none':>5}: server {r['server_accuracy']:.3f}{poe}  published "
                  f"{r['published']}/{len(train.classes)}  attack AUC (mean) {auc}  factories {r['factory_seconds']} s",
                  flush=True)  # fmt: skip
            plain = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
            report = {"dataset": args.dataset, "profile": args.profile, "classes": len(train.classes),
                      "args": plain, "results": results}  # fmt: skip
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(report, indent=1))
            if args.chart:
                chart(args.chart, report)


if __name__ == "__main__":
    main()
