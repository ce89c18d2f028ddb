#!/usr/bin/env python3
"""ffnode's factory against a naive diffusers loop, or against a variant of itself, side by side in one run.

Both methods train the same UNet2DModel (the profile's factory config, same initial weights, same batch
size, same AdamW recipe, same augmentation); they differ only in the choices ffnode makes:

    ffnode: bf16 autocast, v-prediction on a cosine schedule, EMA weights, the profile's sampler and steps
    naive:  fp32, epsilon prediction on diffusers' default (linear) DDPMScheduler, raw weights, DDIM 50 steps

Figures, in one process so machine noise hits both alike:
1. training img/s: median of `--windows` timing windows per method on class `--label`, windows interleaved
   (ffnode, naive, ffnode, ...) because this machine's second core is throttled part of the time;
2. downstream accuracy at equal training wall time: one factory per class in `--classes`, each trained for
   `--seconds` by either method (step counts calibrated from the measured rates), a class-balanced synthetic
   set sampled from each, ffnode's expert trained on synthetic images only and evaluated on the real test
   split restricted to those classes. An expert on as many REAL images per class gives the ceiling;
3. synthesis img/s: median over the per-class sampling calls of step 2;
4. variety: per class, the synthetic set's per-pixel std and nearest-neighbour RMS distance against the same
   figures of as many real images (harness.metrics.spread); lower than real means less varied than real.

Targets (printed as met / not met): training >= 3x and synthesis >= 10x the naive img/s, at equal or
better downstream accuracy. With `--variant FIELD=VALUE,...` the second method is ffnode's own loop with those
FactoryConfig fields changed (e.g. EDM's preconditioning: prediction_type=edm,sampler=edm-dpmsolver++): the
same figures, at the same wall time, say which recipe learns more per CPU-second.

    python scripts/bench_factory.py --seconds 60 --json runs/bench_factory.json   # bloodmnist, profile cpu
    python scripts/bench_factory.py --quick                                       # digits smoke test, ~2 min
    python scripts/bench_factory.py --variant prediction_type=edm,sampler=edm-dpmsolver++ --json runs/edm.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from rich.console import Console
from rich.table import Table

from ffnode.data.sources import NAMED_FILES, ImageSet, data_dir, load_dataset
from ffnode.device import bf16_pays, pick_device
from ffnode.expert.config import ExpertConfig
from ffnode.expert.resnet import expert_from_weights
from ffnode.expert.train import train_expert
from ffnode.factory.config import FactoryConfig
from ffnode.factory.model import build_unet
from ffnode.factory.objective import Objective
from ffnode.factory.sample import sample_factory
from ffnode.factory.train import images_to_tensor, noisy_batch, train_factory
from ffnode.plainconfig import from_plain, to_plain
from ffnode.poe import poe_predict
from ffnode.profiles import profile_for
from ffnode.schedule import warmup_cosine
from harness.metrics import accuracy, macro_auroc, spread

console = Console(stderr=True)  # progress; the result table goes to stdout

NAIVE_SAMPLE_STEPS = 50  # DDIM's usual setting in diffusers' pipelines
SAMPLE_BATCH = 256  # sample_factory's default batch, used for both methods
TARGET_TRAIN_SPEEDUP = 3.0
TARGET_SYNTH_SPEEDUP = 10.0

# --quick: digits, tiny budgets; every value here can still be overridden on the command line
QUICK = {"dataset": "digits", "classes": "0,1,2", "seconds": 5.0, "windows": 3, "window_steps": 30, "per_class": 100}


# -----------------------------------------------------------------------------
# the naive loop: what a first diffusers training script looks like


def naive_train(
    images: np.ndarray, cfg: FactoryConfig, *, seed: int, progress: Callable[[int, int], None] | None = None
) -> tuple[dict[str, torch.Tensor], dict]:
    """fp32 epsilon-prediction DDPM training on (N, H, W, C) uint8 images, no EMA; returns (weights, summary).

    Same model, initial weights, batch draws, flips and lr schedule as `train_factory` with the same seed.
    """
    device = pick_device()
    data = images_to_tensor(images).to(device)  # (N, C, H, W) in [-1, 1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_unet(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    objective = Objective(dataclasses.replace(cfg, beta_schedule="linear", prediction_type="epsilon", sampler="ddim"))
    generator = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    loss_value = float("nan")
    for step in range(cfg.train_steps):
        for group in optimizer.param_groups:
            # the same schedule as train_factory: the comparison isolates precision, objective, EMA and sampler
            group["lr"] = warmup_cosine(step, peak=cfg.lr, warmup=cfg.warmup_steps, total=cfg.train_steps, floor=0.1)
        xt, t, noise = noisy_batch(data, cfg, generator, objective)  # the same draws as ffnode's
        loss = F.mse_loss(model(xt, t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = loss.item()
        if progress is not None:
            progress(step + 1, cfg.train_steps)
    weights = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    summary = {
        "images_seen": cfg.train_steps * cfg.batch_size,
        "steps": cfg.train_steps,
        "seconds": round(time.perf_counter() - t0, 3),
        "final_loss": loss_value,
    }
    return weights, summary


@torch.no_grad()
def naive_sample(
    weights: dict[str, torch.Tensor], cfg: FactoryConfig, n: int, *, seed: int, steps: int = NAIVE_SAMPLE_STEPS
) -> np.ndarray:
    """n images (n, H, W, C) uint8 by fp32 DDIM with diffusers' defaults (eta 0, x0 clipped to [-1, 1])."""
    device = pick_device()
    model = build_unet(cfg)
    model.load_state_dict(weights)
    model = model.to(device).eval()
    scheduler = DDIMScheduler.from_config(DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps).config)
    generator = torch.Generator().manual_seed(seed)
    out = np.empty((n, cfg.image_size, cfg.image_size, cfg.channels), dtype=np.uint8)
    for start in range(0, n, SAMPLE_BATCH):
        b = min(SAMPLE_BATCH, n - start)
        x = torch.randn((b, cfg.channels, cfg.image_size, cfg.image_size), generator=generator).to(device)
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t).sample, t, x).prev_sample
        out[start : start + b] = (
            ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        )
    return out


