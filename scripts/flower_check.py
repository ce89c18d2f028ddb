#!/usr/bin/env python3
"""FedAvg and FedProx through Flower's own strategies and simulation engine, beside the in-process runs.

Same federation, classifier, tuned settings (harness.baselines.TUNED) and seeds; prints each round's largest
accuracy difference and both final figures. Needs the `flower` extra (`pip install -e ".[flower]"`; the
bootstrap installs it).

python scripts/flower_check.py --dataset digits --seeds 3 --json runs/flower-check.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from baseline_sweep import load_federation
from harness.baselines import TUNED, make_strategy, run_federated
from harness.baselines.flower import FLOWER_STRATEGIES, run_flower


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--partition", default="silo", help="silo | dirichlet:ALPHA")
    p.add_argument("--profile", default=None, help="whose expert config: default by image size")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=None, help="override the tuned rounds")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    d = load_federation(args)
    rows = []
    for name in FLOWER_STRATEGIES:
        param, settings = TUNED[name]
        settings = replace(settings, rounds=args.rounds or settings.rounds)
        for seed in range(args.seeds):
            ours = run_federated(
                make_strategy(name, param), d["parts"], d["test"], d["classes"], d["cfg"], settings, seed=seed
            )
            flower = run_flower(
                name, d["parts"], d["test"], d["classes"], d["cfg"], settings, seed=seed, mu=param or 0.0
            )
            gap = max(abs(a["accuracy"] - b["accuracy"]) for a, b in zip(ours["curve"], flower["curve"], strict=True))
            rows.append(
                {
                    "algorithm": name,
                    "seed": seed,
                    "settings": settings.label(),
                    "ours": ours["accuracy"],
                    "flower": flower["accuracy"],
                    "max_round_gap": gap,
                    "ours_s": ours["seconds"],
                    "flower_s": flower["seconds"],
                }
            )
            r = rows[-1]
            print(
                f"{name:8} seed {seed}: in-process {r['ours']:.4f} ({r['ours_s']:.0f} s), Flower {r['flower']:.4f} "
                f"({r['flower_s']:.0f} s), largest per-round gap {gap:.2e}",
                flush=True,
            )
    for name in FLOWER_STRATEGIES:
        mine = [r for r in rows if r["algorithm"] == name]
        ours, flower = (np.array([r[k] for r in mine]) for k in ("ours", "flower"))
        print(
            f"{name:8} {mine[0]['settings']}: in-process {ours.mean():.3f} ± {ours.std():.3f}, "
            f"Flower {flower.mean():.3f} ± {flower.std():.3f} over {len(mine)} seeds"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"dataset": args.dataset, "partition": args.partition, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
