"""What a site builds, as pure functions of their inputs: no asyncio, no scheduler, no network.

    factory_c = TrainFactory(real_c, seed_c, cfg)                       one per local class c
    expert    = TrainExpert(real ∪ ⋃_{Γ ∈ lineage} Sample(Γ, seed_Γ), seed, arch)

The expert is a deterministic function of the site's real data, its lineage (the factory IDs it was
trained from), its seed and its arch, so anyone holding the same inputs rebuilds it bit for bit: that is
how `ffnode verify-unlearning` proves that a revoked factory left no trace (see unlearn.py). The
synthetic sets are cached under the node's work folder (synthcache.py), keyed by everything that determines
them, and revocation purges them; so are own factories where jobs.factory_cache names a folder (factorycache.py),
so a sweep trains none twice. The blob of what is built is written by artifacts/blob.py; which profile a
site trains with is profiles.site_profile's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch

from ffnode.arch import LoadError
from ffnode.artifacts.codec import canonical_bytes
from ffnode.artifacts.store import atomic_write
from ffnode.config import PrivacyConfig
from ffnode.data.sources import ImageSet
from ffnode.expert.config import ExpertConfig
from ffnode.expert.train import train_expert
from ffnode.factory.config import FactoryConfig
from ffnode.factory.dp import DPPlan, plan_dp
from ffnode.factory.train import load_snapshot, train_factory
from ffnode.jobs.factorycache import CachedFactory, FactoryCache
from ffnode.jobs.progress import Progress, ticker
from ffnode.jobs.spec import FactorySource
from ffnode.jobs.synthcache import SynthCache
from ffnode.loaders import load_factory_file
from ffnode.privacy.audit import AuditError, AuditSettings, audit_factory, holdout_split
from ffnode.privacy.policy import AUDIT_FILE, AuditPolicy, audit_of, refusals, signed_verdict
from ffnode.synth import SampleError, synthesize

# One training at a time in this process: torch's seeding (model init) is process-global. A job runs one build,
# so this matters to callers that build in-process (the tests, scripts), where two builds may share a process.
BUILD_LOCK = threading.Lock()
log = logging.getLogger("ffnode.learner")


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from the node seed and the IDs it applies to: independent of everything else present."""
    return int.from_bytes(hashlib.sha256(canonical_bytes(list(parts))).digest()[:8], "big") >> 1


# -- factories -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FactoryBuild:
    """A trained factory and its audit: `weights` is None when no snapshot passed, and `withheld` says why."""

    weights: dict[str, Any] | None
    summary: dict[str, Any]  # the manifest's meta: training figures, and the published snapshot's audit
    seed: int
    withheld: str | None = None
    cached: bool = False  # taken from the factory cache, not trained


def factory_seed(node_seed: int, label: int) -> int:
    """The seed of a class's factory training (its weights, and so the run its snapshots and audits belong to)."""
    return derive_seed(node_seed, "factory", label)


def audit_seed(node_seed: int, label: int) -> int:
    """The seed of a class's audit: its samples (the owner's picture draws them again) and its attack."""
    return derive_seed(node_seed, "audit", label)


def factory_split(data: ImageSet, label: int, node_seed: int, privacy: PrivacyConfig) -> tuple[np.ndarray, np.ndarray]:
    """(training images, held-out images) of one local class: the held-out slice never trains the factory."""
    images = data.images[data.labels == label]
    if not privacy.audit:
        return images, images[:0]
    seed = derive_seed(node_seed, "holdout", label)
    train, held = holdout_split(len(images), seed, privacy.holdout_fraction, privacy.holdout_min, privacy.holdout_max)
    return images[train], images[held]


def factory_dp(privacy: PrivacyConfig, n_train: int, cfg: FactoryConfig) -> DPPlan | None:
    """The DP-SGD plan of a factory trained on `n_train` images under `privacy` (None: privacy.dp_epsilon is 0):
    the noise for (dp_epsilon, dp_delta) over the config's steps at its batch size (factory/dp.py)."""
    if not privacy.dp_epsilon:
        return None
    return plan_dp(
        privacy.dp_epsilon, n_train, cfg.batch_size, cfg.train_steps,
        delta=privacy.dp_delta, max_grad_norm=privacy.dp_max_grad_norm,
    )  # fmt: skip


