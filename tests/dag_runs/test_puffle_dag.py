"""Puffle through real Airflow: `airflow dags test` in a throwaway AIRFLOW_HOME, emulator over loopback.

One DAG run (tests/dag_files/runwatch_test_puffle.py) covers every path; each test reads what Airflow stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.conftest import SECRET_KEY, DagResult

pytestmark = pytest.mark.dag


@pytest.fixture(scope="module")
def result(dag_runner: Callable[..., DagResult]) -> DagResult:
    return dag_runner("runwatch_test_puffle")


@pytest.fixture(scope="module")
def deferred_run(result: DagResult, runwatch_emulator: EmulatorServer) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The GETs the DAG sent for the deferred task's run, then that run as Puffle (the emulator) answers it
    (read after the count, so the count is the DAG's own)."""
    run_id = result.xcom("deferred", "run_id")
    gets = runwatch_emulator.requests(method="GET", run_id=run_id)
    held = httpx.get(
        f"{runwatch_emulator.url}/api/agent/chat/{run_id}",
        headers={"Authorization": f"Bearer {SECRET_KEY}"},
        trust_env=False,
    )
    held.raise_for_status()
    return gets, held.json()


def test_task_states(result: DagResult) -> None:
    assert result.states == {
        "deferred": "success",
        "blocking": "success",
        "sensor": "success",
        "failed": "failed",
        "cancelled": "failed",
        "timed_out": "failed",
        "budget_spent": "failed",
    }, result.output[-3000:]


def test_deferred_operator_pushes_answer_messages_and_run(
    result: DagResult, deferred_run: tuple[list[dict[str, Any]], dict[str, Any]]
) -> None:
    run_id = result.xcom("deferred", "run_id")
    assert run_id.startswith("run_")
    answer = result.xcom("deferred")
    assert "Acme Corp" in answer and "[emulator" not in answer
    messages = result.xcom("deferred", "messages")
    assert messages[0] == {"role": "user", "content": "Hi"}
    assert any(m.get("role") == "assistant" for m in messages)
    run = result.xcom("deferred", "run")
    assert run["vendor"] == "Puffle"
    assert run["run_id"] == run_id
    assert run["state"] == "succeeded"
    assert run["vendor_state"] == "completed"
    assert run["tool_calls"] == ["web_search"]
    # The answer and the conversation are what Puffle (the emulator) holds for that run, not a hard-coded string.
    _, held = deferred_run
    assert (held["runId"], held["status"]) == (run_id, "completed")
    assert answer == held["text"]
    assert messages == held["messages"]
    assert "Deferring" in result.output and f"Started Puffle chat run {run_id}" in result.output


def test_trigger_did_the_waiting(
    result: DagResult, runwatch_emulator: EmulatorServer, deferred_run: tuple[list[dict[str, Any]], dict[str, Any]]
) -> None:
    run_id = result.xcom("deferred", "run_id")
    gets, _ = deferred_run
    # queued=1 polls=3: the trigger sees 3 non-terminal answers, then completed (4); the operator then fetches
    # the result once (5); the sensor, started after, pokes once and fetches the result (7). No start retried.
    assert len(gets) == 7, gets
    assert all(g["status"] == 200 for g in gets)
    starts = list(runwatch_emulator.requests(method="POST", run_id=run_id))
    assert len(starts) == 1


def test_blocking_operator_rides_out_5xx_and_429(result: DagResult) -> None:
    assert "Summarise Beta LLC" in result.xcom("blocking")
    assert "server error (HTTP 503)" in result.output
    assert "rate limited (HTTP 429)" in result.output


def test_sensor_returns_the_same_answer(result: DagResult) -> None:
    assert result.xcom("sensor") == result.xcom("deferred")


def test_failures_are_one_clear_line_with_run_id(result: DagResult) -> None:
    failed_id = result.xcom("failed", "run_id")
    assert (
        f"Puffle chat run {failed_id} failed (vendor state 'failed'): tool web_search exploded. "
        "Check the input and the agent, then retry the task." in result.output
    )
    assert result.xcom("failed", "run")["error"] == "tool web_search exploded"
    cancelled_id = result.xcom("cancelled", "run_id")
    assert f"Puffle chat run {cancelled_id} was cancelled (vendor state 'cancelled')" in result.output
    timed_id = result.xcom("timed_out", "run_id")
    assert f"Puffle chat run {timed_id} did not finish before the deadline" in result.output
    assert "Puffle cannot cancel it: it may still finish" in result.output
    spent_id = result.xcom("budget_spent", "run_id")
    assert f"Stopped watching Puffle chat run {spent_id}" in result.output
    assert "gave up after 3 consecutive failed polls" in result.output
