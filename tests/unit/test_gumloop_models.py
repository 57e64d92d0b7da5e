"""Gumloop sans-I/O: payload models, final text, state maps, auth and request building (no network)."""

from __future__ import annotations

import importlib
import re
import sys
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_provider_runwatch.core.connection import ConnectionSettings
from airflow_provider_runwatch.core.errors import ConfigurationError, MalformedResponseError
from airflow_provider_runwatch.core.models import RunState
from airflow_provider_runwatch.vendors import gumloop

BASE = "https://api.gumloop.com/api/v1"


def settings(login: str | None = "user_1", **extras: Any) -> ConnectionSettings:
    return ConnectionSettings(
        vendor=gumloop.GUMLOOP, conn_id="gl", base_url=BASE, api_key="k_secret_1234", login=login, extras=extras
    )


ASSISTANT = {
    "id": "msg_2",
    "role": "assistant",
    "timestamp": "2026-03-01T10:00:05.123456",
    "content": None,
    "parts": [
        {"id": "p0", "type": "step-start", "somethingNew": {"kept": True}},
        {"id": "p1", "type": "reasoning", "reasoning": "Search first."},
        {
            "id": "p2",
            "type": "tool_invocation",
            "toolCallId": "call_1",
            "toolName": "web_search",
            "toolCallState": "result",
            "result": {"args": {"query": "Acme"}, "result": {"hits": 3}},
        },
        {"id": "p3", "type": "file", "file": {"name": "report.pdf", "url": "https://x/report.pdf"}},
        {"id": "p4", "type": "text", "text": "First paragraph."},
        {"id": "p5", "type": "text", "text": "Second paragraph."},
    ],
}
USER = {"id": "msg_1", "role": "user", "timestamp": "2026-03-01T10:00:00", "content": "Tell me about Acme", "parts": []}
SESSION: dict[str, Any] = {
    "session": {
        "id": "sess_1",
        "agent_id": "agent_1",
        "name": "Acme",
        "type": "api",
        "state": "completed",
        "messages": [USER, ASSISTANT],
        "created_at": "2026-03-01T10:00:00",
        "agent_name": "Researcher",
        "creator": {"user_id": "user_1"},
        "usage": {
            "credit_cost": 12,
            "tool_credit_cost": 4,
            "flow_credit_cost": 0,
            "input_tokens": 9,
            "output_tokens": 3,
        },
        "pending_approvals": [],
        "brandNewField": 1,
    },
    "queue_position": None,
}


def test_message_structure_is_kept_and_naive_timestamps_are_utc() -> None:
    message = gumloop.GumloopMessage.model_validate(ASSISTANT)
    assert message.timestamp == datetime(2026, 3, 1, 10, 0, 5, 123456, tzinfo=timezone.utc)
    tool = message.parts[2]
    assert (tool.type, tool.toolCallId, tool.toolName, tool.toolCallState) == (
        "tool_invocation",
        "call_1",
        "web_search",
        "result",
    )
    assert isinstance(tool.result, gumloop.GumloopToolResult)
    assert tool.result.args == {"query": "Acme"} and tool.result.result == {"hits": 3}
    assert message.parts[0].model_extra == {"somethingNew": {"kept": True}}
    assert message.parts[1].reasoning == "Search first."
    assert message.parts[3].file == {"name": "report.pdf", "url": "https://x/report.pdf"}
    assert message.tool_names() == ["web_search"]


def test_unknown_shapes_are_tolerated() -> None:
    message = gumloop.GumloopMessage.model_validate(
        {"role": "assistant", "timestamp": "yesterday-ish", "parts": [{"type": "tool_invocation", "result": 42}]}
    )
    assert message.timestamp is None
    assert message.parts[0].result == 42


def test_session_final_text_joins_text_parts_when_content_is_null() -> None:
    result = gumloop.SESSIONS.result_call(settings(), "sess_1").parse(SESSION)
    assert result.answer == "First paragraph.\nSecond paragraph."
    assert result.messages == SESSION["session"]["messages"], "the conversation is pushed exactly as sent"
    assert result.summary.cost == {"credit_cost": 12, "tool_credit_cost": 4, "flow_credit_cost": 0}
    assert result.summary.usage == {"input_tokens": 9, "output_tokens": 3}
    assert result.summary.tool_calls == ["web_search"]
    assert result.summary.created_at == datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    assert result.summary.duration_seconds == pytest.approx(5.123456)