def make_factory(
    data: ImageSet,
    label: int,
    cfg: FactoryConfig,
    node_seed: int,
    privacy: PrivacyConfig,
    work: Path,
    progress: Progress,
    should_stop: Callable[[], bool] = lambda: False,
    cache: FactoryCache | None = None,
) -> FactoryBuild:
    """Train the factory of one local class (resuming from `work`), audit it and pick what to publish: the final
    weights if they pass the audit policy, else the latest earlier snapshot that does, else nothing. Audits
    already made of this run are read back from `work`, not redone. With privacy.dp_epsilon the training is DP-SGD
    and the published meta.dp states the epsilon of the steps the published weights saw. With `cache`, a factory
    built before from the same inputs is taken from it (bitwise what training gives: factorycache.py), and a new
    one is written to it."""
    seed = factory_seed(node_seed, label)
    work.mkdir(parents=True, exist_ok=True)
    key = (data.images[data.labels == label], label, cfg.to_dict(), node_seed, dataclasses.asdict(privacy))
    if cache is not None and (hit := cache.get(*key)) is not None:
        if hit.record is not None:  # the owner's record of its audits (`ffnode audit`), as training would leave it
            atomic_write(work / AUDIT_FILE, json.dumps(hit.record, indent=1).encode())
        weights = None if hit.weights is None else safetensors.torch.load(hit.weights)
        return FactoryBuild(weights, hit.summary, seed, hit.withheld, cached=True)
    built, record = _train_factory(data, label, cfg, node_seed, privacy, work, progress, should_stop)
    if cache is not None:
        blob = None if built.weights is None else safetensors.torch.save(built.weights)
        cache.put(*key, CachedFactory(blob, built.summary, built.withheld, record))
    return built


