"""Product of Experts (Hinton 2002): the paper's decentralised prediction rule, and a prior-corrected form.

Each site's expert k gives log p_k(y|x). The paper's rule ("product") multiplies the experts' distributions:

    log p(y|x) = log_softmax_y( sum_k max(log p_k(y|x), log 1e-12) )

The clamp at log 1e-12 stops one expert that is certain a class is impossible (log p = -inf or -80) from
vetoing it outright, so a single badly calibrated expert costs accuracy gracefully instead of absolutely.

Why a second rule ("prior"): expert k was trained on labels drawn from pi_k (its real counts, plus
`synth_per_class` for every class it lacks), so p_k(y|x) ~ q_k(x|y) pi_k(y). In a silo federation
sum_k log pi_k(y) = log n_y + const, so the product is sum_k log q_k(x|y) + log n_y: K likelihoods of the
same image against the federation's prior once. All K experts look at the same x, so their evidence is
far from independent, and the prior is outweighed K to 1. The prior-corrected rule divides each expert's
training prior out, takes the geometric mean of the likelihoods and applies the federation's real prior
pi(y) (summed real counts, from the expert manifests) once:

    log p(y|x) = log_softmax_y( mean_k [max(log p_k(y|x), log 1e-12) - log pi_k(y)] + log pi(y) )

On balanced classes the two rules agree; on skewed ones (RetinaMNIST, 43 % grade 0) the second is the
better calibrated one. Prediction is the argmax; probabilities are the softmax of the combined logits.

The counts the prior rule needs (`Priors`) and which classes a rule can answer (`covered`) are plain numpy, in
ffnode.voters, so the node judges coverage and refuses a query without loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from ffnode.expert.train import expert_log_probs
from ffnode.voters import Priors, covered

LOG_FLOOR = math.log(1e-12)


def _log_share(counts: np.ndarray) -> torch.Tensor:
    """log(count / total) along the last axis, floored at LOG_FLOOR so a zero count stays finite."""
    c = torch.as_tensor(counts, dtype=torch.float64)
    return (c.log() - c.sum(dim=-1, keepdim=True).clamp(min=1.0).log()).clamp(min=LOG_FLOOR).float()


def poe_combine(log_probs: torch.Tensor, priors: Priors | None = None) -> torch.Tensor:
    """(K, B, C) per-expert log-probabilities -> (B, C) normalised PoE log-probabilities.

    Without `priors` the paper's product; with them the prior-corrected rule of the module docstring. There,
    the mean for class y runs over the experts that were trained on y only: an expert that never saw y says
    nothing about it (label smoothing still gives y some mass, which divided by a zero prior would be a
    large bonus). A class no expert saw, or with no real images anywhere, gets LOG_FLOOR.
    """
    if log_probs.ndim != 3 or log_probs.shape[0] == 0:
        raise ValueError(f"expected (K, B, C) log-probabilities with K >= 1, got {tuple(log_probs.shape)}")
    # a peer's expert may answer NaN or +-inf: as sure-it-is-not (the floor) rather than poisoning every class
    clamped = torch.nan_to_num(log_probs, nan=LOG_FLOOR, posinf=0.0, neginf=LOG_FLOOR).clamp(min=LOG_FLOOR, max=0.0)
    if priors is None:
        return torch.log_softmax(clamped.sum(dim=0), dim=-1)
    k, _, c = log_probs.shape
    if priors.train_counts.shape != (k, c) or priors.real_counts.shape != (c,):
        got = f"{priors.train_counts.shape} and {priors.real_counts.shape}"
        raise ValueError(f"priors must be ({k}, {c}) and ({c},) counts, got {got}")
    seen = torch.as_tensor(priors.train_counts > 0)  # (K, C)
    likelihoods = clamped - _log_share(priors.train_counts)[:, None, :]  # (K, B, C): log q_k(x|y) + const_k(x)
    n_seen = seen.sum(dim=0)  # (C,)
    mean = torch.where(seen[:, None, :], likelihoods, 0.0).sum(dim=0) / n_seen.clamp(min=1)  # (B, C)
    usable = torch.as_tensor(covered(priors.train_counts, priors.real_counts))  # (C,)
    logits = torch.where(usable, mean + _log_share(priors.real_counts), LOG_FLOOR)
    return torch.log_softmax(logits, dim=-1)


@torch.no_grad()
def poe_predict(
    models: Sequence[nn.Module], images: np.ndarray | torch.Tensor, priors: Priors | None = None, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Predict (B,) class indices and (B, C) probabilities for (B, H, W, C) images with all experts."""
    if not models:
        raise ValueError("PoE needs at least one expert")
    log_probs = torch.stack([expert_log_probs(m, images, batch_size) for m in models])  # (K, B, C)
    combined = poe_combine(log_probs, priors)  # (B, C)
    return combined.argmax(dim=1).numpy(), combined.exp().numpy()
