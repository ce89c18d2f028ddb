"""The simulation loop shared by the classifier-federation baselines (FedAvg, FedProx, FedDyn, SCAFFOLD).

Those algorithms differ in two places only, so each is a `Strategy` overriding one or both hooks:

- `correction`: a term added to each parameter's gradient during a client's local SGD steps
  (FedProx: proximal pull; FedDyn: dynamic regulariser; SCAFFOLD: control variates);
- `aggregate`: how the server turns the clients' parameters into the next global parameters.

Everything else, the client loop, local SGD, BatchNorm statistics and evaluation, lives here once. The
classifier is the expert's ResNet and augmentation, so the baselines compare like with like. Local SGD has
no momentum (the update math of all four papers is stated for plain SGD) and a constant lr; every client
takes part in every round.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ffnode.expert.resnet import ExpertConfig, build_expert
from ffnode.expert.train import augment
from ffnode.poe import poe_predict
from harness.metrics import accuracy, macro_auroc

Params = list[torch.Tensor]


def weighted_mean(client_params: list[Params], weights: list[float]) -> Params:
    """sum_k w_k theta_k / sum_k w_k, tensor by tensor."""
    total = float(sum(weights))
    return [
        sum(w * p[i] for w, p in zip(weights, client_params, strict=True)) / total for i in range(len(client_params[0]))
    ]


class Strategy:
    """FedAvg's hooks; the other baselines subclass and override."""

    name = "fedavg"

    def setup(self, global_params: Params, n_clients: int) -> None:
        """Allocate per-client and server state before round 1 (FedAvg keeps none)."""

    def correction(self, client: int, params: Params, global_params: Params) -> Params | None:
        """Added to the gradients of `params` before every local step; None adds nothing."""
        return None

    def aggregate(
        self, global_params: Params, client_params: list[Params], sizes: list[int], local_steps: list[int], lr: float
    ) -> Params:
        """Next global parameters from the clients' (FedAvg: mean weighted by client data size)."""
        return weighted_mean(client_params, [float(s) for s in sizes])


def _local_train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: ExpertConfig,
    epochs: int,
    generator: torch.Generator,
    strategy: Strategy,
    client: int,
    global_params: Params,
) -> int:
    """Run `epochs` of plain SGD on one client, applying the strategy's gradient correction; returns steps."""
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    steps = 0
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = F.cross_entropy(model(augment(images[idx].float(), cfg, generator)), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            extra = strategy.correction(client, [p.detach() for p in params], global_params)
            if extra is not None:
                for p, e in zip(params, extra, strict=True):
                    p.grad.add_(e)
            optimizer.step()
            steps += 1
    return steps


def run_federated(
    strategy: Strategy,
    parts: list[tuple[np.ndarray, np.ndarray]],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    cfg: ExpertConfig,
    *,
    rounds: int,
    local_epochs: int,
    seed: int,
) -> dict:
    """Simulate `rounds` of full-participation federated training; evaluate the final global model on `test`."""
    image_shape = parts[0][0].shape[1:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        global_model = build_expert(cfg, num_classes, image_shape)
    generator = torch.Generator().manual_seed(seed)
    clients = [(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))) for x, y in parts]
    sizes = [len(y) for _, y in parts]
    param_names = [name for name, _ in global_model.named_parameters()]
    global_params = [p.detach().clone() for p in global_model.parameters()]
    strategy.setup(global_params, len(clients))
    local = build_expert(cfg, num_classes, image_shape)

    for _ in range(rounds):
        client_params: list[Params] = []
        client_buffers: list[dict[str, torch.Tensor]] = []
        local_steps: list[int] = []
        for k, (x, y) in enumerate(clients):
            local.load_state_dict(global_model.state_dict())
            local_steps.append(_local_train(local, x, y, cfg, local_epochs, generator, strategy, k, global_params))
            client_params.append([p.detach().clone() for p in local.parameters()])
            client_buffers.append({n: b.detach().clone() for n, b in local.named_buffers()})
        global_params = strategy.aggregate(global_params, client_params, sizes, local_steps, cfg.lr)
        # BatchNorm running statistics are not trained, so every algorithm averages them by data size
        state = dict(zip(param_names, global_params, strict=True))
        for name, buffer in global_model.named_buffers():
            if buffer.dtype.is_floating_point:
                state[name] = weighted_mean([[b[name]] for b in client_buffers], [float(s) for s in sizes])[0]
            else:
                state[name] = max(b[name] for b in client_buffers)
        global_model.load_state_dict(state)

    preds, probs = poe_predict([global_model], test[0])  # a single expert: PoE reduces to its softmax
    return {
        "algorithm": strategy.name,
        "accuracy": accuracy(preds, test[1]),
        "auroc": macro_auroc(probs, test[1]),
        "rounds": rounds,
        "local_epochs": local_epochs,
    }
