"""A warm process that forks jobs: torch and the builds are imported once, so a job starts in milliseconds where a
fresh `python -m ffnode.jobs.worker` spends ~3 CPU seconds importing them (most of a `tiny` job's cost).

    python -m ffnode.jobs.forkserver SOCKET

Every node sharing a machine (the testnet's sites, the test suite's daemons) may point `jobs.forkserver` at one;
a node whose server is not there, or runs other code, runs its jobs as fresh processes, as without one. One
connection per job on the unix socket (a folder of its own, mode 0700: whoever may connect may run jobs as this
user):

    client -> server   one message: a JSON line {"workdir", "cwd", "cpu_s", "code"} with two file descriptors
                       (SCM_RIGHTS): the job's stdout (the write end of the runner's progress pipe) and its stderr
                       (the workdir's job.log). cwd is the client's, where a fresh worker would start; code is
                       `code_fingerprint()`, refused unless it is the server's (an upgraded node, an old server)
    server -> client   {"pid": n} once forked, then {"status": rc} when it ended (an exit code, or -signal);
                       or {"error": why} and the connection closed, for a request refused
    client -> server   any byte, or hanging up: kill the job (its node stops it, or died)

The child is what a fresh worker would be: a session of its own, the limits every job runs under (`limit_self`),
stdin /dev/null, stdout and stderr the client's and no other descriptor, then worker.main. The children die with
the server. The server forks from its one Python thread, which has run no torch operation (numpy's OpenBLAS
threads are idle and fork-safe by their own handlers), and one request or one job's trouble never stops it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

PRELOAD = ("numpy", "torch", "ffnode.jobs.build", "ffnode.jobs.worker")  # what a job would import first
REQUEST_MAX = 64 * 1024  # bytes of one request
REQUEST_S = 5.0  # a client that connects and sends no request in this long is dropped
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
_LIBC = ctypes.CDLL(None, use_errno=True)


def limit_self(cpu_s: int) -> None:
    """The limits every job process starts under, fresh or forked: it dies with its parent (even a SIGKILLed one),
    so none writes on unowned; CPU seconds are the kernel's to enforce (SIGXCPU, then SIGKILL), within the hard limit
    its parent runs under; and a job that dies writes no core file (it would hold the site's images outside work/)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    cap = cpu_s + 5 if hard == resource.RLIM_INFINITY else min(hard, cpu_s + 5)
    resource.setrlimit(resource.RLIMIT_CPU, (min(cpu_s, cap), cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def code_fingerprint() -> str:
    """The interpreter and the ffnode code this process runs (each file's name, size and time): a job forked by a
    server that runs other code than its node would not be the job the node asked for."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(sys.executable.encode())
    for f in sorted(root.rglob("*.py")):
        st = f.stat()
        h.update(f"{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def request_of(data: bytes, fds: list[int], code: str) -> dict[str, Any]:
    """A request's fields, or ValueError saying what is wrong with it."""
    request = json.loads(data)
    if not isinstance(request, dict) or len(fds) != 2:
        raise ValueError("a request is a JSON map and two descriptors")
    if not all(isinstance(request.get(k), str) for k in ("workdir", "cwd")) or type(request.get("cpu_s")) is not int:
        raise ValueError("a request names workdir, cwd (strings) and cpu_s (an integer)")
    if request.get("code") != code:
        raise ValueError("the client runs other code than this fork server (restart the server after an upgrade)")
    return request


class Server:
    """Accepts job requests and forks them: one selector loop, nothing that blocks."""

    def __init__(self, path: Path, code: str) -> None:
        self.code = code
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.setblocking(False)
        binding = path.with_name(path.name + ".binding")
        binding.unlink(missing_ok=True)
        self.listener.bind(str(binding))
        self.listener.listen(64)
        binding.replace(path)  # the socket appears only once it listens: its path is the server's readiness
        self.sel.register(self.listener, selectors.EVENT_READ, self._accept)
        self.waiting: dict[socket.socket, float] = {}  # connections whose request has not come, since when
        self.jobs: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, its client's connection)
        self.by_conn: dict[socket.socket, int] = {}  # a job's connection -> its pidfd

    def serve(self) -> None:
        while True:
            for key, _ in self.sel.select(timeout=1.0):
                try:
                    key.data(key.fileobj)
                except Exception:  # one request's or one job's trouble, never the server's
                    say(f"handling {key.data.__name__} failed:\n{traceback.format_exc()}")
            now = time.monotonic()
            for conn in [c for c, since in self.waiting.items() if now - since > REQUEST_S]:
                self._refuse(conn, "no request in time")

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self.waiting[conn] = time.monotonic()
        self.sel.register(conn, selectors.EVENT_READ, self._request)

    def _refuse(self, conn: socket.socket, why: str) -> None:
        say(f"a request refused: {why}")
        self.waiting.pop(conn, None)
        with contextlib.suppress(KeyError):
            self.sel.unregister(conn)
        with contextlib.suppress(OSError):
            conn.send(json.dumps({"error": why}).encode() + b"\n")
        conn.close()

    def _request(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            data, fds, _, _ = socket.recv_fds(conn, REQUEST_MAX, 2)
            request = request_of(data, fds, self.code)
        except Exception as exc:  # noqa: BLE001 - whatever a client sent (RecursionError included) is its refusal
            for fd in fds:
                os.close(fd)
            self._refuse(conn, str(exc)[:200] or type(exc).__name__)
            return
        del self.waiting[conn]
        self.sel.unregister(conn)
        try:
            pid = self._fork(request, fds)
        finally:
            for fd in fds:
                os.close(fd)
        pidfd = os.pidfd_open(pid)  # the job is the server's to reap from here on, whatever the client does
        self.jobs[pidfd], self.by_conn[conn] = (pid, conn), pidfd
        self.sel.register(pidfd, selectors.EVENT_READ, self._ended)
        try:
            conn.send(json.dumps({"pid": pid}).encode() + b"\n")
        except OSError:  # its client left already: so does the job
            kill_group(pid)
            return
        self.sel.register(conn, selectors.EVENT_READ, self._stop)

    def _fork(self, request: dict[str, Any], fds: list[int]) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        status = 1
        try:  # the child: it never returns into the server's loop
            os.setsid()
            limit_self(request["cpu_s"])
            os.chdir(request["cwd"])
            os.dup2(fds[0], 1)
            os.dup2(fds[1], 2)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])  # the server's: listener, jobs, epoll
            for sig in (signal.SIGTERM, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            worker = importlib.import_module("ffnode.jobs.worker")
            status = worker.main(Path(request["workdir"]))
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)

    def _ended(self, pidfd: int) -> None:
        pid, conn = self.jobs.pop(pidfd)
        self.by_conn.pop(conn, None)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(KeyError):  # unless its client stopped it or left
            self.sel.unregister(conn)
        with contextlib.suppress(OSError):
            conn.send(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
        conn.close()

    def _stop(self, conn: socket.socket) -> None:
        """Its client sent a byte (stop it) or left: the job is killed, not yet reaped (`_ended` reaps it), so its pid
        is still its own."""
        self.sel.unregister(conn)
        if (pidfd := self.by_conn.get(conn)) is not None:
            kill_group(self.jobs[pidfd][0])


def kill_group(pid: int) -> None:
    """A job's whole process group; the process itself too, in case it was killed before its setsid."""
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


def say(line: str) -> None:
    print(f"forkserver: {line}", file=sys.stderr, flush=True)


def main() -> int:
    path, code = Path(sys.argv[1]), code_fingerprint()  # before the preload: the code it is about to import
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the server lives as long as whoever started it
    os.environ["HF_HUB_OFFLINE"] = "1"  # as a job sets it, but before the preload reads it
    for module in PRELOAD:
        importlib.import_module(module)
    server = Server(path, code)
    say(f"ready on {path}")
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
