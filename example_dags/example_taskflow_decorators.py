"""The TaskFlow way: a function builds the message (or the input) from upstream data, and the decorator turns it
into a run task that behaves exactly like the operator.

``@task.gumloop_session`` returns the text that starts a Gumloop agent session, ``@task.gloriamundo_workflow``
returns the workflow input (a dict) and ``@task.puffle_chat`` returns the message for a Puffle agent. Each task
starts its run on a worker, waits on the triggerer (deferrable), is durable (a retry watches the run the earlier
try started) and returns the run's answer; ``run_id``, ``run`` and (where the vendor has one) ``messages`` are
pushed as with the operators.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

with DAG(
    dag_id="example_taskflow_decorators",
    schedule="0 6 * * 1",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["runwatch", "taskflow", "example"],
) as dag:

    @task
    def account() -> dict[str, Any]:
        """Stand-in for a lookup: the account this week's review is about."""
        return {"name": "Acme Corp", "region": "eu", "plan": "enterprise"}

    @task.gumloop_session(agent_id="agent_account_review", deferrable=True, poll_interval=2, timeout=30 * 60)
    def review(account: dict[str, Any]) -> str:
        return f"Review the account health of {account['name']} ({account['plan']} plan) and list the risks."

    @task.gloriamundo_workflow(workflow_id="wf_account_health", deferrable=True, poll_interval=2, timeout=30 * 60)
    def health_report(account: dict[str, Any]) -> dict[str, Any]:
        return {"account": account["name"], "region": account["region"], "report": "weekly-health"}

    @task.puffle_chat(deferrable=True, timeout=30 * 60)
    def summary(review: str, report: dict[str, Any]) -> str:
        return f"Write a three-line summary for the account team.\nReview: {review[:500]}\nReport: {report}"

    @task
    def publish(text: str) -> str:
        """Stand-in for posting the summary somewhere; returns what it would post."""
        return text[:300]

    acct = account()
    publish(summary(review(acct), health_report(acct)))  # type: ignore[arg-type]  # TaskFlow: an XComArg stands for the value the task gets
