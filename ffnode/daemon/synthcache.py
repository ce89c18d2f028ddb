"""The synthetic-set cache: the one place derived data outlives a build, so revocation purges it.

A set is keyed by everything that determines it (class, the factory IDs drawn from, images per class, seed), so
a hit is bitwise the set a fresh draw would give (build.py's purity holds with or without the cache).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ffnode.artifacts.codec import canonical_bytes
from ffnode.artifacts.store import atomic_write


class SynthCache:
    """Synthetic sets on disk: `class<label>-<key>.npz` with a `.json` index naming the factories drawn from.

    The data file is written first and the index last, so a set without an index is a crash's leftover."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, label: int, ids: list[str], per_class: int, seed: int) -> Path:
        key = hashlib.sha256(canonical_bytes([label, ids, per_class, seed])).hexdigest()[:16]
        return self.folder / f"class{label}-{key}.npz"

    def get(self, label: int, ids: list[str], per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
        path = self._path(label, ids, per_class, seed)
        if not (path.exists() and path.with_suffix(".json").exists()):
            return None
        with np.load(path) as z:
            return z["images"], z["labels"]

    def put(
        self, label: int, ids: list[str], per_class: int, seed: int, images: np.ndarray, labels: np.ndarray
    ) -> None:
        path = self._path(label, ids, per_class, seed)
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
            if revoked & set(json.loads(meta.read_text())["factories"]):
                meta.with_suffix(".npz").unlink(missing_ok=True)
                meta.unlink()
                count += 1
        return count
