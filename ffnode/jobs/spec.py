"""A job: one piece of learning with an explicit input and output, and no other channel (torch-free).

    job.json      {"kind", "args", "inputs": {name: absolute path}}   written by the node, read by the worker
    inputs        files the job only reads: the site's images, peers' factory blobs, a cache (`cache`: the
                  synthetic sets for an expert job, the factory cache for a factory job)
    workdir/      the only folder the job writes: checkpoints (a factory's, so training resumes), out/, result.json
    out/blob      the weights it made, as the blob the node publishes (artifacts/blob.py: owner in the header)
    out/cache/    the cache entries it made (newly drawn synthetic sets, a newly trained factory): the node adopts them
    result.json   {"result": {...}} or {"error": "...", "blame": artifact ID | null}, and "cpu_s" per phase

Same job.json and input bytes, bitwise-same out/blob: the worker is a pure function of them (jobs/build.py), so
whichever runner ran it, here or on a cluster, the exact-unlearning proof holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffnode.arch import held_blob
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store, atomic_write

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
OUT = "out"
BLOB = "blob"  # under out/
CACHED = "cache"  # under out/: the cache entries the job made (synthetic sets, an own factory): the node adopts them
KINDS = ("factory", "expert")


@dataclass(frozen=True)
class FactorySource:
    """A peer's factory as a job reads it: its identity (to blame it), class, config and the blob's input name."""

    id: str
    owner: str
    label: int
    arch: dict[str, Any]
    input: str  # the key of its blob in the job's inputs
    kind: str = "factory"

    @classmethod
    def of(cls, store: Store, m: Manifest) -> tuple[FactorySource, Path]:
        """The source of a live factory and its blob's path; LoadError if the blob is no longer held."""
        path = held_blob(store, m)
        return cls(m.id, m.owner, m.classes[0], dict(m.arch), f"factory-{m.id}"), path


@dataclass
class Job:
    kind: str  # one of KINDS
    args: dict[str, Any]  # plain JSON: configs, seeds, the owner to name in the blob
    inputs: dict[str, str]  # name -> absolute path of a file or folder the job reads
    workdir: Path  # the one folder it writes; kept between runs of the same job (a factory resumes there)
    what: str = ""  # for logs and progress: "factory of class 3", "expert from 9 factories"

    def write(self) -> None:
        """Lay the job out in its workdir, clearing the previous run's output (checkpoints stay)."""
        if self.kind not in KINDS:
            raise ValueError(f"unknown job kind {self.kind!r}")
        (self.workdir / OUT).mkdir(parents=True, exist_ok=True)
        for old in [*(self.workdir / OUT).rglob("*"), self.workdir / RESULT_FILE]:
            if old.is_file():
                old.unlink()
        spec = {"kind": self.kind, "args": self.args, "inputs": self.inputs}
        atomic_write(self.workdir / JOB_FILE, json.dumps(spec, sort_keys=True).encode())


@dataclass
class JobResult:
    """What came back: the job's own result, or why it failed and which artifact it was working on then."""

    workdir: Path
    result: dict[str, Any] | None = None
    error: str | None = None
    blame: str | None = None  # the peer artifact that was being loaded or sampled when the job failed
    cpu_s: dict[str, float] = field(default_factory=dict)  # core-seconds per phase, "startup" included
    wall_s: float = 0.0
    rss_mb_max: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def blob(self) -> Path:
        return self.workdir / OUT / BLOB


def read_result(workdir: Path) -> dict[str, Any] | None:
    """The worker's result.json, or None if it wrote none (killed, crashed before the end)."""
    try:
        data = json.loads((workdir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
