"""The learning policy of one node: what is due, and when to wait for more.

FederatedFactory (arXiv 2603.16370): site d trains one generator Γ_{d,c} per local class c, shares it,
and trains its expert f_d on its real data plus class-balanced samples from the generators of the
classes it lacks. This module decides only *when*: train the own factories that are due; train the
expert once every class is covered (or, for a class nobody supplies, its patience or deadline ran out) and
announcements have settled; retrain it when its lineage changes; withdraw the superseded one. What is
built is jobs/build.py's, run as a job in its own process (ffnode/jobs/: the node imports no torch, and a
peer's factory that breaks a job's limits costs that job and is blamed), what is signed the outbox's, and the
store says when anything changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path

import numpy as np

from ffnode.arch import LoadError, factory_config
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.config import Config
from ffnode.daemon import timing
from ffnode.daemon.outbox import HasLeft, Outbox
from ffnode.daemon.unlearn import DATA_FILE, Unlearning
from ffnode.data.sources import ImageSet
from ffnode.jobs import Runner
from ffnode.jobs.factorycache import FactoryCache
from ffnode.jobs.progress import Progress
from ffnode.jobs.spec import CACHED, OUT, FactorySource, Job, JobResult
from ffnode.jobs.synthcache import SynthCache
from ffnode.profiles import Profile, expert_arch

log = logging.getLogger("ffnode.learner")

QUIET_S = 2.0  # wait this long after the last new factory before training: announcements come in bursts
RETRY_S = 30.0  # after a failed learning round
WAITING_POLL_S = 5.0  # while waiting for classes: pending factories give up after limits.pending_grace_s


class Learner:
    def __init__(
        self,
        config: Config,
        data: ImageSet,
        profile: Profile,
        store: Store,
        outbox: Outbox,
        unlearning: Unlearning,
        cache: SynthCache,
        work: Path,
        runner: Runner,
        factories: FactoryCache | None = None,
    ) -> None:
        self.config, self.data, self.store, self.outbox = config, data, store, outbox
        self.unlearning, self.cache, self.work, self.runner = unlearning, cache, work, runner
        self.factories = factories  # jobs.factory_cache: own factories already trained, by what determines them
        self.data_file = work / DATA_FILE  # the local images as every job reads them (the node writes it at start)
        # torch threads per job: the config's, else the cores shared by the runner's workers. A rebuild must use
        # the same count as the build it checks (bitwise): an expert's meta records it, and `rebuild` uses that.
        self.threads = config.learning.threads or max(1, (os.cpu_count() or 1) // runner.workers)
        self._job: asyncio.Task[JobResult] | None = None  # the job running now, so `halt` can kill it
        self._rebuilding = asyncio.Lock()
        self.classes = config.federation.classes
        self.profile = profile  # profiles.site_profile: the config's, fitted to the local images
        self.progress = Progress()
        self._changed = asyncio.Event()  # set (thread-safely) whenever the store changes
        self._loop = asyncio.get_running_loop()
        self._unusable: dict[str, str] = {}  # factory ID -> why it is not sampled
        self.withheld: dict[int, str] = {}  # own class -> why its factory failed the privacy audit (not published)
        limits, learning = config.limits, config.learning
        self.rules = timing.Rules(learning.patience_s, limits.pending_grace_s, learning.deadline_s)
        self.waiting = timing.start(time.monotonic())  # what the timing rules remember between looks

    def notify(self) -> None:
        """The store changed (a factory went live, something was revoked): look again. Any thread."""
        try:
            self._loop.call_soon_threadsafe(self._changed.set)
        except RuntimeError:  # the loop is closed: the node has stopped, nobody is waiting
            pass

    def local_classes(self) -> list[int]:
        return sorted({int(c) for c in np.unique(self.data.labels)})

    async def run_job(self, job: Job) -> JobResult:
        """Run one job to its end; `halt` (the node is leaving) kills it and this raises HasLeft."""
        if self.outbox.left:  # left meanwhile (while announcements settled, or a publish was gossiped)
            raise HasLeft(f"this node left: {job.what} is not run")
        self._job = task = asyncio.create_task(self.runner.run(job, self.progress))
        try:
            return await task
        except asyncio.CancelledError:
            if (me := asyncio.current_task()) is not None and me.cancelling():
                raise  # the node is stopping: the cancellation is ours, and it killed the job
            raise HasLeft(f"{job.what} was stopped") from None
        finally:
            self._job = None

    async def halt(self) -> None:
        """Kill the running job, if any, and wait until it is gone (leaving erases what jobs write)."""
        if (task := self._job) is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the loop ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Train what is due, then sleep until something changes."""
        while True:
            self._changed.clear()  # before the work: whatever arrives meanwhile wakes the next round
            try:
                if self.outbox.left:
                    self.progress = Progress(phase="left")
                else:
                    await self._train_own_factories()
                    await self._maybe_train_expert()
            except HasLeft:
                continue  # the node left while it trained: the next round says so
            except Exception as exc:  # a bad round must not take the node (and its network) down
                log.exception("learning round failed; trying again in %.0f s or when something changes", RETRY_S)
                self.progress = Progress(phase="error", task=str(exc)[:120])
            phase = self.progress.phase
            timeout = WAITING_POLL_S if phase == "waiting" else RETRY_S if phase == "error" else None
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                pass

    # -- factories -----------------------------------------------------------------------------------
    async def _train_own_factories(self) -> None:
        """Train, audit and publish the factory of each local class that has none yet. One that fails its audit is
        withheld: not published, and not tried again until the node restarts (its audits are kept, so a restart
        under other thresholds re-judges them without retraining; a class too small to audit is never trained, so a
        lower min_holdout trains it then)."""
        done = {c for m in self.outbox.own() if m.kind == "factory" for c in m.classes}  # revoked ones count
        todo = [c for c in self.local_classes() if c not in done and c not in self.withheld]
        for i, label in enumerate(todo):
            self.progress = Progress(phase="factories", task=f"factory {self.classes[label]} ({i + 1}/{len(todo)})")
            fcfg = self.profile.factory
            args = {
                "label": label,
                "cfg": fcfg.to_dict(),
                "node_seed": self.config.learning.seed,
                "privacy": dataclasses.asdict(self.config.privacy),
                "owner": self.outbox.me,
                "class_names": self.classes,
                "threads": self.threads,
            }
            workdir = self.work / f"factory-{label}"  # training resumes from here after a crash
            inputs = {"data": str(self.data_file)} | ({"cache": str(self.factories.folder)} if self.factories else {})
            job = Job("factory", args, inputs, workdir, what=f"factory {self.classes[label]}")
            done_job = await self.run_job(job)
            if self.factories is not None and not self.outbox.left:  # a site that left keeps nothing of its data
                self.factories.adopt(done_job.workdir / OUT / CACHED)
            if not done_job.ok or done_job.result is None:
                raise RuntimeError(f"the factory of class {self.classes[label]} failed: {done_job.error}")
            built = done_job.result
            if built.get("cached"):
                log.info("the factory of class %s comes from the factory cache", self.classes[label])
            if built["withheld"] is not None:
                self.withheld[label] = built["withheld"]
                log.warning("withholding the factory of class %s: %s", self.classes[label], built["withheld"])
                continue
            blob = done_job.blob.read_bytes()
            await self.outbox.publish("factory", [label], fcfg.to_dict(), blob, [], built["seed"], built["summary"])
        if todo:
            self.waiting = timing.trained_own(self.waiting, time.monotonic())

    # -- expert --------------------------------------------------------------------------------------
    def expert_lineage(self) -> tuple[list[Manifest], list[str]]:
        """Live factories this node's expert should be trained from, and classes nothing covers yet. A class
        whose factories were all revoked, refused (their privacy audit) or found unusable is not waited for:
        nobody is going to fix it, and a peer that announces a broken factory must not hold the expert back (it
        is retrained if a usable one arrives)."""
        own = set(self.local_classes())
        synth_own = self.config.learning.synth_own_classes
        live = self.store.live("factory")
        newest: dict[tuple[int, str], Manifest] = {}  # one factory per (class, owner): a key's share is one
        for m in live:
            if self._usable(m) and newest.get(key := (m.classes[0], m.owner), m).seq <= m.seq:
                newest[key] = m
        usable = sorted(newest.values(), key=lambda m: (m.classes, m.owner, m.id))
        factories = [m for m in usable if synth_own or m.classes[0] not in own]
        covered = own | {m.classes[0] for m in usable}
        withdrawn = {  # revoked, or refused under this node's audit policy
            c
            for e in self.store.entries()
            if e.state in ("revoked", "refused") and e.manifest.kind == "factory"
            for c in e.manifest.classes
        } | {c for m in live if m.id in self._unusable for c in m.classes}
        missing = [self.classes[c] for c in range(len(self.classes)) if c not in covered | withdrawn]
        return factories, missing

    def _usable(self, m: Manifest) -> bool:
        """A peer's factory must fit this federation before it is sampled: a valid class, a config this
        version understands and this federation's image shape; one that failed to load is skipped too."""
        reason = self._unusable.get(m.id)
        if reason is None:
            h, w, c = self.data.images.shape[1:]
            try:
                cfg = factory_config(m)
                if len(m.classes) != 1 or m.classes[0] >= len(self.classes):
                    reason = f"class {m.classes} is not one of the federation's {len(self.classes)} classes"
                elif (cfg.image_size, cfg.image_size, cfg.channels) != (h, w, c):
                    reason = f"it makes {cfg.image_size}x{cfg.image_size}x{cfg.channels} images, not {h}x{w}x{c}"
            except LoadError as exc:
                reason = str(exc)
            if reason is None:
                return True
            self._unusable[m.id] = reason
            log.warning("skipping factory %s of %s: %s", m.id[:12], m.owner, reason)
        return False

    def _look(self, factories: list[Manifest], missing: list[str]) -> timing.Verdict:
        """The timing rules (daemon/timing.py) on what the store shows now; logs what they gave up on."""
        covered = set(self.local_classes()) | {m.classes[0] for m in factories}
        pending = [(m.id, m.owner) for m in self.store.pending() if m.kind == "factory" and m.classes[0] not in covered]
        lineage = sorted(m.id for m in factories)
        verdict, self.waiting = timing.judge(
            self.waiting, self.rules, time.monotonic(), missing=missing, lineage=lineage, pending=pending
        )
        if verdict.stopped_waiting_for:
            log.warning("no new factory in %.0f s: not waiting for classes %s (retrained when one arrives)",
                        self.rules.patience_s, verdict.stopped_waiting_for)  # fmt: skip
        for owner, aid in verdict.gave_up_on:
            log.warning("factory %s of %s has not arrived in %.0f s: going on without it, and without waiting for "
                        "that publisher again", aid[:12], owner, self.rules.grace_s)  # fmt: skip
        return verdict

    async def _maybe_train_expert(self) -> None:
        factories, missing = self.expert_lineage()
        current = self.outbox.current_expert()
        lineage = sorted(m.id for m in factories)
        verdict = self._look(factories, missing)
        if current is not None and sorted(current.lineage) == lineage:
            await self._revoke_stale_experts(current)
            self.progress = Progress(phase="ready")
            return
        if verdict.wait:
            self.progress = Progress(phase="waiting", missing=missing)
            return
        if verdict.awaited:
            log.warning("deadline passed: training the expert without classes %s", verdict.awaited)
        await asyncio.sleep(QUIET_S)  # let a burst of announcements settle before an expensive training
        self.progress = Progress(phase="queued", task="the expert waits for a job slot (factories go first)")
        await self.runner.turn("expert")  # the lineage is read once the job could start, not before the queue
        if sorted(m.id for m in self.expert_lineage()[0]) != lineage:
            return  # more arrived: the loop comes back
        shape, synthesised = tuple(self.data.images.shape[1:]), len({m.classes[0] for m in factories})
        arch = expert_arch(self.config, self.profile, len(self.classes), shape, real=len(self.data.labels),
                           synthesised=synthesised)  # fmt: skip
        self.progress = Progress(phase="synthesis", task=f"expert from {len(factories)} factories")
        try:
            job = self.expert_job(factories, arch, self.config.learning.seed, "expert", cache=True)
        except LoadError as exc:  # a blob gone meanwhile (revoked, dropped)
            self._skip(exc.artifact_id, str(exc))
            return
        done_job = await self.run_job(job)
        # the sets it drew are kept even if it failed: a retry without a blamed factory samples only what is new
        adopted = self.cache.adopt(done_job.workdir / OUT / CACHED, self.store.is_revoked)
        log.debug("kept %d synthetic set(s) in the cache", adopted)
        if done_job.blame is not None:  # a peer's factory broke the job (cannot be loaded or sampled, a limit)
            self._skip(done_job.blame, done_job.error or "")
            return
        if not done_job.ok or done_job.result is None:
            raise RuntimeError(f"training the expert failed: {done_job.error}")
        built = done_job.result
        if any(self.store.is_revoked(aid) for aid in built["lineage"]):
            return  # withdrawn while it trained: never publish it; the revocation woke the next round
        blob, classes = done_job.blob.read_bytes(), list(range(len(self.classes)))
        lineage, seed, summary = built["lineage"], built["seed"], built["summary"]
        new = await self.outbox.publish("expert", classes, arch, blob, lineage, seed, summary)
        await self._revoke_stale_experts(new)
        self.progress = Progress(phase="ready")

    def _skip(self, aid: str, why: str) -> None:
        """A factory that broke an expert's job is not sampled again; the expert is trained without it."""
        self._unusable[aid] = why
        log.warning("skipping factory %s: %s", aid[:12], why)
        self.notify()

    def expert_job(
        self, factories: list[Manifest], arch: dict, seed: int, name: str, *, cache: bool, threads: int = 0
    ) -> Job:
        """The job that trains an expert from `factories` (LoadError if a blob is no longer held): the learner's
        and, without the cache, the unlearning proof's rebuild."""
        sources, inputs = [], {"data": str(self.data_file)}
        for m in factories:
            src, path = FactorySource.of(self.store, m)
            sources.append(dataclasses.asdict(src))
            inputs[src.input] = str(path)
        if cache:
            inputs["cache"] = str(self.cache.folder)
        args = {"factories": sources, "arch": arch, "seed": seed, "owner": self.outbox.me,
                "class_names": self.classes, "threads": threads or self.threads}  # fmt: skip
        return Job("expert", args, inputs, self.work / "jobs" / name, what=f"{name} from {len(factories)} factories")

    async def rebuild(self, factories: list[Manifest], expert: Manifest) -> JobResult:
        """Train `expert` again from `factories` in a job of its own, without the cache and with the threads it was
        built with: the unlearning proof. One at a time: the rebuilds share their workdir."""
        threads = expert.meta.get("threads")
        job = self.expert_job(factories, expert.arch, expert.seed, "verify", cache=False,
                              threads=threads if type(threads) is int and threads > 0 else self.threads)  # fmt: skip
        async with self._rebuilding:
            return await self.runner.run(job, Progress(phase="verify"))

    async def _revoke_stale_experts(self, keep: Manifest) -> None:
        """Every own live expert but `keep` is superseded: also after a crash between publishing and revoking."""
        stale = [m.id for m in self.store.live("expert") if m.owner == self.outbox.me and m.id != keep.id]
        if stale:
            await self.unlearning.revoke(stale, reason=f"superseded by {keep.id[:12]}")
