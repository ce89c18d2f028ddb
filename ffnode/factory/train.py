"""Train one factory (an unconditional diffusion model of one class's images), resumable after a crash.

The loop is flat, nanoGPT style: draw a batch, noise it at a random level, regress the objective's target
(objective.py), step AdamW, update the EMA, and every `checkpoint_every` steps write a crash-safe checkpoint.
At the steps named in `snapshots` (and at the end) the EMA weights are also kept, so the privacy audit can
fall back to an earlier, less fitted factory (`load_snapshot`). All randomness comes from one torch.Generator
whose state is part of the checkpoint, so a resumed run continues on the exact same stream and ends with the
same weights as an uninterrupted one.

With a `DPPlan` (dp.py) the loop is DP-SGD instead: Poisson-sampled batches, per-sample gradients clipped and
noised by Opacus, in float32 (no bf16 autocast: the clipping bound is the privacy bound, so the norms it compares
are computed at full precision); the noise has a seeded stream of its own, checkpointed with the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ffnode.device import autocast, pick_device
from ffnode.factory.config import FactoryConfig
from ffnode.factory.dp import DPPlan, empty_step, make_private, noise_seed, poisson_batch
from ffnode.factory.model import build_unet
from ffnode.factory.objective import Objective
from ffnode.schedule import warmup_cosine

CHECKPOINT_NAME = "factory_checkpoint.safetensors"
log = logging.getLogger("ffnode.factory")


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 in [-1, 1], the range the diffusion model works in."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def noisy_batch(
    data: torch.Tensor,
    cfg: FactoryConfig,
    generator: torch.Generator,
    objective: Objective,
    idx: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training batch: the UNet's inputs, its timestep argument and its targets, all drawn from `generator`.

    Images are drawn with replacement, so a class of 50 images and one of 5,000 cost the same per step; DP-SGD
    names its Poisson-sampled images in `idx` instead.
    """
    device = data.device
    if idx is None:
        idx = torch.randint(len(data), (cfg.batch_size,), generator=generator)
    b = len(idx)
    x0 = data[idx.to(device)]  # (B, C, H, W)
    if cfg.hflip:
        flip = (torch.rand(b, generator=generator) < 0.5).to(device)
        x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    return objective.inputs(x0, noise, objective.draw(b, generator))


