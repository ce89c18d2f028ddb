#!/usr/bin/env python3
"""Both membership attacks of the privacy audit, and both copy-check distances, on real factories.

Trains factories as a site would (a seeded held-out slice kept out of training, the profile's recipe fitted
to the images) on single classes of BloodMNIST and RetinaMNIST, plus one deliberately over-trained factory
(few images, many passes over each), audits each with ffnode's own audit, and prints each attack's AUC and
TPR at 1 % FPR (the loss attack and PIA), the copy figures under pixel L2 and under the feature distance,
and the audit's verdict under the default policy. PIA is also run at other levels (`--sweep`), to show how
much its one signed level matters. Factories are kept in `--workdir`, so a rerun audits without retraining.

    nice -n 19 .venv/bin/python scripts/bench_mia.py --json runs/bench_mia.json

Each factory is (dataset, class, training images or 0 for the whole class, steps, batch); an over-trained one
takes a few images and many steps: every image is seen steps x batch / images times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from ffnode.data.sources import load_dataset
from ffnode.factory.train import train_factory
from ffnode.privacy.attacks import pia_scores
from ffnode.privacy.audit import AuditSettings, audit_factory, holdout_split
from ffnode.privacy.policy import AuditPolicy, verdict_text
from ffnode.profiles import profile_for

# (name, dataset, class, training images (0: all but the held-out slice), steps (0: --steps), batch (0: the
# profile's), UNet widths (() : the profile's))
FACTORIES = [
    ("blood-basophil", "bloodmnist", 0, 0, 0, 0, ()),
    ("retina-grade4", "retinamnist", 4, 0, 0, 0, ()),
    ("retina-grade4-overtrained", "retinamnist", 4, 20, 1500, 20, ()),  # 20 images x 1,500 passes each
]


def factory(spec: tuple, args: argparse.Namespace) -> dict:
    """Train (or resume) one factory and audit it; its row of figures."""
    name, dataset, label, n_train, steps, batch, widths = spec
    data = load_dataset(dataset, split="train")
    images = data.images[data.labels == label]
    train_idx, held_idx = holdout_split(len(images), seed=label, fraction=0.1, least=20, most=500)
    train, held = images[train_idx], images[held_idx]
    if n_train:
        train = train[:n_train]
    cfg = profile_for(args.profile, data.image_shape).factory
    steps = steps or args.steps or cfg.train_steps
    cfg = dataclasses.replace(
        cfg, train_steps=steps, batch_size=batch or cfg.batch_size, hflip=True, checkpoint_every=max(25, steps // 4),
        block_out_channels=widths or cfg.block_out_channels,
    )  # fmt: skip
    (args.workdir / name).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    weights, _ = train_factory(train, cfg, seed=1, checkpoint_dir=args.workdir / name)
    trained = time.perf_counter() - t0
    settings = AuditSettings(samples=args.samples)
    figures = audit_factory(weights, cfg, train, held, seed=2, settings=settings).figures
    members = train[np.sort(np.random.default_rng(2).choice(len(train), figures["mia_members"], replace=False))]
    attacked = np.concatenate([members, held])
    sweep = {}
    for level in args.sweep:
        scores = pia_scores(weights, cfg, attacked, level)
        sweep[str(level)] = _auc_tpr(scores[: len(members)], scores[len(members) :])
    return {
        "factory": name,
        "train_images": len(train),
        "held_out": len(held),
        "steps": cfg.train_steps,
        "batch": cfg.batch_size,
        "widths": list(cfg.block_out_channels),
        "passes_per_image": round(cfg.train_steps * cfg.batch_size / len(train), 1),
        "train_s": round(trained, 1),
        "figures": figures,
        "verdict": verdict_text(figures, AuditPolicy()),
        "pia_sweep": sweep,
    }


def _auc_tpr(pos: np.ndarray, neg: np.ndarray) -> list[float]:
    from ffnode.privacy.audit import _auc, _tpr_at

    return [round(_auc(pos, neg), 3), round(_tpr_at(pos, neg, 0.01), 3)]


def report(row: dict) -> None:
    f = row["figures"]
    print(
        f"{row['factory']}: {row['train_images']} trained / {row['held_out']} held out, "
        f"{row['passes_per_image']} passes per image, trained {row['train_s']} s, audit {f['seconds']:.1f} s\n"
        f"  loss attack AUC {f['mia_auc']:.3f}, TPR@1%FPR {f['mia_tpr_1pct']:.1%}\n"
        f"  PIA (t={f['pia_level']}/1000) AUC {f['pia_auc']:.3f}, TPR@1%FPR {f['pia_tpr_1pct']:.1%}\n"
        f"  pixel L2: memorised {f['memorised']:.1%}, DCR close {f['dcr_close']:.1%}, ratio {f['dcr_ratio']:.2f}\n"
        f"  features: memorised {f['feature_memorised']:.1%}, DCR close {f['feature_dcr_close']:.1%}, "
        f"ratio {f['feature_dcr_ratio']:.2f}\n"
        f"  PIA AUC / TPR@1%FPR by level: "
        + ", ".join(f"{k}: {v[0]:.3f} / {v[1]:.1%}" for k, v in row["pia_sweep"].items())
        + f"\n  verdict (default policy): {row['verdict']}",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="default", help="the recipe fitted to 28x28x3 (default: 'default')")
    p.add_argument("--workdir", type=Path, default=Path("runs/bench_mia"))
    p.add_argument("--only", nargs="*", help="factory names to run (all by default)")
    p.add_argument("--sweep", type=float, nargs="*", default=[0.02, 0.05, 0.1, 0.2, 0.4], help="PIA levels")
    p.add_argument("--steps", type=int, default=0, help="training steps of the real factories (0: the profile's)")
    p.add_argument("--samples", type=int, default=500, help="samples drawn for the copy figures (the audit's 500)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for spec in FACTORIES:
        if args.only and spec[0] not in args.only:
            continue
        rows.append(factory(spec, args))
        report(rows[-1])
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
