"""``on_approval_required="airflow"`` against the emulator over real HTTP, both ways: the pending approvals become
an Airflow human-in-the-loop request (the message the task sends its supervisor, as ``HITLOperator`` does), and
an answer becomes ``POST /sessions/{id}/approvals``, round after round. Airflow's side of the channel is a
recording stand-in here (no metadata database); tests/e2e/test_e2e_approvals.py runs the real deployment."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pytest

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow < 3.2
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined,unused-ignore]

from airflow.sdk.api.datamodels._generated import HITLDetailResponse
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.comms import CreateHITLDetailPayload, GetHITLDetailResponse

from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks.gumloop import GumloopHook
from airflow_provider_runwatch.operators.base import RunFailedError
from airflow_provider_runwatch.operators.gumloop import GumloopSessionOperator
from airflow_provider_runwatch.sensors.gumloop import GumloopSessionSensor
from airflow_provider_runwatch.triggers.gumloop import GumloopSessionTrigger
from airflow_provider_runwatch.triggers.gumloop_approvals import GumloopApprovalTrigger
from tests.conftest import SECRET_KEY
from tests.integration.test_gumloop_operators import FakeStore, context, resume_kwargs, ti_of

if TYPE_CHECKING:
    from airflow.sdk import Context


class FakeSupervisor:
    """Airflow's side of the task's channel: records the request, answers reads with ``response``."""

    def __init__(self) -> None:
        self.requests: list[CreateHITLDetailPayload] = []
        self.response = HITLDetailResponse(response_received=False, responded_at=None, chosen_options=None)

    def send(self, msg: Any) -> Any:
        if isinstance(msg, CreateHITLDetailPayload):
            self.requests.append(msg)
            return None
        if isinstance(msg, GetHITLDetailResponse):
            return self.response
        raise AssertionError(f"unexpected message {type(msg).__name__}")


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch) -> FakeSupervisor:
    fake = FakeSupervisor()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", fake, raising=False)
    return fake


def hitl_context(run_id: str, store: FakeStore | None = None) -> Context:
    return context(
        run_id, store, task_instance=type("TI", (), {"id": uuid.UUID("0190e0a0-0000-7000-8000-000000000001")})()
    )


def answered(option: str, user: dict[str, str] | None = None) -> dict[str, Any]:
    """The event Airflow resumes the task with (the UI's answer, or the timeout default when ``user`` is None)."""
    return {
        "chosen_options": [option],
        "params_input": {},
        "responded_at": datetime(2026, 12, 1, 16, 0, tzinfo=timezone.utc),
        "responded_by_user": user,
        "timedout": user is None,
    }


def wait_on(op: Any, deferred: TaskDeferred) -> dict[str, Any]:
    """What the session trigger the task deferred on yields, by running it (real polls of the emulator)."""
    trigger = deferred.trigger
    assert isinstance(trigger, GumloopSessionTrigger) and deferred.method_name == "execute_complete"

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            payload: dict[str, Any] = event.payload
            return payload
        raise AssertionError("the trigger yielded nothing")

    return asyncio.run(first())


def session_op(text: str, **kw: Any) -> GumloopSessionOperator:
    kw.setdefault("on_approval_required", "airflow")
    return GumloopSessionOperator(
        task_id="review", agent_id="agent_ops", input=text, deferrable=True, poll_interval=1, **kw
    )


def test_rounds_are_asked_in_airflow_and_answered_in_gumloop(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer, supervisor: FakeSupervisor
) -> None:
    store = FakeStore()
    ctx = hitl_context("manual__hitl_rounds", store)
    op = session_op(
        "Acme [emulator: polls=0 approvals=send_email/update_crm+post_slack]",
        approval_assigned_users=["alice", {"id": "bob", "name": "Bob"}],
        approval_timeout=600,
        timeout=3600,
    )
    with pytest.raises(TaskDeferred) as started:
        op.execute(ctx)
    run_id = resume_kwargs(started.value)["run_id"]

    # Round 1: the pause becomes a request in Airflow, and the task waits for it on the triggerer.
    with pytest.raises(TaskDeferred) as asked:
        op.execute_complete(ctx, wait_on(op, started.value), run_id)
    request = supervisor.requests[-1]
    assert request.body is not None and request.assigned_users is not None
    assert (request.options, request.defaults, request.multiple) == (["Accept", "Reject"], ["Reject"], False)
    assert request.subject == "Gumloop agent asks to run send_email"
    assert "**send_email**" in request.body and '"to": "owner@example.com"' in request.body
    assert "reason: Send the account summary email" in request.body
    assert [(u.id, u.name) for u in request.assigned_users] == [("alice", "alice"), ("bob", "Bob")]
    trigger = asked.value.trigger
    assert isinstance(trigger, GumloopApprovalTrigger) and asked.value.method_name == "approval_complete"
    assert trigger.timeout_datetime is not None and trigger.defaults == ["Reject"]
    assert SECRET_KEY not in json.dumps(trigger.serialize()[1], default=str)
    pending = ti_of(ctx).xcoms["pending_approvals"]

    # The human accepts: Gumloop gets exactly that, and the task waits on the session again.
    with pytest.raises(TaskDeferred) as resumed:
        op.approval_complete(ctx, answered("Accept", {"id": "alice", "name": "alice"}), **resume_kwargs(asked.value))
    posts = runwatch_emulator.requests(method="POST", path_prefix=f"/api/v1/sessions/{run_id}/approvals")
    assert [p["status"] for p in posts] == [200]
    first = ti_of(ctx).xcoms["approvals"][0]
    assert first["answer"] == [
        {"action_request_id": pending[0]["action_request_id"], "tool": "send_email", "action": "accept"}
    ]
    assert first["answered_by"] == {"id": "alice", "name": "alice"} and first["gumloop_state"] == "processing"
    assert first["asked"][0]["arguments"]["to"] == "owner@example.com" and not first["timed_out"]

    # Round 2 in a new process (a resumed task is a fresh operator): the rounds come with the deferral.
    again = session_op("Acme")
    with pytest.raises(TaskDeferred) as asked2:
        again.execute_complete(ctx, wait_on(again, resumed.value), **resume_kwargs(resumed.value))
    assert supervisor.requests[-1].subject == "Gumloop agent asks to run update_crm, post_slack"
    assert "(round 2)" in (supervisor.requests[-1].body or "")
    # Nobody answers: the trigger's timeout takes the default (reject) for both calls.
    with pytest.raises(TaskDeferred) as resumed2:
        again.approval_complete(ctx, answered("Reject"), **resume_kwargs(asked2.value))
    rounds = ti_of(ctx).xcoms["approvals"]
    assert [r["round"] for r in rounds] == [1, 2] and rounds[1]["timed_out"] and rounds[1]["answered_by"] is None
    assert [a["action"] for a in rounds[1]["answer"]] == ["reject", "reject"]
    assert store["runwatch_gumloop_approval_rounds"] == rounds

    # The session goes on without the rejected tools and completes.
    last = session_op("Acme")
    answer = last.execute_complete(ctx, wait_on(last, resumed2.value), **resume_kwargs(resumed2.value))
    assert answer.startswith("Understood: I did not run update_crm, post_slack")
    assert SECRET_KEY not in json.dumps(ti_of(ctx).xcoms, default=str)


def test_a_rejection_that_fails_the_session_names_the_tool_call(
    secret_connections: dict[str, str], supervisor: FakeSupervisor
) -> None:
    ctx = hitl_context("manual__hitl_reject")
    op = session_op("Pay [emulator: polls=0 approvals=wire_money on_reject=fail]")
    with pytest.raises(TaskDeferred) as started:
        op.execute(ctx)
    run_id = resume_kwargs(started.value)["run_id"]
    with pytest.raises(TaskDeferred) as asked:
        op.execute_complete(ctx, wait_on(op, started.value), run_id)
    action_id = ti_of(ctx).xcoms["pending_approvals"][0]["action_request_id"]
    with pytest.raises(TaskDeferred) as resumed:
        op.approval_complete(ctx, answered("Reject", {"id": "carol", "name": "Carol"}), **resume_kwargs(asked.value))
    with pytest.raises(RunFailedError) as failed:
        session_op("Pay").execute_complete(ctx, wait_on(op, resumed.value), **resume_kwargs(resumed.value))
    message = str(failed.value)
    assert f"Gumloop session {run_id} failed after the tool call wire_money ({action_id}) was rejected" in message
    assert "was rejected; the agent cannot go on" in message  # Gumloop's own error text follows


def test_a_retry_while_the_request_is_open_reattaches_and_asks_again_idempotently(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer, supervisor: FakeSupervisor
) -> None:
    store = FakeStore()
    ctx = hitl_context("manual__hitl_retry", store)
    op = session_op("Acme [emulator: polls=0 approvals=send_email]")
    with pytest.raises(TaskDeferred) as started:
        op.execute(ctx)
    run_id = resume_kwargs(started.value)["run_id"]
    with pytest.raises(TaskDeferred):
        op.execute_complete(ctx, wait_on(op, started.value), run_id)
    # The try dies while the request is open; the retry runs execute again on the same task instance.
    retry_ctx = hitl_context("manual__hitl_retry", store)
    retry = session_op("Acme [emulator: polls=0 approvals=send_email]")
    with pytest.raises(TaskDeferred) as asked:
        retry.execute(retry_ctx)  # reattaches, sees the pause, and asks at once (no deferral on the session)
    assert resume_kwargs(asked.value)["run_id"] == run_id and asked.value.method_name == "approval_complete"
    starts = runwatch_emulator.requests(method="POST", path_prefix="/api/v1/agents/agent_ops/sessions", run_id=run_id)
    assert [s["status"] for s in starts] == [202], "no second session: the retry reattached via task_state_store"
    # The same request, for the same task instance (Airflow keeps one per task instance and returns it).
    assert [r.ti_id for r in supervisor.requests] == [retry_ctx["task_instance"].id] * 2
    assert supervisor.requests[0].body == supervisor.requests[1].body
    assert asked.value.trigger.ti_id == retry_ctx["task_instance"].id
    GumloopHook().cancel_session(run_id)


def test_the_approval_trigger_cancels_the_session_only_when_the_task_ends_unanswered(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer, supervisor: FakeSupervisor
) -> None:
    hook = GumloopHook()
    kept = hook.create_session("agent_ops", "x [emulator: polls=never]").session.id
    dropped = hook.create_session("agent_ops", "y [emulator: polls=never]").session.id
    common: dict[str, Any] = {
        "ti_id": uuid.uuid4(),
        "options": ["Accept", "Reject"],
        "defaults": ["Reject"],
        "params": {},
    }
    answered_trigger = GumloopApprovalTrigger(
        conn_id="gumloop_default", session_id=kept, timeout_datetime=None, **common
    )
    classpath, kwargs = answered_trigger.serialize()
    assert classpath == "airflow_provider_runwatch.triggers.gumloop_approvals.GumloopApprovalTrigger"
    assert kwargs["session_id"] == kept and SECRET_KEY not in json.dumps(kwargs, default=str)

    supervisor.response = HITLDetailResponse(
        response_received=True, chosen_options=["Accept"], responded_at=datetime.now(timezone.utc)
    )
    asyncio.run(answered_trigger.on_kill())  # resumed by an answer: the session goes on
    assert runwatch_emulator.run(kept)["cancel_requested_at"] is None

    supervisor.response = HITLDetailResponse(response_received=False, responded_at=None, chosen_options=None)
    unanswered = GumloopApprovalTrigger(conn_id="gumloop_default", session_id=dropped, timeout_datetime=None, **common)
    asyncio.run(unanswered.on_kill())  # marked failed while the question was open
    assert runwatch_emulator.run(dropped)["cancel_requested_at"] is not None
    hook.cancel_session(kept)


def test_the_sensor_asks_in_airflow_too(secret_connections: dict[str, str], supervisor: FakeSupervisor) -> None:
    session_id = GumloopHook().create_session("agent_ops", "x [emulator: polls=0 approvals=send_email]").session.id
    sensor = GumloopSessionSensor(
        task_id="watch", session_id=session_id, on_approval_required="airflow", approval_default="accept"
    )
    ctx = hitl_context("manual__hitl_sensor")
    with pytest.raises(TaskDeferred) as asked:
        sensor.execute(ctx)  # poke mode: the first poke sees the pause
    assert isinstance(asked.value.trigger, GumloopApprovalTrigger) and supervisor.requests[-1].defaults == ["Accept"]
    with pytest.raises(TaskDeferred) as resumed:
        sensor.approval_complete(ctx, answered("Accept"), **resume_kwargs(asked.value))
    assert ti_of(ctx).xcoms["approvals"][0]["answer"][0]["action"] == "accept"
    assert sensor.execute_complete(ctx, wait_on(sensor, resumed.value), **resume_kwargs(resumed.value)).startswith(
        "Summary"
    )


def test_bad_approval_options_are_refused_at_parse_time() -> None:
    from airflow_provider_runwatch.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="approval_default must be 'accept' or 'reject'"):
        session_op("x", approval_default="maybe")
    with pytest.raises(ConfigurationError, match="approval_assigned_users takes user ids"):
        session_op("x", approval_assigned_users=[42])
    with pytest.raises(ConfigurationError, match="approval_timeout must be positive"):
        session_op("x", approval_timeout=0)
