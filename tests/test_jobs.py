"""Jobs: learning in processes of its own, under limits.

The local runner with real worker processes (`python -m ffnode.jobs.worker`): a job is a pure function of its
inputs, a job over a limit (memory, CPU seconds, wall time) is killed with its whole process group and says which
limit and which peer factory it was reading, a job opens no socket, nodes sharing `jobs.slots` never run more jobs
at once than its slots, and cancelling the caller kills the job. Each of these jobs is a `tiny` 8x8 digits job on
one torch thread, so a test costs one or two worker start-ups (about 3 s of CPU each: torch is imported in each).

Then a real `ffnode start` daemon against real libp2p peers serving factories that only a job finds out about (a
model bomb, a NaN factory, a sampler that never ends): each costs the node one job, and nothing else (~80 s)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
import torch

from ffnode.artifacts.blob import weights_to_bytes
from ffnode.artifacts.manifest import Manifest
from ffnode.config import JobsConfig, PrivacyConfig
from ffnode.daemon import control
from ffnode.data.sources import load_dataset
from ffnode.expert.resnet import build_expert
from ffnode.factory.config import FactoryConfig, unet_size
from ffnode.factory.model import build_unet
from ffnode.identity import Identity
from ffnode.jobs.forkserver import code_fingerprint
from ffnode.jobs.local import LOG_FILE, LocalRunner, Watch
from ffnode.jobs.progress import Progress
from ffnode.jobs.spec import OUT, RESULT_FILE, FactorySource, Job, JobResult
from ffnode.profiles import profile_for
from harness.localnet import Daemons, init_home, status, wait_for
from tests.daemons import CLASSES, Peer, class_file, free_port, owned_blob, signed_manifest

TINY = profile_for("tiny", (8, 8, 1))
TOPIC = "/ffnode/1/testnet/announce"
WORKER = "ffnode.jobs.worker"


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits 0, 1 and 2 as a job reads a site's images (work/data.npz)."""
    d = load_dataset("digits", split="train", classes=[str(i) for i in range(10)])
    keep = d.labels < len(CLASSES)
    path = tmp_path_factory.mktemp("jobs-data") / "data.npz"
    np.savez(path, images=d.images[keep], labels=d.labels[keep])
    return path


@pytest.fixture
def forkserver(shared_forkserver: str) -> str:
    """The test run's fork server (tests/conftest.py), once it listens."""
    wait_for(lambda: Path(shared_forkserver).exists(), timeout=120, what="the fork server", interval=0.1)
    return shared_forkserver


def factory_job(data: Path, workdir: Path, label: int = 1, **changes: Any) -> Job:
    """The job that trains the `tiny` factory of `label` (no privacy audit: nothing here is published)."""
    args = {
        "label": label,
        "cfg": dataclasses.replace(TINY.factory, **changes).to_dict(),
        "node_seed": 3,
        "privacy": dataclasses.asdict(PrivacyConfig(audit=False)),
        "owner": "site-under-test",
        "class_names": CLASSES,
        "threads": 1,
    }
    return Job("factory", args, {"data": str(data)}, workdir, what=f"factory {CLASSES[label]}")


def peer_factory(tmp: Path, aid: str, label: int, **arch: Any) -> tuple[dict[str, Any], Path]:
    """A peer's factory as an expert job reads it: its source (with `arch` changed) and its blob (tiny weights)."""
    torch.manual_seed(0)
    blob = tmp / f"blob-{aid[:8]}"
    blob.write_bytes(weights_to_bytes(build_unet(TINY.factory).state_dict(), f"peer-{aid[:8]}"))
    cfg = TINY.factory.to_dict() | arch
    return dataclasses.asdict(FactorySource(aid, f"peer-{aid[:8]}", label, cfg, f"factory-{aid}")), blob


def expert_job(data: Path, workdir: Path, factories: list[tuple[dict[str, Any], Path]]) -> Job:
    """The job that trains the `tiny` expert of the digits 0-2 from `factories` (no synthetic-set cache)."""
    arch = {"expert": TINY.expert.to_dict(), "num_classes": 3, "image_shape": [8, 8, 1], "synth_per_class": 8,
            "profile": "tiny"}  # fmt: skip
    args = {"factories": [f for f, _ in factories], "arch": arch, "seed": 5, "owner": "site-under-test",
            "class_names": CLASSES, "threads": 1}  # fmt: skip
    inputs = {"data": str(data)} | {f["input"]: str(blob) for f, blob in factories}
    return Job("expert", args, inputs, workdir, what=f"expert from {len(factories)} factories")


