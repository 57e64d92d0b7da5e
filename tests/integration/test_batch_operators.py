"""The batch operators and the batch trigger against the emulator over loopback.

The operators run their blocking path (``deferrable=False``) in this process with a minimal task context (an
XCom dict); the trigger is serialized and rebuilt as a triggerer would, then driven like one. The DAG-level
tests (tests/dag_runs/test_batch_dag.py) run the same operators deferred, through real Airflow.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow < 3.2
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined,unused-ignore]

from airflow_provider_runwatch.core.ratelimit import clear_budgets
from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks.gumloop import GumloopHook
from airflow_provider_runwatch.hooks.puffle import PuffleHook
from airflow_provider_runwatch.operators.base import RunFailedError
from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowBatchOperator
from airflow_provider_runwatch.operators.gumloop import GumloopSessionBatchOperator
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatBatchOperator
from airflow_provider_runwatch.triggers.batch import RunBatchTrigger
from airflow_provider_runwatch.triggers.gumloop import GumloopSessionBatchTrigger
from airflow_provider_runwatch.triggers.puffle import PuffleChatBatchTrigger
from tests.conftest import SECRET_KEY
from tests.helpers import cancel_requests, first_event, rehydrate


class FakeTI:
    """What the batch operators use of a task instance: XCom in a dict, the ids a session id derives from."""

    def __init__(self, task_id: str) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index, self.try_number = "batch_it", task_id, "r1", -1, 1
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))  # what an XCom backend keeps

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        return self.xcoms.get(key)


def run_blocking(op: Any) -> tuple[Any, FakeTI]:
    ti = FakeTI(op.task_id)
    context: Any = {"ti": ti}  # the little of a task context the operator reads
    return op.execute(context), ti


def run_deferred(make: Any, ti: FakeTI, store: Any = None) -> tuple[Any, list[Any]]:
    """Run a batch task to its end as Airflow would: each deferral's trigger serialized, rebuilt and driven like
    a triggerer's, its event handed to ``execute_complete`` of a fresh operator (XComs kept in ``ti``).
    Returns the result and the deferrals."""
    context: Any = {"ti": ti} if store is None else {"ti": ti, "task_state_store": store}
    deferrals: list[Any] = []
    event: Any = None
    while True:
        op = make()
        try:
            result = op.execute_complete(context, event) if deferrals else op.execute(context)
        except TaskDeferred as deferred:
            deferrals.append(deferred)
            event = asyncio.run(first_event(rehydrate(deferred.trigger)))
            continue
        for made in deferrals:
            assert SECRET_KEY not in json.dumps(made.trigger.serialize()[1])
        return result, deferrals


def use_gm_key(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> str:
    """``gloriamundo_default`` on a key of its own (the emulator counts executions per key), its client budget
    counted over ``rate_window_seconds`` (default 6 s instead of a minute: polls 0.12 s apart, not 1.2 s, a short
    test below the emulator's 60 polls a minute for the few polls it sends)."""
    key = f"{SECRET_KEY}_gm_{time.time_ns()}"
    conn = {
        "conn_type": "gloriamundo",
        "host": emulator.gloriamundo_url,
        "password": key,
        "extra": json.dumps({"rate_window_seconds": 6, **extra}),
    }
    monkeypatch.setenv("AIRFLOW_CONN_GLORIAMUNDO_DEFAULT", json.dumps(conn))
    clear_budgets()
    return key


@pytest.fixture
def gm_own_key(runwatch_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    yield use_gm_key(runwatch_emulator, monkeypatch)
    clear_budgets()


def gumloop_env(emulator: EmulatorServer, key: str, **extra: Any) -> dict[str, str]:
    conn = {"conn_type": "gumloop", "host": emulator.gumloop_url, "login": "emulator-user", "password": key}
    if extra:
        conn["extra"] = json.dumps(extra)
    return {"AIRFLOW_CONN_GUMLOOP_DEFAULT": json.dumps(conn)}


@pytest.fixture
def free_plan(runwatch_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """``gumloop_default`` on a Free-plan key of its own (5 unfinished agent runs), holding SECRET_KEY."""
    key = f"gl_free_{SECRET_KEY}_{time.time_ns()}"
    for name, value in gumloop_env(runwatch_emulator, key).items():
        monkeypatch.setenv(name, value)
    return key


@pytest.fixture
def gloriamundo_limited(runwatch_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """GloriaMundo at 3 executions per 2 s window (emulator) on a key of its own; the limits are restored."""
    conn = {
        "conn_type": "gloriamundo",
        "host": runwatch_emulator.gloriamundo_url,
        "password": f"{SECRET_KEY}_gm_{time.time_ns()}",
        # The client's own pace is above the emulator's limit on purpose: the 429s must be admitted.
        "extra": json.dumps({"rate_window_seconds": 2, "executions_per_minute": 20, "polls_per_minute": 40}),
    }
    monkeypatch.setenv("AIRFLOW_CONN_GLORIAMUNDO_DEFAULT", json.dumps(conn))
    limits = f"{runwatch_emulator.url}/_emulator/gloriamundo/limits"
    with httpx.Client(trust_env=False, timeout=10) as http:
        before = http.get(limits).json()
        http.put(limits, json={"window_seconds": 2, "executions": 3, "polls": 40}).raise_for_status()
        clear_budgets()
        try:
            yield
        finally:
            http.put(limits, json={k: before[k] for k in ("window_seconds", "executions", "polls")})
            clear_budgets()


def refused_starts(emulator: EmulatorServer, vendor: str, path_part: str) -> list[dict[str, Any]]:
    return [e for e in emulator.requests(vendor=vendor, method="POST") if path_part in e["path"] and e["status"] == 429]


# -- the Gumloop Free plan biting ---------------------------------------------------------------------------------
def test_gumloop_free_plan_refusals_are_admitted(runwatch_emulator: EmulatorServer, free_plan: str) -> None:
    agent = f"agent_free_{time.time_ns()}"
    inputs = [f"account {i} [emulator: seconds=1.5]" for i in range(12)]
    op = GumloopSessionBatchOperator(
        task_id="free", agent_id=agent, inputs=inputs, max_concurrency=8, deferrable=False, poll_interval=1
    )
    answers, ti = run_blocking(op)
    assert len(answers) == 12 and all(f"account {i}" in answers[i] for i in range(12)), answers
    runs = ti.xcoms["runs"]
    assert [r["index"] for r in runs] == list(range(12))
    assert {r["state"] for r in runs} == {"succeeded"}
    assert len({r["run_id"] for r in runs}) == 12
    refused = refused_starts(runwatch_emulator, "gumloop", f"/agents/{agent}/sessions")
    assert refused, "8 at once on a Free plan (5): some starts must have been refused"
    # Every item started exactly once: a refused start (429) created nothing, and nothing was started twice.
    accepted = [
        e
        for e in runwatch_emulator.requests(vendor="gumloop", method="POST")
        if f"/agents/{agent}/sessions" in e["path"] and e["status"] < 300
    ]
    assert len(accepted) == 12
    assert SECRET_KEY not in json.dumps(ti.xcoms)


def test_gumloop_max_concurrency_defaults_to_the_connection_extra(
    runwatch_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in gumloop_env(runwatch_emulator, SECRET_KEY, max_concurrent_runs="25").items():
        monkeypatch.setenv(name, value)
    op = GumloopSessionBatchOperator(task_id="t", agent_id="a", inputs=["x"])
    assert op.concurrency() == 25
    for name, value in gumloop_env(runwatch_emulator, SECRET_KEY, max_concurrent_runs="lots").items():
        monkeypatch.setenv(name, value)
    bad = GumloopSessionBatchOperator(task_id="t", agent_id="a", inputs=["x"])
    with pytest.raises(Exception, match="extra 'max_concurrent_runs' must be a whole number"):
        bad.concurrency()


# -- GloriaMundo's executions limit biting ------------------------------------------------------------------------
def test_gloriamundo_executions_limit_is_admitted(runwatch_emulator: EmulatorServer, gloriamundo_limited: None) -> None:
    workflow = f"wf_batch_{time.time_ns()}"
    inputs = [{"account": f"a{i} [emulator: polls=1]"} for i in range(6)]
    op = GloriaMundoWorkflowBatchOperator(
        task_id="gm", workflow_id=workflow, inputs=inputs, max_concurrency=6, deferrable=False, poll_interval=0.3
    )
    answers, ti = run_blocking(op)
    assert [a["input"] for a in answers] == [{"account": f"a{i}"} for i in range(6)]
    assert all("cost" in r for r in ti.xcoms["runs"]), ti.xcoms["runs"]
    executes = [e for e in runwatch_emulator.requests(vendor="gloriamundo", method="POST") if workflow in e["path"]]
    assert [e["status"] for e in executes].count(200) == 6
    assert 429 in [e["status"] for e in executes], "6 starts at 3 per window: the limit must have bitten"


def gm_batch(threshold: float, workflow: str, count: int) -> Any:
    """A factory of deferrable GloriaMundo batches whose ``admission_sleep_below`` is ``threshold`` (set on a
    subclass, as a DAG author would)."""
    cls = type("PacedBatch", (GloriaMundoWorkflowBatchOperator,), {"admission_sleep_below": threshold})
    inputs = [{"account": f"a{i} [emulator: polls=1]"} for i in range(count)]
    return lambda: cls(
        task_id="gm", workflow_id=workflow, inputs=inputs, max_concurrency=count, deferrable=True, poll_interval=0.2
    )


def test_gloriamundo_batch_polls_the_poll_url_each_start_returned(
    runwatch_emulator: EmulatorServer, gm_own_key: str
) -> None:
    """Deferred, through rebuilt triggers: each run's poll target travels with it (plan, trigger kwargs) and every
    poll and the result fetch go where its execute answer said, as the single-run trigger's do."""
    ti = FakeTI("gm")
    answers, deferrals = run_deferred(gm_batch(0.5, f"wf_poll_url_{time.time_ns()}", 3), ti)
    assert [a["input"] for a in answers] == [{"account": f"a{i}"} for i in range(3)]
    run_ids = [r["run_id"] for r in ti.xcoms["runs"]]
    kwargs_runs = deferrals[0].trigger.serialize()[1]["runs"]
    assert [row[:2] for row in kwargs_runs] == [[i, r] for i, r in enumerate(run_ids)]
    assert [row[2] for row in kwargs_runs] == [f"/api/v1/runs/{r}/status" for r in run_ids], "the execute answers"
    for run_id, (_, _, poll_url) in zip(run_ids, kwargs_runs, strict=True):
        gets = runwatch_emulator.requests(vendor="gloriamundo", method="GET", run_id=run_id)
        assert len(gets) >= 2 and {g["path"] for g in gets} == {poll_url}, "polls and the result fetch alike"


@pytest.mark.parametrize(
    ("threshold", "deferred_for_the_budget"),
    [
        pytest.param(1.0, True, id="longer-than-the-threshold-defers"),
        pytest.param(4.0, False, id="shorter-is-slept"),
    ],
)
def test_a_start_waiting_for_the_key_budget_longer_than_the_threshold_defers(
    runwatch_emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    threshold: float,
    deferred_for_the_budget: bool,
) -> None:
    """2 executions per 3 s for the key (client budget): the third start waits about 3 s. Above the threshold the
    batch defers with the two it started and a wake-up time at the budget's slot (the worker never sleeps for it);
    below it the worker sleeps the short wait and starts all four before deferring. Either way every item runs
    once and the emulator never refused an execute."""
    use_gm_key(runwatch_emulator, monkeypatch, rate_window_seconds=3, executions_per_minute=2)
    workflow = f"wf_paced_{time.time_ns()}"
    ti = FakeTI("gm")
    answers, deferrals = run_deferred(gm_batch(threshold, workflow, 4), ti)
    clear_budgets()
    assert [a["input"] for a in answers] == [{"account": f"a{i}"} for i in range(4)]
    first = deferrals[0].trigger.serialize()[1]
    if deferred_for_the_budget:
        assert (len(first["runs"]), first["waiting"]) == (2, 2), "the budget's burst started, the rest wait"
        assert first["not_before"] is not None, "the trigger wakes the task when the budget has a slot"
    else:
        assert (len(first["runs"]), first["waiting"], first["not_before"]) == (4, 0, None), "slept, then started"
    executes = [e for e in runwatch_emulator.requests(vendor="gloriamundo", method="POST") if workflow in e["path"]]
    assert [e["status"] for e in executes] == [200] * 4, "each item started once, none refused"
    starts = sorted(e["ts"] for e in executes)
    assert starts[2] - starts[0] >= 2.5, "the third start kept to the key's budget"


# -- max_failed both ways -----------------------------------------------------------------------------------------
MIXED = [
    "ok 0 [emulator: polls=1]",
    "bad 1 [emulator: polls=1 outcome=failed error='tool broke']",
    "ok 2 [emulator: polls=0]",
]


def test_within_max_failed_the_task_succeeds_with_none_for_the_failure(secret_connections: dict[str, str]) -> None:
    op = PuffleAgentChatBatchOperator(
        task_id="p", messages=MIXED, max_failed=1, max_concurrency=2, deferrable=False, poll_interval=0.2
    )
    answers, ti = run_blocking(op)
    assert answers[1] is None and "ok 0" in answers[0] and "ok 2" in answers[2]
    failed = ti.xcoms["runs"][1]
    assert (failed["state"], failed["error"]) == ("failed", "tool broke")


def test_over_max_failed_the_task_fails_after_every_item_ran(secret_connections: dict[str, str]) -> None:
    op = PuffleAgentChatBatchOperator(
        task_id="p", messages=MIXED, max_concurrency=1, deferrable=False, poll_interval=0.2
    )
    ti = FakeTI("p")
    context: Any = {"ti": ti}  # the little of a task context the operator reads
    with pytest.raises(RunFailedError) as raised:
        op.execute(context)
    message = str(raised.value)
    assert "1 of 3 items did not succeed (max_failed=0)" in message
    failed_run = ti.xcoms["runs"][1]["run_id"]
    assert failed_run in message and "tool broke" in message
    assert [r["state"] for r in ti.xcoms["runs"]] == ["succeeded", "failed", "succeeded"], "every item ran"
    assert SECRET_KEY not in message


@pytest.mark.parametrize(("every", "few"), [(30.0, True), (0.0, False)])
def test_blocking_progress_lines_are_throttled(
    secret_connections: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    every: float,
    few: bool,
) -> None:
    """deferrable=False ends a round per ended run: one progress line per BLOCKING_PROGRESS_EVERY, not per run."""
    from airflow_provider_runwatch.operators import batch

    monkeypatch.setattr(batch, "BLOCKING_PROGRESS_EVERY", every)
    messages = [f"item {i} [emulator: polls={i % 3}]" for i in range(6)]
    op = PuffleAgentChatBatchOperator(
        task_id="p", messages=messages, max_concurrency=2, deferrable=False, poll_interval=0.2
    )
    answers, _ = run_blocking(op)
    assert all(f"item {i}" in answers[i] for i in range(6)), answers
    lines = [line for line in capsys.readouterr().out.splitlines() if "Puffle batch: 6 items:" in line]
    if few:
        assert len(lines) == 1, lines  # the whole batch took well under 30 s
    else:
        assert len(lines) >= 3, lines  # 6 items, 2 at a time: at least 3 rounds, each with its line


def test_bad_inputs_are_refused_before_anything_starts(secret_connections: dict[str, str]) -> None:
    op = PuffleAgentChatBatchOperator(task_id="p", messages=["fine", ""], deferrable=False)
    with pytest.raises(Exception, match=r"messages\[1\] must be a non-empty string"):
        run_blocking(op)
    with pytest.raises(Exception, match="`messages` must be a list"):
        run_blocking(PuffleAgentChatBatchOperator(task_id="p", messages="['a', 'b']", deferrable=False))  # type: ignore[arg-type]
    with pytest.raises(Exception, match="max_failed must be a whole number"):
        PuffleAgentChatBatchOperator(task_id="p", messages=["a"], max_failed=-1)


# -- the trigger --------------------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_trigger_event_is_small_and_coalesced(secret_connections: dict[str, str]) -> None:
    hook = PuffleHook()
    texts = ["quick 0 [emulator: polls=0]", "quick 1 [emulator: polls=0]", "slow 2 [emulator: polls=never]"]
    runs = [[i, hook.start_chat(f"SECRET-LOOKING-INPUT {t}").runId] for i, t in enumerate(texts)]
    trigger = PuffleChatBatchTrigger(conn_id="puffle_default", runs=runs, poll_interval=0.2, concurrency=8, waiting=5)
    rebuilt = rehydrate(trigger)
    assert isinstance(rebuilt, RunBatchTrigger) and rebuilt.runs == [(i, r, None) for i, r in runs]
    assert trigger.serialize()[1]["runs"] == runs, "no poll_url where the start gave none: the kwargs stay short"
    event = await first_event(rebuilt)
    # 8 // 4 = 2 slots worth a return: the two quick runs, together; the slow one is still going.
    assert event["kind"] == "batch" and event["message"] == ""
    assert sorted(e["index"] for e in event["ended"]) == [0, 1]
    assert all(set(e) == {"index", "run_id", "state", "vendor_state", "error"} for e in event["ended"])
    encoded = json.dumps(event) + json.dumps(trigger.serialize())
    assert SECRET_KEY not in encoded and "SECRET-LOOKING-INPUT" not in encoded and "quick" not in encoded


def test_trigger_kwargs_stay_bounded_for_10000_items() -> None:
    """The kwargs hold the running items only (at most max_concurrency), whatever the batch's size."""
    from airflow.models.trigger import Trigger

    running = [[i, f"sess_airflow_{i:032x}"] for i in range(100)]
    trigger = GumloopSessionBatchTrigger(
        conn_id="gumloop_default", runs=running, poll_interval=3, concurrency=100, waiting=9_900, deadline=time.time()
    )
    _, kwargs = trigger.serialize()
    size = len(Trigger.encrypt_kwargs(kwargs))  # what the triggerer table stores
    assert size < 20_000, size
    biggest = GumloopSessionBatchTrigger(
        conn_id="gumloop_default",
        runs=[[i, f"sess_airflow_{i:032x}"] for i in range(1000)],
        poll_interval=3,
        concurrency=1000,
        waiting=9_000,
    )
    assert len(json.dumps(biggest.serialize()[1])) < 100_000, "1000 running items (the most allowed)"


@pytest.mark.anyio
async def test_trigger_on_kill_cancels_every_gumloop_session(
    runwatch_emulator: EmulatorServer, secret_connections: dict[str, str]
) -> None:
    hook = GumloopHook()
    runs: list[list[Any]] = [
        [i, hook.create_session("agent_batch_kill", f"k{i} [emulator: polls=never]").session.id] for i in range(3)
    ]
    trigger = rehydrate(
        GumloopSessionBatchTrigger(conn_id="gumloop_default", runs=runs, poll_interval=1, concurrency=3)
    )
    await trigger.on_kill()
    for _, session_id in runs:
        assert [c["status"] for c in cancel_requests(runwatch_emulator, str(session_id))] == [200], session_id
        assert runwatch_emulator.run(str(session_id))["cancel_requested_at"] is not None


@pytest.mark.anyio
async def test_trigger_on_kill_names_the_runs_puffle_cannot_cancel(
    secret_connections: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    runs = [[0, "run_aaa"], [1, "run_bbb"]]
    await PuffleChatBatchTrigger(conn_id="puffle_default", runs=runs, poll_interval=1, concurrency=2).on_kill()
    out = capfd.readouterr().out
    assert "Puffle has no API to cancel a chat run: 2 keep running on the vendor's side: run_aaa, run_bbb" in out


@pytest.mark.anyio
async def test_gloriamundo_polls_of_many_runs_are_spread_within_the_key_budget(
    runwatch_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5 polls a second for the key (rate_window_seconds=1): 4 runs polled every 0.05 s must not burst past it."""
    from airflow_provider_runwatch.hooks.gloriamundo import GloriaMundoHook
    from airflow_provider_runwatch.triggers.gloriamundo import GloriaMundoBatchTrigger

    conn = {
        "conn_type": "gloriamundo",
        "host": runwatch_emulator.gloriamundo_url,
        "password": f"{SECRET_KEY}_spread_{time.time_ns()}",
        "extra": json.dumps({"rate_window_seconds": 1, "polls_per_minute": 5}),
    }
    monkeypatch.setenv("AIRFLOW_CONN_GLORIAMUNDO_DEFAULT", json.dumps(conn))
    clear_budgets()
    hook = GloriaMundoHook()
    runs = [[i, hook.execute_workflow("wf_spread", {"q": "x [emulator: polls=3]"}).run_id] for i in range(4)]
    trigger = GloriaMundoBatchTrigger(conn_id="gloriamundo_default", runs=runs, poll_interval=0.05, concurrency=4)
    event = await first_event(rehydrate(trigger))
    assert sorted(e["index"] for e in event["ended"]) == [0, 1, 2, 3]
    ids = {run_id for _, run_id in runs}
    times = sorted(
        e["ts"] for e in runwatch_emulator.requests(vendor="gloriamundo", method="GET") if e["run_id"] in ids
    )
    assert len(times) >= 16
    # Spread evenly (1 s / 5 apart), not in bursts: the server sees them a few milliseconds off the client's slots.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) > 0.15, f"polls of one key {min(gaps):.3f} s apart; the budget spaces them 0.2 s"
    busiest = max(sum(1 for t in times if start <= t < start + 0.95) for start in times)
    assert busiest <= 5, f"{busiest} polls of one key within a second; the budget allows 5"
    clear_budgets()


def test_the_batch_polls_where_the_single_run_path_polls() -> None:
    """One choice of poll target (the adapter's ``with_poll_url``) for both paths: a ``poll_url`` elsewhere on the
    API (a future path) is followed by the batch trigger, the blocking batch and the result fetch, exactly as by
    the single-run trigger and operator; a run without one is polled at the documented path."""
    from airflow_provider_runwatch.core.batch import BatchItem, status_calls
    from airflow_provider_runwatch.core.connection import ConnectionSettings
    from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator
    from airflow_provider_runwatch.triggers.gloriamundo import GloriaMundoBatchTrigger, GloriaMundoRunTrigger
    from airflow_provider_runwatch.vendors.gloriamundo import GLORIAMUNDO

    settings = ConnectionSettings(
        vendor=GLORIAMUNDO, conn_id="g", base_url="https://app.gloriamundo.com/api/v1", api_key="k1234"
    )
    moved_id, plain_id = str(uuid.uuid4()), str(uuid.uuid4())
    moved = f"/api/v1/workflow-runs/{moved_id}/status"
    single_trigger = GloriaMundoRunTrigger(conn_id="g", run_id=moved_id, poll_interval=1, poll_url=moved)
    single_operator = GloriaMundoWorkflowOperator(task_id="one", workflow_id="wf")
    single_operator._poll_url = moved
    single = single_trigger.adapter.status_call(settings, moved_id).request.path
    assert single == single_operator.adapter.result_call(settings, moved_id).request.path
    assert single == f"/workflow-runs/{moved_id}/status"

    batch_trigger = rehydrate(
        GloriaMundoBatchTrigger(conn_id="g", runs=[[0, moved_id, moved], [1, plain_id]], poll_interval=1, concurrency=2)
    )
    calls = status_calls(batch_trigger.adapter, settings, batch_trigger.runs)
    assert calls[0].request.path == single
    assert calls[1].request.path == f"/runs/{plain_id}/status", "no poll_url: the documented path"
    batch_operator = GloriaMundoWorkflowBatchOperator(task_id="many", workflow_id="wf", inputs=[{}])
    item = BatchItem(0, moved_id, "succeeded", poll_url=moved)
    assert batch_operator.item_adapter(item).result_call(settings, moved_id).request.path == single


def test_operator_on_kill_cancels_every_session_still_going(
    runwatch_emulator: EmulatorServer, secret_connections: dict[str, str]
) -> None:
    """The blocking path's kill (SIGTERM, execution_timeout): Airflow calls on_kill on the task mid-batch."""
    from airflow_provider_runwatch.core.batch import BatchPlan

    hook = GumloopHook()
    op = GumloopSessionBatchOperator(task_id="k", agent_id="agent_batch_onkill", inputs=["a", "b", "c"])
    plan = BatchPlan.new(3, max_concurrency=3)
    for item in plan.items[:2]:
        plan.started(
            item, hook.create_session("agent_batch_onkill", f"ok{item.index} [emulator: polls=never]").session.id
        )
    op._plan = plan  # what _advance holds while the batch runs
    op.on_kill()
    for item in plan.items[:2]:
        assert [c["status"] for c in cancel_requests(runwatch_emulator, str(item.run_id))] == [200]


# -- a key the vendor refuses ---------------------------------------------------------------------------------------
AUTH_HINT = "Check the API key in the Password field of connection 'refused'"
REFUSED_KEYS = [
    pytest.param("puffle", "pk_invalid_", 401, id="puffle-401"),
    pytest.param("puffle", "pk_user_", 403, id="puffle-403"),
    pytest.param("gumloop", "gl_invalid_", 401, id="gumloop-401"),
    pytest.param("gloriamundo", "gm_invalid_", 401, id="gloriamundo-401"),
]


def refused_batch(vendor: str, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, key: str, count: int) -> Any:
    """A blocking batch of ``count`` items of ``vendor`` on connection ``refused``, which holds ``key``."""
    url = {"puffle": emulator.puffle_url, "gumloop": emulator.gumloop_url, "gloriamundo": emulator.gloriamundo_url}
    conn = {"conn_type": vendor, "host": url[vendor], "password": key, "login": "emulator-user"}
    monkeypatch.setenv("AIRFLOW_CONN_REFUSED", json.dumps(conn))
    texts = [f"item {i} [emulator: polls=1]" for i in range(count)]
    common: dict[str, Any] = {"task_id": "refused", "conn_id": "refused", "deferrable": False, "poll_interval": 1}
    if vendor == "puffle":
        return PuffleAgentChatBatchOperator(messages=texts, **common)
    if vendor == "gumloop":
        return GumloopSessionBatchOperator(agent_id=f"agent_refused_{time.time_ns()}", inputs=texts, **common)
    return GloriaMundoWorkflowBatchOperator(workflow_id="wf_refused", inputs=[{"q": t} for t in texts], **common)


@pytest.mark.parametrize(("vendor", "prefix", "status"), REFUSED_KEYS)
def test_a_refused_key_stops_the_batch_at_the_first_start_with_one_line(
    runwatch_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, vendor: str, prefix: str, status: int
) -> None:
    """401/403 on a start: one start is sent, not one per item, and the task fails with one line naming the
    connection and the field to fix; every item is reported as not started."""
    posts_before = len(runwatch_emulator.requests(vendor=vendor, method="POST"))
    op = refused_batch(vendor, runwatch_emulator, monkeypatch, f"{prefix}{SECRET_KEY}", 5)
    ti = FakeTI("refused")
    context: Any = {"ti": ti}  # the little of a task context the operator reads
    with pytest.raises(RunFailedError) as raised:
        op.execute(context)
    line = str(raised.value)
    assert "\n" not in line, line
    assert line.startswith(f"{op.vendor_name} batch stopped at item 0, whose start was refused: "), line
    assert f"(HTTP {status})" in line and AUTH_HINT in line
    assert line.endswith("5 of 5 items were not started, 0 had ended."), line
    assert SECRET_KEY not in line and SECRET_KEY not in json.dumps(ti.xcoms)
    runs = ti.xcoms["runs"]
    assert [r["state"] for r in runs] == ["not_started"] * 5
    assert runs[0]["error"].startswith("start refused: ") and "item 0's refused start" in runs[1]["error"]
    sent = runwatch_emulator.requests(vendor=vendor, method="POST")[posts_before:]
    assert [e["status"] for e in sent] == [status], "one start, not one per item"


def test_a_key_refused_mid_batch_keeps_the_ids_of_the_runs_it_started(
    runwatch_emulator: EmulatorServer, secret_connections: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items 0-1 start on a good key, item 2's start is refused (the key was revoked, say): the runs already
    started are reported with their ids, the rest as not started, and the line says a retry reattaches."""
    refused_batch("puffle", runwatch_emulator, monkeypatch, f"pk_invalid_{SECRET_KEY}", 1)  # connection 'refused'

    class RevokedMidBatch(PuffleAgentChatBatchOperator):
        def start_item(self, context: Any, item: Any, value: Any) -> Any:
            if item.index == 2:
                self.conn_id, self._hook = "refused", None  # from now on the key is refused
            return super().start_item(context, item, value)

    messages = [f"revoked {i} [emulator: polls=never]" for i in range(5)]
    op = RevokedMidBatch(task_id="revoked", messages=messages, max_concurrency=5, deferrable=False)
    ti = FakeTI("revoked")
    context: Any = {"ti": ti}  # the little of a task context the operator reads
    with pytest.raises(RunFailedError) as raised:
        op.execute(context)
    line = str(raised.value)
    assert "\n" not in line and AUTH_HINT in line
    assert "3 of 5 items were not started, 0 had ended; 2 started before keep running" in line, line
    runs = ti.xcoms["runs"]
    assert [r["state"] for r in runs] == ["running", "running", "not_started", "not_started", "not_started"]
    assert all(r["run_id"] for r in runs[:2]) and not any(r["run_id"] for r in runs[2:])