def test_session_final_text_prefers_content_of_the_last_assistant_message() -> None:
    messages = [
        USER,
        {**ASSISTANT, "content": "Earlier answer"},
        {"role": "user", "content": "More?", "parts": []},
        {"role": "assistant", "content": "Final answer", "parts": [{"type": "text", "text": "ignored"}]},
        {"role": "assistant", "content": None, "parts": [{"type": "reasoning", "reasoning": "no text here"}]},
    ]
    session = gumloop.GumloopSession.model_validate({"id": "s", "state": "completed", "messages": messages})
    assert session.final_text() == "Final answer"


def test_interaction_final_text_is_the_response() -> None:
    payload = {
        "interaction_id": "i1",
        "gummie_id": "g1",
        "state": "COMPLETED",
        "created_ts": "2026-03-01T10:00:00",
        "messages": [USER, ASSISTANT],
        "response": "The response.",
    }
    result = gumloop.INTERACTIONS.result_call(settings(), "i1").parse(payload)
    assert result.answer == "The response."
    assert result.messages == payload["messages"]
    assert result.summary.extra == {"gummie_id": "g1"}
    without = gumloop.GumloopInteraction.model_validate({**payload, "response": None})
    assert without.final_text() == "First paragraph.\nSecond paragraph."


@pytest.mark.parametrize(
    ("state", "expected", "unknown"),
    [
        ("ASYNC_PROCESSING", RunState.RUNNING, False),
        ("COMPLETED", RunState.SUCCEEDED, False),
        ("FAILED", RunState.FAILED, False),
        ("THINKING_HARD", RunState.RUNNING, True),
    ],
)
def test_interaction_states(state: str, expected: RunState, unknown: bool) -> None:
    status = gumloop.INTERACTIONS.status_call(settings(), "i1").parse(
        {"interaction_id": "i1", "state": state, "error_message": "tool broke"}
    )
    assert (status.state, status.vendor_state, status.unknown_state) == (expected, state, unknown)
    if expected is RunState.FAILED:
        assert status.error == "tool broke"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("queued", RunState.QUEUED),
        ("processing", RunState.RUNNING),
        ("completed", RunState.SUCCEEDED),
        ("failed", RunState.FAILED),
        ("cancelled", RunState.CANCELLED),
        ("idle", RunState.FAILED),
        ("approval_required", RunState.PAUSED),
        ("brand_new_state", RunState.RUNNING),
    ],
)
def test_session_states(state: str, expected: RunState) -> None:
    status = gumloop.SESSIONS.status_call(settings(), "s").parse(
        {"session": {"id": "s", "state": state}, "queue_position": 3 if state == "queued" else None}
    )
    assert status.state is expected
    assert status.unknown_state is (state == "brand_new_state")
    if state == "queued":
        assert status.queue_position == 3
    if state == "idle":
        assert status.error == "session is idle: it was created without input, so nothing ran"


def test_failed_session_error_comes_from_the_error_part() -> None:
    error_message = {"role": "assistant", "content": None, "parts": [{"type": "error", "error": "CRM tool timed out"}]}
    status = gumloop.SESSIONS.status_call(settings(), "s").parse(
        {"session": {"id": "s", "state": "failed", "messages": [USER, error_message]}}
    )
    assert status.error == "CRM tool timed out"


def test_paused_session_summarizes_pending_approvals() -> None:
    pending = [
        {"action_request_id": "act_1", "tool_name": "send_email"},
        {"action_request_id": "act_2", "toolName": "update_crm"},
    ]
    status = gumloop.SESSIONS.status_call(settings(), "s").parse(
        {"session": {"id": "s", "state": "approval_required", "pending_approvals": pending}}
    )
    assert status.state is RunState.PAUSED
    assert status.error == "2 pending approvals: send_email (act_1), update_crm (act_2)"
    result, raw = gumloop.paused_session(settings(), "s").parse(
        {"session": {"id": "s", "state": "approval_required", "pending_approvals": pending}}
    )
    assert raw == pending and result.status.state is RunState.PAUSED


