"""Answering queries by Product-of-Experts over every verified, live expert this node holds."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors

from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.expert.resnet import ExpertConfig, build_expert
from ffnode.poe import poe_predict


class NoExperts(RuntimeError):
    """No live expert yet: the federation has not finished its first round."""


class ExpertPool:
    """Live experts as torch modules, reloaded only when the set of live expert IDs changes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._models: dict[str, torch.nn.Module] = {}

    def experts(self) -> list[tuple[Manifest, torch.nn.Module]]:
        live = self.store.live("expert")
        with self._lock:
            self._models = {m.id: self._models.get(m.id) or _load(self.store, m) for m in live}
            return [(m, self._models[m.id]) for m in live]

    def query(self, images: np.ndarray, classes: list[str]) -> dict[str, Any]:
        """images: (B, H, W, C) uint8. Returns predictions, per-class probabilities and the experts used."""
        experts = self.experts()
        if not experts:
            raise NoExperts("no live experts yet: wait until `ffnode status` shows phase 'ready'")
        shape = tuple(experts[0][0].arch["image_shape"])
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
