"""Test DAG: every Puffle path through real Airflow against the emulator (scenarios in the messages)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator
from airflow_provider_runwatch.sensors.puffle import PuffleChatRunSensor

with DAG("runwatch_test_puffle", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
    deferred = PuffleAgentChatOperator(
        task_id="deferred",
        message="Summarise Acme Corp [emulator: queued=1 polls=3]",
        history=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        deferrable=True,
        poll_interval=0.3,
    )
    blocking = PuffleAgentChatOperator(
        task_id="blocking",
        message="Summarise Beta LLC [emulator: polls=2 http5xx=2 rate_limit=1 retry_after=1]",
        deferrable=False,
        poll_interval=0.3,
    )
    sensor = PuffleChatRunSensor(
        task_id="sensor",
        run_id="{{ ti.xcom_pull(task_ids='deferred', key='run_id') }}",
        deferrable=True,
        poke_interval=0.3,
    )
    failed = PuffleAgentChatOperator(
        task_id="failed",
        message="Break it [emulator: polls=1 outcome=failed error='tool web_search exploded']",
        deferrable=True,
        poll_interval=0.3,
    )
    cancelled = PuffleAgentChatOperator(
        task_id="cancelled",
        message="Stop it [emulator: polls=1 outcome=cancelled]",
        deferrable=False,
        poll_interval=0.3,
    )
    timed_out = PuffleAgentChatOperator(
        task_id="timed_out",
        message="Never ends [emulator: polls=never]",
        deferrable=True,
        poll_interval=0.3,
        timeout=2,
    )
    budget_spent = PuffleAgentChatOperator(
        task_id="budget_spent",
        message="Flaky [emulator: http5xx=10]",
        deferrable=True,
        poll_interval=0.2,
        max_consecutive_failures=3,
    )
    deferred >> sensor
