"""GloriaMundo through real Airflow: `airflow dags test` in a throwaway AIRFLOW_HOME, emulator over loopback.

One DAG run (tests/dag_files/runwatch_test_gloriamundo.py) covers the deferrable and the blocking paths, both
sensor modes, dynamic mapping with a cost total, and every documented error; each test reads what Airflow
stored. The emulator's budget window and the connection's are both scaled from 60 s to 6 s, and the run
must still see zero 429s that the provider caused.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime

import httpx
import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.conftest import SECRET_KEY, DagResult

pytestmark = pytest.mark.dag

LIMITS = "/_emulator/gloriamundo/limits"
KEY = f"{SECRET_KEY}_dag_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def result(dag_runner: Callable[..., DagResult], runwatch_emulator: EmulatorServer) -> Iterator[DagResult]:
    def conn(key: str) -> str:
        return json.dumps(
            {
                "conn_type": "gloriamundo",
                "host": runwatch_emulator.gloriamundo_url,
                "password": key,
                "extra": {"rate_window_seconds": 6},
            }
        )

    env = {
        "AIRFLOW_CONN_GLORIAMUNDO_DEFAULT": conn(KEY),
        "AIRFLOW_CONN_GM_BAD_KEY": conn(f"gm_invalid_{SECRET_KEY}"),
    }
    with httpx.Client(base_url=runwatch_emulator.url, trust_env=False) as http:
        http.put(LIMITS, json={"window_seconds": 6, "executions": 10, "polls": 60}).raise_for_status()
        try:
            result = dag_runner("runwatch_test_gloriamundo", extra_env=env)
            result.output = re.sub(r"\x1b\[[0-9;]*m", "", result.output)  # colours, on some Airflow versions
            yield result
        finally:
            http.put(LIMITS, json={"window_seconds": 60, "executions": 10, "polls": 60}).raise_for_status()


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_task_states(result: DagResult) -> None:
    assert result.states == {
        "deferred": "success",
        "blocking": "success",
        "sensor": "success",
        "sensor_poke": "success",
        "failed": "failed",
        "timed_out": "failed",
        "bad_input": "failed",
        "missing_workflow": "failed",
        "no_credits": "failed",
        "spend_limit": "failed",
        "bad_key": "failed",
        "fanout[0]": "success",
        "fanout[1]": "success",
        "fanout[2]": "success",
        "total": "success",
    }, result.output[-4000:]


def test_deferred_returns_the_result_and_pushes_run_with_cost_timings_progress(
    result: DagResult, runwatch_emulator: EmulatorServer
) -> None:
    run_id = result.xcom("deferred", "run_id")
    assert uuid.UUID(run_id)
    answer = result.xcom("deferred")
    assert answer["input"] == {"account": "Acme Corp", "depth": 2}
    assert answer["summary"] == "Processed 'Acme Corp' through 5 steps"
    run = result.xcom("deferred", "run")
    record = runwatch_emulator.run(run_id)
    assert run["vendor"] == "GloriaMundo" and run["run_id"] == run_id
    assert (run["state"], run["vendor_state"]) == ("succeeded", "completed")
    assert run["cost"] == {"cost_cents": record["data"]["cost_cents"]}
    assert _when(run["created_at"]) == _when(record["data"]["started_at"])
    assert _when(run["finished_at"]) == _when(record["data"]["completed_at"])
    # The vendor's own timestamps give the duration (a clamp at 0 would make ">= 0" true of anything).
    expected = (_when(record["data"]["completed_at"]) - _when(record["data"]["started_at"])).total_seconds()
    assert run["duration_seconds"] == pytest.approx(expected, abs=1e-3) and expected > 0
    assert run["progress"] == {
        "current_step": 5,
        "total_steps": 5,
        "current_step_name": "Deliver results",
        "percentage": 100.0,
    }
    assert ("deferred", "messages") not in result.xcoms, "GloriaMundo has no conversation"
    assert f"Started GloriaMundo workflow run {run_id}" in result.output
    assert "Deferring: the triggerer polls GloriaMundo workflow run" in result.output


@pytest.mark.parametrize("task_id", ["deferred", "blocking"])
def test_progress_logged_once_per_change_on_trigger_and_sync_wait(result: DagResult, task_id: str) -> None:
    run_id = result.xcom(task_id, "run_id")
    # The Poller's lines (trigger or sync wait), not the sensors' per-poke lines about the same run.
    lines = re.findall(
        rf"GloriaMundo workflow run {run_id}: ([a-z]+ \(vendor state [^\[\n]*?, step [^\[\n]*?)\s*\[", result.output
    )
    assert "running (vendor state 'running'), step 2/5 Generate content, 40%" in lines
    assert lines[-1] == "succeeded (vendor state 'completed'), step 5/5 Deliver results, 100%"
    assert len(lines) == len(set(lines)), "an unchanged status is not logged again"


def test_blocking_rides_out_5xx_and_429(result: DagResult) -> None:
    assert result.xcom("blocking")["input"] == {"account": "Beta LLC"}
    assert "server error (HTTP 503)" in result.output
    assert "rate limited (HTTP 429)" in result.output


def test_sensors_return_the_same_result(result: DagResult) -> None:
    assert result.xcom("sensor") == result.xcom("deferred")
    assert result.xcom("sensor_poke") == result.xcom("blocking")
    assert result.xcom("sensor", "run")["cost"] == result.xcom("deferred", "run")["cost"]


def test_mapped_fanout_and_cost_total(result: DagResult, runwatch_emulator: EmulatorServer) -> None:
    costs = []
    for index in range(3):
        run_id = result.mapped[("fanout", index, "run_id")]
        run = result.mapped[("fanout", index, "run")]
        assert run["run_id"] == run_id
        costs.append(runwatch_emulator.run(run_id)["data"]["cost_cents"])
        assert result.mapped[("fanout", index, "return_value")]["input"] == {"account": f"Shop {index}"}
    assert result.xcom("total") == sum(costs)


def test_failed_run_is_one_clear_line_and_keeps_its_cost(result: DagResult) -> None:
    run_id = result.xcom("failed", "run_id")
    assert (
        f"GloriaMundo workflow run {run_id} failed (vendor state 'failed'): step Review draft: model refused. "
        "Check the input and the agent, then retry the task." in result.output
    )
    run = result.xcom("failed", "run")
    assert run["outcome"] == "failed" and run["error"] == "step Review draft: model refused"
    assert run["cost"]["cost_cents"] > 0 and run["progress"]["current_step"] == 2


def test_timeout_says_the_run_goes_on_with_its_id(result: DagResult) -> None:
    run_id = result.xcom("timed_out", "run_id")
    assert (
        f"GloriaMundo has no API to cancel a workflow run: workflow run {run_id} keeps running on the vendor's side"
        in result.output
    )
    assert f"GloriaMundo workflow run {run_id} did not finish before the deadline" in result.output
    assert "GloriaMundo cannot cancel it: it may still finish." in result.output
    assert result.xcom("timed_out", "run")["outcome"] == "timeout"


def test_documented_errors_tell_the_user_what_to_do(result: DagResult) -> None:
    out = result.output
    assert "GloriaMundo workflow input must be a JSON object (a dict), got str" in out
    assert ("bad_input", "run_id") not in result.xcoms, "refused before anything was started"
    assert "Workflow 'wf_missing_report' does not exist or is not owned by the account of the key" in out
    assert "(HTTP 402): Insufficient credits. The GloriaMundo account is out of credits" in out
    assert re.search(r"spend limit exceeded \(HTTP 429\).*spend limit is reached \(it resets at 20\d\d-", out)
    assert "Check the API key in the Password field of connection 'gm_bad_key'" in out


def test_no_429_caused_by_the_provider(result: DagResult, runwatch_emulator: EmulatorServer) -> None:
    """Only the scenario's injected 429s: the per-key budget never let the emulator's limit trip."""
    run_ids = {v for (task, key), v in result.xcoms.items() if key == "run_id"}
    run_ids |= {v for (task, _, key), v in result.mapped.items() if key == "run_id"}
    log = [e for e in runwatch_emulator.requests(vendor="gloriamundo") if e["run_id"] in run_ids]
    limited = [e for e in log if e["status"] == 429]
    blocking = result.xcom("blocking", "run_id")
    assert [e["run_id"] for e in limited] == [blocking], limited
