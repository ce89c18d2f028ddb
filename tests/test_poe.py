"""Product of Experts: the combination rule against hand-computed numbers, and end-to-end prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

from ffnode.artifacts.manifest import Manifest
from ffnode.expert.config import ExpertConfig
from ffnode.expert.resnet import expert_from_weights
from ffnode.expert.train import expert_log_probs, train_expert
from ffnode.poe import LOG_FLOOR, Priors, poe_combine, poe_predict, vote_bound
from ffnode.voters import PRIOR_CLIP, PRIOR_SHARE, expert_priors, priors_for


def test_combine_matches_hand_computation() -> None:
    p1 = torch.tensor([[0.7, 0.2, 0.1]])
    p2 = torch.tensor([[0.2, 0.5, 0.3]])
    out = poe_combine(torch.stack([p1.log(), p2.log()]))  # (2, 1, 3) -> (1, 3)
    product = torch.tensor([0.14, 0.10, 0.03])
    assert torch.allclose(out.exp()[0], product / product.sum(), atol=1e-6)


def test_bound_keeps_one_expert_from_vetoing() -> None:
    certain_no = torch.tensor([[[0.0, -math.inf]]])  # expert 1: class 1 is impossible
    others = torch.tensor([[[-20.0, 0.0]], [[-10.0, 0.0]]])  # experts 2 and 3: class 1, confidently
    out = poe_combine(torch.cat([certain_no, others]))  # every vote floored at its expert's best less D_2 = log 19
    assert vote_bound(2) == pytest.approx(math.log(19))  # smoothing 0.1 trains towards 0.95 : 0.05
    # class 0: 0 - D - D, class 1: -D + 0 + 0, so class 1 leads by D: 19 : 1
    assert out.argmax(1).item() == 1 and torch.allclose(out.exp()[0, 1], torch.tensor(0.95))
    assert torch.isfinite(out).all()
    unbounded = poe_combine(torch.cat([certain_no, others]), bound=math.inf)  # the clamp at 1e-12 alone
    assert torch.allclose(unbounded.exp()[0, 1], torch.tensor(1 / (1 + math.exp(-30 - math.log(1e-12)))))


def test_combine_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(K, B, C\)"):
        poe_combine(torch.zeros(3, 4))


def test_prior_rule_matches_hand_computation() -> None:
    """mean_k [log p_k - log pi_k] + log pi, renormalised: worked out for two experts and two classes, whose
    likelihood votes stay within the bound (expert 1's span log(7/3 * 5) = 2.46 < D_2 = 2.94)."""
    p = torch.tensor([[[0.7, 0.3]], [[0.4, 0.6]]])  # (K=2, B=1, C=2)
    priors = Priors(train_counts=np.array([[100, 500], [500, 300]]), real_counts=np.array([100, 300]))
    pi_k = torch.tensor([[1 / 6, 5 / 6], [5 / 8, 3 / 8]])
    pi = torch.tensor([0.25, 0.75])
    logits = (p[:, 0].log() - pi_k.log()).mean(0) + pi.log()
    out = poe_combine(p.log(), priors)
    assert torch.allclose(out[0], torch.log_softmax(logits, 0), atol=1e-6)
    with pytest.raises(ValueError, match="priors must be"):
        poe_combine(p.log(), Priors(np.ones((3, 2)), np.ones(2)))


def test_prior_rule_weights_the_real_prior_once_against_the_mean_likelihood() -> None:
    """Silo experts that each read the same evidence: the product lets it outvote the prior K-fold."""
    k, n = 5, np.array([900, 100])  # class 0 is 9x as common; every expert trained class-balanced
    evidence = torch.tensor([0.3, 0.7]).log()  # each expert alone: class 1 at 70 %
    log_probs = evidence.expand(k, 1, 2)
    priors = Priors(train_counts=np.full((k, 2), 500), real_counts=n)
    assert poe_combine(log_probs).argmax(1).item() == 1  # (7/3)^5 = 69 > 9
    assert poe_combine(log_probs, priors).argmax(1).item() == 0  # 7/3 < 9
    assert torch.isfinite(poe_combine(log_probs, Priors(np.zeros((k, 2)), np.array([0, 10])))).all()


def test_prior_rule_ignores_an_expert_on_a_class_it_never_saw() -> None:
    """Expert 2 had no class-2 images: its smoothed mass on class 2 must not become a bonus for class 2."""
    log_probs = torch.tensor([[[0.6, 0.3, 0.1]], [[0.1, 0.1, 0.8]], [[0.5, 0.45, 0.05]]]).log()
    counts = np.array([[300, 100, 100], [100, 100, 0], [100, 300, 100]])
    priors = Priors(train_counts=counts, real_counts=np.array([300, 300, 100]))
    out = poe_combine(log_probs, priors)[0]
    assert out.argmax().item() == 0  # counting expert 2's 0.8 on class 2 against a zero prior would pick 2
    share = torch.tensor(counts / counts.sum(1, keepdims=True)).log()  # (K, C) log pi_k
    lik = log_probs[:, 0] - share.float()  # (K, C)
    expected = torch.stack([lik[:, 0].mean(), lik[:, 1].mean(), lik[[0, 2], 2].mean()])  # class 2: experts 0, 2
    expected += torch.tensor([0.3, 0.3, 0.1]).log()
    assert torch.allclose(out, torch.log_softmax(expected, 0), atol=1e-5)
    gone = poe_combine(log_probs, Priors(counts, np.array([300, 300, 0])))[0]
    assert gone[2].exp() < 1e-9  # no real images of class 2 anywhere: the class is not predicted


def expert_manifest(owner: str, seq: int, real: list, total: list, **meta: object) -> Manifest:
    return Manifest(
        kind="expert", owner=owner, owner_key=b"k", federation="f", classes=[0, 1], class_list=["a", "b"], arch={},
        blob="0" * 64, size=1, created=0, seq=seq,
        meta={"real_counts": real, "label_counts": total, "n_real": sum(real), "n_train": sum(total)} | meta,
    )  # fmt: skip


def test_expert_priors_from_manifests_are_checked() -> None:
    a = expert_manifest("A", 1, [100, 0], [100, 50])
    b = expert_manifest("B", 2, [0, 40], [50, 40])
    b_new = expert_manifest("B", 5, [0, 30], [50, 30])
    p = expert_priors([a, b, b_new], 2)
    assert p is not None and p.train_counts.tolist() == [[100, 50], [50, 40], [50, 30]]
    assert p.real_counts.tolist() == [100, 30]  # B counted once, from its newest expert
    bad = [
        expert_manifest("C", 1, [1, 2], [1, 2], n_real=99),  # counts that do not add up
        expert_manifest("C", 1, [5, 0], [1, 4]),  # more real than total images of class 0
        expert_manifest("C", 1, [1.0, 2], [1, 2]),  # floats
        expert_manifest("C", 1, [True, 2], [1, 2]),  # bools
        expert_manifest("C", 1, [2**40, 0], [2**40, 0]),  # absurd sizes
        expert_manifest("C", 1, [1, 2, 3], [1, 2, 3]),  # the wrong number of classes
        expert_manifest("C", 1, [-1, 2], [1, 2]),
    ]
    for m in bad:
        assert expert_priors([a, m], 2) is None, m.meta
    old = expert_manifest("D", 1, [1, 1], [1, 1])
    old.meta.pop("label_counts")
    assert expert_priors([a, old], 2) is None  # an older expert: the product rule


class Fixed(nn.Module):
    """An 'expert' that returns fixed logits, so PoE's output can be worked out by hand."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(images), -1)


def test_predict_combines_models() -> None:
    models = [Fixed([2.0, 0.0, 0.0]), Fixed([0.0, 3.0, 0.0])]
    preds, probs = poe_predict(models, np.zeros((5, 4, 4, 1), np.uint8))
    expected = torch.softmax(torch.tensor([2.0, 3.0, 0.0]), 0).numpy()  # log_softmax sums = logit sums + const
    assert preds.tolist() == [1] * 5 and np.allclose(probs[0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="at least one expert"):
        poe_predict([], np.zeros((1, 4, 4, 1), np.uint8))


def test_one_liar_moves_the_prior_by_a_bounded_factor() -> None:
    """A liar's counts weigh at most PRIOR_SHARE x the other owners' of a class they hold too, and at most
    PRIOR_CLIP x the median site's total of a class it alone claims."""
    honest = [expert_manifest(o, 1, [100 if i == j else 0 for j in range(3)], [100 if i == j else 50 for j in range(3)])
              for i, o in enumerate("ABC")]  # fmt: skip
    liar = expert_manifest("M", 1, [10**7, 0, 0], [10**7, 50, 50])
    p = expert_priors([*honest, liar], 3)
    assert p is not None
    # A holds 100 images of class 0: the liar's 10^7 count as PRIOR_SHARE x 100, odds of class 0 moved log 2
    assert np.allclose(p.real_counts, [100 + PRIOR_SHARE * 100, 100, 100])
    assert expert_priors(honest, 3).real_counts.tolist() == [100, 100, 100]  # honest sites are untouched
    alone = expert_priors([*honest[1:], liar], 3)  # nobody else holds class 0: the median site's 100, times 4
    assert alone is not None and np.allclose(alone.real_counts, [PRIOR_CLIP * 100, 100, 100])
    shared = [expert_manifest(o, 1, [n, 0, 100], [n, 50, 100]) for o, n in (("A", 300), ("B", 100), ("C", 100))]
    # the price: an honest site holding more of a class than all the others together counts as much as they do
    capped = expert_priors(shared, 3)
    assert capped is not None and capped.real_counts.tolist() == [200 + 100 + 100, 0, 300]


def test_counts_the_bounds_cut_hard_give_way_to_an_even_prior(caplog: pytest.LogCaptureFixture) -> None:
    """Where the bounds cut a class's claimed real count by more than PRIOR_TRUST (2x), the federation prior is even
    over the classes someone holds and the log names the class: a liar's claims, and an honest skewed federation
    alike. The latter is the Dirichlet(0.03) digits federation's: one site holds 141 images of class 0 and another
    1, so PRIOR_SHARE counts 2 and the prior rule stopped predicting class 0 (0.73; 0.98 with the even prior)."""
    honest = [expert_manifest(o, 1, [100 if i == j else 0 for j in range(3)], [100 if i == j else 50 for j in range(3)])
              for i, o in enumerate("ABC")]  # fmt: skip
    assert priors_for("prior", honest, 3).real_counts.tolist() == [100, 100, 100] and not priors_for(
        "product", honest, 3
    )
    liar = expert_manifest("M", 1, [10**7, 0, 0], [10**7, 50, 50])
    assert expert_priors([*honest, liar], 3).real_counts.tolist() == [200, 100, 100]  # bounded, as above
    lied = priors_for("prior", [*honest, liar], 3)
    assert lied is not None and lied.real_counts.tolist() == [1, 1, 1]  # but not the federation's: even
    assert "class 0: the experts' owners claim 10000100 real images of it, 200 within the bounds" in caplog.text
    skewed = [expert_manifest("A", 1, [141, 0, 0], [141, 50, 50]), expert_manifest("B", 1, [1, 100, 0], [1, 100, 50]),
              expert_manifest("C", 1, [0, 0, 0], [50, 50, 100])]  # fmt: skip
    assert priors_for("prior", skewed, 3).real_counts.tolist() == [1, 1, 0]  # nobody holds class 2: still uncovered
    shared = [expert_manifest(o, 1, [n, 0, 100], [n, 50, 100]) for o, n in (("A", 300), ("B", 100), ("C", 100))]
    assert priors_for("prior", shared, 3).real_counts.tolist() == [400, 0, 300]  # 500 claimed, 400: within 2x


def test_an_expert_answering_nan_costs_only_its_own_vote() -> None:
    good = torch.tensor([[[0.1, 0.8, 0.1]], [[0.2, 0.7, 0.1]]]).log()
    bad = torch.full((1, 1, 3), float("nan"))
    out = poe_combine(torch.cat([good, bad]))
    assert torch.isfinite(out).all() and out[0].argmax().item() == 1


def smoothed_expert(label: int, num_classes: int, margin: float | None = None) -> torch.Tensor:
    """(1, 1, C) log-probabilities of an honest expert sure of `label`: by default at label smoothing's optimum
    (1 - eps + eps/C against eps/C, a margin of D_C), else `margin` nats over every other class."""
    margin = vote_bound(num_classes) if margin is None else margin
    return torch.log_softmax(torch.where(torch.arange(num_classes) == label, margin, 0.0), 0)[None, None, :]


def loud_liar(label: int, num_classes: int) -> torch.Tensor:
    """(1, 1, C): every class but `label` at the 1e-12 floor, the loudest vote the clamp lets through."""
    return torch.where(torch.arange(num_classes) == label, 0.0, LOG_FLOOR)[None, None, :]


def test_one_loud_expert_cannot_flip_what_two_honest_experts_agree_on() -> None:
    """Issue 34: one hostile expert at the floor outvoted ~6 honest ones; bounded, it cannot outvote two, under
    either rule, even when it also claims a training prior near 0 for its class (a bonus of 18 nats)."""
    c, agreed, liar_class = 10, 3, 7
    smoothing = 0.1  # label smoothing's optimum: 1 - eps + eps/C on the label, eps/C elsewhere
    honest = smoothed_expert(agreed, c)
    assert torch.allclose(honest[0, 0, agreed].exp(), torch.tensor(1 - smoothing + smoothing / c))
    log_probs = torch.cat([honest, honest, loud_liar(liar_class, c)])  # (3, 1, C)
    lying_counts = np.full(c, 10**8)
    lying_counts[liar_class] = 1  # "I saw almost none of class 7": dividing that prior out is its bonus
    priors = Priors(np.stack([np.full(c, 500), np.full(c, 500), lying_counts]), np.full(c, 100))
    for p in (None, priors):
        assert poe_combine(log_probs, p, bound=math.inf).argmax(1).item() == liar_class  # the rules before the bound
        assert poe_combine(log_probs, p).argmax(1).item() == agreed
    # what the bound promises, and no more: two honest experts each over D_C / 2 nats sure hold, under it they don't
    for margin, held in ((0.55 * vote_bound(c), True), (0.45 * vote_bound(c), False)):
        weaker = smoothed_expert(agreed, c, margin)
        assert (poe_combine(torch.cat([weaker, weaker, loud_liar(liar_class, c)])).argmax(1).item() == agreed) is held


@pytest.mark.parametrize("rule", ["product", "prior"])
def test_an_expert_moves_any_two_classes_apart_by_at_most_the_bound(rule: str) -> None:
    """Whatever one expert answers (random, loud, NaN), adding it moves each class's combined logit against
    another's by at most D_C: its own vote under the product, 1/(K+1) of it under the mean of the prior rule."""
    gen = torch.Generator().manual_seed(0)
    k, b, c = 4, 300, 6
    honest = torch.log_softmax(3 * torch.randn(k, b, c, generator=gen), -1)
    hostile = torch.log_softmax(100 * torch.randn(1, b, c, generator=gen), -1)
    hostile[0, :10] = float("nan")
    counts = np.random.default_rng(0).integers(50, 500, (k + 1, c))
    real = np.full(c, 100)
    without = poe_combine(honest, None if rule == "product" else Priors(counts[:k], real))
    with_it = poe_combine(torch.cat([honest, hostile]), None if rule == "product" else Priors(counts, real))
    gaps = lambda out: out[:, :, None] - out[:, None, :]  # noqa: E731  (B, C, C): class i's logit less class j's
    # (K + 1) mean_with - K mean_without is the hostile's own vote gap; under the product both weights are 1
    w_with, w_without = (1, 1) if rule == "product" else (k + 1, k)
    moved = w_with * gaps(with_it) - w_without * gaps(without)
    if rule == "prior":  # the federation prior log pi is in both, at weight 1: take it out of the difference
        share = torch.tensor(real / real.sum()).log().float()
        moved -= (w_with - w_without) * (share[:, None] - share[None, :])
    assert moved.abs().max() <= vote_bound(c) + 1e-4
    assert moved.abs().max() >= 0.9 * vote_bound(c)  # the hostile used its whole voice, and no more


def test_a_loud_expert_among_real_trained_ones() -> None:
    """Two experts trained on real digits (each half the training set) and a module that always shouts class 0:
    wherever the two agree on another class, each over D_C / 2 nats against class 0, the liar cannot flip it."""
    x, y = load_digits(return_X_y=True)
    images = np.round(x * 255 / 16).astype(np.uint8).reshape(-1, 8, 8, 1)
    train, test = slice(0, 1400), slice(1400, None)
    cfg = ExpertConfig(width=16, blocks=(1, 1), epochs=4)  # ~1 s of CPU each
    honest = []
    for half in (slice(0, 700), slice(700, 1400)):
        weights, _ = train_expert(images[train][half], y[train][half], 10, cfg, seed=1)
        honest.append(expert_from_weights(weights, cfg, 10, (8, 8, 1)))
    liar = Fixed([1e4] + [0.0] * 9)  # log_softmax: class 0 at 0, every other class far below the floor
    honest_lp = torch.stack([expert_log_probs(m, images[test]) for m in honest])  # (2, B, 10)
    agreed = honest_lp.argmax(-1)  # (2, B)
    margins = honest_lp - honest_lp[:, :, :1]  # (2, B, C): each expert's log-odds of each class against class 0
    sure = margins.gather(-1, agreed[:, :, None])[..., 0]  # (2, B)
    held = (agreed[0] == agreed[1]) & (agreed[0] != 0) & (sure > vote_bound(10) / 2).all(0)  # (B,)
    assert held.float().mean() > 0.5  # the guarantee covers most answers of real, smoothed experts
    preds, _ = poe_predict([*honest, liar], images[test])
    assert (preds[held.numpy()] == agreed[0][held].numpy()).all()
    all_lp = torch.cat([honest_lp, expert_log_probs(liar, images[test])[None]])
    unbounded = poe_combine(all_lp, bound=math.inf).argmax(1)
    assert (unbounded[held] == 0).float().mean() > 0.9  # before the bound the liar took nearly all of them
