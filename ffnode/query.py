"""Answering queries by Product-of-Experts in this process: the experts ffnode.voters admits, as torch modules.

The running node never imports torch: it asks the query worker (ffnode.query_worker), a process that holds an
`ExpertCache` like the one here. ExpertPool answers where no node runs: `ffnode query` on a stopped node,
scripts and tests. Both leave the same experts out, refuse the same queries and return the same answer
document: the judgement is ffnode.voters', the loading and caching `ExpertCache`'s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch.nn as nn

from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.loaders import load_expert
from ffnode.poe import poe_predict
from ffnode.voters import Voters, admit, answer, check_batch


class ExpertCache:
    """Expert modules by artifact ID: each loaded once and kept while it is asked for, dropped when it is not.

    An ID names fixed bytes, so a module (or the reason it could not be loaded) stays right for as long as the
    ID is named; loading is the costly part of a query (a module per expert from its blob)."""

    def __init__(self) -> None:
        self._held: dict[str, nn.Module | str] = {}  # str: why it could not be loaded

    def sync(
        self, ids: Sequence[str], load: Callable[[str], nn.Module]
    ) -> tuple[list[tuple[str, nn.Module]], dict[str, str]]:
        """The modules of `ids` in their order, loading (`load`) those not held and dropping those not named; and
        ID -> why for those that could not be loaded (left out of the list, not tried again while named)."""
        self._held = {aid: self._held[aid] if aid in self._held else _try_load(load, aid) for aid in ids}
        models = [(aid, held) for aid, held in self._held.items() if not isinstance(held, str)]
        return models, {aid: held for aid, held in self._held.items() if isinstance(held, str)}


def _try_load(load: Callable[[str], nn.Module], aid: str) -> nn.Module | str:
    try:
        return load(aid)
    except Exception as exc:  # anything a peer signed can be wrong: that expert is left out, not the query
        return str(exc) or type(exc).__name__


class ExpertPool:
    """The voters (ffnode.voters.Voters) as torch modules in this process, each loaded once per ID."""

    def __init__(self, store: Store, num_classes: int, image_shape: tuple[int, int, int]) -> None:
        self.store, self.image_shape = store, tuple(image_shape)
        self.voters = Voters(store, num_classes, image_shape)
        self._cache = ExpertCache()
        self._lock = threading.Lock()

    def experts(self) -> list[tuple[Manifest, nn.Module]]:
        """The voters and their modules, less any whose weights fail to load (left out with a log line)."""
        with self._lock:
            voters = {m.id: m for m in self.voters.current()}
            models, failed = self._cache.sync(list(voters), lambda aid: load_expert(self.store, voters[aid]))
            for aid, why in failed.items():
                self.voters.leave_out(voters[aid], why)
        return [(voters[aid], model) for aid, model in models]

    def coverage(self, classes: list[str], rule: str) -> dict[str, Any]:
        """What a query would be answered with now, from the manifests alone (loads nothing): the `coverage`
        document `ffnode status` shows."""
        return self.voters.coverage(classes, rule)

    def query(self, images: np.ndarray, classes: list[str], rule: str) -> dict[str, Any]:
        """images: (B, H, W, C) uint8. Returns predictions, per-class probabilities, the rule and experts used.

        `rule` is "prior" (ffnode.poe's prior-corrected product) or "product" (the paper's); "prior" falls
        back to "product" when an expert's manifest does not give the label counts it was trained on.
        """
        check_batch(images, self.image_shape)
        experts = self.experts()
        manifests = [m for m, _ in experts]
        report, priors = admit(self.store, manifests, classes, rule)
        preds, probs = poe_predict([model for _, model in experts], images, priors)
        return answer(preds, probs, classes, manifests, priors, report)
