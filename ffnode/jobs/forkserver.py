"""A warm process that forks jobs: torch and the builds are imported once, so a job starts in milliseconds where a
fresh `python -m ffnode.jobs.worker` spends ~3 CPU seconds importing them (most of a `tiny` job's cost).

    python -m ffnode.jobs.forkserver SOCKET

Every node sharing a machine (the testnet's sites, the test suite's daemons) may point `jobs.forkserver` at one;
a node whose server is not there runs its jobs as fresh processes, as without one. One connection per job on the
unix socket (a folder of its own, mode 0700: whoever may connect may run jobs as this user):

    client -> server   one JSON line {"workdir": path, "cwd": path, "cpu_s": n}, with two file descriptors
                       (SCM_RIGHTS): the job's stdout (the write end of the runner's progress pipe) and its stderr
                       (the workdir's job.log); cwd is the client's, where a fresh worker would start
    server -> client   {"pid": n} once forked, then {"status": rc} when it ended (an exit code, or -signal)

The child is what a fresh worker would be: a session of its own, the limits every job runs under (`limit_self`),
stdout and stderr the client's, then worker.main. A client that hangs up (its node died or gave up) has its job
killed, as a fresh worker dies with its node; the children die with the server. The server forks from a single
thread that has run no torch operation, so no thread pool or lock is copied half-held.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import resource
import selectors
import signal
import socket
import sys
import traceback
from pathlib import Path

PRELOAD = ("numpy", "torch", "ffnode.jobs.build", "ffnode.jobs.worker")  # what a job would import first
REQUEST_MAX = 64 * 1024  # bytes of one request line
REQUEST_S = 5.0  # a client that connects and says nothing in this long is dropped
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


class Server:
    """Accepts job requests and forks them; one selector loop, no threads."""

    def __init__(self, path: Path) -> None:
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        binding = path.with_name(path.name + ".binding")
        binding.unlink(missing_ok=True)
        self.listener.bind(str(binding))
        self.listener.listen(64)
        binding.replace(path)  # the socket appears only once it listens: its path is the server's readiness
        self.sel.register(self.listener, selectors.EVENT_READ, self._accept)
        self.jobs: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, its client's connection)

    def serve(self) -> None:
        while True:
            for key, _ in self.sel.select():
                key.data(key.fileobj)

    def _accept(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        fds: list[int] = []
        try:
            conn.settimeout(REQUEST_S)
            data, fds, _, _ = socket.recv_fds(conn, REQUEST_MAX, 2)
            request = json.loads(data)
            paths_ok = all(isinstance(request.get(k), str) for k in ("workdir", "cwd"))
            if len(fds) != 2 or not paths_ok or not isinstance(request.get("cpu_s"), int):
                raise ValueError("a request is {workdir, cwd, cpu_s} and two descriptors")
            pid = self._fork(request, fds, conn)
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            print(f"forkserver: a request refused: {exc}", file=sys.stderr, flush=True)
            conn.close()
            return
        finally:
            for fd in fds:
                os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.jobs[pidfd] = (pid, conn)
        self.sel.register(pidfd, selectors.EVENT_READ, self._ended)
        self.sel.register(conn, selectors.EVENT_READ, self._hung_up)

    def _fork(self, request: dict, fds: list[int], conn: socket.socket) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        status = 70
        try:  # the child: never returns into the server's loop
            os.setsid()
            limit_self(request["cpu_s"])
            os.chdir(request["cwd"])
            os.dup2(fds[0], 1)
            os.dup2(fds[1], 2)
            for fd in {*fds, conn.fileno(), *(key.fd for key in self.sel.get_map().values())}:
                os.close(fd)  # the listener, the other jobs' connections and pidfds: the server's, not the job's
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            worker = importlib.import_module("ffnode.jobs.worker")
            status = worker.main(Path(request["workdir"]))
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)

    def _ended(self, pidfd: int) -> None:
        pid, conn = self.jobs.pop(pidfd)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(KeyError):  # unless it hung up already
            self.sel.unregister(conn)
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
        conn.close()

    def _hung_up(self, conn: socket.socket) -> None:
        """The client said something after its request, or left: either way its job ends (reaped in `_ended`)."""
        pid = next(p for p, c in self.jobs.values() if c is conn)
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)
        self.sel.unregister(conn)


def main() -> int:
    path = Path(sys.argv[1])
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the server lives as long as whoever started it
    for module in PRELOAD:
        importlib.import_module(module)
    server = Server(path)
    print(f"forkserver: ready on {path}", file=sys.stderr, flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
