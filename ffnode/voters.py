"""Which experts answer a query, judged on their signed manifests alone, and what a query by them can answer.

Torch-free (numpy and the torch-free modules only), so the node process decides who votes, reports coverage in
`ffnode status` and refuses hopeless queries without loading a model: the models run in the query worker
(ffnode.query_worker) or, in-process, in ffnode.query.ExpertPool, and both ask here.

Voters. No single publisher controls an answer: each owner has one vote (its newest live expert, `candidates`);
an expert takes part only if none of its lineage is revoked (its owner may be offline and never retrain it), it
is made for the federation's classes and image shape, its label counts are plausible (`unfit`), and its weights
load. The others are left out with a log line, so one bad peer cannot break or steer every query.

Coverage. A class is *covered* by the experts that answer a query iff at least one of them was trained on images
of it, real or synthetic (its signed manifest's `meta.label_counts`, which the expert build records: real images
plus `synth_per_class` for each class sampled from its lineage's factories, all live, or it would not answer)
and, under the prior rule, at least one was trained on *real* images of it (`meta.real_counts`: the federation
prior; without it `poe_combine` gives the class probability about 0). `covered` is that rule, and
`ffnode.poe.poe_combine` uses the same function, so what is reported is what the answer does. An uncovered class
is never predicted (prior rule) or gets only the noise label smoothing leaves it (product rule), so every answer
and `ffnode status` name the uncovered classes and why (`why_uncovered`: its factories were revoked, refused by
this node's audit policy, not arrived, ...). Experts covering fewer than two classes give no answer at all
(`CannotAnswer`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ffnode.arch import expert_spec
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.config import check_poe_rule
from ffnode.privacy.policy import audit_of

log = logging.getLogger("ffnode.query")
MAX_COUNT = 10**8  # label counts above this are not a real site's
# No site's real data may weigh more than this many times the median site's in the federation prior, so one
# liar (counts are the owner's word) shifts the prior by a bounded factor, however large its claims.
PRIOR_CLIP = 4.0
# Of a class other owners hold too, no owner's real count may exceed this many times theirs together: one owner
# moves the prior odds of a shared class by at most log(1 + PRIOR_SHARE) nats (log 2), however large its claims, so
# with each expert's vote bounded (ffnode.poe, D_C) neither lever lets one owner decide an answer. A class's sole
# holder (every class in a single-class silo) is bounded by PRIOR_CLIP alone.
PRIOR_SHARE = 1.0
# Where those bounds cut a class's real count by more than this factor, the prior is not the federation's: a liar's
# claims, or an honest skewed federation (one site holds 141 images of a class another holds 1 of, and PRIOR_SHARE
# counts 2: that class then looks 70 times rarer than it is, and the prior rule stops predicting it; 0.73 instead of
# 0.98 on a Dirichlet(0.03) digits federation). Either way the query takes an even prior over the classes someone
# holds (no owner's counts move it), and the log says which class's counts were cut. (Not the product rule: there a
# liar's expert is no longer held back by its own counts, and in tests/test_hostile.py it steered the answers.)
PRIOR_TRUST = 2.0
_SAID: set[tuple[int, int, int]] = set()  # the cut counts already logged
NO_EXPERTS = "no live experts yet: wait until `ffnode status` shows phase 'ready'"


class NoExperts(RuntimeError):
    """No live expert yet: the federation has not finished its first round."""


class CannotAnswer(RuntimeError):
    """The live experts cover fewer than two of the federation's classes, so the query is refused.

    Refused, not answered with a flag: experts that cover one class answer that class for every image, with
    probability about 1.0. Such an answer looks exactly like a confident diagnosis, and a flag beside it
    is easy to miss (or is dropped by a script reading `predictions`). A clinician wants no answer rather
    than a confident wrong one, so the error names the one class covered and those missing, and why."""


@dataclass(frozen=True)
class Priors:
    """Label counts behind a set of experts: what each was trained on, and the federation's real data."""

    train_counts: np.ndarray  # (K, C): expert k's training labels per class, real and synthetic
    real_counts: np.ndarray  # (C,): real training images per class, each site counted once, within the bounds
    claimed: np.ndarray | None = None  # (C,): the same as the owners claim them, before the bounds


