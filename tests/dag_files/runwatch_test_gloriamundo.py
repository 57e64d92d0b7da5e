"""Test DAG: every GloriaMundo path through real Airflow against the emulator (scenarios in the inputs).

Connections (set by tests/dag_runs/test_gloriamundo_dag.py): ``gloriamundo_default`` with a 6-second budget
window matching the emulator's scaled one, and ``gm_bad_key`` holding a key the emulator refuses.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator
from airflow_provider_runwatch.sensors.gloriamundo import GloriaMundoRunSensor

with DAG("runwatch_test_gloriamundo", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
    deferred = GloriaMundoWorkflowOperator(
        task_id="deferred",
        workflow_id="wf_account_report",
        input={"account": "Acme Corp [emulator: queued=1 polls=3]", "depth": 2},
        deferrable=True,
        poll_interval=0.3,
    )
    blocking = GloriaMundoWorkflowOperator(
        task_id="blocking",
        workflow_id="wf_account_report",
        input={"account": "Beta LLC [emulator: http5xx=1 rate_limit=1 retry_after=1 polls=3]"},
        deferrable=False,
        poll_interval=0.3,
    )
    sensor = GloriaMundoRunSensor(
        task_id="sensor",
        run_id="{{ ti.xcom_pull(task_ids='deferred', key='run_id') }}",
        deferrable=True,
        poke_interval=0.3,
    )
    sensor_poke = GloriaMundoRunSensor(
        task_id="sensor_poke",
        run_id="{{ ti.xcom_pull(task_ids='blocking', key='run_id') }}",
        deferrable=False,
        poke_interval=0.3,
        mode="poke",
    )
    failed = GloriaMundoWorkflowOperator(
        task_id="failed",
        workflow_id="wf_account_report",
        input={"account": "Gamma [emulator: polls=2 outcome=failed error='step Review draft: model refused']"},
        deferrable=True,
        poll_interval=0.3,
    )
    timed_out = GloriaMundoWorkflowOperator(
        task_id="timed_out",
        workflow_id="wf_account_report",
        input={"account": "Never [emulator: polls=never]"},
        deferrable=True,
        poll_interval=0.3,
        timeout=2,
    )
    bad_input = GloriaMundoWorkflowOperator(
        task_id="bad_input",
        workflow_id="wf_account_report",
        input="{'account': 'rendered as a string'}",  # type: ignore[arg-type]
        deferrable=True,
    )
    missing_workflow = GloriaMundoWorkflowOperator(
        task_id="missing_workflow", workflow_id="wf_missing_report", input={"a": 1}, deferrable=True
    )
    no_credits = GloriaMundoWorkflowOperator(
        task_id="no_credits",
        workflow_id="wf_account_report",
        input={"a": "[emulator: start_status=402]"},
        deferrable=True,
    )
    spend_limit = GloriaMundoWorkflowOperator(
        task_id="spend_limit",
        workflow_id="wf_account_report",
        input={"a": "[emulator: start_status=429 error=spend_limit_exceeded]"},
        deferrable=True,
    )
    bad_key = GloriaMundoWorkflowOperator(
        task_id="bad_key", conn_id="gm_bad_key", workflow_id="wf_account_report", input={}, deferrable=True
    )
    fanout = GloriaMundoWorkflowOperator.partial(
        task_id="fanout", workflow_id="wf_account_report", deferrable=True, poll_interval=0.3
    ).expand(input=[{"account": f"Shop {i} [emulator: polls=1]"} for i in range(3)])

    @task
    def total(runs: list[dict[str, Any]]) -> int:
        return sum(run["cost"]["cost_cents"] for run in runs[:])

    deferred >> sensor
    blocking >> sensor_poke
    total(fanout.output["run"])  # type: ignore[index]  # .output is typed as the XComArg base; a plain one takes a key
