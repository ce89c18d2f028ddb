"""Classifier-federation baselines the paper compares against, simulated in one process.

Each algorithm is a `Strategy` in its own file; `run_federated(strategy, ..., settings)` simulates it and
`flower.py` runs FedAvg and FedProx through Flower's own strategies and simulation engine to check it.
`tuned()` gives each algorithm with the settings that won the digits-silo sweep (scripts/baseline_sweep.py),
over every classifier ("best") or on the CNN alone ("cnn", for the larger datasets).
"""

from harness.baselines.fedavg import FedAvg
from harness.baselines.feddyn import FedDyn
from harness.baselines.fedprox import FedProx
from harness.baselines.scaffold import Scaffold
from harness.baselines.simulate import FLSettings, Strategy, run_federated

# The winners of scripts/baseline_sweep.py on digits (10 one-class silos, 50 rounds, judged on the mean accuracy
# of the last 5 rounds), algorithm -> (its own hyper-parameter, settings), in two tunings: "best" over every
# classifier swept, and "cnn" over the CNN alone, at a fraction of the compute (docs/results.md).
TUNED: dict[str, dict[str, tuple[float | None, FLSettings]]] = {
    "best": {
        "fedavg": (None, FLSettings(model="resnet-batch", lr=0.1, momentum=0.9, local_epochs=5)),
        "fedprox": (0.01, FLSettings(model="resnet-batch", lr=0.1, momentum=0.9, local_epochs=5)),
        "feddyn": (0.01, FLSettings(model="resnet-batch", lr=0.1, momentum=0.9, local_epochs=5)),
        "scaffold": (None, FLSettings(model="resnet-batch", lr=0.1, momentum=0.9, local_epochs=5)),
    },
    "cnn": {
        "fedavg": (None, FLSettings(model="cnn", lr=0.1, momentum=0.9, local_epochs=1)),
        "fedprox": (0.01, FLSettings(model="cnn", lr=0.1, momentum=0.9, local_epochs=1)),
        "feddyn": (0.01, FLSettings(model="cnn", lr=0.1, momentum=0.9, local_epochs=1)),
        "scaffold": (None, FLSettings(model="cnn", lr=0.1, momentum=0.9, local_epochs=1)),
    },
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


def tuned(tuning: str = "best") -> list[tuple[Strategy, FLSettings]]:
    """Every baseline, freshly made, with its settings in `tuning` (a key of TUNED)."""
    if tuning not in TUNED:
        raise ValueError(f"unknown tuning {tuning!r}: use {' or '.join(TUNED)}")
    return [(make_strategy(name, param), settings) for name, (param, settings) in TUNED[tuning].items()]


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
