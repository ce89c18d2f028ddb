"""The privacy audit of one factory, run at its own site before the factory is published.

A factory is a diffusion model trained on one class of a site's images, and diffusion models can memorise
and regurgitate training images, most of all small training sets (Carlini et al. 2023, "Extracting
training data from diffusion models"; Gu et al. 2023, "On memorization in diffusion models"). So a fixed,
seeded slice of each class is held out of factory training (`holdout_split`): fresh images of the same
distribution the factory never saw. The audit then measures two things against them:

memorisation, under two distances: pixel L2 between images in [0, 1], and L2 between their "randconv-1"
features (attacks.py: it sees copies that are shifted or recoloured); with x-flip training, the distance to a
training image is the smaller of the distances to it and to its mirror image, since the factory saw both:
    for N samples s:  r(s) = d(s, NN1) / d(s, NN2), the nearest and second-nearest training images;
    memorised      = share of samples with r(s) < 1/3                    (the criterion of Gu et al.)
    dcr_close      = share of samples whose distance to the closest training image (DCR) is below the 5th
                     percentile of the held-out images' DCR: about 0.05 when samples sit no closer to the
                     training set than fresh real images do, more when they copy it
    dcr_ratio      = median DCR of the samples / median DCR of the held-out images
    (feature_memorised, feature_nn_ratio_min, feature_dcr_close, feature_dcr_ratio: the same in feature space)

membership inference (the loss attack, Carlini et al. 2023 sec. 6 and Matsumoto et al. 2023): the factory's
denoising loss on an image is lower when it trained on that image. For members (a seeded subset of the
training images) and non-members (the held-out images), the loss at fixed noise levels t with the same
fixed noise draws for every image, each level divided by its median over all audited images, averaged:
    score(x) = - mean_{t, k} loss_t(x, eps_k) / median_x' loss_t(x', eps_k)
    mia_auc        = P(score(member) > score(non-member))   (Mann-Whitney; 0.5 = the attack learns nothing)
    mia_tpr_1pct   = members flagged at the threshold that flags at most 1 % of non-members (0.1 % likewise)
and PIA (attacks.py: the model's own noise estimate at t = 0 replaces the random draw) on the same members
and non-members: pia_auc, pia_tpr_1pct, pia_tpr_01pct at level pia_level.

Everything is a function of (weights, images, seed): the same inputs give the same figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ffnode.device import autocast, pick_device
from ffnode.factory.config import FactoryConfig
from ffnode.factory.objective import Objective
from ffnode.factory.sample import sample_factory, unet_from_weights
from ffnode.factory.train import images_to_tensor
from ffnode.privacy.attacks import FEATURE, features, pia_scores
from ffnode.privacy.policy import AUDIT_VERSION, DISTANCE

MEMORISED_RATIO = 1.0 / 3.0  # Gu et al.: a sample 3x closer to one training image than to any other is a copy
DCR_QUANTILE = 0.05


class AuditError(ValueError):
    """A factory that cannot be audited (it diverged: its losses are not finite); it fails its audit."""


@dataclass(frozen=True)
class AuditSettings:
    """How much auditing one factory costs; the defaults and their reasons are in docs/privacy.md."""

    samples: int = 500  # N: memorised share in steps of 0.2 %, so a 1 % threshold means 5 copies
    levels: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)  # noise levels, as fractions (Objective.at)
    draws: int = 2  # noise draws per level, the same for every audited image
    members_per_holdout: int = 2  # members attacked per held-out image (all of them if the class is small)
    pia_level: float = 0.4  # PIA's t, as a fraction of the schedule: the paper's noise level (attacks.py)
    batch_size: int = 256


@dataclass
class AuditReport:
    """The figures that go into the factory's signed manifest (`figures`), and what only the site keeps."""

    figures: dict
    closest: list[tuple[int, int, float]] = field(default_factory=list)  # (sample, training image, ratio), owner only

    def as_dict(self) -> dict:
        return asdict(self)


