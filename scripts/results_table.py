#!/usr/bin/env python3
"""Print testnet reports (scripts/testnet.py --json) side by side as the Markdown table of docs/results.md.

Copying figures by hand invites slips; this reads them from the reports, one column per report. A figure a
report does not hold (an older report, a run with --no-baselines) prints as "not in this report".

    python scripts/results_table.py runs/digits.json runs/blood.json runs/retina.json runs/cifar10.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.report_chart import FL_NAMES


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def per_site(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def fl_row(key: str) -> Callable[[dict], str]:
    def cell(r: dict) -> str:
        b = r["baselines"][key]
        return (
            f"{b['accuracy']:.3f} / {b['auroc']:.3f}, best round {b['best_accuracy']:.3f} "
            f"({b['rounds']} x {b['local_epochs']}, {mb(b['bytes_sent_per_site'])} sent per site)"
        )

    return cell


def hardware(h: dict) -> str:
    gpu = h["gpu"] or "no GPU"
    return f"{h['machine']}, {h['cpus']} CPUs, {gpu}, Python {h['python']}, torch {h['torch']}"


ROWS: list[tuple[str, Callable[[dict], Any]]] = [
    ("profile", lambda r: f"`{r['profile']}`"),
    (
        "training images (all sites) / synthetic per missing class",
        lambda r: f"{r['train_images']:,} / {r['synth_per_class']}",
    ),
    ("**PoE accuracy**, mean (min)", lambda r: f"**{r['poe_accuracy']['mean']:.3f}** ({r['poe_accuracy']['min']:.3f})"),
    ("PoE accuracy per site", lambda r: per_site(r["poe_accuracy"]["per_node"])),
    ("PoE macro AUROC, mean (min)", lambda r: f"{r['poe_auroc']['mean']:.3f} ({r['poe_auroc']['min']:.3f})"),
    ("PoE macro AUROC per site", lambda r: per_site(r["poe_auroc"]["per_node"])),
    ("PoE rule (ffnode/poe.py)", lambda r: f"`{r['poe_rule']}`"),
    (
        "the paper's product rule on the same experts: accuracy / AUROC, mean",
        lambda r: f"{r['poe_product']['accuracy']['mean']:.3f} / {r['poe_product']['auroc']['mean']:.3f}",
    ),
    (
        "server mode (synthetic only) accuracy / AUROC",
        lambda r: f"{r['server_mode']['accuracy']:.3f} / {r['server_mode']['auroc']:.3f}",
    ),
    (
        "centralised, real data, accuracy / AUROC",
        lambda r: f"{r['baselines']['centralized']['accuracy']:.3f} / {r['baselines']['centralized']['auroc']:.3f}",
    ),
    ("local only, mean accuracy", lambda r: f"{r['baselines']['local_only']['accuracy_mean']:.3f}"),
    *(
        (f"{label} final accuracy / AUROC, best round (rounds x local epochs, bytes)", fl_row(key))
        for key, label in FL_NAMES.items()
    ),
    (
        "chance (1 / classes)",
        lambda r: f"{1 / len(r['poe_accuracy']['per_node']):.3f}" if r["partition"] == "silo" else "n/a",
    ),
    ("federation wall time, start to every site ready", lambda r: f"{r['wall_s']:.0f} s ({r['wall_s'] / 60:.1f} min)"),
    (
        "factory: training s / images seen, per factory",
        lambda r: (
            f"{r['compute']['factory_train_seconds_mean']:.0f} s / {r['compute']['factory_images_seen_mean']:,.0f}"
        ),
    ),
    ("synthesis img/s per site", lambda r: f"{r['compute']['synthesis_img_per_s_per_node']:.1f}"),
    (
        "expert: training s / images, per expert",
        lambda r: (
            f"{r['compute']['expert_train_seconds_mean']:.0f} s / {r['compute']['expert_train_images_mean']:,.0f}"
        ),
    ),
    (
        "bytes sent per site, mean (min-max)",
        lambda r: f"{mb(sum(b := r['bytes_sent_per_node']) / len(b))} ({mb(min(b))}-{mb(max(b))})",
    ),
    ("hardware", lambda r: hardware(r["hardware"])),
]


def column(r: dict) -> str:
    """A report's column heading; the seed is named when the report has one (runs of one dataset differ by it)."""
    seed = f", seed {r['seed']}" if "seed" in r else ""
    return f"{r['dataset']}, {r['nodes']} sites{seed}"


def table(reports: list[dict]) -> str:
    head = "| figure | " + " | ".join(column(r) for r in reports) + " |"
    lines = [head, "|---" * (len(reports) + 1) + "|"]
    for name, cell in ROWS:
        cells = []
        for r in reports:
            try:
                cells.append(str(cell(r)))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("not in this report")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", type=Path, nargs="+", help="JSON reports written by scripts/testnet.py --json")
    args = p.parse_args(argv)
    print(table([json.loads(path.read_text()) for path in args.reports]))


if __name__ == "__main__":
    main()
