"""Whenever the support-triage agent finishes a session, load its answer: event-driven, whoever started it.

Most Gumloop sessions are not started by Airflow: they run from Slack, the web app, email or Gumloop's own
triggers. This DAG is scheduled on an asset with an ``AssetWatcher``: the triggerer runs
``GumloopSessionEventTrigger``, which polls the agent's session list and fires once per session that
completes; each firing is an asset event whose ``extra["payload"]`` holds the session's ids and state
(never the conversation). The DAG run reads them from ``triggering_asset_events``, fetches each answer with
the hook on the worker and hands the rows on (here to a "load" task; put your warehouse insert there).

Several sessions finishing close together may arrive in one DAG run: each session is in exactly one run.
Triggered by hand, the run loads the sessions named in its conf (``{"sessions": [{"session_id": ...}]}``),
for instance to load one again; with neither, it loads nothing.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_provider_runwatch.hooks.gumloop import GumloopHook
from airflow_provider_runwatch.triggers.gumloop import GumloopSessionEventTrigger

AGENT_ID = "agent_support_triage"

#: One asset per agent and states watched: "gumloop.<agent>.sessions.<states>".
TRIAGE_SESSIONS = Asset(
    name=f"gumloop.{AGENT_ID}.sessions.completed",
    watchers=[
        AssetWatcher(
            name=f"gumloop_{AGENT_ID}_completed",
            trigger=GumloopSessionEventTrigger(agent_id=AGENT_ID, states=["completed"], poll_interval=60),
        )
    ],
)


def sessions_of(triggering_asset_events: Any, conf: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The session payloads of this run's asset events, else those named in a manual run's conf."""
    payloads = []
    for events in (triggering_asset_events or {}).values():
        for event in events:
            payload = (event.extra or {}).get("payload") or {}
            if payload.get("session_id"):
                payloads.append(payload)
    return payloads or [p for p in (conf or {}).get("sessions", []) if p.get("session_id")]


with DAG(
    dag_id="example_gumloop_session_events",
    schedule=[TRIAGE_SESSIONS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["runwatch", "gumloop", "example", "events"],
) as dag:

    @task
    def fetch_answers(triggering_asset_events: Any = None, dag_run: Any = None) -> list[dict[str, Any]]:
        """One row per finished session: its ids, who started it (type) and the agent's final answer."""
        hook = GumloopHook()
        rows = []
        for payload in sessions_of(triggering_asset_events, dag_run.conf if dag_run else None):
            session = hook.get_session(payload["session_id"]).session
            rows.append(
                {
                    "session_id": session.id,
                    "agent_id": session.agent_id,
                    "type": session.type,
                    "created_at": payload.get("created_at"),
                    "answer": session.final_text(),
                }
            )
        return rows

    @task
    def load(rows: list[dict[str, Any]]) -> int:
        """Stand-in for a warehouse insert, keyed by session_id so a re-run cannot double-load."""
        for row in rows:
            print(f"load session {row['session_id']} ({row['type']}): {(row['answer'] or '')[:80]!r}")
        return len(rows)

    load(fetch_answers())  # type: ignore[arg-type]  # TaskFlow: an XComArg stands for the value the task gets