def untimed(result: dict[str, Any]) -> dict[str, Any]:
    """A job's result without its timing (the training's wall seconds): what a pure function must reproduce."""
    return result | {"summary": {k: v for k, v in result["summary"].items() if k != "seconds"}}


def workers_of(root: Path) -> dict[int, str]:
    """The live job processes whose workdir is under `root`, fresh or forked: pid -> the job.log their stderr is."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            stderr = os.readlink(entry / "fd" / "2")
        except OSError:  # not a process, or it ended meanwhile
            continue
        if stderr.startswith(str(root)) and stderr.endswith(LOG_FILE):
            found[int(entry.name)] = str(Path(stderr).parent)
    return found


async def first_worker(root: Path) -> int:
    """The pid of the first worker process seen under `root` (within a minute)."""
    async with asyncio.timeout(60):
        while True:
            if found := workers_of(root):
                return next(iter(found))
            await asyncio.sleep(0.02)


def assert_group_gone(pid: int) -> None:
    """The worker and everything in its process group (its session: start_new_session) no longer exist."""
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not Path(f"/proc/{pid}").exists()


async def test_a_job_is_a_pure_function_of_its_inputs_fresh_or_forked(
    data_file: Path, tmp_path: Path, forkserver: str
) -> None:
    """The same job.json and inputs, run at once in two fresh workdirs, once in a fresh worker (its runner's
    jobs.forkserver names a socket nobody listens on) and once forked warm by the fork server, give a
    bitwise-identical out/blob and the same result (but for its timing); each runner counts its job as ok and adds
    up its CPU seconds per phase, the start-up included, and the forked job's start-up costs a third or less."""
    fresh = LocalRunner(JobsConfig(workers=1, forkserver=str(tmp_path / "nobody.sock")))
    forked = LocalRunner(JobsConfig(workers=1, forkserver=forkserver))
    jobs = [factory_job(data_file, tmp_path / name) for name in ("a", "b")]
    a, b = await asyncio.gather(fresh.run(jobs[0]), forked.run(jobs[1]))
    assert a.ok and b.ok, (a.error, b.error)
    assert a.blob.read_bytes() == b.blob.read_bytes() and a.blob.stat().st_size > 10_000
    assert a.result is not None and b.result is not None and a.result["withheld"] is None
    assert untimed(a.result) == untimed(b.result)
    assert a.blame is None and a.rss_mb_max > 0 and a.wall_s > 0 and b.rss_mb_max > 0
    assert fresh.jobs == forked.jobs == {"ok": 1, "failed": 0, "killed": 0}
    assert set(a.cpu_s) == set(b.cpu_s) == {"startup", "factories"} and fresh.compute == a.cpu_s
    assert a.cpu_s["startup"] > 3 * b.cpu_s["startup"], (a.cpu_s, b.cpu_s)


async def test_a_job_over_its_memory_is_killed_and_says_so(data_file: Path, tmp_path: Path) -> None:
    """A factory job whose UNet holds far more than jobs.memory_mb (68 M parameters, and an optimiser for them) is
    killed once it is seen over the limit; its result names the limit, blames no peer (it reads none), and the
    whole process group is gone."""
    runner = LocalRunner(JobsConfig(workers=1, memory_mb=700))
    job = factory_job(data_file, tmp_path / "big", block_out_channels=(512, 512))
    task = asyncio.create_task(runner.run(job))
    pid = await first_worker(tmp_path)
    r = await task
    assert not r.ok and r.error is not None and "over jobs.memory_mb (700)" in r.error, r.error
    assert r.error.startswith("the job was killed") and r.blame is None and r.rss_mb_max > 700
    assert not r.blob.exists() and not (job.workdir / RESULT_FILE).exists()
    assert runner.jobs == {"ok": 0, "failed": 0, "killed": 1}
    assert_group_gone(pid)


