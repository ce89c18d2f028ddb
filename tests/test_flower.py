"""Flower's own FedProx strategy and simulation engine reproduce the in-process baseline round for round."""

from __future__ import annotations

import numpy as np
import pytest

from ffnode.data import load_dataset
from ffnode.profiles import PROFILES
from harness.baselines import FedProx, FLSettings, run_federated
from harness.partition import silo

pytest.importorskip("flwr", reason="Flower is the optional extra ffnode[flower]; scripts/bootstrap.sh installs it")
from harness.baselines.flower import run_flower  # noqa: E402  (needs flwr)


def test_flower_fedprox_matches_the_in_process_run() -> None:
    """FedProx's server side is FedAvg's, so this one run checks both; mu > 0 checks Flower's proximal path."""
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    keep = np.isin(train.labels, [0, 1, 2])
    x, y = train.images[keep][::2], train.labels[keep][::2]
    parts = [(x[p], y[p]) for p in silo(y, 3)]
    tkeep = np.isin(test.labels, [0, 1, 2])
    held_out = (test.images[tkeep], test.labels[tkeep])
    cfg, settings = PROFILES["tiny"].expert, FLSettings(rounds=2)
    ours = run_federated(FedProx(mu=0.1), parts, held_out, 3, cfg, settings, seed=0)
    flower = run_flower("fedprox", parts, held_out, 3, cfg, settings, seed=0, mu=0.1)
    assert flower["engine"] == "flower" and len(flower["curve"]) == 2
    for a, b in zip(ours["curve"], flower["curve"], strict=True):
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-9)
        assert a["auroc"] == pytest.approx(b["auroc"], abs=1e-6)
    assert ours["bytes_sent_per_site"] == flower["bytes_sent_per_site"]
