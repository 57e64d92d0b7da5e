"""Gumloop triggers driven like the triggerer drives them (rebuilt from serialized kwargs), against the emulator."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_provider_runwatch.core.http import ApiRequest
from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks.gumloop import GumloopHook
from airflow_provider_runwatch.triggers.gumloop import GumloopAgentTrigger, GumloopFlowTrigger, GumloopSessionTrigger
from tests.conftest import SECRET_KEY
from tests.helpers import first_event, rehydrate

pytestmark = pytest.mark.anyio

EVENT_KEYS = {"status", "vendor", "run_id", "state", "vendor_state", "message", "deadline", "gave_up"}


def options(run_id: str, **kw: object) -> dict[str, object]:
    return {"conn_id": "gumloop_default", "run_id": run_id, "poll_interval": 0.2, **kw}


def session(text: str) -> str:
    return GumloopHook().create_session("agent_trigger", text).session.id


def check_event(event: dict[str, object], text: str) -> None:
    assert set(event) <= EVENT_KEYS
    encoded = json.dumps(event)
    assert SECRET_KEY not in encoded
    assert text not in encoded, "the conversation stays out of trigger events"


async def test_agent_trigger_round_trip_keeps_the_task_identity(secret_connections: dict[str, str]) -> None:
    """The base kwargs' round trip is tests/integration/test_trigger_lifecycle.py's, for every kind; the agent
    trigger adds the task's identity overrides."""
    original = GumloopAgentTrigger(**options("i1"), user_id="usr_2", project_id="p_2")  # type: ignore[arg-type]
    again = rehydrate(original)
    assert again.serialize() == original.serialize()
    assert (again.adapter.user_id, again.adapter.project_id) == ("usr_2", "p_2")


async def test_agent_trigger_polls_with_the_task_identity(secret_connections: dict[str, str]) -> None:
    hook = GumloopHook()
    started = hook.start_agent("gummie_t", "Summarise Initech [emulator: polls=2]", user_id="usr_override")
    event = await first_event(rehydrate(GumloopAgentTrigger(**options(started.interaction_id), user_id="usr_override")))  # type: ignore[arg-type]
    assert (event["status"], event["vendor_state"]) == ("success", "COMPLETED")
    check_event(event, "Initech")
    # Without the override the polls identify another user: Gumloop refuses (403), which ends the wait.
    refused = await first_event(GumloopAgentTrigger(**options(started.interaction_id)))  # type: ignore[arg-type]
    assert refused["status"] == "error" and "HTTP 403" in str(refused["message"])


async def test_agent_trigger_failed_event_carries_the_error(secret_connections: dict[str, str]) -> None:
    started = GumloopHook().start_agent("gummie_t", "x [emulator: polls=0 outcome=failed error='CRM quota exceeded']")
    event = await first_event(GumloopAgentTrigger(**options(started.interaction_id)))  # type: ignore[arg-type]
    assert (event["status"], event["vendor_state"], event["message"]) == ("failed", "FAILED", "CRM quota exceeded")


async def test_session_trigger_to_success_through_queue_and_faults(secret_connections: dict[str, str]) -> None:
    run_id = session("Review Hooli [emulator: queued=2 polls=3 http5xx=1 rate_limit=1]")
    event = await first_event(rehydrate(GumloopSessionTrigger(**options(run_id, max_consecutive_failures=3))))  # type: ignore[arg-type]
    assert (event["status"], event["state"], event["vendor_state"]) == ("success", "succeeded", "completed")
    check_event(event, "Hooli")


@pytest.mark.parametrize(
    ("scenario", "status", "vendor_state", "message"),
    [
        ("outcome=failed error='tool exploded'", "failed", "failed", "tool exploded"),
        ("outcome=cancelled", "cancelled", "cancelled", ""),
        ("outcome=paused", "paused", "approval_required", "1 pending approval: send_email"),
    ],
)
async def test_session_trigger_outcomes(
    secret_connections: dict[str, str], scenario: str, status: str, vendor_state: str, message: str
) -> None:
    run_id = session(f"x [emulator: polls=1 {scenario}]")
    event = await first_event(GumloopSessionTrigger(**options(run_id)))  # type: ignore[arg-type]
    assert (event["status"], event["vendor_state"]) == (status, vendor_state)
    assert str(event["message"]).startswith(message)


