"""GumloopHook against the emulator over loopback: every endpoint and documented error, sync and async."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_provider_runwatch.core.errors import (
    AuthError,
    ClientError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
)
from airflow_provider_runwatch.core.http import ApiRequest
from airflow_provider_runwatch.core.models import RunState
from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks.gumloop import GumloopHook
from airflow_provider_runwatch.vendors.gumloop import GumloopSession
from tests.conftest import SECRET_KEY
from tests.helpers import FAST, NO_RETRY

USER = {"x-auth-key": "emulator-user"}


def conn(
    monkeypatch: pytest.MonkeyPatch,
    emulator: EmulatorServer,
    conn_id: str,
    *,
    key: str = SECRET_KEY,
    login: str | None = "emulator-user",
    host: str | None = None,
    **extra: str,
) -> str:
    data: dict[str, Any] = {"conn_type": "gumloop", "host": host or emulator.gumloop_url, "password": key}
    if login:
        data["login"] = login
    if extra:
        data["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(data))
    return conn_id


def send(hook: GumloopHook, method: str, path: str, **kwargs: Any) -> Any:
    """A raw request through the hook's client (auth included), for what the builders refuse to send."""
    return hook.client.send(ApiRequest(method, path, f"{method} {path}", **kwargs), retry=NO_RETRY)  # type: ignore[arg-type]


# -- agent interactions -----------------------------------------------------------------------------------------
def test_interaction_start_poll_result_and_continue(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    hook = GumloopHook(retry=FAST)
    started = hook.start_agent("gummie_research", "Summarise Acme [emulator: polls=1]")
    assert started.status == "processing"
    assert hook.get_status(hook.interactions, started.interaction_id).vendor_state == "ASYNC_PROCESSING"
    result = hook.get_result(hook.interactions, started.interaction_id)
    assert result.status.state is RunState.SUCCEEDED
    assert result.answer.startswith("Summary for 'Summarise Acme'")
    assert result.messages is not None
    assert [m["role"] for m in result.messages] == ["user", "assistant"]
    assert result.summary.tool_calls == ["web_search"]
    assert isinstance(result.summary.created_at, datetime) and result.summary.created_at.tzinfo is timezone.utc
    # Continue the finished conversation: same interaction id, the history grows.
    again = hook.start_agent(
        "gummie_research", "And Globex? [emulator: polls=0]", interaction_id=started.interaction_id
    )
    assert again.interaction_id == started.interaction_id
    second = hook.agent_status(started.interaction_id)
    assert second.state == "COMPLETED"
    assert [m.role for m in second.messages or []] == ["user", "assistant", "user", "assistant"]
    starts = runwatch_emulator.requests(method="POST", run_id=started.interaction_id)
    assert [r["status"] for r in starts] == [202, 202]
    status_query = runwatch_emulator.requests(method="GET", run_id=started.interaction_id)[0]["query"]
    assert status_query == {"user_id": "emulator-user"}


def test_interaction_documented_errors(secret_connections: dict[str, str]) -> None:
    hook = GumloopHook(retry=NO_RETRY)
    running = hook.start_agent("gummie_a", "long [emulator: polls=never]").interaction_id
    with pytest.raises(ConflictError, match="interaction_not_in_terminal_state"):
        hook.start_agent("gummie_a", "more", interaction_id=running)
    done = hook.start_agent("gummie_a", "short [emulator: polls=0]").interaction_id
    hook.agent_status(done)
    with pytest.raises(ClientError, match=r"HTTP 400.*interaction_gummie_mismatch"):
        hook.start_agent("gummie_b", "more", interaction_id=done)
    with pytest.raises(NotFoundError, match="gummie_not_found"):
        hook.start_agent("missing_gummie", "hi")
    with pytest.raises(AuthError, match=r"HTTP 403.*unauthorized_gummie_access"):
        hook.start_agent("private_gummie", "hi")
    with pytest.raises(NotFoundError, match="interaction_not_found"):
        hook.start_agent("gummie_a", "hi", interaction_id="nope0000")
    with pytest.raises(AuthError, match="unauthorized_interaction_access"):
        hook.start_agent("gummie_a", "hi", interaction_id=done, user_id="someone_else")
    with pytest.raises(NotFoundError, match="interaction_not_found"):
        hook.agent_status("nope0000")
    with pytest.raises(AuthError, match=r"HTTP 403.*unauthorized"):
        hook.agent_status(done, user_id="someone_else")
    for body, error in [
        ({"message": "hi", "user_id": "u"}, "gummie_id is required"),
        ({"gummie_id": "g", "user_id": "u"}, "message is required"),
        ({"gummie_id": "g", "message": "hi"}, "project_id or user_id is required"),
    ]:
        with pytest.raises(ClientError, match=error):
            send(hook, "POST", "/start_agent", json=body)


def test_interaction_identity_override_follows_the_run(secret_connections: dict[str, str]) -> None:
    hook = GumloopHook(retry=NO_RETRY)
    started = hook.start_agent("gummie_a", "hi [emulator: polls=0]", user_id="usr_other")
    adapter = hook.interactions.with_identity("usr_other")
    assert hook.get_status(adapter, started.interaction_id).state is RunState.SUCCEEDED
    with pytest.raises(AuthError, match="HTTP 403"):
        hook.get_status(hook.interactions, started.interaction_id)


@pytest.mark.anyio
async def test_interaction_async_twins(secret_connections: dict[str, str]) -> None:
    hook = GumloopHook(retry=FAST)
    started = await hook.astart_agent("gummie_a", "Async [emulator: polls=0]", project_id="proj_1")
    run = await hook.aagent_status(started.interaction_id, project_id="proj_1")
    assert run.state == "COMPLETED" and run.response and "Async" in run.response


# -- auth -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "status"), [("gl_invalid_abcd", 401), ("gl_noaccess_abcd", 403), ("gl_team_abcd", 403)]
)
def test_auth_errors_on_both_apis(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer, key: str, status: int
) -> None:
    hook = GumloopHook(conn(monkeypatch, runwatch_emulator, "gl_auth", key=key), retry=NO_RETRY)
    with pytest.raises(AuthError, match=f"HTTP {status}") as legacy:
        hook.start_agent("g", "hi")
    with pytest.raises(AuthError, match=f"HTTP {status}") as sessions:
        hook.create_session("agent_1", "hi")
    assert key not in str(legacy.value) + str(sessions.value)
    ok, message = hook.test_connection()
    assert ok is False and f"HTTP {status}" in message and key not in message


