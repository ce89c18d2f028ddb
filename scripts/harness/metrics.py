"""Evaluation metrics shared by the benchmark, the baselines and the daemon's reports."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the labels."""
    return float(np.mean(np.asarray(preds) == np.asarray(labels)))


def macro_auroc(probs: np.ndarray, labels: np.ndarray) -> float:
    """One-vs-rest AUROC averaged over the classes present in `labels` (NaN with fewer than two).

    Classes absent from the evaluation labels have no positives, so their AUROC is undefined; they are
    left out rather than failing, which matters for small test sets of skewed data.
    """
    labels = np.asarray(labels)
    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    scores = [roc_auc_score(labels == c, probs[:, c]) for c in present]
    return float(np.mean(scores))


def spread(images: np.ndarray, n: int | None = None, seed: int = 0) -> dict[str, float]:
    """How varied a set of images is, in 0-255 pixel units: the per-pixel std across the set (mean over pixels)
    and each image's RMS distance to its nearest other image (mean over images).

    The nearest-neighbour figure shrinks as a set grows, so compare sets of one size: `n` draws that many
    (without replacement, seeded) first. Synthetic images less varied than real ones show as lower figures.
    """
    x = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    if n is not None and n < len(x):
        x = x[np.random.default_rng(seed).choice(len(x), size=n, replace=False)]
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)  # squared distances, (N, N)
    np.fill_diagonal(d2, np.inf)
    return {"pixel_std": float(x.std(0).mean()), "nn_rms": float(np.sqrt(d2.min(1) / x.shape[1]).mean())}
