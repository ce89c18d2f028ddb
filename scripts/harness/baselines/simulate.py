"""The simulation loop shared by the classifier-federation baselines (FedAvg, FedProx, FedDyn, SCAFFOLD).

Those algorithms differ in two places only, so each is a `Strategy` overriding one or both hooks:

- `correction`: a term added to each parameter's gradient during a client's local SGD steps
  (FedProx: proximal pull; FedDyn: dynamic regulariser; SCAFFOLD: control variates);
- `aggregate`: how the server turns the clients' parameters into the next global parameters.

Everything else lives here once: the classifier, the client's local SGD (`client_update`, which the Flower
run in `flower.py` calls too), the server's averaging of BatchNorm statistics, and the evaluation after
every round. The classifier (`FLSettings.model`) is the expert's ResNet, the same ResNet with GroupNorm, or
the FedAvg paper's normalisation-free CNN: BatchNorm's running statistics mean nothing when every client
holds one class, so the weight-averaging methods are given the classifier they do best with
(scripts/baseline_sweep.py). Local SGD uses momentum, reset every round as a fresh client optimiser would;
every client takes part in every round.

Every random draw of client k in round r comes from its own generator, seeded by (seed, r, k), so a run
does not depend on the order in which clients train: Flower's engine, which trains them in parallel,
reproduces the in-process run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ffnode.expert.config import ExpertConfig
from ffnode.expert.resnet import build_expert
from ffnode.expert.train import augment
from ffnode.poe import poe_predict
from harness.metrics import accuracy, macro_auroc

Params = list[torch.Tensor]
Split = tuple[np.ndarray, np.ndarray]  # (images, labels)
MODELS = ("cnn", "resnet-group", "resnet-batch")
GROUP_SIZE = 8  # channels per GroupNorm group (16 channels: 2 groups, as in Hsieh et al. 2020's ResNet)


@dataclass(frozen=True)
class FLSettings:
    """A baseline run's classifier, budget and local optimiser: what scripts/baseline_sweep.py varies.

    The defaults are Flower's tutorial recipe: the CNN, SGD lr 0.05 with momentum 0.9, no augmentation or
    weight decay, 1 local epoch, 50 rounds; the sweep's winners are harness.baselines.TUNED.
    """

    model: str = "cnn"  # cnn | resnet-group (the expert's ResNet, GroupNorm) | resnet-batch (the expert itself)
    rounds: int = 50
    local_epochs: int = 1
    lr: float = 0.05
    momentum: float = 0.9
    augment: bool = False  # the expert's random shifts and flips (ExpertConfig.shift, .hflip)
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.rounds < 1 or self.local_epochs < 1 or self.lr <= 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"need rounds, local_epochs >= 1, lr > 0 and 0 <= momentum < 1, got {self}")

    def label(self) -> str:
        epochs = f"{self.local_epochs} local epoch{'s' if self.local_epochs != 1 else ''}"
        recipe = f", augmented, wd {self.weight_decay:g}" if self.augment else f", wd {self.weight_decay:g}"
        return f"{self.model}, lr {self.lr:g}, momentum {self.momentum:g}{recipe}, {self.rounds} rounds x {epochs}"


def weighted_mean(client_params: list[Params], weights: list[float]) -> Params:
    """sum_k w_k theta_k / sum_k w_k, tensor by tensor."""
    total = float(sum(weights))
    return [
        sum(w * p[i] for w, p in zip(weights, client_params, strict=True)) / total for i in range(len(client_params[0]))
    ]


class Strategy:
    """FedAvg's hooks; the other baselines subclass and override."""

    name = "fedavg"
    uploads_per_round = 1  # model-sized messages a client sends per round (SCAFFOLD adds its control variate)

    def setup(self, global_params: Params, n_clients: int) -> None:
        """Allocate per-client and server state before round 1 (FedAvg keeps none)."""

    def correction(self, client: int, params: Params, global_params: Params) -> Params | None:
        """Added to the gradients of `params` before every local step; None adds nothing."""
        return None

    def aggregate(
        self, global_params: Params, client_params: list[Params], sizes: list[int], step_sums: list[float]
    ) -> Params:
        """Next global parameters from the clients' (FedAvg: mean weighted by client data size).

        `step_sums[k]` is client k's summed effective step size this round: K * lr for K plain SGD steps.
        """
        return weighted_mean(client_params, [float(s) for s in sizes])


class CNN(nn.Module):
    """The FedAvg paper's MNIST CNN (McMahan et al. 2017) scaled down: two 3x3 conv + 2x2 max-pool stages, then
    a 64-unit hidden layer; no normalisation at all, so averaging its weights averages everything it learned.
    """

    def __init__(self, num_classes: int, image_shape: tuple[int, ...], width: int) -> None:
        super().__init__()
        h, w, c = image_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), 64), nn.ReLU())
        self.out = nn.Linear(64, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) pixel values 0..255 -> logits, normalised as the expert does."""
        return self.out(self.head(self.features(images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0))))


def fl_model(cfg: ExpertConfig, num_classes: int, image_shape: tuple[int, ...], model: str) -> nn.Module:
    """The baselines' classifier: the CNN, or the expert's ResNet (width from `cfg`) with BatchNorm or GroupNorm."""
    if model == "cnn":
        return CNN(num_classes, image_shape, cfg.width)
    net = build_expert(cfg, num_classes, tuple(image_shape))
    if model == "resnet-group":
        for module in list(net.modules()):
            for name, child in module.named_children():
                if isinstance(child, nn.BatchNorm2d):
                    setattr(module, name, nn.GroupNorm(max(1, child.num_features // GROUP_SIZE), child.num_features))
    return net


def upload_bytes(model: nn.Module) -> int:
    """Bytes of one model-sized message: every float parameter and buffer as float32, as Flower sends them."""
    return sum(t.numel() * 4 for t in model.state_dict().values() if t.dtype.is_floating_point)


def client_generator(seed: int, rnd: int, client: int) -> torch.Generator:
    """Client `client`'s random stream in round `rnd` (1-based), independent of the other clients."""
    return torch.Generator().manual_seed(seed * 1_000_003 + rnd * 1_009 + client)


