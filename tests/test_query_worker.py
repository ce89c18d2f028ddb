"""The query worker (ffnode.query_worker): a real worker process answers exactly what ExpertPool answers in-process,
survives being killed, stops when idle, leaves out an expert it cannot load, and the node's half needs no torch."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ffnode.artifacts.blob import weights_to_bytes
from ffnode.artifacts.manifest import Manifest
from ffnode.artifacts.store import Store
from ffnode.expert.resnet import build_expert
from ffnode.identity import Identity
from ffnode.profiles import profile_for
from ffnode.query import ExpertPool
from ffnode.query_worker import QueryService, WorkerError

CLASSES = ["a", "b", "c"]
SHAPE = (8, 8, 1)
CFG = profile_for("tiny", SHAPE).expert


def publish(store: Store, site: Identity, blob: bytes, real: list[int]) -> Manifest:
    """`site`'s expert of `blob`, trained (its manifest says) on `real` images per class, live in `store`."""
    m = Manifest(
        kind="expert", owner=site.peer_id, owner_key=site.public_key, federation="f", classes=[0, 1, 2],
        class_list=CLASSES, arch={"expert": CFG.to_dict(), "num_classes": 3, "image_shape": list(SHAPE)},
        blob=store.put_blob_bytes(blob), size=len(blob), created=1, seq=1,
        meta={"real_counts": real, "label_counts": real, "n_real": sum(real), "n_train": sum(real)},
    )  # fmt: skip
    store.add(m.seal(site))
    return m


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """Three random tiny experts of unequal priors, and a fourth whose blob is garbage behind an owner's header."""
    store = Store(tmp_path / "store", federation="f", classes=CLASSES)
    for i, real in enumerate([[30, 10, 10], [10, 30, 10], [10, 10, 30]]):
        torch.manual_seed(6 + i)  # seeds whose product answers both ways on random images
        weights = build_expert(CFG, 3, SHAPE).state_dict()
        for w in weights.values():
            if w.ndim > 1:
                w.mul_(3)  # bolder than at init, so answers differ from image to image
        site = Identity(bytes([i + 1]) * 32)
        publish(store, site, weights_to_bytes(weights, site.peer_id), real)
    site = Identity(b"\x09" * 32)
    header = {"__metadata__": {"owner": site.peer_id}, "w": {"dtype": "F32", "shape": [99], "data_offsets": [0, 396]}}
    text = json.dumps(header).encode()
    publish(store, site, struct.pack("<Q", len(text)) + text + os.urandom(40), [10, 10, 10])
    return store


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


async def test_the_worker_answers_as_the_pool_and_outlives_a_kill(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    pool = ExpertPool(store, 3, SHAPE)
    service = QueryService(store, 3, SHAPE, threads=1)
    caplog.set_level(logging.WARNING, logger="ffnode.query")
    try:
        await service.start()
        assert service.pid is not None
        assert "its weights cannot be read" in caplog.text  # the fourth expert, logged and left out
        batch = images(40)
        for rule in ("prior", "product"):
            got, want = await service.query(batch, CLASSES, rule), pool.query(batch, CLASSES, rule)
            assert len(got["experts"]) == 3 and got["experts"] == want["experts"]
            assert got["predictions"] == want["predictions"] and got["labels"] == want["labels"]
            assert np.allclose(got["probabilities"], want["probabilities"], atol=1e-6, rtol=0)
            assert {k: v for k, v in got.items() if k != "probabilities"} == {
                k: v for k, v in want.items() if k != "probabilities"
            }
            assert len(set(got["predictions"])) > 1  # random experts, yet not one answer for every image
        assert await service.coverage(CLASSES, "prior") == pool.coverage(CLASSES, "prior")
        with pytest.raises(ValueError, match="8x8 with 1 channel"):
            await service.query(np.zeros((1, 4, 4, 1), np.uint8), CLASSES, "prior")
        with pytest.raises(ValueError, match="unknown PoE rule"):
            await service.query(batch, CLASSES, "mean")

        killed = service.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)  # between queries: the next one starts another worker and is answered
        again = await service.query(batch[:1], CLASSES, "prior")
        assert again["labels"] == pool.query(batch[:1], CLASSES, "prior")["labels"]
        assert service.pid not in (None, killed)
    finally:
        await service.close()
    assert service.pid is None


async def test_an_idle_worker_stops_and_the_next_query_starts_one(store: Store) -> None:
    service = QueryService(store, 3, SHAPE, threads=1, idle_s=0.5)
    try:
        first = await service.query(images(2), CLASSES, "prior")
        pid = service.pid
        assert pid is not None
        for _ in range(100):
            if service.pid is None:
                break
            await asyncio.sleep(0.05)
        assert service.pid is None and not alive(pid)  # stopped, and reaped
        assert (await service.query(images(2), CLASSES, "prior"))["labels"] == first["labels"]
        assert service.pid not in (None, pid)
    finally:
        await service.close()


async def test_a_query_the_worker_does_not_answer_in_time_fails_alone(store: Store) -> None:
    service = QueryService(store, 3, SHAPE, threads=1, warm=False, timeout_s=0.05)  # less than importing torch
    try:
        await service.start()
        assert service.pid is None  # not warm: nothing started
        with pytest.raises(WorkerError, match="did not answer in 0.05 s"):
            await service.query(images(1), CLASSES, "prior")
        assert service.pid is None  # the hung worker was killed
        service.timeout_s = 120
        assert len((await service.query(images(1), CLASSES, "prior"))["labels"]) == 1
    finally:
        await service.close()


def test_the_node_half_imports_no_torch() -> None:
    code = "import ffnode.voters, ffnode.query_worker, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