@pytest.mark.parametrize(
    ("state", "expected", "unknown"),
    [
        ("DONE", RunState.SUCCEEDED, False),
        ("FAILED", RunState.FAILED, False),
        ("TERMINATED", RunState.FAILED, False),
        ("TERMINATING", RunState.RUNNING, False),
        ("QUEUED", RunState.RUNNING, False),
        ("STARTED", RunState.RUNNING, False),
        ("RUNNING", RunState.RUNNING, False),
        ("WARMING_UP", RunState.RUNNING, True),
    ],
)
def test_flow_states(state: str, expected: RunState, unknown: bool) -> None:
    status = gumloop.FLOWS.status_call(settings(), "r1").parse(
        {"state": state, "log": ["started", "Error in node 'Ask AI': boom", "stopped"]}
    )
    assert (status.state, status.unknown_state, status.run_id) == (expected, unknown, "r1")
    if expected is RunState.FAILED:
        assert status.error == "Error in node 'Ask AI': boom"


def test_flow_result_is_the_outputs() -> None:
    result = gumloop.FLOWS.result_call(settings(), "r1").parse(
        {
            "state": "DONE",
            "outputs": {"answer": 42},
            "log": ["a", "b"],
            "created_ts": "2026-03-01T10:00:00",
            "finished_ts": "2026-03-01T10:01:00",
        }
    )
    assert result.answer == {"answer": 42}
    assert result.messages is None
    assert result.summary.duration_seconds == 60.0
    assert result.summary.extra["log_tail"] == ["a", "b"]


@pytest.mark.parametrize("junk", [[], "text", {"state": None}, {"session": {"state": "completed"}}])
def test_junk_payload_is_malformed_not_a_crash(junk: object) -> None:
    with pytest.raises(MalformedResponseError, match="unexpected payload shape"):
        gumloop.SESSIONS.status_call(settings(), "s").parse(junk)


# -- auth and request building ----------------------------------------------------------------------------------
def test_personal_key_sends_x_auth_key_on_the_sessions_api_only() -> None:
    request = gumloop.get_session(settings(), "sess_1").request
    assert request.headers == {"x-auth-key": "user_1"}
    assert (request.method, request.path, request.endpoint) == ("GET", "/sessions/sess_1", "GET /sessions/{session_id}")
    legacy = gumloop.agent_status(settings(), "i1").request
    assert legacy.headers is None
    assert legacy.params == {"user_id": "user_1"}


def test_team_key_needs_no_user_id_and_a_missing_identity_names_the_connection() -> None:
    assert gumloop.get_session(settings(login=None, team_id="team_9"), "s").request.headers == {}
    with pytest.raises(ConfigurationError, match=r"Gumloop connection 'gl'.*Login.*team_id"):
        gumloop.get_session(settings(login=None), "s")


def test_legacy_identity_goes_in_the_body_of_a_post_and_the_query_of_a_get() -> None:
    both = settings(project_id="proj_1")
    start = gumloop.start_agent(both, "g1", "hi", interaction_id="i0").request
    assert start.json == {
        "gummie_id": "g1",
        "message": "hi",
        "user_id": "user_1",
        "project_id": "proj_1",
        "interaction_id": "i0",
    }
    assert not start.idempotent
    overridden = gumloop.agent_status(both, "i1", user_id="someone", project_id="p2").request
    assert overridden.params == {"user_id": "someone", "project_id": "p2"}
    only_project = gumloop.get_pl_run(settings(login=None, project_id="proj_1"), "r1").request
    assert only_project.params == {"run_id": "r1", "project_id": "proj_1"}
    kill = gumloop.kill_pipeline(both, "r1").request
    assert kill.json == {"run_id": "r1", "user_id": "user_1", "project_id": "proj_1"}
    with pytest.raises(ConfigurationError, match=r"Gumloop connection 'gl': POST /start_pipeline needs a user_id"):
        gumloop.start_pipeline(settings(login=None), "flow_1", {})


