"""Learning as jobs: every training, synthesis and retrain runs in its own process, never in the node's.

    spec.py       a job's explicit input and output (job.json in its workdir, out/blob, result.json); torch-free
    build.py      what a job computes, as pure functions: a factory from one class's images, an expert from the
                  real data and its lineage's factories (the exact-unlearning proof rebuilds it bit for bit)
    worker.py     the job's process: runs build.py under an audit hook that refuses sockets, reports progress
    local.py      the local runner: worker processes under memory, CPU and wall limits, shared slots per machine
    forkserver.py a warm process that forks those workers (torch imported once) for the nodes of one machine
    ray.py        the same jobs on a Ray cluster (a site's GPUs elsewhere)
    progress.py   what the node or a job is doing now, for `ffnode status`
    contentcache.py  what the caches share: entries keyed by the sha256 of what determines them, data then index
    synthcache.py the synthetic sets, keyed by what determines them; jobs read it, the node adopts and purges
    factorycache.py  a site's own trained factories (jobs.factory_cache), so a sweep never trains one twice

The node (daemon/) decides what to run and when; it imports nothing of torch. A job that crashes, hangs or
breaks a limit costs that job; its result names the peer artifact it was reading, and the learner skips it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ffnode.config import JobsConfig

if TYPE_CHECKING:
    from ffnode.jobs.progress import Progress
    from ffnode.jobs.spec import Job, JobResult


class Runner(Protocol):
    """Runs jobs to their end; results are identical whichever runner ran them (on the same device kind)."""

    workers: int  # jobs at once
    compute: dict[str, float]  # core-seconds per phase, over every job run
    jobs: dict[str, int]  # how many ended ok, failed, killed

    async def run(self, job: Job, progress: Progress | None = None) -> JobResult: ...

    async def turn(self, kind: str) -> None:
        """Return once a job of `kind` could start now (it holds nothing: `run` still queues)."""
        ...


def make_runner(cfg: JobsConfig) -> Runner:
    """The runner `jobs.runner` names."""
    if cfg.runner == "ray":
        from ffnode.jobs.ray import RayRunner

        return RayRunner(cfg)
    from ffnode.jobs.local import LocalRunner

    return LocalRunner(cfg)
