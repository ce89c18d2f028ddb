#!/usr/bin/env python3
"""How close each sampler gets to the exact solution of a factory's ODE, for how many model calls.

Every sampler in ffnode solves the same probability-flow ODE from the same start noise, so a long solve
(`--reference-steps` DPM-Solver++ steps) is the answer they approximate. For each factory a site holds,
this prints the RMSE (0..255 pixel units) of each (sampler, steps) pair against that reference, and the
sampling img/s. Fewer steps at the same error is faster synthesis at the same quality.

    python scripts/bench_sampler.py --home runs/tn-retina/node0 --json runs/bench_sampler.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ffnode.artifacts.store import Store
from ffnode.config import Config
from ffnode.factory.config import FactoryConfig
from ffnode.factory.sample import sample_factory
from ffnode.loaders import load_factory

VARIANTS = [("dpmsolver++", s) for s in (6, 8, 10, 15)] + [("unipc", s) for s in (6, 8, 10)]
EDM_VARIANTS = [("edm-dpmsolver++", s) for s in (6, 8, 10, 15)]  # the one solver of an "edm" factory


def draw(weights: dict, cfg: FactoryConfig, sampler: str, steps: int, n: int) -> tuple[np.ndarray, float]:
    """n samples as float64 from seed 0 (the same start noise for every variant), and the img/s it took."""
    run_cfg = dataclasses.replace(cfg, sampler=sampler, sample_steps=steps)
    t0 = time.perf_counter()
    x = sample_factory(weights, run_cfg, n, seed=0, batch_size=n)
    return x.astype(np.float64), n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, required=True, help="a node home whose store holds factories")
    p.add_argument("--n", type=int, default=128, help="samples per factory and variant (one batch)")
    p.add_argument("--reference-steps", type=int, default=100)
    p.add_argument("--max-factories", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    config = Config.load(args.home)
    store = Store(args.home / "store", federation=config.federation.name)
    factories = [m for m in store.live("factory") if store.blob_path(m.blob) is not None][: args.max_factories]
    if not factories:
        raise SystemExit(f"error: no factory held at {args.home}: run a federation first")
    rows: dict[str, dict] = {}
    for m in factories:
        cfg, weights = load_factory(store, m)

        variants = EDM_VARIANTS if cfg.prediction_type == "edm" else VARIANTS
        reference, _ = draw(weights, cfg, variants[0][0], args.reference_steps, args.n)
        for sampler, steps in variants:
            x, rate = draw(weights, cfg, sampler, steps, args.n)
            row = rows.setdefault(f"{sampler} {steps}", {"sampler": sampler, "steps": steps, "rmse": [], "img_s": []})
            row["rmse"].append(float(np.sqrt(((x - reference) ** 2).mean())))
            row["img_s"].append(rate)
        Console(stderr=True).print(f"factory {m.id[:12]} (class {config.federation.classes[m.classes[0]]}) done")
    table = Table(title=f"sampler error against a {args.reference_steps}-step solve, {len(factories)} factories")
    for column in ("sampler", "steps", "RMSE (0..255), mean", "img/s, median"):
        table.add_column(column)
    for row in rows.values():
        table.add_row(
            row["sampler"], str(row["steps"]), f"{np.mean(row['rmse']):.2f}", f"{statistics.median(row['img_s']):.1f}"
        )
    Console().print(table)
    report = {
        "home": str(args.home),
        "n": args.n,
        "reference_steps": args.reference_steps,
        "variants": list(rows.values()),
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
