"""jobs/build.py without a job: an expert is a pure function of (real data, lineage, seed, arch), the
synthetic cache changes nothing but time, and revocation purges exactly the sets drawn from revoked factories."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from ffnode.arch import LoadError
from ffnode.artifacts.blob import weights_to_bytes
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.revocation import Revocation
from ffnode.artifacts.store import Store
from ffnode.config import Config, PrivacyConfig
from ffnode.data.sources import ImageSet, load_dataset
from ffnode.identity import Identity
from ffnode.jobs.build import ExpertBuild, derive_seed, make_expert, make_factory
from ffnode.jobs.progress import Progress, Stopping
from ffnode.jobs.spec import FactorySource
from ffnode.jobs.synthcache import SynthCache
from ffnode.profiles import expert_arch, site_profile

CLASSES = ["0", "1", "2"]


def digits(labels: list[int]) -> ImageSet:
    d = load_dataset("digits", split="train", classes=[str(i) for i in range(10)])
    keep = np.isin(d.labels, labels)
    return ImageSet(d.images[keep], d.labels[keep], CLASSES)


def tiny_config() -> Config:
    config = Config()
    config.federation.name, config.federation.classes = "testnet", list(CLASSES)
    config.learning.profile = "tiny"
    return config


def publish_factory(store: Store, peer: Identity, label: int, seq: int) -> Manifest:
    """Train a tiny factory of `label` as `peer` would and put it, signed, into `store`."""
    data = digits([label])
    profile = site_profile(tiny_config(), data.images.shape[1:])
    checkpoints = store.root / "ckpt" / f"{label}"
    built = make_factory(data, label, profile.factory, seq, PrivacyConfig(audit=False), checkpoints, Progress())
    blob = weights_to_bytes(built.weights, peer.peer_id)
    m = Manifest(
        kind="factory",
        owner=peer.peer_id,
        owner_key=peer.public_key,
        federation="testnet",
        classes=[label],
        class_list=CLASSES,
        arch=profile.factory.to_dict(),
        blob=store.put_blob_bytes(blob),
        size=len(blob),
        created=int(time.time() * 1000),
        seq=seq,
        seed=built.seed,
    )
    store.add(m.seal(peer))
    return m


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[Manifest], list[Identity], ImageSet, dict]:
    root = tmp_path_factory.mktemp("build")
    store = Store(root / "store", federation="testnet")
    peers = [Identity(bytes([i + 1]) * 32) for i in range(2)]
    factories = [publish_factory(store, peers[i], i + 1, seq=1) for i in range(2)]
    data = digits([0])
    profile = site_profile(tiny_config(), data.images.shape[1:])
    arch = expert_arch(tiny_config(), profile, 3, data.images.shape[1:], real=len(data.labels), synthesised=2)
    return store, factories, peers, data, arch


def expert(world: tuple, factories: list[Manifest], cache: SynthCache | None, seed: int = 7) -> ExpertBuild:
    """make_expert as a job calls it: the factories as sources, their blobs by input name."""
    store, _, _, data, arch = world
    held = [FactorySource.of(store, m) for m in factories]
    sources, blobs = [src for src, _ in held], {src.input: path for src, path in held}
    return make_expert(data, sources, blobs, arch, seed, cache=cache, progress=Progress(), class_names=CLASSES)


def build(world: tuple, factories: list[Manifest], cache: SynthCache | None, seed: int = 7) -> bytes:
    return weights_to_bytes(expert(world, factories, cache, seed).weights, "owner")


def test_same_inputs_give_a_bitwise_identical_expert(world: tuple, tmp_path: Path) -> None:
    _, factories, _, _, _ = world
    cold = build(world, factories, SynthCache(tmp_path / "synth"))  # samples, fills the cache
    warm = build(world, factories, SynthCache(tmp_path / "synth"))  # from the cache
    uncached = build(world, list(reversed(factories)), None)  # another order, no cache
    assert cold == warm == uncached
    assert build(world, factories, None, seed=8) != cold  # the seed matters


def test_the_expert_records_its_lineage_and_label_counts(world: tuple) -> None:
    _, factories, _, data, arch = world
    built = expert(world, factories, None)
    assert built.lineage == sorted(m.id for m in factories)
    assert built.seed == 7
    per_class = arch["synth_per_class"]
    assert built.summary["real_counts"] == [len(data.labels), 0, 0]
    assert built.summary["label_counts"] == [len(data.labels), per_class, per_class]
    assert built.summary["n_real"] == len(data.labels)


def test_an_expert_without_a_factory_is_the_one_trained_without_it(world: tuple) -> None:
    """The unlearning proof in miniature: dropping a factory gives what a build from scratch without it gives."""
    _, factories, _, _, _ = world
    assert build(world, factories[:1], None) == build(world, factories[:1], None)
    assert build(world, factories[:1], None) != build(world, factories, None)


def test_revocation_purges_exactly_the_sets_drawn_from_revoked_factories(world: tuple, tmp_path: Path) -> None:
    _, factories, _, _, _ = world
    cache = SynthCache(tmp_path / "synth")
    build(world, factories, cache)
    assert len(list(cache.folder.glob("*.json"))) == 2  # one set per class
    (cache.folder / "class9-orphan.npz").write_bytes(b"a crash between data and index")
    assert cache.purge({factories[0].id}) == 1
    left = [p.name for p in cache.folder.iterdir()]
    assert len(left) == 2 and all(name.startswith("class2-") for name in left)  # factory 1's set and index


def test_a_job_draws_into_its_own_folder_and_the_node_adopts_only_unrevoked_sets(world: tuple, tmp_path: Path) -> None:
    _, factories, _, _, _ = world
    cache, drawn = SynthCache(tmp_path / "synth"), tmp_path / "job" / "out" / "synth"
    cold = build(world, factories, SynthCache(cache.folder, write_to=drawn))
    assert not list(cache.folder.iterdir()) and len(list(drawn.glob("*.json"))) == 2  # the node's cache untouched
    assert cache.adopt(drawn, lambda aid: aid == factories[0].id) == 1  # the revoked factory's set stays out
    assert [p.name.startswith("class2-") for p in cache.folder.glob("*.json")] == [True]
    assert build(world, factories, SynthCache(cache.folder, write_to=tmp_path / "job2")) == cold


def test_a_factory_whose_blob_is_gone_is_named_in_the_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", federation="testnet")
    peer = Identity(b"\x09" * 32)
    m = publish_factory(store, peer, 1, seq=1)
    revocation = Revocation(
        owner=peer.peer_id,
        owner_key=peer.public_key,
        federation="testnet",
        ids=[m.id],
        reason="test",
        created=int(time.time() * 1000),
        seq=2,
    )
    store.add(revocation.seal(peer))  # the store deletes the blob
    data = digits([0])
    profile = site_profile(tiny_config(), data.images.shape[1:])
    arch = expert_arch(tiny_config(), profile, 3, data.images.shape[1:], real=len(data.labels), synthesised=2)
    with pytest.raises(LoadError) as info:
        FactorySource.of(store, m)
    assert info.value.artifact_id == m.id
    with pytest.raises(LoadError) as info:  # gone after the job was laid out: the job names it too
        source = FactorySource(m.id, m.owner, 1, dict(m.arch), "f")
        make_expert(data, [source], {"f": tmp_path / "gone"}, arch, 7, cache=None, progress=Progress(),
                    class_names=CLASSES)  # fmt: skip
    assert info.value.artifact_id == m.id


def test_work_stops_at_the_next_tick_when_told(tmp_path: Path) -> None:
    data = digits([1])
    profile = site_profile(tiny_config(), data.images.shape[1:])
    cfg = dataclasses.replace(profile.factory, train_steps=50)
    with pytest.raises(Stopping):
        make_factory(data, 1, cfg, 0, PrivacyConfig(), tmp_path / "ckpt", Progress(), should_stop=lambda: True)


def test_a_class_too_small_for_its_audit_is_withheld_untrained(tmp_path: Path) -> None:
    """A class whose held-out slice is under min_holdout would be refused whatever its audit shows: no step is spent
    on it (near-IID partitions hold dozens of such cells), and the reason names the numbers."""
    d = digits([1])
    data = ImageSet(d.images[:18], d.labels[:18], CLASSES)  # 18 images: 9 held out
    profile = site_profile(tiny_config(), data.images.shape[1:])
    built = make_factory(
        data, 1, profile.factory, 0, PrivacyConfig(), tmp_path / "ckpt", Progress(), should_stop=lambda: True
    )  # fmt: skip  (a step taken would raise Stopping)
    assert (
        built.weights is None
        and built.withheld == "18 images are too few to audit a factory (9 held out, min_holdout 10)"
    )
    assert not list((tmp_path / "ckpt").iterdir())
    lenient = make_factory(data, 1, profile.factory, 0, PrivacyConfig(min_holdout=9), tmp_path / "ckpt2", Progress())
    assert lenient.summary["steps"] == profile.factory.train_steps  # trained and audited under a policy that may use it


def test_seeds_depend_on_what_they_are_for() -> None:
    assert derive_seed(0, "factory", 1) == derive_seed(0, "factory", 1)
    assert len({derive_seed(0, "factory", 1), derive_seed(0, "factory", 2), derive_seed(1, "factory", 1)}) == 3
    assert 0 <= derive_seed("x") < 2**63


def test_progress_estimates_the_time_left_at_the_pace_so_far() -> None:
    p = Progress()
    assert p.eta_s() is None
    p.update(0, 100)
    time.sleep(0.05)
    p.update(50, 100)
    assert 0.04 <= p.eta_s() < 1.0  # 50 more steps at the pace of the first 50
    p.update(1, 10)  # another piece of work: timed from its own start
    assert p.eta_s() is None
