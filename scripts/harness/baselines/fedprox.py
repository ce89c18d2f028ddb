"""FedProx [Li et al., 2020, arXiv 1812.06127].

FedAvg with a proximal term in each client's local objective that limits drift from the global parameters
theta^t of the round:

    min_theta  L_k(theta) + (mu / 2) ||theta - theta^t||^2     =>  gradient  grad L_k(theta) + mu (theta - theta^t)

Aggregation is FedAvg's data-size-weighted mean. The paper's baseline setting is mu = 0.01.
"""

from __future__ import annotations

from harness.baselines.simulate import Params, Strategy


class FedProx(Strategy):
    name = "fedprox"

    def __init__(self, mu: float) -> None:
        self.mu = mu

    def correction(self, client: int, params: Params, global_params: Params) -> Params:
        return [self.mu * (p - g) for p, g in zip(params, global_params, strict=True)]
