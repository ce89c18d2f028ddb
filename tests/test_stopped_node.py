"""What a node says about itself and its answers when part of it is gone: a site that left (its class is
uncovered: status and every query say so; experts of one class refuse to answer), a node killed with SIGKILL
(`id`, `status` and `query` tell the truth from its home and store, not from the files it left behind), and a
control socket made private without touching the process-wide umask. Real daemons on 127.0.0.1, tiny profile."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ffnode.daemon import control
from ffnode.data.sources import load_dataset
from harness.localnet import Daemons, status, wait_for
from tests.daemons import chained_federation, cli, cli_json

TIMEOUT = 180.0


def process_umask() -> int:
    """This process's umask, read without changing it (os.umask can only be read by setting it)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("Umask:"))
    return int(line.split()[1], 8)


async def test_the_control_server_never_changes_the_process_umask(tmp_path: Path) -> None:
    """The node's other tasks and threads create folders while the control server starts: with the umask
    changed around an await, a folder made then got mode 0600 (2 of 11 homes had a drw------- work folder)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as stale:  # what a killed node leaves: a socket nobody listens on
        stale.bind(str(home / control.SOCKET_FILE))
    old = os.umask(0o022)
    made: list[Path] = []
    started = asyncio.Event()

    async def busy() -> None:  # another task of the node's loop, making a folder at every turn of the loop
        while not started.is_set():
            made.append(tmp_path / f"d{len(made)}")
            made[-1].mkdir()
            await asyncio.sleep(0)

    async def ping(args: dict) -> str:
        return "pong"

    try:
        worker = asyncio.create_task(busy())
        await asyncio.sleep(0)
        server = asyncio.create_task(control.serve(home, {"ping": ping}, started))
        await started.wait()
        await worker
        assert process_umask() == 0o022
        assert {oct(d.stat().st_mode & 0o777) for d in made} == {"0o755"}, "a folder was made under another umask"
        assert (home / control.SOCKET_FILE).stat().st_mode & 0o777 == 0o600
        assert [p.name for p in home.iterdir()] == [control.SOCKET_FILE]  # its private folder is gone
        assert await asyncio.to_thread(control.call, home, "ping") == "pong"
        assert control.node_state(home) == "running"
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
        assert not (home / control.SOCKET_FILE).exists()
    finally:
        os.umask(old)


def test_node_state_believes_the_lock_and_the_socket_not_the_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert control.node_state(home) == "stopped"  # never started: no lock file, none is made
    assert not (home / control.LOCK_FILE).exists()
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(home / control.SOCKET_FILE))
    (home / control.RUNTIME_FILE).write_text(json.dumps({"pid": 1, "addrs": ["/ip4/127.0.0.1/tcp/1"]}))
    (home / control.LOCK_FILE).write_text("")
    assert control.node_state(home) == "stopped"  # a killed node's leftovers
    with pytest.raises(control.NotRunning, match="stale"):
        control.call(home, "status")
    with open(home / control.LOCK_FILE, "w") as held:  # a node holds its lock while it loads its data
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert control.node_state(home) == "starting"
    assert control.node_state(home) == "stopped"


def digit_png(folder: Path, label: int) -> Path:
    test = load_dataset("digits", split="test", classes=[str(i) for i in range(10)])
    path = folder / f"digit{label}.png"
    Image.fromarray(test.images[np.flatnonzero(test.labels == label)[0]][..., 0]).save(path)
    return path


def test_a_lost_class_is_shown_and_a_killed_node_answers_from_its_store(tmp_path: Path) -> None:
    """Sites a, b, c hold the digits 0, 1, 2. C leaves: on a and b class 2 is uncovered, and status and every
    query say so (before, status said `missing classes -` and class 2 silently got probability 0). B is killed
    with SIGKILL: `id` says it is not running, `status` says it is stopped and what its store would answer, and
    `query` answers from the store (before: "running": true, and query refused). B restarts and leaves too: a's
    experts now cover class 0 only, and a refuses to answer every image with it."""
    homes, _ = chained_federation(tmp_path)
    a, b, c = homes
    two, one = digit_png(tmp_path, 2), digit_png(tmp_path, 1)
    with Daemons() as daemons:
        for home in homes:
            daemons.start(home)

        def settled(home: Path, experts: int, uncovered: list[str]) -> dict | None:
            s = status(home)
            ok = s and s["phase"] == "ready" and s["answering_experts"] == experts
            return s if ok and s["uncovered_classes"] == uncovered else None

        wait_for(lambda: all(settled(h, 3, []) for h in homes), timeout=TIMEOUT, what="3 ready", daemons=daemons)
        assert cli_json("query", "--home", str(a), str(two))["uncovered_classes"] == []

        assert cli("leave", "--home", str(c)).returncode == 0
        for home in (a, b):
            s = wait_for(lambda h=home: settled(h, 2, ["2"]), timeout=TIMEOUT, what="2 uncovered", daemons=daemons)
            assert "revoked" in s["uncovered_why"]["2"] and s["query_refusal"] is None
        text = cli("status", "--home", str(a)).stdout
        assert "uncovered classes" in text and "its factories were revoked" in text
        out = cli("query", "--home", str(a), "--json", str(two))
        answer = json.loads(out.stdout)
        assert answer["uncovered_classes"] == ["2"] and answer["answered_by"] == "node"
        assert answer["predictions"] != ["2"] and answer["probabilities"][0][2] < 1e-6  # why it must be said
        assert "no live expert covers 1 of the 3 classes" in out.stderr
        table = " ".join(cli("query", "--home", str(a), str(two)).stdout.split())
        assert "not covered, never answered right: 2" in table

        before = status(b)
        daemons.kill(b)  # SIGKILL: its control.sock and node.json stay behind
        assert (b / control.SOCKET_FILE).exists() and (b / control.RUNTIME_FILE).exists()
        ident = cli_json("id", "--home", str(b))
        assert ident["running"] is False and ident["state"] == "stopped" and ident["peer_id"] == before["peer_id"]
        out = cli("status", "--home", str(b), "--json")
        stopped = json.loads(out.stdout)
        assert out.returncode == 3 and stopped["running"] is False and stopped["phase"] == "stopped"
        assert stopped["current_expert"] == before["current_expert"] and stopped["uncovered_classes"] == ["2"]
        assert stopped["artifacts"]["expert_live"] == before["artifacts"]["expert_live"]
        out = cli("status", "--home", str(b))
        assert out.returncode == 3 and "stopped" in out.stdout and "its factories were revoked" in out.stdout
        out = cli("query", "--home", str(b), "--json", str(one))
        from_store = json.loads(out.stdout)
        assert from_store["answered_by"] == "store" and from_store["uncovered_classes"] == ["2"]
        assert "not running: answered from its store" in out.stderr
        assert len(from_store["experts"]) == 2 and from_store["predictions"] == ["1"]

        daemons.start(b)  # over the files the killed one left
        wait_for(lambda: settled(b, 2, ["2"]), timeout=TIMEOUT, what="b back", daemons=daemons)
        assert cli_json("id", "--home", str(b))["running"] is True
        assert cli("leave", "--home", str(b)).returncode == 0
        s = wait_for(lambda: settled(a, 1, ["1", "2"]), timeout=TIMEOUT, what="a alone", daemons=daemons)
        assert "cover only class '0'" in s["query_refusal"]
        refused = cli("query", "--home", str(a), str(one))
        assert refused.returncode == 1 and "cover only class '0'" in refused.stderr and refused.stdout == ""
        assert "Traceback" not in refused.stderr
