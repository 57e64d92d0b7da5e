"""Gumloop endpoints of the emulator over real HTTP: documented errors, scenario mapping, faults, paging."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import httpx

    from airflow_provider_runwatch.emulator.server import EmulatorServer

KEY = "gl_live_emulator_test_key_0123456789"
V1 = "/api/v1"


class Gumloop:
    def __init__(self, http: httpx.Client, key: str = KEY, user: str = "usr_test") -> None:
        self.http, self.key, self.user = http, key, user

    def headers(self, key: str | None = None, user: str | None = None, **extra: str) -> dict[str, str]:
        h = {"Authorization": f"Bearer {key or self.key}", "x-auth-key": user or self.user}
        return {**h, **extra}

    def start_agent(self, message: str = "Acme", **body: Any) -> httpx.Response:
        payload = {"gummie_id": "gummie_1", "message": message, "user_id": self.user, **body}
        return self.http.post(f"{V1}/start_agent", json=payload, headers=self.headers())

    def agent_status(self, interaction_id: str, **params: str) -> httpx.Response:
        return self.http.get(
            f"{V1}/agent_status/{interaction_id}", params=params or {"user_id": self.user}, headers=self.headers()
        )

    def create(self, body: Any, agent: str = "agent_1", **headers: str) -> httpx.Response:
        return self.http.post(f"{V1}/agents/{agent}/sessions", json=body, headers=self.headers(**headers))

    def session(self, session_id: str) -> httpx.Response:
        return self.http.get(f"{V1}/sessions/{session_id}", headers=self.headers())

    def states(self, session_id: str, count: int) -> list[str]:
        return [self.session(session_id).json()["session"]["state"] for _ in range(count)]

    def start_flow(self, inputs: list[dict[str, Any]], **body: Any) -> httpx.Response:
        payload = {"saved_item_id": "flow_1", "user_id": self.user, "pipeline_inputs": inputs, **body}
        return self.http.post(f"{V1}/start_pipeline", json=payload, headers=self.headers())

    def flow(self, run_id: str) -> httpx.Response:
        return self.http.get(
            f"{V1}/get_pl_run", params={"run_id": run_id, "user_id": self.user}, headers=self.headers()
        )


@pytest.fixture
def gl(http: httpx.Client, emulator: EmulatorServer) -> Gumloop:
    emulator.reset()
    return Gumloop(http)


# -- interactions -----------------------------------------------------------------------------------------------
def test_interaction_life_cycle(gl: Gumloop, emulator: EmulatorServer) -> None:
    started = gl.start_agent("Summarise Acme [emulator: polls=1]")
    assert started.status_code == 202
    interaction_id = started.json()["interaction_id"]
    assert started.json() == {"interaction_id": interaction_id, "status": "processing"}
    running = gl.agent_status(interaction_id).json()
    assert running["state"] == "ASYNC_PROCESSING" and "response" not in running
    done = gl.agent_status(interaction_id).json()
    assert done["state"] == "COMPLETED" and done["response"].startswith("Summary for 'Summarise Acme'")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", done["created_ts"]), "naive, like Gumloop's"
    user, assistant = done["messages"]
    assert user["content"].startswith("Summarise Acme") and user["parts"] == []
    assert assistant["content"] is None
    assert [p["type"] for p in assistant["parts"]] == ["step-start", "reasoning", "tool_invocation", "text"]
    record = emulator.run(interaction_id)
    assert record["vendor"] == "gumloop" and record["state"] == "COMPLETED" and record["data"]["kind"] == "interaction"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"gummie_id": None}, 400, "gummie_id is required"),
        ({"message": ""}, 400, "message is required"),
        ({"user_id": None}, 400, "project_id or user_id is required"),
        ({"gummie_id": "missing_1"}, 404, "gummie_not_found"),
        ({"gummie_id": "private_1"}, 403, "unauthorized_gummie_access"),
        ({"interaction_id": "nope"}, 404, "interaction_not_found"),
        ({"message": "x [emulator: pols=1]"}, 400, "emulator: unknown scenario key 'pols'"),
        ({"message": "x [emulator: start_status=402]"}, 402, "Insufficient credits"),
    ],
)
def test_start_agent_errors(gl: Gumloop, body: dict[str, Any], status: int, error: str) -> None:
    response = gl.start_agent(**body)
    assert (response.status_code, response.json()) == (status, {"error": error})


def test_continuing_a_conversation(gl: Gumloop) -> None:
    running = gl.start_agent("x [emulator: polls=never]").json()["interaction_id"]
    assert gl.start_agent("more", interaction_id=running).json() == {"error": "interaction_not_in_terminal_state"}
    done = gl.start_agent("first [emulator: polls=0]").json()["interaction_id"]
    gl.agent_status(done)
    assert gl.start_agent("more", gummie_id="gummie_2", interaction_id=done).status_code == 400
    other = gl.start_agent("more", interaction_id=done, user_id="usr_other")
    assert (other.status_code, other.json()["error"]) == (403, "unauthorized_interaction_access")
    assert gl.start_agent("second [emulator: polls=0]", interaction_id=done).status_code == 202
    messages = gl.agent_status(done).json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]


def test_agent_status_errors_and_faults(gl: Gumloop) -> None:
    interaction_id = gl.start_agent("x [emulator: http5xx=1 rate_limit=1 retry_after=3 malformed=1 polls=0]").json()[
        "interaction_id"
    ]
    assert gl.agent_status(interaction_id, user_id="usr_other").json() == {"error": "unauthorized"}
    assert gl.agent_status(interaction_id, foo="bar").json() == {"error": "project_id or user_id is required"}
    assert gl.agent_status("nope").status_code == 404
    answers = [gl.agent_status(interaction_id) for _ in range(4)]
    assert [a.status_code for a in answers] == [503, 429, 200, 200]
    assert answers[0].headers["content-type"].startswith("text/html")
    assert answers[1].headers["retry-after"] == "3"
    with pytest.raises(json.JSONDecodeError):
        answers[2].json()
    assert answers[3].json()["state"] == "COMPLETED"


@pytest.mark.parametrize(("key", "status"), [("gl_invalid_x", 401), ("gl_noaccess_x", 403), ("gl_team_x", 403)])
def test_keys(gl: Gumloop, http: httpx.Client, key: str, status: int) -> None:
    legacy = http.post(f"{V1}/start_agent", json={}, headers={"Authorization": f"Bearer {key}"})
    assert legacy.status_code == status and isinstance(legacy.json()["error"], str)
    new = http.get(f"{V1}/sessions/sess_x", headers={"Authorization": f"Bearer {key}", "x-auth-key": "u"})
    assert new.status_code == status and set(new.json()["error"]) == {"message", "type", "code"}
    team = http.get(f"{V1}/sessions/sess_x", params={"team_id": "t1"}, headers={"Authorization": "Bearer gl_team_x"})
    assert team.status_code == 404, "a team key with team_id needs no x-auth-key"


def test_api_key_query_param_works_and_is_never_logged(
    gl: Gumloop, http: httpx.Client, emulator: EmulatorServer
) -> None:
    response = http.post(
        f"{V1}/start_agent", params={"api_key": KEY}, json={"gummie_id": "g", "message": "hi", "project_id": "p1"}
    )
    assert response.status_code == 202
    assert KEY not in json.dumps(emulator.requests(vendor="gumloop"))


# -- sessions ---------------------------------------------------------------------------------------------------
def test_session_start_poll_and_complete(gl: Gumloop, emulator: EmulatorServer) -> None:
    created = gl.create({"input": "Review Acme [emulator: queued=1 polls=2]", "metadata": {"crm": "A-1"}})
    assert created.status_code == 202
    body = created.json()
    session_id = body["session"]["id"]
    assert re.fullmatch(r"sess_[0-9a-f]{24}", session_id)
    assert (body["session"]["state"], body["queue_position"]) == ("queued", 1)
    assert gl.states(session_id, 3) == ["queued", "processing", "completed"]
    session = gl.session(session_id).json()["session"]
    assert session["metadata"] == {"crm": "A-1"} and session["usage"]["credit_cost"] == 12
    assert session["messages"][-1]["parts"][-1]["text"].startswith("Summary for 'Review Acme'")
    assert emulator.run(session_id)["state"] == "completed"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"input": "hi", "stream": True}, 400, "streaming_not_supported"),
        ({"input": 5}, 400, "invalid_input"),
        ({"input": "hi", "metadata": []}, 400, "invalid_metadata"),
        ({"input": "hi", "session_id": "bad id"}, 400, "invalid_session_id"),
        ({"input": "x [emulator: start_status=409]"}, 409, "session_already_exists"),
        ({"input": "x [emulator: start_status=413]"}, 413, "request_too_large"),
        ({"input": "x [emulator: start_status=429]"}, 429, "concurrency_limit_exceeded"),
    ],
)
def test_session_start_errors(gl: Gumloop, body: dict[str, Any], status: int, code: str) -> None:
    response = gl.create(body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_session_id_idempotency_and_idle_stub(gl: Gumloop) -> None:
    assert gl.create({"input": "hi", "session_id": "sess_airflow_abc"}).status_code == 202
    again = gl.create({"input": "hi", "session_id": "sess_airflow_abc"})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "session_already_exists")
    idle = gl.create({})
    assert idle.status_code == 201 and idle.json()["session"]["state"] == "idle"
    assert gl.states(idle.json()["session"]["id"], 2) == ["idle", "idle"]
    assert gl.create({"input": "hi"}, agent="missing_agent").json()["error"]["code"] == "agent_not_found"
    assert gl.create({"input": "hi"}, **{"x-auth-key": ""}).status_code == 401


def test_request_body_over_10_mb_is_413(gl: Gumloop, http: httpx.Client) -> None:
    big = b'{"input": "' + b"x" * (10 * 1024 * 1024 + 1) + b'"}'
    response = http.post(f"{V1}/agents/agent_1/sessions", content=big, headers=gl.headers())
    assert (response.status_code, response.json()["error"]["code"]) == (413, "request_too_large")


def test_free_plan_concurrency(gl: Gumloop) -> None:
    free = "gl_free_key_1"
    ids = [gl.create({"input": "x [emulator: polls=never]"}, Authorization=f"Bearer {free}") for _ in range(5)]
    assert [r.status_code for r in ids] == [202] * 5
    refused = gl.create({"input": "one more"}, Authorization=f"Bearer {free}")
    assert refused.status_code == 429 and "retry-after" not in refused.headers
    assert gl.create({"input": "another key"}).status_code == 202


def test_cancel_settles_two_polls_later(gl: Gumloop, http: httpx.Client, emulator: EmulatorServer) -> None:
    session_id = gl.create({"input": "x [emulator: polls=1]"}).json()["session"]["id"]
    cancel = http.post(f"{V1}/sessions/{session_id}/cancel", json={}, headers=gl.headers())
    assert cancel.status_code == 200 and cancel.json()["session"]["state"] == "processing"
    assert gl.states(session_id, 3) == ["processing", "processing", "failed"]
    failed = gl.session(session_id).json()["session"]
    assert failed["messages"][-1]["parts"][0] == {"id": "part_1", "type": "error", "error": "Agent run was cancelled"}
    assert emulator.run(session_id)["cancel_requested_at"] is not None
    scenario_cancelled = gl.create({"input": "x [emulator: polls=0 outcome=cancelled]"}).json()["session"]["id"]
    assert gl.states(scenario_cancelled, 1) == ["cancelled"]


def test_approvals(gl: Gumloop, http: httpx.Client) -> None:
    session_id = gl.create({"input": "Email [emulator: polls=1 outcome=paused]"}).json()["session"]["id"]
    url = f"{V1}/sessions/{session_id}/approvals"
    early = http.post(
        url, json={"approval_responses": [{"action_request_id": "a", "action": "accept"}]}, headers=gl.headers()
    )
    assert (early.status_code, early.json()["error"]["code"]) == (409, "no_pending_approvals")
    assert gl.states(session_id, 2) == ["processing", "approval_required"]
    paused = gl.session(session_id).json()["session"]
    pending = paused["pending_approvals"]
    assert pending[0]["tool_name"] == "send_email" and pending[0]["action_request_id"].startswith("act_")
    assert paused["messages"][-1]["parts"][1]["toolCallState"] == "approval-requested"
    bad = http.post(
        url, json={"approval_responses": [{"action_request_id": "act_x", "action": "accept"}]}, headers=gl.headers()
    )
    assert bad.json()["error"]["code"] == "unknown_action_request"
    assert http.post(url, json={}, headers=gl.headers()).status_code == 400
    ok = {"approval_responses": [{"action_request_id": pending[0]["action_request_id"], "action": "accept"}]}
    assert http.post(url, json=ok, headers=gl.headers()).status_code == 200
    assert gl.states(session_id, 2) == ["processing", "completed"]


def test_follow_up_message(gl: Gumloop, http: httpx.Client) -> None:
    session_id = gl.create({"input": "first [emulator: polls=1]"}).json()["session"]["id"]
    url = f"{V1}/sessions/{session_id}/messages"
    busy = http.post(url, json={"input": "more"}, headers=gl.headers())
    assert (busy.status_code, busy.json()["error"]["code"]) == (409, "session_busy")
    gl.states(session_id, 2)
    assert http.post(url, json={"input": "second [emulator: polls=0]"}, headers=gl.headers()).status_code == 202
    messages = gl.session(session_id).json()["session"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]


def test_listing_pages_filters_and_sort(gl: Gumloop, http: httpx.Client) -> None:
    gl.create({"input": "live one [emulator: polls=0]"}, agent="agent_list")
    url = f"{V1}/agents/agent_list/sessions"
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"page_size": 10, **({"cursor": cursor} if cursor else {})}
        body = http.get(url, params=params, headers=gl.headers()).json()
        seen += body["sessions"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 5 and len(seen) == 46 and len({s["id"] for s in seen}) == 46
    assert all("messages" not in s for s in seen)
    assert [s["created_at"] for s in seen] == sorted((s["created_at"] for s in seen), reverse=True)
    assert {s["type"] for s in seen} >= {"api", "web", "slack", "scheduled", "webhook"}
    assert {s["state"] for s in seen} >= {"completed", "failed", "idle", "approval_required", "cancelled"}

    def count(**params: Any) -> list[dict[str, Any]]:
        body = http.get(url, params={"page_size": 100, **params}, headers=gl.headers()).json()
        assert body["next_cursor"] is None
        sessions: list[dict[str, Any]] = body["sessions"]
        return sessions

    oldest = count(sort_order="oldest")
    assert oldest == list(reversed(seen))
    for name, value in [("type", "slack"), ("state", "failed"), ("trigger_id", "trg_webhook_1")]:
        hits = count(**{name: value})
        assert hits and len(hits) == sum(1 for s in seen if s.get(name) == value)
    bob = count(creator_user_id="usr_bob")
    assert bob and all(s["creator"]["user_id"] == "usr_bob" for s in bob)
    assert [s["name"] for s in count(search="live ONE")] == ["live one"]
    bad = http.get(url, params={"cursor": "x"}, headers=gl.headers())
    assert bad.json()["error"]["code"] == "invalid_cursor"
    first = http.get(url, params={"page_size": 10}, headers=gl.headers()).json()["next_cursor"]
    changed = http.get(url, params={"page_size": 10, "state": "failed", "cursor": first}, headers=gl.headers())
    assert changed.status_code == 400, "a cursor belongs to its filters"
    for params in ({"page_size": 0}, {"page_size": 101}, {"page_size": "x"}, {"sort_order": "random"}):
        assert http.get(url, params=params, headers=gl.headers()).status_code == 400
    seeded = seen[-1]["id"]
    assert gl.session(seeded).json()["session"]["id"] == seeded


# -- flows ------------------------------------------------------------------------------------------------------
def test_flow_life_cycle_and_kill(gl: Gumloop, http: httpx.Client) -> None:
    started = gl.start_flow([{"input_name": "company", "value": "Acme [emulator: queued=1 polls=2]"}]).json()
    run_id = started["run_id"]
    assert started["url"].endswith(f"run_id={run_id}&workbook_id=flow_1")
    states = [gl.flow(run_id).json() for _ in range(3)]
    assert [s["state"] for s in states] == ["QUEUED", "RUNNING", "DONE"]
    assert states[-1]["outputs"]["inputs"] == {"company": "Acme"} and states[-1]["finished_ts"]
    killed = gl.start_flow([]).json()["run_id"]
    kill = http.post(f"{V1}/kill_pipeline", json={"run_id": killed, "user_id": gl.user}, headers=gl.headers())
    assert kill.json() == {"success": True, "run_id": killed}
    assert [gl.flow(killed).json()["state"] for _ in range(3)] == ["TERMINATING", "TERMINATING", "TERMINATED"]
    again = http.post(f"{V1}/kill_pipeline", json={"run_id": killed, "user_id": gl.user}, headers=gl.headers())
    assert again.json()["success"] is False


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"saved_item_id": None}, 400, "saved_item_id is required"),
        ({"user_id": None}, 400, "project_id or user_id is required"),
        ({"pipeline_inputs": [{"name": "x"}]}, 400, "pipeline_inputs must be a list of {input_name, value}"),
        ({"saved_item_id": "missing_flow"}, 404, "Saved item not found"),
        ({"saved_item_id": "private_flow"}, 403, "Unauthorized"),
    ],
)
def test_start_pipeline_errors(gl: Gumloop, body: dict[str, Any], status: int, error: str) -> None:
    response = gl.start_flow([], **body)
    assert (response.status_code, response.json()) == (status, {"error": error})


def test_failed_flow_logs_the_error(gl: Gumloop, http: httpx.Client) -> None:
    run_id = gl.start_flow([{"input_name": "q", "value": "[emulator: polls=0 outcome=failed error='boom']"}]).json()[
        "run_id"
    ]
    failed = gl.flow(run_id).json()
    assert failed["state"] == "FAILED" and failed["log"][-1].endswith("Error in node 'Ask AI': boom")
    missing = http.get(f"{V1}/get_pl_run", params={"user_id": "u"}, headers=gl.headers())
    assert missing.json() == {"error": "run_id is required"}
