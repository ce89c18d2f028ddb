"""jobs/factorycache.py: a site's own trained factories, keyed by everything that determines them. A hit gives the
bytes and figures a fresh run gives, any change of input misses, a damaged entry is retrained, and a revocation or
leaving deletes the entries of the site's images (exact unlearning holds for the cache too)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ffnode.artifacts.blob import weights_to_bytes
from ffnode.artifacts.store import Store
from ffnode.config import PrivacyConfig
from ffnode.daemon.outbox import Outbox
from ffnode.daemon.unlearn import DATA_FILE, WORK, Unlearning
from ffnode.data.sources import ImageSet, load_dataset
from ffnode.factory.config import FactoryConfig
from ffnode.identity import Identity
from ffnode.jobs.build import FactoryBuild, make_factory
from ffnode.jobs.factorycache import CachedFactory, FactoryCache
from ffnode.jobs.progress import Progress
from ffnode.jobs.synthcache import SynthCache
from ffnode.privacy.policy import AUDIT_FILE
from ffnode.profiles import PROFILES

CLASSES = ["0", "1", "2"]
CFG = PROFILES["tiny"].factory
PRIVACY = PrivacyConfig(audit_samples=40, snapshots=1)  # audited, quickly
OWNER = "12D3KooWOwner"


@pytest.fixture(scope="module")
def data() -> ImageSet:
    d = load_dataset("digits", split="train", classes=[str(i) for i in range(10)])
    keep = np.isin(d.labels, [0, 1])
    return ImageSet(d.images[keep], d.labels[keep], CLASSES)


def build(data: ImageSet, work: Path, cache: FactoryCache | None, privacy: PrivacyConfig = PRIVACY) -> FactoryBuild:
    return make_factory(data, 0, CFG, 3, privacy, work, Progress(), cache=cache)


def blob(built: FactoryBuild) -> bytes:
    assert built.weights is not None, built.withheld
    return weights_to_bytes(built.weights, OWNER)


def plain(summary: dict[str, Any]) -> str:
    """A summary as the job's result.json carries it to the manifest."""
    return json.dumps(summary, sort_keys=True)


def timeless(value: Any) -> Any:
    """`value` without its "seconds": the one figure a rerun does not repeat."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if k != "seconds"}
    return value


@pytest.fixture(scope="module")
def fresh(data: ImageSet, tmp_path_factory: pytest.TempPathFactory) -> tuple[FactoryBuild, Path]:
    """A factory trained and audited into a new cache (`cache`, its work folder `work`), and their folder."""
    root = tmp_path_factory.mktemp("fresh")
    built = build(data, root / "work", FactoryCache(root / "cache"))
    assert not built.cached
    return built, root


def test_a_hit_is_bitwise_the_blob_and_figures_of_a_fresh_run(
    data: ImageSet, fresh: tuple[FactoryBuild, Path], tmp_path: Path
) -> None:
    first, root = fresh
    again = build(data, tmp_path / "again", None)  # trained again from scratch, without the cache
    hit = build(data, tmp_path / "hit", FactoryCache(root / "cache"))
    assert hit.cached and not again.cached
    assert blob(hit) == blob(first) == blob(again)  # the purity rule: same input, same bytes, cache or not
    assert plain(hit.summary) == plain(first.summary)  # the manifest's figures, its seconds included
    assert "audit" in hit.summary and hit.seed == again.seed
    assert plain(timeless(again.summary)) == plain(timeless(first.summary))  # a rerun's, but for its seconds
    # the owner's record of the audits, as training left it (`ffnode audit` reads it)
    hit_record, trained, rerun = (
        json.loads((work / AUDIT_FILE).read_text()) for work in (tmp_path / "hit", root / "work", tmp_path / "again")
    )
    assert hit_record == trained and hit_record["audits"] and timeless(hit_record) == timeless(rerun)


def test_every_input_of_the_key_changes_it(data: ImageSet, fresh: tuple[FactoryBuild, Path]) -> None:
    images = data.images[data.labels == 0]
    cfg, privacy = CFG.to_dict(), dataclasses.asdict(PRIVACY)
    cache = FactoryCache(fresh[1] / "cache")
    assert cache.get(images, 0, cfg, 3, privacy) is not None
    flipped = images.copy()
    flipped[0, 0, 0, 0] ^= 1
    assert cache.get(flipped, 0, cfg, 3, privacy) is None  # one bit of one image
    assert cache.get(images[1:], 0, cfg, 3, privacy) is None  # one image fewer
    assert cache.get(images, 1, cfg, 3, privacy) is None
    assert cache.get(images, 0, cfg, 4, privacy) is None  # the node seed
    for name in [f.name for f in dataclasses.fields(FactoryConfig)]:
        assert cache.get(images, 0, cfg | {name: other(cfg[name])}, 3, privacy) is None, name
    for name in privacy:
        assert cache.get(images, 0, cfg, 3, privacy | {name: other(privacy[name])}) is None, name
    assert (
        FactoryCache(fresh[1] / "cache", variant="threads=2").get(images, 0, cfg, 3, privacy) is None
    )  # torch, device


def other(value: Any) -> Any:
    """A value of a config field's type that differs from `value`."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    return [*value, value[-1] if value else 1]


