"""Answering queries by Product-of-Experts over every verified, live expert this node holds, and saying which
classes those experts cannot answer.

Coverage. A class is *covered* by the experts that answer a query (`ExpertPool.experts`: each owner's newest
live expert none of whose lineage is revoked) iff at least one of them was trained on images of it, real or
synthetic (its signed manifest's `meta.label_counts`, which build.make_expert records: real images plus
`synth_per_class` for each class sampled from its lineage's factories, all live, or it would not answer) and,
under the prior rule, at least one was trained on *real* images of it (`meta.real_counts`: the federation
prior; without it `poe_combine` gives the class probability about 0). `ffnode.poe.covered` is that rule, and
`poe_combine` uses the same function, so what is reported is what the answer does. An uncovered class is
never predicted (prior rule) or gets only the noise label smoothing leaves it (product rule), so every answer
and `ffnode status` name the uncovered classes and why (`why_uncovered`: its factories were revoked, refused
by this node's audit policy, not arrived, ...). Experts covering fewer than two classes give no answer at all
(`CannotAnswer`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import torch

from ffnode.arch import expert_spec
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.config import check_poe_rule
from ffnode.loaders import load_expert
from ffnode.poe import Priors, covered, poe_predict
from ffnode.privacy.policy import audit_of

log = logging.getLogger("ffnode.query")
MAX_COUNT = 10**8  # label counts above this are not a real site's
# No site's real data may weigh more than this many times the median site's in the federation prior, so one
# liar (counts are the owner's word) shifts the prior by a bounded factor, however large its claims.
PRIOR_CLIP = 4.0


class NoExperts(RuntimeError):
    """No live expert yet: the federation has not finished its first round."""


class CannotAnswer(RuntimeError):
    """The live experts cover fewer than two of the federation's classes, so the query is refused.

    Refused, not answered with a flag: experts that cover one class answer that class for every image, with
    probability about 1.0. Such an answer looks exactly like a confident diagnosis, and a flag beside it
    is easy to miss (or is dropped by a script reading `predictions`). A clinician wants no answer rather
    than a confident wrong one, so the error names the one class covered and those missing, and why."""


def candidates(store: Store) -> list[Manifest]:
    """The experts that may answer a query, by owner: each owner's newest live expert none of whose lineage is
    revoked (the other checks need the model: ExpertPool)."""
    newest: dict[str, Manifest] = {}
    for m in store.live("expert"):
        if not any(store.is_revoked(a) for a in m.lineage) and (m.owner not in newest or m.seq > newest[m.owner].seq):
            newest[m.owner] = m
    return sorted(newest.values(), key=lambda m: m.owner)


class ExpertPool:
    """Live experts as torch modules, reloaded only when the set of live expert IDs changes.

    No single publisher controls an answer: each owner has one vote (its newest live expert); an expert
    takes part only if none of its lineage is revoked (its owner may be offline and never retrain it), it is
    made for the federation's classes and image shape, its label counts are plausible, and it loads. The
    others are left out with a log line, so one bad peer cannot break or steer every query."""

    def __init__(self, store: Store, num_classes: int, image_shape: tuple[int, int, int]) -> None:
        self.store, self.num_classes, self.image_shape = store, num_classes, tuple(image_shape)
        self._lock = threading.Lock()
        self._models: dict[str, torch.nn.Module | None] = {}  # None: could not be used
        self._fits: dict[str, bool] = {}  # expert ID -> whether its manifest passes `_check` (voters)

    def experts(self) -> list[tuple[Manifest, torch.nn.Module]]:
        voters = candidates(self.store)
        with self._lock:
            self._models = {m.id: self._models[m.id] if m.id in self._models else self._load(m) for m in voters}
            return [(m, model) for m in voters if (model := self._models[m.id]) is not None]

    def voters(self) -> list[Manifest]:
        """The experts that answer queries, judged on their manifests alone: what `experts` uses, less any whose
        weights later fail to load. Loads nothing (cheap enough for every `status`, and builds no module, whose
        random init would draw on torch's global generator beside a training thread)."""
        voters = candidates(self.store)
        with self._lock:
            self._fits = {m.id: self._fits[m.id] if m.id in self._fits else self._fits_manifest(m) for m in voters}
            return [m for m in voters if self._fits[m.id] and self._models.get(m.id, True) is not None]

    def _fits_manifest(self, m: Manifest) -> bool:
        try:
            self._check(m)
            return True
        except ValueError:  # logged once, when a query loads it
            return False

    def _check(self, m: Manifest) -> None:
        """ValueError if the expert's manifest does not fit this federation (classes, image shape, counts)."""
        _, n, shape = expert_spec(m)  # a LoadError is a ValueError
        if n != self.num_classes:
            raise ValueError(f"it has {n} classes, the federation {self.num_classes}")
        if shape != self.image_shape:
            raise ValueError(f"it takes {list(shape)} images, the federation's are {list(self.image_shape)}")
        if (reason := implausible_counts(self.store, m, self.num_classes)) is not None:
            raise ValueError(reason)

    def _load(self, m: Manifest) -> torch.nn.Module | None:
        try:
            self._check(m)
            return load_expert(self.store, m)
        except Exception as exc:  # anything a peer signed can be wrong: leave that expert out
            log.warning("leaving expert %s of %s out of queries: %s", m.id[:12], m.owner, exc)
            return None

    def coverage(self, classes: list[str], rule: str) -> dict[str, Any]:
        """What a query would be answered with now, from the manifests alone (`voters`): the `coverage` document
        `ffnode status` shows."""
        return coverage(self.store, self.voters(), classes, rule)

    def query(self, images: np.ndarray, classes: list[str], rule: str) -> dict[str, Any]:
        """images: (B, H, W, C) uint8. Returns predictions, per-class probabilities, the rule and experts used.

        `rule` is "prior" (ffnode.poe's prior-corrected product) or "product" (the paper's); "prior" falls
        back to "product" when an expert's manifest does not give the label counts it was trained on.
        """
        shape = self.image_shape
        if images.ndim != 4 or tuple(images.shape[1:]) != shape:
            raise ValueError(f"images must be {shape[0]}x{shape[1]} with {shape[2]} channel(s), got {images.shape[1:]}")
        experts = self.experts()
        if not experts:
            raise NoExperts(NO_EXPERTS)
        report = coverage(self.store, [m for m, _ in experts], classes, rule)
        if report["refusal"] is not None:
            raise CannotAnswer(report["refusal"])
        priors = priors_for(rule, [m for m, _ in experts], len(classes))
        preds, probs = poe_predict([model for _, model in experts], images, priors)
        return {
            "predictions": [classes[int(p)] for p in preds],
            "labels": [int(p) for p in preds],
            "probabilities": probs.round(6).tolist(),
            "classes": classes,
            "rule": "product" if priors is None else "prior",
            "experts": [{"id": m.id, "owner": m.owner} for m, _ in experts],
            # never predicted (prior rule) or only noise (product rule): an image of one gets another class
            "uncovered_classes": report["uncovered_classes"],
            "uncovered_why": report["uncovered_why"],
        }


NO_EXPERTS = "no live experts yet: wait until `ffnode status` shows phase 'ready'"


def coverage(store: Store, manifests: list[Manifest], classes: list[str], rule: str) -> dict[str, Any]:
    """Which of `classes` the experts of `manifests` can answer under `rule` (the module docstring's
    definition): {"experts", "rule", "uncovered_classes", "uncovered_why" (name -> why), "refusal" (why a
    query is refused: no experts, or fewer than two classes covered; None if it is answered)}."""
    train = []
    for m in manifests:
        try:
            train.append(_label_counts(m.meta, len(classes))[1])
        except ValueError:  # counts unknown (ExpertPool leaves such experts out): it vouches for no class
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


def priors_for(rule: str, manifests: list[Manifest], num_classes: int) -> Priors | None:
    """What `poe_combine` needs for `rule`: the experts' label counts for "prior", None for "product"."""
    check_poe_rule(rule)
    return expert_priors(manifests, num_classes) if rule == "prior" else None


def expert_priors(manifests: list[Manifest], num_classes: int) -> Priors | None:
    """The label counts the experts' manifests record, or None (use the product rule) if one lacks them.

    A peer signs its own counts, so they are checked before they may weigh on every query: per-class
    lists of non-negative ints that add up to the expert's `n_real` and `n_train`, real never above total.
    The real prior counts each site once, from its newest expert (two can be live while one supersedes
    the other).
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
    totals = reals.sum(axis=1)
    cap = PRIOR_CLIP * max(float(np.median(totals)), 1.0)
    reals *= np.minimum(1.0, cap / np.maximum(totals, 1.0))[:, None]  # no owner outweighs the median site 4:1
    return Priors(train_counts=np.array(train, dtype=np.float64), real_counts=reals.sum(axis=0))


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
