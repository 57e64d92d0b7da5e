"""E2E: runs that never end, to be marked failed through the REST API while deferred."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_runwatch.operators.gumloop import GumloopSessionOperator
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator

with DAG("e2e_mark_failed", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
    GumloopSessionOperator(
        task_id="gumloop_session",
        agent_id="agent_e2e",
        input="Never ends [emulator: polls=never]",
        deferrable=True,
        poll_interval=1,
    )
    PuffleAgentChatOperator(
        task_id="puffle_chat",
        message="Never ends [emulator: polls=never]",
        deferrable=True,
        poll_interval=1,
    )