def _fingerprint(images: np.ndarray, cfg: FactoryConfig, seed: int, dp: DPPlan | None) -> str:
    """Identifies the run a checkpoint belongs to: a checkpoint of other data or settings must not resume."""
    h = hashlib.sha256(images.tobytes())
    run = [list(images.shape), cfg.to_dict(), seed] + ([dataclasses.asdict(dp)] if dp is not None else [])
    h.update(json.dumps(run, sort_keys=True).encode())
    return h.hexdigest()


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes: a flipped bit anywhere changes it."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _read_checkpoint(
    path: Path, fingerprint: str, keys: tuple[str, ...] = ("step", "seconds", "loss_ema")
) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """A checkpoint's tensors and metadata if it is whole and of this run (same data, config and seed), else
    None with the reason logged: a damaged checkpoint must never resume into a different factory."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        if meta.get("fingerprint") != fingerprint:
            why = "it belongs to another run (other images, config or seed)"
        elif meta.get("digest") != _digest(tensors):
            why = "its content does not match its checksum"
        else:
            for key in keys:
                float(meta[key])  # readable, or the except below discards it
            return tensors, meta
    except Exception as exc:  # safetensors raises its own errors for a torn or bit-flipped header
        why = f"it does not load ({exc})"
    log.warning("discarding factory checkpoint %s: %s", path, why)
    return None


def _save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact (temp file + rename)."""
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def train_factory(
    images: np.ndarray,
    cfg: FactoryConfig,
    *,
    seed: int,
    checkpoint_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    snapshots: Sequence[int] = (),
    dp: DPPlan | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Train a factory on one class's images (N, H, W, C) uint8, with DP-SGD under `dp` if given.

    Returns the EMA weights to publish (float32, CPU) and a summary: n_train, images_seen, steps, seconds,
    final_loss (an exponential moving average of the training loss), and with `dp` the manifest's `dp` (what the
    accountant says of all the steps). With `checkpoint_dir`, the run resumes from the checkpoint there if one of
    the same data, config, seed and plan exists, and the EMA weights at each step in `snapshots` and at the last
    step are kept there for `load_snapshot`.
    """
    n, h, w, c = images.shape
    if (h, w, c) != (cfg.image_size, cfg.image_size, cfg.channels):
        raise ValueError(
            f"images are {(h, w, c)} but the factory config expects {cfg.image_size}x{cfg.image_size}x{cfg.channels}"
        )
    if n == 0:
        raise ValueError("cannot train a factory on zero images")
    device = pick_device()
    data = images_to_tensor(images).to(device)  # (N, C, H, W)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # weight init from the seed, without disturbing the caller's global RNG
        model = build_unet(cfg).to(device)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    objective = Objective(cfg)
    generator = torch.Generator().manual_seed(seed)  # every random draw of the loop, checkpointed
    noise = None
    if dp is not None:  # the noise on the device it is added on, from a stream of its own (also checkpointed)
        noise = torch.Generator(device).manual_seed(noise_seed(seed))
        private, dp_optimizer = make_private(model, optimizer, dp, n, noise)

    step, seconds, loss_ema = 0, 0.0, float("nan")
    fingerprint = _fingerprint(images, cfg, seed, dp)
    ckpt = checkpoint_dir / CHECKPOINT_NAME if checkpoint_dir is not None else None
    run = _RunState(model, ema, optimizer, generator, noise)
    if ckpt is not None and ckpt.exists():
        saved = _read_checkpoint(ckpt, fingerprint)
        if saved is None:
            log.warning("training of %s starts over", checkpoint_dir)
            ckpt.unlink(missing_ok=True)  # training starts over: the same factory as an uninterrupted run
        else:
            step, seconds, loss_ema = run.restore(*saved)

    t0 = time.perf_counter()
    while step < cfg.train_steps:
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step, peak=cfg.lr, warmup=cfg.warmup_steps, total=cfg.train_steps, floor=0.1)
        if dp is None:
            x_in, t, target = noisy_batch(data, cfg, generator, objective)
            # forward/backward
            with autocast(device, cfg.bf16):
                pred = model(x_in, t).sample
            loss = F.mse_loss(pred.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            loss = _private_step(private, dp_optimizer, data, cfg, generator, objective, dp.sample_rate)
        # EMA with a warmup of the decay, so early steps are not averaged with the random init
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, value in model.state_dict().items():
                ema[name].lerp_(value, 1.0 - decay)
        if loss is not None:  # None: an empty DP batch, a step of noise alone
            loss_value = loss.item()
            loss_ema = loss_value if math.isnan(loss_ema) else 0.98 * loss_ema + 0.02 * loss_value
        step += 1
        # snapshot, then checkpoint: a run resumed past a step never writes that step's snapshot again
        if checkpoint_dir is not None and (step in snapshots or step == cfg.train_steps):
            ema_meta = {"step": str(step), "fingerprint": fingerprint, "digest": _digest(ema)}
            _save_checkpoint(_snapshot_path(checkpoint_dir, step), ema, ema_meta)
        if ckpt is not None and (step % cfg.checkpoint_every == 0 or step == cfg.train_steps):
            now = seconds + time.perf_counter() - t0
            run.save(ckpt, fingerprint, step, now, loss_ema)
        if progress is not None:
            progress(step, cfg.train_steps)
    seconds += time.perf_counter() - t0

    weights = {k: v.detach().float().cpu().contiguous() for k, v in ema.items()}
    summary = {
        "n_train": int(n),
        "images_seen": int(cfg.train_steps * cfg.batch_size),
        "steps": int(cfg.train_steps),
        "seconds": round(seconds, 3),
        "final_loss": float(loss_ema),
    }
    if dp is not None:
        summary["dp"] = dp.meta(cfg.train_steps)
    return weights, summary


def _private_step(
    private: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: torch.Tensor,
    cfg: FactoryConfig,
    generator: torch.Generator,
    objective: Objective,
    sample_rate: float,
) -> torch.Tensor | None:
    """One DP-SGD step (dp.py) on a Poisson-sampled batch; its loss, or None when the batch was empty."""
    idx = poisson_batch(len(data), sample_rate, generator)
    optimizer.zero_grad(set_to_none=True)
    if len(idx) == 0:
        empty_step(private)
        optimizer.step()
        return None
    x_in, t, target = noisy_batch(data, cfg, generator, objective, idx)
    loss = F.mse_loss(private(x_in, t).sample, target)  # the mean over images, as DPOptimizer is told
    loss.backward()
    optimizer.step()
    return loss


def _snapshot_path(checkpoint_dir: Path, step: int) -> Path:
    return checkpoint_dir / f"ema-{step}.safetensors"


def load_snapshot(
    checkpoint_dir: Path, images: np.ndarray, cfg: FactoryConfig, seed: int, step: int, dp: DPPlan | None = None
) -> dict[str, torch.Tensor] | None:
    """The EMA weights (float32) that `train_factory` kept at `step` of this run (same images, config, seed and DP
    plan), or None if there are none or they are damaged or of another run."""
    path = _snapshot_path(checkpoint_dir, step)
    if not path.exists():
        return None
    saved = _read_checkpoint(path, _fingerprint(images, cfg, seed, dp), keys=("step",))
    if saved is None or int(saved[1]["step"]) != step:
        return None
    return {k: v.float().contiguous() for k, v in saved[0].items()}


@dataclass
class _RunState:
    """Everything a resumed run needs to continue on the exact same stream: model, EMA, optimizer, RNGs."""

    model: torch.nn.Module
    ema: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    noise: torch.Generator | None = None  # DP-SGD's noise stream

    def save(self, path: Path, fingerprint: str, step: int, seconds: float, loss_ema: float) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in self.ema.items()}
        for i, state in self.optimizer.state_dict()["state"].items():
            tensors |= {f"optim.{i}.{k}": torch.as_tensor(v) for k, v in state.items()}
        tensors["rng"] = self.generator.get_state()
        if self.noise is not None:
            tensors["rng_noise"] = self.noise.get_state()
        meta = {"step": str(step), "seconds": repr(seconds), "loss_ema": repr(loss_ema), "fingerprint": fingerprint}
        meta["digest"] = _digest(tensors)
        _save_checkpoint(path, tensors, meta)

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> tuple[int, float, float]:
        """Restore in place from a verified checkpoint of this run; return (step, seconds so far, loss EMA)."""
        device = next(self.model.parameters()).device
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        for k in self.ema:
            self.ema[k].copy_(tensors[f"ema.{k}"])
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, i, name = key.split(".", 2)
                state.setdefault(int(i), {})[name] = value if name == "step" else value.to(device)
        self.optimizer.load_state_dict({"state": state, "param_groups": self.optimizer.state_dict()["param_groups"]})
        self.generator.set_state(tensors["rng"])
        if self.noise is not None:
            self.noise.set_state(tensors["rng_noise"])
        return int(meta["step"]), float(meta["seconds"]), float(meta["loss_ema"])
