"""E2E: deferred runs that outlive a kill -9 of the triggerer, and deadlines that must not move.

- ``puffle_*`` / ``gumloop_session``: end 30 s after their start, so they are still running when the triggerer
  dies and finish while it is down; the new triggerer must pick them up and each returns its own answer.
- ``deadline_in_downtime``: never ends; its deadline (start + 35 s) passes while the triggerer is down.
- ``deadline_after_restart``: never ends; its deadline (start + 65 s) comes after the restart and must be met
  at that time, not pushed back by the downtime.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_runwatch.operators.gumloop import GumloopSessionOperator
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator

with DAG(
    "e2e_triggerer_restart",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=8,
) as dag:
    for name in ("alpha", "beta", "gamma"):
        PuffleAgentChatOperator(
            task_id=f"puffle_{name}",
            message=f"Summarise {name.title()} Corp [emulator: seconds=30]",
            deferrable=True,
            poll_interval=1,
            timeout=300,
        )
    GumloopSessionOperator(
        task_id="gumloop_session",
        agent_id="agent_e2e",
        input="Review Omega Ltd [emulator: seconds=30]",
        deferrable=True,
        poll_interval=1,
        timeout=300,
    )
    PuffleAgentChatOperator(
        task_id="deadline_in_downtime",
        message="Never ends [emulator: polls=never]",
        deferrable=True,
        poll_interval=1,
        timeout=35,
    )
    PuffleAgentChatOperator(
        task_id="deadline_after_restart",
        message="Never ends either [emulator: polls=never]",
        deferrable=True,
        poll_interval=1,
        timeout=65,
    )
