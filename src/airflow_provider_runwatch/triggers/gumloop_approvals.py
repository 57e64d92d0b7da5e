"""The wait for a human's answer to a Gumloop session's approvals: Airflow's own ``HITLTrigger`` (it polls the
task's human-in-the-loop request through the triggerer's supervisor channel and applies the default on timeout),
plus cancelling the session when a user marks the task failed while the question is open.

Why a trigger on every Airflow version, also on 3.3 where ``HITLOperator`` parks the task in ``awaiting_input``
without one: a parked task runs no code when it is marked failed, so the paused session would stay open with its
tool calls waiting, and anyone answering them in Gumloop's own app later would let the agent act for a task
Airflow considers over. A deferred task's trigger gets ``on_kill`` (Airflow >= 3.3) and cancels the session.
Airflow's Required Actions view and REST API resume a deferred task exactly as they resume a parked one.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.triggers.hitl import HITLTrigger

from airflow_provider_runwatch.hooks.gumloop import GumloopHook
from airflow_provider_runwatch.vendors.gumloop import SESSIONS


class GumloopApprovalTrigger(HITLTrigger):
    """``HITLTrigger`` for the request of Gumloop session ``session_id``; kwargs carry ids only, no secret."""

    def __init__(self, *, conn_id: str, session_id: str, cancel_on_kill: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.session_id = session_id
        self.cancel_on_kill = bool(cancel_on_kill)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {**kwargs, "conn_id": self.conn_id, "session_id": self.session_id, "cancel_on_kill": self.cancel_on_kill},
        )

    async def on_kill(self) -> None:
        """The task was marked failed or success, or cleared, while the question was open: cancel the session.

        The triggerer also cancels a trigger whose task was resumed by an answer given in the UI or the REST
        API; then the request has its response and the session must go on, so nothing is cancelled.
        """
        from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail
        from asgiref.sync import sync_to_async

        if not self.cancel_on_kill:
            self.log.info("cancel_on_kill is off: Gumloop session %s stays paused", self.session_id)
            return
        try:
            detail = await sync_to_async(get_hitl_detail_content_detail)(ti_id=self.ti_id)
            if detail.response_received:
                return
        except Exception as exc:  # cannot tell: the request may be gone with the task, so cancel as asked
            self.log.info("Could not read the approval request of session %s (%s)", self.session_id, exc)
        self.log.warning("Task ended while Gumloop session %s waited for approval: cancelling it", self.session_id)
        await GumloopHook(self.conn_id).acancel(SESSIONS, self.session_id)
