"""Federated Averaging (FedAvg) [McMahan et al., 2017, arXiv 1602.05629].

Each round every client k starts from the global parameters theta, runs E local epochs of SGD on its own
data, and the server averages the results weighted by the clients' data sizes n_k:

    theta <- sum_k n_k theta_k / sum_k n_k

With one class per client (silos) every local model drifts to predicting its own class, and the average
of such models is a poor classifier: the failure FederatedFactory is built to avoid.
"""

from __future__ import annotations

from harness.baselines.simulate import Strategy


class FedAvg(Strategy):
    """The plain algorithm: Strategy's defaults are exactly FedAvg; the other baselines override hooks."""

    name = "fedavg"
