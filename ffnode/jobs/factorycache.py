"""The factory cache: a site's own trained factories, kept so that a sweep never trains the same one twice.

A factory job is a pure function of its class's images, the label, the FactoryConfig, the node seed (the factory's,
hold-out's and audit's seeds derive from it and the label) and the privacy settings (the hold-out, the DP plan, the
audit and the policy that picks the published snapshot), on one kind of machine. An entry is keyed by all of them
(every field of both configs: a field that does not change the factory costs a miss, never a wrong hit) and by
the variant (torch's version and threads, the device and whether it computes in bf16), so a hit is bitwise what a
fresh run gives: the weights (safetensors, no pickle), the summary the manifest carries, why it was withheld, and
the audit record the owner reads (`ffnode audit`). A withheld factory is cached too: its verdict is as pure.

Only a site's own factories go in (a factory job trains nothing else), never a peer's bytes. Each entry records the
digest of the class images it was trained from, so a site that withdraws a class or leaves deletes every entry of
that data (`purge`, from daemon/unlearn.py): exact unlearning holds for the cache as for the synthetic sets.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ffnode.artifacts.codec import canonical_bytes
from ffnode.jobs.contentcache import ContentCache

log = logging.getLogger("ffnode.jobs")


def class_digest(images: np.ndarray) -> str:
    """sha256 of one class's images (shape, dtype, bytes): what an entry says it was trained from."""
    h = hashlib.sha256(canonical_bytes([list(images.shape), images.dtype.str]))
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()


def class_digests(images: np.ndarray, labels: np.ndarray, classes: Iterable[int]) -> set[str]:
    """The digests of a site's images of each of `classes` (those it holds none of give none)."""
    return {class_digest(images[labels == c]) for c in classes if np.any(labels == c)}


@dataclass(frozen=True)
class CachedFactory:
    """What a factory job returns, as it was built: `weights` is a safetensors file, None when it was withheld."""

    weights: bytes | None
    summary: dict[str, Any]
    withheld: str | None
    record: dict[str, Any] | None  # the audit record (audit.json in its work folder), None without an audit


class FactoryCache(ContentCache):
    """Own factories on disk: `class<label>-<key>.safetensors` (empty when withheld) with a `.json` index."""

    suffix = ".safetensors"

    def _entry(self, images: np.ndarray, label: int, cfg: dict, node_seed: int, privacy: dict) -> tuple[str, str, str]:
        """(name, key, data digest) of the factory of `label` trained on `images` (all the class's, held-out too)."""
        data = class_digest(images)
        key = self.key("factory", data, label, cfg, node_seed, privacy)
        return f"class{label}-{key[:16]}", key, data

    def get(self, images: np.ndarray, label: int, cfg: dict, node_seed: int, privacy: dict) -> CachedFactory | None:
        name, key, _ = self._entry(images, label, cfg, node_seed, privacy)
        hit = self.read(name, key)
        if hit is None:
            return None
        index, weights = hit
        summary, withheld, record = index.get("summary"), index.get("withheld"), index.get("record")
        if (
            not isinstance(summary, dict)
            or not isinstance(withheld, str | None)
            or not isinstance(record, dict | None)
            or (withheld is None) != bool(weights)
        ):
            log.warning("ignoring factory cache entry %s: its index is not one this version wrote", name)
            return None
        return CachedFactory(weights or None, summary, withheld, record)

    def put(
        self, images: np.ndarray, label: int, cfg: dict, node_seed: int, privacy: dict, built: CachedFactory
    ) -> None:
        name, key, data = self._entry(images, label, cfg, node_seed, privacy)
        index = {"label": label, "data": data, "summary": built.summary, "withheld": built.withheld,
                 "record": built.record}  # fmt: skip
        self.write(name, key, built.weights or b"", index)

    def adopt(self, made: Path) -> int:
        """Move the entry a factory job made into the cache (the node's part, after the job)."""
        return self.adopt_where(made, lambda index: isinstance(index.get("data"), str))

    def purge(self, digests: set[str]) -> int:
        """Delete every entry trained on images of one of `digests` (and any with a damaged index); returns how many
        were trained on them."""
        return self.purge_where(lambda index: not isinstance(index.get("data"), str) or index["data"] in digests)


def open_factory_cache(setting: str, home: Path) -> FactoryCache | None:
    """The cache `jobs.factory_cache` names (a path relative to the home, or absolute), or None where it is off."""
    return FactoryCache(home / setting) if setting else None
