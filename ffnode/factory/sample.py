"""Sample a factory: run the deterministic reverse-time solver from seeded Gaussian noise."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ffnode.device import autocast, pick_device
from ffnode.factory.config import FactoryConfig
from ffnode.factory.model import build_sample_scheduler, build_unet


def unet_from_weights(weights: dict[str, torch.Tensor], cfg: FactoryConfig, device: torch.device) -> torch.nn.Module:
    """Rebuild the UNet from its config and published weights, in eval mode on `device`."""
    model = build_unet(cfg)
    model.load_state_dict(weights)  # strict: a weights/config mismatch is an error, not a silent partial load
    return model.to(device).eval()


@torch.no_grad()
def sample_factory(
    weights: dict[str, torch.Tensor],
    cfg: FactoryConfig,
    n: int,
    *,
    seed: int,
    batch_size: int = 256,
    on_step: Callable[[], None] | None = None,
) -> np.ndarray:
    """Draw n images (n, H, W, C) uint8 from a factory; the same seed and batch_size give the same images.
    `on_step` is called after every solver step (it may raise to abort: a peer's factory sets the step count)."""
    device = pick_device()
    model = unet_from_weights(weights, cfg, device)
    scheduler = build_sample_scheduler(cfg)
    generator = torch.Generator().manual_seed(seed)
    out = np.empty((n, cfg.image_size, cfg.image_size, cfg.channels), dtype=np.uint8)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        shape = (b, cfg.channels, cfg.image_size, cfg.image_size)
        scheduler.set_timesteps(cfg.sample_steps)  # resets the multistep solver's history per batch
        x = torch.randn(shape, generator=generator).to(device) * scheduler.init_noise_sigma  # (B, C, H, W)
        for t in scheduler.timesteps:
            with autocast(device, cfg.bf16):  # scale_model_input: EDM's c_in, the identity for the others
                model_out = model(scheduler.scale_model_input(x, t), t).sample
            x = scheduler.step(model_out.float(), t, x).prev_sample
            if on_step is not None:
                on_step()
        if not torch.isfinite(x).all():  # NaN or inf weights (or an overflowing solver) would pass as black images
            raise ValueError("its sampler produced non-finite values (NaN or inf)")
        pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (B, C, H, W)
        out[start : start + b] = pixels.permute(0, 2, 3, 1).cpu().numpy()
    return out
