"""Every night, ask a Puffle agent one question per open ticket and store the answers.

One task for the whole batch (``PuffleAgentChatBatchOperator``): one chat run per message, at most
``max_concurrency`` at once, all watched by one trigger; a start Puffle refuses with 429 waits for its
``Retry-After`` and starts again. The return value is the answers in message order (None for a run that
failed, up to ``max_failed`` of them); ``runs`` has each run's id, state and error.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_runwatch.operators.puffle import PuffleAgentChatBatchOperator

TICKETS = ["T-1042 login loop on mobile", "T-1043 invoice shows wrong VAT", "T-1047 export times out"]

with DAG(
    dag_id="example_puffle_chat_batch",
    schedule="0 3 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["runwatch", "puffle", "example"],
) as dag:
    triage = PuffleAgentChatBatchOperator(
        task_id="triage_tickets",
        conn_id="puffle_default",
        messages=[f"Triage ticket {ticket}: likely cause, owner team, and a reply draft." for ticket in TICKETS],
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
            for ticket, answer, run in zip(TICKETS, answers, runs, strict=True)
            if answer is not None
        ]
        print(f"stored {len(rows)} of {len(TICKETS)} triage answers")
        return len(rows)

    store(triage.output, triage.output["runs"])