def test_team_key_sends_team_id_on_every_request(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer
) -> None:
    conn_id = conn(monkeypatch, runwatch_emulator, "gl_team", key="gl_team_key_0001", login=None, team_id="team_7")
    hook = GumloopHook(conn_id, retry=NO_RETRY)
    session = hook.create_session("agent_team", "hi [emulator: polls=0]").session
    assert hook.get_session(session.id).session.state == "completed"
    with pytest.raises(ConfigurationError, match="needs a user_id or a project_id"):
        hook.start_agent("g", "hi")  # a team key still needs user_id/project_id on the legacy endpoints
    requests = runwatch_emulator.requests(vendor="gumloop", run_id=session.id)
    assert len(requests) == 2 and all(r["query"].get("team_id") == "team_7" for r in requests)


def test_personal_key_without_user_id_is_refused_before_sending(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer
) -> None:
    hook = GumloopHook(conn(monkeypatch, runwatch_emulator, "gl_nouser", login=None, project_id="p1"))
    with pytest.raises(ConfigurationError, match=r"Gumloop connection 'gl_nouser'.*x-auth-key"):
        hook.get_session("sess_x")
    # The emulator enforces the same rule for clients that skip the check.
    with pytest.raises(AuthError, match=r"HTTP 401.*x-auth-key"):
        send(hook, "GET", "/sessions/sess_x")


