"""Every night, run a GloriaMundo workflow over a batch of accounts and total what it cost.

One mapped task instance per input (dynamic task mapping): each executes the workflow on a worker and
waits for it on the triggerer (deferrable). All runs use one API key, so their status polls share that
key's budget (``polls_per_minute`` on the connection, default 50 of the 60 GloriaMundo allows): however
many accounts the batch holds, the key is never rate-limited; a bigger batch is just polled less often
per run. The downstream task reads each run's ``run`` XCom and adds up ``cost_cents``.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator

with DAG(
    dag_id="example_gloriamundo_batch",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=8,
    tags=["runwatch", "gloriamundo", "example"],
) as dag:

    @task
    def accounts_to_refresh() -> list[dict[str, Any]]:
        """Stand-in for a query: one workflow input (a JSON object) per account."""
        return [
            {"account": name, "region": region, "report": "weekly-health"}
            for name, region in [("Acme Corp", "eu"), ("Beta LLC", "us"), ("Cobalt GmbH", "eu"), ("Delta Pty", "apac")]
        ]

    refreshed = GloriaMundoWorkflowOperator.partial(
        task_id="refresh_account",
        conn_id="gloriamundo_default",
        workflow_id="wf_account_health",
        deferrable=True,
        # 2 s keeps the demo quick; the per-key budget stretches the interval when many runs overlap.
        poll_interval=2,
        timeout=60 * 60,
    ).expand(input=accounts_to_refresh())

    @task
    def total_cost(runs: list[dict[str, Any]]) -> dict[str, Any]:
        """Add up the cost of every run of the batch (from each mapped instance's ``run`` XCom)."""
        runs = list(runs[:])  # a slice fetches every mapped instance's XCom in one request
        cents = sum(int((run.get("cost") or {}).get("cost_cents") or 0) for run in runs)
        seconds = sum(float(run.get("duration_seconds") or 0) for run in runs)
        total = {"runs": len(runs), "total_cost_cents": cents, "total_cost_usd": f"${cents / 100:.2f}"}
        total["workflow_seconds"] = round(seconds, 1)
        print(f"GloriaMundo batch: {len(runs)} runs cost {total['total_cost_usd']} ({cents} cents)")
        return total

    total_cost(refreshed.output["run"])  # type: ignore[index]  # .output is typed as the XComArg base; a plain one takes a key
