"""Operating a site (issue 30, item 4): a listen port another node holds is refused at start, output piped to
another program is never hard-wrapped, `revoke` and `leave` work on a stopped node (applied to its store, and
its peers get them when it starts), and `leave` leaves nothing derived from the site's data under work/.
Real daemons on 127.0.0.1, tiny profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ffnode.daemon import control
from harness.localnet import Daemons, ffnode_cmd, init_home, status, wait_for
from tests.daemons import CLASSES, class_file, cli, free_port, ready_chain, retrained_without, rows

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


# -- revoke and leave ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Path], Daemons]]:
    with ready_chain(tmp_path_factory.mktemp("ops"), TIMEOUT) as (homes, _, daemons):
        yield homes, daemons


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_revoke_on_a_stopped_node_is_applied_and_reaches_its_peers_when_it_starts(
    fed: tuple[list[Path], Daemons],
) -> None:
    (a, b, c), daemons = fed
    me = status(a)["peer_id"]
    victim = next(r for r in rows(a).values() if r["kind"] == "factory" and r["owner"] == me)
    old_experts = {h: status(h)["current_expert"] for h in (b, c)}
    assert daemons.stop(a) == 0

    out = cli("revoke", "--home", str(a), victim["id"][:16], "--json")
    assert out.returncode == 0, out.stderr  # before: "the node ... is not running"
    result = json.loads(out.stdout)
    assert result["ids"] == [victim["id"]] and result["node_running"] is False
    assert (a / "store" / "revocations" / f"{result['revocation']}.msgpack").exists()  # applied while stopped
    assert not (a / "store" / "blobs" / victim["blob"]).exists()
    again = cli("revoke", "--home", str(a), victim["id"][:16])
    assert again.returncode == 1 and "already revoked" in again.stderr

    daemons.start(a)

    def unlearned(home: Path) -> bool:
        return retrained_without(home, victim["id"], old_experts[home])

    wait_for(
        lambda: unlearned(b) and unlearned(c), timeout=TIMEOUT, what="B and C to drop A's factory", daemons=daemons
    )
    assert not (b / "store" / "blobs" / victim["blob"]).exists()
    assert rows(a)[victim["id"]]["state"] == "revoked"
    proof = control.call(b, "verify_unlearning", timeout=None)
    assert proof["bitwise_identical"] is True and victim["id"] in proof["revoked_ids"]


def test_leave_deletes_what_the_site_derived_from_its_data(fed: tuple[list[Path], Daemons]) -> None:
    (a, b, _), daemons = fed
    me = status(b)["peer_id"]
    own = [r for r in rows(b).values() if r["owner"] == me and r["state"] == "live"]
    assert (b / "work" / "factory-1").is_dir() and files_under(b / "work" / "synth")  # checkpoints, snapshots, sets

    out = cli("leave", "--home", str(b), "--json")
    assert out.returncode == 0, out.stderr
    assert files_under(b / "work") == []  # before: factory-1's checkpoint, EMA snapshots and audit, the sets stayed
    result = json.loads(out.stdout)
    assert set(result["ids"]) == {r["id"] for r in own} and len(result["revocations"]) == 1
    assert result["node_running"] is True
    assert "work/factory-1" in result["deleted"] and result["remaining"] == []
    assert result["data"].endswith("class1.npz")
    wait_for(
        lambda: all(rows(a)[r["id"]]["state"] == "revoked" for r in own if r["kind"] == "factory"),
        timeout=60,
        what="A to drop B's factory",
        daemons=daemons,
    )


def test_leave_on_a_stopped_node_is_applied_and_reaches_its_peers_when_it_starts(
    fed: tuple[list[Path], Daemons],
) -> None:
    (a, _, c), daemons = fed
    me = status(c)["peer_id"]
    factory = next(r for r in rows(c).values() if r["owner"] == me and r["kind"] == "factory")
    assert daemons.stop(c) == 0

    out = cli("leave", "--home", str(c))
    assert out.returncode == 0, out.stderr
    assert "artifact(s) revoked; its peers get the revocations when it next starts" in out.stderr
    assert f"under {c / 'work'}" in out.stderr and "not touched: the site's data" in out.stderr
    assert files_under(c / "work") == [] and (c / "left").exists()

    daemons.start(c)
    wait_for(lambda: (s := status(c)) and s["phase"] == "left", timeout=60, what="C up, and left", daemons=daemons)
    wait_for(
        lambda: rows(a)[factory["id"]]["state"] == "revoked", timeout=60, what="A to drop C's factory", daemons=daemons
    )
    assert files_under(c / "work") == []
