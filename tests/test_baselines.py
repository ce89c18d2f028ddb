"""Baselines: update math on hand examples, and a short simulation of each on one-class silos."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ffnode.data import load_dataset
from ffnode.profiles import PROFILES
from harness.baselines import TUNED, FedAvg, FedProx, FLSettings, Strategy, make_strategy, run_federated
from harness.baselines.feddyn import FedDyn
from harness.baselines.scaffold import Scaffold
from harness.baselines.simulate import client_update, fl_model, plateau_round
from harness.partition import silo

CFG = PROFILES["tiny"].expert


def test_fedavg_weights_by_data_size() -> None:
    out = Strategy().aggregate(
        [torch.zeros(2)], [[torch.tensor([1.0, 0.0])], [torch.tensor([4.0, 3.0])]], [2, 1], [0.1, 0.1]
    )
    assert torch.allclose(out[0], torch.tensor([2.0, 1.0]))


def test_feddyn_server_update() -> None:
    s = FedDyn(alpha=0.5)
    g = [torch.zeros(1)]
    s.setup(g, 2)
    out = s.aggregate(g, [[torch.tensor([1.0])], [torch.tensor([3.0])]], [1, 1], [0.1, 0.1])
    # h = -0.5 * mean(1, 3) = -1; theta = mean - h / alpha = 2 + 2 = 4
    assert torch.allclose(out[0], torch.tensor([4.0]))
    assert torch.allclose(s.g[1][0], torch.tensor([-1.5]))  # g_k - alpha (theta_k - theta)


def test_scaffold_control_variates() -> None:
    s = Scaffold()
    g = [torch.zeros(1)]
    s.setup(g, 2)
    out = s.aggregate(g, [[torch.tensor([-1.0])], [torch.tensor([-3.0])]], [1, 1], [1.0, 1.0])
    # c_k+ = 0 - 0 + (0 - theta_k) / 1.0 (summed step size) = -theta_k; c = mean(c_k+) = 2
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


SHORT = FLSettings(rounds=2)


@pytest.mark.parametrize("name", list(TUNED))
def test_simulation_runs(name: str, silos) -> None:
    param, settings = TUNED[name]
    out = run_federated(make_strategy(name, param), silos[0], silos[1], 3, CFG, replace(settings, rounds=2), seed=0)
    assert out["rounds"] == 2 and [c["round"] for c in out["curve"]] == [1, 2]
    assert 0.0 <= out["accuracy"] <= 1.0 and 0.0 <= out["auroc"] <= 1.0
    per_round = out["bytes_per_round_per_site"]
    assert out["curve"][-1]["bytes_sent_per_site"] == out["bytes_sent_per_site"] == 2 * per_round > 0


def test_fedprox_with_zero_mu_is_fedavg(silos) -> None:
    a = run_federated(FedAvg(), silos[0], silos[1], 3, CFG, SHORT, seed=0)
    b = run_federated(FedProx(mu=0.0), silos[0], silos[1], 3, CFG, SHORT, seed=0)
    assert a["curve"] == b["curve"]


def test_run_draws_nothing_from_the_global_random_state(silos) -> None:
    """Every draw comes from the per-client streams (seed, round, client), which is what lets Flower's engine,
    training clients in its own order in other processes, reproduce the run (tests/test_flower.py)."""
    parts = silos[0]
    torch.manual_seed(1)
    a = run_federated(FedAvg(), parts, silos[1], 3, CFG, SHORT, seed=0)
    torch.manual_seed(2)
    assert run_federated(FedAvg(), parts, silos[1], 3, CFG, SHORT, seed=0)["curve"] == a["curve"]
    assert run_federated(FedAvg(), parts, silos[1], 3, CFG, SHORT, seed=1)["curve"] != a["curve"]


def test_step_sum_is_the_displacement_under_a_constant_gradient() -> None:
    """SCAFFOLD divides a client's drift by the summed effective step size; with momentum that sum must be
    what SGD actually moved a parameter whose gradient is 1 throughout."""

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(images), 2) + self.w * 0  # the loss ignores w: its gradient is the correction

    model = Linear()
    images, labels = torch.zeros(10, 1, 1, 1), torch.zeros(10, dtype=torch.long)
    settings = FLSettings(lr=0.1, momentum=0.9, local_epochs=3)
    cfg = replace(CFG, batch_size=4)  # 3 steps per epoch, 9 in all
    step_sum = client_update(model, images, labels, cfg, settings, torch.Generator(), lambda p: [torch.ones(1)])
    assert step_sum == pytest.approx(sum(0.1 * (1 - 0.9**j) / (1 - 0.9) for j in range(1, 10)))
    assert -model.w.item() == pytest.approx(step_sum, rel=1e-5)


@pytest.mark.parametrize("model", ["cnn", "resnet-group"])
def test_weight_averaged_models_keep_no_batch_statistics(model: str) -> None:
    net = fl_model(CFG, 3, (8, 8, 1), model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert not [n for n, b in net.named_buffers() if b.dtype.is_floating_point]


def test_plateau_is_where_the_running_mean_stops_rising() -> None:
    curve = [{"round": r + 1, "accuracy": a} for r, a in enumerate([0.1, 0.3, 0.5, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8])]
    assert plateau_round(curve) == 9  # the 5-round mean only reaches the best at the end
    flat = curve + [{"round": 10 + r, "accuracy": 0.8} for r in range(10)]
    assert plateau_round(flat) == 9  # and stays there


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="model must be one of"):
        FLSettings(model="vgg")
    with pytest.raises(ValueError, match="lr > 0"):
        FLSettings(lr=0.0)
