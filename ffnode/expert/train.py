"""Train an expert on a site's real images plus its synthetic set; bitwise repeatable given the seed.

Repeatability is a feature the daemon relies on: to prove that a site's data was unlearned it retrains
the expert without it and anyone can compare weight bytes. So every random draw (init, shuffling,
augmentation) comes from the seed, and nothing depends on wall-clock, thread timing or global RNG state.
On CPU this holds for one machine and one thread count; GPU kernels are not guaranteed repeatable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ffnode.device import autocast, pick_device
from ffnode.expert.config import ExpertConfig
from ffnode.expert.resnet import build_expert
from ffnode.schedule import warmup_cosine


def augment(x: torch.Tensor, cfg: ExpertConfig, generator: torch.Generator) -> torch.Tensor:
    """Random shift by up to cfg.shift pixels (reflect padding) and optional flip; x is (B, H, W, C)."""
    b, h, w, _ = x.shape
    if cfg.shift > 0:
        s = cfg.shift
        padded = F.pad(x.permute(0, 3, 1, 2), (s, s, s, s), mode="reflect")  # (B, C, H+2s, W+2s)
        dy = torch.randint(2 * s + 1, (b,), generator=generator)
        dx = torch.randint(2 * s + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]  # (B, 1, 1, W)
        batch = torch.arange(b)[:, None, None, None]
        chan = torch.arange(padded.shape[1])[None, :, None, None]
        x = padded[batch, chan, rows, cols].permute(0, 2, 3, 1)  # (B, H, W, C)
    if cfg.hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(2), x)
    return x


def train_expert(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    cfg: ExpertConfig,
    *,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Train on images (N, H, W, C) uint8 with labels (N,) in 0..num_classes-1.

    Returns the weights (state_dict, float32 and int64 tensors on CPU) and a summary: n_train, epochs (fewer than
    cfg.epochs where cfg.max_images caps them), steps, seconds, final_loss (mean loss of the last epoch),
    train_accuracy (of the last epoch, augmented).
    """
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need equally many images and labels, got {len(images)} and {len(labels)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    device = pick_device()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_expert(cfg, num_classes, images.shape[1:]).to(device)
    generator = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(images))  # (N, H, W, C) uint8, converted per batch
    y_all = torch.from_numpy(labels.astype(np.int64))
    n = len(images)
    epochs = cfg.epochs if cfg.max_images <= 0 else max(1, min(cfg.epochs, cfg.max_images // n))
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = epochs * steps_per_epoch
    warmup = steps_per_epoch
    # decay only weights of convs and linear layers, not BatchNorm scales or biases (standard ResNet practice)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
    )

    model.train()
    step, t0 = 0, time.perf_counter()
    loss_sum, correct = 0.0, 0
    for _epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        loss_sum, correct = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            x = augment(x_all[idx].float(), cfg, generator).to(device)  # (B, H, W, C) in 0..255
            y = y_all[idx].to(device)
            lr = warmup_cosine(step, peak=cfg.lr, warmup=warmup, total=total_steps)  # warmup: the first epoch
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device, cfg.bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            step += 1
            if progress is not None:
                progress(step, total_steps)

    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    summary = {
        "n_train": int(n),
        "epochs": int(epochs),
        "steps": int(step),
        "seconds": round(time.perf_counter() - t0, 3),
        "final_loss": loss_sum / n,
        "train_accuracy": correct / n,
    }
    return weights, summary


@torch.no_grad()
def expert_log_probs(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """(B, H, W, C) images -> (B, C) log-softmax, in eval mode without gradients, on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    x_all = torch.as_tensor(images)
    out = [
        F.log_softmax(model(x_all[i : i + batch_size].to(device)).float(), dim=1).cpu()
        for i in range(0, len(x_all), batch_size)
    ]
    return torch.cat(out)
