"""The local runner: each job a worker process on this machine, under limits, at most `workers` at once.

A job that breaks a limit (resident memory, CPU seconds, wall time) or dies is killed with its whole process
group; its JobResult then names the limit and the peer artifact it was reading (the worker's last progress
line), so the node blames that artifact and never itself. With `jobs.slots`, nodes sharing one machine also
share `workers` slots (a file lock each), so N sites cost N light nodes plus at most `workers` jobs; a factory
waiting for a slot goes before every other kind of job (the experts of a large federation then train once, from
every factory, instead of once per arrival). With `jobs.forkserver`, a job is forked warm by that server
(jobs/forkserver.py) instead of started afresh: the same limits, the same watch, the same bytes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from asyncio.subprocess import Process
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from ffnode.config import JobsConfig
from ffnode.jobs.forkserver import code_fingerprint, kill_group, limit_self
from ffnode.jobs.progress import Progress
from ffnode.jobs.spec import Job, JobResult, read_result
from ffnode.stats import JOB_S, Histogram

log = logging.getLogger("ffnode.jobs")

WATCH_S = 0.2  # how often a job's memory, CPU and wall time are looked at
SLOT_POLL_S = 0.5  # how often a node waiting for a shared slot tries again
# the code this node runs, as the disk held it when the runner was imported (at the node's start): a fork server
# started from other code (an upgrade since) refuses the node's jobs, which then start afresh
CODE = code_fingerprint()
FORK_S = 10.0  # a fork server that has not forked a job in this long is taken to be absent
STATUS_S = 10.0  # after a kill, a fork server that has not said the job ended in this long is taken to have
MAX_LINE = 64 * 1024  # a progress line longer than this ends the job: the worker is not talking sense
LOG_FILE = "job.log"  # in the job's workdir: its stderr
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
CRASHES = {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT}  # a job that died of its input


def default_workers() -> int:
    """One job per two cores (each trains with the threads it is given), at least one."""
    return max(1, (os.cpu_count() or 2) // 2)


class LocalRunner:
    def __init__(self, cfg: JobsConfig) -> None:
        self.cfg = cfg
        self.workers = cfg.workers or default_workers()
        self._free = asyncio.Semaphore(self.workers)
        self.compute: dict[str, float] = {}  # core-seconds per phase over every job this runner ran
        self.jobs = {"ok": 0, "failed": 0, "killed": 0}
        self.durations: dict[str, Histogram] = {}  # wall seconds of each kind of job (factory, expert, ...)
        self._told_no_server = False  # a missing fork server is logged once

    async def run(self, job: Job, progress: Progress | None = None) -> JobResult:
        """Run `job` to its end (or a limit); cancelling the caller kills the job."""
        job.write()
        async with self._free, self._slot(job.kind):
            result = await self._spawn(job, progress or Progress())
        for phase, seconds in result.cpu_s.items():
            self.compute[phase] = round(self.compute.get(phase, 0.0) + seconds, 3)
        self.durations.setdefault(job.kind, Histogram(JOB_S)).observe(result.wall_s)
        return result

    async def turn(self, kind: str) -> None:
        """Wait until a job of `kind` could start now, holding nothing: a caller that decides its job's input only
        then (an expert's lineage) does not queue behind the machine's factories with an input they make stale."""
        if not self.cfg.slots:
            return
        while True:  # other processes free slots: there is nothing in this one to wait on
            if (held := self._try_slot(kind)) is not None:
                held.close()
                return
            await asyncio.sleep(SLOT_POLL_S)

    @contextlib.asynccontextmanager
    async def _slot(self, kind: str) -> AsyncIterator[None]:
        """One of the machine's `workers` slots when nodes share `jobs.slots`, else nothing to wait for. A waiting
        factory says so (a locked `want-` file) and every other kind waits while one does."""
        if not self.cfg.slots:
            yield
            return
        folder, want = Path(self.cfg.slots), None
        try:
            while (held := self._try_slot(kind)) is None:  # other processes free slots: nothing here to wait on
                if kind == "factory" and want is None:
                    want = _want(folder)
                await asyncio.sleep(SLOT_POLL_S)
        finally:
            if want is not None:
                _unwant(want)
        try:
            yield
        finally:
            held.close()  # the kernel drops the lock with the file, also if this process dies

    def _try_slot(self, kind: str) -> IO[bytes] | None:
        """A shared slot for a job of `kind`, if one is free and no factory is waiting ahead of it."""
        folder = Path(self.cfg.slots)
        if kind != "factory" and _factories_waiting(folder):
            return None
        return _take_slot(folder, self.workers)

    def _limits(self) -> None:
        """In the child, before exec."""
        limit_self(self.cfg.cpu_s)

    async def start(self, module: str, *args: str, workdir: Path, env: dict[str, str] | None = None) -> Process:
        """`python -m module args...` as every job process starts: under `_limits`, in a session of its own (so its
        whole group can be killed), stdout a pipe of progress lines, stderr appended to the workdir's job.log."""
        with _open_log(workdir) as stderr:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, *args,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                start_new_session=True, preexec_fn=self._limits, limit=MAX_LINE, env=env,
            )  # fmt: skip

    async def _spawn(self, job: Job, progress: Progress) -> JobResult:
        t0 = time.monotonic()
        proc: Process | Forked | None = None
        if self.cfg.forkserver:
            proc = await fork(self.cfg.forkserver, job.workdir, self.cfg.cpu_s)
            if proc is None and not self._told_no_server:
                log.warning("no fork server answers at jobs.forkserver (%s): jobs start as fresh processes",
                            self.cfg.forkserver)  # fmt: skip
            self._told_no_server = proc is None
        if proc is None:
            proc = await self.start("ffnode.jobs.worker", str(job.workdir), workdir=job.workdir)
        watch = Watch(proc.pid)
        killed: str | None = None
        try:
            async with asyncio.timeout(self.cfg.wall_s):
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(_follow(proc, progress, watch))
                    guard = tg.create_task(self._guard(proc, watch))
                    await proc.wait()
                    guard.cancel()
            killed = watch.killed
        except TimeoutError:
            killed, watch.cause = f"it ran past jobs.wall_s ({self.cfg.wall_s:.0f} s)", "time"
        finally:
            if proc.returncode is None:
                _kill(proc)
                await proc.wait()
        return self._result(job, proc.returncode, killed, watch, time.monotonic() - t0)

    async def _guard(self, proc: Process | Forked, watch: Watch) -> None:
        """Kill the job once it holds more than jobs.memory_mb resident."""
        while proc.returncode is None:
            watch.sample()
            if watch.rss_mb > self.cfg.memory_mb:
                watch.killed = f"it held {watch.rss_mb:.0f} MB, over jobs.memory_mb ({self.cfg.memory_mb})"
                watch.cause = "memory"
                _kill(proc)
                return
            await asyncio.sleep(WATCH_S)

    def _result(self, job: Job, rc: int | None, killed: str | None, watch: Watch, wall: float) -> JobResult:
        if killed is None and rc == -signal.SIGXCPU:  # RLIMIT_CPU: the kernel's kill, for jobs.cpu_s
            killed, watch.cause = f"it ran past jobs.cpu_s ({self.cfg.cpu_s} CPU seconds)", "time"
        elif killed is None and rc is not None and -rc in CRASHES:
            watch.cause = "crash"
        written = read_result(job.workdir) if killed is None else None
        r = JobResult(job.workdir, wall_s=round(wall, 2), rss_mb_max=round(watch.rss_mb_max, 1))
        if written is not None and isinstance(written.get("cpu_s"), dict):
            r.cpu_s = {str(k): float(v) for k, v in written["cpu_s"].items()}
        else:
            r.cpu_s = {watch.phase: round(watch.cpu_s, 3)}  # killed or crashed: its CPU as last seen
        if rc == 0 and written is not None and isinstance(written.get("result"), dict):
            r.result = written["result"]
            self.jobs["ok"] += 1
            return r
        if written is not None and isinstance(written.get("error"), str):
            r.error, r.blame = written["error"], written.get("blame")  # the job's own word, "nobody" included
        else:
            why = killed or (f"signal {signal.Signals(-rc).name}" if rc is not None and rc < 0 else f"exit {rc}")
            r.error = f"the job was killed: {why}" if killed else f"the job died ({why}) before writing its result"
            r.blame = watch.culprit(watch.cause)
        self.jobs["killed" if killed else "failed"] += 1
        log.warning("job %s failed after %.1f s: %s%s (log: %s)", job.what or job.kind, wall, r.error,
                    f"; it was reading {r.blame[:12]}" if r.blame else "", job.workdir / LOG_FILE)  # fmt: skip
        return r


