"""Every night, run a GloriaMundo workflow over a batch of accounts and total what it cost.

One task for the whole batch (``GloriaMundoWorkflowBatchOperator``): it executes the workflow once per input on
a worker and waits for every run on the triggerer with one trigger. GloriaMundo allows 10 executions and 60
status polls a minute per key: starts are paced within the key's budget (a start refused with 429 waits and
starts again instead of failing), and the polls of all runs share the key's budget, so a batch of N inputs takes
about N / 10 minutes, whatever ``max_concurrency`` is. The return value is every run's ``result`` in input
order; the ``runs`` XCom has each run's id, state and cost, which the downstream task adds up.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowBatchOperator

with DAG(
    dag_id="example_gloriamundo_batch",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["runwatch", "gloriamundo", "example"],
) as dag:

    @task
    def accounts_to_refresh() -> list[dict[str, Any]]:
        """Stand-in for a query: one workflow input (a JSON object) per account."""
        return [
            {"account": name, "region": region, "report": "weekly-health"}
            for name, region in [("Acme Corp", "eu"), ("Beta LLC", "us"), ("Cobalt GmbH", "eu"), ("Delta Pty", "apac")]
        ]

    refreshed = GloriaMundoWorkflowBatchOperator(
        task_id="refresh_accounts",
        conn_id="gloriamundo_default",
        workflow_id="wf_account_health",
        inputs=accounts_to_refresh(),  # type: ignore[arg-type]  # an XComArg stands for the list the task gets
        max_concurrency=10,
        deferrable=True,
        # 2 s keeps the demo quick; the per-key budget stretches the interval when many runs overlap.
        poll_interval=2,
        timeout=2 * 60 * 60,
    )

    @task
    def total_cost(runs: list[dict[str, Any]]) -> dict[str, Any]:
        """Add up the cost of every run of the batch (from the batch's ``runs`` XCom)."""
        cents = sum(int((run.get("cost") or {}).get("cost_cents") or 0) for run in runs)
        total = {"runs": len(runs), "total_cost_cents": cents, "total_cost_usd": f"${cents / 100:.2f}"}
        total["succeeded"] = sum(1 for run in runs if run["state"] == "succeeded")
        print(f"GloriaMundo batch: {len(runs)} runs cost {total['total_cost_usd']} ({cents} cents)")
        return total

    total_cost(refreshed.output["runs"])  # type: ignore[index]  # .output is typed as the XComArg base; a plain one takes a key
