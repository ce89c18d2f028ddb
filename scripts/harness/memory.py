"""What a set of daemons costs in memory, their job and query workers included, sampled from /proc.

A node spawns worker processes (ffnode/jobs/): its own resident memory says little about what the machine
needs, so a sampler walks each daemon's whole process tree once a second and keeps the peaks. Parentage is read
from every /proc/<pid>/stat (kernels without CONFIG_PROC_CHILDREN have no /proc/<pid>/task/*/children), and
nothing beyond the standard library is needed (psutil is not a dependency).

    node_rss_mb_max     the largest single daemon process (the "light node" figure)
    workers_rss_mb_max  the largest total of every daemon's descendants at one instant
    total_rss_mb_max    the largest sum over daemons and descendants at one instant; it counts pages shared
                        between processes (torch's libraries) once per process, so it overstates the machine's
    total_pss_mb_max    the same sum of proportional set sizes: shared pages split between their sharers
    workers_max         the most descendants at one instant: job workers (a shared pool of W slots holds them to
                        W), query workers, and each node's data reader at its start; a shared fork server counts
                        with the workers' memory, not in this number (its children, the jobs, do)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

PROC = Path("/proc")


def _kb(path: Path, field: str) -> int:
    """A `field:  N kB` line's N from a /proc file, 0 if the process is gone or has none (a zombie)."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` (VmRSS), 0 if it is gone."""
    return _kb(PROC / str(pid) / "status", "VmRSS") / 1024


def pss_mb(pid: int) -> float:
    """Proportional resident memory of `pid` (shared pages divided among their sharers), 0 if it is gone."""
    return _kb(PROC / str(pid) / "smaps_rollup", "Pss") / 1024


def cpu_s(pid: int) -> float:
    """CPU seconds process `pid` has used, user and system, all its threads (Linux)."""
    fields = (PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of() -> dict[int, list[int]]:
    """Every live process's children, from the parent pid in each /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:  # the command name may hold spaces and parentheses: the fields start after the last ')'
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int, children: dict[int, list[int]]) -> list[int]:
    """Every process below `pid` in `children` (workers, and whatever they spawned)."""
    found, todo = [], list(children.get(pid, ()))
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, ())
    return found


class MemorySampler:
    """Peaks of the memory of the process trees under `roots()`, sampled every `interval` s in a thread.

    `roots` is called at every sample, so restarted daemons (new pids) are followed. `shared` are processes the
    nodes share (a fork server, whose children are their jobs): they and their trees count as workers.
    """

    def __init__(
        self, roots: Callable[[], Iterable[int]], interval: float = 1.0, shared: Callable[[], Iterable[int]] = tuple
    ) -> None:
        self.roots, self.interval, self.shared = roots, interval, shared
        self.node_rss_mb_max = self.workers_rss_mb_max = self.total_rss_mb_max = self.total_pss_mb_max = 0.0
        self.samples = self.workers_max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def sample(self) -> None:
        """One instant: every root's own memory and its descendants', summed over the roots."""
        children = children_of()
        nodes = [(root, descendants(root, children)) for root in self.roots()]
        shared = [(root, descendants(root, children)) for root in self.shared()]
        workers = [p for _, below in nodes + shared for p in below] + [root for root, _ in shared]
        node_rss = [rss_mb(root) for root, _ in nodes]
        workers_rss = sum(rss_mb(p) for p in workers)
        pss = sum(pss_mb(p) for p in [root for root, _ in nodes] + workers)
        self.node_rss_mb_max = max(self.node_rss_mb_max, *node_rss, 0.0)
        self.workers_rss_mb_max = max(self.workers_rss_mb_max, workers_rss)
        self.total_rss_mb_max = max(self.total_rss_mb_max, sum(node_rss) + workers_rss)
        self.total_pss_mb_max = max(self.total_pss_mb_max, pss)
        self.workers_max = max(self.workers_max, len(workers) - len(shared))  # processes, not the fork server
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> MemorySampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def report(self) -> dict[str, Any]:
        return {
            "node_rss_mb_max": round(self.node_rss_mb_max, 1),
            "workers_rss_mb_max": round(self.workers_rss_mb_max, 1),
            "total_rss_mb_max": round(self.total_rss_mb_max, 1),
            "total_pss_mb_max": round(self.total_pss_mb_max, 1),
            "workers_max": self.workers_max,
            "samples": self.samples,
        }

    def __enter__(self) -> MemorySampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
