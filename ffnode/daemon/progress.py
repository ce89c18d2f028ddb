"""What a node is doing now (a value `ffnode status` reads), and how work in a worker thread learns to stop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("ffnode.learner")  # progress is the learner's


@dataclass
class Progress:
    """The learner's current stage, for `ffnode status` and the testnet's live table."""

    phase: str = "starting"  # starting | factories | waiting | synthesis | expert | ready | error | left
    task: str = ""
    done: int = 0
    total: int = 0
    missing: list[str] | None = None  # classes no factory covers yet

    def update(self, done: int, total: int) -> None:
        """Record a step of long work; also logs every quarter, so the log shows it."""
        if total and 4 * done // total > 4 * self.done // max(self.total, 1):
            log.info("%s %s: %d/%d", self.phase, self.task, done, total)
        self.done, self.total = done, total


class Stopping(Exception):
    """Long work in a worker thread was told to stop (shutdown, or the node left): a thread cannot be
    cancelled, so it aborts at its next progress tick; factory training resumes from its checkpoint."""


def ticker(progress: Progress, should_stop: Callable[[], bool] = lambda: False) -> Callable[[int, int], None]:
    """The progress callback for work in a worker thread: records progress, raises Stopping when told to."""

    def tick(done: int, total: int) -> None:
        if should_stop():
            raise Stopping
        progress.update(done, total)

    return tick
