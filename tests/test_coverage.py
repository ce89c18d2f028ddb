"""What the PoE cannot answer is visible: which classes the answering experts cover (ffnode.poe.covered, the
rule `poe_combine` applies), every answer naming the others, and experts of one class refusing to answer.
In-process over ExpertPool and a Store; the real-daemon scenario (a site leaves) is in test_stopped_node.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.identity import Identity
from ffnode.poe import Priors, covered, poe_combine
from ffnode.query import ExpertPool
from ffnode.voters import CannotAnswer, coverage, implausible_counts
from tests.test_poe import Fixed

CLASSES = ["a", "b", "c"]


def expert(owner: str, real: list[int], total: list[int]) -> Manifest:
    """An expert manifest whose label counts say what it was trained on (real, and real plus synthetic)."""
    return Manifest(
        kind="expert", owner=owner, owner_key=b"k", federation="f", classes=[0, 1, 2], class_list=CLASSES,
        arch={}, blob="0" * 64, size=1, created=0, seq=1,
        meta={"real_counts": real, "label_counts": total, "n_real": sum(real), "n_train": sum(total)},
    )  # fmt: skip


def pool_of(tmp_path: Path, experts: list[tuple[Manifest, nn.Module]]) -> ExpertPool:
    pool = ExpertPool(Store(tmp_path / "store", federation="f"), len(CLASSES), (4, 4, 1))
    pool.experts = lambda: experts  # type: ignore[method-assign]  # the experts the store would give
    return pool


def test_covered_is_what_poe_combine_can_answer() -> None:
    train = np.array([[100, 50, 0], [50, 100, 0]])  # nobody was trained on class 2
    assert covered(train).tolist() == [True, True, False]  # the product rule: trained on it is enough
    # the prior rule also needs real images of the class somewhere: class 1 here has none
    assert covered(train, np.array([100, 0, 0])).tolist() == [True, False, False]
    log_probs = torch.log_softmax(torch.tensor([[[0.0, 5.0, 9.0]], [[0.0, 5.0, 9.0]]]), dim=-1)
    p = poe_combine(log_probs, Priors(train, np.array([100, 0, 0]))).exp()[0]
    assert p[1] < 1e-6 and p[2] < 1e-6 and p[0] > 0.99  # the uncovered ones get nothing, however sure the experts


def test_a_lost_class_is_named_in_every_answer(tmp_path: Path) -> None:
    """Site c left: the experts of a and b were retrained without its class. The answer still comes, and names
    class c as uncovered (with why: nobody published a factory of it here)."""
    a = expert("A", [100, 0, 0], [100, 50, 0])
    b = expert("B", [0, 100, 0], [50, 100, 0])
    pool = pool_of(tmp_path, [(a, Fixed([1.0, 0.0, 8.0])), (b, Fixed([0.0, 1.0, 8.0]))])
    result = pool.query(np.zeros((2, 4, 4, 1), np.uint8), CLASSES, "prior")
    assert result["uncovered_classes"] == ["c"]
    assert result["uncovered_why"] == {"c": "no site has published a factory of it"}
    assert result["predictions"] == ["a", "a"] and max(p[2] for p in result["probabilities"]) < 1e-6
    product = pool.query(np.zeros((1, 4, 4, 1), np.uint8), CLASSES, "product")
    assert product["uncovered_classes"] == ["c"]  # by the product rule its probability is noise: flagged too
    full = pool_of(tmp_path, [(expert("A", [100, 0, 0], [100, 50, 50]), Fixed([1.0, 0.0, 0.0])),
                              (expert("B", [0, 100, 100], [50, 100, 100]), Fixed([0.0, 1.0, 0.0]))])  # fmt: skip
    assert full.query(np.zeros((1, 4, 4, 1), np.uint8), CLASSES, "prior")["uncovered_classes"] == []


def test_experts_of_one_class_refuse_to_answer_and_name_it(tmp_path: Path) -> None:
    """A one-class federation (or all others left) answered its one class for every image, p about 1.0."""
    only_a = expert("A", [100, 0, 0], [100, 0, 0])
    pool = pool_of(tmp_path, [(only_a, Fixed([0.0, 0.0, 0.0]))])
    with pytest.raises(CannotAnswer, match="cover only class 'a': every image would be answered 'a'") as caught:
        pool.query(np.zeros((1, 4, 4, 1), np.uint8), CLASSES, "prior")
    assert "b (no site has published a factory of it)" in str(caught.value)
    # synthetic images of b without any real ones leave b uncovered by the prior rule: still refused, and why
    synth_only = expert("A", [100, 0, 0], [100, 50, 0])
    report = coverage(pool.store, [synth_only], CLASSES, "prior")
    assert report["uncovered_classes"] == ["b", "c"] and report["refusal"] is not None
    assert "real images" in report["uncovered_why"]["b"]
    assert coverage(pool.store, [synth_only], CLASSES, "product")["refusal"] is None  # two classes trained on
    assert coverage(pool.store, [], CLASSES, "prior")["refusal"].startswith("no live experts yet")


def test_synthetic_counts_only_for_classes_its_lineage_makes(tmp_path: Path) -> None:
    """A peer's expert claiming synthetic images of a class no factory of its lineage makes would make that class
    look covered (status, queries) while nothing real stands behind it: its counts are refused."""
    store = Store(tmp_path / "store", federation="f", classes=CLASSES)
    site = Identity(b"\x21" * 32)
    factory = Manifest("factory", site.peer_id, site.public_key, "f", [1], CLASSES, {}, "1" * 64, 1, 1, 1)
    store.add(factory.seal(site))

    def claiming(total: list[int], lineage: list[str]) -> Manifest:
        m = expert("E", [100, 0, 0], total)
        return Manifest(**(m.body() | {"arch": {"synth_per_class": 50}, "lineage": lineage}))

    assert implausible_counts(store, claiming([100, 50, 0], [factory.id]), 3) is None
    reason = implausible_counts(store, claiming([100, 50, 50], [factory.id]), 3)
    assert reason == "synthetic images of class 2, which no factory of its lineage makes"
    assert implausible_counts(store, claiming([100, 50, 0], []), 3) is not None  # nothing cited, nothing drawn
