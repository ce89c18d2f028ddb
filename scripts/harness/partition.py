"""Split a labelled set over simulated nodes (indices only, so callers slice whatever arrays they hold), or keep
the first K classes of a set (a smaller federation than the dataset's)."""

from __future__ import annotations

import numpy as np

from ffnode.data.sources import ImageSet


def silo(labels: np.ndarray, n_nodes: int) -> list[np.ndarray]:
    """The paper's "silos" partition: every node holds whole classes, no class is shared between kinds.

    - n_nodes == n_classes: node i holds all of class i (one class per node, the extreme case).
    - n_nodes <  n_classes: classes are dealt round-robin, node i holds classes i, i + n_nodes, ...
    - n_nodes >  n_classes: node i holds class i % n_classes, and each class's images are split in
      contiguous, near-equal chunks over the nodes holding it, so several nodes hold the same single class.
    """
    classes = np.unique(labels)
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be >= 1, got {n_nodes}")
    parts: list[list[np.ndarray]] = [[] for _ in range(n_nodes)]
    for c_pos, c in enumerate(classes):
        members = np.flatnonzero(labels == c)
        holders = list(range(c_pos % n_nodes, n_nodes, len(classes))) if n_nodes > len(classes) else [c_pos % n_nodes]
        if len(holders) > len(members):
            raise ValueError(f"class {c} has {len(members)} images, too few to spread over {len(holders)} nodes")
        for node, chunk in zip(holders, np.array_split(members, len(holders)), strict=True):
            parts[node].append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]


def dirichlet(labels: np.ndarray, n_nodes: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Label-skewed partition: each class's images are split by proportions drawn from Dir(alpha).

    Small alpha (0.1) gives nearly one class per node, large alpha (100) nearly IID. Draws are repeated
    (up to 100 times, same seed stream) until every node holds at least one image.
    """
    if n_nodes < 1 or alpha <= 0:
        raise ValueError(f"need n_nodes >= 1 and alpha > 0, got {n_nodes} and {alpha}")
    rng = np.random.default_rng(seed)
    for _ in range(100):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_nodes)]
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(n_nodes, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for node, chunk in enumerate(np.split(members, cuts)):
                parts[node].append(chunk)
        result = [np.sort(np.concatenate(p)) for p in parts]
        if all(len(r) for r in result):
            return result
    raise ValueError(f"could not give every one of {n_nodes} nodes an image with alpha={alpha}: use fewer nodes")


def by_spec(labels: np.ndarray, n_nodes: int, spec: str, seed: int) -> list[np.ndarray]:
    """`silo` or `dirichlet:ALPHA`, as the scripts' --partition flags spell it."""
    if spec == "silo":
        return silo(labels, n_nodes)
    if spec.startswith("dirichlet:"):
        try:
            alpha = float(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"partition {spec!r}: ALPHA must be a number, e.g. dirichlet:0.1") from None
        return dirichlet(labels, n_nodes, alpha, seed)
    raise ValueError(f"unknown partition {spec!r}: use silo or dirichlet:ALPHA")


def first_classes(data: ImageSet, k: int) -> ImageSet:
    """The images of classes 0..k-1 only (a smaller federation than the dataset's)."""
    keep = data.labels < k
    return ImageSet(data.images[keep], data.labels[keep], data.classes[:k])
