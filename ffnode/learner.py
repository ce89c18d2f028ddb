"""The learning path of one node: local data -> factories -> (peers' factories) -> synthesis -> expert.

FederatedFactory (arXiv 2603.16370): site d trains one generator Γ_{d,c} per local class c, shares it,
and trains its expert f_d on its real data plus class-balanced samples from the generators of the
classes it lacks. Everything heavy runs in a worker thread so the node keeps gossiping meanwhile.

The expert is a pure function of its recorded lineage (factory IDs), seed and config, so any node can
rebuild it bit for bit: that is how `ffnode verify-unlearning` proves a revoked factory left no trace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ffnode.artifacts.codec import canonical_bytes
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store, atomic_write
from ffnode.config import Config, ConfigError
from ffnode.data.sources import ImageSet, load_dataset
from ffnode.expert.resnet import ExpertConfig
from ffnode.expert.train import train_expert
from ffnode.factory.model import FactoryConfig
from ffnode.factory.train import train_factory
from ffnode.identity import Identity
from ffnode.profiles import Profile, profile_for
from ffnode.synth import synthesize

log = logging.getLogger("ffnode.learner")

QUIET_S = 2.0  # wait this long after the last new factory before training: announcements come in bursts
RETRY_S = 30.0  # after a failed learning round
PENDING_GRACE_S = 60.0  # how long an announced factory whose blob has not arrived holds the expert back


@dataclass
class Progress:
    """What the node is doing now, for `ffnode status` and the testnet's live table."""

    phase: str = "starting"  # starting | factories | waiting | synthesis | expert | ready | left
    task: str = ""
    done: int = 0
    total: int = 0
    missing: list[str] | None = None  # classes no factory covers yet

    def update(self, done: int, total: int) -> None:
        """Progress callback of long work (worker thread); also logs every quarter, so the log shows it."""
        if total and 4 * done // total > 4 * self.done // max(self.total, 1):
            log.info("%s %s: %d/%d", self.phase, self.task, done, total)
        self.done, self.total = done, total


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from the node seed and the IDs it applies to: independent of everything else present."""
    return int.from_bytes(hashlib.sha256(canonical_bytes(list(parts))).digest()[:8], "big") >> 1


def weights_to_bytes(weights: dict[str, Any]) -> bytes:
    return save_safetensors({k: v.contiguous() for k, v in weights.items()})


def expert_arch(profile: Profile, config: Config, num_classes: int, image_shape: tuple[int, int, int]) -> dict:
    """Everything besides the lineage and seed that determines an expert's weights."""
    return {
        "expert": profile.expert.to_dict(),
        "num_classes": num_classes,
        "image_shape": list(image_shape),
        "synth_per_class": config.learning.synth_per_class or profile.synth_per_class,
        "profile": config.learning.profile,
    }


class Stopping(Exception):
    """The node is shutting down: long work in a worker thread aborts at its next progress tick (a thread
    cannot be cancelled, and asyncio.run waits for it); factory training resumes from its checkpoint."""


class FactoryLoadError(Exception):
    """A peer's factory that cannot be loaded or sampled: skipped, never fatal."""

    def __init__(self, factory_id: str, reason: str) -> None:
        super().__init__(reason)
        self.factory_id = factory_id


