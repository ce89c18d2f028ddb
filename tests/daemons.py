"""Shared helpers for the integration tests: small single-class data files, free ports, a hostile peer."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ffnode.data.sources import load_dataset, save_npz
from ffnode.net import Handlers, NetHost
from harness.localnet import init_home, wait_for

CLASSES = ["0", "1", "2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def class_file(root: Path, labels: list[int], name: str) -> Path:
    """A MedMNIST-format file with the digits of `labels` (labels stay global indices)."""
    d = load_dataset("digits", split="train", classes=[str(i) for i in range(10)])
    keep = np.isin(d.labels, labels)
    path = root / f"{name}.npz"
    save_npz(path, {"train": (d.images[keep], d.labels[keep])})
    return path


def chained_federation(root: Path) -> tuple[list[Path], list[str]]:
    """Homes a, b, c holding the digits 0, 1, 2 (tiny profile), bootstrapped as a chain: B -> A, C -> B."""
    homes, addrs = [root / n for n in "abc"], []
    for i, home in enumerate(homes):
        data = class_file(root, [i], f"class{i}")
        addrs.append(
            init_home(home, port=free_port(), data=data, classes=CLASSES, bootstrap=addrs[-1:], profile="tiny", seed=i)
        )
    return homes, addrs


async def wait_for_log(home: Path, needle: str, what: str) -> None:
    """Wait (off the event loop, 30 s at most) until the node's log contains `needle`: its line naming a
    rejection."""
    await asyncio.to_thread(wait_for, lambda: needle in (home / "node.log").read_text(), timeout=30, what=what)


@dataclass
class Peer:
    """A real libp2p peer run by the test (ffnode's own transport): it can publish anything, serve any
    inventory and any blob bytes, so the daemon's defences are exercised over the wire."""

    topic: str
    seed: bytes = b"\x07" * 32
    inventory: list[bytes] = field(default_factory=list)
    blobs: dict[str, Path] = field(default_factory=dict)
    host: NetHost | None = None

    async def start(self, bootstrap: str) -> None:
        from ffnode.net.sync import inventory_response

        self.host = NetHost(
            seed=self.seed,
            listen=[f"/ip4/127.0.0.1/tcp/{free_port()}"],
            topic=self.topic,
            max_gossip_bytes=2**20,  # a hostile peer sends oversized messages too
            handlers=Handlers(
                validate_gossip=lambda data, peer: None,
                on_gossip=lambda data, peer: None,
                on_peer=lambda peer, up: None,
                serve_request=lambda peer, body: inventory_response(self.inventory, []),
                open_blob=self.blobs.get,
            ),
        )
        await self.host.start()
        await self.host.connect(bootstrap)
        await asyncio.sleep(1.5)  # subscriptions are exchanged and the mesh forms

    async def publish(self, data: bytes) -> None:
        assert self.host is not None
        await self.host.publish(data)

    async def stop(self) -> None:
        if self.host is not None:
            await self.host.stop()