async def test_idle_session_is_a_failure_not_a_wait(secret_connections: dict[str, str]) -> None:
    hook = GumloopHook()
    request = ApiRequest(
        "POST", "/agents/agent_trigger/sessions", "POST", json={}, headers={"x-auth-key": "emulator-user"}
    )
    payload = hook.client.send(request)
    event = await first_event(GumloopSessionTrigger(**options(payload["session"]["id"])))  # type: ignore[arg-type]
    assert (event["status"], event["vendor_state"]) == ("failed", "idle")
    assert "created without input" in str(event["message"])


async def test_wait_through_approval_until_a_human_answers(secret_connections: dict[str, str]) -> None:
    run_id = session("Email the owner [emulator: polls=1 outcome=paused]")
    trigger = GumloopSessionTrigger(**options(run_id, stop_on_paused=False))  # type: ignore[arg-type]
    waiting = asyncio.ensure_future(first_event(trigger))
    hook = GumloopHook()
    for _ in range(50):  # the test plays the human: wait until the session asks for an approval
        current = await hook.aget_session(run_id)
        if current.session.state == "approval_required":
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    assert not waiting.done(), "a paused session is not the end of the wait"
    action = current.session.pending_approvals[0]["action_request_id"]  # type: ignore[index]
    await hook.asubmit_approvals(run_id, [{"action_request_id": action, "action": "accept"}])
    event = await asyncio.wait_for(waiting, 10)
    assert (event["status"], event["vendor_state"]) == ("success", "completed")


async def test_cancelled_session_that_still_reads_running_is_not_success(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    run_id = session("almost done [emulator: polls=2]")
    trigger = GumloopSessionTrigger(**options(run_id))  # type: ignore[arg-type]
    await trigger.on_kill()
    assert runwatch_emulator.run(run_id)["cancel_requested_at"] is not None
    event = await first_event(rehydrate(trigger))
    assert (event["status"], event["vendor_state"]) == ("failed", "failed")
    assert event["message"] == "Agent run was cancelled"
    reads = [r["status"] for r in runwatch_emulator.requests(method="GET", run_id=run_id)]
    assert len(reads) >= 3, "it read 'processing' after the cancel, and waited"


async def test_flow_trigger_success_failure_and_kill(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    hook = GumloopHook()
    ok = hook.start_pipeline("flow_t", {"q": "Acme [emulator: queued=1 polls=2 unknown_state=WARMING_UP]"}).run_id
    event = await first_event(rehydrate(GumloopFlowTrigger(**options(ok))))  # type: ignore[arg-type]
    assert (event["status"], event["vendor_state"]) == ("success", "DONE")
    bad = hook.start_pipeline("flow_t", {"q": "x [emulator: polls=0 outcome=failed error='node crashed']"}).run_id
    event = await first_event(GumloopFlowTrigger(**options(bad)))  # type: ignore[arg-type]
    assert event["status"] == "failed" and "node crashed" in str(event["message"])
    killed = hook.start_pipeline("flow_t", {"q": "x [emulator: polls=never]"}).run_id
    trigger = GumloopFlowTrigger(**options(killed))  # type: ignore[arg-type]
    await trigger.on_kill()
    event = await first_event(trigger)
    assert (event["status"], event["vendor_state"]) == ("failed", "TERMINATED")
    states = [r["status"] for r in runwatch_emulator.requests(method="POST", run_id=killed)]
    assert states == [200, 200], "one start, one kill_pipeline"


async def test_deadline_and_not_found(secret_connections: dict[str, str]) -> None:
    run_id = session("never [emulator: polls=never]")
    deadline = time.time() + 1.0
    event = await first_event(GumloopSessionTrigger(**options(run_id, deadline=deadline)))  # type: ignore[arg-type]
    assert event["status"] == "timeout" and deadline <= time.time() < deadline + 1.0
    GumloopHook().cancel_session(run_id)
    missing = await first_event(GumloopSessionTrigger(**options("sess_missing")))  # type: ignore[arg-type]
    assert missing["status"] == "error" and "session_not_found" in str(missing["message"])