@pytest.mark.parametrize("forked", [False, True], ids=["fresh", "forked"])
async def test_a_job_past_its_wall_time_is_killed_with_its_process_group(
    data_file: Path, tmp_path: Path, forkserver: str, forked: bool
) -> None:
    """A factory job of a million training steps under jobs.wall_s = 2, fresh or forked, is killed about 2 s after
    it started, its result says so, and neither the worker nor anything in its process group is left."""
    runner = LocalRunner(JobsConfig(workers=1, wall_s=2.0, forkserver=forkserver if forked else ""))
    job = factory_job(data_file, tmp_path / "long", train_steps=10**6)
    task = asyncio.create_task(runner.run(job))
    pid = await first_worker(tmp_path)
    r = await task
    assert r.error == "the job was killed: it ran past jobs.wall_s (2 s)", r.error
    assert 2.0 <= r.wall_s < 6.0 and r.cpu_s and r.blame is None
    assert runner.jobs["killed"] == 1 and runner.compute  # its CPU as last seen still counts
    assert_group_gone(pid)
    assert (job.workdir / LOG_FILE).exists()  # its stderr, for the operator


async def test_a_kill_blames_the_peer_factory_being_sampled(data_file: Path, tmp_path: Path) -> None:
    """An expert job samples two peer factories of class 2: the first (in ID order) asks for 1024x1024 images, whose
    activations hold far more than jobs.memory_mb. Both are loaded first (the blame moves to the second), then the
    first is sampled: the job is killed then, and the result blames the first, as the worker's last progress line
    named it, not the one loaded last."""
    bomb = peer_factory(tmp_path, "b0" * 32, 2, image_size=1024)
    honest = peer_factory(tmp_path, "c1" * 32, 2)
    runner = LocalRunner(JobsConfig(workers=1, memory_mb=700))
    r = await runner.run(expert_job(data_file, tmp_path / "expert", [honest, bomb]), progress := Progress())
    assert not r.ok and r.error is not None and "over jobs.memory_mb (700)" in r.error, r.error
    assert r.blame == "b0" * 32
    assert progress.phase == "synthesis" and list(r.cpu_s) == ["synthesis"]  # the node's view of where it was
    assert runner.jobs == {"ok": 0, "failed": 0, "killed": 1}


async def test_a_failing_load_is_blamed_on_its_factory_and_the_job_says_why(data_file: Path, tmp_path: Path) -> None:
    """A peer factory whose weights do not fit its arch fails the job (exit 1, not a kill): the worker's own
    result names the factory's LoadError and blames it."""
    broken = peer_factory(tmp_path, "d2" * 32, 2, block_out_channels=[32, 32], norm_num_groups=8)
    runner = LocalRunner(JobsConfig(workers=1))
    r = await runner.run(expert_job(data_file, tmp_path / "expert", [broken]))
    assert r.error is not None and r.error.startswith("LoadError: factory d2d2d2d2d2d2 of peer-d2d2d2d2"), r.error
    assert r.blame == "d2" * 32 and runner.jobs == {"ok": 0, "failed": 1, "killed": 0}


async def test_a_job_past_its_cpu_seconds_is_killed_and_says_so(data_file: Path, tmp_path: Path) -> None:
    """Under jobs.cpu_s = 1 the kernel stops the worker after one CPU second (RLIMIT_CPU: SIGXCPU, then SIGKILL):
    the result names jobs.cpu_s, as it names the other limits, and the runner counts it as killed."""
    runner = LocalRunner(JobsConfig(workers=1, cpu_s=1))
    r = await runner.run(factory_job(data_file, tmp_path / "cpu", train_steps=10**6))
    assert r.error is not None and not r.ok
    assert r.error.startswith("the job was killed") and "jobs.cpu_s" in r.error, r.error
    assert runner.jobs == {"ok": 0, "failed": 0, "killed": 1}


