#!/usr/bin/env python3
"""What a site's stages cost when its profile meets data it was not sized for: expert steps and seconds under
the profile's budget against the uncapped epochs, and the memory a factory's training batch takes.

A single-class silo site of `--per-class` real images among `--classes` classes: the expert trains on those
plus the profile's synthetic images of every other class (random pixels stand in for both: cost does not
depend on content). Memory is the process's peak resident set, read after each stage, so the stages run in the
order that makes each figure a step up: start, factory training, expert.

    python scripts/bench_profile_fit.py --profile default --shape 28x28x1 --per-class 5400 --classes 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from ffnode.expert.train import train_expert
from ffnode.factory.train import train_factory
from ffnode.profiles import fit_warning, profile_for


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="default")
    p.add_argument("--shape", default="28x28x1", help="HxWxC")
    p.add_argument("--per-class", type=int, default=5400, help="the site's real images (one class)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--factory-steps", type=int, default=10, help="factory steps timed (memory peaks in the first)")
    p.add_argument("--uncapped", action="store_true", help="also train the expert for the profile's full epochs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = tuple(int(d) for d in args.shape.split("x"))
    profile = profile_for(args.profile, shape)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    report: dict = {"profile": args.profile, "shape": list(shape), "threads": args.threads, "start_mb": peak_mb()}
    report["warning"] = fit_warning(args.profile, shape)  # type: ignore[arg-type]

    images = rng.integers(0, 256, (args.per_class, *shape), dtype=np.uint8)
    cfg = dataclasses.replace(profile.factory, train_steps=args.factory_steps)
    _, summary = train_factory(images, cfg, seed=0)
    report["factory"] = {
        "batch": cfg.batch_size,
        "seconds_per_step": summary["seconds"] / args.factory_steps,
        "profile_steps": profile.factory.train_steps,
        "peak_mb": peak_mb(),
    }

    n_train = args.per_class + (args.classes - 1) * profile.synth_per_class
    x = rng.integers(0, 256, (n_train, *shape), dtype=np.uint8)
    y = rng.integers(0, args.classes, n_train)
    runs = [("budget", profile.expert)] + (
        [("uncapped", dataclasses.replace(profile.expert, max_images=0))] * args.uncapped
    )
    for name, ecfg in runs:
        t0 = time.perf_counter()
        _, s = train_expert(x, y, args.classes, ecfg, seed=0)
        report[f"expert_{name}"] = {
            "n_train": n_train,
            "max_images": ecfg.max_images,
            "epochs": s["epochs"],
            "steps": s["steps"],
            "seconds": round(time.perf_counter() - t0, 1),
            "peak_mb": peak_mb(),
        }
    for key, value in report.items():
        print(f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
