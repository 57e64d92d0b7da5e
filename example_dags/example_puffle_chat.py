"""Ask a Puffle agent a question every morning and hand its answer to the next task; and triage every open
ticket in one batch task.

The chat run is started on a worker, waited for on the triggerer (deferrable), and its final text is
the operator's return value; ``messages`` and ``run`` are pushed as separate XComs.

The batch (``PuffleAgentChatBatchOperator``) runs one chat per message in one task, at most ``max_concurrency``
at once, all watched by one trigger; a start Puffle refuses with 429 waits for its ``Retry-After`` and starts
again. Its return value is the answers in message order (None for a run that failed, up to ``max_failed`` of
them); ``runs`` has each run's id, state and error.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_runwatch.operators.puffle import PuffleAgentChatBatchOperator, PuffleAgentChatOperator
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

    tickets = ["T-1042 login loop on mobile", "T-1043 invoice shows wrong VAT", "T-1047 export times out"]
    triage = PuffleAgentChatBatchOperator(
        task_id="triage_tickets",
        conn_id="puffle_default",
        messages=[f"Triage ticket {ticket}: likely cause, owner team, and a reply draft." for ticket in tickets],
        max_concurrency=5,
        max_failed=1,
        deferrable=True,
        timeout=60 * 60,
    )

    @task
    def store(answers: list[str | None], runs: list[dict[str, Any]]) -> int:
        """Stand-in for writing back to the ticket system: one row per ticket, in input order."""
        rows = [
            {"ticket": ticket.split()[0], "answer": answer, "run_id": run["run_id"]}
            for ticket, answer, run in zip(tickets, answers, runs, strict=True)
            if answer is not None
        ]
        print(f"stored {len(rows)} of {len(tickets)} triage answers")
        return len(rows)

    store(triage.output, triage.output["runs"])  # type: ignore[arg-type,index]  # TaskFlow: XComArgs stand for values