def test_start_inputs_validated_before_sending() -> None:
    with pytest.raises(ConfigurationError, match="message must be a non-empty string"):
        gumloop.start_agent(settings(), "g1", "   ")
    with pytest.raises(ConfigurationError, match="agent_id"):
        gumloop.create_session(settings(), "", "hi")
    with pytest.raises(ConfigurationError, match="input must be a non-empty string"):
        gumloop.create_session(settings(), "a1", "")
    with pytest.raises(ConfigurationError, match="session_id may contain only"):
        gumloop.create_session(settings(), "a1", "hi", session_id="has space")
    with pytest.raises(ConfigurationError, match="metadata must be a JSON object"):
        gumloop.create_session(settings(), "a1", "hi", metadata=["x"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="must not contain '/'"):
        gumloop.get_session(settings(), "../etc")
    call = gumloop.create_session(settings(), "a 1", "hi", session_id="sess_x", metadata={"k": 1})
    assert call.request.path == "/agents/a%201/sessions"
    assert call.request.json == {"input": "hi", "session_id": "sess_x", "metadata": {"k": 1}}
    assert "stream" not in call.request.json


def test_flow_inputs_become_pipeline_inputs() -> None:
    body = gumloop.start_pipeline(settings(), "flow_1", {"company": "Acme", "limit": 3}).request.json
    assert body["saved_item_id"] == "flow_1"
    assert body["pipeline_inputs"] == [{"input_name": "company", "value": "Acme"}, {"input_name": "limit", "value": 3}]
    with pytest.raises(ConfigurationError, match="dict of input name"):
        gumloop.pipeline_inputs("nope")  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 101, -5, "ten"])
def test_page_size_bounds(size: object) -> None:
    with pytest.raises(ConfigurationError, match="page_size"):
        gumloop.list_sessions(settings(), "a1", page_size=size)  # type: ignore[arg-type]


def test_list_sessions_sends_every_filter_and_drops_none() -> None:
    full = gumloop.list_sessions(
        settings(),
        "a1",
        page_size=100,
        cursor="c1",
        search="acme",
        sort_order="oldest",
        type="api",
        state="completed",
        creator_user_id="usr_1",
        trigger_id="trg_1",
    ).request
    assert full.params == {
        "page_size": 100,
        "cursor": "c1",
        "search": "acme",
        "sort_order": "oldest",
        "type": "api",
        "state": "completed",
        "creator_user_id": "usr_1",
        "trigger_id": "trg_1",
    }
    bare = gumloop.list_sessions(settings(), "a1", search="", state=None).request
    assert bare.params == {}
    with pytest.raises(ConfigurationError, match="sort_order"):
        gumloop.list_sessions(settings(), "a1", sort_order="random")


def test_derived_session_ids_are_deterministic_and_distinct() -> None:
    first = gumloop.derive_session_id("dag", "task", "manual__2026", 3)
    assert first == gumloop.derive_session_id("dag", "task", "manual__2026", 3)
    assert re.fullmatch(r"sess_airflow_[0-9a-f]{32}", first)
    assert gumloop.validate_session_id(first) == first
    others = {
        gumloop.derive_session_id("dag", "task", "manual__2026", 4),
        gumloop.derive_session_id("dag", "task", "manual__2027", 3),
        gumloop.derive_session_id("dag", "task2", "manual__2026", 3),
        gumloop.derive_session_id("dag", "task", "manual__2026", 3, generation=1),
    }
    assert first not in others and len(others) == 4


def test_approval_responses_validated() -> None:
    with pytest.raises(ConfigurationError, match="approval response 0"):
        gumloop.submit_approvals(settings(), "s", [{"action_request_id": "a", "action": "maybe"}])
    request = gumloop.submit_approvals(settings(), "s", [{"action_request_id": "a", "action": "accept"}]).request
    assert request.json == {"approval_responses": [{"action_request_id": "a", "action": "accept"}]}


