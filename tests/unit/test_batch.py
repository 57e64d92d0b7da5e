"""The batch plan (core/batch.py): what to start, when to resume, how a batch ends. Pure: no I/O, no clock."""

from __future__ import annotations

import json
import logging

import pytest

from airflow_provider_runwatch.core.admission import Refusal
from airflow_provider_runwatch.core.batch import (
    MAX_CONCURRENCY,
    BatchPlan,
    BatchWatch,
    ResumeRule,
    check_concurrency,
    pollers_for,
    ref_rows,
    run_refs,
)
from airflow_provider_runwatch.core.errors import ConfigurationError
from airflow_provider_runwatch.core.models import RunState, RunStatus
from airflow_provider_runwatch.core.polling import WaitOptions

REFUSED = Refusal("Gumloop", "POST /agents/{agent_id}/sessions", "Agent concurrency limit reached", None)
LOG = logging.getLogger("test")


def start(plan: BatchPlan, now: float = 0.0) -> list[int]:
    started = plan.to_start(now)
    for item in started:
        plan.started(item, f"run_{item.index}")
    return [item.index for item in started]


def test_starts_in_input_order_up_to_the_limit() -> None:
    plan = BatchPlan.new(12, max_concurrency=8)
    assert start(plan) == list(range(8))
    assert start(plan) == [], "no slot is free until a run ends"
    plan.ended(3, "succeeded")
    plan.ended(5, "failed", "tool broke")
    assert start(plan) == [8, 9]
    assert plan.describe() == "12 items: 8 running, 2 pending, 1 succeeded, 1 failed"


def test_a_refusal_holds_every_start_back_until_its_wake_up_time() -> None:
    plan = BatchPlan.new(12, max_concurrency=8)
    plan.started(plan.items[0], "run_0")
    delay = plan.refused(REFUSED, now=100.0)
    assert 2.5 <= delay <= 5.0, "Gumloop's refusal has no Retry-After: the backoff's first step"
    assert plan.to_start(100.0 + delay - 0.01) == []
    assert [i.index for i in plan.to_start(100.0 + delay)] == list(range(1, 8))
    second = plan.refused(REFUSED, now=200.0)
    assert 5.0 <= second <= 10.0, "refusals in a row back off further"
    plan.started(plan.items[1], "run_1")
    assert (plan.refusals, plan.not_before) == (0, None), "an accepted start resets the backoff"


def test_retry_after_wins() -> None:
    plan = BatchPlan.new(3, max_concurrency=3)
    delay = plan.refused(Refusal("Puffle", "POST /api/agent/chat", "busy", 7.0), now=0.0)
    assert 7.0 <= delay <= 7.7


@pytest.mark.parametrize(
    ("concurrency", "waiting", "ended", "due"),
    [
        (8, 4, 1, False),  # one free slot of 8 is not worth a return to the worker
        (8, 4, 2, True),  # 8 // 4 = 2 slots free
        (100, 500, 24, False),
        (100, 500, 25, True),
        (100, 3, 3, True),  # fewer waiting than a quarter of the slots: when all of them can start
        (3, 10, 1, True),  # max(1, 3 // 4) = 1
    ],
)
def test_resume_is_coalesced(concurrency: int, waiting: int, ended: int, due: bool) -> None:
    rule = ResumeRule(concurrency, waiting)
    assert rule.due(ended=ended, still_running=concurrency - ended, now=0.0) is due


def test_the_blocking_rule_starts_as_soon_as_one_slot_is_free() -> None:
    rule = ResumeRule(100, waiting=500, coalesce=False)
    assert rule.due(ended=0, still_running=100, now=0.0) is False
    assert rule.due(ended=1, still_running=99, now=0.0) is True
    assert ResumeRule(100, waiting=500).due(ended=1, still_running=99, now=0.0) is False, "deferred: coalesced"
    assert ResumeRule(8, waiting=0, coalesce=False).due(ended=7, still_running=1, now=0.0) is False


def test_resume_when_all_ended_and_never_while_runs_go_with_nothing_to_start() -> None:
    assert ResumeRule(8, waiting=0).due(ended=7, still_running=1, now=0.0) is False
    assert ResumeRule(8, waiting=0).due(ended=8, still_running=0, now=0.0) is True
    assert ResumeRule(8, waiting=5).due(ended=8, still_running=0, now=0.0) is True


