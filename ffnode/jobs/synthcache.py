"""The synthetic-set cache: the one place derived data outlives a build, so revocation purges it.

A set is keyed by everything that determines it (class, the factory IDs drawn from, images per class, seed), so
a hit is bitwise the set a fresh draw would give (build.py's purity holds with or without the cache). A job reads
the node's cache and writes new sets to its own out/ folder (`write_to`); the node adopts them after the job,
unless a factory they were drawn from was revoked meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ffnode.artifacts.codec import canonical_bytes
from ffnode.artifacts.store import atomic_write


class SynthCache:
    """Synthetic sets on disk: `class<label>-<key>.npz` with a `.json` index naming the factories drawn from.

    The data file is written first and the index last, so a set without an index is a crash's leftover."""

    def __init__(self, folder: Path, write_to: Path | None = None, variant: str = "") -> None:
        """`variant`: what else the samples' bits depend on (a job's torch threads), so a set drawn under another
        never passes for a fresh draw."""
        self.folder, self.write_to, self.variant = folder, write_to or folder, variant
        self.write_to.mkdir(parents=True, exist_ok=True)

    def _name(self, label: int, ids: list[str], per_class: int, seed: int) -> str:
        key = hashlib.sha256(canonical_bytes([label, ids, per_class, seed, self.variant])).hexdigest()[:16]
        return f"class{label}-{key}.npz"

    def _path(self, label: int, ids: list[str], per_class: int, seed: int) -> Path:
        """Where a set is read: the cache's folder, else what this job drew already."""
        name = self._name(label, ids, per_class, seed)
        return next((p for p in (self.folder / name, self.write_to / name) if p.with_suffix(".json").exists()),
                    self.folder / name)  # fmt: skip

    def adopt(self, drawn: Path, revoked: Callable[[str], bool]) -> int:
        """Move the sets a job drew (its `write_to`) into the cache, but none drawn from a revoked factory; returns
        how many were adopted."""
        count = 0
        for meta in sorted(drawn.glob("*.json")):
            data = meta.with_suffix(".npz")
            ids = _drawn_from(meta)
            if data.exists() and ids is not None and not any(revoked(aid) for aid in ids):
                data.replace(self.folder / data.name)  # the data first, then the index that purge reads
                meta.replace(self.folder / meta.name)
                count += 1
        return count

    def get(self, label: int, ids: list[str], per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
        path = self._path(label, ids, per_class, seed)
        if not (path.exists() and path.with_suffix(".json").exists()):
            return None
        with np.load(path) as z:
            return z["images"], z["labels"]

    def put(
        self, label: int, ids: list[str], per_class: int, seed: int, images: np.ndarray, labels: np.ndarray
    ) -> None:
        path = self.write_to / self._name(label, ids, per_class, seed)
        tmp = path.with_suffix(".tmp.npz")
        with open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)  # the data first, then the index that purge reads
        atomic_write(path.with_suffix(".json"), json.dumps({"factories": ids}).encode())

    def purge(self, revoked: set[str]) -> int:
        """Delete every set drawn from a revoked factory (and any set whose index was never written);
        returns how many sets were drawn from revoked factories."""
        count = 0
        for data in self.folder.glob("*.npz"):
            if not data.with_suffix(".json").exists():
                data.unlink()
        for meta in self.folder.glob("*.json"):
            ids = _drawn_from(meta)
            if ids is None or revoked & set(ids):  # an unreadable index: a crash's leftover, never trusted
                meta.with_suffix(".npz").unlink(missing_ok=True)
                meta.unlink()
                count += ids is not None
        return count


def _drawn_from(meta: Path) -> list[str] | None:
    """The factory IDs a set's index names, or None if the index is damaged."""
    try:
        ids = json.loads(meta.read_text())["factories"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ids if isinstance(ids, list) and all(isinstance(i, str) for i in ids) else None
