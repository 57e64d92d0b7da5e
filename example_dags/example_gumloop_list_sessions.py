"""Every morning, list yesterday's sessions of a Gumloop agent, page by page, and summarize them.

Gumloop's session list is cursor-paged and has no date filter, so the operator filters on ``created_at``
itself: with ``sort_order="newest"`` it stops paging at the first session older than the window (here the
calendar day before the run's logical date, in UTC).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_runwatch.operators.gumloop import GumloopListSessionsOperator

with DAG(
    dag_id="example_gumloop_list_sessions",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["runwatch", "gumloop", "example"],
) as dag:
    yesterdays_sessions = GumloopListSessionsOperator(
        task_id="list_yesterdays_sessions",
        agent_id="agent_support_triage",
        # Yesterday, relative to the run's logical date (midnight UTC for this schedule).
        created_after="{{ macros.ds_add(dag_run.run_after | ds, -1) }}",
        created_before="{{ dag_run.run_after | ds }}",
        sort_order="newest",
        page_size=20,
        max_sessions=500,
    )

    @task
    def summarize(sessions: list[dict[str, Any]]) -> dict[str, Any]:
        """Counts by state and type, and the credits spent: what a daily usage report needs."""
        credits = sum((s.get("usage") or {}).get("credit_cost") or 0 for s in sessions)
        return {
            "sessions": len(sessions),
            "by_state": dict(Counter(s["state"] for s in sessions)),
            "by_type": dict(Counter(s.get("type") or "?" for s in sessions)),
            "credits": credits,
        }

    summarize(yesterdays_sessions.output)  # type: ignore[arg-type]  # TaskFlow: an XComArg stands for the value the task gets
