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
