"""Product of Experts (Hinton 2002): the paper's decentralised prediction rule, and a prior-corrected form.

Each site's expert k gives log p_k(y|x), (K, B, C). The paper's rule ("product") multiplies the experts'
distributions:

    log p(y|x) = log_softmax_y( sum_k v_k(y|x) )                                                  (B, C)
    v_k(y|x)   = max(log p_k(y|x), max_y' log p_k(y'|x) - D_C, log 1e-12)                         (K, B, C)

Why the bound D_C ("no single expert decides an answer"). A vote v_k is what expert k adds to the logits, so
v_k(a) - v_k(b) is how far it pushes class a against b. Without a bound only the clamp at log 1e-12 (which
stops an expert that is certain a class is impossible, log p = -inf, from vetoing it outright) limits that
push: a hostile expert that puts every class but one at the floor pushes 27.6 nats, against ~4.5 for an
honest one, and outvotes about six honest sites. So each expert's votes are floored at its own best vote less
D_C: no expert can push one class against another by more than D_C nats, and an answer that two honest
experts agree on, each at least D_C / 2 nats sure of it (a 9.5:1 odds ratio at 10 classes), no single
expert can flip. D_C is what an honest expert can show: label smoothing eps (ExpertConfig.label_smoothing)
trains towards 1 - eps + eps/C on the label and eps/C elsewhere, so at its loss's minimum an expert's
log-probabilities span

    D_C = log(1 + C (1 - eps) / eps)         4.51 nats at C = 10, 4.29 at 8, 3.82 at 5, 2.94 at 2 (eps = 0.1)

Honest experts do cross it, but on the classes they rank last (training never reaches the optimum exactly, and
the wrong classes spread around eps/C): flooring those moves no class that any expert argues for, and on the
digits testnet's experts it changed no answer while 87 % of (expert, image) pairs crossed it; a liar that pushes
each image's closest wrong rival at the 1e-12 floor takes the accuracy from 0.983 to 0.778 without the bound,
to 0.972 with it (scripts/bench_poe_clip.py). The bound is the same for every owner: an influence bound, not a
reputation.

Why a second rule ("prior"): expert k was trained on labels drawn from pi_k (its real counts, plus
`synth_per_class` for every class it lacks), so p_k(y|x) ~ q_k(x|y) pi_k(y). In a silo federation
sum_k log pi_k(y) = log n_y + const, so the product is sum_k log q_k(x|y) + log n_y: K likelihoods of the
same image against the federation's prior once. All K experts look at the same x, so their evidence is
far from independent, and the prior is outweighed K to 1. The prior-corrected rule divides each expert's
training prior out, takes the geometric mean of the likelihoods and applies the federation's real prior
pi(y) (summed real counts, from the expert manifests) once:

    log p(y|x) = log_softmax_y( mean_k l_k(y|x) + log pi(y) )                                     (B, C)
    l_k(y|x)   = max(L_k(y|x), max_y' L_k(y'|x) - D_C),   L_k = max(log p_k, log 1e-12) - log pi_k   (K, B, C)

Here the bound is on the likelihood vote L_k, training prior included, with the max over the classes expert
k was trained on: pi_k is the owner's own signed word, and a prior claimed near 0 for one class would
otherwise be a bonus of up to 27.6 nats for it whatever the image shows. The price: an honest expert trained
on a skewed prior may show up to D_C + log(max pi_k / min pi_k) and is cut to D_C; silo experts' priors are
near-balanced (a site's real images of its class against synth_per_class of each other: 143 to 400 on digits,
log(400/143) = 1.0 nat below D_C's 4.5).
The federation prior pi is the owners' word too; ffnode.voters bounds it (PRIOR_SHARE, PRIOR_CLIP): one owner
moves the odds of a class other owners hold by at most log 2, so it cannot buy with its counts the voice the bound
takes from its expert. Where the bounds cut a class's count by more than 2x (a liar, or an honest skewed federation
whose prior they would distort), pi is even over the classes someone holds (ffnode.voters.PRIOR_TRUST).

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

from ffnode.expert.config import ExpertConfig
from ffnode.expert.train import expert_log_probs
from ffnode.voters import Priors, covered

LOG_FLOOR = math.log(1e-12)


def vote_bound(num_classes: int, smoothing: float = ExpertConfig.label_smoothing) -> float:
    """D_C of the module docstring: the most nats a label-smoothed expert at its loss's minimum puts between
    two of `num_classes` classes, so the most any expert's vote may."""
    return math.log1p(num_classes * (1.0 - smoothing) / smoothing)


def bounded_votes(votes: torch.Tensor, seen: torch.Tensor, bound: float) -> torch.Tensor:
    """(K, B, C) votes floored at each expert's best vote over the classes it `seen` ((K, 1, C) bool) less
    `bound`: no expert pushes one class against another by more than `bound`."""
    best = torch.where(seen, votes, -math.inf).amax(dim=-1, keepdim=True)  # (K, B, 1)
    return torch.maximum(votes, best - bound)


def _log_share(counts: np.ndarray) -> torch.Tensor:
    """log(count / total) along the last axis, floored at LOG_FLOOR so a zero count stays finite."""
    c = torch.as_tensor(counts, dtype=torch.float64)
    return (c.log() - c.sum(dim=-1, keepdim=True).clamp(min=1.0).log()).clamp(min=LOG_FLOOR).float()


def poe_combine(log_probs: torch.Tensor, priors: Priors | None = None, *, bound: float | None = None) -> torch.Tensor:
    """(K, B, C) per-expert log-probabilities -> (B, C) normalised PoE log-probabilities.

    Without `priors` the paper's product; with them the prior-corrected rule of the module docstring; both with
    every expert's votes bounded to `bound` nats (None: D_C; math.inf: unbounded, the rules before the bound, for
    measuring what it costs). In the prior rule the mean for class y runs over the experts that were
    trained on y only: an expert that never saw y says nothing about it (label smoothing still gives y some mass,
    which divided by a zero prior would be a large bonus). A class no expert saw, or with no real images
    anywhere, gets LOG_FLOOR.
    """
    if log_probs.ndim != 3 or log_probs.shape[0] == 0:
        raise ValueError(f"expected (K, B, C) log-probabilities with K >= 1, got {tuple(log_probs.shape)}")
    k, _, c = log_probs.shape
    bound = vote_bound(c) if bound is None else bound
    # a peer's expert may answer NaN or +-inf: as sure-it-is-not (the floor) rather than poisoning every class
    clamped = torch.nan_to_num(log_probs, nan=LOG_FLOOR, posinf=0.0, neginf=LOG_FLOOR).clamp(min=LOG_FLOOR, max=0.0)
    if priors is None:
        every = torch.ones(k, 1, c, dtype=torch.bool)
        return torch.log_softmax(bounded_votes(clamped, every, bound).sum(dim=0), dim=-1)
    if priors.train_counts.shape != (k, c) or priors.real_counts.shape != (c,):
        got = f"{priors.train_counts.shape} and {priors.real_counts.shape}"
        raise ValueError(f"priors must be ({k}, {c}) and ({c},) counts, got {got}")
    seen = torch.as_tensor(priors.train_counts > 0)[:, None, :]  # (K, 1, C)
    likelihoods = clamped - _log_share(priors.train_counts)[:, None, :]  # (K, B, C): log q_k(x|y) + const_k(x)
    votes = bounded_votes(likelihoods, seen, bound)
    n_seen = seen.sum(dim=0)  # (1, C)
    mean = torch.where(seen, votes, 0.0).sum(dim=0) / n_seen.clamp(min=1)  # (B, C)
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
