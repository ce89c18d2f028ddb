"""Measure the learning pipeline on a silo partition, the way the testnet runs it, and print the figures.

Simulates N single-class (or few-class) nodes in-process: each node trains a factory per local class,
samples the classes it lacks from its peers' factories, trains its expert on real + synthetic images;
then PoE over all experts is evaluated on the test split. Every torch process uses one thread, as each
testnet node does; `--workers 2` runs two nodes at a time on a 2-core machine (timings are per-core seconds).

    python scripts/bench_learning.py --dataset digits --profile default --workers 2
    python scripts/bench_learning.py --dataset digits --profile default --fedavg-rounds 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import torch
from safetensors.torch import load as load_weights
from safetensors.torch import save as save_weights

from ffnode.data import load_dataset
from ffnode.expert.resnet import expert_from_weights
from ffnode.expert.train import train_expert
from ffnode.factory.train import train_factory
from ffnode.poe import poe_predict
from ffnode.profiles import expert_for, profile_for
from ffnode.synth import synthesize
from harness.baselines import FedAvg, run_federated
from harness.metrics import accuracy, macro_auroc
from harness.partition import silo


def _init_worker() -> None:
    torch.set_num_threads(1)  # one thread per node, as in the testnet


def _node_factories(args: argparse.Namespace, node: int, images: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Stage 1 on one node: one factory per local class."""
    profile = profile_for(args.profile, images.shape[1:])
    out = []
    for label in np.unique(labels):
        weights, summary = train_factory(images[labels == label], profile.factory, seed=args.seed * 1000 + node)
        out.append({"node": node, "label": int(label), "weights": save_weights(weights), "summary": summary})
    return out


def _node_expert(
    args: argparse.Namespace, node: int, images: np.ndarray, labels: np.ndarray, peers: list[dict], num_classes: int
) -> dict:
    """Stage 2 on one node: sample the classes it lacks from peers' factories, train its expert."""
    profile = profile_for(args.profile, images.shape[1:])
    local = set(np.unique(labels).tolist())
    factories = [(p["label"], load_weights(p["weights"]), profile.factory) for p in peers if p["label"] not in local]
    t0 = time.perf_counter()
    synth_x, synth_y = synthesize(factories, args.per_class or profile.synth_per_class, seed=args.seed + node)
    sample_s = time.perf_counter() - t0
    x = np.concatenate([images, synth_x])
    y = np.concatenate([labels, synth_y])
    weights, summary = train_expert(x, y, num_classes, expert_for(profile, len(y)), seed=args.seed + node)
    return {"node": node, "weights": save_weights(weights), "sample_s": sample_s, "n_synth": len(synth_x), **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--nodes", type=int, default=0, help="silo nodes (default: one per class)")
    parser.add_argument("--per-class", type=int, default=0, help="override the profile's synth_per_class")
    parser.add_argument("--workers", type=int, default=1, help="nodes run at a time, one thread each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fedavg-rounds", type=int, default=0, help="also run FedAvg on the same silos")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = parser.parse_args()
    _init_worker()

    train = load_dataset(args.dataset, split="train")
    test = load_dataset(args.dataset, split="test")
    num_classes = len(train.classes)
    parts = silo(train.labels, args.nodes or num_classes)
    shards = [(train.images[p], train.labels[p]) for p in parts]
    profile = profile_for(args.profile, train.image_shape)
    wall0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        futures = [pool.submit(_node_factories, args, i, x, y) for i, (x, y) in enumerate(shards)]
        factories = [f for fut in futures for f in fut.result()]
        futures = [pool.submit(_node_expert, args, i, x, y, factories, num_classes) for i, (x, y) in enumerate(shards)]
        experts = [fut.result() for fut in futures]
    wall = time.perf_counter() - wall0

    models = [
        expert_from_weights(load_weights(e["weights"]), profile.expert, num_classes, train.image_shape) for e in experts
    ]
    preds, probs = poe_predict(models, test.images)  # the paper's product rule: this measures speed, not the rule
    solo = [accuracy(np.asarray(poe_predict([m], test.images)[0]), test.labels) for m in models]
    # PoE throughput: one big batch, and single-image latency (median of 50)
    batch = np.concatenate([test.images] * max(1, 4096 // len(test.images)))
    poe_predict(models, batch[:64])  # warm-up
    t0 = time.perf_counter()
    poe_predict(models, batch)
    batched_ips = len(batch) / (time.perf_counter() - t0)
    single = []
    for i in range(50):
        t0 = time.perf_counter()
        poe_predict(models, test.images[i : i + 1])
        single.append(time.perf_counter() - t0)

    fsum = [f["summary"] for f in factories]
    factory_s = [s["seconds"] for s in fsum]
    per_node_factory = [sum(f["summary"]["seconds"] for f in factories if f["node"] == i) for i in range(len(shards))]
    per_node = [pf + e["sample_s"] + e["seconds"] for pf, e in zip(per_node_factory, experts, strict=True)]
    report = {
        "dataset": args.dataset,
        "profile": args.profile,
        "nodes": len(shards),
        "threads_per_node": 1,
        "workers": args.workers,
        "factory_train_img_per_s": statistics.median(s["images_seen"] / s["seconds"] for s in fsum),
        "factory_seconds_median": statistics.median(factory_s),
        "factory_images_seen": fsum[0]["images_seen"],
        "factory_final_loss_median": statistics.median(s["final_loss"] for s in fsum),
        "sampling_img_per_s": statistics.median(e["n_synth"] / e["sample_s"] for e in experts),
        "sampling_seconds_median": statistics.median(e["sample_s"] for e in experts),
        "expert_seconds_median": statistics.median(e["seconds"] for e in experts),
        "expert_n_train_median": statistics.median(e["n_train"] for e in experts),
        "node_cpu_seconds_median": statistics.median(per_node),
        "node_cpu_seconds_max": max(per_node),
        "wall_seconds": wall,
        "expert_alone_accuracy_mean": float(np.mean(solo)),
        "poe_accuracy": accuracy(preds, test.labels),
        "poe_macro_auroc": macro_auroc(probs, test.labels),
        "poe_batched_img_per_s": batched_ips,
        "poe_single_image_ms": 1000 * statistics.median(single),
    }
    if args.fedavg_rounds:
        fed = run_federated(
            FedAvg(),
            shards,
            (test.images, test.labels),
            num_classes,
            profile.expert,
            rounds=args.fedavg_rounds,
            local_epochs=1,
            seed=args.seed,
        )
        report |= {"fedavg_accuracy": fed["accuracy"], "fedavg_auroc": fed["auroc"], "fedavg_rounds": fed["rounds"]}
    if args.json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        print(f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}")


if __name__ == "__main__":
    main()
