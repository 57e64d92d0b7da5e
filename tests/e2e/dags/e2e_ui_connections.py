"""E2E: one run per connection type through the connections a user saved in the UI's form
(tests/e2e/test_e2e_browser.py saves ``ui_puffle``, ``ui_gumloop`` and ``ui_gloriamundo``, then triggers this).

Deferrable, so the worker (start) and the triggerer (polls) both read the stored connection."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator
from airflow_provider_runwatch.operators.gumloop import GumloopAgentOperator
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator

#: connection type -> the connection id the browser test saves through the form.
UI_CONN_IDS = {"puffle": "ui_puffle", "gumloop": "ui_gumloop", "gloriamundo": "ui_gloriamundo"}

with DAG("e2e_ui_connections", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
    PuffleAgentChatOperator(
        task_id="puffle",
        conn_id=UI_CONN_IDS["puffle"],
        message="Saved in the UI [emulator: seconds=10]",
        deferrable=True,
        poll_interval=1,
        timeout=120,
    )
    # The agent-interaction API sends the connection's user id and its extra project_id with every poll.
    GumloopAgentOperator(
        task_id="gumloop",
        conn_id=UI_CONN_IDS["gumloop"],
        agent_id="agent_ui",
        message="Saved in the UI [emulator: seconds=10]",
        deferrable=True,
        poll_interval=1,
        timeout=120,
    )
    GloriaMundoWorkflowOperator(
        task_id="gloriamundo",
        conn_id=UI_CONN_IDS["gloriamundo"],
        workflow_id="wf_ui",
        input={"subject": "Saved in the UI [emulator: seconds=10]"},
        deferrable=True,
        poll_interval=1,
        timeout=120,
    )