# -- sessions ---------------------------------------------------------------------------------------------------
def test_session_life_cycle(secret_connections: dict[str, str], runwatch_emulator: EmulatorServer) -> None:
    hook = GumloopHook(retry=FAST)
    envelope = hook.create_session(
        "agent_1", "Review Acme [emulator: queued=2 polls=3]", session_id="sess_airflow_hook_test_1", metadata={"k": 1}
    )
    assert envelope.session.id == "sess_airflow_hook_test_1"
    assert (envelope.session.state, envelope.queue_position) == ("queued", 2)
    states = [hook.get_status(hook.sessions, envelope.session.id) for _ in range(3)]
    assert [(s.vendor_state, s.queue_position) for s in states] == [("queued", 2), ("queued", 1), ("processing", None)]
    result = hook.get_result(hook.sessions, envelope.session.id)
    assert result.status.state is RunState.SUCCEEDED
    assert result.answer.startswith("Summary for 'Review Acme'")
    assert result.messages is not None
    assistant = result.messages[-1]
    assert assistant["content"] is None and any(p["type"] == "tool_invocation" for p in assistant["parts"])
    assert any(p["type"] == "step-start" for p in assistant["parts"]), "unknown part types are passed through"
    assert result.summary.cost and result.summary.cost["credit_cost"] == 12
    with pytest.raises(ConflictError, match="session_already_exists"):
        hook.create_session("agent_1", "again", session_id="sess_airflow_hook_test_1")
    posts = runwatch_emulator.requests(method="POST", run_id="sess_airflow_hook_test_1")
    assert [p["status"] for p in posts] == [202, 409]


def test_session_documented_errors(secret_connections: dict[str, str]) -> None:
    hook = GumloopHook(retry=NO_RETRY)
    with pytest.raises(NotFoundError, match="session_not_found"):
        hook.get_session("sess_nope")
    with pytest.raises(NotFoundError, match="agent_not_found"):
        hook.create_session("missing_agent", "hi")
    with pytest.raises(AuthError, match="HTTP 403"):
        hook.create_session("private_agent", "hi")
    with pytest.raises(ClientError, match=r"HTTP 400.*streaming_not_supported"):
        send(hook, "POST", "/agents/agent_1/sessions", json={"input": "hi", "stream": True}, headers=USER)
    with pytest.raises(ClientError, match=r"HTTP 402.*insufficient_credits"):
        hook.create_session("agent_1", "x [emulator: start_status=402]")
    with pytest.raises(ClientError, match="HTTP 413"):
        hook.create_session("agent_1", "x [emulator: start_status=413]")
    with pytest.raises(RateLimitedError, match=r"HTTP 429.*concurrency"):
        hook.create_session("agent_1", "x [emulator: start_status=429]")
    idle = send(hook, "POST", "/agents/agent_1/sessions", json={}, headers=USER)
    assert idle["session"]["state"] == "idle"
    status = hook.get_status(hook.sessions, idle["session"]["id"])
    assert status.state is RunState.FAILED and "idle" in (status.error or "")


def test_free_plan_concurrency_is_a_429(monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer) -> None:
    hook = GumloopHook(conn(monkeypatch, runwatch_emulator, "gl_free", key="gl_free_key_0001"), retry=NO_RETRY)
    ids = [hook.create_session("agent_free", f"long {i} [emulator: polls=never]").session.id for i in range(5)]
    with pytest.raises(RateLimitedError, match="concurrency") as info:
        hook.create_session("agent_free", "one too many")
    assert info.value.retry_after is None, "Free and Pro get no Retry-After"
    for session_id in ids:
        hook.cancel_session(session_id)


