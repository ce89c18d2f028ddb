"""SCAFFOLD: Stochastic Controlled Averaging [Karimireddy et al., ICML 2020, arXiv 1910.06378].

Server control variate c and client control variates c_k (all initially 0) estimate the update direction
of the whole federation and of each client; local steps correct a client's gradient by their difference:

    theta <- theta - lr (grad L_k(theta) - c_k + c)

After K local steps, with "option II" of the paper:

    c_k+ = c_k - c + (theta^t - theta_k) / (K lr)     (K lr: the summed effective step size with momentum)
    theta^{t+1} = theta^t + (1 / m) sum_k (theta_k - theta^t)        (global step size 1)
    c <- c + (1 / m) sum_k (c_k+ - c_k)                             (full participation: m = N)
"""

from __future__ import annotations

import torch

from harness.baselines.simulate import Params, Strategy, weighted_mean


class Scaffold(Strategy):
    name = "scaffold"
    uploads_per_round = 2  # theta_k and the change of c_k

    def setup(self, global_params: Params, n_clients: int) -> None:
        self.c = [torch.zeros_like(p) for p in global_params]
        self.c_k = [[torch.zeros_like(p) for p in global_params] for _ in range(n_clients)]

    def correction(self, client: int, params: Params, global_params: Params) -> Params:
        return [c - ck for c, ck in zip(self.c, self.c_k[client], strict=True)]

    def aggregate(
        self, global_params: Params, client_params: list[Params], sizes: list[int], step_sums: list[float]
    ) -> Params:
        m = len(client_params)
        deltas = []
        for k, theta_k in enumerate(client_params):
            scale = 1.0 / step_sums[k]
            new_ck = [
                ck - c + scale * (g - t)
                for ck, c, g, t in zip(self.c_k[k], self.c, global_params, theta_k, strict=True)
            ]
            deltas.append([n - o for n, o in zip(new_ck, self.c_k[k], strict=True)])
            self.c_k[k] = new_ck
        self.c = [c + d for c, d in zip(self.c, weighted_mean(deltas, [1.0] * m), strict=True)]
        return weighted_mean(client_params, [1.0] * m)  # theta^t + mean(theta_k - theta^t)