class Forked:
    """A job the fork server forked, with the face of an asyncio Process that `_spawn` uses: pid, stdout (the
    progress pipe), returncode, wait(), and kill() (a byte to the server, which kills it before reaping it, so the
    pid is never a stranger's). The server, its parent, tells how it ended; a server gone means the job died with
    it (SIGKILL), and one that does not answer within STATUS_S of a kill is taken to have killed it."""

    def __init__(self, pid: int, stdout: asyncio.StreamReader, pipe: asyncio.BaseTransport, conn: Any, w: Any) -> None:
        self.pid, self.stdout, self._pipe, self._conn, self._writer = pid, stdout, pipe, conn, w
        self.returncode: int | None = None
        self._timeout: asyncio.Timeout | None = None  # the running wait's, which a kill bounds
        self._killed = False

    def kill(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self._writer.write(b"k")
        if self._timeout is not None and self._timeout.when() is None:
            self._timeout.reschedule(asyncio.get_running_loop().time() + STATUS_S)
        self._killed = True

    async def wait(self) -> int:
        if self.returncode is not None:
            return self.returncode
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(loop.time() + STATUS_S if self._killed else None) as t:
                self._timeout = t
                self.returncode = int(json.loads(await self._conn.readline())["status"])
        except (OSError, ValueError, KeyError, TypeError, TimeoutError):
            self.returncode = -signal.SIGKILL
        finally:
            self._timeout = None
            if self.returncode is not None:
                self._writer.close()
                self._pipe.close()
        return self.returncode


async def fork(path: str, workdir: Path, cpu_s: int) -> Forked | None:
    """The worker for `workdir`, forked by the fork server listening at `path`; None if no server answers there in
    FORK_S, or it refused (the caller then starts a fresh process)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    r, w = os.pipe()
    writer = None
    try:
        async with asyncio.timeout(FORK_S):
            try:
                await loop.sock_connect(sock, path)
                with _open_log(workdir) as stderr:
                    fields = {"workdir": str(workdir), "cwd": os.getcwd(), "cpu_s": cpu_s, "code": CODE}
                    socket.send_fds(sock, [json.dumps(fields).encode() + b"\n"], [w, stderr.fileno()])
            finally:
                os.close(w)  # the child holds it now: the pipe ends when the job does
            conn, writer = await asyncio.open_unix_connection(sock=sock)
            reply = json.loads(await conn.readline())
            if "error" in reply:
                log.warning("the fork server at %s refused a job: %s", path, str(reply["error"])[:200])
            pid = int(reply["pid"])
    except BaseException as exc:  # cancelled included: nothing of it is left open, and a forked job dies with it
        if writer is not None:
            writer.close()
        else:
            sock.close()
        os.close(r)
        if isinstance(exc, OSError | ValueError | KeyError | TypeError | TimeoutError):
            return None
        raise
    stdout = asyncio.StreamReader(limit=MAX_LINE)
    pipe, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout), os.fdopen(r, "rb", 0))
    return Forked(pid, stdout, pipe, conn, writer)


class Watch:
    """What the runner last saw of a job: memory, CPU, the phase and the artifact it was reading."""

    def __init__(self, pid: int) -> None:
        self.pid, self.rss_mb, self.rss_mb_max, self.cpu_s = pid, 0.0, 0.0, 0.0
        self.phase, self.blame, self.killed, self.cause = "startup", None, None, ""
        self.started = self.blame_since = time.monotonic()
        self.working_since: float | None = None  # its first progress after the start

    def read(self, blame: str | None) -> None:
        """The worker now reads `blame` (a peer artifact, or None): since when counts for a limit on time."""
        if blame != self.blame:
            self.blame, self.blame_since = blame, time.monotonic()

    def culprit(self, cause: str) -> str | None:
        """The artifact to blame for a job that ended by `cause`: the one being read when it broke a memory limit or
        crashed (SEGV and the like), but for a time limit only if reading it took at least half the job's working time
        (its start, importing torch, is nobody's), so a slow job is not blamed on whichever honest factory came last;
        nobody for a kill this runner did not make."""
        now, since = time.monotonic(), self.working_since or self.started
        if cause in ("memory", "crash") or (cause == "time" and now - self.blame_since >= (now - since) / 2):
            return self.blame
        return None

    def sample(self) -> None:
        try:
            rss_pages = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1])
            stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError, ValueError):
            return  # it ended meanwhile
        self.rss_mb = rss_pages * PAGE / 2**20
        self.rss_mb_max = max(self.rss_mb_max, self.rss_mb)
        self.cpu_s = (int(stat[11]) + int(stat[12])) / TICK  # utime + stime


async def _follow(proc: Process | Forked, progress: Progress, watch: Watch) -> None:
    """Mirror the worker's progress lines into the node's Progress; remember the artifact it is reading."""
    assert proc.stdout is not None
    while True:
        try:
            line = await proc.stdout.readline()
        except ValueError:  # a line over MAX_LINE
            watch.killed, watch.cause = "its progress output broke the protocol", "protocol"
            _kill(proc)
            return
        if not line:
            return
        try:
            msg: dict[str, Any] = json.loads(line)
            phase = str(msg["phase"])
            watch.read(msg.get("blame"))
            if phase not in ("startup", "done"):
                watch.working_since = watch.working_since or time.monotonic()
                watch.phase = progress.phase = phase
                if msg.get("task"):  # a job that names no task keeps the one its caller gave ("factory 3 (1/2)")
                    progress.task = str(msg["task"])[:200]
                progress.update(int(msg.get("done", 0)), int(msg.get("total", 0)))
        except (ValueError, KeyError, TypeError):
            continue


def _take_slot(folder: Path, slots: int) -> IO[bytes] | None:
    """A free slot's file, locked (the lock lasts while the file is open), or None if all are taken."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(slots):
        f = open(folder / f"slot-{i}", "a+b")  # noqa: SIM115 - held until the job ends
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            f.close()
    return None


def _want(folder: Path) -> tuple[Path, IO[bytes]]:
    """A `want-` file, locked before it is visible (renamed into place), so a reader never takes it for stale."""
    name = f"{os.getpid()}-{time.monotonic_ns()}"
    f = open(folder / f".{name}", "a+b")  # noqa: SIM115 - held while the factory waits
    fcntl.flock(f, fcntl.LOCK_EX)
    os.rename(folder / f".{name}", folder / f"want-{name}")
    return folder / f"want-{name}", f


def _unwant(want: tuple[Path, IO[bytes]]) -> None:
    want[0].unlink(missing_ok=True)
    want[1].close()


def _factories_waiting(folder: Path) -> bool:
    """Whether a live process holds a `want-` file; one whose process died (its lock gone with it) is removed."""
    for path in folder.glob("want-*"):
        try:
            with open(path, "rb") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
            path.unlink(missing_ok=True)
        except FileNotFoundError:
            continue
    return False


def _open_log(workdir: Path) -> IO[bytes]:
    return open(workdir / LOG_FILE, "ab")  # noqa: SIM115 - the caller closes it once the child has it


def _kill(proc: Process | Forked) -> None:
    if isinstance(proc, Forked):
        proc.kill()
    else:
        kill_group(proc.pid)