def covered(train_counts: np.ndarray, real_counts: np.ndarray | None = None) -> np.ndarray:
    """(C,) bool: the classes a PoE over experts trained on `train_counts` (K, C) can answer.

    A class is covered iff at least one expert was trained on images of it (real or synthetic), and, when
    `real_counts` (the prior rule's federation prior) is given, there are real images of it: `poe_combine`
    gives any other class LOG_FLOOR, probability about 0 whatever the image. Under the product rule an
    uncovered class still gets the mass label smoothing leaves it: noise, not evidence."""
    trained = (np.asarray(train_counts).reshape(-1, np.shape(train_counts)[-1]) > 0).any(axis=0)
    return trained if real_counts is None else trained & (np.asarray(real_counts) > 0)


def candidates(store: Store) -> list[Manifest]:
    """The experts that may answer a query, by owner: each owner's newest live expert none of whose lineage is
    revoked (the other checks: `unfit`, and whether its weights load)."""
    newest: dict[str, Manifest] = {}
    for m in store.live("expert"):
        if not any(store.is_revoked(a) for a in m.lineage) and (m.owner not in newest or m.seq > newest[m.owner].seq):
            newest[m.owner] = m
    return sorted(newest.values(), key=lambda m: m.owner)


def unfit(store: Store, m: Manifest, num_classes: int, image_shape: tuple[int, int, int]) -> str | None:
    """Why the expert's manifest does not fit this federation (classes, image shape, label counts), or None."""
    try:
        _, n, shape = expert_spec(m)
    except ValueError as exc:  # a LoadError
        return str(exc)
    if n != num_classes:
        return f"it has {n} classes, the federation {num_classes}"
    if shape != tuple(image_shape):
        return f"it takes {list(shape)} images, the federation's are {list(image_shape)}"
    return implausible_counts(store, m, num_classes)


class Voters:
    """The experts that answer queries now: `candidates` less those `unfit` or whose weights failed to load.

    Each ID's verdict is kept while it is a candidate (an ID names fixed bytes, so judging it again would say
    the same), which makes `current` cheap enough for every `ffnode status`, and each left-out expert is logged
    once. Thread-safe: the node asks from worker threads."""

    def __init__(self, store: Store, num_classes: int, image_shape: tuple[int, int, int]) -> None:
        self.store, self.num_classes, self.image_shape = store, num_classes, tuple(image_shape)
        self._lock = threading.Lock()
        self._verdicts: dict[str, str | None] = {}  # candidate ID -> why it is left out (None: it votes)

    def current(self) -> list[Manifest]:
        """The voters, by owner."""
        voters = candidates(self.store)
        with self._lock:
            self._verdicts = {m.id: self._verdicts[m.id] if m.id in self._verdicts else self._judge(m) for m in voters}
            return [m for m in voters if self._verdicts[m.id] is None]

    def _judge(self, m: Manifest) -> str | None:
        if (why := unfit(self.store, m, self.num_classes, self.image_shape)) is not None:
            log.warning("leaving expert %s of %s out of queries: %s", m.id[:12], m.owner, why)
        return why

    def leave_out(self, m: Manifest, why: str) -> None:
        """An expert whose weights could not be loaded: no vote while it is a candidate."""
        log.warning("leaving expert %s of %s out of queries: %s", m.id[:12], m.owner, why)
        with self._lock:
            if m.id in self._verdicts:
                self._verdicts[m.id] = why

    def coverage(self, classes: list[str], rule: str) -> dict[str, Any]:
        """What a query would be answered with now: the `coverage` document `ffnode status` shows."""
        return coverage(self.store, self.current(), classes, rule)


def check_batch(images: np.ndarray, image_shape: tuple[int, int, int]) -> None:
    """ValueError unless `images` is a (B, H, W, C) batch of the federation's image shape."""
    shape = tuple(image_shape)
    if images.ndim != 4 or tuple(images.shape[1:]) != shape:
        raise ValueError(f"images must be {shape[0]}x{shape[1]} with {shape[2]} channel(s), got {images.shape[1:]}")


def admit(
    store: Store, manifests: Sequence[Manifest], classes: list[str], rule: str
) -> tuple[dict[str, Any], Priors | None]:
    """The coverage report and priors a query by `manifests` is answered with; NoExperts or CannotAnswer if it is
    refused, ValueError for an unknown rule."""
    if not manifests:
        raise NoExperts(NO_EXPERTS)
    report = coverage(store, manifests, classes, rule)
    if report["refusal"] is not None:
        raise CannotAnswer(report["refusal"])
    return report, priors_for(rule, manifests, len(classes))


