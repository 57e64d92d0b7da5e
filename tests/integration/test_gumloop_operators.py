"""Gumloop operators' own logic against the emulator, with a minimal task context (no metadata database):
retry-safe sessions, approvals, listing windows. The full Airflow path is in tests/dag_runs/test_gumloop_dag.py."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow < 3.2
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined,unused-ignore]

from airflow_provider_runwatch.core.errors import ConflictError
from airflow_provider_runwatch.core.models import RunEvent
from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks.gumloop import GumloopHook
from airflow_provider_runwatch.operators.base import STATE_KEY, RunFailedError
from airflow_provider_runwatch.operators.gumloop import (
    CANCELLED_KEY,
    GENERATION_KEY,
    GumloopAgentOperator,
    GumloopFlowOperator,
    GumloopListSessionsOperator,
    GumloopSessionOperator,
)
from airflow_provider_runwatch.triggers.gumloop import GumloopAgentTrigger
from airflow_provider_runwatch.vendors.gumloop import derive_session_id
from tests.conftest import SECRET_KEY
from tests.helpers import task_context

if TYPE_CHECKING:
    from airflow.sdk import Context


class FakeTI:
    def __init__(self, run_id: str, map_index: int = -1, task_id: str = "review") -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index, self.try_number = (
            "dag_ops",
            task_id,
            run_id,
            map_index,
            1,
        )
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)  # XCom values must serialize
        self.xcoms[key] = value


class FakeStore(dict[str, Any]):
    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


def context(run_id: str, store: FakeStore | None = None, map_index: int = -1, **more: object) -> Context:
    fields: dict[str, object] = {"ti": FakeTI(run_id, map_index), **more}
    if store is not None:
        fields["task_state_store"] = store
    return task_context(**fields)


def ti_of(ctx: Context) -> FakeTI:
    """The fake task instance ``context()`` put in ``ctx`` (where Airflow's type is the real one)."""
    ti = ctx["ti"]
    assert isinstance(ti, FakeTI)
    return ti


def resume_kwargs(deferred: TaskDeferred) -> dict[str, Any]:
    """The keyword arguments a deferral resumes its method with (every deferral here passes some)."""
    assert deferred.kwargs is not None
    return deferred.kwargs


def deferred_run_id(op: Any, ctx: Context) -> str:
    with pytest.raises(TaskDeferred) as info:
        op.execute(ctx)
    run_id: str = resume_kwargs(info.value)["run_id"]
    assert ti_of(ctx).xcoms["run_id"] == run_id
    return run_id


def session_op(text: str, **kw: Any) -> GumloopSessionOperator:
    return GumloopSessionOperator(task_id="review", agent_id="agent_ops", input=text, deferrable=True, **kw)


def test_a_retry_reattaches_to_the_session_instead_of_starting_another(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    ctx = context("manual__retry_1", map_index=2)
    first = deferred_run_id(session_op("Review Acme [emulator: polls=never]"), ctx)
    assert first == derive_session_id("dag_ops", "review", "manual__retry_1", 2)
    # The worker died after deferring; the retry (no task_state_store: Airflow < 3.3) runs execute again.
    second = deferred_run_id(session_op("Review Acme [emulator: polls=never]"), context("manual__retry_1", map_index=2))
    assert second == first
    starts = runwatch_emulator.requests(method="POST", path_prefix="/api/v1/agents/agent_ops/sessions", run_id=first)
    assert [s["status"] for s in starts] == [202, 409], "one session created; the retry got 409 and reattached"
    GumloopHook().cancel_session(first)


def test_a_retry_after_a_failed_session_starts_the_next_derived_one(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    store = FakeStore()
    first = deferred_run_id(session_op("x [emulator: polls=0 outcome=failed]"), context("manual__retry_2", store))
    assert store[GENERATION_KEY] == 0 and store[STATE_KEY] == first
    GumloopHook().get_session(first)  # the session fails
    second = deferred_run_id(session_op("x [emulator: polls=never]"), context("manual__retry_2", store))
    assert second == derive_session_id("dag_ops", "review", "manual__retry_2", -1, generation=1) != first
    assert store[GENERATION_KEY] == 1 and store[STATE_KEY] == second
    # A third try (the second's worker died) reattaches through task_state_store: no new start at all.
    before = len(runwatch_emulator.requests(method="POST", path_prefix="/api/v1/agents/agent_ops/sessions"))
    assert deferred_run_id(session_op("x"), context("manual__retry_2", store)) == second
    assert len(runwatch_emulator.requests(method="POST", path_prefix="/api/v1/agents/agent_ops/sessions")) == before
    GumloopHook().cancel_session(second)


def test_a_session_this_task_cancelled_is_never_reattached(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    store = FakeStore()
    op = session_op("x [emulator: polls=never]")
    first = deferred_run_id(op, context("manual__kill_1", store))
    op.on_kill()  # e.g. execution_timeout on the blocking path: cancel, and remember it
    assert store[CANCELLED_KEY] == first
    assert GumloopHook().get_session(first).session.state == "processing", "the cancel has not settled yet"
    second = deferred_run_id(session_op("x [emulator: polls=never]"), context("manual__kill_1", store))
    assert second != first
    GumloopHook().cancel_session(second)


def test_a_chosen_session_id_always_reattaches(secret_connections: dict[str, str]) -> None:
    chosen = "sess_my_own_id_0001"
    first = deferred_run_id(session_op("x [emulator: polls=never]", session_id=chosen), context("manual__own"))
    again = deferred_run_id(session_op("x", session_id=chosen), context("manual__other_run"))
    assert first == again == chosen
    GumloopHook().cancel_session(chosen)


def paused_event(run_id: str) -> dict[str, Any]:
    return RunEvent(
        status="paused", vendor="Gumloop", run_id=run_id, state="paused", vendor_state="approval_required"
    ).model_dump(mode="json")


def test_approval_required_fails_by_default_with_the_approvals_summarized(secret_connections: dict[str, str]) -> None:
    ctx = context("manual__approval_fail")
    op = session_op("Email [emulator: polls=0 outcome=paused]")
    run_id = deferred_run_id(op, ctx)
    with pytest.raises(RunFailedError) as info:
        op.execute_complete(ctx, paused_event(run_id), run_id)
    message = str(info.value)
    assert f"Gumloop session {run_id} is waiting for a human approval" in message
    assert "1 pending approval: send_email (act_" in message
    assert ti_of(ctx).xcoms["pending_approvals"][0]["tool_name"] == "send_email"
    assert ti_of(ctx).xcoms["run"]["outcome"] == "paused"


def test_approval_required_succeed_hands_on_the_text_so_far(secret_connections: dict[str, str]) -> None:
    ctx = context("manual__approval_ok")
    op = session_op("Email [emulator: polls=0 outcome=paused]", on_approval_required="succeed")
    run_id = deferred_run_id(op, ctx)
    answer = op.execute_complete(ctx, paused_event(run_id), run_id)
    assert answer == "I drafted the summary email and need your approval to send it."
    xcoms = ti_of(ctx).xcoms
    assert xcoms["pending_approvals"][0]["action_request_id"].startswith("act_")
    assert xcoms["run"]["state"] == "paused" and xcoms["messages"][-1]["role"] == "assistant"
    assert SECRET_KEY not in json.dumps(xcoms)


def test_wait_mode_defers_without_stopping_on_pause(secret_connections: dict[str, str]) -> None:
    with pytest.raises(TaskDeferred) as info:
        session_op("x [emulator: polls=never]", on_approval_required="wait").execute(context("manual__wait"))
    assert info.value.trigger.stop_on_paused is False
    GumloopHook().cancel_session(resume_kwargs(info.value)["run_id"])


def test_agent_operator_defers_with_its_identity_override(secret_connections: dict[str, str]) -> None:
    op = GumloopAgentOperator(
        task_id="ask", agent_id="gummie_ops", message="hi [emulator: polls=0]", user_id="usr_9", deferrable=True
    )
    with pytest.raises(TaskDeferred) as info:
        op.execute(context("manual__agent"))
    trigger = info.value.trigger
    assert isinstance(trigger, GumloopAgentTrigger) and trigger.serialize()[1]["user_id"] == "usr_9"
    assert op.adapter.validate_run_id(resume_kwargs(info.value)["run_id"])


def test_flow_operator_pushes_run_url_before_waiting_and_again_on_a_reattaching_retry(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    store = FakeStore()
    ctx = context("manual__flow", store)
    op = GumloopFlowOperator(
        task_id="flow", flow_id="flow_ops", inputs={"q": "x [emulator: polls=never]"}, deferrable=True
    )
    run_id = deferred_run_id(op, ctx)
    url = f"https://www.gumloop.com/pipeline?run_id={run_id}&workbook_id=flow_ops"
    assert ti_of(ctx).xcoms["run_url"] == url
    # A retry starts with its XCom cleared; Gumloop gave the URL only at the start: it comes from the store.
    retry = context("manual__flow", store)
    assert deferred_run_id(op, retry) == run_id
    assert ti_of(retry).xcoms["run_url"] == url
    assert len(runwatch_emulator.requests(method="POST", path_prefix="/api/v1/start_pipeline", run_id=run_id)) == 1
    GumloopHook().kill_pipeline(run_id)


def test_list_operator_window_filters_and_bound(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    everything = GumloopListSessionsOperator(task_id="all", agent_id="agent_window", page_size=10).execute(context("r"))
    created = [datetime.fromisoformat(s["created_at"].replace("Z", "+00:00")) for s in everything]
    assert len(everything) >= 45 and created == sorted(created, reverse=True)
    newest = created[0]
    start, end = newest - timedelta(hours=30), newest - timedelta(hours=6)
    runwatch_emulator.clear_requests()
    window = GumloopListSessionsOperator(
        task_id="window",
        agent_id="agent_window",
        page_size=5,
        created_after=start.isoformat(),
        created_before=end.isoformat(),
    ).execute(context("r"))
    assert window and all(start <= datetime.fromisoformat(s["created_at"].replace("Z", "+00:00")) < end for s in window)
    assert len(window) == sum(1 for c in created if start <= c < end)
    pages = runwatch_emulator.requests(method="GET", path_prefix="/api/v1/agents/agent_window/sessions")
    assert 3 <= len(pages) < 10, "paging stops once the sessions are older than the window"
    bounded = GumloopListSessionsOperator(
        task_id="b", agent_id="agent_window", state="completed", type="api", max_sessions=3, page_size=2
    ).execute(context("r"))
    assert len(bounded) == 3 and all(s["state"] == "completed" and s["type"] == "api" for s in bounded)
    assert datetime.now(timezone.utc) > newest


def test_agent_retry_watches_a_continued_turn_that_is_still_running(secret_connections: dict[str, str]) -> None:
    hook = GumloopHook()
    first = hook.start_agent("gummie_ops", "first [emulator: polls=0]").interaction_id
    hook.agent_status(first)
    op = GumloopAgentOperator(
        task_id="ask",
        agent_id="gummie_ops",
        message="more [emulator: polls=never]",
        interaction_id=first,
        deferrable=True,
    )
    assert deferred_run_id(op, context("manual__agent_retry")) == first
    retry_ctx = context("manual__agent_retry")
    ti_of(retry_ctx).try_number = 2
    assert deferred_run_id(op, retry_ctx) == first, "409 on a retry: watch the running turn"
    with pytest.raises(ConflictError, match="interaction_not_in_terminal_state"):
        op.execute(context("manual__agent_retry"))  # a first try does not guess
