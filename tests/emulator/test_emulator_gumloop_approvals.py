"""Gumloop sessions that pause for approval several times (scenario ``approvals=`` / ``on_reject=``), over HTTP."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from tests.emulator.test_emulator_gumloop import V1, Gumloop, gl  # noqa: F401  (gl is a fixture)

from airflow_provider_runwatch.emulator.scenario import ScenarioError, parse_scenario

if TYPE_CHECKING:
    import httpx


def _answer(http: httpx.Client, g: Gumloop, session_id: str, answers: list[dict[str, Any]]) -> httpx.Response:
    return http.post(f"{V1}/sessions/{session_id}/approvals", json={"approval_responses": answers}, headers=g.headers())


def _pending(g: Gumloop, session_id: str) -> list[dict[str, Any]]:
    session = g.session(session_id).json()["session"]
    assert session["state"] == "approval_required", session["state"]
    pending: list[dict[str, Any]] = session["pending_approvals"]
    return pending


def test_pauses_once_per_round_then_completes(gl: Gumloop, http: httpx.Client) -> None:  # noqa: F811
    body = {"input": "Acme [emulator: polls=0 approvals=send_email/update_crm+post_slack]"}
    session_id = gl.create(body).json()["session"]["id"]
    first = _pending(gl, session_id)
    assert [p["tool_name"] for p in first] == ["send_email"]
    accept = [{"action_request_id": first[0]["action_request_id"], "action": "accept"}]
    assert _answer(http, gl, session_id, accept).status_code == 200
    assert gl.states(session_id, 1) == ["processing"]
    second = _pending(gl, session_id)
    assert [p["tool_name"] for p in second] == ["update_crm", "post_slack"]
    assert len({p["action_request_id"] for p in [*first, *second]}) == 3
    message = gl.session(session_id).json()["session"]["messages"][-1]
    assert [part.get("toolName") for part in message["parts"][1:]] == ["update_crm", "post_slack"]
    ok = _answer(
        http,
        gl,
        session_id,
        [
            {"action_request_id": second[0]["action_request_id"], "action": "accept"},
            {"action_request_id": second[1]["action_request_id"], "action": "reject"},
        ],
    )
    assert ok.status_code == 200 and ok.json()["session"]["state"] == "processing"
    assert gl.states(session_id, 2) == ["processing", "completed"]
    final = gl.session(session_id).json()["session"]["messages"][-1]
    assert final["content"] == "Understood: I did not run post_slack."


def test_reject_fails_the_session_when_scripted(gl: Gumloop, http: httpx.Client) -> None:  # noqa: F811
    session_id = gl.create({"input": "Acme [emulator: polls=0 approvals=wire_money on_reject=fail]"}).json()
    session_id = session_id["session"]["id"]
    pending = _pending(gl, session_id)
    _answer(http, gl, session_id, [{"action_request_id": pending[0]["action_request_id"], "action": "reject"}])
    assert gl.states(session_id, 2) == ["processing", "failed"]
    error = gl.session(session_id).json()["session"]["messages"][-1]["parts"][0]["error"]
    assert error == f"Tool call wire_money ({pending[0]['action_request_id']}) was rejected; the agent cannot go on"


def test_approvals_body_is_validated(gl: Gumloop, http: httpx.Client) -> None:  # noqa: F811
    session_id = gl.create({"input": "Acme [emulator: polls=0 approvals=a+b]"}).json()["session"]["id"]
    a, b = (p["action_request_id"] for p in _pending(gl, session_id))
    cases = [
        ([{"action_request_id": a, "action": "accept"}], "missing " + b),
        ([{"action_request_id": a, "action": "accept"}, {"action_request_id": a, "action": "reject"}], "twice"),
        ([{"action_request_id": a, "action": "maybe"}], "accept|reject"),
        ([{"action_request_id": "act_nope", "action": "accept"}], "unknown action_request_id"),
    ]
    for answers, text in cases:
        response = _answer(http, gl, session_id, answers)
        assert response.status_code == 400 and text in response.json()["error"]["message"], response.text
    assert _pending(gl, session_id)  # nothing was applied
    both = [{"action_request_id": a, "action": "accept"}, {"action_request_id": b, "action": "accept"}]
    assert _answer(http, gl, session_id, both).status_code == 200
    assert _answer(http, gl, session_id, both).status_code == 409  # resuming: nothing pending any more


def test_scenario_keys_are_strict() -> None:
    parsed = parse_scenario("[emulator: approvals=a+b/c]")
    assert parsed is not None and parsed.outcome == "paused" and parsed.approvals == "a+b/c"
    with pytest.raises(ScenarioError, match="'approvals' takes tool names"):
        parse_scenario("[emulator: approvals=a//b]")
    with pytest.raises(ScenarioError, match="on_reject"):
        parse_scenario("[emulator: on_reject=maybe]")


def test_seconds_time_the_first_pause_and_polls_the_resume(gl: Gumloop, http: httpx.Client) -> None:  # noqa: F811
    """``seconds=S polls=N``: the first pause comes S seconds after the start however often it is read, the
    resume after an answer takes N reads (the e2e approvals DAG times its first pause this way)."""
    body = {"input": "Acme [emulator: seconds=0.5 polls=2 approvals=send_email]"}
    session_id = gl.create(body).json()["session"]["id"]
    assert set(gl.states(session_id, 5)) == {"processing"}
    time.sleep(0.55)
    pending = _pending(gl, session_id)
    _answer(http, gl, session_id, [{"action_request_id": pending[0]["action_request_id"], "action": "accept"}])
    assert gl.states(session_id, 3) == ["processing", "processing", "completed"]
