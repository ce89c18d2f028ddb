#!/usr/bin/env python3
"""What bounding each expert's vote (ffnode/poe.py, D_C) costs an honest federation, and what it buys against a liar.

Reads the experts a finished federation answers with (one node's home: every site holds the same experts) and
the dataset's test split, and prints PoE accuracy under both rules ("product", "prior") with the bound and
without it (the rules before it), on the honest federation and with one hostile expert added: a liar that
knows each image's true class and the honest experts' answers, and puts all its mass on the true class's closest
rival (the honest product's best wrong class) with every other class at the 1e-12 floor, the loudest vote the old
rules let through, with honest-looking label counts (the honest experts' median). Nothing is
trained here; the homes come from the testnet, e.g.

    nice -n 19 .venv/bin/python scripts/testnet.py --nodes 10 --dataset digits --no-baselines --workdir runs/tn-digits
    nice -n 19 .venv/bin/python scripts/bench_poe_clip.py --home runs/tn-digits/node0 --dataset digits

`--json` writes the same figures as one document.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ffnode.artifacts.store import Store
from ffnode.config import Config
from ffnode.data.sources import load_dataset
from ffnode.expert.train import expert_log_probs
from ffnode.poe import LOG_FLOOR, Priors, poe_combine, vote_bound
from ffnode.query import ExpertPool
from ffnode.voters import expert_priors
from harness.metrics import accuracy

console = Console(stderr=True)


def liar_votes(honest: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    """(1, B, C) log-probabilities of the worst single liar against (K, B, C) honest experts: all its mass on
    the class the honest product ranks highest among the wrong ones, every other class at the floor."""
    logits = poe_combine(honest, bound=math.inf)  # (B, C)
    logits[np.arange(len(labels)), labels] = -math.inf
    votes = torch.full((1, *logits.shape), LOG_FLOOR)
    votes[0, np.arange(len(labels)), logits.argmax(1)] = 0.0
    return votes


def with_liar(priors: Priors) -> Priors:
    """The honest priors plus a liar's row: the median honest label counts and no real images of its own."""
    liar_counts = np.median(priors.train_counts, axis=0, keepdims=True)
    return Priors(np.concatenate([priors.train_counts, liar_counts]), priors.real_counts)


def bench(home: Path, dataset: str) -> dict:
    config = Config.load(home)
    classes = list(config.federation.classes)
    store = Store(home / "store", federation=config.federation.name)
    test = load_dataset(dataset, split="test", classes=classes)
    experts = ExpertPool(store, len(classes), test.image_shape).experts()
    if not experts:
        raise SystemExit(f"error: no live experts at {home}: wait until the federation is ready")
    honest = torch.stack([expert_log_probs(model, test.images) for _, model in experts])  # (K, B, C)
    priors = expert_priors([m for m, _ in experts], len(classes))
    if priors is None:
        raise SystemExit("error: the experts' manifests lack label counts: the prior rule cannot be measured")
    attacked = torch.cat([honest, liar_votes(honest, test.labels)])  # (K + 1, B, C)
    # how far each honest expert's own log-probabilities span: the bound bites where this exceeds D_C
    span = (honest.amax(-1) - honest.amin(-1)).flatten()  # (K * B,)
    rows = []
    for rule, rule_priors, liar_priors in (("product", None, None), ("prior", priors, with_liar(priors))):
        for bounded in (False, True):
            bound = None if bounded else math.inf
            rows.append(
                {
                    "rule": rule,
                    "bound": "D_C" if bounded else "none",
                    "honest": accuracy(poe_combine(honest, rule_priors, bound=bound).argmax(1).numpy(), test.labels),
                    "one_liar": accuracy(
                        poe_combine(attacked, liar_priors, bound=bound).argmax(1).numpy(), test.labels
                    ),
                }
            )
    return {
        "home": str(home),
        "dataset": dataset,
        "experts": len(experts),
        "test_images": len(test.labels),
        "d_c": vote_bound(len(classes)),
        "honest_span_quantiles": {q: float(span.quantile(q)) for q in (0.5, 0.9, 0.99)},
        "honest_span_over_d_c": float((span > vote_bound(len(classes))).float().mean()),
        "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, action="append", required=True, help="a node's home (repeat: one a dataset)")
    p.add_argument("--dataset", action="append", required=True, help="its dataset (digits | bloodmnist | ...)")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args()
    if len(args.home) != len(args.dataset):
        p.error("give one --dataset for each --home")
    torch.set_num_threads(1)
    reports = [bench(home, dataset) for home, dataset in zip(args.home, args.dataset, strict=True)]
    for r in reports:
        q = r["honest_span_quantiles"]
        table = Table(
            title=f"{r['dataset']}: {r['experts']} experts, {r['test_images']} test images, D_C {r['d_c']:.2f}"
        )
        for col in ("rule", "bound", "honest", "one liar"):
            table.add_column(col)
        for row in r["rows"]:
            table.add_row(row["rule"], row["bound"], f"{row['honest']:.4f}", f"{row['one_liar']:.4f}")
        console.print(table)
        console.print(
            f"honest experts' log-probability span: median {q[0.5]:.2f}, 90 % {q[0.9]:.2f}, 99 % {q[0.99]:.2f} nats; "
            f"{r['honest_span_over_d_c']:.1%} of (expert, image) pairs exceed D_C"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(reports, indent=1))
    print(json.dumps([{k: r[k] for k in ("dataset", "d_c", "rows")} for r in reports]))


if __name__ == "__main__":
    main()
