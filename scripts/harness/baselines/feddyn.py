"""FedDyn: Federated Learning Based on Dynamic Regularization [Acar et al., ICLR 2021, arXiv 2111.04263].

Client k keeps a state g_k (initially 0) and minimises a dynamically regularised objective,

    L_k(theta) - <g_k, theta> + (alpha / 2) ||theta - theta^t||^2
        =>  gradient  grad L_k(theta) - g_k + alpha (theta - theta^t)

then updates its state with its result theta_k:  g_k <- g_k - alpha (theta_k - theta^t).
The server keeps h (initially 0) and, over all m clients (full participation here):

    h <- h - (alpha / m) sum_k (theta_k - theta^t)
    theta^{t+1} = (1 / m) sum_k theta_k - h / alpha

The paper's baseline setting is alpha = 0.001.
"""

from __future__ import annotations

import torch

from harness.baselines.simulate import Params, Strategy, weighted_mean


class FedDyn(Strategy):
    name = "feddyn"

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def setup(self, global_params: Params, n_clients: int) -> None:
        self.g = [[torch.zeros_like(p) for p in global_params] for _ in range(n_clients)]  # per-client state
        self.h = [torch.zeros_like(p) for p in global_params]  # server state

    def correction(self, client: int, params: Params, global_params: Params) -> Params:
        return [-gk + self.alpha * (p - g) for gk, p, g in zip(self.g[client], params, global_params, strict=True)]

    def aggregate(
        self, global_params: Params, client_params: list[Params], sizes: list[int], step_sums: list[float]
    ) -> Params:
        m = len(client_params)
        for k, theta_k in enumerate(client_params):
            self.g[k] = [gk - self.alpha * (t - g) for gk, t, g in zip(self.g[k], theta_k, global_params, strict=True)]
        drift = weighted_mean(
            [[t - g for t, g in zip(tk, global_params, strict=True)] for tk in client_params], [1.0] * m
        )
        self.h = [h - self.alpha * d for h, d in zip(self.h, drift, strict=True)]
        mean = weighted_mean(client_params, [1.0] * m)
        return [p - h / self.alpha for p, h in zip(mean, self.h, strict=True)]