def answer(
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    manifests: Sequence[Manifest],
    priors: Priors | None,
    report: dict[str, Any],
) -> dict[str, Any]:
    """A query's answer document from the PoE's (B,) labels and (B, C) probabilities."""
    return {
        "predictions": [classes[int(p)] for p in labels],
        "labels": [int(p) for p in labels],
        "probabilities": probs.round(6).tolist(),
        "classes": classes,
        "rule": "product" if priors is None else "prior",
        "experts": [{"id": m.id, "owner": m.owner} for m in manifests],
        # never predicted (prior rule) or only noise (product rule): an image of one gets another class
        "uncovered_classes": report["uncovered_classes"],
        "uncovered_why": report["uncovered_why"],
    }


def coverage(store: Store, manifests: Sequence[Manifest], classes: list[str], rule: str) -> dict[str, Any]:
    """Which of `classes` the experts of `manifests` can answer under `rule` (the module docstring's
    definition): {"experts", "rule", "uncovered_classes", "uncovered_why" (name -> why), "refusal" (why a
    query is refused: no experts, or fewer than two classes covered; None if it is answered)}."""
    train = []
    for m in manifests:
        try:
            train.append(_label_counts(m.meta, len(classes))[1])
        except ValueError:  # counts unknown (`unfit` leaves such experts out): it vouches for no class
            pass
    trained = covered(np.array(train, dtype=np.int64).reshape(-1, len(classes)))  # the product rule's coverage
    priors = priors_for(rule, manifests, len(classes)) if manifests else None
    ok = trained if priors is None else covered(priors.train_counts, priors.real_counts)
    uncovered = [c for c in range(len(classes)) if not ok[c]]
    why = {classes[c]: why_uncovered(store, c, bool(manifests), bool(trained[c])) for c in uncovered}
    refusal = None
    if not manifests:
        refusal = NO_EXPERTS
    elif len(classes) - len(uncovered) < 2:
        names = ", ".join(f"{classes[c]} ({why[classes[c]]})" for c in uncovered)
        if len(uncovered) == len(classes):
            refusal = f"no live expert covers any class: {names}"
        else:
            one = next(classes[c] for c in range(len(classes)) if ok[c])
            refusal = (
                f"the live experts cover only class {one!r}: every image would be answered {one!r}. Not covered: "
                f"{names}. Refused rather than answered; `ffnode status` shows when more classes are covered"
            )
    return {
        "experts": len(manifests),
        "rule": "product" if priors is None else "prior",
        "uncovered_classes": [classes[c] for c in uncovered],
        "uncovered_why": why,
        "refusal": refusal,
    }


FACTORY_STATES = {  # a class's factories in this state (and none live): why no expert covers the class
    "revoked": "its factories were revoked (their site left or withdrew them)",
    "refused": "its factories fail this node's privacy audit policy",
    "untrusted": "their publishers are blocked here",
    "quarantined": "its factories are quarantined here",
}


def why_uncovered(store: Store, label: int, experts: bool, trained: bool) -> str:
    """Why the answering experts do not cover class `label`, in words for `ffnode status` and a query's warning:
    `experts`, whether there are any; `trained`, whether one was trained on images of it (then only real
    images are lacking: the prior rule's case)."""
    if not experts:
        return "no live expert yet"
    if trained:
        return "no live expert of a site holding real images of it (the prior rule gives it no weight)"
    states = {e.state for e in store.entries() if e.manifest.kind == "factory" and label in e.manifest.classes}
    if "live" in states:
        return "its factory is live but no live expert was trained on it yet (retraining)"
    if "pending" in states:
        return "its factory was announced but has not arrived"
    reasons = [FACTORY_STATES[s] for s in sorted(states) if s in FACTORY_STATES]
    return "; ".join(reasons) or "no site has published a factory of it"


def priors_for(rule: str, manifests: Sequence[Manifest], num_classes: int) -> Priors | None:
    """What `poe_combine` needs for `rule`: the experts' label counts for "prior", None for "product" (and for
    "prior" where counts are missing). Where the bounds cut one class's count by more than PRIOR_TRUST, the
    federation prior is even over the classes someone holds."""
    check_poe_rule(rule)
    priors = expert_priors(manifests, num_classes) if rule == "prior" else None
    if priors is None or priors.claimed is None:
        return priors
    cut = priors.claimed / np.maximum(priors.real_counts, 1.0)
    worst = int(np.argmax(cut))
    if cut[worst] <= PRIOR_TRUST:
        return priors
    said = (worst, int(priors.claimed[worst]), int(priors.real_counts[worst]))
    if said not in _SAID:  # once per set of counts, not once per query
        if len(_SAID) >= 1024:  # peers' counts may change without end: the memory of what was said stays small
            _SAID.clear()
        _SAID.add(said)
        log.warning(
            "class %d: the experts' owners claim %d real images of it, %d within the bounds on one owner's share "
            "(a skewed federation, or a liar): answering with an even prior over the classes held", *said,
        )  # fmt: skip
    even = (priors.claimed > 0).astype(np.float64)
    return replace(priors, real_counts=even)


