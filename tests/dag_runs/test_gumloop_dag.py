"""Gumloop through real Airflow: `airflow dags test` in a throwaway AIRFLOW_HOME, emulator over loopback.

One DAG run (tests/dag_files/runwatch_test_gumloop.py) covers every operator and sensor in both modes; each test reads
what Airflow stored and what the emulator saw. While it runs, a thread plays the human who answers the approval
the ``approval_wait`` task is waiting for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.conftest import SECRET_KEY, DagResult

pytestmark = pytest.mark.dag


def approve_when_asked(emulator: EmulatorServer, stop: threading.Event) -> list[str]:
    """Accept the pending approval of the session whose input says "wait for approval", once it asks."""
    approved: list[str] = []
    headers = {"Authorization": f"Bearer {SECRET_KEY}", "x-auth-key": "emulator-user"}
    with httpx.Client(base_url=emulator.url, timeout=10, trust_env=False) as http:
        while not stop.wait(0.3) and not approved:
            for run in http.get("/_emulator/runs", params={"vendor": "gumloop"}).json()["runs"]:
                if run["state"] == "approval_required" and "wait for approval" in run["data"].get("prompt", ""):
                    session = http.get(f"/api/v1/sessions/{run['id']}", headers=headers).json()["session"]
                    action = session["pending_approvals"][0]["action_request_id"]
                    body = {"approval_responses": [{"action_request_id": action, "action": "accept"}]}
                    http.post(f"/api/v1/sessions/{run['id']}/approvals", json=body, headers=headers).raise_for_status()
                    approved.append(run["id"])
    return approved


@pytest.fixture(scope="module")
def approvals(runwatch_emulator: EmulatorServer) -> Iterator[list[str]]:
    stop = threading.Event()
    approved: list[str] = []
    thread = threading.Thread(target=lambda: approved.extend(approve_when_asked(runwatch_emulator, stop)), daemon=True)
    thread.start()
    yield approved
    stop.set()
    thread.join(5)


@pytest.fixture(scope="module")
def result(dag_runner: Callable[..., DagResult], approvals: list[str]) -> DagResult:
    return dag_runner("runwatch_test_gumloop")


def test_task_states(result: DagResult) -> None:
    assert result.states == {
        "agent_deferred": "success",
        "agent_blocking": "success",
        "agent_start": "success",
        "agent_sensor_deferred": "success",
        "agent_sensor_poke": "success",
        "session_deferred": "success",
        "session_blocking": "success",
        "session_start": "success",
        "session_sensor_deferred": "success",
        "session_sensor_poke": "success",
        "session_retry": "success",
        "session_timeout": "failed",
        "approval_fail": "failed",
        "approval_succeed": "success",
        "approval_wait": "success",
        "flow_deferred": "success",
        "flow_blocking": "success",
        "flow_start": "success",
        "flow_sensor_deferred": "success",
        "flow_sensor_poke": "success",
        "list_sessions": "success",
    }, result.output[-4000:]


def test_agent_operator_and_sensors(result: DagResult, runwatch_emulator: EmulatorServer) -> None:
    run_id = result.xcom("agent_deferred", "run_id")
    assert result.xcom("agent_deferred").startswith("Summary for 'Summarise Acme Corp'")
    assert [m["role"] for m in result.xcom("agent_deferred", "messages")] == ["user", "assistant"]
    run = result.xcom("agent_deferred", "run")
    assert (run["vendor"], run["run_id"], run["state"], run["vendor_state"]) == (
        "Gumloop",
        run_id,
        "succeeded",
        "COMPLETED",
    )
    assert run["tool_calls"] == ["web_search"]
    assert f"Deferring: the triggerer polls Gumloop agent interaction {run_id} every 1s" in result.output
    # The blocking operator's user_id override reached its polls, and the poke sensor's reads.
    blocking_id = result.xcom("agent_blocking", "run_id")
    reads = runwatch_emulator.requests(method="GET", run_id=blocking_id)
    assert reads and all(r["query"] == {"user_id": "usr_override"} for r in reads)
    assert [r["status"] for r in reads][:2] == [503, 200]
    assert result.xcom("agent_sensor_poke") == result.xcom("agent_blocking")
    started = result.xcom("agent_start")
    assert started == result.xcom("agent_start", "run_id"), "wait_for_completion=False returns the run id"
    assert result.xcom("agent_sensor_deferred").startswith("Summary for 'Summarise Gamma Inc'")


def test_session_operator_and_sensors(result: DagResult, runwatch_emulator: EmulatorServer) -> None:
    run_id = result.xcom("session_deferred", "run_id")
    assert run_id.startswith("sess_airflow_")
    assert result.xcom("session_deferred").startswith("Summary for 'Review Acme Corp'")
    run = result.xcom("session_deferred", "run")
    assert run["state"] == "succeeded" and run["cost"]["credit_cost"] == 12 and run["usage"]["output_tokens"] == 420
    assert runwatch_emulator.run(run_id)["data"]["metadata"] == {"dag_run": result.dag_run_id}
    assert "queue position 1" in result.output
    assert "rate limited (HTTP 429)" in result.output
    assert result.xcom("session_sensor_poke") == result.xcom("session_blocking")
    assert result.xcom("session_sensor_deferred").startswith("Summary for 'Review Gamma Inc'")


def test_retry_reattached_instead_of_starting_a_second_session(
    result: DagResult, runwatch_emulator: EmulatorServer
) -> None:
    run_id = result.xcom("session_retry", "run_id")
    assert result.xcom("session_retry").startswith("Summary for 'Review Delta Co'")
    starts = runwatch_emulator.requests(method="POST", path_prefix="/api/v1/agents/agent_dag/sessions", run_id=run_id)
    assert [s["status"] for s in starts] == [202, 409], "two tries, one session"
    assert f"Stopped watching Gumloop session {run_id}" in result.output
    assert "started by an earlier try" in result.output and "reattaching instead of starting another" in result.output
    created = [
        r
        for r in runwatch_emulator.requests(method="POST", path_prefix="/api/v1/agents/agent_dag/sessions")
        if r["status"] == 202 and "Delta" in (runwatch_emulator.run(r["run_id"])["data"].get("prompt") or "")
    ]
    assert len(created) == 1


def test_deadline_cancels_the_session(result: DagResult, runwatch_emulator: EmulatorServer) -> None:
    run_id = result.xcom("session_timeout", "run_id")
    assert f"Gumloop session {run_id} did not finish before the deadline" in result.output
    assert "Cancel requested." in result.output
    assert runwatch_emulator.run(run_id)["cancel_requested_at"] is not None
    assert result.xcom("session_timeout", "run")["outcome"] == "timeout"


def test_approvals(result: DagResult, approvals: list[str]) -> None:
    failed_id = result.xcom("approval_fail", "run_id")
    assert f"Gumloop session {failed_id} is waiting for a human approval" in result.output
    assert "1 pending approval: send_email (act_" in result.output
    assert result.xcom("approval_fail", "pending_approvals")[0]["tool_name"] == "send_email"
    assert result.xcom("approval_succeed") == "I drafted the summary email and need your approval to send it."
    assert result.xcom("approval_succeed", "pending_approvals")[0]["action_request_id"].startswith("act_")
    assert result.xcom("approval_succeed", "run")["state"] == "paused"
    assert approvals == [result.xcom("approval_wait", "run_id")]
    assert result.xcom("approval_wait").startswith("Summary for 'Email the owner of Gamma, wait for approval'")


def test_flow_operator_and_sensors(result: DagResult, runwatch_emulator: EmulatorServer) -> None:
    run_id = result.xcom("flow_deferred", "run_id")
    assert result.xcom("flow_deferred", "run_url") == (
        f"https://www.gumloop.com/pipeline?run_id={run_id}&workbook_id=flow_enrich"
    )
    assert result.xcom("flow_deferred")["inputs"] == {"company": "Acme Corp", "limit": 5}
    assert result.xcom("flow_deferred", "run")["vendor_state"] == "DONE"
    assert result.xcom("flow_blocking")["inputs"] == {"company": "Beta LLC"}, "templated inputs"
    assert result.xcom("flow_sensor_poke") == result.xcom("flow_blocking")
    assert result.xcom("flow_sensor_deferred")["inputs"] == {"company": "Gamma Inc"}
    kills = runwatch_emulator.requests(method="POST", path_prefix="/api/v1/kill_pipeline")
    assert kills == [], "nothing was killed"


def test_listing(result: DagResult) -> None:
    sessions = result.xcom("list_sessions")
    assert len(sessions) == 25 and all(s["state"] == "completed" for s in sessions)
    assert "Listed 25 Gumloop sessions of agent agent_dag_list" in result.output
