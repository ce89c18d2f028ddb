"""The site's own disk against a running node (root only: the test mounts a small tmpfs and removes it): a full
disk while a peer revokes degrades the node with a clear status and never ends it, and it recovers by itself once
there is room again."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ffnode.daemon import control
from harness.localnet import Daemons, ffnode_cmd, init_home, status, wait_for
from tests.daemons import CLASSES, class_file, configure, free_port

if os.geteuid() != 0:
    pytest.skip("mounting a small filesystem needs root", allow_module_level=True)

TIMEOUT = 120.0


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of the filesystem; returns the file to delete to give them back."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: closing must not flush into a full disk
        try:
            while True:
                f.write(b"\0" * (1 << 20))
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_a_full_disk_while_a_peer_revokes_degrades_the_node_and_it_recovers(tmp_path: Path, small_disk: Path) -> None:
    a, b = tmp_path / "a", small_disk / "b"
    addr_a = init_home(
        a, port=free_port(), data=class_file(tmp_path, [0, 1, 2], "all"), classes=CLASSES, profile="tiny"
    )
    init_home(b, port=free_port(), data=class_file(tmp_path, [0], "zero"), classes=CLASSES, bootstrap=[addr_a],
              profile="tiny", seed=1)  # fmt: skip
    configure(b, network={"sync_interval_s": 5.0})  # B re-asks A's inventory (and rewrites) every 5 s
    with Daemons() as daemons:
        daemons.start(a)
        daemons.start(b)
        wait_for(lambda: (s := status(b)) and s["phase"] == "ready", timeout=TIMEOUT, what="B ready", daemons=daemons)
        a_id = status(a)["peer_id"]
        factory = next(r for r in control.call(a, "artifacts") if r["owner"] == a_id and r["kind"] == "factory")
        filler = fill(small_disk)
        out = subprocess.run(ffnode_cmd("revoke", factory["id"], "--home", str(a)), capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: (s := status(b)) and s["fault"], timeout=60, what="B to report the fault", daemons=daemons)
        time.sleep(12)  # the daemon once exited at the next sync round after the first failed write (two rounds here)
        daemons.check()  # still running
        assert status(b)["fault"]
        filler.unlink()

        def recovered() -> bool:
            s = status(b)
            rows = {r["id"]: r for r in control.call(b, "artifacts")}
            return bool(s and s["fault"] is None and rows.get(factory["id"], {}).get("state") == "revoked")

        wait_for(recovered, timeout=TIMEOUT, what="B to clear the fault and hold the revocation", daemons=daemons)
        leftovers = [
            p for d in ("manifests", "revocations") for p in (b / "store" / d).iterdir() if p.name.startswith(".")
        ]
        assert leftovers == []
