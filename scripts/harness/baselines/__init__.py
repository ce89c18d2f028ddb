"""Classifier-federation baselines the paper compares against, simulated in one process.

Each algorithm is a `Strategy` in its own file; `run_federated(strategy, ...)` simulates it.
`default_strategies()` gives them with the paper's hyper-parameters (FedProx mu 0.01, FedDyn alpha 0.001).
"""

from harness.baselines.fedavg import FedAvg
from harness.baselines.feddyn import FedDyn
from harness.baselines.fedprox import FedProx
from harness.baselines.scaffold import Scaffold
from harness.baselines.simulate import Strategy, run_federated


def default_strategies() -> list[Strategy]:
    return [FedAvg(), FedProx(mu=0.01), FedDyn(alpha=0.001), Scaffold()]


__all__ = ["FedAvg", "FedDyn", "FedProx", "Scaffold", "Strategy", "default_strategies", "run_federated"]