@pytest.mark.parametrize("damage", ["weights", "index", "no index"])
def test_a_damaged_entry_is_ignored_and_retrained(
    data: ImageSet, fresh: tuple[FactoryBuild, Path], tmp_path: Path, damage: str
) -> None:
    first, root = fresh
    cache = FactoryCache(tmp_path / "cache")
    for path in (root / "cache").iterdir():
        (cache.folder / path.name).write_bytes(path.read_bytes())
    [weights] = cache.folder.glob("*.safetensors")
    if damage == "weights":
        raw = bytearray(weights.read_bytes())
        raw[-5] ^= 0x10  # one bit of a tensor: the header still parses
        weights.write_bytes(bytes(raw))
    elif damage == "index":
        weights.with_suffix(".json").write_text("{not json")
    else:
        weights.with_suffix(".json").unlink()
    again = build(data, tmp_path / "work", cache)
    assert not again.cached and blob(again) == blob(first)  # trained again, the same factory
    assert build(data, tmp_path / "work2", cache).cached  # and the entry written anew


def test_a_withheld_factory_is_cached_with_its_reason(data: ImageSet, tmp_path: Path) -> None:
    strict = dataclasses.replace(PRIVACY, max_dcr_close=-1.0)  # no snapshot can pass
    cold = build(data, tmp_path / "cold", FactoryCache(tmp_path / "cache"), strict)
    hit = build(data, tmp_path / "hit", FactoryCache(tmp_path / "cache"), strict)
    assert cold.weights is None and cold.withheld and not cold.cached
    assert hit.cached and hit.weights is None and hit.withheld == cold.withheld
    assert plain(hit.summary) == plain(cold.summary)


def test_a_job_writes_to_its_own_folder_and_the_node_adopts(tmp_path: Path) -> None:
    cache, out = FactoryCache(tmp_path / "cache"), tmp_path / "job" / "out" / "cache"
    images = np.zeros((4, 8, 8, 1), np.uint8)
    entry = CachedFactory(b"weights", {"steps": 4}, None, None)
    FactoryCache(cache.folder, write_to=out).put(images, 0, {}, 1, {}, entry)
    assert not list(cache.folder.iterdir())  # the node's cache untouched by the job
    assert cache.get(images, 0, {}, 1, {}) is None
    assert cache.adopt(out) == 1 and not list(out.iterdir())
    assert cache.get(images, 0, {}, 1, {}) == entry


async def test_revoking_or_leaving_deletes_the_entries_of_this_sites_images(tmp_path: Path) -> None:
    """An own factory revoked: the entries trained on the site's images of its class go; leaving: those of every
    class it holds, published or withheld. Another site's entry of the same class (other images) stays."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 8, 1), dtype=np.uint8)
    labels = np.array([0] * 6 + [1] * 6)
    (tmp_path / WORK).mkdir()
    np.savez(tmp_path / WORK / DATA_FILE, images=images, labels=labels)  # as the node writes it at start
    theirs = rng.integers(0, 256, (6, 8, 8, 1), dtype=np.uint8)
    cache = FactoryCache(tmp_path / "shared")
    entry = CachedFactory(b"w", {}, None, None)
    for label, x in ((0, images[:6]), (1, images[6:]), (0, theirs)):
        cache.put(x, label, {}, 1, {}, entry)
    store = Store(tmp_path / "store", federation="testnet")
    outbox = Outbox(tmp_path, Identity(b"\x01" * 32), store, "testnet", CLASSES, _no_gossip)
    unlearning = Unlearning(store, outbox, SynthCache(tmp_path / WORK / "synth"), factories=cache)
    w = weights_to_bytes({"w": torch.zeros(2)}, outbox.me)
    mine = await outbox.publish("factory", [0], {}, w, [], 7, {})  # class 1's factory was withheld: never published
    await outbox.revoke([mine.id], reason="withdrawn")  # the store's event runs the cascade
    assert cache.get(images[:6], 0, {}, 1, {}) is None
    assert cache.get(images[6:], 1, {}, 1, {}) == entry == cache.get(theirs, 0, {}, 1, {})
    outbox.mark_left()
    await unlearning.finish_leaving()
    assert cache.get(images[6:], 1, {}, 1, {}) is None  # withheld, never revoked: deleted all the same
    assert cache.get(theirs, 0, {}, 1, {}) == entry  # not this site's images
    assert not (tmp_path / WORK / DATA_FILE).exists()


async def _no_gossip(envelope: bytes) -> None:
    """Nothing on the network in these tests."""
