"""Ask a Puffle agent a question every morning and hand its answer to the next task.

The chat run is started on a worker, waited for on the triggerer (deferrable), and its final text is
the operator's return value; ``messages`` and ``run`` are pushed as separate XComs.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator
from airflow_provider_runwatch.sensors.puffle import PuffleChatRunSensor

with DAG(
    dag_id="example_puffle_chat",
    schedule="0 7 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["runwatch", "puffle", "example"],
) as dag:
    briefing = PuffleAgentChatOperator(
        task_id="morning_briefing",
        conn_id="puffle_default",
        # run_after is set for every run (logical_date and ds are not, for API-triggered runs in Airflow 3).
        message="Summarise overnight support tickets for {{ dag_run.run_after | ds }} and list the top three issues.",
        deferrable=True,
        timeout=15 * 60,
    )

    # A run started elsewhere (here: by the task above) can be awaited with the sensor.
    wait_again = PuffleChatRunSensor(
        task_id="wait_for_briefing",
        run_id="{{ ti.xcom_pull(task_ids='morning_briefing', key='run_id') }}",
        deferrable=True,
    )

    @task
    def publish(answer: str, run: dict[str, Any]) -> str:
        """Stand-in for posting the answer somewhere; returns what it would post."""
        tools = ", ".join(run.get("tool_calls", [])) or "no tools"
        return f"{answer[:200]} (run {run['run_id']}, {tools})"

    published = publish(briefing.output, briefing.output["run"])  # type: ignore[arg-type,index]  # TaskFlow: XComArgs stand for values; .output["run"] is a plain XComArg
    briefing >> wait_again
