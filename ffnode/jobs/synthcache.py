"""The synthetic-set cache: derived data that outlives a build, so revocation purges it.

A set is keyed by everything that determines it (class, the factory IDs drawn from, images per class, seed), so
a hit is bitwise the set a fresh draw would give (build.py's purity holds with or without the cache). A job reads
the node's cache and writes new sets to its own out/ folder (`write_to`); the node adopts them after the job,
unless a factory they were drawn from was revoked meanwhile. The entries' format is contentcache.py's.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ffnode.jobs.contentcache import ContentCache, Index


class SynthCache(ContentCache):
    """Synthetic sets on disk: `class<label>-<key>.npz` with a `.json` index naming the factories drawn from."""

    suffix = ".npz"

    def _entry(self, label: int, ids: list[str], per_class: int, seed: int) -> tuple[str, str]:
        key = self.key(label, ids, per_class, seed)
        return f"class{label}-{key[:16]}", key

    def adopt(self, drawn: Path, revoked: Callable[[str], bool]) -> int:
        """Move the sets a job drew (its `write_to`) into the cache, but none drawn from a revoked factory; returns how
        many were adopted."""
        return self.adopt_where(drawn, lambda index: not _taken_back(index, revoked))

    def get(self, label: int, ids: list[str], per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
        hit = self.read(*self._entry(label, ids, per_class, seed))
        if hit is None:
            return None
        with np.load(io.BytesIO(hit[1])) as z:
            return z["images"], z["labels"]

    def put(
        self, label: int, ids: list[str], per_class: int, seed: int, images: np.ndarray, labels: np.ndarray
    ) -> None:
        buf = io.BytesIO()
        np.savez(buf, images=images, labels=labels)
        self.write(*self._entry(label, ids, per_class, seed), buf.getvalue(), {"factories": ids})

    def purge(self, revoked: set[str]) -> int:
        """Delete every set drawn from a revoked factory (and any set whose index was never written or is damaged);
        returns how many sets were drawn from revoked factories."""
        return self.purge_where(lambda index: _taken_back(index, revoked.__contains__))


def _taken_back(index: Index, revoked: Callable[[str], bool]) -> bool:
    """Whether a set was drawn from a revoked factory, or its index is damaged (then it is never trusted either)."""
    ids = index.get("factories")
    return not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)) or any(map(revoked, ids))