def expert_priors(manifests: Sequence[Manifest], num_classes: int) -> Priors | None:
    """The label counts the experts' manifests record, or None (use the product rule) if one lacks them.

    A peer signs its own counts, so they are checked before they may weigh on every query: per-class
    lists of non-negative ints that add up to the expert's `n_real` and `n_train`, real never above total.
    The real prior counts each site once, from its newest expert (two can be live while one supersedes
    the other), its claims bounded by PRIOR_CLIP and PRIOR_SHARE.
    """
    train, newest = [], {}
    for m in manifests:
        try:
            real, total = _label_counts(m.meta, num_classes)
        except ValueError as exc:
            log.warning("expert %s of %s: %s: answering by the product rule", m.id[:12], m.owner, exc)
            return None
        train.append(total)
        if m.owner not in newest or m.seq > newest[m.owner][0]:
            newest[m.owner] = (m.seq, real)
    reals = np.array([real for _, real in newest.values()], dtype=np.float64)  # (owners, C)
    claimed = reals.sum(axis=0)
    totals = reals.sum(axis=1)
    cap = PRIOR_CLIP * max(float(np.median(totals)), 1.0)
    reals *= np.minimum(1.0, cap / np.maximum(totals, 1.0))[:, None]  # no owner outweighs the median site 4:1
    others = reals.sum(axis=0) - reals  # (owners, C): every other owner's count of each class
    reals = np.where(others > 0, np.minimum(reals, PRIOR_SHARE * others), reals)  # nor doubles a shared class
    return Priors(train_counts=np.array(train, dtype=np.float64), real_counts=reals.sum(axis=0), claimed=claimed)


def implausible_counts(store: Store, m: Manifest, num_classes: int) -> str | None:
    """Why an expert's label counts cannot be right, or None. Beyond their own consistency (_label_counts):
    each class's synthetic count is 0 or the arch's synth_per_class, and only for a class a factory of its lineage
    makes (so no expert can claim classes it never saw and look like their cover), and the real counts agree with the
    images of every factory the same owner published for a class: n_train, plus the images its audit held out
    of factory training (the expert trains on all of them)."""
    try:
        real, total = _label_counts(m.meta, num_classes)
    except ValueError as exc:
        return str(exc)
    per_class = m.arch.get("synth_per_class")
    if any(t - r not in (0, per_class) for r, t in zip(real, total, strict=True)):
        return f"synthetic counts other than 0 or synth_per_class {per_class!r}"
    drawn = {c for aid in m.lineage if (f := store.get(aid)) is not None and f.kind == "factory" for c in f.classes}
    if claimed := [c for c in range(num_classes) if total[c] > real[c] and c not in drawn]:
        return f"synthetic images of class {claimed[0]}, which no factory of its lineage makes"
    for e in store.entries():
        f = e.manifest
        if f.kind == "factory" and f.owner == m.owner and f.classes[0] < num_classes:
            audit = audit_of(f.meta)
            held = audit["n_holdout"] if isinstance(audit, dict) else 0
            n = f.meta.get("n_train")
            if type(n) is int and real[f.classes[0]] != n + held:
                return f"{real[f.classes[0]]} real images of class {f.classes[0]}, its factory says {n + held}"
    return None


def _label_counts(meta: dict[str, Any], num_classes: int) -> tuple[list[int], list[int]]:
    """An expert's (real_counts, label_counts), or a ValueError that says what is wrong with them."""
    counts = []
    for key, total_key in (("real_counts", "n_real"), ("label_counts", "n_train")):
        value = meta.get(key)
        if not isinstance(value, list) or len(value) != num_classes:
            raise ValueError(f"no {key} list of {num_classes} classes")
        if not all(type(x) is int and 0 <= x <= MAX_COUNT for x in value):
            raise ValueError(f"{key} holds something other than counts 0..{MAX_COUNT}")
        if sum(value) != meta.get(total_key):
            raise ValueError(f"{key} does not add up to {total_key}")
        counts.append(value)
    real, total = counts
    if any(r > t for r, t in zip(real, total, strict=True)):
        raise ValueError("more real than training images of a class")
    return real, total
