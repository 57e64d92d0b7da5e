"""Gumloop operators: agent interactions, agent sessions (retry-safe, cancellable, approvals), flows, session
listing, and session batches.

Module-level imports stay light (no httpx, no pydantic models): DAG files importing these operators are parsed
often. Hooks, vendor models and triggers are imported when a task runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_provider_runwatch.core.checks import optional_whole_number, whole_number
from airflow_provider_runwatch.core.errors import ConfigurationError
from airflow_provider_runwatch.links import GumloopRunLink
from airflow_provider_runwatch.operators.base import (
    RunFailedError,
    RunOperator,
    StartedRun,
    import_attribute,
    try_number,
)
from airflow_provider_runwatch.operators.batch import RunBatchOperator
from airflow_provider_runwatch.operators.gumloop_approvals import AirflowApprovalsMixin
from airflow_provider_runwatch.operators.gumloop_shared import (
    HOOK,
    ApprovalMode,
    check_approval_mode,
    handle_paused,
    interaction_adapter,
    interaction_trigger_kwargs,
)
from airflow_provider_runwatch.vendors.gumloop_limits import DEFAULT_POLL_INTERVAL, check_poll_interval

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_runwatch.core.adapter import RunAdapter, RunResult
    from airflow_provider_runwatch.core.models import RunEvent
    from airflow_provider_runwatch.hooks.gumloop import GumloopHook

#: task_state_store keys of the session operator (Airflow >= 3.3).
GENERATION_KEY = "runwatch_gumloop_session_generation"
CANCELLED_KEY = "runwatch_gumloop_cancelled_session"
#: Derived session ids tried in a row when earlier ones belong to sessions that are already over.
MAX_GENERATIONS = 20
#: Session states an earlier try's session can be in without being worth reattaching to.
DEAD_SESSION_STATES = frozenset({"failed", "cancelled", "idle"})


class GumloopAgentOperator(RunOperator):
    """Send a message to a Gumloop agent (the interactions API: ``start_agent`` + ``agent_status``) and hand
    on its answer.

    XCom: ``run_id`` = the interaction id (before waiting); return value = the final ``response`` text;
    ``messages`` = the conversation as Gumloop sent it; ``run`` = summary (state, tool calls, timings).

    :param agent_id: the agent (``gummie_id``), templated.
    :param message: the user message, templated.
    :param user_id: override the connection's Login as ``user_id`` (templated).
    :param project_id: override the connection's extra ``project_id`` (templated).
    :param interaction_id: continue an earlier conversation that has finished (templated); Gumloop answers
        409 while it is still running.

    Plus every :class:`~airflow_provider_runwatch.operators.base.RunOperator` option; ``poll_interval``
    defaults to 3 s and may not be under 1 s. Gumloop cannot cancel an interaction: a kill or a timeout logs
    that it goes on.
    """

    #: Durable without ``ResumableJobMixin`` (see RunOperator's ``durable``): the Airflow registry's marker.
    __supports_durable_execution: ClassVar[bool] = True
    template_fields: Sequence[str] = ("agent_id", "message", "user_id", "project_id", "interaction_id")
    hook_class_path = HOOK
    adapter_path = "airflow_provider_runwatch.vendors.gumloop.INTERACTIONS"
    trigger_class_path = "airflow_provider_runwatch.triggers.gumloop.GumloopAgentTrigger"
    default_poll_interval = DEFAULT_POLL_INTERVAL

    def __init__(
        self,
        *,
        agent_id: str,
        message: str,
        user_id: str | None = None,
        project_id: str | None = None,
        interaction_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_poll_interval(self.poll_interval)
        self.agent_id = agent_id
        self.message = message
        self.user_id = user_id
        self.project_id = project_id
        self.interaction_id = interaction_id

    @property
    def adapter(self) -> RunAdapter:
        return interaction_adapter(self)

    def trigger_kwargs(self) -> dict[str, Any]:
        return interaction_trigger_kwargs(self)

    def start_run(self, context: Context) -> StartedRun:
        from airflow_provider_runwatch.core.errors import ConflictError

        hook: GumloopHook = self.hook  # type: ignore[assignment]
        try:
            started = hook.start_agent(
                self.agent_id,
                self.message,
                user_id=self.user_id or None,
                project_id=self.project_id or None,
                interaction_id=self.interaction_id or None,
            )
        except ConflictError:
            # 409 interaction_not_in_terminal_state on a retry: most likely the turn the earlier try sent is still
            # running (without task_state_store nothing recorded it). Watch it rather than fail the retry.
            if self.interaction_id and try_number(context) > 1:
                self.log.warning(
                    "Gumloop agent interaction %s is still running, probably with the message an earlier try sent; "
                    "watching it instead of sending the message again",
                    self.interaction_id,
                )
                return StartedRun(str(self.interaction_id), reattached=True)
            raise
        return StartedRun(started.interaction_id)


class GumloopSessionOperator(AirflowApprovalsMixin, RunOperator):
    """Run a Gumloop agent session (``POST /agents/{agent_id}/sessions``) and hand on its answer.

    Retry-safe: the session id is derived from dag id, task id, run id and map index (``sess_airflow_`` + a
    hash), so a retry's create call gets 409 ``session_already_exists`` and reattaches to the session the
    earlier try started, running or finished, instead of starting a second one. A session of an earlier try
    that failed or was cancelled is not reattached to: the retry starts a fresh one under the next derived id.

    XCom: ``run_id`` = the session id (before waiting); return value = the last assistant text; ``messages``
    = the conversation as Gumloop sent it; ``run`` = summary (state, usage and credit cost, tool calls);
    ``pending_approvals`` when the session stopped for an approval.

    :param agent_id: the agent (templated).
    :param input: the message that starts the session (templated, non-empty).
    :param metadata: a JSON object stored with the session (templated).
    :param session_id: your own session id (templated) instead of the derived one; a 409 then always
        reattaches to that session, whatever its state.
    :param on_approval_required: what to do when the session pauses for a human (``approval_required``):
        ``"fail"`` (default) fails the task with the pending approvals summarized; ``"wait"`` keeps waiting
        until someone answers them (or ``timeout`` passes); ``"succeed"`` returns the text so far and pushes
        ``pending_approvals``; ``"airflow"`` asks in Airflow's Required Actions (human in the loop), posts the
        answer to Gumloop and waits on, round after round; every round is in the ``approvals`` XCom.
    :param approval_assigned_users: with ``"airflow"``: who may answer (user ids, or ``{"id", "name"}``).
    :param approval_notifiers: with ``"airflow"``: notifiers run when a request opens (Airflow ``BaseNotifier``).
    :param approval_timeout: with ``"airflow"``: seconds (or a timedelta) each round may wait for the human;
        that time then does not count against ``timeout``. Unset, the human's time counts against ``timeout``
        and the request times out when ``timeout`` would.
    :param approval_default: with ``"airflow"``: the answer a timeout gives, ``"reject"`` (default) or
        ``"accept"``.

    Plus every :class:`~airflow_provider_runwatch.operators.base.RunOperator` option; ``poll_interval``
    defaults to 3 s and may not be under 1 s. A kill, or a ``timeout`` that passes, cancels the session.
    """

    #: Durable without ``ResumableJobMixin`` (see RunOperator's ``durable``): the Airflow registry's marker.
    __supports_durable_execution: ClassVar[bool] = True
    template_fields: Sequence[str] = ("agent_id", "input", "metadata", "session_id")
    template_fields_renderers = {"metadata": "json"}
    hook_class_path = HOOK
    adapter_path = "airflow_provider_runwatch.vendors.gumloop.SESSIONS"
    trigger_class_path = "airflow_provider_runwatch.triggers.gumloop.GumloopSessionTrigger"
    default_poll_interval = DEFAULT_POLL_INTERVAL

    def __init__(
        self,
        *,
        agent_id: str,
        input: str,
        metadata: dict[str, Any] | None = None,
        session_id: str | None = None,
        on_approval_required: ApprovalMode = "fail",
        approval_assigned_users: Any = None,
        approval_notifiers: Any = None,
        approval_timeout: float | timedelta | None = None,
        approval_default: str = "reject",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_poll_interval(self.poll_interval)
        self.agent_id = agent_id
        self.input = input
        self.metadata = metadata
        self.session_id = session_id
        self.on_approval_required = check_approval_mode(on_approval_required)
        self.init_approvals(
            self.on_approval_required, approval_assigned_users, approval_notifiers, approval_timeout, approval_default
        )
        self._store: Any = None

    @property
    def stop_on_paused(self) -> bool:
        return self.on_approval_required != "wait"

    def on_paused(self, context: Context, event: RunEvent, run_id: str) -> Any:
        if self.on_approval_required == "airflow":
            return self.ask_in_airflow(context, event, run_id)
        return handle_paused(self, context, event, run_id, self.on_approval_required)

    # -- starting, idempotently ---------------------------------------------------------------------------------
    def reattach_or_start(self, context: Context) -> tuple[str, Any]:
        self._store = self.state_store(context)
        from airflow_provider_runwatch.core.models import RunState

        run_id, status = super().reattach_or_start(context)
        if (
            status is not None
            and status.state is RunState.PAUSED
            and self.on_approval_required == "airflow"
            and self.wait_for_completion
        ):
            # A retry found its session waiting for approval: ask (or find the open request) right away, rather
            # than deferring on the session only to be told at once that it is paused.
            from airflow_provider_runwatch.core.models import RunEvent

            event = RunEvent(
                status="paused",
                vendor=status.vendor,
                run_id=run_id,
                state=status.state,
                vendor_state=status.vendor_state,
                deadline=self.deadline(context, self.timeout),
            )
            self.ask_in_airflow(context, event, run_id)
        return run_id, status

    def _status_of_previous(self, run_id: str) -> Any:
        if run_id == self._store_get(CANCELLED_KEY):
            # It may still read 'processing' for a while after the cancel: it is over all the same.
            self.log.info("Gumloop session %s was cancelled by an earlier try; starting a fresh session", run_id)
            return None
        return super()._status_of_previous(run_id)

    def start_run(self, context: Context) -> StartedRun:
        from airflow_provider_runwatch.core.errors import ConflictError
        from airflow_provider_runwatch.vendors.gumloop import derive_session_id, validate_session_id

        hook: GumloopHook = self.hook  # type: ignore[assignment]
        explicit = str(self.session_id).strip() if self.session_id else None
        if explicit:
            validate_session_id(explicit)
        ti = context["ti"]
        generation = self._generation()
        cancelled = self._store_get(CANCELLED_KEY)
        for gen in range(generation, generation + MAX_GENERATIONS):
            session_id = explicit or derive_session_id(ti.dag_id, ti.task_id, ti.run_id, _map_index(ti), gen)
            try:
                envelope = hook.create_session(self.agent_id, self.input, session_id=session_id, metadata=self.metadata)
            except ConflictError as exc:
                existing = self._existing(session_id, exc)
                state = existing.session.state
                if explicit or (state not in DEAD_SESSION_STATES and session_id != cancelled):
                    self.log.info(
                        "Gumloop session %s already exists (%s, state '%s'): reattaching instead of starting another",
                        session_id,
                        "the session_id you chose" if explicit else "started by an earlier try",
                        state,
                    )
                    if not explicit:
                        self._store_set(GENERATION_KEY, gen)
                    return StartedRun(existing.session.id, reattached=True)
                why = "was cancelled by this task" if session_id == cancelled else f"ended '{state}'"
                self.log.info("Gumloop session %s of an earlier try %s; starting a fresh session", session_id, why)
                continue
            if not explicit:
                self._store_set(GENERATION_KEY, gen)
            if envelope.queue_position is not None:
                self.log.info("Gumloop queued session %s at position %s", session_id, envelope.queue_position)
            return StartedRun(envelope.session.id)
        raise RunFailedError(
            f"Gumloop sessions {MAX_GENERATIONS} derived ids in a row already exist and are over; pass session_id "
            "to choose one"
        )

    def _existing(self, session_id: str, conflict: Exception) -> Any:
        from airflow_provider_runwatch.core.errors import NotFoundError

        hook: GumloopHook = self.hook  # type: ignore[assignment]
        try:
            return hook.get_session(session_id)
        except NotFoundError:
            raise conflict from None

    def _generation(self) -> int:
        if self.session_id:
            return 0
        value = self._store_get(GENERATION_KEY)
        try:
            return max(0, int(value)) if value is not None else 0
        except (TypeError, ValueError):
            return 0

    def _store_get(self, key: str) -> Any:
        if self._store is None:
            return None
        try:
            return self._store.get(key)
        except Exception as exc:  # the store is a convenience; the derived id still protects retries
            self.log.warning("task_state_store read of %s failed: %s", key, exc)
            return None

    def _store_set(self, key: str, value: Any) -> None:
        if self._store is None:
            return
        try:
            self._store.set(key, value)
        except Exception as exc:
            self.log.warning("task_state_store write of %s failed: %s", key, exc)

    # -- finishing ------------------------------------------------------------------------------------------------
    def succeed(self, context: Context, result: RunResult) -> Any:
        answer = super().succeed(context, result)
        self._advance_generation(context)
        return answer

    def _advance_generation(self, context: Context) -> None:
        """After a success, a later clear of this task must start a new session: move to the next id."""
        if self._store is None:
            self._store = self.state_store(context)
        if not self.session_id:
            self._store_set(GENERATION_KEY, self._generation() + 1)

    def finish(self, context: Context, event: RunEvent, run_id: str) -> Any:
        if event.status == "timeout" and self.cancel_on_kill:
            self._remember_cancel(context, run_id)
        return super().finish(context, event, run_id)

    def on_kill(self) -> None:
        super().on_kill()
        if self._run_id is not None and self.cancel_on_kill:
            self._remember_cancel(None, self._run_id)

    def _remember_cancel(self, context: Context | None, run_id: str) -> None:
        """A cancelled session may read as running for a while: never reattach to it on a retry."""
        if self._store is None and context is not None:
            self._store = self.state_store(context)
        self._store_set(CANCELLED_KEY, run_id)


def _map_index(ti: Any) -> int:
    value = getattr(ti, "map_index", -1)
    return -1 if value is None else int(value)


# -- flows ----------------------------------------------------------------------------------------------------------
class GumloopFlowOperator(RunOperator):
    """Run a Gumloop flow (``start_pipeline``), wait, and hand on its ``outputs``.

    XCom: ``run_id`` and ``run_url`` (the link Gumloop returns; also the task's "View run on Gumloop" link)
    before waiting; return value = the flow's ``outputs`` dict; ``run`` = summary (state, timings, last log
    lines).

    :param flow_id: the flow (``saved_item_id``), templated.
    :param inputs: ``{input name: value}``, sent as ``pipeline_inputs`` (templated).

    Plus every :class:`~airflow_provider_runwatch.operators.base.RunOperator` option; ``poll_interval``
    defaults to 3 s and may not be under 1 s. A kill, or a ``timeout`` that passes, kills the flow run
    (``kill_pipeline``).
    """

    #: Durable without ``ResumableJobMixin`` (see RunOperator's ``durable``): the Airflow registry's marker.
    __supports_durable_execution: ClassVar[bool] = True
    template_fields: Sequence[str] = ("flow_id", "inputs")
    template_fields_renderers = {"inputs": "json"}
    operator_extra_links = (GumloopRunLink(),)
    hook_class_path = HOOK
    adapter_path = "airflow_provider_runwatch.vendors.gumloop.FLOWS"
    trigger_class_path = "airflow_provider_runwatch.triggers.gumloop.GumloopFlowTrigger"
    default_poll_interval = DEFAULT_POLL_INTERVAL

    def __init__(self, *, flow_id: str, inputs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_poll_interval(self.poll_interval)
        self.flow_id = flow_id
        self.inputs = inputs

    def start_run(self, context: Context) -> StartedRun:
        hook: GumloopHook = self.hook  # type: ignore[assignment]
        started = hook.start_pipeline(self.flow_id, self.inputs)
        return StartedRun(started.run_id, started.url)


# -- listing ----------------------------------------------------------------------------------------------------
def _as_datetime(value: Any, name: str) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    from airflow_provider_runwatch.core.models import as_utc

    parsed = as_utc(value.strip() if isinstance(value, str) else value)
    if not isinstance(parsed, datetime):
        raise ConfigurationError(f"{name} must be an ISO timestamp or a datetime, got {value!r}")
    return parsed


class GumloopListSessionsOperator(BaseOperator):
    """List an agent's sessions, page by page (cursor paging), and return them as a JSON list.

    :param agent_id: the agent (templated).
    :param conn_id: Airflow connection id (default ``gumloop_default``).
    :param page_size: sessions per request, 1-100 (default 100: fewest requests).
    :param search: text search (templated).
    :param sort_order: ``"newest"`` (default) or ``"oldest"`` (templated).
    :param type: session type filter, e.g. ``api``, ``web``, ``slack`` (templated).
    :param state: session state filter, e.g. ``completed`` (templated).
    :param creator_user_id: only sessions this user started (templated).
    :param trigger_id: only sessions of this trigger (templated).
    :param created_after: keep sessions created at or after this time (templated, e.g.
        ``"{{ data_interval_start }}"``). Gumloop has no date filter, so this one is applied here; with
        ``sort_order="newest"`` paging stops at the first older session.
    :param created_before: keep sessions created before this time (templated); with ``sort_order="oldest"``
        paging stops at the first session at or after it.
    :param max_sessions: return at most this many sessions (default 1000); paging stops there.

    Return value: a list of session objects (no messages: list items carry none), timestamps in UTC.
    """

    template_fields: Sequence[str] = (
        "agent_id",
        "search",
        "sort_order",
        "type",
        "state",
        "creator_user_id",
        "trigger_id",
        "created_after",
        "created_before",
    )
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        agent_id: str,
        conn_id: str | None = None,
        page_size: int = 100,
        search: str | None = None,
        sort_order: str | None = "newest",
        type: str | None = None,
        state: str | None = None,
        creator_user_id: str | None = None,
        trigger_id: str | None = None,
        created_after: str | datetime | None = None,
        created_before: str | datetime | None = None,
        max_sessions: int | None = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.agent_id = agent_id
        self.conn_id = conn_id
        self.page_size = whole_number(page_size, "page_size", maximum=100)
        self.search = search
        self.sort_order = sort_order
        self.type = type
        self.state = state
        self.creator_user_id = creator_user_id
        self.trigger_id = trigger_id
        self.created_after = created_after
        self.created_before = created_before
        self.max_sessions = optional_whole_number(max_sessions, "max_sessions")

    def execute(self, context: Context) -> list[dict[str, Any]]:
        hook: GumloopHook = import_attribute(HOOK)(self.conn_id)
        after = _as_datetime(self.created_after, "created_after")
        before = _as_datetime(self.created_before, "created_before")
        order = (self.sort_order or "").strip() or None
        found: list[dict[str, Any]] = []
        scanned = 0
        sessions = hook.iter_sessions(
            self.agent_id,
            page_size=self.page_size,
            search=self.search,
            sort_order=order,
            type=self.type,
            state=self.state,
            creator_user_id=self.creator_user_id,
            trigger_id=self.trigger_id,
        )
        try:
            for session in sessions:
                scanned += 1
                created = session.created_at
                if after is not None and created is not None and created < after:
                    if order == "newest":
                        break
                    continue
                if before is not None and created is not None and created >= before:
                    if order == "oldest":
                        break
                    continue
                found.append(session.model_dump(mode="json", exclude_unset=True))
                if self.max_sessions is not None and len(found) >= self.max_sessions:
                    self.log.info("Stopped at max_sessions=%d", self.max_sessions)
                    break
        finally:
            hook.close()
        self.log.info("Listed %d Gumloop sessions of agent %s (%d read)", len(found), self.agent_id, scanned)
        return found


# -- session batches ------------------------------------------------------------------------------------------------
#: The connection extra naming the plan's concurrency limit (Free 5, Pro 25, Enterprise 100 agent runs).
MAX_CONCURRENT_RUNS_EXTRA = "max_concurrent_runs"


class GumloopSessionBatchOperator(RunBatchOperator):
    """Run one Gumloop agent session per input, at most ``max_concurrency`` at once, in one task.

    Return value: the last assistant text of each session, in the order of ``inputs`` (``None`` where a
    session did not succeed). XCom ``runs``: one summary per input (``index``, ``run_id`` = the session id,
    ``state``, ``error``, ``usage`` with the credit cost).

    :param agent_id: the agent (templated).
    :param inputs: the messages that start the sessions (templated; a list of non-empty strings).
    :param metadata: a JSON object stored with every session (templated).
    :param max_concurrency: sessions held at once; default: the connection's ``max_concurrent_runs`` extra
        (your plan's limit: Free 5, Pro 25, Enterprise 100), else 5. Over the plan's limit Gumloop refuses a
        start with 429: the batch holds its starts back (with a growing, jittered backoff) and starts again.

    Retry-safe on every Airflow version: each item's session id is derived from dag id, task id, run id, map
    index and the item's index (``sess_airflow_`` + a hash), so a retry's create call answers 409 and
    reattaches to the session its earlier try started. A session that failed or was cancelled starts again
    under the next derived id. A kill, or a ``timeout`` that passes, cancels every session still going.
    Sessions that stop for an approval (``approval_required``) end their item as ``paused`` (not a success).
    Plus every :class:`~airflow_provider_runwatch.operators.batch.RunBatchOperator` option; ``poll_interval``
    defaults to 3 s and may not be under 1 s.
    """

    __supports_durable_execution: ClassVar[bool] = True
    template_fields: Sequence[str] = ("agent_id", "inputs", "metadata")
    template_fields_renderers = {"inputs": "json", "metadata": "json"}
    hook_class_path = HOOK
    adapter_path = GumloopSessionOperator.adapter_path
    batch_trigger_class_path = "airflow_provider_runwatch.triggers.gumloop.GumloopSessionBatchTrigger"
    default_poll_interval = DEFAULT_POLL_INTERVAL
    default_max_concurrency = 5

    def __init__(
        self, *, agent_id: str, inputs: list[str], metadata: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        check_poll_interval(self.poll_interval)
        self.agent_id = agent_id
        self.inputs = inputs
        self.metadata = metadata

    def check_input(self, index: int, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(f"{self.task_id}: inputs[{index}] must be a non-empty string, got {value!r}")
        return value

    def connection_concurrency(self) -> int | None:
        from airflow_provider_runwatch.core.batch import check_concurrency

        value = self.hook.settings.extras.get(MAX_CONCURRENT_RUNS_EXTRA)
        if value in (None, ""):
            return None
        return check_concurrency(value, f"Gumloop connection '{self.hook.conn_id}' extra '{MAX_CONCURRENT_RUNS_EXTRA}'")

    def retry_note(self) -> str:
        return "; each item's derived session id still finds the session an earlier try started"

    def start_item(self, context: Context, item: Any, value: Any) -> StartedRun:
        from airflow_provider_runwatch.core.errors import ConflictError
        from airflow_provider_runwatch.vendors.gumloop import derive_batch_session_id

        hook: GumloopHook = self.hook  # type: ignore[assignment]
        ti = context["ti"]
        for attempt in range(item.attempts, item.attempts + MAX_GENERATIONS):
            session_id = derive_batch_session_id(
                ti.dag_id, ti.task_id, ti.run_id, _map_index(ti), item.index, self._generation, attempt
            )
            item.attempts = attempt  # the plan counts this start on top
            try:
                envelope = hook.create_session(self.agent_id, value, session_id=session_id, metadata=self.metadata)
            except ConflictError:
                state = hook.get_session(session_id).session.state
                if state not in DEAD_SESSION_STATES:
                    return StartedRun(session_id, reattached=True)
                self.log.info(
                    "Gumloop session %s of item %d ended '%s'; starting a fresh one", session_id, item.index, state
                )
                continue
            return StartedRun(envelope.session.id)
        raise RunFailedError(
            f"Gumloop sessions: {MAX_GENERATIONS} derived ids of item {item.index} already exist and are over"
        )
