"""Test DAG: one deferrable run per vendor, started on the worker and awaited by the trigger, for the proxied
DAG tests (tests/dag/test_network_dag.py points the connections through a proxy at an https emulator)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator
from airflow_provider_runwatch.operators.gumloop import GumloopAgentOperator
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator

with DAG("runwatch_test_network", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
    PuffleAgentChatOperator(
        task_id="puffle",
        message="Through the proxy [emulator: polls=2]",
        deferrable=True,
        poll_interval=0.3,
    )
    GumloopAgentOperator(
        task_id="gumloop",
        agent_id="gummie_net",
        message="Through the proxy [emulator: polls=2]",
        deferrable=True,
        poll_interval=1,  # the fastest Gumloop allows
    )
    GloriaMundoWorkflowOperator(
        task_id="gloriamundo",
        workflow_id="wf_account_report",
        input={"account": "Through the proxy [emulator: polls=2]"},
        deferrable=True,
        poll_interval=0.3,
    )
