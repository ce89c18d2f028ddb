"""Classifier-federation baselines the paper compares against, simulated in one process."""

from ffnode.baselines.fedavg import run_fedavg
from ffnode.baselines.feddyn import run_feddyn
from ffnode.baselines.fedprox import run_fedprox
from ffnode.baselines.scaffold import run_scaffold

__all__ = ["run_fedavg", "run_feddyn", "run_fedprox", "run_scaffold"]