def holdout_split(n: int, seed: int, fraction: float, least: int, most: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held out) of a class of n images: round(fraction * n) held out, at least `least` and at most
    `most`, and never more than half the class (the factory must learn from something). Seeded, so the same."""
    k = min(most, max(least, round(fraction * n)), n // 2)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[k:]), np.sort(order[:k])


def _flat(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, H*W*C) float32 in [0, 1]."""
    return torch.from_numpy(images.reshape(len(images), -1)).float().div(255.0)


def _two_nearest(queries: torch.Tensor, refs: list[torch.Tensor], chunk: int = 256) -> tuple[np.ndarray, ...]:
    """Per embedded query (N, D): (d1, d2, index of NN1) over the distinct training images, each embedded once or,
    with x-flips, also mirrored (`refs`): the distance to a training image is the smaller of the two."""
    d1, d2, i1 = [], [], []
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        d = torch.stack([torch.cdist(q, r) for r in refs]).amin(0)  # (chunk, n_train)
        top, idx = d.topk(2, dim=1, largest=False)  # audit_factory asks for 2 training images at least
        d1.append(top[:, 0])
        d2.append(top[:, 1])
        i1.append(idx[:, 0])
    return tuple(torch.cat(x).numpy() for x in (d1, d2, i1))


def _copies(
    samples: np.ndarray,
    train: np.ndarray,
    holdout: np.ndarray,
    hflip: bool,
    embed: Callable[[np.ndarray], torch.Tensor],
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """The memorisation figures under the distance L2(embed(a), embed(b)) (module doc), with each sample's NN1/NN2
    ratio and nearest training image."""
    refs = [embed(train)] + ([embed(train[:, :, ::-1].copy())] if hflip else [])
    d1, d2, nn = _two_nearest(embed(samples), refs)
    holdout_dcr = _two_nearest(embed(holdout), refs)[0]
    ratio = _ratio(d1, d2)
    figures = {
        "memorised": float((ratio < MEMORISED_RATIO).mean()),
        "nn_ratio_min": float(ratio.min()),
        "dcr_close": float((d1 < np.quantile(holdout_dcr, DCR_QUANTILE)).mean()),
        "dcr_ratio": float(np.median(d1) / max(float(np.median(holdout_dcr)), 1e-12)),
    }
    return figures, ratio, nn


def _ratio(d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """NN1/NN2; an exact copy of a training image that appears twice (d1 = d2 = 0) counts as a copy (0)."""
    return np.where(d2 > 0, d1 / np.where(d2 > 0, d2, 1.0), 0.0)


@torch.no_grad()
def _losses(
    weights: dict[str, torch.Tensor], cfg: FactoryConfig, images: np.ndarray, settings: AuditSettings, seed: int
) -> np.ndarray:
    """(images, levels * draws) denoising losses at the fixed levels, with the same noise draws for every image."""
    device = pick_device()
    model = unet_from_weights(weights, cfg, device)
    objective = Objective(cfg)
    generator = torch.Generator().manual_seed(seed)
    shape = (cfg.channels, cfg.image_size, cfg.image_size)
    noises = torch.randn((settings.draws, *shape), generator=generator)
    levels = objective.at(settings.levels)
    data = images_to_tensor(images)
    out = np.empty((len(images), len(levels) * settings.draws), np.float32)
    for start in range(0, len(data), settings.batch_size):
        x0 = data[start : start + settings.batch_size].to(device)
        col = 0
        for level in levels:
            for noise in noises:
                x_in, t, target = objective.inputs(x0, noise.to(device).expand_as(x0), level)
                with autocast(device, cfg.bf16):
                    pred = model(x_in, t).sample
                loss = F.mse_loss(pred.float(), target, reduction="none").flatten(1).mean(1)
                out[start : start + len(x0), col] = loss.cpu().numpy()
                col += 1
    return out


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + P(pos = neg) / 2: the area under the attack's ROC curve."""
    from sklearn.metrics import roc_auc_score  # here: scikit-learn and scipy cost an expert job 3 s to import

    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def _tpr_at(pos: np.ndarray, neg: np.ndarray, fpr: float) -> float:
    """Share of `pos` above the threshold that lets at most a share `fpr` of `neg` above it. With fewer than 1/fpr
    negatives that is the largest negative: the TPR at zero false positives."""
    k = int(np.floor(fpr * len(neg)))
    threshold = np.sort(neg)[::-1][min(k, len(neg) - 1)]
    return float((pos > threshold).mean())


def _attack(name: str, pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    """An attack's figures from its scores of members (`pos`) and non-members (`neg`): AUC, TPR at 1 % and 0.1 %."""
    return {
        f"{name}_auc": _auc(pos, neg),
        f"{name}_tpr_1pct": _tpr_at(pos, neg, 0.01),
        f"{name}_tpr_01pct": _tpr_at(pos, neg, 0.001),
    }


def audit_factory(
    weights: dict[str, torch.Tensor],
    cfg: FactoryConfig,
    train: np.ndarray,
    holdout: np.ndarray,
    *,
    seed: int,
    settings: AuditSettings = AuditSettings(),
    step: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AuditReport:
    """Audit a factory against the images it trained on (`train`) and those held out of its training (`holdout`),
    both (N, H, W, C) uint8. `step` is the training step of these weights (recorded in the figures)."""
    if len(train) < 2 or len(holdout) < 2:
        raise ValueError(f"an audit needs 2 training and 2 held-out images at least ({len(train)}, {len(holdout)})")
    t0 = time.perf_counter()
    # `seed` picks the members attacked and draws the samples (the owner's picture redraws them); seed + 1 the noise
    rng = np.random.default_rng(seed)
    calls = [0, 5 + cfg.sample_steps * -(-settings.samples // settings.batch_size)]

    def tick() -> None:
        calls[0] += 1
        if progress is not None:
            progress(calls[0], calls[1])

    # memorisation, under both distances
    samples = sample_factory(weights, cfg, settings.samples, seed=seed, on_step=tick)
    pixel, ratio, nn = _copies(samples, train, holdout, cfg.hflip, _flat)
    tick()
    feature = _copies(samples, train, holdout, cfg.hflip, features)[0]
    tick()
    # membership inference: the loss attack, then PIA, on the same members and non-members
    n_members = min(len(train), settings.members_per_holdout * len(holdout))
    members = train[np.sort(rng.choice(len(train), n_members, replace=False))]
    attacked = np.concatenate([members, holdout])
    losses = _losses(weights, cfg, attacked, settings, seed=seed + 1)
    tick()
    pia = pia_scores(weights, cfg, attacked, settings.pia_level, settings.batch_size)
    tick()
    if not (np.isfinite(losses).all() and np.isfinite(pia).all()):
        raise AuditError("its denoising losses are not finite: the factory diverged")
    score = -(losses / np.maximum(np.median(losses, axis=0), 1e-12)).mean(axis=1)
    figures = {
        "v": AUDIT_VERSION,
        "distance": DISTANCE,
        "step": int(cfg.train_steps if step is None else step),
        "samples": int(settings.samples),
        "n_train": int(len(train)),
        "n_holdout": int(len(holdout)),
        **pixel,
        "mia_members": int(n_members),
        **_attack("mia", score[:n_members], score[n_members:]),
        "levels": [int(round(f * 1000)) for f in settings.levels],  # per mille of the schedule: msgpack-exact ints
        "draws": int(settings.draws),
        **_attack("pia", pia[:n_members], pia[n_members:]),
        "pia_level": int(round(settings.pia_level * 1000)),
        "feature": FEATURE,
        **{f"feature_{k}": v for k, v in feature.items()},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    closest = sorted(zip(range(len(ratio)), nn.tolist(), ratio.tolist(), strict=True), key=lambda x: x[2])[:16]
    return AuditReport(figures, [(int(s), int(i), round(float(r), 4)) for s, i, r in closest])