def test_a_job_opens_no_socket(tmp_path: Path) -> None:
    """The worker's `main` installs its audit hook before it runs the job: a job body that dials a listening
    socket on 127.0.0.1 gets PermissionError, which becomes the job's error in result.json (exit status 1),
    and the listener never sees a connection."""
    job = Job("factory", {}, {}, tmp_path / "w")
    job.write()
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.5)
        port = server.getsockname()[1]
        body = (
            "import socket, sys\n"
            "from pathlib import Path\n"
            "from ffnode.jobs import worker\n"
            "def run(workdir, progress):  # the job: it tries the network\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
            "worker.run = run\n"
            f"sys.exit(worker.main(Path({str(job.workdir)!r})))\n"
        )
        out = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, timeout=120, check=False)
        with pytest.raises(TimeoutError):
            server.accept()
    assert out.returncode == 1, out.stderr
    result = json.loads((job.workdir / RESULT_FILE).read_text())
    assert result["error"].startswith("PermissionError: a job opens no network connection (socket."), result
    assert result["blame"] is None and "job failed: PermissionError" in out.stderr


async def test_shared_slots_never_run_two_jobs_at_once(data_file: Path, tmp_path: Path) -> None:
    """Two runners (two nodes on one machine) with workers = 1 and the same jobs.slots folder, each given a job at
    the same moment: their worker processes, watched in /proc, never overlap in time, and both jobs succeed."""
    slots = tmp_path / "slots"
    runners = [LocalRunner(JobsConfig(workers=1, slots=str(slots))) for _ in range(2)]
    jobs = [factory_job(data_file, tmp_path / f"node{i}" / "job", label=i) for i in range(2)]
    seen: dict[str, list[float]] = {}  # workdir -> [first seen, last seen]
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            now, alive = time.monotonic(), workers_of(tmp_path)
            most = max(most, len(set(alive.values())))  # jobs, not processes: a job's child shares its stderr
            for workdir in alive.values():
                seen.setdefault(workdir, [now, now])[1] = now
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        results: list[JobResult] = await asyncio.gather(*(r.run(j) for r, j in zip(runners, jobs, strict=True)))
    finally:
        watcher.cancel()
    assert all(r.ok for r in results), [r.error for r in results]
    assert most == 1 and len(seen) == 2, (most, seen)
    (a0, a1), (b0, b1) = sorted(seen.values())
    assert a1 < b0  # the second started only after the first was gone
    assert sorted(p.name for p in slots.iterdir()) == ["slot-0"]


@pytest.mark.parametrize("forked", [False, True], ids=["fresh", "forked"])
async def test_cancelling_the_caller_kills_the_job(
    data_file: Path, tmp_path: Path, forkserver: str, forked: bool
) -> None:
    """A job (a million training steps), fresh or forked, whose awaiting task is cancelled mid-training is killed:
    the task ends cancelled within moments, the worker and its process group are gone, and it wrote no result."""
    runner = LocalRunner(JobsConfig(workers=1, forkserver=forkserver if forked else ""))
    progress = Progress()
    job = factory_job(data_file, tmp_path / "long", train_steps=10**6)
    task = asyncio.create_task(runner.run(job, progress))
    pid = await first_worker(tmp_path)
    deadline = time.monotonic() + 60
    while progress.phase != "factories" or progress.done < 1:  # it is training, not still starting
        assert time.monotonic() < deadline and not task.done()
        await asyncio.sleep(0.05)
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 5
    assert_group_gone(pid)
    assert not (job.workdir / RESULT_FILE).exists() and not (job.workdir / OUT / "blob").exists()
    assert workers_of(tmp_path) == {}


def ask(server: str, request: bytes, fds: list[int]) -> socket.socket:
    """A connection to the fork server that sent `request` with `fds`; the caller reads the answer and closes it."""
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(server)
    conn.settimeout(10)
    socket.send_fds(conn, [request], fds) if fds else conn.sendall(request)
    return conn