def train_with(
    method: str, images: np.ndarray, cfg: FactoryConfig, seed: int, progress: Callable[[int, int], None] | None
) -> tuple[dict[str, torch.Tensor], dict]:
    """Dispatch to the naive loop or ffnode's `train_factory` (no checkpoints: they would cost ffnode time)."""
    if method == "naive":
        return naive_train(images, cfg, seed=seed, progress=progress)
    return train_factory(images, cfg, seed=seed, progress=progress)


def sample_with(
    method: str, weights: dict[str, torch.Tensor], cfg: FactoryConfig, n: int, seed: int, *, warm_up: bool = False
) -> np.ndarray:
    """Dispatch to the naive DDIM loop or ffnode's `sample_factory`, both in batches of SAMPLE_BATCH.

    `warm_up` runs 2 solver steps only: enough to build every kernel for these batch shapes.
    """
    if method == "naive":
        return naive_sample(weights, cfg, n, seed=seed, steps=2 if warm_up else NAIVE_SAMPLE_STEPS)
    return sample_factory(
        weights, dataclasses.replace(cfg, sample_steps=2) if warm_up else cfg, n, seed=seed, batch_size=SAMPLE_BATCH
    )


# -----------------------------------------------------------------------------
# measurements


def warm_up(images: np.ndarray, configs: dict[str, FactoryConfig], n_sample: int) -> None:
    """Run every code path once, untimed, before anything is timed.

    oneDNN builds its bf16 and fp32 kernels per shape on first use: in a trial run without this, the first
    bf16 window ran at 17 img/s and the next ones at 300-900.
    """
    for method, cfg in configs.items():
        weights, _ = train_with(method, images, dataclasses.replace(cfg, train_steps=3, warmup_steps=1), 0, None)
        sample_with(method, weights, cfg, n_sample, 0, warm_up=True)


