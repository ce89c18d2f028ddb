"""The Ray runner: the same jobs as the local runner, run on a Ray cluster (a site's GPUs elsewhere).

The node stays small: it imports neither ray nor torch. For each job it starts a short-lived driver,
`python -m ffnode.jobs.ray WORKDIR JOBS_CONFIG_JSON`, which

    1. reads the job's inputs (site images, peers' factory blobs; not the `cache` of synthetic sets or factories,
       which only saves time) and its workdir (a factory's checkpoints, so training resumes), and connects to
       `jobs.address`;
    2. ships them as bytes to one Ray task (num_cpus: the job's threads, num_gpus: jobs.gpus, memory: memory_mb),
       which lays them out in a temp dir on its machine, rewrites the input paths and runs the very worker the
       local runner runs (`python -m ffnode.jobs.worker`: the audit hook, the CPU and memory limits, the job
       dying with its parent), streaming the worker's progress lines back as they come;
    3. mirrors the task's workdir into WORKDIR (out/blob, result.json, checkpoints and audit records), appends
       the worker's stderr to job.log and writes what the task's watch saw (exit status, a limit broken, peak
       memory, CPU seconds) to WORKDIR/ray.json.

The node forwards the driver's stdout (the worker's own progress lines) into its Progress, kills the driver past
jobs.wall_s (the driver cancels its task on SIGTERM; a driver that dies anyhow ends its Ray job, whose workers Ray
kills) and reads the outcome exactly as the local runner does: the worker's result.json, else the reason the job
was killed and the artifact its last progress line named. Same job.json and input bytes give the same out/blob
on the same device kind, whichever runner ran them (tests/test_ray.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Container, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ffnode.artifacts.store import atomic_write
from ffnode.config import JobsConfig
from ffnode.jobs.local import LOG_FILE, MAX_LINE, LocalRunner, Watch, _follow, _kill
from ffnode.jobs.progress import Progress
from ffnode.jobs.spec import JOB_FILE, RESULT_FILE, Job, JobResult

REPORT_FILE = "ray.json"  # in the workdir, written by the driver: what the watch on the cluster saw
LOCAL = {JOB_FILE, LOG_FILE, REPORT_FILE}  # the node's own files in the workdir: neither shipped nor mirrored
CACHE = "cache"  # the input not shipped: the synthetic sets are drawn (a factory trained) again there, identically
STOP_S = 10.0  # how long a driver told to stop may take to cancel its task before it is killed
CANCEL_S = 8.0  # how long a stopping driver waits for its cancelled task to clean up (< STOP_S)
PROBE_S = 10.0  # how long the cluster's address may take to accept a connection
CONNECT_TRIES = 3  # a Ray Client server may fail to start its per-driver server on a loaded head: try again

Tree = dict[str, bytes]  # relative path ("" for a single file) -> its bytes


class RayRunner(LocalRunner):
    """The local runner's queue, slots, accounting and reading of outcomes; each job a driver of one Ray task."""

    async def _spawn(self, job: Job, progress: Progress) -> JobResult:
        t0 = time.monotonic()
        (job.workdir / REPORT_FILE).unlink(missing_ok=True)  # a previous run's must not pass for this one's
        proc = await self.start("ffnode.jobs.ray", str(job.workdir), json.dumps(asdict(self.cfg)), workdir=job.workdir)
        watch = Watch(proc.pid)
        killed: str | None = None
        try:
            async with asyncio.timeout(self.cfg.wall_s):
                await _follow(proc, progress, watch)
                await proc.wait()
            killed = watch.killed
        except TimeoutError:
            killed, watch.cause = f"it ran past jobs.wall_s ({self.cfg.wall_s:.0f} s)", "time"
        finally:
            if proc.returncode is None:
                await _stop(proc)
        rc = proc.returncode
        if killed is None and (report := _read_report(job.workdir)) is not None:
            rc, killed, watch.rss_mb_max, watch.cpu_s, watch.cause = report
        return self._result(job, rc, killed, watch, time.monotonic() - t0)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Tell the driver to cancel its task and go; kill it if it takes longer than STOP_S."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        async with asyncio.timeout(STOP_S):
            await proc.wait()
    except TimeoutError:
        _kill(proc)
        await proc.wait()


