"""``on_approval_required="airflow"``: a paused Gumloop session's approvals answered in Airflow.

When the session stops at ``approval_required``, the task writes a human-in-the-loop request for itself (the
same ``upsert_hitl_detail`` call ``HITLOperator`` makes, so it shows in Required Actions, goes to the assigned
users and runs the notifiers) and defers to :class:`~airflow_provider_runwatch.triggers.gumloop_approvals.
GumloopApprovalTrigger`: no worker slot is held while the human decides. The answer (or the default, on timeout)
is posted to ``POST /sessions/{id}/approvals``, recorded in the ``approvals`` XCom and the log, and the task
defers on the session again; round after round until the session ends.

Retries: Airflow keeps one request per task instance across tries, so a retry that reattaches to the paused
session (the operator's derived session id and ``task_state_store``) finds the same open request rather than
opening a second one. Deadline: without ``approval_timeout`` the human's time counts against ``timeout`` (the
request times out when ``timeout`` would); with it, each round may take up to ``approval_timeout`` and that
time is added back to the session's deadline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NoReturn, cast

from airflow_provider_runwatch.core.errors import ConfigurationError
from airflow_provider_runwatch.operators.base import RunFailedError, seconds

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_runwatch.core.models import RunEvent
    from airflow_provider_runwatch.hooks.gumloop import GumloopHook
    from airflow_provider_runwatch.triggers.base import RunTrigger

#: task_state_store key keeping the rounds answered so far (Airflow >= 3.3), so a retry's XCom shows them too.
ROUNDS_KEY = "runwatch_gumloop_approval_rounds"


def _users(value: Any) -> list[dict[str, str]] | None:
    """``approval_assigned_users``: ``{"id", "name"}`` dicts (Airflow's ``HITLUser``) or user ids as text."""
    if value is None:
        return None
    items = value if isinstance(value, list | tuple) else [value]
    users = []
    for item in items:
        if isinstance(item, str) and item.strip():
            users.append({"id": item.strip(), "name": item.strip()})
        elif isinstance(item, dict) and item.get("id"):
            users.append({"id": str(item["id"]), "name": str(item.get("name") or item["id"])})
        else:
            raise ConfigurationError(
                f"approval_assigned_users takes user ids or {{'id': ..., 'name': ...}} dicts, got {item!r}"
            )
    return users or None


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


class AirflowApprovalsMixin:
    """The ``airflow`` approval mode, shared by the session operator and the session sensor."""

    if TYPE_CHECKING:
        log: Any
        cancel_on_kill: bool
        approval_assigned_users: list[dict[str, str]] | None
        approval_notifiers: list[Any]
        approval_timeout: float | None
        approval_default: str

        @property
        def hook(self) -> Any: ...

        def what(self, run_id: str) -> str: ...

        def defer(
            self,
            *,
            trigger: Any,
            method_name: str,
            kwargs: dict[str, Any] | None = None,
            timeout: timedelta | int | float | None = None,
        ) -> NoReturn: ...

        def make_trigger(self, run_id: str, deadline: float | None, *, stop_on_paused: bool = True) -> RunTrigger: ...

    _approval_rounds: list[dict[str, Any]] | None = None

    def init_approvals(
        self,
        mode: str,
        assigned_users: Any,
        notifiers: Any,
        timeout: float | timedelta | None,
        default: str,
    ) -> None:
        from airflow_provider_runwatch.vendors.gumloop_approvals import check_default

        self.approval_assigned_users = _users(assigned_users)
        self.approval_notifiers = (
            list(notifiers) if isinstance(notifiers, list | tuple) else [notifiers] * bool(notifiers)
        )
        self.approval_timeout = seconds(timeout, "approval_timeout")
        self.approval_default = check_default(default)
        if mode == "airflow":
            try:
                import airflow.providers.standard.triggers.hitl  # noqa: F401
            except ImportError as exc:
                raise ConfigurationError(
                    "on_approval_required='airflow' needs Airflow's human-in-the-loop support "
                    f"(Airflow >= 3.1 with apache-airflow-providers-standard): {exc}"
                ) from None

    # -- rounds kept across deferrals (kwargs) and retries (task_state_store) ------------------------------------
    def rounds(self, context: Context) -> list[dict[str, Any]]:
        if self._approval_rounds is None:
            store = context.get("task_state_store")  # type: ignore[call-overload]
            saved = None
            if store is not None:
                try:
                    saved = store.get(ROUNDS_KEY)
                except Exception as exc:  # a convenience: the round record of this try still stands
                    self.log.warning("task_state_store read of %s failed: %s", ROUNDS_KEY, exc)
            self._approval_rounds = cast("list[dict[str, Any]]", list(saved)) if isinstance(saved, list) else []
        return self._approval_rounds

    def _save_rounds(self, context: Context, rounds: list[dict[str, Any]]) -> None:
        self._approval_rounds = rounds
        context["ti"].xcom_push(key="approvals", value=rounds)
        store = context.get("task_state_store")  # type: ignore[call-overload]
        if store is not None:
            try:
                store.set(ROUNDS_KEY, cast("Any", rounds))
            except Exception as exc:
                self.log.warning("task_state_store write of %s failed: %s", ROUNDS_KEY, exc)

    # -- asking ----------------------------------------------------------------------------------------------------
    def ask_in_airflow(self, context: Context, event: RunEvent, run_id: str) -> Any:
        """The session paused: open (or find again, after a retry) this task's request and defer until answered."""
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        from airflow_provider_runwatch.triggers.gumloop_approvals import GumloopApprovalTrigger
        from airflow_provider_runwatch.vendors.gumloop import paused_session
        from airflow_provider_runwatch.vendors.gumloop_approvals import ApprovalError, build_request, parse_pending

        hook: GumloopHook = self.hook
        _, pending = hook.call(paused_session(hook.settings, run_id))
        rounds = self.rounds(context)
        number = len(rounds) + 1
        try:
            items = parse_pending(pending)
            request = build_request(run_id, items, self.approval_default, number)  # type: ignore[arg-type]
        except ApprovalError as exc:
            raise RunFailedError(f"{self.what(run_id)} cannot be answered in Airflow: {exc}") from None
        context["ti"].xcom_push(key="pending_approvals", value=pending)
        ti_id = context["task_instance"].id
        upsert_hitl_detail(
            ti_id=ti_id,
            options=request.options,
            subject=request.subject,
            body=request.body,
            defaults=request.defaults,
            multiple=False,
            params={},
            assigned_users=self.approval_assigned_users,  # type: ignore[arg-type]
        )
        now = time.time()
        waits_until = now + self.approval_timeout if self.approval_timeout is not None else event.deadline
        for number_in_round, item in enumerate(items, 1):
            self.log.info(
                "Approval round %d, %d/%d: %s asks to run %s; waiting for an answer in Airflow's Required Actions%s",
                number,
                number_in_round,
                len(items),
                self.what(run_id),
                item.label,
                f" until {_iso(datetime.fromtimestamp(waits_until, timezone.utc))} (then: {self.approval_default})"
                if waits_until is not None
                else "",
            )
        for notifier in self.approval_notifiers:
            notifier(context)
        self.defer(
            trigger=GumloopApprovalTrigger(
                conn_id=hook.conn_id,
                session_id=run_id,
                cancel_on_kill=self.cancel_on_kill,
                ti_id=ti_id,
                options=request.options,
                defaults=request.defaults,
                params={},
                multiple=False,
                timeout_datetime=None if waits_until is None else datetime.fromtimestamp(waits_until, timezone.utc),
            ),
            method_name="approval_complete",
            kwargs={
                "run_id": run_id,
                "asked": [item.to_xcom() for item in items],
                "asked_at": now,
                "deadline": event.deadline,
                "approvals": rounds,
            },
        )

    # -- answering ------------------------------------------------------------------------------------------------
    def approval_complete(
        self,
        context: Context,
        event: Any = None,
        run_id: str = "",
        asked: Sequence[dict[str, Any]] = (),
        asked_at: float | None = None,
        deadline: float | None = None,
        approvals: list[dict[str, Any]] | None = None,
    ) -> Any:
        """The human answered (or the timeout chose the default): tell Gumloop, record it, wait on the session."""
        self.resume_rounds(approvals)
        from airflow_provider_runwatch.vendors.gumloop_approvals import (
            ApprovalError,
            PendingApproval,
            answer_actions,
            approval_responses,
            responder_name,
            round_record,
        )

        if not isinstance(event, dict) or "error" in event:
            detail = event.get("error") if isinstance(event, dict) else event
            raise RunFailedError(
                f"{self.what(run_id)}: the approval request in Airflow ended without an answer ({detail}); the "
                "session is still waiting for approval. Clear the task to ask again."
            )
        items = [PendingApproval(**item) for item in asked]
        try:
            actions = answer_actions(event.get("chosen_options") or [], items)
        except ApprovalError as exc:
            raise RunFailedError(f"{self.what(run_id)}: {exc}") from None
        timed_out = bool(event.get("timedout"))
        user = event.get("responded_by_user")
        hook: GumloopHook = self.hook
        reply = hook.submit_approvals(run_id, approval_responses(items, actions))
        state = None
        if isinstance(reply, dict):
            session = reply.get("session")
            state = session.get("state") if isinstance(session, dict) else reply.get("state")
        rounds = [*self.rounds(context)]
        answered_at = _iso(event.get("responded_at"))
        record = round_record(
            round_number=len(rounds) + 1,
            session_id=run_id,
            items=items,
            actions=actions,
            asked_at=_iso(datetime.fromtimestamp(asked_at, timezone.utc)) if asked_at else None,
            answered_at=answered_at,
            answered_by=user if isinstance(user, dict) else None,
            timed_out=timed_out,
            gumloop_state=state,
        )
        rounds.append(record)
        self._save_rounds(context, rounds)
        who = responder_name(record["answered_by"], timed_out)
        for item, action in zip(items, actions, strict=True):
            self.log.info(
                "Approval round %d: %s %s by %s at %s; Gumloop took it (session now '%s')",
                record["round"],
                action + "ed",
                item.label,
                who,
                answered_at,
                state,
            )
        if deadline is not None and self.approval_timeout is not None and asked_at is not None:
            # approval_timeout set: the human's time does not count against `timeout`.
            deadline += max(0.0, time.time() - asked_at)
        self.defer(
            trigger=self.make_trigger(run_id, deadline, stop_on_paused=True),
            method_name="execute_complete",
            kwargs={"run_id": run_id, "approvals": rounds},
        )

    # -- resuming: the rounds ride along; a failure after a rejection names the rejected call ---------------------
    def execute_complete(
        self,
        context: Context,
        event: Any = None,
        run_id: str | None = None,
        *args: Any,
        approvals: list[dict[str, Any]] | None = None,
        **resume: Any,
    ) -> Any:
        """Resume with the rounds answered so far; the rest (the operator's ``run_url``) goes to the base."""
        self.resume_rounds(approvals)
        return super().execute_complete(context, event, run_id, *args, **resume)  # type: ignore[misc]

    def failure_message(self, event: RunEvent, run_id: str) -> str:
        message: str = super().failure_message(event, run_id)  # type: ignore[misc]
        note = self.rejection_note() if event.status == "failed" else ""
        return message.replace(" failed", " failed" + note, 1) if note else message

    def resume_rounds(self, approvals: list[dict[str, Any]] | None) -> None:
        """Rounds handed on through a deferral's kwargs (the only carrier before Airflow 3.3)."""
        if approvals is not None:
            self._approval_rounds = list(approvals)

    def rejection_note(self) -> str:
        """`` after the tool call send_email (act_1) was rejected in Airflow`` when a rejection is the likely cause."""
        from airflow_provider_runwatch.vendors.gumloop_approvals import rejected_calls

        rejected = rejected_calls(self._approval_rounds or [])
        if not rejected:
            return ""
        return f" after the tool call {', '.join(rejected)} was rejected in Airflow (see the `approvals` XCom)"