def training_rates(
    images: np.ndarray, configs: dict[str, FactoryConfig], *, windows: int, window_steps: int, seed: int
) -> dict[str, list[float]]:
    """Training img/s per timing window, per method; windows alternate between the methods.

    Each window is a fresh run of `window_steps + 1` steps timed from the end of its first step, so model
    construction and first-call allocation are left out for both methods alike.
    """
    rates: dict[str, list[float]] = {m: [] for m in configs}
    for w in range(windows):
        for method, cfg in configs.items():
            short = dataclasses.replace(cfg, train_steps=window_steps + 1, warmup_steps=1)
            stamps: list[float] = []  # perf_counter at the end of every step
            train_with(method, images, short, seed + w, lambda _step, _total, s=stamps: s.append(time.perf_counter()))
            rates[method].append(window_steps * cfg.batch_size / (stamps[-1] - stamps[0]))
        console.print(
            f"  window {w + 1}/{windows}: " + ", ".join(f"{m} {rates[m][-1]:.0f} img/s" for m in configs),
            highlight=False,
        )
    return rates


def downstream(
    train: ImageSet,
    test: ImageSet,
    classes: list[int],
    configs: dict[str, FactoryConfig],
    expert_cfg: ExpertConfig,
    *,
    seconds: float,
    per_class: int,
    rates: dict[str, float],
    seed: int,
) -> dict[str, dict]:
    """Per method: factories for `classes` under an equal wall budget each, synthetic-only expert, test figures.

    Each factory of a method trains for `seconds` x its median measured img/s: the wall time is equal in
    expectation. A time-capped loop would be exact but cannot set the lr schedule's length up front, and
    re-estimating the rate from each class's run lets one throttled class starve the next (in a trial run a
    throttled class cut the next one's budget to a fifth). The methods alternate class by class, so a slow
    spell of the machine hits both.
    """
    mask = np.isin(test.labels, classes)
    test_x = test.images[mask]
    test_y = np.searchsorted(classes, test.labels[mask])  # labels 0..K-1 in `classes` order
    steps = {m: max(1, round(seconds * rates[m] / cfg.batch_size)) for m, cfg in configs.items()}
    runs: dict[str, list[dict]] = {m: [] for m in configs}
    synth: dict[str, list[np.ndarray]] = {m: [] for m in configs}
    for label in classes:
        for method, cfg in configs.items():
            run_cfg = dataclasses.replace(cfg, train_steps=steps[method])
            weights, summary = train_with(method, train.images[train.labels == label], run_cfg, seed + label, None)
            t0 = time.perf_counter()
            synth[method].append(sample_with(method, weights, cfg, per_class, seed + 100 + label))
            runs[method].append({**summary, "synth_img_per_s": per_class / (time.perf_counter() - t0)})
            console.print(
                f"  class {label}, {method}: {steps[method]} steps in {summary['seconds']:.1f} s, "
                f"sampled {per_class} at {runs[method][-1]['synth_img_per_s']:.1f} img/s",
                highlight=False,
            )
    # the ceiling's real set: as many real images per class (fewer where the class has fewer)
    rng = np.random.default_rng(seed)
    real_x, real_y = [], []
    for k, label in enumerate(classes):
        pool = np.flatnonzero(train.labels == label)
        pick = rng.choice(pool, size=min(per_class, len(pool)), replace=False)
        real_x.append(train.images[pick])
        real_y.append(np.full(len(pick), k, dtype=np.int64))
    y = np.repeat(np.arange(len(classes)), per_class)  # synth[m] is grouped by class in `classes` order
    out: dict[str, dict] = {}
    for method in configs:
        figures = _expert_figures(np.concatenate(synth[method]), y, test_x, test_y, len(classes), expert_cfg, seed)
        # variety per class, each synthetic set cut to its real set's size (spread's NN figure depends on size)
        figures["spread_per_class"] = [
            spread(s, n=len(r), seed=seed) for s, r in zip(synth[method], real_x, strict=True)
        ]
        rates_per_class = [r["synth_img_per_s"] for r in runs[method]]
        out[method] = {
            "train_seconds_per_class": [r["seconds"] for r in runs[method]],
            "train_steps_per_class": [r["steps"] for r in runs[method]],
            "images_seen_per_class": [r["images_seen"] for r in runs[method]],
            "final_loss_per_class": [r["final_loss"] for r in runs[method]],
            "synth_img_per_s_per_class": rates_per_class,
            "synth_img_per_s": statistics.median(rates_per_class),
            **figures,
        }
        console.print(f"  {method}: expert on synthetic only, accuracy {figures['accuracy']:.4f}", highlight=False)
    # the ceiling: the same expert on the real set
    out["real"] = _expert_figures(
        np.concatenate(real_x), np.concatenate(real_y), test_x, test_y, len(classes), expert_cfg, seed
    )
    out["real"]["spread_per_class"] = [spread(r) for r in real_x]
    out["real"]["n_test"] = int(len(test_y))
    return out