def test_resume_after_a_refusal_waits_for_its_wake_up_time() -> None:
    rule = ResumeRule(8, waiting=7, free=3, not_before=50.0)
    assert rule.due(ended=0, still_running=5, now=49.0) is False
    assert rule.wake_at(49.0) == 50.0
    assert rule.due(ended=0, still_running=5, now=50.0) is True, "slots were left free: try again"
    assert rule.due(ended=5, still_running=0, now=49.0) is False, "nothing may start before then"


def test_failures_and_the_table() -> None:
    plan = BatchPlan.new(4, max_concurrency=4, max_failed=1)
    start(plan)
    plan.ended(0, "succeeded")
    plan.ended(1, "failed", "x" * 500)
    assert not plan.too_many_failed
    plan.ended(2, "timeout", "deadline passed")
    plan.ended(3, "succeeded")
    assert plan.done and plan.too_many_failed
    table = plan.failure_table()
    assert "run_1" in table and "run_2" in table and "run_0" not in table
    assert len(plan.items[1].error or "") <= 200, "errors are cut short"
    assert max(len(line) for line in table.splitlines()) < 200


def test_failure_table_is_bounded() -> None:
    plan = BatchPlan.new(500, max_concurrency=500)
    start(plan)
    for item in plan.items:
        plan.ended(item.index, "failed", "boom")
    table = plan.failure_table()
    assert len(table.splitlines()) == 1 + 50 + 1 and "and 450 more" in table


def test_start_failure_counts_as_failed_and_is_never_restarted() -> None:
    plan = BatchPlan.new(2, max_concurrency=2)
    plan.start_failed(plan.items[0], "HTTP 400: bad input")
    assert plan.items[0].failed and plan.items[0].error == "start failed: HTTP 400: bad input"
    assert [i.index for i in plan.to_start(0.0)] == [1]


def test_events_about_other_runs_are_ignored() -> None:
    plan = BatchPlan.new(2, max_concurrency=2)
    start(plan)
    changed = plan.apply_events(
        [
            {"index": 0, "run_id": "run_0", "state": "succeeded"},
            {"index": 1, "run_id": "someone_else", "state": "failed"},
            {"index": 7, "run_id": "run_7", "state": "failed"},
        ]
    )
    assert [item.index for item in changed] == [0]
    assert plan.items[1].state == "running"


def test_round_trip_and_size_of_10000_items() -> None:
    plan = BatchPlan.new(10_000, max_concurrency=100, max_failed=3)
    for item in plan.items:
        plan.started(item, f"sess_airflow_{item.index:032x}")
        plan.ended(item.index, "succeeded", usage={"usage": {"credit_cost": 3}})
    encoded = json.dumps(plan.to_json())
    assert len(encoded) < 150 * 10_000, "about 100 bytes an item (a 45-character id, a small usage dict)"
    again = BatchPlan.from_json(json.loads(encoded))
    assert again == plan


def test_concurrency_is_validated() -> None:
    assert check_concurrency("25") == 25
    for bad in (0, -1, 2.5, "many", True, MAX_CONCURRENCY + 1, None):
        with pytest.raises(ConfigurationError, match="max_concurrency must be a whole number"):
            check_concurrency(bad)


def status(run_id: str, state: RunState) -> RunStatus:
    return RunStatus(vendor="Puffle", run_id=run_id, state=state, vendor_state=state.value)


def test_watch_polls_each_run_and_returns_when_the_rule_holds() -> None:
    now = [0.0]
    options = WaitOptions(poll_interval=2.0)
    pollers = pollers_for([(i, f"run_{i}") for i in range(4)], "Puffle", "chat run", options, LOG)
    watch = BatchWatch(pollers, ResumeRule(4, waiting=10), lambda: now[0])
    polls = 0
    finishing = {"run_1", "run_2"}
    while not watch.due():
        when, _ = watch.next_due() or (None, None)
        assert when is not None
        now[0] = max(now[0], when)
        index = watch.take()
        poller = watch.pollers[index]
        state = RunState.SUCCEEDED if poller.run_id in finishing and now[0] > 3 else RunState.RUNNING
        watch.polled(index, poller.after_status(status(poller.run_id, state)))
        polls += 1
    # 4 // 4 = 1: the first run to end is a worthwhile slot; the others are not polled further.
    assert len(watch.ended) == 1 and watch.ended[0]["run_id"] in finishing
    assert watch.ended[0]["state"] == "succeeded"
    assert set(watch.ended[0]) == {"index", "run_id", "state", "vendor_state", "error"}
    assert polls < 20


