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

A factory still training keeps its checkpoints, snapshots and audit record in the cache's `runs/` folder (`run_dir`),
not in the home: a home wiped before the run ended (a testnet started again, a sweep point cut off with its
session) resumes from the last checkpoint. The node deletes a run's folder once it adopted its entry, and purges
runs of withdrawn data as it purges entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ffnode.artifacts.codec import canonical_bytes
from ffnode.artifacts.store import atomic_write
from ffnode.jobs.contentcache import ContentCache, Index, read_index

log = logging.getLogger("ffnode.jobs")

RUNS = "runs"  # factories still training: checkpoints, snapshots, audit records
RUN_INDEX = "run.json"  # in a run's folder: the label and data digest purge reads


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
                 "record": built.record, "run": name}  # fmt: skip
        self.write(name, key, built.weights or b"", index)
        if self.write_to == self.folder:  # the entry is in already (no job between): its run is done with
            shutil.rmtree(self.folder / RUNS / name, ignore_errors=True)

    def run_dir(self, images: np.ndarray, label: int, cfg: dict, node_seed: int, privacy: dict) -> Path:
        """The folder the factory of these inputs trains in, made if new: named as its entry will be, so a run started
        again (any home, any session) resumes there, and train.py refuses a checkpoint of anything else."""
        name, _, data = self._entry(images, label, cfg, node_seed, privacy)
        run = self.folder / RUNS / name
        if read_index(run / RUN_INDEX) is None:  # purge trusts this index: written before any checkpoint
            run.mkdir(parents=True, exist_ok=True)
            atomic_write(run / RUN_INDEX, json.dumps({"label": label, "data": data}).encode())
        return run

    def adopt(self, made: Path) -> int:
        """Move the entry a factory job made into the cache, then delete the folder it trained in (the node's part,
        after the job)."""
        runs = [i.get("run") for meta in made.glob("*.json") if (i := read_index(meta)) is not None]
        count = self.adopt_where(made, lambda index: isinstance(index.get("data"), str))
        for run in runs:  # an entry's run has its name: gone once the entry is in
            if isinstance(run, str) and Path(run).name == run and (self.folder / f"{run}.json").exists():
                shutil.rmtree(self.folder / RUNS / run, ignore_errors=True)
        return count

    def purge(self, digests: set[str]) -> int:
        """Delete every entry and run trained on images of one of `digests` (and any with a damaged index); returns
        how many entries were trained on them."""
        return self.purge_where(lambda index: not isinstance(index.get("data"), str) or index["data"] in digests)

    def purge_where(self, drop: Callable[[Index], bool]) -> int:
        """ContentCache.purge_where, and the runs `drop` names (or whose index is unreadable) with them."""
        runs = self.folder / RUNS
        for run in sorted(runs.iterdir()) if runs.is_dir() else []:
            index = read_index(run / RUN_INDEX)
            if index is None or drop(index):
                shutil.rmtree(run, ignore_errors=True)
        return super().purge_where(drop)


def open_factory_cache(setting: str, home: Path) -> FactoryCache | None:
    """The cache `jobs.factory_cache` names (a path relative to the home, or absolute), or None where it is off."""
    return FactoryCache(home / setting) if setting else None
