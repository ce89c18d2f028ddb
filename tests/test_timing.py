"""The learner's timing rules (daemon/timing.py) as functions of what the store shows and the time: no daemon,
no clock."""

from __future__ import annotations

from ffnode.daemon import timing

RULES = timing.Rules(patience_s=600.0, grace_s=60.0, deadline_s=0.0)


def look(state: timing.Waiting, now: float, rules: timing.Rules = RULES, **seen: list) -> tuple:
    seen = {"missing": [], "lineage": [], "pending": []} | seen
    return timing.judge(state, rules, now, **seen)


def test_a_missing_class_is_awaited_until_patience_runs_out_without_a_new_factory() -> None:
    state = timing.start(0.0)
    verdict, state = look(state, 599.0, missing=["c"], lineage=["f1"])
    assert verdict.awaited == ["c"] and verdict.wait  # the lineage changed at 599: patience counts from there
    verdict, state = look(state, 1198.0, missing=["c"], lineage=["f1"])
    assert verdict.wait
    verdict, state = look(state, 1200.0, missing=["c"], lineage=["f1"])
    assert verdict.awaited == [] and verdict.stopped_waiting_for == ["c"] and not verdict.wait
    verdict, state = look(state, 1201.0, missing=["c", "d"], lineage=["f1", "f2"])  # a new factory: d is new
    assert verdict.awaited == ["d"] and verdict.stopped_waiting_for == []  # c is never waited for again


def test_training_the_own_factories_restarts_patience() -> None:
    state = timing.trained_own(timing.start(0.0), 500.0)
    verdict, _ = look(state, 1000.0, missing=["c"])
    assert verdict.wait
    verdict, _ = look(state, 1101.0, missing=["c"])
    assert not verdict.wait


def test_zero_patience_waits_for_ever() -> None:
    verdict, _ = look(timing.start(0.0), 1e9, rules=timing.Rules(0.0, 60.0, 0.0), missing=["c"])
    assert verdict.wait


def test_an_unarrived_factory_holds_the_expert_back_for_its_grace_once_per_publisher() -> None:
    state = timing.start(0.0)
    verdict, state = look(state, 10.0, pending=[("f1", "mallory")])
    assert verdict.blocking == ["f1"] and verdict.wait
    verdict, state = look(state, 69.0, pending=[("f1", "mallory")])
    assert verdict.blocking == ["f1"]
    verdict, state = look(state, 70.0, pending=[("f1", "mallory"), ("g1", "bob")])
    assert verdict.gave_up_on == [("mallory", "f1")] and verdict.blocking == ["g1"]
    verdict, state = look(state, 71.0, pending=[("f2", "mallory"), ("g1", "bob")])  # a new one: no new grace
    assert verdict.blocking == ["g1"] and verdict.gave_up_on == []


def test_the_deadline_ends_every_wait() -> None:
    rules = timing.Rules(patience_s=0.0, grace_s=1e9, deadline_s=100.0)
    state = timing.start(0.0)
    verdict, state = look(state, 100.0, rules, missing=["c"], pending=[("f", "p")])
    assert verdict.wait
    verdict, _ = look(state, 100.5, rules, missing=["c"], pending=[("f", "p")])
    assert verdict.out_of_time and verdict.awaited == ["c"] and not verdict.wait