class Learner:
    def __init__(
        self,
        home: Path,
        config: Config,
        identity: Identity,
        store: Store,
        publish: Callable[[bytes], Awaitable[None]],
    ) -> None:
        self.home, self.config, self.identity, self.store = home, config, identity, store
        self.publish = publish
        self.work = home / "work"
        (self.work / "synth").mkdir(parents=True, exist_ok=True)
        self.progress = Progress()
        self.changed = asyncio.Event()  # set by the node whenever a factory goes live or anything is revoked
        self.data: ImageSet | None = None
        self._pending_since: dict[str, float] = {}  # factory ID -> when its blob was first found missing
        self._gave_up: set[str] = set()
        self._unusable: dict[str, str] = {}  # factory ID -> why it is not sampled
        self._build_lock = threading.Lock()  # one training at a time: torch seeding is process-global
        self.stopping = threading.Event()  # set by the node on shutdown

    @property
    def classes(self) -> list[str]:
        return self.config.federation.classes

    @property
    def left(self) -> bool:
        return (self.home / "left").exists()

    def local_classes(self) -> list[int]:
        assert self.data is not None
        return sorted({int(c) for c in np.unique(self.data.labels)})

    def profile(self) -> Profile:
        """The configured profile, fitted to the local images, with the config's overrides applied."""
        assert self.data is not None
        profile = profile_for(self.config.learning.profile, self.data.images.shape[1:])
        if steps := self.config.learning.factory_steps:
            profile = dataclasses.replace(profile, factory=dataclasses.replace(profile.factory, train_steps=steps))
        return profile

    # -- the loop ------------------------------------------------------------------------------------
    async def load_data(self) -> None:
        """Load and check the local data; bad data fails here, before the node starts anything else."""
        cfg = self.config.data
        self.data = await asyncio.to_thread(load_dataset, cfg.spec, split=cfg.split, classes=self.classes)
        names = [self.classes[c] for c in self.local_classes()]
        log.info("local data %s: %d images of classes %s", cfg.spec, len(self.data.labels), names)
        try:
            self.profile()  # an unknown profile name fails now, with the node's other start-up errors
        except ValueError as exc:
            raise ConfigError(f"{self.home / 'config.toml'} [learning]: {exc}") from None
        self.purge_synthetic({aid for r in self.store.revocations() for aid in r.ids})  # after a crash

    async def run(self) -> None:
        """Train what is due, then sleep until something changes (a factory goes live, a revocation)."""
        assert self.data is not None, "load_data() first"
        started = time.monotonic()
        while True:
            self.changed.clear()  # before the work: whatever arrives meanwhile wakes the next round
            try:
                if self.left:
                    self.progress = Progress(phase="left")
                else:
                    await self._train_own_factories()
                    await self._maybe_train_expert(deadline_passed=self._deadline_passed(started))
            except Stopping:
                return
            except Exception as exc:  # a bad round must not take the node (and its network) down
                log.exception("learning round failed; trying again in %.0f s or when something changes", RETRY_S)
                self.progress = Progress(phase="error", task=str(exc)[:120])
            timeout = 5.0 if self.progress.phase == "waiting" else RETRY_S if self.progress.phase == "error" else None
            try:
                async with asyncio.timeout(timeout):
                    await self.changed.wait()
            except TimeoutError:
                pass

    def _deadline_passed(self, started: float) -> bool:
        deadline = self.config.learning.deadline_s
        return deadline > 0 and time.monotonic() - started > deadline

    # -- factories -----------------------------------------------------------------------------------
    async def _train_own_factories(self) -> None:
        assert self.data is not None
        mine = [m for m in self._own_manifests() if m.kind == "factory"]
        done = {c for m in mine for c in m.classes}  # revoked ones count: a revoked factory is not retrained
        todo = [c for c in self.local_classes() if c not in done]
        for i, label in enumerate(todo):
            self.progress = Progress(phase="factories", task=f"factory {self.classes[label]} ({i + 1}/{len(todo)})")
            images = self.data.images[self.data.labels == label]
            fcfg = self.profile().factory
            seed = derive_seed(self.config.learning.seed, "factory", label)
            checkpoints = self.work / f"factory-{label}"  # training resumes from here after a crash
            checkpoints.mkdir(exist_ok=True)
            weights, summary = await asyncio.to_thread(
                train_factory,
                images,
                fcfg,
                seed=seed,
                checkpoint_dir=checkpoints,
                progress=self._ticker(self.progress),
            )
            if self.left:  # `ffnode leave` while it trained: this model must never be published
                return
            await self._publish_artifact("factory", [label], fcfg.to_dict(), weights, [], seed, summary)

    # -- expert --------------------------------------------------------------------------------------
    def expert_lineage(self) -> tuple[list[Manifest], list[str]]:
        """Live factories this node's expert should be trained from, and classes nothing covers yet."""
        own = set(self.local_classes())
        synth_own = self.config.learning.synth_own_classes
        usable = [m for m in self.store.live("factory") if self._usable(m)]
        factories = [m for m in usable if synth_own or m.classes[0] not in own]
        covered = own | {m.classes[0] for m in usable}
        withdrawn = {
            c
            for e in self.store.entries()
            if e.state == "revoked" and e.manifest.kind == "factory"
            for c in e.manifest.classes
        } - covered
        missing = [self.classes[c] for c in range(len(self.classes)) if c not in covered | withdrawn]
        return factories, missing

    def _usable(self, m: Manifest) -> bool:
        """A peer's factory must fit this federation before it is sampled: a valid class, a config this
        version understands and this federation's image shape; one that failed to load is skipped too."""
        reason = self._unusable.get(m.id)
        if reason is None:
            assert self.data is not None
            try:
                cfg = FactoryConfig.from_dict(m.arch)
                h, w, c = self.data.images.shape[1:]
                if len(m.classes) != 1 or m.classes[0] >= len(self.classes):
                    reason = f"class {m.classes} is not one of the federation's {len(self.classes)} classes"
                elif (cfg.image_size, cfg.image_size, cfg.channels) != (h, w, c):
                    reason = f"it makes {cfg.image_size}x{cfg.image_size}x{cfg.channels} images, not {h}x{w}x{c}"
            except (TypeError, ValueError) as exc:
                reason = f"its config is not understood ({exc})"
            if reason is None:
                return True
            self._unusable[m.id] = reason
            log.warning("skipping factory %s of %s: %s", m.id[:12], m.owner, reason)
        return False

    def _blocking_pending(self) -> list[Manifest]:
        """Announced factories whose blob has not arrived yet. Worth waiting for a while (the expert would
        be retrained the moment they arrive), but not forever: a peer may announce a blob nobody serves."""
        now = time.monotonic()
        pending = [m for m in self.store.pending() if m.kind == "factory"]
        self._pending_since = {m.id: self._pending_since.get(m.id, now) for m in pending}
        blocking = [m for m in pending if now - self._pending_since[m.id] < PENDING_GRACE_S]
        for m in pending:
            if m not in blocking and m.id not in self._gave_up:
                self._gave_up.add(m.id)
                log.warning(
                    "factory %s of %s has not arrived in %.0f s: going on without it",
                    m.id[:12],
                    m.owner,
                    PENDING_GRACE_S,
                )
        return blocking

    def current_expert(self) -> Manifest | None:
        experts = [m for m in self.store.live("expert") if m.owner == self.identity.peer_id]
        return max(experts, key=lambda m: m.seq) if experts else None

    async def _maybe_train_expert(self, *, deadline_passed: bool) -> None:
        factories, missing = self.expert_lineage()
        current = self.current_expert()
        lineage = sorted(m.id for m in factories)
        if current is not None and sorted(current.lineage) == lineage:
            await self._revoke_stale_experts(current)
            self.progress = Progress(phase="ready")
            return
        pending = self._blocking_pending()
        if (missing or pending) and not deadline_passed:
            self.progress = Progress(phase="waiting", missing=missing)
            return
        if missing:
            log.warning("deadline passed: training the expert without classes %s", missing)
        await asyncio.sleep(QUIET_S)  # let a burst of announcements settle before an expensive training
        if sorted(m.id for m in self.expert_lineage()[0]) != lineage:
            return  # more arrived: the loop comes back
        assert self.data is not None
        profile = self.profile()
        arch = expert_arch(profile, self.config, len(self.classes), tuple(self.data.images.shape[1:]))
        seed = self.config.learning.seed
        self.progress = Progress(phase="synthesis", task=f"expert from {len(factories)} factories")
        try:
            weights, summary = await asyncio.to_thread(self.build_expert, factories, arch, seed, self.progress)
        except FactoryLoadError as exc:
            self._unusable[exc.factory_id] = str(exc)
            log.warning("skipping factory %s: %s", exc.factory_id[:12], exc)
            self.changed.set()
            return
        if self.left or any(self.store.is_revoked(aid) for aid in lineage):
            self.changed.set()  # withdrawn while it trained: never publish it, train again from what is left
            return
        new = await self._publish_artifact(
            "expert", list(range(len(self.classes))), arch, weights, lineage, seed, summary
        )
        await self._revoke_stale_experts(new)
        self.progress = Progress(phase="ready")

    async def _revoke_stale_experts(self, keep: Manifest) -> None:
        """Every own live expert but `keep` is superseded: also after a crash between publishing and revoking."""
        stale = [m.id for m in self.store.live("expert") if m.owner == self.identity.peer_id and m.id != keep.id]
        if stale:
            from ffnode.unlearn import revoke  # the superseded expert is withdrawn like any other artifact

            await revoke(self, stale, reason=f"superseded by {keep.id[:12]}")

    def build_expert(
        self, factories: list[Manifest], arch: dict, seed: int, progress: Progress, use_cache: bool = True
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Synthesise from `factories` and train on real + synthetic data: a pure function of its inputs.
        One build at a time (the proof may run beside the learner): torch's seeding is process-global."""
        assert self.data is not None
        with self._build_lock:
            per_class = arch["synth_per_class"]
            images, labels = [self.data.images], [self.data.labels]
            by_class: dict[int, list[Manifest]] = {}
            for m in factories:
                by_class.setdefault(m.classes[0], []).append(m)
            sampled, sampling_s = 0, 0.0  # images drawn now (not from the cache), and the seconds that took
            for i, (label, group) in enumerate(sorted(by_class.items())):
                progress.phase, progress.task = "synthesis", f"class {self.classes[label]} ({i + 1}/{len(by_class)})"
                x, y, seconds = self._synthesise(label, group, per_class, seed, use_cache, progress)
                images.append(x)
                labels.append(y)
                if seconds:
                    sampled, sampling_s = sampled + len(y), sampling_s + seconds
            progress.phase, progress.task = "expert", "training"
            all_labels = np.concatenate(labels)
            weights, summary = train_expert(
                np.concatenate(images),
                all_labels,
                arch["num_classes"],
                ExpertConfig.from_dict(arch["expert"]),
                seed=seed,
                progress=self._ticker(progress),
            )
        summary |= {
            "n_real": int(len(self.data.labels)),
            # what the prior-corrected PoE divides out (ffnode.poe): this expert's label counts, real and all
            "real_counts": np.bincount(self.data.labels, minlength=arch["num_classes"]).tolist(),
            "label_counts": np.bincount(all_labels, minlength=arch["num_classes"]).tolist(),
            "synth_sampled": sampled,
            "synth_seconds": round(sampling_s, 3),
        }
        return weights, summary

    def _synthesise(
        self, label: int, group: list[Manifest], per_class: int, seed: int, use_cache: bool, progress: Progress
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """The synthetic set of one class, and the seconds spent sampling it (0.0 when it came from the cache)."""
        ids = sorted(m.id for m in group)
        sseed = derive_seed(seed, "synth", label, ids, per_class)
        key = hashlib.sha256(canonical_bytes([label, ids, per_class, sseed])).hexdigest()[:16]
        path = self.work / "synth" / f"class{label}-{key}.npz"
        if use_cache and path.exists() and path.with_suffix(".json").exists():
            with np.load(path) as z:
                return z["images"], z["labels"], 0.0
        factories = []
        for m in sorted(group, key=lambda m: m.id):
            try:
                weights = load_safetensors(self.store.read_blob(m))
            except Exception as exc:  # a signed but broken blob, or revoked meanwhile: skip, never crash
                raise FactoryLoadError(m.id, f"cannot load its weights ({exc})") from exc
            factories.append((label, weights, FactoryConfig.from_dict(m.arch)))
        t0 = time.perf_counter()
        try:
            images, labels = synthesize(factories, per_class, seed=sseed, progress=self._ticker(progress))
        except RuntimeError as exc:  # weights that do not fit their config
            raise FactoryLoadError(ids[0], f"cannot sample it ({exc})") from exc
        if use_cache and not any(self.store.is_revoked(aid) for aid in ids):
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, images=images, labels=labels)
            tmp.replace(path)  # the data first, then the index that purge_synthetic reads
            atomic_write(path.with_suffix(".json"), json.dumps({"factories": ids}).encode())
        return images, labels, time.perf_counter() - t0

    def _ticker(self, progress: Progress) -> Callable[[int, int], None]:
        """The progress callback for work in a worker thread: records progress, aborts on shutdown."""

        def tick(done: int, total: int) -> None:
            if self.stopping.is_set():
                raise Stopping
            progress.update(done, total)

        return tick

    def purge_synthetic(self, revoked: set[str]) -> int:
        """Delete every cached synthetic set drawn from a revoked factory (and any set whose index was never
        written: a crash between the two files); returns how many."""
        count = 0
        for data in (self.work / "synth").glob("*.npz"):
            if not data.with_suffix(".json").exists():
                data.unlink()
        for meta in (self.work / "synth").glob("*.json"):
            if revoked & set(json.loads(meta.read_text())["factories"]):
                meta.with_suffix(".npz").unlink(missing_ok=True)
                meta.unlink()
                count += 1
        return count

    # -- publishing ----------------------------------------------------------------------------------
    def _own_manifests(self) -> list[Manifest]:
        return [e.manifest for e in self.store.entries() if e.manifest.owner == self.identity.peer_id]

    async def _publish_artifact(
        self,
        kind: str,
        classes: list[int],
        arch: dict,
        weights: dict[str, Any],
        lineage: list[str],
        seed: int,
        summary: dict[str, Any],
    ) -> Manifest:
        data = weights_to_bytes(weights)
        blob = self.store.put_blob_bytes(data)
        m = Manifest(
            kind=kind,
            owner=self.identity.peer_id,
            owner_key=self.identity.public_key,
            federation=self.config.federation.name,
            classes=classes,
            arch=arch,
            blob=blob,
            size=len(data),
            created=int(time.time() * 1000),
            seq=self.store.next_seq(self.identity.peer_id),
            lineage=lineage,
            seed=seed,
            meta=_plain(summary),
        )
        envelope = m.seal(self.identity)
        self.store.add(envelope)
        log.info(
            "published %s %s (%s, %.1f MB)", kind, m.id[:12], [self.classes[c] for c in classes[:3]], len(data) / 1e6
        )
        await self.publish(envelope)
        return m


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """Summaries go into a signed manifest: msgpack-able scalars and int lists only, and no NaN or infinity (other
    runtimes may not re-encode them bit for bit, which would break the signature there)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, bool | str):
            out[k] = v
        elif isinstance(v, int | np.integer):
            out[k] = int(v)
        elif isinstance(v, float | np.floating) and np.isfinite(v):
            out[k] = float(v)
        elif isinstance(v, list) and all(isinstance(x, int | np.integer) for x in v):
            out[k] = [int(x) for x in v]  # per-class label counts
    return out
