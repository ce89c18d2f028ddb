"""Counts the node keeps for its operators: a histogram of durations, by fixed bounds.

Plain Python, so the node records whether or not its HTTP API (which exports these through prometheus_client,
ffnode/api/metrics.py) is on, and imports nothing for it.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

QUERY_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # one query's seconds
JOB_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0)  # one job's wall seconds


@dataclass
class Histogram:
    """Observations counted under each upper bound (cumulative, as Prometheus exports them), their sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)  # counts[i]: observations <= bounds[i]; the last: all (+Inf)
    total: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        with self._lock:
            for i in range(bisect.bisect_left(self.bounds, value), len(self.counts)):
                self.counts[i] += 1
            self.total += value

    def buckets(self) -> list[tuple[str, int]]:
        """[(upper bound as Prometheus writes it, cumulative count), ..., ("+Inf", count)]."""
        with self._lock:
            return [(repr(float(b)), c) for b, c in zip(self.bounds, self.counts, strict=False)] + [
                ("+Inf", self.counts[-1])
            ]

    @property
    def count(self) -> int:
        return self.counts[-1]
