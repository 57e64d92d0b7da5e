"""Gumloop triggers: poll an agent interaction, a session or a flow run on the triggerer (GETs only).

Cancel on kill comes from :meth:`RunTrigger.on_kill` through the adapter: sessions are cancelled with
``POST /sessions/{id}/cancel``, flows with ``kill_pipeline``; interactions cannot be cancelled, which is logged.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_runwatch.hooks.gumloop import GumloopHook
from airflow_provider_runwatch.triggers.base import RunTrigger
from airflow_provider_runwatch.vendors.gumloop import FLOWS, INTERACTIONS, SESSIONS


class GumloopAgentTrigger(RunTrigger):
    """Waits for a Gumloop agent interaction (``GET /agent_status/{interaction_id}``).

    ``user_id`` / ``project_id`` (ids, not secrets) are the task's overrides of the connection's identity, so
    the polls identify the account the same way the start did.
    """

    hook_class = GumloopHook
    adapter = INTERACTIONS

    def __init__(self, *, user_id: str | None = None, project_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user_id = user_id
        self.project_id = project_id
        # An instance attribute shadows the class default only when the task overrides the identity.
        self.adapter = INTERACTIONS.with_identity(user_id, project_id)  # type: ignore[misc]

    def serialize(self) -> tuple[str, dict[str, Any]]:
        classpath, kwargs = super().serialize()
        return classpath, {**kwargs, "user_id": self.user_id, "project_id": self.project_id}


class GumloopSessionTrigger(RunTrigger):
    """Waits for a Gumloop agent session (``GET /sessions/{session_id}``).

    ``stop_on_paused=False`` keeps polling through ``approval_required`` until the session resumes or the
    deadline passes (the operator's ``on_approval_required="wait"``).
    """

    hook_class = GumloopHook
    adapter = SESSIONS


class GumloopFlowTrigger(RunTrigger):
    """Waits for a Gumloop flow run (``GET /get_pl_run``); TERMINATING keeps waiting until it settles."""

    hook_class = GumloopHook
    adapter = FLOWS
