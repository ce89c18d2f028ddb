"""Product of Experts (Hinton 2002), the paper's decentralised prediction rule.

Each site's expert k gives log p_k(y|x). The product of the experts' distributions, renormalised, is

    log p(y|x) = log_softmax_y( sum_k max(log p_k(y|x), log 1e-12) )

The clamp at log 1e-12 stops one expert that is certain a class is impossible (log p = -inf or -80) from
vetoing it outright, so a single badly calibrated expert costs accuracy gracefully instead of absolutely.
Prediction is the argmax; probabilities are the softmax of the clamped sum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from ffnode.expert.train import expert_log_probs

LOG_FLOOR = math.log(1e-12)


def poe_combine(log_probs: torch.Tensor) -> torch.Tensor:
    """(K, B, C) per-expert log-probabilities -> (B, C) normalised PoE log-probabilities."""
    if log_probs.ndim != 3 or log_probs.shape[0] == 0:
        raise ValueError(f"expected (K, B, C) log-probabilities with K >= 1, got {tuple(log_probs.shape)}")
    return torch.log_softmax(log_probs.clamp(min=LOG_FLOOR).sum(dim=0), dim=-1)


@torch.no_grad()
def poe_predict(
    models: Sequence[nn.Module], images: np.ndarray | torch.Tensor, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Predict (B,) class indices and (B, C) probabilities for (B, H, W, C) images with all experts."""
    if not models:
        raise ValueError("PoE needs at least one expert")
    log_probs = torch.stack([expert_log_probs(m, images, batch_size) for m in models])  # (K, B, C)
    combined = poe_combine(log_probs)  # (B, C)
    return combined.argmax(dim=1).numpy(), combined.exp().numpy()
