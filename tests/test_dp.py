"""Differentially private factories: the accountant's figures, DP-SGD training as a pure function, the meta.dp
vectors, and a peer with max_epsilon refusing a factory over it (real daemons)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from daemons import CLASSES, class_file, configure, free_port

from ffnode.artifacts.codec import canonical_bytes
from ffnode.artifacts.store import open_announcement
from ffnode.config import Config, ConfigError, PrivacyConfig
from ffnode.daemon import control
from ffnode.data.sources import load_dataset
from ffnode.factory.config import FactoryConfig
from ffnode.factory.dp import DPPlan, default_delta, plan_dp
from ffnode.factory.model import build_unet
from ffnode.factory.train import train_factory
from ffnode.jobs.build import factory_dp
from ffnode.privacy.policy import AuditPolicy, dp_of, judge
from harness.localnet import Daemons, init_home, status, wait_for

VECTORS = Path(__file__).resolve().parents[1] / "protocol" / "vectors" / "dp.json"
CFG = FactoryConfig(block_out_channels=(16, 16), norm_num_groups=4, train_steps=8, batch_size=16, warmup_steps=2,
                    checkpoint_every=4, bf16=False)  # fmt: skip


def exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """The exact epsilon of a Gaussian mechanism of sensitivity 1 / noise mu^-1 at `delta` (Balle and Wang 2018:
    delta(eps) = Phi(-eps / mu + mu / 2) - e^eps Phi(-eps / mu - mu / 2)), by bisection."""

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if phi(-mid / mu + mu / 2) - math.exp(mid) * phi(-mid / mu - mu / 2) > delta:
            lo = mid
        else:
            hi = mid
    return hi


@pytest.mark.parametrize(("sigma", "steps"), [(1.0, 1), (2.0, 10), (8.0, 400)])
def test_the_accountant_bounds_the_exact_epsilon_of_full_batch_steps(sigma: float, steps: int) -> None:
    """Full-batch DP-SGD (q = 1) is `steps` Gaussian mechanisms, whose composition is one Gaussian of noise
    sigma / sqrt(steps): its exact epsilon is known, and the RDP accountant's must be at least that (a bound) and
    not much more (a useful one)."""
    exact = exact_gaussian_epsilon(math.sqrt(steps) / sigma, 1e-5)
    rdp = DPPlan(sigma, 1.0, 1.0, steps, 1e-5).epsilon()
    assert exact <= rdp <= 1.15 * exact, (exact, rdp)  # measured: 1.07-1.08 times the exact epsilon


def test_plan_calibrates_the_noise_for_the_runs_sampling_and_steps() -> None:
    plan = plan_dp(4.0, 1479, 64, 400)
    assert plan.delta == default_delta(1479) == 1 / 14790 and plan.sample_rate == 64 / 1479
    assert 3.95 <= plan.epsilon() <= 4.0  # the smallest noise whose epsilon is within the target
    assert DPPlan(plan.noise_multiplier * 0.95, 1.0, plan.sample_rate, 400, plan.delta).epsilon() > 4.0
    assert plan.epsilon(200) < plan.epsilon()  # an earlier snapshot has spent less
    looser = plan_dp(10.0, 1479, 64, 400)
    assert looser.noise_multiplier < plan.noise_multiplier
    # subsampling amplifies: the same noise at a quarter of the batch spends less
    assert DPPlan(plan.noise_multiplier, 1.0, 16 / 1479, 400, plan.delta).epsilon() < plan.epsilon()
    full = plan_dp(4.0, 50, 64, 10)  # a batch bigger than the class: every image in every step
    assert full.sample_rate == 1.0
    with pytest.raises(ValueError, match="epsilon > 0"):
        plan_dp(0.0, 100, 16, 10)


def test_the_vectors_dp_figures_are_what_the_accountant_gives() -> None:
    vectors = json.loads(VECTORS.read_text())
    dp = vectors["factory"]["body"]["meta"]["dp"]
    plan = plan_dp(4.0, 1479, 64, 400)
    assert plan.noise_multiplier == dp["noise_multiplier"]  # the binary search's exact (dyadic) answer
    meta = plan.meta(400)
    assert meta.pop("epsilon") == pytest.approx(dp.pop("epsilon"), rel=1e-12) and meta == dp


def test_the_vectors_meta_dp_cases_are_judged_as_they_say() -> None:
    vectors = json.loads(VECTORS.read_text())
    factory = vectors["factory"]
    m = open_announcement(bytes.fromhex(factory["envelope_hex"]))
    assert m.id == factory["id"] and m.meta["dp"] == factory["body"]["meta"]["dp"]
    assert judge(m.meta, AuditPolicy(max_epsilon=4.0)) is None
    assert "max_epsilon" in judge(m.meta, AuditPolicy(max_epsilon=3.0))
    for case in vectors["cases"]:
        verdict = judge(case["meta"], AuditPolicy(**case["thresholds"]))
        assert (verdict is None) == (case["output"] == "use"), case["name"]
        if case["output"] is None:
            word = {"no-dp": "no meta.dp", "malformed": "meta.dp", "no-n_train": "n_train"}.get(case["reason"])
            assert (word or case["reason"]) in verdict, (case["name"], verdict)


def digits(label: int) -> np.ndarray:
    d = load_dataset("digits", split="train", classes=[str(i) for i in range(10)])
    return d.images[d.labels == label]


def test_dp_training_is_a_pure_function_and_resumes_onto_the_same_weights(tmp_path: Path) -> None:
    images = digits(3)
    plan = plan_dp(8.0, len(images), CFG.batch_size, CFG.train_steps)
    weights, summary = train_factory(images, CFG, seed=5, dp=plan)
    again, _ = train_factory(images, CFG, seed=5, dp=plan)
    assert all(torch.equal(weights[k], again[k]) for k in weights)  # bitwise: noise and batches are seeded
    assert summary["dp"] == plan.meta(CFG.train_steps) and not isinstance(dp_of(summary), str)

    class Crash(Exception):
        pass

    def crash(step: int, _total: int) -> None:
        if step == 6:  # after the checkpoint at step 4: the resumed run replays 5-6 from the saved streams
            raise Crash

    with pytest.raises(Crash):
        train_factory(images, CFG, seed=5, dp=plan, checkpoint_dir=tmp_path, progress=crash)
    resumed, _ = train_factory(images, CFG, seed=5, dp=plan, checkpoint_dir=tmp_path)
    assert all(torch.equal(weights[k], resumed[k]) for k in weights)


def test_an_empty_poisson_batch_is_a_step_of_noise_alone() -> None:
    """At a sampling rate where every batch is empty (no loss was ever computed), training still moves the weights:
    each step adds the noise, the mechanism the accountant counted, rather than being skipped."""
    images = digits(4)[:40]
    plan = DPPlan(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=1e-6, steps=CFG.train_steps, delta=1e-3)
    cfg = dataclasses.replace(CFG, ema_decay=0.0)  # the EMA is the last weights
    weights, summary = train_factory(images, cfg, seed=1, dp=plan)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        init = build_unet(cfg).state_dict()
    assert math.isnan(summary["final_loss"])  # not one image was drawn
    assert all(not torch.equal(weights[k], init[k]) for k in weights)


def test_the_dp_settings_are_checked_and_planned_from_the_privacy_config() -> None:
    for bad in ({"dp_epsilon": -1.0}, {"dp_delta": 1.0}, {"dp_max_grad_norm": 0.0}, {"max_epsilon": -2.0},
                {"max_epsilon": 4.0, "require_audit": False}):  # fmt: skip
        config = Config()
        config.federation.classes = ["a", "b"]
        config.privacy = PrivacyConfig(**bad)
        with pytest.raises(ConfigError, match="privacy"):
            config.validate()
    assert factory_dp(PrivacyConfig(), 100, CFG) is None
    plan = factory_dp(PrivacyConfig(dp_epsilon=2.0, dp_delta=1e-4, dp_max_grad_norm=0.5), 100, CFG)
    assert plan is not None and (plan.delta, plan.max_grad_norm, plan.sample_rate) == (1e-4, 0.5, 0.16)
    assert plan.steps == CFG.train_steps and plan.epsilon() <= 2.0


def test_a_peer_with_max_epsilon_refuses_a_dp_factory_over_it_and_one_above_accepts_it(tmp_path: Path) -> None:
    """a trains its factory with DP-SGD at epsilon 8; b (max_epsilon 4) refuses it, c (max_epsilon 10) uses it.
    b's and c's own factories carry no meta.dp: each refuses the other's, a (no max_epsilon) uses both."""
    homes, addrs = [tmp_path / n for n in "abc"], []
    for i, home in enumerate(homes):
        data = class_file(tmp_path, [i], f"class{i}")
        addrs.append(
            init_home(home, port=free_port(), data=data, classes=CLASSES, bootstrap=addrs[:1], profile="tiny", seed=i)
        )
    a, b, c = homes
    for home in homes:
        configure(home, learning={"patience_s": 5.0})
    configure(a, privacy={"dp_epsilon": 8.0})
    configure(b, privacy={"max_epsilon": 4.0})
    configure(c, privacy={"max_epsilon": 10.0})
    with Daemons() as daemons:
        for home in homes:
            daemons.start(home)

        def settled() -> tuple[list[dict], dict, list[dict], list[dict]] | None:
            """The statuses and a's factory, once b holds it and c's expert was trained from it."""
            sts = [status(h) for h in homes]
            if not all(s and s["current_expert"] for s in sts):
                return None
            at_b, at_c = control.call(b, "artifacts"), control.call(c, "artifacts")
            mine = [r for r in at_c if r["kind"] == "factory" and r["owner"] == sts[0]["peer_id"]]
            expert = next(r for r in at_c if r["id"] == sts[2]["current_expert"])
            if not mine or mine[0]["id"] not in expert["lineage"] or mine[0]["id"] not in {r["id"] for r in at_b}:
                return None
            return sts, mine[0], at_b, at_c

        sts, factory, at_b, at_c = wait_for(
            settled, timeout=120, what="c's expert from a's DP factory", daemons=daemons
        )
    dp = factory["meta"]["dp"]
    n_train = factory["meta"]["n_train"]
    assert 4.0 < dp["epsilon"] <= 8.0 and dp["accountant"] == "rdp" and dp["delta"] == 1 / (10 * n_train)
    assert dp["steps"] == factory["meta"]["steps"] and dp["noise_multiplier"] > 0
    assert canonical_bytes(dp)  # plain msgpack values: it was signed
    refused = next(r for r in at_b if r["id"] == factory["id"])
    assert refused["state"] == "refused" and "max_epsilon 4" in refused["reason"], refused
    assert not (b / "store" / "blobs" / factory["blob"]).exists()  # never fetched
    used = next(r for r in at_c if r["id"] == factory["id"])
    assert used["state"] != "refused"
    b_factory = next(r for r in at_c if r["kind"] == "factory" and r["owner"] == sts[1]["peer_id"])
    assert b_factory["state"] == "refused" and "no meta.dp" in b_factory["reason"]
