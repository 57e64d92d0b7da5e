"""Event-driven DAG for the e2e suite: a watcher on its own agent, polling every 2 s; each run returns the
session ids of its triggering asset events (the test compares them with the sessions that finished)."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_provider_runwatch.hooks.gumloop import GumloopHook
from airflow_provider_runwatch.triggers.gumloop import GumloopSessionEventTrigger

AGENT_ID = "agt_e2e_events"
SESSIONS = Asset(
    name=f"gumloop.{AGENT_ID}.sessions.completed",
    watchers=[
        AssetWatcher(
            name="e2e_gumloop_events_watcher",
            trigger=GumloopSessionEventTrigger(agent_id=AGENT_ID, poll_interval=2),
        )
    ],
)

with DAG(
    "e2e_gumloop_events",
    schedule=[SESSIONS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
):

    @task
    def answers(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        hook = GumloopHook()
        rows = []
        for events in (triggering_asset_events or {}).values():
            for event in events:
                session_id = event.extra["payload"]["session_id"]
                rows.append({"session_id": session_id, "answer": hook.get_session(session_id).session.final_text()})
        return rows

    answers()