def _expert_figures(
    x: np.ndarray, y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int, cfg: ExpertConfig, seed: int
) -> dict[str, float]:
    """Train ffnode's expert on (x, y) and score it alone on the test images."""
    weights, summary = train_expert(x, y, k, cfg, seed=seed)
    model = expert_from_weights(weights, cfg, k, x.shape[1:])
    preds, probs = poe_predict([model], test_x)
    return {
        "accuracy": accuracy(preds, test_y),
        "auroc": macro_auroc(probs, test_y),
        "expert_n_train": int(len(x)),
        "expert_seconds": summary["seconds"],
    }


# -----------------------------------------------------------------------------
# the command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default=None, help="default: bloodmnist when its file exists, else digits")
    p.add_argument("--profile", default=None, help="default: 'default' for digits, else 'cpu'")
    p.add_argument("--label", type=int, default=None, help="class for the img/s windows (default: first of --classes)")
    p.add_argument("--classes", default=None, help="classes for downstream accuracy, comma-separated (default 0,1,2)")
    p.add_argument("--seconds", type=float, default=None, help="training wall time per factory (default 60)")
    p.add_argument("--windows", type=int, default=None, help="training timing windows per method (default 5)")
    p.add_argument("--window-steps", type=int, default=None, help="steps per timing window (default 20)")
    p.add_argument("--per-class", type=int, default=None, help="synthetic images per class (default: profile's)")
    p.add_argument("--sample-steps", type=int, default=0, help="ffnode's sampler steps (0: the profile's)")
    p.add_argument(
        "--variant", default=None, metavar="FIELD=VALUE,...",
        help="compare ffnode with itself under these FactoryConfig fields instead of the naive loop\n"
        "(tuples as 64/128/128), e.g. prediction_type=edm,sampler=edm-dpmsolver++",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke test on digits with tiny budgets (~2 min)")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    args = p.parse_args(argv)
    defaults = {"classes": "0,1,2", "seconds": 60.0, "windows": 5, "window_steps": 20, "per_class": None}
    defaults["dataset"] = "bloodmnist" if (data_dir() / NAMED_FILES["bloodmnist"][0]).is_file() else "digits"
    if args.quick:
        defaults |= QUICK
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.profile is None:
        args.profile = "default" if args.dataset == "digits" else "cpu"
    return args


def variant_config(cfg: FactoryConfig, text: str) -> FactoryConfig:
    """`cfg` with the fields of "FIELD=VALUE,..." changed, each VALUE read as its field's type."""
    d = to_plain(cfg)
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in d:
            raise SystemExit(f"error: --variant: {key!r} is not a FactoryConfig field ({', '.join(sorted(d))})")
        default = d[key]
        try:
            if isinstance(default, bool):
                d[key] = {"true": True, "false": False}[value.lower()]
            elif isinstance(default, list | tuple):
                d[key] = [int(v) for v in value.split("/")]
            else:
                d[key] = type(default)(value)
        except (KeyError, ValueError):
            raise SystemExit(f"error: --variant: {key}={value!r} is not a {type(default).__name__}") from None
    try:
        return from_plain(FactoryConfig, d)
    except ValueError as exc:
        raise SystemExit(f"error: --variant: {exc}") from None


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    classes = sorted({int(c) for c in args.classes.split(",")})
    label = classes[0] if args.label is None else args.label
    train = load_dataset(args.dataset, split="train")
    test = load_dataset(args.dataset, split="test")
    missing = [c for c in {*classes, label} if not (train.labels == c).any()]
    if missing:
        raise SystemExit(f"error: {args.dataset} has no training images of class {missing}: pick others")
    profile = profile_for(args.profile, train.image_shape)
    cfg = profile.factory
    if args.sample_steps:
        cfg = dataclasses.replace(cfg, sample_steps=args.sample_steps)
    configs = {"ffnode": cfg} | ({"variant": variant_config(cfg, args.variant)} if args.variant else {"naive": cfg})
    other = list(configs)[1]
    per_class = args.per_class or profile.synth_per_class
    n_params = sum(p.numel() for p in build_unet(cfg).parameters())
    console.print(
        f"bench_factory: {args.dataset}, profile {args.profile}, UNet {cfg.block_out_channels} x "
        f"{cfg.layers_per_block} ({n_params / 1e6:.2f} M params), {cfg.image_size}x{cfg.image_size}x{cfg.channels}, "
        f"batch {cfg.batch_size}, {torch.get_num_threads()} threads",
        highlight=False,
    )

    console.print(f"training img/s on class {label}: {args.windows} windows of {args.window_steps} steps")
    images = train.images[train.labels == label]
    warm_up(images, configs, per_class)
    windows = training_rates(images, configs, windows=args.windows, window_steps=args.window_steps, seed=args.seed)
    train_rate = {m: statistics.median(windows[m]) for m in configs}

    console.print(f"downstream: classes {classes}, {args.seconds:g} s per factory, {per_class} synthetic per class")
    down = downstream(
        train,
        test,
        classes,
        configs,
        profile.expert,
        seconds=args.seconds,
        per_class=per_class,
        rates=train_rate,
        seed=args.seed,
    )

    speedup_train = train_rate["ffnode"] / train_rate[other]
    speedup_synth = down["ffnode"]["synth_img_per_s"] / down[other]["synth_img_per_s"]
    targets = {}
    if other == "naive":
        targets = {
            "train_speedup_3x": speedup_train >= TARGET_TRAIN_SPEEDUP,
            "synth_speedup_10x": speedup_synth >= TARGET_SYNTH_SPEEDUP,
            "accuracy_not_worse": down["ffnode"]["accuracy"] >= down["naive"]["accuracy"],
        }
        targets["all_met"] = all(targets.values())

    def solver(c: FactoryConfig) -> dict[str, Any]:
        precision = "bf16 autocast" if c.bf16 and bf16_pays(pick_device().type) else "fp32"
        return {"sampler": c.sampler, "sample_steps": c.sample_steps, "precision": precision}

    samplers = {m: solver(c) for m, c in configs.items()}
    if other == "naive":
        samplers["naive"] = {"sampler": "ddim", "sample_steps": NAIVE_SAMPLE_STEPS, "precision": "fp32"}
    changed = {k: v for k, v in to_plain(configs[other]).items() if v != to_plain(cfg)[k]}
    report: dict[str, Any] = {
        "dataset": args.dataset,
        "profile": args.profile,
        "quick": args.quick,
        "methods": list(configs),
        "variant": changed if other == "variant" else None,
        "label": label,
        "classes": classes,
        "seconds_per_factory": args.seconds,
        "synthetic_per_class": per_class,
        "model": {
            "params": n_params,
            "block_out_channels": list(cfg.block_out_channels),
            "layers_per_block": cfg.layers_per_block,
            "image_shape": [cfg.image_size, cfg.image_size, cfg.channels],
            "batch_size": cfg.batch_size,
        },
        **{
            m: {
                "train_img_per_s": train_rate[m],
                "train_img_per_s_windows": windows[m],
                **samplers[m],
                **down[m],
            }
            for m in configs
        },
        "real_same_count": down["real"],
        "speedup": {"train": speedup_train, "synth": speedup_synth},
        "targets": targets,
        "hardware": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "bf16_native": bf16_pays(pick_device().type),
            "torch": torch.__version__,
        },
    }
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        console.print(f"report written to {args.json}")
    return report


