"""Puffle through a real deployment: trigger over the REST API, the triggerer does the waiting,
states, XComs and the task log read back over the REST API."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deployment import SECRET_KEY, Deployment

pytestmark = pytest.mark.e2e

DAG_ID = "e2e_puffle_chat"


@pytest.fixture(scope="module")
def run(happy_runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return happy_runs[DAG_ID]  # triggered together with the examples


def test_run_succeeds_with_answer_in_xcom(deployment: Deployment, run: dict[str, Any]) -> None:
    tis = deployment.task_instances(DAG_ID, run["dag_run_id"])
    assert {t: ti["state"] for t, ti in tis.items()} == {"morning_briefing": "success", "publish": "success"}, (
        deployment.tail()
    )
    assert run["state"] == "success"
    run_id = deployment.xcom(DAG_ID, run["dag_run_id"], "morning_briefing", "run_id")
    assert re.fullmatch(r"run_\w+", run_id)
    answer = deployment.xcom(DAG_ID, run["dag_run_id"], "morning_briefing")
    assert "Summarise overnight support tickets" in answer and "[emulator" not in answer
    summary = deployment.xcom(DAG_ID, run["dag_run_id"], "morning_briefing", "run")
    assert summary["run_id"] == run_id and summary["state"] == "succeeded" and summary["vendor"] == "Puffle"
    assert deployment.xcom(DAG_ID, run["dag_run_id"], "publish") == f"{answer[:200]} (run {run_id})"
    # The triggerer did the waiting (a 40 s run at a 2 s interval: four status polls at least, even after the
    # 30 s the trigger runner can be silent in the happy runs' burst of task starts), the run started once.
    emu = deployment.emulator
    assert len(emu.requests(method="POST", run_id=run_id)) == 1
    assert len(emu.requests(method="GET", run_id=run_id)) >= 4


def test_task_log_tells_the_story_without_the_secret(deployment: Deployment, run: dict[str, Any]) -> None:
    run_id = deployment.xcom(DAG_ID, run["dag_run_id"], "morning_briefing", "run_id")
    log = deployment.task_log(DAG_ID, run["dag_run_id"], "morning_briefing")
    assert f"Started Puffle chat run {run_id}" in log, log[-3000:]
    assert "Deferring" in log
    # The vendor state changes, logged by the trigger on the triggerer, are part of the task log.
    assert f"Puffle chat run {run_id}: queued (vendor state 'queued')" in log, log[-3000:]
    assert f"Puffle chat run {run_id}: running (vendor state 'running')" in log
    assert f"Puffle chat run {run_id}: succeeded (vendor state 'completed')" in log
    assert f"Puffle chat run {run_id} succeeded" in log
    assert SECRET_KEY not in log
    assert SECRET_KEY not in deployment.logs("triggerer")
    assert SECRET_KEY not in deployment.logs("scheduler")
