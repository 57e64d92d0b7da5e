"""GloriaMundoRunTrigger driven like the triggerer drives it, against the emulator over loopback."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks.gloriamundo import GloriaMundoHook
from airflow_provider_runwatch.triggers.gloriamundo import GloriaMundoRunTrigger
from tests.conftest import SECRET_KEY
from tests.helpers import first_event, rehydrate

pytestmark = pytest.mark.anyio
LIMITS = "/_emulator/gloriamundo/limits"


@pytest.fixture(autouse=True)
def connection(monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer) -> Iterator[str]:
    """A fresh key per test, emulator and client budgets both scaled to a 6 s window."""
    key = f"{SECRET_KEY}_{uuid.uuid4().hex[:8]}"
    conn = {
        "conn_type": "gloriamundo",
        "host": runwatch_emulator.gloriamundo_url,
        "password": key,
        "extra": {"rate_window_seconds": 6},
    }
    monkeypatch.setenv("AIRFLOW_CONN_GLORIAMUNDO_DEFAULT", json.dumps(conn))
    with httpx.Client(base_url=runwatch_emulator.url, trust_env=False) as http:
        http.put(LIMITS, json={"window_seconds": 6, "executions": 10, "polls": 60}).raise_for_status()
        yield key
        http.put(LIMITS, json={"window_seconds": 60, "executions": 10, "polls": 60}).raise_for_status()


def plain(text: str) -> str:
    """Log output without terminal colours (some Airflow versions add them)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def start(directive: str) -> str:
    return GloriaMundoHook().execute_workflow("wf_trigger_test", {"account": f"Acme {directive}"}).run_id


def trigger(run_id: str, **kw: object) -> GloriaMundoRunTrigger:
    options: dict[str, object] = {"conn_id": "gloriamundo_default", "run_id": run_id, "poll_interval": 0.2}
    options.update(kw)
    return GloriaMundoRunTrigger(**options)  # type: ignore[arg-type]


async def test_success_logs_each_progress_change_once(connection: str, capfd: pytest.CaptureFixture[str]) -> None:
    run_id = start("[emulator: queued=1 polls=4]")
    capfd.readouterr()
    event = await first_event(rehydrate(trigger(run_id)))
    assert (event["status"], event["run_id"], event["vendor_state"]) == ("success", run_id, "completed")
    assert set(event) <= {"status", "vendor", "run_id", "state", "vendor_state", "message", "deadline", "gave_up"}
    encoded = json.dumps(event)
    assert SECRET_KEY not in encoded and "Acme" not in encoded, "no secret and no result in the event"
    lines = re.findall(rf"GloriaMundo workflow run {run_id}: (.*?) \[", plain(capfd.readouterr().out))
    assert lines == [
        "queued (vendor state 'queued'), step 0/5, 0%",
        "running (vendor state 'running'), step 1/5 Fetch input, 20%",
        "running (vendor state 'running'), step 2/5 Generate content, 40%",
        "running (vendor state 'running'), step 3/5 Review draft, 60%",
        "succeeded (vendor state 'completed'), step 5/5 Deliver results, 100%",
    ]


async def test_unchanged_progress_is_not_logged_again(
    capfd: pytest.CaptureFixture[str], runwatch_emulator: EmulatorServer
) -> None:
    run_id = start("[emulator: seconds=1.2]")  # steps follow the clock: several polls per step
    capfd.readouterr()
    event = await first_event(trigger(run_id, poll_interval=0.1))
    assert event["status"] == "success"
    polls = runwatch_emulator.requests(vendor="gloriamundo", method="GET", run_id=run_id)
    logged = re.findall(rf"GloriaMundo workflow run {run_id}: (.*?) \[", plain(capfd.readouterr().out))
    assert len(logged) == len(set(logged)) <= 6 < len(polls)