def test_one_watch_keeps_its_runs_schedule_across_rounds() -> None:
    """The blocking path's watch: runs started later join it, ended ones leave it, and a run still going keeps
    its place in the schedule (not polled again at once because others were added)."""
    now = [0.0]
    options = WaitOptions(poll_interval=2.0)
    watch = BatchWatch({}, ResumeRule(2, waiting=2, coalesce=False), lambda: now[0])
    watch.add(pollers_for([(0, "run_0"), (1, "run_1")], "Puffle", "chat run", options, LOG))
    assert watch.still_running == 2 and not watch.due()
    first = watch.take()
    other = 1 - first
    now[0] = 1.0
    watch.polled(first, watch.pollers[first].after_status(status(f"run_{first}", RunState.SUCCEEDED)))
    assert watch.due()
    ended = watch.drain()
    assert [item["run_id"] for item in ended] == [f"run_{first}"]
    assert sorted(watch.pollers) == [other] and watch.ended == [] and watch.drain() == []
    scheduled = watch.next_due()
    assert scheduled is not None and scheduled[1] == other
    watch.rule = ResumeRule(2, waiting=1, coalesce=False)
    watch.add(pollers_for([(2, "run_2")], "Puffle", "chat run", options, LOG))
    assert sorted(watch.pollers) == [other, 2] and not watch.due()
    due = sorted(watch._queue)
    assert [index for _, index in due].count(other) == 1, "the run still going is scheduled once"
    assert all(1.0 <= when <= 3.0 for when, index in due if index == 2), "the new run: within one interval"


def test_a_new_try_restarts_only_what_did_not_succeed() -> None:
    plan = BatchPlan.new(3, max_concurrency=3)
    start(plan)
    plan.ended(0, "succeeded")
    plan.ended(1, "failed", "tool broke")
    plan.refused(REFUSED, now=0.0)
    again = plan.restart_failed()
    assert [item.index for item in again] == [1]
    assert [item.state for item in plan.items] == ["succeeded", "pending", "running"]
    assert plan.items[1].attempts == 1, "the next start of item 1 is its second run"
    assert plan.not_before is None


def test_each_item_keeps_where_its_start_said_to_poll() -> None:
    plan = BatchPlan.new(3, max_concurrency=3)
    plan.started(plan.items[0], "run_0", "/api/v1/runs/run_0/status")
    plan.started(plan.items[1], "run_1")
    assert plan.running_refs() == [(0, "run_0", "/api/v1/runs/run_0/status"), (1, "run_1", None)]
    rows = ref_rows(plan.running_refs())
    assert rows == [[0, "run_0", "/api/v1/runs/run_0/status"], [1, "run_1"]], "no poll_url: the row stays short"
    assert run_refs(rows) == plan.running_refs()
    assert BatchPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    assert plan.items[1].to_json() == [1, "run_1", "running", None, 1, None], "the row of 0.1, unchanged"


def test_no_hand_back_before_the_floor_whatever_ended() -> None:
    """The guard against apache/airflow#67287: the trigger's event never comes sooner than ``earliest``; runs
    that end meanwhile are collected, and the rule wakes the trigger at ``earliest`` when nothing else will."""
    rule = ResumeRule(8, waiting=4, free=2, not_before=3.0, earliest=10.0)
    assert rule.due(ended=6, still_running=0, now=9.9) is False, "all ended, the refusal's wait over: still held"
    assert rule.wake_at(1.0) == 3.0 and rule.wake_at(5.0) == 10.0
    assert rule.due(ended=6, still_running=0, now=10.0) is True
    assert rule.wake_at(10.0) is None
    done = ResumeRule(8, waiting=0, earliest=10.0)
    assert done.due(ended=8, still_running=0, now=2.0) is False and done.wake_at(2.0) == 10.0
    assert done.due(ended=8, still_running=0, now=10.0) is True