def _read_report(workdir: Path) -> tuple[int, str | None, float, float, str] | None:
    """The task's exit status, limit broken, peak memory, CPU seconds and the cause of a kill (Watch.culprit's), or
    None if the driver wrote none."""
    try:
        r = json.loads((workdir / REPORT_FILE).read_text())
        return int(r["rc"]), r["killed"], float(r["rss_mb_max"]), float(r["cpu_s"]), str(r.get("cause", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- files as bytes ----------------------------------------------------------------------------------------------
def _pack(path: Path, skip: Container[str] = ()) -> Tree:
    """A file, or a folder's files (but the top-level names in `skip`), as bytes by relative path."""
    if path.is_file():
        return {"": path.read_bytes()}
    files = (p for p in sorted(path.rglob("*")) if p.is_file())
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in files if p.relative_to(path).parts[0] not in skip}


def _unpack(tree: Tree, path: Path) -> Path:
    """Write `tree` at `path` (a file if it was one); returns `path`."""
    for rel, data in tree.items():
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ValueError(f"a path outside the job's folder: {rel!r}")
        target = path / rel if rel else path
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, data)
    return path


def _mirror(tree: Tree, workdir: Path) -> None:
    """Make `workdir` hold what the task's workdir held: its files written, the ones it deleted deleted."""
    for rel in set(_pack(workdir, LOCAL)) - set(tree):
        (workdir / rel).unlink()
    _unpack(tree, workdir)


# -- on the cluster ----------------------------------------------------------------------------------------------
def _run_remote(spec: dict[str, Any], inputs: dict[str, Tree], files: Tree, cfg: dict[str, Any]) -> Iterator[Any]:
    """The Ray task: lay the job out in a temp dir, run the worker under the local runner's limits, yield its
    stdout as it comes, then a dict of the workdir's files, the worker's log and what the watch saw.

    An event loop of its own, driven between yields, so the local runner's memory guard watches the worker while
    the task waits for its output."""
    # Ray cancels a running task by a KeyboardInterrupt, which Python raises only while SIGINT has its handler: a
    # cluster started where SIGINT is ignored (a shell's background job) passes that on to its workers, and then
    # no cancel landed, Ray killed the worker outright once the driver left, and this job's folder stayed behind
    with contextlib.suppress(ValueError):  # not the main thread: Ray's own arrangement stands
        signal.signal(signal.SIGINT, signal.default_int_handler)
    runner = LocalRunner(JobsConfig(**cfg))
    with tempfile.TemporaryDirectory(prefix="ffnode-job-") as tmp, contextlib.closing(asyncio.new_event_loop()) as loop:
        root = Path(tmp)
        paths = {name: str(_unpack(tree, root / "inputs" / name)) for name, tree in inputs.items()}
        job = Job(spec["kind"], spec["args"], paths, _unpack(files, root / "work"))
        job.write()
        env = _devices(runner.cfg.gpus)
        proc = loop.run_until_complete(
            runner.start("ffnode.jobs.worker", str(job.workdir), workdir=job.workdir, env=env)
        )
        assert proc.stdout is not None
        watch = Watch(proc.pid)
        guard = loop.create_task(runner._guard(proc, watch))
        try:
            while chunk := loop.run_until_complete(proc.stdout.read(MAX_LINE)):
                yield chunk
            loop.run_until_complete(proc.wait())
        finally:  # also when the driver cancels the task
            if proc.returncode is None:
                _kill(proc)
                loop.run_until_complete(proc.wait())
            loop.run_until_complete(guard)  # it ends with the worker
        report = {"rc": proc.returncode, "killed": watch.killed, "rss_mb_max": watch.rss_mb_max, "cpu_s": watch.cpu_s,
                  "cause": watch.cause}  # fmt: skip
        yield {"files": _pack(job.workdir, LOCAL), "log": (job.workdir / LOG_FILE).read_bytes(), "report": report}