def print_report(r: dict) -> None:
    """The figures as one table on stdout (short labels: it must fit 80 columns when piped), then the targets."""
    other = r["methods"][1]
    f, n = r["ffnode"], r[other]
    out = Console()
    title = (
        f"{'[QUICK SMOKE RUN] ' if r['quick'] else ''}{r['dataset']} classes {','.join(map(str, r['classes']))}, "
        f"profile {r['profile']}, {r['model']['params'] / 1e6:.2f} M params, {r['seconds_per_factory']:g} s/factory"
    )
    if r["variant"]:
        title += "\nvariant: " + ", ".join(f"{k}={v}" for k, v in r["variant"].items())
    real = r["real_same_count"]
    caption = f"ceiling, same expert on {real['expert_n_train']} real images: accuracy {real['accuracy']:.4f}"
    t = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for column in ("figure", "ffnode", other, "ratio"):
        t.add_column(column, justify="left" if column == "figure" else "right")

    def row(label: str, key: str, fmt: str, ratio: bool = True) -> None:
        a, b = float(np.mean(f[key])), float(np.mean(n[key]))
        t.add_row(label, format(a, fmt), format(b, fmt), f"{a / b:.2f}x" if ratio else f"{a - b:+.4f}")

    row(f"train img/s (median of {len(f['train_img_per_s_windows'])})", "train_img_per_s", ".0f")
    row(f"synthesis img/s (median of {len(r['classes'])})", "synth_img_per_s", ".1f")
    t.add_row("sampler, steps", f"{f['sampler']} {f['sample_steps']}", f"{n['sampler']} {n['sample_steps']}", "")
    row("train s per factory (mean)", "train_seconds_per_class", ".1f")
    row("images seen per factory (mean)", "images_seen_per_class", ".0f")
    row("accuracy, synthetic only", "accuracy", ".4f", ratio=False)
    row("macro AUROC, synthetic only", "auroc", ".4f", ratio=False)
    for key, name in (("pixel_std", "per-pixel std"), ("nn_rms", "nearest-neighbour RMS")):
        a, b, ref = (float(np.mean([c[key] for c in m["spread_per_class"]])) for m in (f, n, real))
        t.add_row(f"{name} (real {ref:.1f})", f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}x")
    out.print(t)
    tg = r["targets"]
    if not tg:
        return
    for text, ok in (
        (f"training >= {TARGET_TRAIN_SPEEDUP:g}x naive img/s: {r['speedup']['train']:.2f}x", tg["train_speedup_3x"]),
        (f"synthesis >= {TARGET_SYNTH_SPEEDUP:g}x naive img/s: {r['speedup']['synth']:.2f}x", tg["synth_speedup_10x"]),
        (f"accuracy >= naive at equal wall time: {f['accuracy']:.4f} vs {n['accuracy']:.4f}", tg["accuracy_not_worse"]),
    ):
        out.print(f"{'[green]met    [/]' if ok else '[red]NOT met[/]'}  {text}", highlight=False)


if __name__ == "__main__":
    main()
