"""Baselines: update math on hand examples, and a short simulation of each on one-class silos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffnode.data import load_dataset
from ffnode.profiles import PROFILES
from harness.baselines import FedAvg, FedProx, Strategy, default_strategies, run_federated
from harness.baselines.feddyn import FedDyn
from harness.baselines.scaffold import Scaffold
from harness.partition import silo

CFG = PROFILES["tiny"].expert


def test_fedavg_weights_by_data_size() -> None:
    out = Strategy().aggregate(
        [torch.zeros(2)], [[torch.tensor([1.0, 0.0])], [torch.tensor([4.0, 3.0])]], [2, 1], [1, 1], 0.1
    )
    assert torch.allclose(out[0], torch.tensor([2.0, 1.0]))


def test_feddyn_server_update() -> None:
    s = FedDyn(alpha=0.5)
    g = [torch.zeros(1)]
    s.setup(g, 2)
    out = s.aggregate(g, [[torch.tensor([1.0])], [torch.tensor([3.0])]], [1, 1], [1, 1], 0.1)
    # h = -0.5 * mean(1, 3) = -1; theta = mean - h / alpha = 2 + 2 = 4
    assert torch.allclose(out[0], torch.tensor([4.0]))
    assert torch.allclose(s.g[1][0], torch.tensor([-1.5]))  # g_k - alpha (theta_k - theta)


def test_scaffold_control_variates() -> None:
    s = Scaffold()
    g = [torch.zeros(1)]
    s.setup(g, 2)
    out = s.aggregate(g, [[torch.tensor([-1.0])], [torch.tensor([-3.0])]], [1, 1], [2, 2], 0.5)
    # c_k+ = 0 - 0 + (0 - theta_k) / (2 * 0.5) = -theta_k; c = mean(c_k+) = 2
    assert torch.allclose(out[0], torch.tensor([-2.0]))
    assert torch.allclose(s.c[0], torch.tensor([2.0]))
    assert torch.allclose(s.correction(0, [torch.zeros(1)], g)[0], torch.tensor([1.0]))  # c - c_0


@pytest.fixture(scope="module")
def silos() -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    keep = np.isin(train.labels, [0, 1, 2])
    x, y = train.images[keep][::4], train.labels[keep][::4]
    parts = [(x[p], y[p]) for p in silo(y, 3)]
    tkeep = np.isin(test.labels, [0, 1, 2])
    return parts, (test.images[tkeep], test.labels[tkeep])


@pytest.mark.parametrize("strategy", default_strategies(), ids=lambda s: s.name)
def test_simulation_runs(strategy: Strategy, silos) -> None:
    out = run_federated(strategy, silos[0], silos[1], 3, CFG, rounds=2, local_epochs=1, seed=0)
    assert out["rounds"] == 2 and out["local_epochs"] == 1
    assert 0.0 <= out["accuracy"] <= 1.0 and 0.0 <= out["auroc"] <= 1.0


def test_fedprox_with_zero_mu_is_fedavg(silos) -> None:
    a = run_federated(FedAvg(), silos[0], silos[1], 3, CFG, rounds=2, local_epochs=1, seed=0)
    b = run_federated(FedProx(mu=0.0), silos[0], silos[1], 3, CFG, rounds=2, local_epochs=1, seed=0)
    assert a["accuracy"] == b["accuracy"] and a["auroc"] == b["auroc"]
