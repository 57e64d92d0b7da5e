"""E2E: the Puffle example shape (deferrable chat operator, answer handed to a downstream task).

The chat takes 40 s (queued at first): in the happy runs' burst of task starts the triggerer's runner was seen
silent for up to 32 s (Airflow's `runner_health_check_threshold` message, CI on a loaded machine), and the test
reads the states the trigger logged (queued, running, succeeded), so the run must outlast that."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator

with DAG("e2e_puffle_chat", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
    briefing = PuffleAgentChatOperator(
        task_id="morning_briefing",
        message="Summarise overnight support tickets for {{ ds }} [emulator: queued=1 seconds=40]",
        deferrable=True,
        poll_interval=2,
        timeout=120,
    )

    @task
    def publish(answer: str, run: dict[str, Any]) -> str:
        return f"{answer[:200]} (run {run['run_id']})"

    publish(briefing.output, briefing.output["run"])  # type: ignore[arg-type,index]  # TaskFlow: XComArgs stand for values; .output["run"] is a plain XComArg