def client_update(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: ExpertConfig,
    settings: FLSettings,
    generator: torch.Generator,
    correction: Any = None,
) -> float:
    """Local SGD with momentum from the model's current parameters; returns the summed effective step size.

    `correction(params) -> Params | None` adds a strategy's term to the gradients before every step. With
    momentum beta, a constant gradient moves step j by lr (1 - beta^j) / (1 - beta); SCAFFOLD's control
    variate divides the client's drift by the sum of those (K lr without momentum).
    """
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    model.train()
    step_sum, j, beta = 0.0, 0, settings.momentum
    for _ in range(settings.local_epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            batch = images[idx].float()
            loss = F.cross_entropy(model(augment(batch, cfg, generator) if settings.augment else batch), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if correction is not None and (extra := correction([p.detach() for p in params])) is not None:
                for p, e in zip(params, extra, strict=True):
                    p.grad.add_(e)
            optimizer.step()
            j += 1
            step_sum += settings.lr * (1 - beta**j) / (1 - beta) if beta else settings.lr
    return step_sum


def evaluate(model: nn.Module, test: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    """Accuracy and macro AUROC of one classifier on the test split (PoE of one expert is its softmax)."""
    preds, probs = poe_predict([model], test[0])
    return accuracy(preds, test[1]), macro_auroc(probs, test[1])


def average_buffers(model: nn.Module, client_buffers: list[dict[str, torch.Tensor]], sizes: list[int]) -> dict:
    """BatchNorm running statistics are not trained, so every algorithm averages them by data size."""
    out = {}
    for name, buffer in model.named_buffers():
        if buffer.dtype.is_floating_point:
            out[name] = weighted_mean([[b[name]] for b in client_buffers], [float(s) for s in sizes])[0]
        else:
            out[name] = max(b[name] for b in client_buffers)
    return out


def plateau_round(curve: list[dict], tolerance: float = 0.01) -> int:
    """The first evaluated round from which the 5-round running mean stays within `tolerance` of its best."""
    acc = np.array([c["accuracy"] for c in curve])
    smooth = np.array([acc[max(0, i - 4) : i + 1].mean() for i in range(len(acc))])
    below = np.flatnonzero(smooth < smooth.max() - tolerance)
    first = 0 if len(below) == 0 else int(below[-1]) + 1
    return int(curve[min(first, len(curve) - 1)]["round"])


def summarise(name: str, settings: FLSettings, curve: list[dict], message_bytes: int, seconds: float) -> dict:
    """The report entry of one run: final figures, the best round, the plateau, and the whole curve."""
    best = max(curve, key=lambda c: c["accuracy"])
    return {
        "algorithm": name,
        "accuracy": curve[-1]["accuracy"],
        "auroc": curve[-1]["auroc"],
        "best_accuracy": best["accuracy"],
        "best_round": best["round"],
        "plateau_round": plateau_round(curve),
        "rounds": settings.rounds,
        "local_epochs": settings.local_epochs,
        "settings": asdict(settings),
        "bytes_per_round_per_site": message_bytes,
        "bytes_sent_per_site": message_bytes * settings.rounds,
        "seconds": round(seconds, 1),
        "curve": curve,
    }


def run_federated(
    strategy: Strategy,
    parts: list[Split],
    test: Split,
    num_classes: int,
    cfg: ExpertConfig,
    settings: FLSettings,
    *,
    seed: int,
) -> dict:
    """Simulate full-participation federated training, evaluating the global model after every round."""
    t0 = time.perf_counter()
    image_shape = parts[0][0].shape[1:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        global_model = fl_model(cfg, num_classes, image_shape, settings.model)
        local = fl_model(cfg, num_classes, image_shape, settings.model)
    clients = [(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))) for x, y in parts]
    sizes = [len(y) for _, y in parts]
    param_names = [name for name, _ in global_model.named_parameters()]
    global_params = [p.detach().clone() for p in global_model.parameters()]
    strategy.setup(global_params, len(clients))
    message = upload_bytes(global_model) * strategy.uploads_per_round

    curve: list[dict] = []
    for rnd in range(1, settings.rounds + 1):
        client_params: list[Params] = []
        client_buffers: list[dict[str, torch.Tensor]] = []
        step_sums: list[float] = []
        for k, (x, y) in enumerate(clients):
            local.load_state_dict(global_model.state_dict())
            gp = global_params

            def correction(params: Params, k: int = k, gp: Params = gp) -> Params | None:
                return strategy.correction(k, params, gp)

            step_sums.append(client_update(local, x, y, cfg, settings, client_generator(seed, rnd, k), correction))
            client_params.append([p.detach().clone() for p in local.parameters()])
            client_buffers.append({n: b.detach().clone() for n, b in local.named_buffers()})
        global_params = strategy.aggregate(global_params, client_params, sizes, step_sums)
        state = dict(zip(param_names, global_params, strict=True))
        global_model.load_state_dict(state | average_buffers(global_model, client_buffers, sizes))
        acc, auroc = evaluate(global_model, test)
        curve.append({"round": rnd, "accuracy": acc, "auroc": auroc, "bytes_sent_per_site": message * rnd})
    return summarise(strategy.name, settings, curve, message, time.perf_counter() - t0)
