"""A factory: one small unconditional diffusion UNet (diffusers ``UNet2DModel``) for one class of one site.

FederatedFactory's generative matrix holds one unconditional model per (site, class); a site shares the
weights, never its images, and peers sample the classes they lack. The paper uses EDM2 UNets trained for
25M images; here the config is sized so a factory trains in seconds to minutes on a CPU core.
The config travels in the signed manifest, so a peer rebuilds exactly the model that was trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)

from ffnode.plainconfig import from_plain, to_plain

SAMPLERS = ("unipc", "dpmsolver++", "ddim", "edm-dpmsolver++")  # the last samples "edm" factories only
PREDICTION_TYPES = ("v_prediction", "epsilon", "sample", "edm")  # diffusers' names, and EDM's preconditioning
BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear", "sigmoid")  # diffusers' names


@dataclass(frozen=True)
class FactoryConfig:
    # image
    image_size: int = 8  # square images only; must halve cleanly at every UNet level (28 -> 14 -> 7 works)
    channels: int = 1
    # model: 3 levels of (32, 64, 64) is ~1 M params, plenty for a single class of small images
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1  # 2 doubles the cost for little gain at these sizes
    norm_num_groups: int = 8  # GroupNorm groups; must divide every block width
    attention: bool = False  # self-attention in the lowest down/up blocks too (the mid block always has one)
    dropout: float = 0.0  # the paper uses 0.3 for 25M-image runs; short runs underfit, so none
    # diffusion
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"  # cosine: keeps small images from being all noise too early
    # v-prediction, not epsilon: with the cosine schedule alpha_bar(T) ~ 0, so an epsilon model's x0 estimate
    # (x - sigma eps) / alpha explodes at the first solver step and DPM-Solver++ returns saturated noise
    # (measured: 0.73 downstream accuracy with epsilon, 0.98 with v on digits)
    prediction_type: str = "v_prediction"  # or "epsilon", or "sample" (x0), or "edm" (ffnode/factory/objective.py)
    # "edm" only: log-normal training noise levels, the data's std in [-1, 1] units, the sampler's sigma range
    p_mean: float = -0.8  # the paper's EDM2 generators' P_mean and P_std
    p_std: float = 1.6
    sigma_data: float = 0.5
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0  # Karras et al.'s sampling-step spacing
    # training
    train_steps: int = 400
    batch_size: int = 64  # on CPU, 64 beats 128 per image for these widths (factories.md)
    lr: float = 2e-3  # small model, short run: a high AdamW lr with warmup
    warmup_steps: int = 20
    weight_decay: float = 0.0
    ema_decay: float = 0.99  # short runs need a short EMA horizon (~100 steps), else EMA lags the fit
    hflip: bool = False  # x-flip augmentation: right for cells and photos, wrong for digits
    checkpoint_every: int = 200  # steps between crash-safe checkpoints
    bf16: bool = True  # autocast where the hardware has bf16 (see ffnode.device)
    # sampling
    # "unipc", "dpmsolver++" or "ddim"; all deterministic given the start noise. Error against a 100-step solve from
    # the same noise (scripts/bench_sampler.py, RMSE in 0..255 pixel units, three 400-step BloodMNIST factories of
    # the cpu profile): UniPC 8 steps 3.52, 10 steps 2.95; DPM-Solver++ 8 steps 4.44, 10 steps 3.59. UniPC-8 is as
    # close as DPM-Solver++-10 for 0.8x the model calls
    sampler: str = "dpmsolver++"
    sample_steps: int = 20

    def __post_init__(self) -> None:
        levels = len(self.block_out_channels)
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image_size {self.image_size} does not halve cleanly {levels - 1} times: "
                f"use fewer block_out_channels levels or another image size"
            )
        if any(w % self.norm_num_groups for w in self.block_out_channels):
            raise ValueError(f"norm_num_groups {self.norm_num_groups} must divide every block width")
        for name, value, allowed in (
            ("sampler", self.sampler, SAMPLERS),
            ("prediction_type", self.prediction_type, PREDICTION_TYPES),
            ("beta_schedule", self.beta_schedule, BETA_SCHEDULES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}: use one of {', '.join(allowed)}")
        if (self.prediction_type == "edm") != (self.sampler == "edm-dpmsolver++"):
            raise ValueError("prediction_type 'edm' and sampler 'edm-dpmsolver++' go together: set both or neither")
        edm = (self.p_mean, self.p_std, self.sigma_data, self.sigma_min, self.sigma_max, self.rho)
        if not all(map(math.isfinite, edm)) or self.sigma_max > 1e4:  # a peer's arch: no inf, no overflowing sigmas
            raise ValueError("edm: p_mean, p_std, sigma_data, sigma_min, sigma_max, rho finite; sigma_max <= 1e4")
        if not (0 < self.sigma_min < self.sigma_max and self.sigma_data > 0 and self.p_std > 0 and self.rho > 0):
            raise ValueError("edm: 0 < sigma_min < sigma_max, and sigma_data, p_std and rho positive")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FactoryConfig:
        return from_plain(cls, d)


def build_unet(cfg: FactoryConfig) -> UNet2DModel:
    """The noise-prediction network, freshly initialised (seed the global RNG first for repeatable weights)."""
    levels = len(cfg.block_out_channels)
    last_down = "AttnDownBlock2D" if cfg.attention else "DownBlock2D"
    first_up = "AttnUpBlock2D" if cfg.attention else "UpBlock2D"
    return UNet2DModel(
        sample_size=cfg.image_size,
        in_channels=cfg.channels,
        out_channels=cfg.channels,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        down_block_types=("DownBlock2D",) * (levels - 1) + (last_down,),
        up_block_types=(first_up,) + ("UpBlock2D",) * (levels - 1),
        norm_num_groups=cfg.norm_num_groups,
        dropout=cfg.dropout,
    )


def build_train_scheduler(cfg: FactoryConfig) -> DDPMScheduler:
    """The forward (noising) process used in training."""
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
    )


def build_sample_scheduler(
    cfg: FactoryConfig,
) -> DDIMScheduler | DPMSolverMultistepScheduler | UniPCMultistepScheduler | EDMDPMSolverMultistepScheduler:
    """The deterministic reverse-time solver used for sampling (same betas, or sigma preconditioning, as training)."""
    if cfg.sampler == "edm-dpmsolver++":  # Karras sigmas; its "epsilon" output scaling is objective.py's c_out
        return EDMDPMSolverMultistepScheduler(
            sigma_min=cfg.sigma_min,
            sigma_max=cfg.sigma_max,
            sigma_data=cfg.sigma_data,
            rho=cfg.rho,
            prediction_type="epsilon",
            algorithm_type="dpmsolver++",
            solver_order=2,
        )
    common = dict(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
    )
    if cfg.sampler == "ddim":
        return DDIMScheduler(**common, clip_sample=False)
    if cfg.sampler == "unipc":  # UniPC-bh2 (Zhao et al. 2023): predictor-corrector, no extra model calls
        return UniPCMultistepScheduler(**common, solver_order=2)
    if cfg.sampler == "dpmsolver++":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"unknown sampler {cfg.sampler!r}")
