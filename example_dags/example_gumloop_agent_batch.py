"""Every night, run a Gumloop agent over a list of accounts and load the answers.

One mapped task per account (``.partial().expand()``): each starts an agent session on a worker, waits on the
triggerer (deferrable), and returns the agent's final text. The session id is derived from the DAG, task, run
and map index, so a retried task reattaches to its session instead of starting (and paying for) another one.
A downstream task collects every answer in account order.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_runwatch.operators.gumloop import GumloopSessionOperator

ACCOUNTS = ["Acme Corp", "Globex", "Initech", "Umbrella"]

with DAG(
    dag_id="example_gumloop_agent_batch",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=8,
    tags=["runwatch", "gumloop", "example"],
) as dag:
    reviews = GumloopSessionOperator.partial(
        task_id="review_account",
        conn_id="gumloop_default",
        agent_id="agent_account_review",
        metadata={"source": "airflow", "dag_run": "{{ run_id }}"},
        deferrable=True,
        timeout=30 * 60,
        # A paused session (a tool waiting for a human) hands on what it has so far instead of failing.
        on_approval_required="succeed",
    ).expand(
        input=[f"Review the account {account}: recent activity, open tickets and renewal risk." for account in ACCOUNTS]
    )

    @task
    def load_answers(accounts: list[str], answers: list[str]) -> list[dict[str, str]]:
        """Stand-in for a warehouse load: one row per account, in the order the accounts were mapped."""
        rows = [{"account": account, "answer": answer} for account, answer in zip(accounts, answers, strict=True)]
        print(f"loaded {len(rows)} answers")
        return rows

    load_answers(ACCOUNTS, reviews.output)  # type: ignore[arg-type]  # TaskFlow: an XComArg stands for the value the task gets