def test_the_fork_server_refuses_bad_requests_and_kills_the_job_of_a_client_that_hangs_up(
    data_file: Path, tmp_path: Path, forkserver: str
) -> None:
    """Through the fork server's socket protocol by hand. Requests without their two descriptors, nested 5,000 deep
    (past the decoder's recursion limit), or from a client that runs other code each get {"error"} naming it and
    the connection closed, and the server goes on: a request for a long job then gets {"pid"} of a process that
    runs it; the client hangs up without waiting (its node died), and the server kills the job's group."""
    job = factory_job(data_file, tmp_path / "orphan", train_steps=10**6)
    job.write()
    fields = {"workdir": str(job.workdir), "cwd": "/", "cpu_s": 600, "code": code_fingerprint()}
    request = json.dumps(fields).encode() + b"\n"
    r, w = os.pipe()
    with open(job.workdir / LOG_FILE, "ab") as log:
        bad = {
            "without descriptors": (request, []),
            "deeply nested": (b"[" * 5_000, [w, log.fileno()]),
            "other code": (json.dumps(fields | {"code": "0" * 64}).encode(), [w, log.fileno()]),
        }
        for what, (body, fds) in bad.items():
            with ask(forkserver, body, fds) as conn:
                reply = conn.makefile().read()
            assert reply.count("\n") == 1 and "error" in json.loads(reply), (what, reply)
        assert "other code" in json.loads(reply)["error"]
        with os.fdopen(r, "rb") as progress:  # open until the end: the job is not ended by a broken pipe
            with ask(forkserver, request, [w, log.fileno()]) as conn:
                os.close(w)
                pid = json.loads(conn.makefile().readline())["pid"]
                assert "phase" in json.loads(progress.readline())  # it runs, and talks on the pipe it was given
                assert workers_of(tmp_path) == {pid: str(job.workdir)}
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists():
                assert time.monotonic() < deadline, "the orphaned job is still running"
                time.sleep(0.05)
            assert_group_gone(pid)


# -- hostile factories against a real node ------------------------------------------------------------------------
# Site N (an `ffnode start` daemon) holds the digit 0 and learns 1 and 2 from peers: HONEST's factories, and three of
# class 2 that only a job can find out about, each from a real libp2p peer with its own key. Every limit is N's.
BOMBER, POISONER, STALLER, HONEST = (Identity(bytes([i]) * 32) for i in range(41, 45))
FACTORY_PARAMS = 40_000_000  # N's limits.factory_params: the bomb is the largest factory under it (~155 MB)
MEMORY_MB = 710  # N's jobs.memory_mb: a tiny job peaks near 470 MB (torch), one holding the bomb at ~640,
# one sampling it at 780-830 (measured here: the bomb's weights, then a second copy in its UNet)
WALL_S = 25.0  # N's jobs.wall_s: a tiny job takes 5-20 s on 2 busy cores
STALL_STEPS = 10_000  # N's limits.sample_steps, and what the staller asks: minutes of sampling
NODE_TIMEOUT = 240.0


def configure(home: Path, section: str, **values: object) -> None:
    """Set `values` in one section of the node's config.toml (before it starts)."""
    config = tomllib.loads((home / "config.toml").read_text())
    config.setdefault(section, {}).update(values)
    (home / "config.toml").write_text(tomli_w.dumps(config))


def largest_factory(cap: int, **changes: Any) -> FactoryConfig:
    """The two-level `tiny`-shaped factory with the most parameters under `cap` (counted as a node vets it)."""
    fits = []
    for width in range(16, 1025, 8):
        cfg = dataclasses.replace(TINY.factory, block_out_channels=(width, width), norm_num_groups=4, **changes)
        if unet_size(cfg)[0] <= cap:
            fits.append(cfg)
    return fits[-1]


def served_factories() -> list[tuple[Identity, int, FactoryConfig, dict[str, torch.Tensor]]]:
    """(owner, class, config, weights): HONEST's factories of classes 1 and 2, and the three hostile ones of 2."""
    torch.manual_seed(0)
    tiny = build_unet(TINY.factory).state_dict()
    bomb = largest_factory(FACTORY_PARAMS, sample_steps=50)  # and the most sampler steps a node allows by default
    stall = dataclasses.replace(TINY.factory, block_out_channels=(64, 64), num_train_timesteps=STALL_STEPS,
                                sample_steps=STALL_STEPS)  # fmt: skip
    return [
        (HONEST, 1, TINY.factory, tiny),
        (HONEST, 2, TINY.factory, build_unet(TINY.factory).state_dict()),
        (BOMBER, 2, bomb, build_unet(bomb).state_dict()),
        (POISONER, 2, TINY.factory, {k: torch.full_like(v, float("nan")) for k, v in tiny.items()}),
        (STALLER, 2, stall, build_unet(stall).state_dict()),
    ]


