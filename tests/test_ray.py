"""The Ray runner on a real local Ray head (127.0.0.1 only): a factory job and an expert job give the local
runner's bytes, a peer's broken blob is blamed the same way, a job past its wall time is killed on the cluster
too, the node never imports ray, and a two-site federation whose learning all runs on the head gets ready."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
from PIL import Image

from ffnode.config import Config, JobsConfig, PrivacyConfig
from ffnode.data.sources import load_dataset
from ffnode.jobs.local import LocalRunner
from ffnode.jobs.ray import RayRunner
from ffnode.jobs.spec import FactorySource, Job, JobResult
from ffnode.profiles import expert_arch, site_profile
from harness.localnet import Daemons, init_home, status, wait_for
from tests.daemons import CLASSES, class_file, cli_json, free_port

pytest.importorskip("ray", reason="ray is not installed (the `flower` extra brings it): the Ray runner needs it")

# Ray maps 127.0.0.1 to the machine's routable address, for the head and for every driver that connects; this
# switch (meant for single-machine Ray on macOS and Windows) keeps both on the loopback interface.
LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
MEMORY_MB = 1536  # per job: the tiny profile's jobs hold about 500 MB
TIMEOUT = 150.0


@dataclass
class Head:
    address: str  # host:port of its GCS, as `jobs.address` names it
    client: str  # ray://host:port, its Ray Client server
    tmp: Path  # the TMPDIR of its workers: where each Ray task lays its job out

    def client_logs(self) -> str:
        """The tails of its Ray Client servers' error logs: why a driver's connection failed, when one did."""
        logs = sorted(self.tmp.parent.glob("session_*/logs/ray_client_server*.err"))
        return "\n".join(f"{p.name}:\n{p.read_text(errors='replace')[-3000:]}" for p in logs)


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    """One Ray head for the module, in a session of its own: killing that session ends every process it started
    (`ray stop` would stop every Ray instance of this user on the machine, other tests' too)."""
    root = Path(tempfile.mkdtemp(prefix="rayt-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    (root / "tmp").mkdir()
    port, client = free_port(), free_port()
    saved = os.environ.get(LOOPBACK)
    os.environ[LOOPBACK] = "0"  # for the head, and for the drivers of this process's and the daemons' jobs
    cmd = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
        "--port", str(port), "--ray-client-server-port", str(client), "--num-cpus", "2", "--memory", str(4 * 2**30),
        "--object-store-memory", str(256 * 2**20), "--include-dashboard", "false", "--disable-usage-stats",
        "--temp-dir", str(root),
    ]  # fmt: skip
    with open(root / "start.log", "wb") as log:  # not a pipe: the head's processes keep it open
        start = subprocess.Popen(cmd, env={**os.environ, "TMPDIR": str(root / "tmp")}, start_new_session=True,
                                 stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        rc = start.wait(timeout=120)
        assert rc == 0, f"ray start failed:\n{(root / 'start.log').read_text()}"
        yield Head(f"127.0.0.1:{port}", f"ray://127.0.0.1:{client}", root / "tmp")
    finally:
        end_session(start)
        if saved is None:
            os.environ.pop(LOOPBACK, None)
        else:
            os.environ[LOOPBACK] = saved
        subprocess.run(["rm", "-rf", str(root)], check=False)


def end_session(leader: subprocess.Popen) -> None:
    """Kill every process of the leader's session: the head's daemons and workers (jobs' workers die with them)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()


def ray_jobs(head: Head, address: str | None = None, **limits: Any) -> JobsConfig:
    return JobsConfig(runner="ray", address=address or head.address, memory_mb=MEMORY_MB, **limits)


def site_data(root: Path, labels: list[int]) -> Path:
    """The site's images as jobs read them (the learner's data.npz)."""
    d = load_dataset("digits", split="train", classes=[str(i) for i in range(10)])
    keep = np.isin(d.labels, labels)
    path = root / f"data{''.join(map(str, labels))}.npz"
    np.savez(path, images=d.images[keep], labels=d.labels[keep])
    return path


def tiny() -> tuple[Config, tuple[int, int, int]]:
    config = Config()
    config.federation.classes, config.learning.profile = list(CLASSES), "tiny"
    return config, (8, 8, 1)


def factory_job(data: Path, workdir: Path) -> Job:
    """The job the learner makes for its factory of class 1 (the privacy audit included)."""
    config, shape = tiny()
    args = {"label": 1, "cfg": site_profile(config, shape).factory.to_dict(), "node_seed": 3, "owner": "peer-b",
            "privacy": dataclasses.asdict(PrivacyConfig()), "class_names": CLASSES, "threads": 1}  # fmt: skip
    return Job("factory", args, {"data": str(data)}, workdir, what="factory 1")


def expert_job(data: Path, blob: Path, workdir: Path, cache: Path) -> Job:
    """The job the learner makes for its expert: its own class 0 and a peer's factory of class 1."""
    config, shape = tiny()
    profile = site_profile(config, shape)
    src = FactorySource("f" * 64, "peer-b", 1, profile.factory.to_dict(), "factory-" + "f" * 64)
    arch = expert_arch(config, profile, 3, shape, real=100, synthesised=1)
    args = {"factories": [dataclasses.asdict(src)], "arch": arch, "seed": 5, "owner": "peer-a", "class_names": CLASSES,
            "threads": 1}  # fmt: skip
    return Job("expert", args, {"data": str(data), src.input: str(blob), "cache": str(cache)}, workdir)


def timeless(value: Any) -> Any:
    """A job's result without the seconds things took."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if "seconds" not in k}
    return value


async def both(local: Job, remote: Job, head: Head, address: str | None = None) -> tuple[JobResult, JobResult]:
    """The same job through each runner, at the same time (one core each)."""
    return await asyncio.gather(
        LocalRunner(JobsConfig(memory_mb=MEMORY_MB)).run(local), RayRunner(ray_jobs(head, address)).run(remote)
    )


async def test_the_cluster_gives_the_local_runners_bytes(head: Head, tmp_path: Path) -> None:
    a, b = site_data(tmp_path, [0]), site_data(tmp_path, [1])
    local, remote = await both(factory_job(b, tmp_path / "fl"), factory_job(b, tmp_path / "fr"), head)
    assert local.ok and remote.ok, (local.error, remote.error)
    assert remote.blob.read_bytes() == local.blob.read_bytes()
    assert timeless(remote.result) == timeless(local.result)
    assert sorted(p.name for p in (tmp_path / "fr").iterdir()) == sorted(
        [*(p.name for p in (tmp_path / "fl").iterdir()), "ray.json"]
    )  # the checkpoints and audit came back: a later run resumes from them
    assert remote.cpu_s.keys() == local.cpu_s.keys() and remote.rss_mb_max > 100  # the worker's, not the driver's

    # the expert, through Ray Client this time; the node's synthetic-set cache stays here and changes nothing
    cache = tmp_path / "cache"
    cache.mkdir()
    local, remote = await both(
        expert_job(a, local.blob, tmp_path / "el", cache), expert_job(a, local.blob, tmp_path / "er", cache),
        head, head.client,
    )  # fmt: skip
    assert local.ok and remote.ok, (local.error, remote.error, head.client_logs())
    assert remote.blob.read_bytes() == local.blob.read_bytes()
    assert timeless(remote.result) == timeless(local.result)

    # a peer's blob that does not load: the same error, blamed on the same factory
    bad = tmp_path / "bad.blob"
    bad.write_bytes(b"not a safetensors file")
    local, remote = await both(
        expert_job(a, bad, tmp_path / "xl", cache), expert_job(a, bad, tmp_path / "xr", cache), head
    )
    assert not remote.ok and remote.blame == local.blame == "f" * 64
    assert remote.error == local.error


async def test_a_job_past_its_wall_time_is_killed_on_the_cluster_too(head: Head, tmp_path: Path) -> None:
    job = factory_job(site_data(tmp_path, [1]), tmp_path / "f")
    job.args["cfg"]["train_steps"] = 10**6  # it would train for hours
    runner = RayRunner(ray_jobs(head, wall_s=12.0))  # about when the worker on the cluster has started training
    result = await runner.run(job)
    assert not result.ok and "jobs.wall_s" in (result.error or "")
    assert runner.jobs == {"ok": 0, "failed": 0, "killed": 1}

    def left() -> list[str]:  # the task cancelled: its worker killed and its temp dir removed
        workers = subprocess.run(["pgrep", "-f", f"ffnode.jobs.worker {head.tmp}"], capture_output=True)
        return ["its worker"] * (workers.returncode != 1) + [p.name for p in head.tmp.glob("ffnode-job-*")]

    # the driver may take STOP_S (10 s) to cancel before it is killed, and Ray then ends an orphaned task itself
    try:
        wait_for(lambda: not left(), timeout=40, what="the job's worker on the cluster to end")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: left {left()}") from None


def test_the_node_never_imports_ray() -> None:
    code = "import sys, ffnode.daemon.node, ffnode.jobs.ray; assert not {'ray', 'torch'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_federation_learns_on_the_cluster(head: Head, tmp_path: Path) -> None:
    homes = [tmp_path / "a", tmp_path / "b"]
    addr = init_home(homes[0], port=free_port(), data=class_file(tmp_path, [0, 1], "a"), classes=CLASSES,
                     profile="tiny")  # fmt: skip
    init_home(homes[1], port=free_port(), data=class_file(tmp_path, [2], "b"), classes=CLASSES, bootstrap=[addr],
              profile="tiny", seed=1)  # fmt: skip
    for home in homes:
        config = tomllib.loads((home / "config.toml").read_text())
        config["jobs"] |= {"runner": "ray", "address": head.address, "memory_mb": MEMORY_MB}
        (home / "config.toml").write_text(tomli_w.dumps(config))
    with Daemons() as daemons:
        for home in homes:
            daemons.start(home)

        def ready() -> bool:
            return all(
                (s := status(h)) and s["phase"] == "ready" and s["artifacts"].get("expert_live") == 2 for h in homes
            )

        wait_for(ready, timeout=TIMEOUT, what="2 nodes ready with 2 experts", daemons=daemons)
        test = load_dataset("digits", split="test", classes=[str(i) for i in range(10)])
        png = tmp_path / "two.png"
        Image.fromarray(test.images[np.flatnonzero(test.labels == 2)[0]][..., 0]).save(png)
        for home in homes:
            jobs = status(home)["jobs"]
            assert jobs["ok"] >= 2 and jobs["failed"] == jobs["killed"] == 0  # its factories and expert ...
            assert (home / "work" / "jobs" / "expert" / "ray.json").exists()  # ... on the cluster
            assert len(cli_json("query", "--home", str(home), str(png))["experts"]) == 2  # both sites' experts
            maps = Path(f"/proc/{daemons.procs[home].pid}/maps").read_text()
            assert "_raylet" not in maps  # the node itself stayed light
