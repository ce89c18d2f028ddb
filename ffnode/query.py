"""Answering queries by Product-of-Experts over every verified, live expert this node holds."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors

from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.expert.resnet import ExpertConfig, build_expert
from ffnode.poe import poe_predict

log = logging.getLogger("ffnode.query")


class NoExperts(RuntimeError):
    """No live expert yet: the federation has not finished its first round."""


class ExpertPool:
    """Live experts as torch modules, reloaded only when the set of live expert IDs changes.

    An expert takes part only if it is live, none of its lineage is revoked (its owner may be offline and
    never retrain it), it has the federation's classes, and it loads; the others are left out with a log
    line, so one bad peer cannot break every query."""

    def __init__(self, store: Store, num_classes: int) -> None:
        self.store, self.num_classes = store, num_classes
        self._lock = threading.Lock()
        self._models: dict[str, torch.nn.Module | None] = {}  # None: could not be used

    def experts(self) -> list[tuple[Manifest, torch.nn.Module]]:
        revoked = {aid for r in self.store.revocations() for aid in r.ids}
        live = [m for m in self.store.live("expert") if not revoked & set(m.lineage)]
        with self._lock:
            self._models = {m.id: self._models[m.id] if m.id in self._models else self._load(m) for m in live}
            return [(m, model) for m in live if (model := self._models[m.id]) is not None]

    def _load(self, m: Manifest) -> torch.nn.Module | None:
        try:
            if m.arch["num_classes"] != self.num_classes:
                raise ValueError(f"it has {m.arch['num_classes']} classes, the federation {self.num_classes}")
            return _load(self.store, m)
        except Exception as exc:  # anything a peer signed can be wrong: leave that expert out
            log.warning("leaving expert %s of %s out of queries: %s", m.id[:12], m.owner, exc)
            return None

    def query(self, images: np.ndarray, classes: list[str]) -> dict[str, Any]:
        """images: (B, H, W, C) uint8. Returns predictions, per-class probabilities and the experts used."""
        experts = self.experts()
        if not experts:
            raise NoExperts("no live experts yet: wait until `ffnode status` shows phase 'ready'")
        shape = tuple(experts[0][0].arch["image_shape"])
        experts = [(m, model) for m, model in experts if tuple(m.arch["image_shape"]) == shape]
        if images.ndim != 4 or tuple(images.shape[1:]) != shape:
            raise ValueError(f"images must be {shape[0]}x{shape[1]} with {shape[2]} channel(s), got {images.shape[1:]}")
        preds, probs = poe_predict([model for _, model in experts], images)
        return {
            "predictions": [classes[int(p)] for p in preds],
            "labels": [int(p) for p in preds],
            "probabilities": probs.round(6).tolist(),
            "classes": classes,
            "experts": [{"id": m.id, "owner": m.owner} for m, _ in experts],
        }


def _load(store: Store, m: Manifest) -> torch.nn.Module:
    model = build_expert(ExpertConfig.from_dict(m.arch["expert"]), m.arch["num_classes"], tuple(m.arch["image_shape"]))
    model.load_state_dict(load_safetensors(store.read_blob(m)))
    return model.eval()
