"""What a factory's UNet learns: how a clean image x0 is noised to a level, and what the UNet regresses there.

Two families, picked by `FactoryConfig.prediction_type`:

discrete (DDPM; "v_prediction", "epsilon", "sample"), on diffusers' DDPMScheduler betas:
    t ~ U{0..T-1},  x_t = sqrt(a_t) x0 + sqrt(1 - a_t) n,  the UNet sees (x_t, t) and regresses n, v or x0.

"edm" (Karras et al. 2022, the preconditioning FederatedFactory's EDM2 generators use):
    ln sigma ~ N(p_mean, p_std^2),  x = x0 + sigma n,
    D(x; sigma) = c_skip x + c_out F(c_in x; c_noise),  c_skip = sd^2 / (sigma^2 + sd^2),
    c_out = sigma sd / sqrt(sigma^2 + sd^2),  c_in = 1 / sqrt(sigma^2 + sd^2),  c_noise = ln(sigma) / 4,
    loss = lambda(sigma) |D - x0|^2 with lambda = 1 / c_out^2,  i.e. plain |F - (x0 - c_skip x) / c_out|^2.
The output scaling matches diffusers' EDM schedulers (prediction_type "epsilon"), which sample these factories.

Training draws its levels; the privacy audit scores every image at the same fixed levels (`at`), given as
fractions: of the timesteps (discrete), or quantiles of the training sigma distribution (edm).
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from ffnode.factory.config import FactoryConfig
from ffnode.factory.model import build_train_scheduler


class Objective:
    """Noise levels, UNet inputs and regression targets of one factory config."""

    def __init__(self, cfg: FactoryConfig) -> None:
        self.cfg = cfg
        self.edm = cfg.prediction_type == "edm"
        self.scheduler: DDPMScheduler | None = None if self.edm else build_train_scheduler(cfg)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n training noise levels: timesteps (long), or sigmas (float)."""
        if self.edm:
            return (self.cfg.p_mean + self.cfg.p_std * torch.randn(n, generator=generator)).exp()
        return torch.randint(self.cfg.num_train_timesteps, (n,), generator=generator)

    def at(self, fractions: tuple[float, ...]) -> list[torch.Tensor]:
        """Fixed levels (0-d tensors) for fractions in (0, 1): low fractions are little noise."""
        if self.edm:
            z = torch.special.ndtri(torch.tensor(fractions, dtype=torch.float64))
            return [s.float() for s in (self.cfg.p_mean + self.cfg.p_std * z).exp()]
        t = self.cfg.num_train_timesteps
        return [torch.tensor(min(t - 1, max(1, round(f * t)))) for f in fractions]

    def inputs(
        self, x0: torch.Tensor, noise: torch.Tensor, level: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the UNet's input, its timestep argument, its regression target) for clean images x0 (B, C, H, W),
        noise like x0, and one level per image (B,) or one for all (0-d)."""
        level = level.to(x0.device).expand(len(x0))
        if self.edm:
            sd = self.cfg.sigma_data
            sigma = level.float()[:, None, None, None]
            x = x0 + sigma * noise
            norm = (sigma**2 + sd**2).sqrt()
            c_skip, c_out, c_in = sd**2 / norm**2, sigma * sd / norm, 1 / norm
            return c_in * x, 0.25 * level.float().log(), (x0 - c_skip * x) / c_out
        assert self.scheduler is not None
        xt = self.scheduler.add_noise(x0, noise, level)
        if self.cfg.prediction_type == "epsilon":
            target = noise
        elif self.cfg.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(x0, noise, level)
        else:  # "sample"
            target = x0
        return xt, level, target
