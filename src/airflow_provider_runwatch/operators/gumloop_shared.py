"""What the Gumloop operators and sensors share: the interaction adapter and trigger
bound to a task's identity, and what to do when a session pauses for a human (``on_approval_required``).

One module both import, so that neither reaches into the other's private helpers. Module-level imports stay
light (DAG files import the operators and sensors): hooks, vendor models and triggers load when a task runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

from airflow_provider_runwatch.core.errors import ConfigurationError
from airflow_provider_runwatch.operators.base import RunFailedError, import_attribute

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_runwatch.core.adapter import RunAdapter, RunResult
    from airflow_provider_runwatch.core.models import RunEvent
    from airflow_provider_runwatch.hooks.base import RunwatchHook

HOOK = "airflow_provider_runwatch.hooks.gumloop.GumloopHook"
APPROVAL_MODES = ("fail", "wait", "succeed", "airflow")
ApprovalMode = Literal["fail", "wait", "succeed", "airflow"]


def check_approval_mode(mode: str) -> ApprovalMode:
    if mode not in APPROVAL_MODES:
        raise ConfigurationError(f"on_approval_required must be one of {', '.join(APPROVAL_MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]


class GumloopTask(Protocol):
    """What the shared helpers need of a Gumloop operator or sensor (both are ``RunTaskMixin`` tasks)."""

    log: Any

    @property
    def hook(self) -> RunwatchHook: ...

    def what(self, run_id: str) -> str: ...

    def push_run(self, context: Context, value: dict[str, Any]) -> None: ...

    def push_failure_summary(self, context: Context, event: RunEvent) -> None: ...


class InteractionTask(GumloopTask, Protocol):
    user_id: str | None
    project_id: str | None


# -- interactions: the task's user/project override follows the run to the triggerer ----------------------------
def interaction_adapter(task: InteractionTask) -> RunAdapter:
    adapter = import_attribute("airflow_provider_runwatch.vendors.gumloop.INTERACTIONS")
    bound: RunAdapter = adapter.with_identity(task.user_id, task.project_id)
    return bound


def interaction_trigger_kwargs(task: InteractionTask) -> dict[str, Any]:
    """The task's user/project override, for its trigger's kwargs (``RunTaskMixin.trigger_kwargs``)."""
    return {"user_id": task.user_id or None, "project_id": task.project_id or None}


# -- sessions: approvals ------------------------------------------------------------------------------------------
def handle_paused(task: GumloopTask, context: Context, event: RunEvent, run_id: str, mode: ApprovalMode) -> Any:
    """A session stopped at ``approval_required``: fail with the approvals summarized, or hand on the text so
    far with ``pending_approvals`` in XCom. In ``wait`` mode (sensor pokes) return None: keep waiting."""
    from airflow_provider_runwatch.core.errors import RunwatchError
    from airflow_provider_runwatch.vendors.gumloop import describe_approvals, paused_session

    if mode == "wait":
        task.log.info("%s is waiting for an approval; waiting on", task.what(run_id))
        return None
    hook = task.hook
    result: RunResult | None = None
    pending: list[Any] = []
    try:
        result, pending = hook.call(paused_session(hook.settings, run_id))
    except RunwatchError as exc:
        task.log.warning("Could not read the pending approvals of %s: %s", task.what(run_id), exc)
    ti = context["ti"]
    ti.xcom_push(key="pending_approvals", value=pending)
    if mode == "succeed" and result is not None:
        if result.messages is not None:
            ti.xcom_push(key="messages", value=result.messages)
        task.push_run(context, result.summary.to_xcom())
        task.log.info(
            "%s needs a human decision (%s); handing on the text so far (on_approval_required='succeed')",
            task.what(run_id),
            describe_approvals(pending),
        )
        # The session is not over: a clear of this task reattaches to it (and gets the final answer once the
        # approvals are answered), so the derived session id stays where it is.
        return result.answer
    task.push_failure_summary(context, event)
    summary = describe_approvals(pending) if result is not None else (event.message or "waiting for an approval")
    raise RunFailedError(
        f"{task.what(run_id)} is waiting for a human approval (vendor state 'approval_required'): {summary}. "
        "Answer it in Gumloop (or POST /sessions/{id}/approvals) and clear the task, or set "
        "on_approval_required='wait', 'succeed' or 'airflow' (ask in Airflow's Required Actions)."
    )
