#!/usr/bin/env python3
"""Why a federation's PoE gets what it gets: its confusion matrix and each expert's pull to its own classes.

An expert trains on its site's REAL images of the site's classes and on SYNTHETIC images of every other
class. If the factories' images are easy to tell from real ones, the expert learns "real => my class", and
on a real test image it votes for its own classes far more often than they occur. This script measures
that on the test split: for each expert, the share of test images it assigns to its own classes against
their true share (its "pull"; 1 would be unbiased). In a single-class silo the product cancels the pulls
when they are alike, since every class gets exactly one expert's boost: BloodMNIST's experts pull 1.2-7x
and the PoE still reaches 0.86. What the product cannot undo is a class whose synthetic images the other
experts learned do not look like its real ones: the PoE's confusion matrix shows it as a column of zeros.

    python scripts/diagnose.py --home runs/tn-retina/node0 --dataset retinamnist [--json runs/retina-diag.json]

It reads a node's store (the node may be running or stopped) and the dataset's test split; nothing is
written except the optional JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ffnode.artifacts.store import Store
from ffnode.config import Config
from ffnode.data.sources import load_dataset
from ffnode.expert.train import expert_log_probs
from ffnode.poe import poe_combine
from ffnode.query import ExpertPool
from ffnode.voters import priors_for
from harness.metrics import accuracy


def diagnose(home: Path, dataset: str) -> dict:
    config = Config.load(home)
    classes = list(config.federation.classes)
    store = Store(home / "store", federation=config.federation.name)
    test = load_dataset(dataset, split="test", classes=classes)
    experts = ExpertPool(store, len(classes), test.image_shape).experts()
    if not experts:
        raise SystemExit(f"error: no live experts at {home}: wait until the federation is ready")
    real_classes: dict[str, set[int]] = {}  # owner -> the classes it holds real images of (its factories)
    for f in store.live("factory"):
        real_classes.setdefault(f.owner, set()).update(f.classes)
    true_share = np.bincount(test.labels, minlength=len(classes)) / len(test.labels)
    log_probs = torch.stack([expert_log_probs(model, test.images) for _, model in experts])  # (K, B, C)
    priors = priors_for(config.learning.poe_rule, [m for m, _ in experts], len(classes))
    poe = poe_combine(log_probs, priors).argmax(1).numpy()
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(confusion, (test.labels, poe), 1)
    rows = []
    for (m, _), lp in zip(experts, log_probs, strict=True):
        pred = lp.argmax(1).numpy()
        own = sorted(real_classes.get(m.owner, set()))
        share = float(np.isin(pred, own).mean())
        expected = float(true_share[own].sum())
        rows.append(
            {
                "expert": m.id,
                "owner": m.owner,
                "real_classes": [classes[c] for c in own],
                "accuracy": accuracy(pred, test.labels),
                "own_share": share,
                "true_share": expected,
                "pull": share / expected if expected else None,
            }
        )
    return {
        "home": str(home),
        "dataset": dataset,
        "classes": classes,
        "test_images": len(test.labels),
        "poe_rule": "product" if priors is None else "prior",
        "poe_accuracy": accuracy(poe, test.labels),
        "recall": [float(r[i] / r.sum()) if r.sum() else None for i, r in enumerate(confusion)],
        "confusion": confusion.tolist(),  # rows: true class, columns: PoE prediction
        "experts": rows,
    }


def show(report: dict, console: Console) -> None:
    classes = report["classes"]
    t = Table(title=f"PoE confusion on {report['test_images']} test images (accuracy {report['poe_accuracy']:.3f})")
    t.add_column("true \\ PoE")
    for c in classes:
        t.add_column(c[:10], justify="right")
    t.add_column("recall", justify="right")
    for name, row, recall in zip(classes, report["confusion"], report["recall"], strict=True):
        t.add_row(name, *map(str, row), "-" if recall is None else f"{recall:.3f}")
    console.print(t)
    t = Table(title="each expert alone: share of test images it gives to its own (real) classes")
    for col in ("owner", "real classes", "accuracy", "own share", "true share", "pull"):
        t.add_column(col, justify="left" if col in ("owner", "real classes") else "right")
    for r in report["experts"]:
        pull = "-" if r["pull"] is None else f"{r['pull']:.2f}x"
        t.add_row(
            r["owner"][-8:],
            ", ".join(r["real_classes"]),
            f"{r['accuracy']:.3f}",
            f"{r['own_share']:.3f}",
            f"{r['true_share']:.3f}",
            pull,
        )
    console.print(t)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, required=True, help="a node's home (its store holds every expert)")
    p.add_argument("--dataset", required=True, help="the federation's dataset: its test split is scored")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    report = diagnose(args.home, args.dataset)
    show(report, Console())
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
