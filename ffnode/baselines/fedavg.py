"""Federated Averaging (FedAvg) [McMahan et al., 2017, arXiv 1602.05629].

Each round every client k starts from the global parameters theta, runs E local epochs of SGD on its own
data, and the server averages the results weighted by the clients' data sizes n_k:

    theta <- sum_k n_k theta_k / sum_k n_k

With one class per client (silos) every local model drifts to predicting its own class, and the average
of such models is a poor classifier: the failure FederatedFactory is built to avoid.
"""

from __future__ import annotations

import numpy as np

from ffnode.baselines.simulate import Strategy, run_federated
from ffnode.expert.resnet import ExpertConfig


def run_fedavg(
    parts: list[tuple[np.ndarray, np.ndarray]],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    cfg: ExpertConfig,
    *,
    rounds: int,
    local_epochs: int,
    seed: int,
) -> dict:
    """Simulate FedAvg; returns accuracy, auroc, rounds, local_epochs (and the algorithm's name)."""
    return run_federated(Strategy(), parts, test, num_classes, cfg, rounds=rounds, local_epochs=local_epochs, seed=seed)
