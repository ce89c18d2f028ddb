"""The audit's second membership attack and second distance, beside audit.py's loss attack and pixel L2.

PIA, the proximal initialisation attack (Kong et al., "An efficient membership inference attack for the
diffusion model by proximal initialization", ICLR 2024). The loss attack draws its noise at random, so its
score carries the noise draw's variance. PIA takes the noise from the model instead: the model's own noise
estimate at t = 0 is where a deterministic (DDIM) trajectory through x0 starts, and for an image the model
trained on, the trajectory it predicts at t is consistent with it:

    eps0     = eps_theta(x0, 0)                              the model's noise estimate on the clean image
    x_t      = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps0       (EDM: x = x0 + sigma eps0)
    score(x) = - mean |eps_theta(x_t, t) - eps0|^4            the paper's l4 distance; higher: likelier a member

Two model calls per image, deterministic (no noise drawn). eps_theta is the model's noise estimate whatever
the UNet regresses (v, epsilon, x0, or EDM's preconditioned output: `_eps`); t = 0 is the first timestep, or
sigma_min for EDM. The level is a fraction of the schedule, as the loss attack's are (Objective.at): the paper
attacks DDPMs at t = 200 of 1000 on linear betas, where abar_t = 0.66, and on the cosine schedule of every
ffnode profile abar_t is 0.66 near t = 390, so the audit's default is 0.4 (AuditSettings.pia_level).

The feature distance, "randconv-1": L2 between images embedded by a fixed network of three random 3x3
convolutions (ReLU, 2x2 average pooling after the first two) on each image standardised per channel, each
layer's output pooled to 4x4, unit-normalised per position over channels (as LPIPS normalises its features)
and weighted so that every layer counts alike. Pixel L2 misses a recoloured copy; standardisation removes
brightness, contrast and colour casts, so here such a copy is as close as an exact one (tests/test_privacy.py).
It does not make a shifted copy close: a copy rolled by one or two pixels is missed by both distances on
BloodMNIST and RetinaMNIST (docs/privacy.md), as the class's other images differ from it less than that.
Random weights, not trained ones: nothing to download (a site may have no internet) and nothing learnt from
the site's data or from the factory being audited. Trained features judge similarity better (Zhang et al.
2018, LPIPS, rank random-weight networks below trained ones); what this distance adds is the invariance to
recolouring, by construction, at a cost of under a second per audit.
The weights are drawn by NumPy's legacy RandomState(0), a stream NumPy keeps stable across versions.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from ffnode.device import pick_device
from ffnode.factory.config import FactoryConfig
from ffnode.factory.objective import Objective
from ffnode.factory.sample import unet_from_weights
from ffnode.factory.train import images_to_tensor

FEATURE = "randconv-1"  # the name the figures carry: change it with any change to the embedding below
_WIDTHS = (32, 64, 128)  # channels of the three random convolutions
_GRID = 4  # each layer's output pooled to 4x4 positions
_STD_FLOOR = 0.02  # per-channel std floor (pixels in [0, 1]): a flat image is not blown up into noise


def pia_scores(
    weights: dict[str, torch.Tensor], cfg: FactoryConfig, images: np.ndarray, level: float, batch_size: int = 256
) -> np.ndarray:
    """PIA's score of each (N, H, W, C) uint8 image at `level` (a fraction of the schedule): higher is likelier a
    member. float32 throughout: the attack compares two of the model's outputs, and bf16 rounding is noise there."""
    device = pick_device()
    model = unet_from_weights(weights, cfg, device)
    objective = Objective(cfg)
    first = torch.tensor(cfg.sigma_min) if objective.edm else torch.tensor(0)
    (at,) = objective.at((level,))
    data = images_to_tensor(images)
    out = np.empty(len(images), np.float32)
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            x0 = data[start : start + batch_size].to(device)  # (B, C, H, W) in [-1, 1]
            eps0 = _eps(model, objective, x0, first)
            eps_t = _eps(model, objective, _noised(objective, x0, eps0, at), at)
            out[start : start + len(x0)] = -((eps_t - eps0) ** 4).flatten(1).mean(1).cpu().numpy()
    return out


def _noised(objective: Objective, x0: torch.Tensor, noise: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """x0 noised to `level` with `noise` (not preconditioned: what `_eps` takes)."""
    if objective.edm:
        return x0 + level.float().to(x0.device) * noise
    assert objective.scheduler is not None
    return objective.scheduler.add_noise(x0, noise, level.to(x0.device).expand(len(x0)))


def _eps(model: torch.nn.Module, objective: Objective, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """The model's estimate of the noise in `x`, an image noised to `level`, from whatever its UNet regresses."""
    cfg, level = objective.cfg, level.to(x.device)
    if objective.edm:  # Karras et al.'s preconditioning (objective.py): D = c_skip x + c_out F(c_in x; c_noise)
        sigma, sd = level.float(), cfg.sigma_data
        norm = (sigma**2 + sd**2).sqrt()
        out = model(x / norm, (0.25 * sigma.log()).expand(len(x))).sample.float()
        denoised = sd**2 / norm**2 * x + sigma * sd / norm * out
        return (x - denoised) / sigma
    assert objective.scheduler is not None
    out = model(x, level.expand(len(x))).sample.float()
    abar = objective.scheduler.alphas_cumprod.to(x.device)[level]
    a, s = abar.sqrt(), (1 - abar).sqrt()
    if cfg.prediction_type == "epsilon":
        return out
    if cfg.prediction_type == "v_prediction":  # v = a eps - s x0 and x = a x0 + s eps, so eps = a v + s x
        return a * out + s * x
    return (x - a * out) / s  # "sample": the UNet predicts x0


def features(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, D) float32 "randconv-1" embeddings (module doc); L2 between them is the distance."""
    x = torch.from_numpy(images).float().div(255.0).permute(0, 3, 1, 2)  # (N, C, H, W)
    mean = x.mean((2, 3), keepdim=True)
    x = (x - mean) / x.std((2, 3), keepdim=True).clamp_min(_STD_FLOOR)
    parts = []
    with torch.no_grad():
        for i, w in enumerate(_conv_weights(x.shape[1])):
            x = F.relu(F.conv2d(x, w, padding=1))
            pooled = F.adaptive_avg_pool2d(x, _GRID)  # (N, width, 4, 4)
            unit = pooled / pooled.norm(dim=1, keepdim=True).clamp_min(1e-12)
            parts.append(unit.flatten(1) / np.sqrt(_GRID * _GRID * len(_WIDTHS)))
            if i < len(_WIDTHS) - 1:
                x = F.avg_pool2d(x, 2, ceil_mode=True)
    return torch.cat(parts, 1)


@functools.cache
def _conv_weights(channels: int) -> tuple[torch.Tensor, ...]:
    """The three fixed random 3x3 kernels (He-scaled normal) for images of `channels` channels."""
    rng = np.random.RandomState(0)
    out, c_in = [], channels
    for c_out in _WIDTHS:
        w = rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2.0 / (9 * c_in))
        out.append(torch.from_numpy(w).float())
        c_in = c_out
    return tuple(out)
