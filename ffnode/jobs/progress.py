"""What a node or a job is doing now (a value `ffnode status` reads), and how long work learns to stop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("ffnode.learner")  # progress is the learner's


@dataclass
class Progress:
    """The learner's current stage, for `ffnode status` and the testnet's live table."""

    phase: str = "starting"  # starting | factories | waiting | synthesis | expert | ready | error | left
    task: str = ""
    done: int = 0
    total: int = 0
    missing: list[str] | None = None  # classes no factory covers yet
    blame: str | None = None  # in a job: the peer artifact being loaded or sampled (a limit hit now is its fault)
    _since: float = field(default=0.0, repr=False)  # when the current piece of work was first ticked ...
    _from: int = field(default=0, repr=False)  # ... and its count then

    def update(self, done: int, total: int) -> None:
        """Record a step of long work; also logs every quarter, so the log shows it."""
        if total != self.total or done < self.done:  # another piece of work (a new total, or counting again)
            self._since, self._from = time.monotonic(), done
        if total and 4 * done // total > 4 * self.done // max(self.total, 1):
            log.info("%s %s: %d/%d", self.phase, self.task, done, total)
        self.done, self.total = done, total

    def eta_s(self) -> float | None:
        """Seconds the current piece of work still needs at its pace so far (None until two ticks were seen)."""
        did = self.done - self._from
        if not self.total or did <= 0:
            return None
        return round((time.monotonic() - self._since) * (self.total - self.done) / did, 1)


class Stopping(Exception):
    """Long work was told to stop by its `should_stop` (a caller that builds in a thread of its own process: a
    thread cannot be cancelled, so it aborts at its next progress tick; factory training resumes from its
    checkpoint). A job is stopped by killing its process instead."""


def ticker(progress: Progress, should_stop: Callable[[], bool] = lambda: False) -> Callable[[int, int], None]:
    """The progress callback of long work: records progress, raises Stopping when told to."""

    def tick(done: int, total: int) -> None:
        if should_stop():
            raise Stopping
        progress.update(done, total)

    return tick
