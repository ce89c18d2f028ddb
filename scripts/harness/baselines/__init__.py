"""Classifier-federation baselines the paper compares against, simulated in one process.

Each algorithm is a `Strategy` in its own file; `run_federated(strategy, ..., settings)` simulates it and
`flower.py` runs FedAvg and FedProx through Flower's own strategies and simulation engine to check it.
`tuned()` gives each algorithm with the settings that won the digits-silo sweep (scripts/baseline_sweep.py).
"""

from harness.baselines.fedavg import FedAvg
from harness.baselines.feddyn import FedDyn
from harness.baselines.fedprox import FedProx
from harness.baselines.scaffold import Scaffold
from harness.baselines.simulate import FLSettings, Strategy, run_federated

# The winners of scripts/baseline_sweep.py on digits (10 one-class silos; judged on the mean accuracy of the
# last 5 of 50 rounds; the CNN beat both ResNets once run to its plateau), algorithm -> (its own
# hyper-parameter, settings), at 200 rounds: past the plateau of every one of them (docs/results.md).
TUNED: dict[str, tuple[float | None, FLSettings]] = {
    "fedavg": (None, FLSettings(model="cnn", lr=0.1, momentum=0.9, local_epochs=1, rounds=200)),
    "fedprox": (0.001, FLSettings(model="cnn", lr=0.1, momentum=0.9, local_epochs=1, rounds=200)),
    "feddyn": (0.1, FLSettings(model="cnn", lr=0.01, momentum=0.9, local_epochs=1, rounds=200)),
    "scaffold": (None, FLSettings(model="cnn", lr=0.05, momentum=0.9, local_epochs=1, rounds=200)),
}


def make_strategy(name: str, param: float | None = None) -> Strategy:
    """A fresh strategy by name; `param` is FedProx's mu or FedDyn's alpha (ignored by the others)."""
    if name == "fedavg":
        return FedAvg()
    if name == "fedprox":
        return FedProx(mu=0.01 if param is None else param)
    if name == "feddyn":
        return FedDyn(alpha=0.001 if param is None else param)
    if name == "scaffold":
        return Scaffold()
    raise ValueError(f"unknown baseline {name!r}: use fedavg, fedprox, feddyn or scaffold")


def tuned() -> list[tuple[Strategy, FLSettings]]:
    """Every baseline, freshly made, with its tuned settings."""
    return [(make_strategy(name, param), settings) for name, (param, settings) in TUNED.items()]


__all__ = [
    "TUNED",
    "FLSettings",
    "FedAvg",
    "FedDyn",
    "FedProx",
    "Scaffold",
    "Strategy",
    "make_strategy",
    "run_federated",
    "tuned",
]
