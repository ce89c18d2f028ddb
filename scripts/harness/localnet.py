"""Real `ffnode` daemons on 127.0.0.1, each a separate process with its own home: the testnet script and
the integration tests share this, so both exercise exactly what an operator runs."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ffnode.daemon import control

T = TypeVar("T")
JOB_SETTINGS: dict[str, Any] = {}  # [jobs] values every home `init_home` makes gets (the tests' shared fork server)


def ffnode_cmd(*words: str) -> list[str]:
    """The CLI as a subprocess command, with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "ffnode", *words]


LOWEST_PORT = 20_000  # above Ray's worker ports (10002-19999 by default: tests/test_ray.py starts a head)
PORT_SPAN = 16  # ports after a handed-out one that stay free of other picks (the testnet's --base-port + i)
_handed: set[int] = set()  # ports handed out in this process, each with its span


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, below the kernel's ephemeral range: a port that bind(0)
    picks is one the kernel also gives outgoing connections as their source port, so another daemon's dial can take
    it before the node it was meant for listens ("in use by another process"). Never the same span twice a run."""
    low = _ephemeral_low()
    for _ in range(1000):
        port = random.randrange(LOWEST_PORT, max(LOWEST_PORT + 1, low - PORT_SPAN))
        if any(abs(port - other) < PORT_SPAN for other in _handed):
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed.add(port)
        return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 between {LOWEST_PORT} and {low}")


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections' source ports (32768 where unreadable)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def init_home(
    home: Path,
    *,
    port: int,
    data: Path | str,
    classes: Sequence[str],
    bootstrap: Sequence[str] = (),
    federation: str = "testnet",
    profile: str = "auto",
    force_profile: bool = False,
    seed: int = 0,
    threads: int = 1,
    host: str = "127.0.0.1",
    extra: Sequence[str] = (),
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """`ffnode init` one node listening on host:port; returns its full multiaddr (with /p2p/) for others to
    bootstrap from. `settings` are config values `ffnode init` has no option for, by section (e.g. the testnet's
    shared job slots: {"jobs": {"slots": ..., "workers": 2}})."""
    listen = f"/ip4/{host}/tcp/{port}"
    cmd = ffnode_cmd(
        "init",
        "--home",
        str(home),
        "--listen",
        listen,
        "--data",
        str(data),
        "--classes",
        ",".join(classes),
        "--federation",
        federation,
        "--profile",
        profile,
        "--seed",
        str(seed),
        "--threads",
        str(threads),
        "--json",
    )
    for b in bootstrap:
        cmd += ["--bootstrap", b]
    cmd += ["--force-profile"] if force_profile else []
    cmd += list(extra)  # more `ffnode init` options
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"ffnode init {home} failed: {out.stderr.strip()}")
    # The tests' `tiny` factories train for 4 steps, so their membership attack measures only which 20 images were
    # held out: at the default allowance (mia_z 1.645) about 1 factory in 80 is refused by that draw alone (digits
    # class 1 at seed 1 is: AUC 0.73 at every step), and a test would pass or hang by the draw. mia_z 3.5 leaves it
    # at about 1 in 50,000; the policy's own tests set their thresholds explicitly. Their query workers start at the
    # first query: most test daemons are never queried, and a warm worker each took CPU from their jobs.
    noise = {"privacy": {"mia_z": 3.5}, "jobs": {"query_warm": False}} if profile == "tiny" else {}
    shared = {"jobs": JOB_SETTINGS} if JOB_SETTINGS else {}
    if noise or shared or settings:
        _configure(home, noise, shared, settings or {})
    return f"{listen}/p2p/{json.loads(out.stdout)['peer_id']}"


@dataclass(frozen=True)
class ForkServer:
    path: str  # its socket: what `jobs.forkserver` names
    pid: int


@contextmanager
def forkserver(folder: Path, timeout: float = 120.0, wait: bool = True) -> Iterator[ForkServer]:
    """A fork server (ffnode/jobs/forkserver.py) that nodes on this machine share through `jobs.forkserver`, while
    it runs (its log beside its socket). Jobs then start warm instead of importing torch afresh. `wait=False` yields
    at once: jobs asked of it before it is ready start afresh."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / "jobs.sock"
    with open(folder / "forkserver.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ffnode.jobs.forkserver", str(path)], stderr=log)
    try:
        if wait:
            wait_for(lambda: path.exists() or proc.poll() is not None, timeout=timeout, what="the fork server")
        if proc.poll() is not None:
            raise RuntimeError(f"the fork server exited ({proc.returncode}): see {folder / 'forkserver.log'}")
        yield ForkServer(str(path), proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _configure(home: Path, *settings: Mapping[str, Mapping[str, Any]]) -> None:
    """Merge `settings` (by section, later ones winning) into the home's config.toml."""
    import tomllib

    import tomli_w

    path = home / "config.toml"
    config = tomllib.loads(path.read_text())
    for layer in settings:
        for section, values in layer.items():
            config.setdefault(section, {}).update(values)
    path.write_text(tomli_w.dumps(config))


class Daemons:
    """Owns every daemon it starts; `stop_all` ends them all (SIGTERM, then SIGKILL after a grace time)."""

    def __init__(self) -> None:
        self.procs: dict[Path, subprocess.Popen] = {}
        self.prefixes: dict[Path, list[str]] = {}

    def start(self, home: Path, prefix: Sequence[str] | None = None) -> None:
        """Start the node of `home`; `prefix` wraps the command (e.g. `ip netns exec NS`), kept for restarts."""
        if prefix is not None:
            self.prefixes[home] = list(prefix)
        log = open(home / "node.log", "ab")  # noqa: SIM115 - the child owns it until it exits
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
        cmd = [*self.prefixes.get(home, []), *ffnode_cmd("start", "--home", str(home))]
        with log:
            self.procs[home] = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)

    def kill(self, home: Path) -> None:
        """SIGKILL the node of `home`: no goodbye to its peers, no clean shutdown."""
        p = self.procs.pop(home)
        p.kill()
        p.wait()

    def pids(self) -> list[int]:
        """The daemons' process ids, for a memory sampler in another thread: a copy taken at once, and no poll()
        that would reap a daemon under the main thread (one that ended has no memory left to count)."""
        return [p.pid for p in list(self.procs.values())]

    def running(self, home: Path) -> bool:
        return home in self.procs and self.procs[home].poll() is None

    def check(self) -> None:
        """Raise if a daemon died: a crash must not look like slow convergence."""
        for home, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"the node in {home} exited with code {p.returncode}: see {home / 'node.log'}")

    def stop(self, home: Path, grace: float = 15.0) -> int:
        p = self.procs.pop(home)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def stop_all(self) -> None:
        for home in list(self.procs):
            self.stop(home)

    def __enter__(self) -> Daemons:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def status(home: Path) -> dict[str, Any] | None:
    """The node's status, or None while it is not answering (starting, stopped)."""
    try:
        return control.call(home, "status", timeout=10)
    except (control.ControlError, OSError, ValueError):
        return None


def wait_for(
    check: Callable[[], T | None], *, timeout: float, what: str, daemons: Daemons | None = None, interval: float = 0.5
) -> T:
    """Poll `check` until it returns something truthy; TimeoutError names `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if daemons is not None:
            daemons.check()
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