def honest_expert(tmp: Path) -> tuple[Manifest, Path]:
    """HONEST's expert of all three classes (real data of each, no lineage): it answers N's queries meanwhile."""
    torch.manual_seed(1)
    blob = owned_blob(tmp / "honest-expert", build_expert(TINY.expert, 3, (8, 8, 1)).state_dict(), HONEST.peer_id)
    arch = {"expert": TINY.expert.to_dict(), "num_classes": 3, "image_shape": [8, 8, 1], "synth_per_class": 8,
            "profile": "tiny"}  # fmt: skip
    meta = {"real_counts": [30, 30, 30], "label_counts": [30, 30, 30], "n_real": 90, "n_train": 90}
    return signed_manifest(HONEST, blob, kind="expert", classes=[0, 1, 2], arch=arch, seq=9, meta=meta), blob


def swallow(call: Callable[[], object]) -> object:
    """`call`'s answer, or None while it raises (the node refuses, or is not answering yet)."""
    try:
        return call()
    except (control.ControlError, OSError, ValueError):
        return None


def log_of(home: Path) -> str:
    return (home / "node.log").read_text()


async def test_hostile_factories_cost_one_job_each_and_the_node_goes_on(tmp_path: Path) -> None:
    """Three peers serve N a class-2 factory that only a job can find out about: a model bomb (the largest factory
    N's limits.factory_params allows, whose sampling holds more than N's jobs.memory_mb), a NaN factory (its
    samples are NaN: the job fails naming it) and a sampler that never ends (within N's limits.sample_steps, far
    past N's jobs.wall_s). Each costs N one expert job (2 killed, 1 failed), its log names each factory with its
    reason, and N stays up, answering `status` and `query` throughout, until it is ready with an expert trained
    from HONEST's factories alone; `status` counts the jobs and their CPU seconds per phase."""
    home = tmp_path / "n"
    addr = init_home(home, port=free_port(), data=class_file(tmp_path, [0], "zero"), classes=CLASSES, profile="tiny",
                     seed=2)  # fmt: skip
    configure(home, "jobs", memory_mb=MEMORY_MB, wall_s=WALL_S, workers=1)
    configure(home, "limits", factory_params=FACTORY_PARAMS, sample_steps=STALL_STEPS)
    expert, expert_blob = honest_expert(tmp_path)
    served: dict[str, list[tuple[Manifest, Path]]] = {HONEST.peer_id: [(expert, expert_blob)]}  # by owner
    owners = {o.peer_id: o for o in (HONEST, BOMBER, POISONER, STALLER)}
    for i, (owner, label, cfg, weights) in enumerate(served_factories()):
        blob = owned_blob(tmp_path / f"factory-{i}", weights, owner.peer_id)
        m = signed_manifest(owner, blob, kind="factory", classes=[label], arch=cfg.to_dict(), seq=1 + i)
        served.setdefault(owner.peer_id, []).append((m, blob))
    peers = [
        Peer(
            topic=TOPIC,
            seed=owners[o].seed,
            inventory=[m.seal(owners[o]) for m, _ in mine],
            blobs={m.blob: b for m, b in mine},
        )  # fmt: skip
        for o, mine in served.items()
    ]
    honest = sorted(m.id for m, _ in served[HONEST.peer_id] if m.kind == "factory")
    (bomb, _), (nan, _), (stall, _) = (served[o.peer_id][0] for o in (BOMBER, POISONER, STALLER))
    hostile = {bomb.id: "over jobs.memory_mb", nan.id: "cannot sample it", stall.id: f"jobs.wall_s ({WALL_S:.0f} s)"}
    test = load_dataset("digits", split="test", classes=[str(i) for i in range(10)])
    question = control.encode_images(test.images[test.labels < 3][:20])
    started = time.monotonic()
    with Daemons() as daemons:
        daemons.start(home)
        await asyncio.to_thread(wait_for, lambda: status(home), timeout=60, what="N up", daemons=daemons)
        await asyncio.gather(*(peer.start(addr) for peer in peers))
        try:

            def answers() -> dict:
                return control.call(home, "query", question, timeout=30)

            await asyncio.to_thread(wait_for, lambda: swallow(answers), timeout=60, what="N to answer queries",
                                    daemons=daemons)  # fmt: skip
            polls = 0

            def done() -> bool:
                """Ready, with both limit kills behind it (the NaN factory is judged below); meanwhile every
                status and query is answered."""
                nonlocal polls
                s = status(home)
                assert s is not None, "N stopped answering status"
                assert len(answers()["labels"]) == 20  # raises if the query is refused or times out
                polls += 1
                skipped = [f"skipping factory {aid[:12]}" in log_of(home) for aid in (bomb.id, stall.id)]
                return s["phase"] == "ready" and all(skipped)

            await asyncio.to_thread(wait_for, done, timeout=NODE_TIMEOUT, what="N ready without the bomb and the "
                                    "staller", daemons=daemons, interval=1.0)  # fmt: skip
        finally:
            await asyncio.gather(*(peer.stop() for peer in peers))
        took = time.monotonic() - started
        s = status(home)
        assert s is not None
        rows = {r["id"]: r for r in control.call(home, "artifacts")}
        daemons.check()
    log = log_of(home)
    print(f"hostile factories: N ready after {took:.0f} s, {polls} status+query polls answered; jobs {s['jobs']}, "
          f"compute {s['compute']}")  # fmt: skip
    for aid, reason in hostile.items():  # each named, with its reason
        named = [line for line in log.splitlines() if f"skipping factory {aid[:12]}" in line]
        assert any(reason in line for line in named), (aid, reason, named)
    lineage = rows[s["current_expert"]]["lineage"]
    assert lineage == honest, f"N's expert was trained from {lineage}, not from HONEST's factories alone"
    assert s["jobs"]["killed"] == 2 and s["jobs"]["failed"] == 1 and s["jobs"]["ok"] >= 2, s["jobs"]
    assert {"startup", "factories", "audit", "synthesis", "expert"} <= set(s["compute"]), s["compute"]
    assert all(v > 0 for v in s["compute"].values()), s["compute"]
    assert all(rows[aid]["state"] == "live" for aid in hostile)  # held, only never sampled again


