"""Experts: bitwise-repeatable training (the daemon's unlearning proof relies on it), shapes, learning."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_weights
from safetensors.torch import save as save_weights

from ffnode.data import load_dataset
from ffnode.expert.config import ExpertConfig
from ffnode.expert.resnet import build_expert, expert_from_weights
from ffnode.expert.train import expert_log_probs, train_expert
from ffnode.profiles import PROFILES, fit_warning, profile_for
from harness.metrics import accuracy, macro_auroc, spread

CFG = PROFILES["tiny"].expert


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8), rng.integers(0, 3, 40)


def test_config_round_trip() -> None:
    cfg = PROFILES["gpu"].expert
    assert ExpertConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg.to_dict()["blocks"], list)
    with pytest.raises(ValueError, match="unknown ExpertConfig fields"):
        ExpertConfig.from_dict({"depth": 3})


def test_training_is_bitwise_deterministic(data: tuple[np.ndarray, np.ndarray]) -> None:
    a, summary = train_expert(*data, 3, CFG, seed=1)
    b, _ = train_expert(*data, 3, CFG, seed=1)
    c, _ = train_expert(*data, 3, CFG, seed=2)
    assert save_weights(a) == save_weights(b)  # the bytes the daemon compares
    assert save_weights(a) != save_weights(c)
    assert summary["n_train"] == 40 and summary["steps"] == CFG.epochs * 2


def test_max_images_caps_epochs_never_below_one(data: tuple[np.ndarray, np.ndarray]) -> None:
    cfg = ExpertConfig(width=8, blocks=(1,), epochs=5, batch_size=32)
    for max_images, epochs in [(0, 5), (1_000, 5), (120, 3), (79, 1), (1, 1)]:
        _, summary = train_expert(*data, 3, dataclasses.replace(cfg, max_images=max_images), seed=0)
        assert (summary["epochs"], summary["steps"]) == (epochs, epochs * 2), max_images


def test_a_profile_meets_data_it_was_not_sized_for() -> None:
    # a digits site (~144 real images + 9 classes of synthetic ones, x 8 epochs) stays under the default budget:
    # its figures are as measured
    digits_site = 144 + 9 * PROFILES["default"].synth_per_class
    assert PROFILES["default"].expert.epochs * digits_site <= profile_for("default", (8, 8, 1)).expert.max_images
    # a BloodMNIST silo site (~5,000 x 15) and its centralised bound (~12,000 x 15) stay under the cpu one
    assert PROFILES["cpu"].expert.epochs * 12_000 <= profile_for("cpu", (28, 28, 3)).expert.max_images
    warning = fit_warning("default", (28, 28, 1))
    assert warning is not None and "12.2x the pixels" in warning and "profile 'cpu'" in warning
    assert fit_warning("default", (8, 8, 1)) is None and fit_warning("cpu", (28, 28, 1)) is None
    assert "profile 'default'" in (fit_warning("cpu", (8, 8, 1)) or "")


def test_global_rng_does_not_leak_in(data: tuple[np.ndarray, np.ndarray]) -> None:
    torch.manual_seed(123)
    a, _ = train_expert(*data, 3, CFG, seed=1)
    torch.manual_seed(456)
    b, _ = train_expert(*data, 3, CFG, seed=1)
    assert save_weights(a) == save_weights(b)


def test_loading_an_expert_draws_nothing_from_the_global_rng(data: tuple[np.ndarray, np.ndarray]) -> None:
    """A query loads experts while a training may run in another thread: the load must leave torch's RNG as is."""
    weights, _ = train_expert(*data, 3, CFG, seed=1)
    blob = save_weights(weights)
    before = torch.random.get_rng_state()
    model = expert_from_weights(load_weights(blob), CFG, 3, (8, 8, 1))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert save_weights(model.state_dict()) == blob  # and it holds exactly the published weights
    half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    with pytest.raises(ValueError, match="float16, not torch.float32"):  # a peer's fp16 file: refused, not voting
        expert_from_weights(half, CFG, 3, (8, 8, 1))


def test_log_probs_shape_and_normalisation(data: tuple[np.ndarray, np.ndarray]) -> None:
    weights, _ = train_expert(*data, 3, CFG, seed=1)
    model = expert_from_weights(load_weights(save_weights(weights)), CFG, 3, (8, 8, 1))
    lp = expert_log_probs(model, data[0], batch_size=16)
    assert lp.shape == (40, 3)
    assert torch.allclose(lp.exp().sum(1), torch.ones(40), atol=1e-5)
    with pytest.raises(ValueError, match="expects images of shape"):
        expert_log_probs(model, np.zeros((2, 9, 9, 1), np.uint8))


def test_bad_labels_are_rejected(data: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        train_expert(data[0], data[1], 2, CFG, seed=0)


def test_expert_learns_digits() -> None:
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    cfg = ExpertConfig(width=16, blocks=(1, 1), epochs=4, batch_size=32)
    weights, _ = train_expert(train.images, train.labels, 10, cfg, seed=0)
    model = build_expert(cfg, 10, (8, 8, 1))
    model.load_state_dict(weights)
    probs = expert_log_probs(model, test.images).exp().numpy()
    assert accuracy(probs.argmax(1), test.labels) > 0.85
    assert macro_auroc(probs, test.labels) > 0.95


def test_macro_auroc_hand_example() -> None:
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.1, 0.9, 0.0]])
    labels = np.array([0, 1, 1, 0])
    # class 0 scores: positives {0.9, 0.1}, negatives {0.2, 0.6}: 2 of 4 pairs ordered -> 0.5; class 1 likewise
    assert macro_auroc(probs, labels) == pytest.approx(0.5)  # class 2 has no positives and is left out
    assert accuracy(probs.argmax(1), labels) == 0.5


def test_spread_by_hand() -> None:
    # two 1-pixel images at 0 and 10: per-pixel std 5, each one's nearest other 10 away
    assert spread(np.array([[[[0]]], [[[10]]]], np.uint8)) == {"pixel_std": 5.0, "nn_rms": 10.0}
    same = np.repeat(np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1), 30, 0)
    assert spread(same) == {"pixel_std": 0.0, "nn_rms": 0.0}  # a collapsed factory: no variety at all
    varied = np.random.default_rng(0).integers(0, 256, (200, 4, 4, 1)).astype(np.uint8)
    assert spread(varied, n=20)["nn_rms"] > spread(varied)["nn_rms"]  # fewer images, farther apart