def _devices(gpus: float) -> dict[str, str]:
    """The worker's environment: a job that asked for no GPU sees none, so the node it lands on changes nothing."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": ""} if not gpus else dict(os.environ)


# -- the driver ------------------------------------------------------------------------------------------------
def _stopped(signum: int, frame: object) -> None:
    """SIGTERM from the node (a limit, or it is stopping): leave through `drive`, which cancels the task."""
    raise SystemExit(f"stopped by signal {signum}: the task is cancelled")


def _probe(address: str) -> None:
    """Fail in seconds, not after Ray's retries (minutes), when the cluster's address takes no connection."""
    if address != "auto":  # a cluster this machine belongs to: Ray finds it locally, or says at once it cannot
        host, _, port = address.removeprefix("ray://").rpartition(":")
        socket.create_connection((host, int(port)), timeout=PROBE_S).close()


def _connect(ray: Any, address: str) -> None:
    """ray.init, again after a pause when the connection itself failed: no task was submitted yet, so trying
    again runs nothing twice."""
    for attempt in range(CONNECT_TRIES):
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            return
        except ConnectionError as exc:  # Ray Client's "Initialization failure from server" among them
            if attempt == CONNECT_TRIES - 1:
                raise
            print(f"connecting to {address} failed ({exc!r:.300}); trying again", file=sys.stderr, flush=True)
            ray.shutdown()
            time.sleep(2.0 * (attempt + 1))


def drive(workdir: Path, cfg: JobsConfig, progress: Any) -> dict[str, Any]:
    """Ship the job in `workdir` to the cluster, write the task's progress to `progress` (a binary file) as it
    comes, and return its last item (the workdir's files, the log, the report)."""
    os.environ["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"  # silences Ray's tip on it: `_devices` decides
    import ray

    spec = json.loads((workdir / JOB_FILE).read_text())
    inputs = {name: _pack(Path(path)) for name, path in spec["inputs"].items() if name != CACHE}
    files = _pack(workdir, LOCAL)
    client = cfg.address.startswith("ray://")  # Ray Client streams no generator: its progress comes at the end
    _probe(cfg.address)
    _connect(ray, cfg.address)
    signal.signal(signal.SIGTERM, _stopped)  # after ray.init, whose own handler would end the process at once
    task = ray.remote(_run_remote).options(
        num_cpus=spec["args"].get("threads") or 1,
        num_gpus=cfg.gpus,
        memory=cfg.memory_mb * 2**20,
        max_retries=0,  # a job that broke its worker is the node's to judge, not Ray's to run again
        num_returns="dynamic" if client else "streaming",
    )
    refs = task.remote(spec, inputs, files, asdict(cfg))
    last: dict[str, Any] = {}
    try:
        for ref in ray.get(refs) if client else refs:
            item = ray.get(ref)
            if isinstance(item, bytes):
                progress.write(item)
            else:
                last = item
    except BaseException:
        ray.cancel(refs)
        # the task's own `finally` kills the worker and removes its folder; once this driver exits, Ray ends the job
        # and kills its workers outright, which under load came first and left the folder (peer weights, the site's
        # images) on the cluster's disk: wait for the task to end, within the time the node gives a driver to stop
        ray.wait([refs if client else refs.completed()], timeout=CANCEL_S)
        raise
    return last


def main(argv: list[str]) -> int:
    """The driver's process: exit 0 once the job's outcome is in WORKDIR, 1 (with an error in its result.json)
    if the cluster could not run it."""
    workdir, cfg = Path(argv[0]), JobsConfig(**json.loads(argv[1]))
    progress = os.fdopen(os.dup(1), "wb", buffering=0)  # stdout is the progress channel: Ray's output goes to ...
    os.dup2(2, 1)  # ... stderr, the job's log
    try:
        last = drive(workdir, cfg, progress)
    except Exception as exc:  # the cluster's failure, not the job's: nothing to blame on an artifact
        traceback.print_exc()
        cause = getattr(exc, "cause", None) or exc  # a RayTaskError's own message is a coloured traceback
        error = f"the Ray cluster at {cfg.address} could not run the job: {type(cause).__name__}: {cause}"[:2000]
        atomic_write(workdir / RESULT_FILE, json.dumps({"error": error, "blame": None}).encode())
        return 1
    _mirror(last["files"], workdir)
    sys.stderr.buffer.write(last["log"])
    atomic_write(workdir / REPORT_FILE, json.dumps(last["report"]).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
