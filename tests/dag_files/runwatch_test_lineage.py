"""Test DAG: one run of each kind that reports lineage, three that succeed and one that fails (scenarios in the
messages), for the OpenLineage test (tests/dag/test_openlineage_dag.py)."""

from __future__ import annotations

from typing import TypedDict

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator
from airflow_provider_runwatch.operators.gumloop import GumloopFlowOperator
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator


class Waiting(TypedDict):
    """The options every task of this DAG spreads in (typed, so each lands on its own argument)."""

    poll_interval: float
    deferrable: bool
    timeout: float


FAST: Waiting = {"poll_interval": 1, "deferrable": True, "timeout": 120}

with DAG(
    dag_id="runwatch_test_lineage",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["runwatch", "test"],
):
    GloriaMundoWorkflowOperator(
        task_id="workflow", workflow_id="wf_lineage", input={"account": "Acme [emulator: polls=1]"}, **FAST
    )
    GumloopFlowOperator(task_id="flow", flow_id="flow_lineage", inputs={"topic": "Acme [emulator: polls=1]"}, **FAST)
    PuffleAgentChatOperator(
        task_id="chat_failed", message="Break it [emulator: polls=1 outcome=failed error='tool exploded']", **FAST
    )

    @task.gumloop_session(agent_id="agent_lineage", **FAST)
    def session() -> str:
        return "Review Acme [emulator: polls=1]"

    session()
