"""Which peers' factories a site's expert is trained from (Learner.expert_lineage): the classes it lacks, and those
it holds fewer real images of than it synthesises a class, topped up from peers' factories trained on at least that
many images, never its own."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ffnode.artifacts.blob import weights_to_bytes
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.config import Config
from ffnode.daemon.learner import Learner
from ffnode.data.sources import ImageSet
from ffnode.identity import Identity
from ffnode.profiles import profile_for

CLASSES = ["a", "b", "c", "d"]


async def test_a_class_held_with_few_images_is_topped_up_from_peers_factories(tmp_path: Path) -> None:
    """The site holds 3 images of a and 600 of b: a peer's factory of a trained on 800 images is sampled (3 a
    against 500 of c and d would make a look rare to its expert); another's of a trained on 30 images is not (its
    500 samples would outweigh the site's own), nor a peer's factory of b, nor the site's own factory of a."""
    profile = profile_for("cpu", (28, 28, 3))
    config = Config()
    config.federation.classes = CLASSES
    me, peer, small = Identity(b"\x31" * 32), Identity(b"\x32" * 32), Identity(b"\x33" * 32)
    store = Store(tmp_path / "store", federation=config.federation.name, classes=CLASSES)
    arch = profile.factory.to_dict()

    def factory(owner: Identity, label: int, n_train: int = 800) -> Manifest:
        blob = weights_to_bytes({"w": torch.full((1,), float(label))}, owner.peer_id)
        m = Manifest("factory", owner.peer_id, owner.public_key, config.federation.name, [label], CLASSES, arch,
                     hashlib.sha256(blob).hexdigest(), len(blob), 1, 1 + label, meta={"n_train": n_train})  # fmt: skip
        store.add(m.seal(owner))
        (tmp := tmp_path / "blob").write_bytes(blob)
        store.put_blob_file(tmp, m)  # as a fetched blob arrives: the factory is live
        return m

    made = {("me", c): factory(me, c) for c in (0, 1)} | {("peer", c): factory(peer, c) for c in (0, 1, 2)}
    made["small", 0] = factory(small, 0, n_train=30)
    assert len(store.live("factory")) == 6
    labels = np.array([0] * 3 + [1] * 600)
    data = ImageSet(np.zeros((len(labels), 28, 28, 3), np.uint8), labels, tuple(CLASSES))
    learner = Learner(config, data, profile, store, SimpleNamespace(me=me.peer_id), None, None, tmp_path,
                      SimpleNamespace(workers=1))  # type: ignore[arg-type]  # fmt: skip
    factories, missing = learner.expert_lineage()
    assert {m.id for m in factories} == {made["peer", 0].id, made["peer", 2].id}
    assert missing == ["d"]  # nobody makes d: the site does not hold it, and no factory of it is announced

    learner.profile = dataclasses.replace(profile, synth_per_class=2)  # 3 images are then plenty: nothing topped up
    assert {m.id for m in learner.expert_lineage()[0]} == {made["peer", 2].id}
