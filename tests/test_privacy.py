"""The privacy audit: it fails a factory made to memorise and passes a normal one (both attacks, both distances);
the feature distance sees a recoloured copy that pixel L2 misses; the policy every site applies to the signed
figures; the held-out slice never trains the factory."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
from daemons import CLASSES, class_file, configure, free_port

from ffnode.config import PrivacyConfig
from ffnode.daemon import control
from ffnode.data.sources import ImageSet, load_dataset
from ffnode.factory.config import FactoryConfig
from ffnode.factory.train import train_factory
from ffnode.jobs.build import factory_split
from ffnode.privacy.attacks import features
from ffnode.privacy.audit import AuditSettings, _copies, _flat, audit_factory, holdout_split
from ffnode.privacy.picture import closest_pairs
from ffnode.privacy.policy import (
    DETECT_AUC,
    AuditPolicy,
    audit_of,
    judge,
    mia_power,
    mia_se,
    refusals,
    verdict,
    verdict_text,
)
from harness.localnet import Daemons, ffnode_cmd, init_home, status, wait_for

FAST = AuditSettings(samples=200)


def digit(label: int) -> np.ndarray:
    d = load_dataset("digits", split="train", classes=[str(i) for i in range(10)])
    return d.images[d.labels == label]


def small(steps: int, batch: int) -> FactoryConfig:
    return FactoryConfig(block_out_channels=(32, 32), norm_num_groups=8, train_steps=steps, batch_size=batch,
                         warmup_steps=10, checkpoint_every=10**6, sample_steps=10)  # fmt: skip


def test_the_audit_fails_a_factory_made_to_memorise_and_passes_a_normal_one() -> None:
    images = digit(3)
    train, held = holdout_split(len(images), 0, 0.1, 20, 500)
    policy = AuditPolicy()
    # normal: the class's ~120 training images, a short run
    weights, _ = train_factory(images[train], small(150, 64), seed=1)
    normal = audit_factory(weights, small(150, 64), images[train], images[held], seed=2, settings=FAST).figures
    assert refusals(normal, policy) == [], normal
    assert normal["memorised"] <= 0.01 and normal["n_holdout"] == len(held) == 20
    assert normal["feature_memorised"] <= 0.01 and normal["feature"] == "randconv-1" and normal["pia_level"] == 400
    # memorising: four images, trained long (every sample is one of them)
    few = images[train[:4]]
    cfg = small(300, 16)
    weights, _ = train_factory(few, cfg, seed=1)
    report = audit_factory(weights, cfg, few, images[held[:4]], seed=2, settings=FAST)
    copied = report.figures
    assert copied["memorised"] > 0.5 and copied["mia_auc"] == 1.0 and copied["pia_auc"] >= 0.9, copied
    assert copied["feature_memorised"] > 0.5, copied
    why = refusals(copied, dataclasses.replace(policy, min_holdout=2))
    assert any("copy a training image in randconv-1 features" in w for w in why), why
    assert any(w.startswith("PIA membership inference AUC") for w in why), why
    # the owner's picture: each sample beside the training image it copies
    pairs = closest_pairs(np.zeros((200, 8, 8, 1), np.uint8), few, [list(c) for c in report.closest[:4]], False)
    assert pairs.shape[1] == 12 * 64  # 4 pairs and their gaps per row, 64 px cells


def test_the_feature_distance_sees_a_recoloured_copy_that_pixel_l2_misses() -> None:
    """Training images with their contrast lowered and brightness raised: under pixel L2 no closer to their
    source than to other digits, under the features as close as exact copies; fresh images are neither."""
    images = digit(5)
    train, held = images[:100], images[100:140]
    recoloured = (images[:40].astype(np.float64) * 0.6 + 60).astype(np.uint8)
    pixel = _copies(recoloured, train, held, False, _flat)[0]
    feature = _copies(recoloured, train, held, False, features)[0]
    assert pixel["memorised"] == 0.0 and feature["memorised"] == 1.0, (pixel, feature)
    fresh = _copies(held, train, held, False, features)[0]
    assert fresh["memorised"] <= 0.05 and fresh["dcr_close"] <= 0.1, fresh
    assert features(images[:3]).shape == (3, 16 * (32 + 64 + 128))  # 4x4 positions per layer, whatever the size


def test_the_held_out_slice_is_seeded_bounded_and_never_trains_the_factory() -> None:
    train, held = holdout_split(1000, 5, 0.1, 20, 500)
    assert len(held) == 100 and len(train) == 900 and not set(train) & set(held)
    assert np.array_equal(held, holdout_split(1000, 5, 0.1, 20, 500)[1])
    assert not np.array_equal(held, holdout_split(1000, 6, 0.1, 20, 500)[1])
    assert len(holdout_split(66, 0, 0.1, 20, 500)[1]) == 20  # a small class still gives the attack 20 non-members
    assert len(holdout_split(30, 0, 0.1, 20, 500)[1]) == 15  # never more than half the class
    assert len(holdout_split(100_000, 0, 0.1, 20, 500)[1]) == 500
    d = load_dataset("digits", split="train", classes=[str(i) for i in range(10)])
    data = ImageSet(d.images, d.labels, d.classes)
    fit, out = factory_split(data, 2, node_seed=0, privacy=PrivacyConfig())
    assert len(fit) + len(out) == (d.labels == 2).sum() and len(out) == 20
    assert len(factory_split(data, 2, 0, PrivacyConfig(audit=False))[1]) == 0


def figures(**changes: float) -> dict:
    base = {"v": 1, "distance": "l2-pixel", "step": 400, "samples": 500, "n_train": 1479, "n_holdout": 164,
            "memorised": 0.0, "nn_ratio_min": 0.87, "dcr_close": 0.0, "dcr_ratio": 1.02, "mia_members": 328,
            "mia_auc": 0.513, "mia_tpr_1pct": 0.006, "mia_tpr_01pct": 0.003, "levels": [50, 100, 200, 400],
            "draws": 2, "pia_auc": 0.521, "pia_tpr_1pct": 0.012, "pia_tpr_01pct": 0.003, "pia_level": 400,
            "feature": "randconv-1", "feature_memorised": 0.0, "feature_nn_ratio_min": 0.71, "feature_dcr_close": 0.01,
            "feature_dcr_ratio": 1.04, "seconds": 8.2}  # fmt: skip
    return base | changes


def test_the_policy_refuses_what_is_over_its_thresholds_and_allows_for_the_attacks_noise() -> None:
    policy = AuditPolicy()
    assert judge({"audit": figures()}, policy) is None
    assert "copy a training image" in judge({"audit": figures(memorised=0.02)}, policy)
    assert "closer to the training set" in judge({"audit": figures(dcr_close=0.3)}, policy)
    # AUC 0.60 on 164 non-members is evidence (0.60 - 1.645 * 0.026 > 0.55); on 20 it is noise
    assert "membership inference AUC" in judge({"audit": figures(mia_auc=0.6)}, policy)
    assert judge({"audit": figures(mia_auc=0.6, n_holdout=20, mia_members=40)}, policy) is None
    assert judge({"audit": figures(mia_auc=0.6, n_holdout=20, mia_members=40)}, AuditPolicy(mia_z=0)) is not None
    assert mia_se(40, 20) == pytest.approx(0.0797, abs=1e-4)
    assert "held-out images" in judge({"audit": figures(n_holdout=5)}, policy)
    assert "at 1% false positives" in judge({"audit": figures(mia_tpr_1pct=0.2)}, AuditPolicy(max_mia_tpr_1pct=0.1))
    # either attack, either distance: PIA's AUC and TPR and the feature figures under the same thresholds
    assert judge({"audit": figures(pia_auc=0.6)}, policy).startswith("PIA membership inference AUC 0.600")
    assert judge({"audit": figures(pia_auc=0.6, n_holdout=20, mia_members=40)}, policy) is None
    assert "PIA membership inference flags" in judge(
        {"audit": figures(pia_tpr_1pct=0.2)}, AuditPolicy(max_mia_tpr_1pct=0.1)
    )
    assert "in randconv-1 features" in judge({"audit": figures(feature_memorised=0.02)}, policy)
    assert "in randconv-1 features" in judge({"audit": figures(feature_dcr_close=0.3)}, policy)
    # an audit without the optional groups (an owner before r7) is judged on the loss attack and pixel L2 alone
    older = {k: v for k, v in figures(pia_auc=0.9, feature_memorised=0.5).items() if not k.startswith(("pia", "feat"))}
    assert judge({"audit": older}, policy) is None


def test_three_verdicts_and_a_power_that_simulated_attacks_confirm() -> None:
    """The power formula (policy.mia_power) against 4,000 simulated attacks at each size: scores of members drawn
    one binormal shift above the non-members', so the true AUC is 0.60; the share the AUC rule refuses is the
    power, within 0.04 of the formula. Then the verdicts: the small class is inconclusive (used, flagged, or
    refused under inconclusive = "refuse"), 500 and 500 pass, a leak fails whatever the setting."""
    rng, policy = np.random.default_rng(0), AuditPolicy()
    shift = math.sqrt(2) * statistics.NormalDist().inv_cdf(DETECT_AUC)  # binormal, equal variances: AUC 0.60
    for members, nonmembers in [(40, 20), (328, 164), (500, 500)]:
        scores = np.concatenate([rng.normal(shift, 1, (4000, members)), rng.normal(0, 1, (4000, nonmembers))], 1)
        ranks = scores.argsort(1).argsort(1)[:, :members] + 1  # the members' ranks, 1-based
        auc = (ranks.sum(1) - members * (members + 1) / 2) / (members * nonmembers)  # Mann-Whitney
        refused = (auc - policy.mia_z * mia_se(members, nonmembers) > policy.max_mia_auc).mean()
        assert mia_power(members, nonmembers, policy) == pytest.approx(refused, abs=0.04), (members, refused)
    small, large = figures(n_holdout=20, mia_members=40), figures(n_holdout=500, mia_members=500)
    assert verdict(small, policy) == ("inconclusive", pytest.approx(0.143, abs=1e-3))
    assert judge({"audit": small}, policy) is None  # used, flagged
    refuse = AuditPolicy(inconclusive="refuse")
    assert judge({"audit": small}, refuse).startswith("inconclusive: 20 held-out images give the attack 14% power")
    assert verdict(small, refuse)[0] == "inconclusive" and verdict(large, refuse)[0] == "passes"
    assert judge({"audit": large}, refuse) is None
    assert verdict(figures(memorised=0.5, n_holdout=500, mia_members=500), policy)[0] == "fails"
    assert verdict_text(small, refuse) == "inconclusive (power 14% to see AUC 0.60, refused (privacy.inconclusive))"


@pytest.mark.parametrize(
    ("meta", "why"),
    [
        ({}, "carries no privacy audit"),
        ({"audit": [1]}, "not a map"),
        ({"audit": figures(v=2)}, "not of version 1"),
        ({"audit": figures(distance="ssim")}, "does not measure the distance"),
        ({"audit": figures(mia_auc="0.5")}, "valid 'mia_auc'"),
        ({"audit": figures(memorised=float("nan"))}, "not finite"),
        ({"audit": figures(memorised=True)}, "valid 'memorised'"),
        ({"audit": figures(dcr_close=1.5)}, "outside 0..1"),
        ({"audit": figures(samples=0)}, "counts no samples"),
        ({"audit": {k: v for k, v in figures().items() if k != "pia_level"}}, "valid 'pia_level'"),
        ({"audit": figures(pia_auc=1.5)}, "outside 0..1"),
        ({"audit": figures(pia_level=2000)}, "per-mille noise level"),
        ({"audit": figures(feature="sscd")}, "feature distance is not"),
        ({"audit": {k: v for k, v in figures().items() if k != "feature"}}, "valid 'feature'"),
    ],
)
def test_audit_figures_a_site_cannot_judge_are_refused_with_the_reason(meta: dict, why: str) -> None:
    assert isinstance(audit_of(meta), str)
    assert why in judge(meta, AuditPolicy())


# -- real daemons: a failing factory is never published, an unaudited one never used -----------------------------
def test_a_failing_factory_is_withheld_and_an_unaudited_one_refused_by_peers_that_require_audits(
    tmp_path: Path,
) -> None:
    """a's thresholds fail its own factory (withheld, not published) and c's too; b publishes without an audit
    (refused by a and c: kept, never fetched, never in an expert's lineage); b uses c's audited factory."""
    homes, addrs = [tmp_path / n for n in "abc"], []
    for i, home in enumerate(homes):
        data = class_file(tmp_path, [i], f"class{i}")
        addrs.append(
            init_home(home, port=free_port(), data=data, classes=CLASSES, bootstrap=addrs[:1], profile="tiny", seed=i)
        )
    a, b, c = homes
    for home in homes:
        configure(home, learning={"patience_s": 5.0})  # the withheld class 0 must not hold the others back
    configure(a, privacy={"max_mia_auc": 0.0, "mia_z": 0.0, "snapshots": 1})
    configure(b, privacy={"audit": False})
    daemons = Daemons()
    try:
        for home in homes:
            daemons.start(home)

        def settled() -> list[dict] | None:
            """Every site's status once each has an expert, b's trained from c's factory."""
            sts = [status(h) for h in homes]
            if not all(s and s["current_expert"] for s in sts):
                return None
            rows = control.call(b, "artifacts")
            expert = next(r for r in rows if r["id"] == sts[1]["current_expert"])
            c_factory = {r["id"] for r in rows if r["kind"] == "factory" and r["owner"] == sts[2]["peer_id"]}
            return sts if c_factory & set(expert["lineage"]) else None

        sts = wait_for(settled, timeout=120, what="experts trained from c's factory", daemons=daemons)
        assert "max_mia_auc" in sts[0]["withheld_factories"]["0"], sts[0]
        assert not sts[1]["withheld_factories"] and not sts[2]["withheld_factories"]
        rows = {h: control.call(h, "artifacts") for h in homes}
        factories = {r["owner"]: r for r in rows[c] if r["kind"] == "factory"}
        assert sts[0]["peer_id"] not in factories  # never published
        b_factory, c_factory = factories[sts[1]["peer_id"]], factories[sts[2]["peer_id"]]
        assert "audit" not in b_factory["meta"] and c_factory["meta"]["audit"]["n_holdout"] == 20
        for home in (a, c):
            held = {r["id"]: r for r in rows[home]}
            assert held[b_factory["id"]]["state"] == "refused"
            assert "no privacy audit" in held[b_factory["id"]]["reason"]
            assert not (home / "store" / "blobs" / b_factory["blob"]).exists()  # never fetched
        at_a = next(r for r in rows[a] if r["id"] == c_factory["id"])
        assert at_a["state"] == "refused" and "max_mia_auc" in at_a["reason"]  # a's thresholds, c's figures
        lineages = [
            next(r["lineage"] for r in rows[h] if r["id"] == s["current_expert"])
            for h, s in zip(homes, sts, strict=True)
        ]
        assert lineages[0] == [] and lineages[2] == []  # a and c use no peer's factory: none passes their policy
        assert c_factory["id"] in lineages[1]
        # the owner's view: every audit made, and the picture of the closest pairs (never inside the store)
        own = [r for r in json.loads(cli("audit", "--home", str(a), "--json")) if r["own"]]
        assert own and all(r["state"] == "failed" and "max_mia_auc" in r["verdict"] for r in own)
        assert {r["step"] for r in own} == {4, 2}  # the final factory, then its snapshot at half the steps
        cli("audit", "--home", str(a), "--class", "0", "--picture", str(tmp_path / "closest.png"))
        assert (tmp_path / "closest.png").stat().st_size > 0
        refused = subprocess.run(ffnode_cmd("audit", "--home", str(a), "--class", "0", "--picture",
                                            str(a / "store" / "x.png")), capture_output=True, text=True)  # fmt: skip
        assert refused.returncode == 1 and "inside the node's store" in refused.stderr
        peers = [r for r in json.loads(cli("audit", "--home", str(c), "--json")) if not r["own"]]
        assert {r["state"] for r in peers} == {"refused"} and "no privacy audit" in peers[0]["verdict"]
    finally:
        daemons.stop_all()


def cli(*words: str) -> str:
    out = subprocess.run(ffnode_cmd(*words), capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout
