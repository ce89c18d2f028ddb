"""Shared helpers for the integration tests: small single-class data files, free ports, a hostile peer."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from ffnode.artifacts.blob import weights_to_bytes
from ffnode.artifacts.manifest import Manifest
from ffnode.daemon import control
from ffnode.data.sources import load_dataset, save_npz
from ffnode.identity import Identity
from ffnode.net import Handlers, NetHost
from harness.localnet import Daemons, ffnode_cmd, free_port, init_home, status, wait_for

CLASSES = ["0", "1", "2"]


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


@contextmanager
def ready_chain(root: Path, timeout: float = 180.0) -> Iterator[tuple[list[Path], list[str], Daemons]]:
    """The chained federation of `chained_federation`, started, every site ready with the 3 sites' experts live."""
    homes, addrs = chained_federation(root)
    with Daemons() as daemons:
        for home in homes:
            daemons.start(home)
        wait_for(
            lambda: all(
                (s := status(h)) and s["phase"] == "ready" and s["artifacts"].get("expert_live") == 3 for h in homes
            ),
            timeout=timeout,
            what="3 nodes ready",
            daemons=daemons,
        )
        yield homes, addrs, daemons


def cli(*words: str) -> subprocess.CompletedProcess[str]:
    """The `ffnode` command as a user runs it, in a subprocess."""
    return subprocess.run(ffnode_cmd(*words), capture_output=True, text=True, timeout=180, check=False)


def cli_json(*words: str) -> Any:
    """The command's --json document; it must succeed."""
    out = cli(*words, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def rows(home: Path) -> dict[str, dict]:
    """The running node's artifacts by ID."""
    return {r["id"]: r for r in control.call(home, "artifacts")}


def retrained_without(home: Path, artifact: str, old_expert: str) -> bool:
    """The node is ready with a new expert, `artifact` is revoked there and not in that expert's lineage."""
    s = status(home)
    if not s or s["phase"] != "ready" or s["current_expert"] == old_expert:
        return False
    r = rows(home)
    return r[artifact]["state"] == "revoked" and artifact not in r[s["current_expert"]]["lineage"]


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
    records: Callable[[], list[bytes]] = list
    page_bytes: int = 1 << 20  # its inventory pages' size (1: one envelope a page)
    served: list[str] = field(default_factory=list)  # the blob IDs it was asked for, in order
    host: NetHost | None = None

    def serve(self, peer: str, body: bytes) -> bytes:
        """Its inventory, page by page, as a conforming node serves one (in the order given); its `records` to
        a peers request (each call of `records` gives the next answer)."""
        from ffnode.artifacts.codec import decode
        from ffnode.net.sync import inventory_page, peers_response

        request = decode(body, max_bytes=4096)
        if request["t"] == "peers_req":
            return peers_response(self.records())
        cursor = request["cursor"]
        items = [(f"{i:08d}", env) for i, env in enumerate(self.inventory)]  # its own cursor: the item's position
        return inventory_page(items, [], cursor, max_bytes=self.page_bytes)

    def open_blob(self, blob: str) -> Path | None:
        self.served.append(blob)
        return self.blobs.get(blob)

    async def start(self, bootstrap: str) -> None:
        self.host = NetHost(
            seed=self.seed,
            listen=[f"/ip4/127.0.0.1/tcp/{free_port()}"],
            topic=self.topic,
            max_gossip_bytes=2**20,  # a hostile peer sends oversized messages too
            handlers=Handlers(
                validate_gossip=lambda data, peer: None,
                on_gossip=lambda data, peer: None,
                on_peer=lambda peer, up: None,
                serve_request=self.serve,
                open_blob=self.open_blob,
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


def owned_blob(path: Path, weights: dict, owner: str) -> Path:
    """Write `weights` (name -> tensor) as a blob naming `owner`, as ffnode writes its own."""
    path.write_bytes(weights_to_bytes(weights, owner))
    return path


# The privacy audit a test peer's factories claim (figures that pass every default threshold): a hostile peer
# can claim anything, so the daemons' other defences are what these tests exercise.
PASSING_AUDIT = json.loads((Path(__file__).parent.parent / "protocol/vectors/audit.json").read_text())["cases"][0][
    "meta"
]


def signed_manifest(
    identity: Identity, blob: Path, *, kind: str, classes: list[int], arch: dict, seq: int, **extra: Any
) -> Manifest:
    """A manifest `identity` signs for the blob file (size and sha256 from the file unless given); a factory's
    meta claims a passing privacy audit."""
    data = blob.read_bytes()
    fields = dict(
        kind=kind,
        owner=identity.peer_id,
        owner_key=identity.public_key,
        federation="testnet",
        classes=classes,
        class_list=CLASSES,
        arch=arch,
        blob=hashlib.sha256(data).hexdigest(),
        size=len(data),
        created=int(time.time() * 1000),
        seq=seq,
    )
    if kind == "factory":
        extra["meta"] = PASSING_AUDIT | extra.get("meta", {})
    return Manifest(**(fields | extra))


def configure(home: Path, **sections: dict[str, Any]) -> None:
    """Edit the config.toml that `ffnode init` wrote, a section at a time."""
    config = tomllib.loads((home / "config.toml").read_text())
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    (home / "config.toml").write_text(tomli_w.dumps(config))
