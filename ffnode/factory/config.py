"""A factory's config: what a peer needs to rebuild, size and sample the model, without torch.

The config travels in the signed manifest, so a peer rebuilds exactly the model that was trained; `unet_size`
counts the parameters of the UNet it describes (`build_unet` in model.py) from the config alone, so a node can
refuse an oversized peer model before anything is built, in a process that never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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
        if self.norm_num_groups < 1 or not 0 <= self.dropout <= 1:  # NaN is not within 0..1 either
            raise ValueError(f"norm_num_groups {self.norm_num_groups} must be at least 1, dropout within 0..1")
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


# diffusers' UNet2DModel, as build_unet makes it: attention heads of 8 channels, a time embedding 4x the first
# width, one GroupNorm per ResNet input and output. tests/test_arch.py checks the count against torch.
ATTENTION_HEAD_DIM = 8


def unet_size(cfg: FactoryConfig) -> tuple[int, int]:
    """(parameters, bytes of the float32 state dict) of `build_unet(cfg)`, counted without building it."""
    widths, layers, channels = cfg.block_out_channels, cfg.layers_per_block, cfg.channels
    c0, temb, levels = widths[0], 4 * widths[0], len(widths)
    n = _conv3(channels, c0) + (c0 * temb + temb) + (temb * temb + temb)  # conv_in, time embedding
    c_prev = c0
    for i, c in enumerate(widths):  # down: `layers` ResNets (attention in the last level), a downsampler but last
        attn = cfg.attention and i == levels - 1
        for j in range(layers):
            n += _resnet(c_prev if j == 0 else c, c, temb) + (_attention(c) if attn else 0)
        n += _conv3(c, c) if i < levels - 1 else 0
        c_prev = c
    n += 2 * _resnet(widths[-1], widths[-1], temb) + _attention(widths[-1])  # mid block
    rev = widths[::-1]
    prev_out = rev[0]
    for i, out in enumerate(rev):  # up: `layers` + 1 ResNets over the skip connections, an upsampler but last
        skip_in, attn = rev[min(i + 1, levels - 1)], cfg.attention and i == 0
        for j in range(layers + 1):
            n += _resnet((prev_out if j == 0 else out) + (skip_in if j == layers else out), out, temb)
            n += _attention(out) if attn else 0
        n += _conv3(out, out) if i < levels - 1 else 0
        prev_out = out
    n += 2 * c0 + _conv3(c0, channels)  # conv_norm_out, conv_out
    return n, 4 * n


def _conv3(c_in: int, c_out: int) -> int:
    return 9 * c_in * c_out + c_out


def _resnet(c_in: int, c_out: int, temb: int) -> int:
    """ResnetBlock2D: two GroupNorms, two 3x3 convs, the time projection, a 1x1 shortcut where widths differ."""
    n = 2 * c_in + _conv3(c_in, c_out) + temb * c_out + c_out + 2 * c_out + _conv3(c_out, c_out)
    return n + (c_in * c_out + c_out if c_in != c_out else 0)


def _attention(c: int) -> int:
    """Attention over c channels in heads of 8: a GroupNorm, q, k, v (c -> 8 * (c // 8)) and out, with biases."""
    inner = ATTENTION_HEAD_DIM * (c // ATTENTION_HEAD_DIM)
    return 2 * c + 3 * (c * inner + inner) + inner * c + c
