"""What the jobs' caches share: entries named by the sha256 of everything that determines them, so a hit is bitwise
what a fresh build would give (build.py's purity holds with or without a cache).

An entry is a data file and a `.json` index written after it (a data file without an index is a crash's leftover).
The index names the entry's full key and its data's sha256, so a torn, damaged or misnamed entry is a miss, never a
wrong hit. A job reads the cache's folder and writes new entries to its own out/ folder (`write_to`); the node
adopts them after the job (`adopt_where`) and purges the entries derived from what was withdrawn (`purge_where`).
The two caches: synthcache.py (synthetic sets drawn from peers' factories), factorycache.py (a site's own factories).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ffnode.artifacts.codec import canonical_bytes
from ffnode.artifacts.store import atomic_write, fsync_dir

log = logging.getLogger("ffnode.jobs")

Index = dict[str, Any]


class ContentCache:
    """Entries `<name><suffix>` + `<name>.json` in `folder`; new ones go to `write_to` (a job's out/ folder)."""

    suffix = ".bin"  # the data file's

    def __init__(self, folder: Path, write_to: Path | None = None, variant: str = "") -> None:
        """`variant`: what else the bits depend on besides the key's parts (torch's threads, the device), so an entry
        made under another never passes for a fresh build."""
        self.folder, self.write_to, self.variant = folder, write_to or folder, variant
        self.write_to.mkdir(parents=True, exist_ok=True)

    def key(self, *parts: Any) -> str:
        """The full sha256 of an entry's parts and the variant (a name uses a prefix; the index keeps it whole)."""
        return hashlib.sha256(canonical_bytes([*parts, self.variant])).hexdigest()

    def read(self, name: str, key: str) -> tuple[Index, bytes] | None:
        """An entry's index and data from the cache's folder, else from what this job wrote already; None if there is
        none whole: no index, an index of another key, or data whose sha256 is not the index's (then it is logged)."""
        for folder in dict.fromkeys((self.folder, self.write_to)):
            index = read_index(folder / f"{name}.json")
            if index is None or index.get("key") != key:
                continue
            try:
                data = (folder / f"{name}{self.suffix}").read_bytes()
            except OSError:
                continue
            if hashlib.sha256(data).hexdigest() == index.get("sha256"):
                return index, data
            log.warning("ignoring cache entry %s: its data does not match its index's sha256", folder / name)
        return None

    def write(self, name: str, key: str, data: bytes, index: Index) -> None:
        """Write an entry to `write_to`: the data first, then the index that `read` and `purge` trust."""
        atomic_write(self.write_to / f"{name}{self.suffix}", data)
        index = index | {"key": key, "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write(self.write_to / f"{name}.json", json.dumps(index, sort_keys=True).encode())

    def adopt_where(self, made: Path, keep: Callable[[Index], bool]) -> int:
        """Move the whole entries a job made (its `write_to`) that `keep` accepts into the cache's folder; returns how
        many were adopted. The folder may be on another file system (a cache shared by the sites of a machine)."""
        count = 0
        for meta in sorted(made.glob("*.json")):
            data = meta.with_suffix(self.suffix)
            index = read_index(meta)
            if data.exists() and index is not None and keep(index):
                _move(data, self.folder / data.name)  # the data first, then the index that purge reads
                _move(meta, self.folder / meta.name)
                count += 1
        if count:
            fsync_dir(self.folder)
        return count

    def purge_where(self, drop: Callable[[Index], bool]) -> int:
        """Delete every entry `drop` names (and any whose index was never written or is unreadable); returns how many
        entries with a readable index were dropped."""
        for data in self.folder.glob(f"*{self.suffix}"):
            if not data.with_suffix(".json").exists():
                data.unlink(missing_ok=True)
        count = 0
        for meta in self.folder.glob("*.json"):
            index = read_index(meta)
            if index is None or drop(index):  # an unreadable index: a crash's leftover, never trusted
                meta.with_suffix(self.suffix).unlink(missing_ok=True)
                meta.unlink(missing_ok=True)
                count += index is not None
        return count


def read_index(meta: Path) -> Index | None:
    """An entry's index, or None if it is absent or damaged."""
    try:
        index = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) else None


def _move(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`, or across file systems copy it whole (temp file, fsync, rename) and delete it."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        atomic_write(dst, src.read_bytes())
        src.unlink()
