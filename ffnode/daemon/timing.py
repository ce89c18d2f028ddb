"""The learner's timing rules, as pure functions of (what the store shows, the time): when a missing class, an
unarrived factory or the deadline stops holding the expert back. No clock is read here; the learner keeps a
`Waiting` value and passes `now`, so each rule is a unit test away.

    patience   after learning.patience_s without a new usable factory, the classes missing then are taken to be
               ones nobody is going to supply (withheld, or nobody holds them), not ones still being trained, and
               are never waited for again (the expert is retrained when one arrives). Without it such a class held
               the expert back for ever.
    grace      an announced factory whose blob has not arrived, for a class nothing covers, is worth waiting for
               limits.pending_grace_s, once per publisher: after one of its factories failed to arrive in time, its
               pending factories hold nothing back (one announced every minute would, for ever).
    deadline   learning.deadline_s after the start, the expert is trained whatever is missing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rules:
    patience_s: float  # 0: wait for ever
    grace_s: float
    deadline_s: float  # 0: none


@dataclass(frozen=True)
class Waiting:
    """What the rules remember between looks."""

    started: float  # when learning started: the deadline counts from here
    quiet_since: float  # when the usable lineage last changed, or the own factories were last trained
    lineage: tuple[str, ...] = ()  # the usable factories then
    not_coming: frozenset[str] = frozenset()  # missing classes patience gave up on
    pending_since: dict[str, float] = field(default_factory=dict)  # factory ID -> when first found unarrived
    gave_up: frozenset[str] = frozenset()  # publishers whose pending factories hold nothing back


@dataclass(frozen=True)
class Verdict:
    awaited: list[str]  # missing classes still worth waiting for
    blocking: list[str]  # IDs of unarrived factories still worth waiting for
    out_of_time: bool  # the deadline passed: wait for nothing
    stopped_waiting_for: list[str]  # classes patience gave up on at this look (for the log)
    gave_up_on: list[tuple[str, str]]  # (publisher, factory ID) whose grace ran out at this look (for the log)

    @property
    def wait(self) -> bool:
        return bool(self.awaited or self.blocking) and not self.out_of_time


def start(now: float) -> Waiting:
    return Waiting(started=now, quiet_since=now)


def trained_own(state: Waiting, now: float) -> Waiting:
    """The own factories were just trained: peers trained theirs meanwhile, so patience counts from now."""
    return dataclasses.replace(state, quiet_since=now)


def judge(
    state: Waiting,
    rules: Rules,
    now: float,
    *,
    missing: list[str],
    lineage: list[str],
    pending: list[tuple[str, str]],
) -> tuple[Verdict, Waiting]:
    """`missing`: classes no usable factory covers; `lineage`: the usable factories' IDs; `pending`: (factory ID,
    publisher) of announced factories, for a class nothing covers, whose blob has not arrived."""
    if tuple(lineage) != state.lineage:
        state = dataclasses.replace(state, lineage=tuple(lineage), quiet_since=now)
    awaited = [c for c in missing if c not in state.not_coming]
    stopped: list[str] = []
    if awaited and rules.patience_s > 0 and now - state.quiet_since > rules.patience_s:
        stopped, awaited = awaited, []
        state = dataclasses.replace(state, not_coming=state.not_coming | set(stopped))
    since = {aid: state.pending_since.get(aid, now) for aid, _ in pending}
    blocking, gave_up, newly = [], set(state.gave_up), []
    for aid, owner in pending:
        if owner in gave_up:
            continue
        if now - since[aid] < rules.grace_s:
            blocking.append(aid)
        else:
            gave_up.add(owner)
            newly.append((owner, aid))
    state = dataclasses.replace(state, pending_since=since, gave_up=frozenset(gave_up))
    out_of_time = rules.deadline_s > 0 and now - state.started > rules.deadline_s
    return Verdict(awaited, blocking, out_of_time, stopped, newly), state