def _train_factory(
    data: ImageSet,
    label: int,
    cfg: FactoryConfig,
    node_seed: int,
    privacy: PrivacyConfig,
    work: Path,
    progress: Progress,
    should_stop: Callable[[], bool],
) -> tuple[FactoryBuild, dict[str, Any] | None]:
    """make_factory without the cache; also returns the audit record (None without an audit)."""
    seed = factory_seed(node_seed, label)
    train, held = factory_split(data, label, node_seed, privacy)
    least = max(2, privacy.min_holdout)  # fewer held-out images: the policy refuses the audit whatever it shows
    if privacy.audit and len(held) < least:
        n = len(train) + len(held)
        too_few = f"{n} images are too few to audit a factory ({len(held)} held out, min_holdout {least})"
        return FactoryBuild(None, {}, seed, withheld=too_few), None
    dp = factory_dp(privacy, len(train), cfg)
    k = privacy.snapshots if privacy.audit else 0
    snapshots = sorted({cfg.train_steps * i // (k + 1) for i in range(1, k + 1)} - {0})
    with BUILD_LOCK:
        progress.phase = "factories"
        weights, summary = train_factory(
            train, cfg, seed=seed, checkpoint_dir=work, progress=ticker(progress, should_stop), snapshots=snapshots,
            dp=dp,
        )  # fmt: skip
        if not privacy.audit:
            return FactoryBuild(weights, summary, seed), None
        record = _audit_record(work, train, cfg, seed, dp)
        policy, reasons, task = AuditPolicy.of(privacy), [], progress.task
        settings = AuditSettings(samples=privacy.audit_samples)
        for step in [cfg.train_steps, *reversed(snapshots)]:
            w = weights if step == cfg.train_steps else load_snapshot(work, train, cfg, seed, step, dp)
            if w is None:
                continue  # a snapshot lost in a crash or damaged: the others still count
            figures = record["audits"].get(str(step), {}).get("figures")
            if not isinstance(audit_of({"audit": figures}), dict):  # not audited yet (or the record is damaged)
                progress.phase, progress.task = "audit", f"{task}, step {step}"
                try:
                    report = audit_factory(
                        w, cfg, train, held, seed=audit_seed(node_seed, label), settings=settings,
                        step=step, progress=ticker(progress, should_stop),
                    )  # fmt: skip
                except AuditError as exc:
                    reasons.append(f"step {step}: {exc}")
                    continue
                record["audits"][str(step)] = report.as_dict()
                atomic_write(work / AUDIT_FILE, json.dumps(record, indent=1).encode())
                figures = report.figures
            why = refusals(figures, policy)
            if not why:
                if step != cfg.train_steps:
                    log.warning("class %d: the audit fails (%s); publishing step %d", label, reasons, step)
                audit = figures | signed_verdict(figures, policy)  # the owner's word on it, signed with the figures
                published = {"steps": step, "images_seen": step * cfg.batch_size, "audit": audit}
                if dp is not None:  # an earlier snapshot has spent less: the accountant at its step
                    published["dp"] = dp.meta(step)
                return FactoryBuild(w, summary | published, seed), record
            reasons.append(f"step {step}: " + "; ".join(why))
    return FactoryBuild(
        None,
        summary,
        seed,
        withheld="its privacy audit fails: " + (" | ".join(reasons) or "no snapshot could be audited"),
    ), record


def _audit_record(work: Path, train: np.ndarray, cfg: FactoryConfig, seed: int, dp: DPPlan | None) -> dict[str, Any]:
    """The audits made of this training run so far (empty for a new run: other images, config, seed or DP plan)."""
    run_of = [cfg.to_dict(), seed] + ([dataclasses.asdict(dp)] if dp is not None else [])
    run = hashlib.sha256(train.tobytes() + canonical_bytes(run_of)).hexdigest()
    try:
        record = json.loads((work / AUDIT_FILE).read_text())
        if isinstance(record, dict) and record.get("run") == run and isinstance(record.get("audits"), dict):
            record["audits"] = {k: v for k, v in record["audits"].items() if isinstance(v, dict)}
            return record
    except (OSError, ValueError):  # absent, or damaged: audit again
        pass
    return {"run": run, "audits": {}}


# -- experts ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpertBuild:
    """An expert's weights and what made them: the lineage and seed go into its signed manifest."""

    weights: dict[str, Any]
    summary: dict[str, Any]  # training figures and label counts (the manifest's meta)
    lineage: list[str]  # sorted IDs of the factories sampled
    seed: int


def make_expert(
    data: ImageSet,
    factories: list[FactorySource],
    blobs: Mapping[str, Path],
    arch: dict[str, Any],
    seed: int,
    *,
    cache: SynthCache | None,
    progress: Progress,
    class_names: list[str],
    should_stop: Callable[[], bool] = lambda: False,
) -> ExpertBuild:
    """Synthesise from `factories` (their blobs at `blobs[f.input]`) and train on real + synthetic data.

    A pure function of (data, factories' blobs, arch, seed): `cache` only saves the sampling. Raises
    LoadError naming a factory that cannot be loaded or sampled; `progress.blame` names the one being read."""
    per_class = arch["synth_per_class"]
    by_class: dict[int, list[FactorySource]] = {}
    for f in factories:
        by_class.setdefault(f.label, []).append(f)
    with BUILD_LOCK:
        images, labels = [data.images], [data.labels]
        sampled, sampling_s = 0, 0.0  # images drawn now (not from the cache), and the seconds that took
        for i, (label, group) in enumerate(sorted(by_class.items())):
            progress.phase, progress.task = "synthesis", f"class {class_names[label]} ({i + 1}/{len(by_class)})"
            tick = ticker(progress, should_stop)
            x, y, seconds = _synthesise(blobs, label, group, per_class, seed, cache, progress, tick)
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
            progress=ticker(progress, should_stop),
        )
    summary |= {
        "n_real": int(len(data.labels)),
        # what the prior-corrected PoE divides out (ffnode.poe): this expert's label counts, real and all
        "real_counts": np.bincount(data.labels, minlength=arch["num_classes"]).tolist(),
        "label_counts": np.bincount(all_labels, minlength=arch["num_classes"]).tolist(),
        "synth_sampled": sampled,
        "synth_seconds": round(sampling_s, 3),
    }
    return ExpertBuild(weights, summary, sorted(m.id for m in factories), seed)


def _synthesise(
    blobs: Mapping[str, Path],
    label: int,
    group: list[FactorySource],
    per_class: int,
    seed: int,
    cache: SynthCache | None,
    progress: Progress,
    tick: Callable[[int, int], None],
) -> tuple[np.ndarray, np.ndarray, float]:
    """The synthetic set of one class, and the seconds spent sampling it (0.0 when it came from the cache)."""
    group = sorted(group, key=lambda f: f.id)
    ids = [f.id for f in group]
    sseed = derive_seed(seed, "synth", label, ids, per_class)
    if cache is not None and (hit := cache.get(label, ids, per_class, sseed)) is not None:
        return (*hit, 0.0)
    factories = []
    for f in group:
        progress.blame = f.id  # a job killed now (memory, time) was killed by this factory
        cfg, weights = load_factory_file(f, blobs[f.input])  # LoadError names the factory
        factories.append((label, weights, cfg))
    t0 = time.perf_counter()
    try:
        images, labels = synthesize(
            factories, per_class, seed=sseed, progress=tick, on_factory=lambda _, i: setattr(progress, "blame", ids[i])
        )
    except SampleError as exc:  # the factory that failed, not another of its class
        raise LoadError(group[exc.index], f"cannot sample it ({exc.__cause__})") from exc
    finally:
        progress.blame = None
    if cache is not None:
        cache.put(label, ids, per_class, sseed, images, labels)
    return images, labels, time.perf_counter() - t0
