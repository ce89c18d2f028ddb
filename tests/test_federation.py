"""One small federation end to end, as the README's main command runs it: `scripts/testnet.py` on three
single-class sites (digits 0, 1, 2) with the `default` profile, real daemons, baselines, then one site
leaves. Asserts accuracy far above chance, the baselines' curves, exact unlearning, and a well-formed report."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ffnode.data.sources import load_dataset, save_npz
from tests.daemons import free_port

ROOT = Path(__file__).resolve().parents[1]


def three_digits(path: Path) -> Path:
    """A MedMNIST-format file with the digits 0, 1 and 2 only (train and test splits)."""
    splits = {}
    for split in ("train", "test"):
        d = load_dataset("digits", split=split)
        keep = d.labels < 3
        splits[split] = (d.images[keep], d.labels[keep])
    save_npz(path, splits)
    return path


def script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_whole_machine_runs_one_job_at_a_time_on_every_core() -> None:
    testnet = script("testnet")
    args = testnet.parse_args(["--whole-machine"])
    assert (args.workers, args.threads) == (1, os.cpu_count() or 1)
    assert (testnet.parse_args([]).workers, testnet.parse_args([]).threads) == (os.cpu_count() or 1, 1)
    with pytest.raises(SystemExit):  # it sets both: an explicit one would be silently overridden
        testnet.parse_args(["--whole-machine", "--workers", "2"])


def test_testnet_three_silos_end_to_end(tmp_path: Path) -> None:
    testnet = script("testnet")
    out = tmp_path / "report.json"
    data = three_digits(tmp_path / "digits012.npz")
    report = testnet.main([
        "--nodes", "3", "--dataset", str(data), "--partition", "silo",
        "--workdir", str(tmp_path / "net"), "--json", str(out), "--base-port", str(free_port()),
        "--unlearn", "0", "--fl-rounds", "3", "--timeout", "400", "--max-per-class", "100", "--synth-per-class", "80",
        "--factory-steps", "120",
    ])  # fmt: skip
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))  # the file is the report
    for key in (
        "dataset",
        "nodes",
        "partition",
        "wall_s",
        "poe_accuracy",
        "baselines",
        "bytes_sent_per_node",
        "server_mode",
        "compute",
        "hardware",
        "unlearning",
    ):
        assert key in report, key
    acc = report["poe_accuracy"]
    assert len(acc["per_node"]) == 3 and acc["min"] >= 0.8, acc  # chance is 1/3
    assert report["poe_rule"] == "prior" and len(report["poe_product"]["accuracy"]["per_node"]) == 3
    assert report["poe_product"]["accuracy"]["min"] >= 0.8  # the paper's rule works on the same experts
    fedavg = report["baselines"]["fedavg"]  # its tuned settings, cut to --fl-rounds, with a curve and its bytes
    assert fedavg["rounds"] == 3 and [c["round"] for c in fedavg["curve"]] == [1, 2, 3]
    assert fedavg["bytes_sent_per_site"] == 3 * fedavg["bytes_per_round_per_site"] > 0
    assert report["baselines"]["centralized"]["accuracy"] >= 0.9
    assert all(b > 0 for b in report["bytes_sent_per_node"])
    # the knobs reached the daemons: each expert saw its 100 real images and 80 synthetic per missing class
    assert report["train_images"] == 300 and report["synth_per_class"] == 80
    assert report["compute"]["expert_train_images_mean"] == 100 + 2 * 80
    assert report["compute"]["factory_images_seen_mean"] == 120 * 64  # the default profile's batch of 64
    assert report["compute"]["synthesis_img_per_s_per_node"] > 0
    # each site's spend per stage, beside what the profile states a factory costs (its measured rate, 120 steps)
    assert report["budget"]["factory_images"] == 120 * 64 and report["budget"]["factory_core_s"] > 0
    spent = [s for s in report["compute"]["per_site_core_s"] if s]
    assert len(spent) == 3 and all(s["factories"] > 0 and s["expert"] > 0 for s in spent), spent
    assert report["compute"]["site_core_s_max"]["factories"] == max(round(s["factories"], 1) for s in spent)
    u = report["unlearning"]
    assert u["dropped_everywhere"] and u["exact"] and u["experts_retrained"] == 2
    assert u["classes"] == [0] and len(u["revoked"]) == 2  # node 0's factory and expert
    assert u["class_accuracy_before"] >= 0.8 and u["class_accuracy_after"] <= 0.1
    assert not math.isnan(report["poe_auroc"]["mean"]) and np.isfinite(report["wall_s"])
    assert len(report["poe_auroc"]["per_node"]) == 3 and all(0.5 < a <= 1.0 for a in report["poe_auroc"]["per_node"])
    table = script("results_table").table([report])  # docs/results.md's table reads every figure it shows
    assert "not in this report" not in table and f"**{acc['mean']:.3f}**" in table
    assert report["seed"] == 0 and "3 sites, seed 0 |" in table.splitlines()[0]  # runs of one dataset told apart

    # scripts/diagnose.py on a site that stayed: node 0 left, so two experts, none for class 0
    diag = script("diagnose").diagnose(tmp_path / "net" / "node1", str(data))
    confusion = np.array(diag["confusion"])
    assert confusion.sum() == diag["test_images"] and diag["poe_accuracy"] == np.trace(confusion) / confusion.sum()
    assert sorted(c for e in diag["experts"] for c in e["real_classes"]) == ["1", "2"]
    assert diag["recall"][0] <= 0.1 and min(diag["recall"][1:]) >= 0.8
    assert all(e["pull"] > 0 and 0 <= e["own_share"] <= 1 for e in diag["experts"])

    # scripts/bench_sampler.py: each solver gets closer to the long solve with more steps
    bench = script("bench_sampler").main(
        ["--home", str(tmp_path / "net" / "node1"), "--n", "8", "--max-factories", "1"]
    )
    for sampler in ("dpmsolver++", "unipc"):
        errors = [v["rmse"][0] for v in bench["variants"] if v["sampler"] == sampler]  # in order of steps
        assert errors[-1] < errors[0], (sampler, errors)


def test_the_budget_curve_names_the_smallest_budget_that_reaches_each_reference() -> None:
    curve = script("budget_curve")
    rows = [{"multiple": m, "poe": p, "server": s} for m, p, s in ((1, 0.877, 0.83), (4, 0.93, 0.92), (16, 0.95, 0.9))]
    said = curve.reached(rows, {"FederatedFactory PoE": 0.9425, "FederatedFactory server mode": 0.93})
    assert said["FederatedFactory PoE"] == "reached at 16x"
    assert said["FederatedFactory server mode"] == "not reached: best 0.9200 at 4x, 0.0100 short"
