"""Operating a site (issue 30, item 4): a listen port another node holds is refused at start, output piped to
another program is never hard-wrapped, and `leave` leaves nothing derived from the site's data under work/.
(`revoke` on a stopped node: tests/test_unlearning.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ffnode.daemon import control
from harness.localnet import Daemons, ffnode_cmd, init_home, status, wait_for
from tests.daemons import CLASSES, class_file, free_port

TIMEOUT = 180.0


def piped(*words: str, columns: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI with stdout to a pipe, as `$(ffnode ...)` does; COLUMNS as a shell may or may not export it."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.run(ffnode_cmd(*words), capture_output=True, text=True, timeout=60, env=env, check=False)


def test_a_second_node_on_a_port_another_node_listens_on_is_refused_at_start(tmp_path: Path) -> None:
    port = free_port()
    data = class_file(tmp_path, [0], "zero")
    a, b = tmp_path / "a", tmp_path / "b"
    init_home(a, port=port, data=data, classes=CLASSES, profile="tiny")
    init_home(b, port=port, data=data, classes=CLASSES, profile="tiny", seed=1)
    with Daemons() as daemons:
        daemons.start(a)
        wait_for(lambda: status(a), timeout=60, what="A to answer", daemons=daemons)
        t0 = time.monotonic()
        try:  # before the fix B listened too (SO_REUSEPORT) and ran until killed
            out = subprocess.run(ffnode_cmd("start", "--home", str(b)), capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"B started on 127.0.0.1:{port}, where A already listens") from None
        assert out.returncode != 0
        assert f"127.0.0.1:{port} is in use by another process" in out.stderr, out.stderr
        assert "network.listen" in out.stderr  # what to do about it
        assert time.monotonic() - t0 < 20
        assert not (b / control.SOCKET_FILE).exists()
        assert status(a)["peer_id"]  # A is unharmed, and still the one listening
        assert json.loads(piped("id", "--home", str(a), "--json").stdout)["running"]


def test_id_piped_prints_whole_multiaddr_lines(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "a"
    addr = init_home(home, port=port, data=class_file(tmp_path, [0], "zero"), classes=CLASSES, profile="tiny")
    assert len(addr) > 80  # /ip4/127.0.0.1/tcp/NNNNN/p2p/<52 characters>
    for columns in (None, "40"):
        out = piped("id", "--home", str(home), columns=columns)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[-1] == addr  # BOOT=$(ffnode id --home a | tail -1)
        assert lines == [addr.rsplit("/", 1)[1], addr]


def test_a_long_table_cell_is_neither_cut_nor_folded_when_piped() -> None:
    cell = "reason-" + "x" * 300
    code = f"from ffnode.cli.output import table; table('peers', ['peer', 'why'], [['p1', {cell!r}]])"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert sum(cell in line for line in out.stdout.splitlines()) == 1, out.stdout
    assert "p1" in out.stdout and "peers" in out.stdout
