"""The process a job runs in: `python -m ffnode.jobs.worker WORKDIR`.

It reads WORKDIR/job.json, runs the build it names (jobs/build.py) and writes what it made to WORKDIR/out/ and
WORKDIR/result.json; stdout carries its progress as one JSON object a line ({"phase", "task", "done", "total",
"blame"}), everything else goes to stderr. It opens no network connection (an audit hook refuses every socket),
and the runner that started it holds its limits (memory, CPU seconds, wall time): a job that breaks one is killed
and `blame` says which peer artifact it was reading then. Exit status 0 with a result, 1 with an error.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ffnode.arch import LoadError
from ffnode.artifacts.store import atomic_write
from ffnode.jobs.progress import Progress
from ffnode.jobs.spec import BLOB, CACHED, JOB_FILE, OUT, RESULT_FILE, FactorySource

EMIT_S = 0.5  # progress lines at most this often, besides one per change of phase, task or blame


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class JobProgress(Progress):
    """A Progress that reports itself on stdout and adds up CPU seconds per phase (the report's "compute")."""

    def __init__(self, out: Any) -> None:
        super().__init__(phase="startup")  # until the first phase: the interpreter, torch and the inputs
        self._out, self._last, self.cpu, self._mark = out, 0.0, {}, 0.0

    def __setattr__(self, name: str, value: Any) -> None:
        changed = name in ("phase", "task", "blame") and getattr(self, name, None) != value
        if changed and name == "phase" and hasattr(self, "cpu"):
            now = cpu_seconds()
            self.cpu[self.phase] = self.cpu.get(self.phase, 0.0) + now - self._mark
            self._mark = now
        super().__setattr__(name, value)
        if changed and hasattr(self, "_out"):
            self.emit()

    def update(self, done: int, total: int) -> None:
        super().update(done, total)
        if time.monotonic() - self._last > EMIT_S or done == total:
            self.emit()

    def emit(self) -> None:
        line = {"phase": self.phase, "task": self.task, "done": self.done, "total": self.total, "blame": self.blame}
        self._out.write(json.dumps(line) + "\n")
        self._out.flush()
        self._last = time.monotonic()

    def close(self) -> dict[str, float]:
        self.phase = "done"
        return {k: round(v, 3) for k, v in self.cpu.items() if k != "done"}


def no_network(event: str, args: tuple) -> None:
    """An audit hook: a job (or the query worker) reads files and computes; a socket would be a way out for
    whatever it runs."""
    if event in ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo"):
        raise PermissionError(f"a job opens no network connection ({event})")


def run(workdir: Path, progress: JobProgress) -> dict[str, Any]:
    """Run the job in `workdir`; returns its result (the blob, if any, is written to out/)."""
    import torch

    from ffnode.artifacts.blob import weights_to_bytes
    from ffnode.config import PrivacyConfig
    from ffnode.data.sources import ImageSet
    from ffnode.device import bf16_pays, pick_device
    from ffnode.factory.config import FactoryConfig
    from ffnode.jobs.build import make_expert, make_factory
    from ffnode.jobs.factorycache import FactoryCache
    from ffnode.jobs.synthcache import SynthCache

    spec = json.loads((workdir / JOB_FILE).read_text())
    args, inputs = spec["args"], {k: Path(v) for k, v in spec["inputs"].items()}
    if args.get("threads"):
        torch.set_num_threads(args["threads"])
    threads = torch.get_num_threads()  # what the bits depend on, beside the inputs: recorded with what is made
    device = pick_device()
    kind = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    # what a cache entry's bits depend on beside its key: a hit must be what this job would compute
    variant = f"torch={torch.__version__} threads={threads} device={kind} bf16={bf16_pays(device.type)}"
    with np.load(inputs["data"]) as z:
        data = ImageSet(z["images"], z["labels"], tuple(args["class_names"]))
    out = workdir / OUT
    if spec["kind"] == "factory":
        cache = FactoryCache(inputs["cache"], write_to=out / CACHED, variant=variant) if "cache" in inputs else None
        built = make_factory(
            data,
            args["label"],
            FactoryConfig.from_dict(args["cfg"]),
            args["node_seed"],
            PrivacyConfig(**args["privacy"]),
            workdir,  # checkpoints, snapshots and audit records: training resumes here
            progress,
            cache=cache,
        )
        if built.weights is not None:
            atomic_write(out / BLOB, weights_to_bytes(built.weights, args["owner"]))
        return {"summary": built.summary, "seed": built.seed, "withheld": built.withheld, "cached": built.cached}
    expert = make_expert(
        data,
        [FactorySource(**f) for f in args["factories"]],
        inputs,
        args["arch"],
        args["seed"],
        cache=SynthCache(inputs["cache"], write_to=out / CACHED, variant=variant) if "cache" in inputs else None,
        progress=progress,
        class_names=args["class_names"],
    )
    atomic_write(out / BLOB, weights_to_bytes(expert.weights, args["owner"]))
    return {"summary": expert.summary | {"threads": threads}, "seed": expert.seed, "lineage": expert.lineage}


def main(workdir: Path) -> int:
    """Run the job in `workdir` in this process (a fresh one, or a fork server's child); its exit status."""
    # stdout is the progress channel: it keeps a descriptor of its own, and fd 1 becomes stderr, so nothing else
    # (a library's print, C code included) can write a line into it
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.addaudithook(no_network)
    os.environ["HF_HUB_OFFLINE"] = "1"
    progress = JobProgress(out)
    try:
        result: dict[str, Any] = {"result": run(workdir, progress)}
        status = 0
    except Exception as exc:  # the job's failure, named, and the artifact it was reading: the node decides
        blame = exc.artifact_id if isinstance(exc, LoadError) else progress.blame
        result, status = {"error": f"{type(exc).__name__}: {exc}"[:2000], "blame": blame}, 1
        print(f"job failed: {result['error']}", file=sys.stderr)
    result["cpu_s"] = progress.close()
    atomic_write(workdir / RESULT_FILE, json.dumps(result).encode())
    return status


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