def test_cancel_settles_late_and_never_as_success(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    hook = GumloopHook(retry=NO_RETRY)
    session_id = hook.create_session("agent_1", "almost done [emulator: polls=1]").session.id
    assert hook.cancel(hook.sessions, session_id) is True
    reads = [hook.get_status(hook.sessions, session_id) for _ in range(3)]
    assert [r.vendor_state for r in reads] == ["processing", "processing", "failed"]
    assert reads[-1].state is RunState.FAILED and reads[-1].error == "Agent run was cancelled"
    cancel = runwatch_emulator.requests(method="POST", path_prefix="/api/v1/sessions/", run_id=session_id)
    assert [c["path"] for c in cancel] == [f"/api/v1/sessions/{session_id}/cancel"]
    assert runwatch_emulator.run(session_id)["cancel_requested_at"] is not None


def test_approvals_resume_a_paused_session(secret_connections: dict[str, str]) -> None:
    hook = GumloopHook(retry=NO_RETRY)
    session_id = hook.create_session("agent_1", "Email the owner [emulator: polls=0 outcome=paused]").session.id
    paused = hook.get_session(session_id).session
    assert paused.state == "approval_required" and paused.final_text()
    action = paused.pending_approvals[0]["action_request_id"]  # type: ignore[index]
    with pytest.raises(ClientError, match="unknown action_request_id"):
        hook.submit_approvals(session_id, [{"action_request_id": "act_nope", "action": "accept"}])
    hook.submit_approvals(session_id, [{"action_request_id": action, "action": "accept"}])
    assert [hook.get_session(session_id).session.state for _ in range(2)] == ["processing", "completed"]
    with pytest.raises(ConflictError, match="no_pending_approvals"):
        hook.submit_approvals(session_id, [{"action_request_id": action, "action": "accept"}])


@pytest.mark.anyio
async def test_session_async_twins(secret_connections: dict[str, str]) -> None:
    hook = GumloopHook(retry=FAST)
    created = await hook.acreate_session("agent_async", "Async [emulator: polls=0 outcome=paused]")
    envelope = await hook.aget_session(created.session.id)
    action = envelope.session.pending_approvals[0]["action_request_id"]  # type: ignore[index]
    await hook.asubmit_approvals(created.session.id, [{"action_request_id": action, "action": "reject"}])
    await hook.aget_session(created.session.id)
    done = (await hook.aget_session(created.session.id)).session
    assert done.state == "completed" and done.final_text() == "Understood: I did not send the email."
    other = await hook.acreate_session("agent_async", "cancel me [emulator: polls=never]")
    await hook.acancel_session(other.session.id)
    assert await hook.acancel(hook.sessions, other.session.id) is True
    page = await hook.alist_sessions("agent_async", page_size=3, sort_order="oldest")
    assert len(page.sessions) == 3 and page.next_cursor
    listed = [s async for s in hook.aiter_sessions("agent_async", page_size=7, type="api", max_sessions=12)]
    assert len(listed) == 12 and all(s.type == "api" for s in listed)


# -- listing ----------------------------------------------------------------------------------------------------
def test_listing_pages_with_filters(secret_connections: dict[str, str], runwatch_emulator: EmulatorServer) -> None:
    hook = GumloopHook(retry=NO_RETRY)
    runwatch_emulator.clear_requests()
    completed = list(hook.iter_sessions("agent_listing", page_size=10, state="completed"))
    pages = runwatch_emulator.requests(method="GET", path_prefix="/api/v1/agents/agent_listing/sessions")
    assert len(completed) > 20 and len(pages) == -(-len(completed) // 10) >= 3
    assert all(s.state == "completed" and s.messages is None for s in completed)
    assert [p["query"].get("cursor") is None for p in pages] == [True] + [False] * (len(pages) - 1)
    assert all(
        p["query"]["state"] == "completed" and set(p["query"]) <= {"page_size", "state", "cursor"} for p in pages
    )
    created = [created_at(s) for s in completed]
    assert created == sorted(created, reverse=True), "newest first"
    oldest = list(hook.iter_sessions("agent_listing", page_size=10, sort_order="oldest"))
    assert len(oldest) == gumloop_seeded() and oldest[0].created_at == min(created_at(s) for s in oldest)
    alice = list(hook.iter_sessions("agent_listing", creator_user_id="usr_alice", type="api"))
    assert alice and all(s.creator and s.creator["user_id"] == "usr_alice" and s.type == "api" for s in alice)
    slack = list(hook.iter_sessions("agent_listing", trigger_id="trg_slack_1"))
    assert slack and all(s.type == "slack" for s in slack)
    assert {s.name for s in hook.iter_sessions("agent_listing", search="CHURN")} <= {
        s.name for s in oldest if s.name and "Churn" in s.name
    }
    assert len(list(hook.iter_sessions("agent_listing", page_size=4, max_sessions=9))) == 9
    with pytest.raises(ClientError, match="invalid_cursor"):
        hook.list_sessions("agent_listing", cursor="bogus")


@pytest.mark.anyio
async def test_listing_refuses_an_unknown_filter_before_sending(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    """The filters are keyword arguments of one shape for the three listings: a misspelt one is named, with the
    right ones, before any request (it would otherwise be dropped silently and list every session)."""
    hook = GumloopHook(retry=NO_RETRY)
    runwatch_emulator.clear_requests()
    expected = r"unknown filter\(s\) serach; the filters are page_size, search, sort_order"
    with pytest.raises(ConfigurationError, match=expected):
        hook.list_sessions("agent_listing", serach="churn")  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match=expected):
        hook.iter_sessions("agent_listing", serach="churn")  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match=expected):
        [s async for s in hook.aiter_sessions("agent_listing", serach="churn")]  # type: ignore[call-arg]
    assert runwatch_emulator.requests(path_prefix="/api/v1/agents/") == []
    # The same filter spelt right is sent, and only it.
    hook.list_sessions("agent_listing", search="churn")
    (sent,) = runwatch_emulator.requests(path_prefix="/api/v1/agents/agent_listing/sessions")
    assert sent["query"] == {"search": "churn"}


def created_at(session: GumloopSession) -> datetime:
    """When a listed session was created (the emulator gives every session a creation time)."""
    assert session.created_at is not None
    return session.created_at


def gumloop_seeded() -> int:
    from airflow_provider_runwatch.emulator.gumloop import SEEDED_SESSIONS_PER_AGENT

    return SEEDED_SESSIONS_PER_AGENT


# -- flows ------------------------------------------------------------------------------------------------------
def test_flow_life_cycle_and_kill(secret_connections: dict[str, str], runwatch_emulator: EmulatorServer) -> None:
    hook = GumloopHook(retry=FAST)
    started = hook.start_pipeline("flow_enrich", {"company": "Acme [emulator: polls=1]", "limit": 5})
    assert started.url and started.run_id in started.url
    assert hook.get_pl_run(started.run_id).state == "RUNNING"
    done = hook.get_result(hook.flows, started.run_id)
    assert done.answer["inputs"] == {"company": "Acme", "limit": 5}
    assert done.summary.duration_seconds == 2.0
    body = runwatch_emulator.requests(method="POST", run_id=started.run_id)
    assert len(body) == 1
    killed = hook.start_pipeline("flow_enrich", {"company": "Globex [emulator: polls=never]"})
    assert hook.kill_pipeline(killed.run_id).success is True
    assert [hook.get_pl_run(killed.run_id).state for _ in range(3)] == ["TERMINATING", "TERMINATING", "TERMINATED"]
    assert hook.get_status(hook.flows, killed.run_id).state is RunState.FAILED


def test_flow_documented_errors(secret_connections: dict[str, str]) -> None:
    hook = GumloopHook(retry=NO_RETRY)
    with pytest.raises(NotFoundError, match="Saved item not found"):
        hook.start_pipeline("missing_flow", {})
    with pytest.raises(NotFoundError, match="Run not found"):
        hook.get_pl_run("nope")
    run_id = hook.start_pipeline("flow_1", {}).run_id
    with pytest.raises(AuthError, match="HTTP 403"):
        hook.get_pl_run(run_id, user_id="someone_else")
    with pytest.raises(ClientError, match="saved_item_id is required"):
        send(hook, "POST", "/start_pipeline", json={"user_id": "u"})
    with pytest.raises(ClientError, match="pipeline_inputs must be"):
        send(hook, "POST", "/start_pipeline", json={"user_id": "u", "saved_item_id": "f", "pipeline_inputs": {}})


@pytest.mark.anyio
async def test_flow_async_twins(secret_connections: dict[str, str]) -> None:
    hook = GumloopHook(retry=FAST)
    started = await hook.astart_pipeline("flow_async", {"q": "x [emulator: polls=never]"})
    assert (await hook.aget_pl_run(started.run_id)).state == "RUNNING"
    assert (await hook.akill_pipeline(started.run_id)).success is True
    assert await hook.acancel(hook.flows, started.run_id) is True


# -- connection test --------------------------------------------------------------------------------------------
def test_connection_test_starts_nothing(secret_connections: dict[str, str], runwatch_emulator: EmulatorServer) -> None:
    runwatch_emulator.clear_requests()
    ok, message = GumloopHook().test_connection()
    assert ok is True, message
    assert "agent interactions" in message and "sessions" in message
    assert [r["method"] for r in runwatch_emulator.requests(vendor="gumloop")] == ["GET", "GET"]


def test_connection_test_catches_a_wrong_host_and_a_missing_identity(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer
) -> None:
    wrong = GumloopHook(conn(monkeypatch, runwatch_emulator, "gl_wrong", host=runwatch_emulator.url))
    ok, message = wrong.test_connection()
    assert ok is False and "check the host" in message
    bare = GumloopHook(conn(monkeypatch, runwatch_emulator, "gl_bare", login=None))
    ok, message = bare.test_connection()
    assert ok is False and "Login" in message