def test_a_time_limit_blames_only_an_artifact_that_took_most_of_the_job() -> None:
    """A slow job is not blamed on whichever honest factory it happened to be reading when its time ran out; a
    memory limit or a crash is blamed on the one being read; a kill the runner did not make on nobody."""
    watch = Watch(0)
    watch.started -= 300.0  # the job has run 300 s, 200 of them starting (nobody's) ...
    watch.working_since = watch.started + 200.0
    watch.read("f1")
    watch.blame_since -= 60.0  # ... then reading f1 for the last 60 of its 100 working seconds
    assert watch.culprit("time") == "f1" and watch.culprit("memory") == "f1"
    watch.read("f2")  # f2 for an instant
    assert watch.culprit("time") is None and watch.culprit("crash") == "f2" and watch.culprit("") is None


async def test_a_waiting_factory_takes_the_shared_slot_before_an_expert_that_waited_longer(tmp_path: Path) -> None:
    """Three nodes share one slot: the holder lets go, and the factory that asked last goes first; an expert's
    `turn` waits while a factory waits; a `want-` file whose process is gone holds nobody back."""
    cfg = JobsConfig(workers=1, slots=str(tmp_path / "slots"))
    holder, expert_node, factory_node = LocalRunner(cfg), LocalRunner(cfg), LocalRunner(cfg)
    order: list[str] = []

    async def take(runner: LocalRunner, kind: str) -> None:
        async with runner._slot(kind):
            order.append(kind)
            await asyncio.sleep(0.05)

    async with holder._slot("expert"):
        expert = asyncio.create_task(take(expert_node, "expert"))
        await asyncio.sleep(0.2)
        factory = asyncio.create_task(take(factory_node, "factory"))
        await asyncio.sleep(0.2)
        assert len(list((tmp_path / "slots").glob("want-*"))) == 1
        turn = asyncio.create_task(expert_node.turn("expert"))
        await asyncio.sleep(1.0)
        assert not turn.done()
    await asyncio.wait_for(asyncio.gather(expert, factory, turn), timeout=10)
    assert order == ["factory", "expert"]
    assert not list((tmp_path / "slots").glob("want-*"))

    (tmp_path / "slots" / "want-12345-1").touch()  # left by a node that died waiting: no lock on it
    await asyncio.wait_for(expert_node.turn("expert"), timeout=2)
    assert not list((tmp_path / "slots").glob("want-*"))