async def test_failed_run_event_carries_the_vendor_error() -> None:
    run_id = start("[emulator: polls=1 outcome=failed error='step Review draft: model refused']")
    event = await first_event(trigger(run_id))
    assert (event["status"], event["vendor_state"], event["message"]) == (
        "failed",
        "failed",
        "step Review draft: model refused",
    )


async def test_unknown_state_keeps_waiting(capfd: pytest.CaptureFixture[str]) -> None:
    run_id = start("[emulator: polls=3 unknown_state=warming_up]")
    event = await first_event(trigger(run_id))
    assert event["status"] == "success"
    assert capfd.readouterr().out.count("unknown state 'warming_up'") == 1


async def test_429_and_5xx_within_the_failure_budget() -> None:
    run_id = start("[emulator: http5xx=1 rate_limit=1 retry_after=1 polls=1]")
    started = time.monotonic()
    event = await first_event(trigger(run_id, max_consecutive_failures=3))
    assert event["status"] == "success"
    assert time.monotonic() - started >= 1.0, "Retry-After was honoured"


async def test_run_of_another_key_ends_at_once_with_a_hint(runwatch_emulator: EmulatorServer) -> None:
    run_id = str(uuid.uuid4())
    event = await first_event(trigger(run_id))
    assert event["status"] == "error"
    assert "not found (HTTP 404)" in event["message"]


async def test_poll_url_from_the_execute_answer_is_polled_and_survives_a_restart(
    connection: str, runwatch_emulator: EmulatorServer
) -> None:
    """The operator hands the execute answer's ``poll_url`` to its trigger; it survives serialization and the
    trigger's polls go where it points (the emulator names the documented path, resolved once, not twice)."""
    from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator

    started = GloriaMundoHook().execute_workflow("wf_trigger_test", {"account": "Acme [emulator: polls=1]"})
    assert started.poll_url == f"/api/v1/runs/{started.run_id}/status"
    task = GloriaMundoWorkflowOperator(task_id="t", workflow_id="wf_trigger_test", poll_interval=0.2)
    task._poll_url = started.poll_url
    made = rehydrate(task.make_trigger(started.run_id, time.time() + 60))
    assert made.serialize()[1]["poll_url"] == started.poll_url and made.adapter.poll_url == started.poll_url
    assert SECRET_KEY not in json.dumps(made.serialize()[1])
    event = await first_event(made)
    assert event["status"] == "success" and event["run_id"] == started.run_id
    polls = runwatch_emulator.requests(vendor="gloriamundo", method="GET", run_id=started.run_id)
    assert polls and {p["path"] for p in polls} == {started.poll_url}


def test_a_poll_url_that_differs_from_the_documented_path_is_the_one_requested() -> None:
    """Where GloriaMundo points elsewhere on its API (a future path), the trigger's adapter follows it."""
    from airflow_provider_runwatch.core.connection import ConnectionSettings
    from airflow_provider_runwatch.vendors.gloriamundo import GLORIAMUNDO, WORKFLOW_RUNS

    run_id = str(uuid.uuid4())
    settings = ConnectionSettings(
        vendor=GLORIAMUNDO, conn_id="g", base_url="https://app.gloriamundo.com/api/v1", api_key="k1234"
    )
    moved = GloriaMundoRunTrigger(
        conn_id="g", run_id=run_id, poll_interval=1, poll_url=f"/api/v1/workflow-runs/{run_id}/status"
    )
    assert moved.adapter.status_call(settings, run_id).request.path == f"/workflow-runs/{run_id}/status"
    assert moved.adapter.result_call(settings, run_id).request.path == f"/workflow-runs/{run_id}/status"
    plain_trigger = GloriaMundoRunTrigger(conn_id="g", run_id=run_id, poll_interval=1)
    assert plain_trigger.adapter is WORKFLOW_RUNS
    assert WORKFLOW_RUNS.status_call(settings, run_id).request.path == f"/runs/{run_id}/status"
