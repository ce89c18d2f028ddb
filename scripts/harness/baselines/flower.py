"""FedAvg and FedProx through Flower's own strategies and simulation engine (`pip install ffnode[flower]`).

The check that the in-process baselines are the algorithms a reader would get from Flower: the same
classifier, the same client training (`client_update`, the same per-client random streams) and the same
evaluation, but the rounds driven by `flwr.serverapp.strategy.FedAvg` / `FedProx` and the clients run as
Flower ClientApps on its Ray backend. Flower's FedProx sends `proximal-mu` and leaves the proximal term to
the client; ours adds its gradient mu (theta - theta^t), as the paper states it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

import ffnode
import harness
from ffnode.expert.config import ExpertConfig
from harness.baselines import fedprox
from harness.baselines.simulate import FLSettings, Split, client_generator, client_update, evaluate, fl_model, summarise
from harness.baselines.simulate import upload_bytes as model_bytes

FLOWER_STRATEGIES = ("fedavg", "fedprox")


def run_flower(
    name: str,
    parts: list[Split],
    test: Split,
    num_classes: int,
    cfg: ExpertConfig,
    settings: FLSettings,
    *,
    seed: int,
    mu: float = 0.01,
) -> dict:
    """Run `name` (fedavg | fedprox) for `settings.rounds` rounds in Flower's simulation; same report as ours."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg, FedProx
    from flwr.simulation import run_simulation

    if name not in FLOWER_STRATEGIES:
        raise ValueError(f"Flower runs {' and '.join(FLOWER_STRATEGIES)} here, not {name!r}")
    t0 = time.perf_counter()
    image_shape = parts[0][0].shape[1:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        initial = fl_model(cfg, num_classes, image_shape, settings.model)
    curve: list[dict] = []
    message = model_bytes(initial)
    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        k = int(context.node_config["partition-id"])
        config = msg.content["config"]
        model = fl_model(cfg, num_classes, image_shape, settings.model)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        global_params = [p.detach().clone() for p in model.parameters()]
        prox = float(config.get("proximal-mu", 0.0))

        def correction(params: list[torch.Tensor]) -> list[torch.Tensor] | None:  # our FedProx's own term
            return fedprox.FedProx(prox).correction(k, params, global_params) if prox else None

        x, y = (torch.tensor(a) for a in parts[k])  # copies: Ray hands the closure's arrays over read-only
        gen = client_generator(seed, int(config["server-round"]), k)
        client_update(model, x, y.long(), cfg, settings, gen, correction)
        content = RecordDict(
            {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": len(y)})}
        )
        return Message(content=content, reply_to=msg)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        n = len(parts)
        common = {"fraction_evaluate": 0.0, "min_train_nodes": n, "min_available_nodes": n}
        strategy = FedProx(proximal_mu=mu, **common) if name == "fedprox" else FedAvg(**common)
        model = fl_model(cfg, num_classes, image_shape, settings.model)

        def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            if server_round > 0:  # round 0 is the initial model, which ours does not report either
                model.load_state_dict(arrays.to_torch_state_dict())
                acc, auroc = evaluate(model, test)
                curve.append(
                    {
                        "round": server_round,
                        "accuracy": acc,
                        "auroc": auroc,
                        "bytes_sent_per_site": message * server_round,
                    }
                )
            return MetricRecord({})

        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(initial.state_dict()),
            num_rounds=settings.rounds,
            train_config=ConfigRecord({}),
            evaluate_fn=central,
        )

    # Ray's workers are fresh processes: they must import ffnode and harness as this process does
    roots = {str(Path(m.__file__).resolve().parents[1]) for m in (ffnode, harness)}
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, (saved or "").split(os.pathsep))])
    logging.getLogger("flwr").setLevel(logging.WARNING)
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=len(parts),
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    if len(curve) != settings.rounds:
        raise RuntimeError(f"Flower's simulation ended after {len(curve)} of {settings.rounds} rounds (see its log)")
    out = summarise(name, settings, curve, message, time.perf_counter() - t0)
    return out | {"engine": "flower"}
