"""Every night, run a Gumloop agent over a list of accounts and load the answers.

One task for the whole batch (``GumloopSessionBatchOperator``): it starts one agent session per account on a
worker, at most ``max_concurrency`` at once (by default the connection's ``max_concurrent_runs``: your plan's
limit), waits for all of them on the triggerer with one trigger, and returns the answers in account order. A
start Gumloop refuses because the plan is full (429) waits for a slot instead of failing the task. Each
session id is derived from the DAG, task, run and the account's index, so a retried task reattaches to the
sessions it started instead of starting (and paying for) them again. A downstream task loads the answers.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_runwatch.operators.gumloop import GumloopSessionBatchOperator

ACCOUNTS = ["Acme Corp", "Globex", "Initech", "Umbrella"]

with DAG(
    dag_id="example_gumloop_agent_batch",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["runwatch", "gumloop", "example"],
) as dag:
    reviews = GumloopSessionBatchOperator(
        task_id="review_accounts",
        conn_id="gumloop_default",
        agent_id="agent_account_review",
        inputs=[
            f"Review the account {account}: recent activity, open tickets and renewal risk." for account in ACCOUNTS
        ],
        metadata={"source": "airflow", "dag_run": "{{ run_id }}"},
        # Your plan's limit (or set max_concurrent_runs on the connection): Free 5, Pro 25, Enterprise 100.
        max_concurrency=5,
        # One account may fail without failing the night; more than that fails the task (after all have run).
        max_failed=1,
        deferrable=True,
        timeout=2 * 60 * 60,
    )

    @task
    def load_answers(
        accounts: list[str], answers: list[str | None], runs: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Stand-in for a warehouse load: one row per account, in input order (None where a session failed)."""
        rows = [
            {"account": account, "answer": answer, "session_id": run["run_id"], "state": run["state"]}
            for account, answer, run in zip(accounts, answers, runs, strict=True)
        ]
        print(f"loaded {len(rows)} answers")
        return rows

    load_answers(ACCOUNTS, reviews.output, reviews.output["runs"])  # type: ignore[arg-type,index]  # TaskFlow: XComArgs stand for values
