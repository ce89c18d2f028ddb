"""Differentially private factory training: DP-SGD (Abadi et al. 2016, arXiv 1607.00133) through Opacus.

One DP-SGD step of a factory with n training images, sampling rate q, clipping bound C, noise multiplier sigma:

    B ~ Poisson(q)                      every image joins the batch on its own with probability q = batch_size / n
    g = (sum_{i in B} clip_C(grad l_i) + N(0, sigma^2 C^2 I)) / (q n),    clip_C(v) = v min(1, C / |v|)

then AdamW steps on g. The EMA of the weights, the snapshots and the samples peers draw are post-processing, so
they spend nothing more. Opacus computes the per-sample gradients (its hooks cover every layer the factory's
diffusers UNet2DModel has: Conv2d, Linear and GroupNorm, attention included, since diffusers' attention is made of
Linear layers) and clips, sums and noises them (DPOptimizer). sigma is the smallest noise multiplier for which
Opacus' RDP accountant (the sampled Gaussian mechanism's Renyi DP, Mironov et al. 2019, arXiv 1908.10530, converted
to (epsilon, delta)) gives epsilon <= the target after the run's steps at rate q: `plan_dp`. The accountant then
states the epsilon actually spent at any step: `DPPlan.epsilon`.

What this does not cover: Opacus' secure_mode is off (it draws noise from a cryptographic generator, so a run could
not be repeated bit for bit, and a factory must be a pure function of its inputs); the noise comes from torch's
seeded generator and float arithmetic, the usual caveat of DP-SGD implementations. The audit's figures and its
choice of snapshot look at the training images again outside the mechanism (docs/privacy.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

ACCOUNTANT = "rdp"  # Opacus' name; deterministic and cheap, and its epsilon is an upper bound (never optimistic)


def default_delta(n: int) -> float:
    """delta when the operator names none: 1 / (10 n), an order below the 1 / n at which publishing one image
    outright would already meet the bound."""
    return 1.0 / (10 * n)


@dataclass(frozen=True)
class DPPlan:
    """The DP-SGD parameters of one factory run: what the accountant needs to state its epsilon."""

    noise_multiplier: float  # sigma: the noise's standard deviation in units of max_grad_norm
    max_grad_norm: float  # C: every image's gradient is clipped to this L2 norm
    sample_rate: float  # q: each image's chance of being in a step's batch (Poisson sampling)
    steps: int  # the run's steps, the ones sigma was calibrated for
    delta: float
    accountant: str = ACCOUNTANT

    def epsilon(self, steps: int | None = None) -> float:
        """The epsilon the accountant gives for `steps` steps of this plan (all of them by default)."""
        from opacus.accountants import RDPAccountant  # here: a job without DP, and the fork server, skip its import

        accountant = RDPAccountant()
        accountant.history = [(self.noise_multiplier, self.sample_rate, self.steps if steps is None else steps)]
        return accountant.get_epsilon(delta=self.delta)

    def meta(self, steps: int) -> dict[str, Any]:
        """The manifest's `meta.dp` for weights published after `steps` steps (protocol/README.md)."""
        return {"epsilon": self.epsilon(steps), **asdict(self), "steps": steps}


def plan_dp(
    epsilon: float, n: int, batch_size: int, steps: int, *, delta: float = 0.0, max_grad_norm: float = 1.0
) -> DPPlan:
    """The plan that spends at most (`epsilon`, `delta`) over `steps` steps on `n` images at an expected batch of
    `batch_size` (delta 0: `default_delta(n)`)."""
    if epsilon <= 0 or n < 1 or steps < 1 or max_grad_norm <= 0:
        raise ValueError("DP-SGD needs epsilon > 0, at least one image and one step, and max_grad_norm > 0")
    delta = delta or default_delta(n)
    q = min(1.0, batch_size / n)
    from opacus.accountants.utils import get_noise_multiplier

    sigma = get_noise_multiplier(
        target_epsilon=epsilon, target_delta=delta, sample_rate=q, steps=steps, accountant=ACCOUNTANT
    )
    return DPPlan(float(sigma), float(max_grad_norm), q, steps, float(delta))


def noise_seed(seed: int) -> int:
    """The seed of the DP noise: its own stream, independent of the batch draws' (same seed, other stream)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/dp-noise".encode()).digest()[:8], "big") >> 1


def make_private(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, plan: DPPlan, n: int, noise: torch.Generator
) -> tuple[GradSampleModule, DPOptimizer]:
    """`model` with per-sample gradients (Opacus' hooks), and `optimizer` clipping, summing and noising them with
    `noise` as DP-SGD on `n` images (module doc). Call the returned module, step the returned optimizer."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    private = GradSampleModule(model, loss_reduction="mean")
    dp_optimizer = DPOptimizer(
        optimizer,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        expected_batch_size=max(1, round(plan.sample_rate * n)),  # q n: what the noisy sum is divided by
        loss_reduction="mean",
        generator=noise,
    )
    return private, dp_optimizer


def poisson_batch(n: int, sample_rate: float, generator: torch.Generator) -> torch.Tensor:
    """The indices of one Poisson-sampled batch (possibly empty): the sampling the accountant assumes."""
    return (torch.rand(n, generator=generator) < sample_rate).nonzero().flatten()


def empty_step(model: torch.nn.Module) -> None:
    """Give every parameter an empty per-sample gradient, so the optimizer's step is the noise alone: an empty
    Poisson batch still spends a step, and skipping it would not be the mechanism the accountant counted."""
    for p in model.parameters():
        if p.requires_grad:
            p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
