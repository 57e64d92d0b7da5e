"""Gumloop sensors: wait for an agent interaction, a session or a flow run started elsewhere."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import PokeReturnValue

from airflow_provider_runwatch.core.errors import ConfigurationError
from airflow_provider_runwatch.operators.gumloop_approvals import AirflowApprovalsMixin
from airflow_provider_runwatch.operators.gumloop_shared import (
    HOOK,
    ApprovalMode,
    check_approval_mode,
    handle_paused,
    interaction_adapter,
    interaction_trigger_kwargs,
)
from airflow_provider_runwatch.sensors.base import RunSensor
from airflow_provider_runwatch.vendors.gumloop_limits import DEFAULT_POLL_INTERVAL, check_poll_interval

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_runwatch.core.adapter import RunAdapter
    from airflow_provider_runwatch.core.models import RunEvent
    from airflow_provider_runwatch.triggers.base import RunTrigger

_UNSET: Any = object()


def _one_id(run_id: str | None, alias: str | None, alias_name: str, what: str) -> str:
    if run_id is not None and alias is not None and run_id != alias:
        raise ConfigurationError(f"pass the {what} as run_id or as {alias_name}, not both ({run_id!r} != {alias!r})")
    chosen = run_id if run_id is not None else alias
    if chosen is None:
        raise ConfigurationError(f"the {what} to watch is required: pass {alias_name}= (or run_id=)")
    return chosen


class _GumloopSensor(RunSensor):
    hook_class_path = HOOK
    default_poll_interval = DEFAULT_POLL_INTERVAL

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_poll_interval(self.poll_interval, "poke_interval")


class GumloopAgentSensor(_GumloopSensor):
    """Wait for Gumloop agent interaction ``run_id`` (alias ``interaction_id``); returns its ``response``.

    :param user_id: override the connection's Login as ``user_id`` for the reads (templated).
    :param project_id: override the connection's extra ``project_id`` for the reads (templated).
    """

    template_fields: tuple[str, ...] = ("run_id", "user_id", "project_id")  # type: ignore[assignment]
    adapter_path = "airflow_provider_runwatch.vendors.gumloop.INTERACTIONS"
    trigger_class_path = "airflow_provider_runwatch.triggers.gumloop.GumloopAgentTrigger"

    def __init__(
        self,
        *,
        run_id: str | None = None,
        interaction_id: str | None = None,
        user_id: str | None = None,
        project_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(run_id=_one_id(run_id, interaction_id, "interaction_id", "interaction id"), **kwargs)
        self.user_id = user_id
        self.project_id = project_id

    @property
    def interaction_id(self) -> str:
        return self.run_id

    @property
    def adapter(self) -> RunAdapter:
        return interaction_adapter(self)

    def trigger_kwargs(self) -> dict[str, Any]:
        return interaction_trigger_kwargs(self)


class GumloopSessionSensor(AirflowApprovalsMixin, _GumloopSensor):
    """Wait for Gumloop session ``run_id`` (alias ``session_id``); returns its last assistant text.

    :param on_approval_required: ``"fail"`` (default), ``"wait"``, ``"succeed"`` or ``"airflow"``, with
        ``approval_assigned_users``, ``approval_notifiers``, ``approval_timeout`` and ``approval_default``, as
        for :class:`~airflow_provider_runwatch.operators.gumloop.GumloopSessionOperator`. With ``"airflow"``
        the sensor waits for the human deferred, whatever its mode, and then on the session deferred too.

    The sensor did not start the session, so it does not cancel it on kill unless ``cancel_on_kill=True``.
    """

    adapter_path = "airflow_provider_runwatch.vendors.gumloop.SESSIONS"
    trigger_class_path = "airflow_provider_runwatch.triggers.gumloop.GumloopSessionTrigger"

    def __init__(
        self,
        *,
        run_id: str | None = None,
        session_id: str | None = None,
        on_approval_required: ApprovalMode = "fail",
        approval_assigned_users: Any = None,
        approval_notifiers: Any = None,
        approval_timeout: float | timedelta | None = None,
        approval_default: str = "reject",
        **kwargs: Any,
    ) -> None:
        super().__init__(run_id=_one_id(run_id, session_id, "session_id", "session id"), **kwargs)
        self.on_approval_required = check_approval_mode(on_approval_required)
        self.init_approvals(
            self.on_approval_required, approval_assigned_users, approval_notifiers, approval_timeout, approval_default
        )
        self._paused_answer: Any = _UNSET

    @property
    def session_id(self) -> str:
        return self.run_id

    @property
    def stop_on_paused(self) -> bool:
        return self.on_approval_required != "wait"

    def make_trigger(self, run_id: str, deadline: float | None, *, stop_on_paused: bool = True) -> RunTrigger:
        return super().make_trigger(run_id, deadline, stop_on_paused=self.stop_on_paused)

    def on_paused(self, context: Context, event: RunEvent, run_id: str) -> Any:
        if self.on_approval_required == "airflow":
            return self.ask_in_airflow(context, event, run_id)
        answer = handle_paused(self, context, event, run_id, self.on_approval_required)
        if self.on_approval_required == "succeed":
            self._paused_answer = answer
        return answer

    def poke(self, context: Context) -> PokeReturnValue:
        self._paused_answer = _UNSET
        result = super().poke(context)
        if self._paused_answer is not _UNSET:
            return PokeReturnValue(is_done=True, xcom_value=self._paused_answer)
        return result


class GumloopFlowSensor(_GumloopSensor):
    """Wait for Gumloop flow run ``run_id``; returns its ``outputs``."""

    adapter_path = "airflow_provider_runwatch.vendors.gumloop.FLOWS"
    trigger_class_path = "airflow_provider_runwatch.triggers.gumloop.GumloopFlowTrigger"
