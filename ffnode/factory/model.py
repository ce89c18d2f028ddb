"""A factory: one small unconditional diffusion UNet (diffusers ``UNet2DModel``) for one class of one site.

FederatedFactory's generative matrix holds one unconditional model per (site, class); a site shares the
weights, never its images, and peers sample the classes they lack. The paper uses EDM2 UNets trained for
25M images; here the config is sized so a factory trains in seconds to minutes on a CPU core.
The config travels in the signed manifest, so a peer rebuilds exactly the model that was trained.
"""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)

from ffnode.factory.config import FactoryConfig


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