# -- operator and sensor arguments (no run) --------------------------------------------------------------------
def test_poll_interval_under_one_second_is_refused() -> None:
    from airflow_provider_runwatch.operators.gumloop import GumloopFlowOperator, GumloopSessionOperator
    from airflow_provider_runwatch.sensors.gumloop import GumloopSessionSensor

    with pytest.raises(ConfigurationError, match="at least 1 s for Gumloop"):
        GumloopSessionOperator(task_id="t", agent_id="a", input="hi", poll_interval=0.5)
    with pytest.raises(ConfigurationError, match="poke_interval must be at least 1 s"):
        GumloopSessionSensor(task_id="t", session_id="s", poke_interval=0.2)
    assert GumloopFlowOperator(task_id="t", flow_id="f").poll_interval == 3.0


def test_approval_mode_and_sensor_aliases() -> None:
    from airflow_provider_runwatch.operators.gumloop import GumloopSessionOperator
    from airflow_provider_runwatch.sensors.gumloop import GumloopAgentSensor, GumloopFlowSensor, GumloopSessionSensor

    with pytest.raises(ConfigurationError, match="on_approval_required"):
        GumloopSessionOperator(task_id="t", agent_id="a", input="hi", on_approval_required="ignore")  # type: ignore[arg-type]
    assert (
        GumloopSessionOperator(task_id="t", agent_id="a", input="hi", on_approval_required="wait").stop_on_paused
        is False
    )
    assert GumloopAgentSensor(task_id="t", interaction_id="i1").run_id == "i1"
    assert GumloopSessionSensor(task_id="t", session_id="s1").session_id == "s1"
    assert GumloopFlowSensor(task_id="t", run_id="r1").run_id == "r1"
    with pytest.raises(ConfigurationError, match="not both"):
        GumloopAgentSensor(task_id="t", run_id="a", interaction_id="b")
    with pytest.raises(ConfigurationError, match="session_id="):
        GumloopSessionSensor(task_id="t")


def test_operator_modules_stay_light() -> None:
    """DAG files import the operators: that must not pull in the hook, the vendor models or httpx clients."""
    import airflow_provider_runwatch.operators as operators_pkg
    import airflow_provider_runwatch.sensors as sensors_pkg

    heavy = ("airflow_provider_runwatch.vendors.gumloop", "airflow_provider_runwatch.hooks.gumloop")
    fresh = ("airflow_provider_runwatch.operators.gumloop", "airflow_provider_runwatch.sensors.gumloop")
    saved = {name: sys.modules.pop(name) for name in (*heavy, *fresh) if name in sys.modules}
    try:
        importlib.import_module("airflow_provider_runwatch.sensors.gumloop")
        assert [name for name in heavy if name in sys.modules] == []
    finally:
        for name in (*heavy, *fresh):
            sys.modules.pop(name, None)
        sys.modules.update(saved)
        for package, name in ((operators_pkg, "operators"), (sensors_pkg, "sensors")):
            module = saved.get(f"airflow_provider_runwatch.{name}.gumloop")
            if module is not None:
                package.gumloop = module  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "payload",
    [
        {"session": {"id": "sess_1", "state": "processing", "messages": [{"role": "user", "content": "x"}]}},
        {"session": {"id": "sess_1", "state": "queued"}, "queue_position": 3},
        {"session": {"id": "sess_1", "state": "completed", "messages": []}},
        {"session": {"id": "sess_1", "state": "approval_required", "pending_approvals": []}},
        {"session": {"id": "sess_1", "state": "brand_new_state"}},
    ],
)
def test_session_poll_fast_path_agrees_with_the_full_parse(payload: dict[str, Any]) -> None:
    from airflow_provider_runwatch.vendors.gumloop import GumloopSessionEnvelope, session_poll_status, session_status

    assert session_poll_status(payload) == session_status(GumloopSessionEnvelope.model_validate(payload))


def test_session_poll_fast_path_still_rejects_junk() -> None:
    from airflow_provider_runwatch.core.errors import MalformedResponseError
    from airflow_provider_runwatch.vendors.gumloop import session_poll_status

    with pytest.raises(MalformedResponseError):
        session_poll_status({"session": {"state": "processing"}})
