"""What every runwatch operator and sensor shares: hooks and adapters resolved lazily, the deadline,
the trigger, event validation, the final-result fetch, XCom pushes, failure messages and cancellation.

Module-level imports stay light on purpose: every DAG file that imports an operator pays for them in
the dag-processor, so httpx, the vendor models and the triggers are imported only when a task runs.
"""

from __future__ import annotations

import importlib
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_provider_runwatch.core.admission import (
    DEFAULT_BACKOFF,
    DEFAULT_START_TIMEOUT,
    AdmissionBackoff,
    admission_wait,
    give_up_line,
    refusal_of,
    span,
)
from airflow_provider_runwatch.core.errors import ConfigurationError, RunwatchError, shorten
from airflow_provider_runwatch.core.retry import ADMITTED_STARTS

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_runwatch.core.adapter import RunAdapter, RunResult
    from airflow_provider_runwatch.core.admission import Refusal
    from airflow_provider_runwatch.core.models import RunEvent, RunStatus
    from airflow_provider_runwatch.core.retry import RetryPolicy
    from airflow_provider_runwatch.hooks.base import RunwatchHook
    from airflow_provider_runwatch.triggers.base import RunTrigger

#: task_state_store key holding the id of the run this task instance started (Airflow >= 3.3).
STATE_KEY = "runwatch_run_id"
#: task_state_store key holding ``{"run_id", "url"}`` when the vendor gave a run URL at the start only (Gumloop
#: flows): a retry starts with its XCom cleared, so without it a reattached run would lose its link.
STATE_URL_KEY = "runwatch_run_url"
#: ``execute_complete`` was resumed without a ``run_url`` kwarg.
_UNSET: Any = object()
#: How long before ``execution_timeout`` the wait gives up, so the task can still cancel the run and say why...
EXECUTION_TIMEOUT_MARGIN = 5.0
#: ... but never more than this share of ``execution_timeout``: a 4 s limit must still leave time to poll.
EXECUTION_TIMEOUT_MARGIN_SHARE = 0.2


class RunFailedError(RunwatchError):
    """The remote run ended badly (failed, cancelled, timed out, or could not be watched)."""


@cache
def import_attribute(path: str) -> Any:
    """Import ``package.module.attribute`` once; later calls hit the cache."""
    module, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable``: what ``deferrable=None`` means."""
    from airflow.configuration import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


def seconds(value: float | timedelta | None, name: str) -> float | None:
    """``value`` (seconds or a timedelta) as positive seconds, ``None`` kept; else a clear error naming ``name``."""
    if value is None:
        return None
    total = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if total <= 0:
        raise ConfigurationError(f"{name} must be positive, got {value!r}")
    return total


@dataclass(frozen=True)
class StartedRun:
    run_id: str
    url: str | None = None
    #: The start call found the run already there (e.g. an idempotency-key conflict) instead of starting it.
    reattached: bool = False
    #: Where the start answer said to poll the run (GloriaMundo's ``poll_url``); ``None``: the documented path.
    poll_url: str | None = None


class RunTaskMixin:
    """Behaviour shared by :class:`RunOperator` and the run sensors. Needs ``BaseOperator`` beside it."""

    #: Dotted paths, resolved only when a task runs (keeps DAG parsing cheap).
    hook_class_path: ClassVar[str]
    adapter_path: ClassVar[str]
    trigger_class_path: ClassVar[str]
    #: Vendor-appropriate default poll interval in seconds.
    default_poll_interval: ClassVar[float] = 5.0
    #: The hook's retry policy (``None``: the hook's default). An operator that admits refused starts itself
    #: sets :data:`~airflow_provider_runwatch.core.retry.ADMITTED_STARTS`, so a 429 is not slept on in the client.
    hook_retry: ClassVar[RetryPolicy | None] = None

    conn_id: str | None
    poll_interval: float
    max_consecutive_failures: int
    cancel_on_kill: bool
    if TYPE_CHECKING:
        log: Any
        task_id: str
        execution_timeout: timedelta | None

    # -- lazily resolved collaborators ----------------------------------------------------------------
    @property
    def adapter(self) -> RunAdapter:
        adapter: RunAdapter = import_attribute(self.adapter_path)
        return adapter

    @property
    def hook(self) -> RunwatchHook:
        if getattr(self, "_hook", None) is None:
            hook_class = import_attribute(self.hook_class_path)
            self._hook: RunwatchHook | None = hook_class(self.conn_id, retry=self.hook_retry)
        assert self._hook is not None
        return self._hook

    @property
    def vendor_name(self) -> str:
        return self.adapter.vendor.display_name

    def what(self, run_id: str) -> str:
        """``Puffle chat run run_abc`` - used in every message about a run."""
        return f"{self.vendor_name} {self.adapter.noun} {run_id}"

    # -- waiting --------------------------------------------------------------------------------------
    def deadline(self, context: Context, timeout: float | None, *, began: float | None = None) -> float | None:
        """Absolute deadline from ``timeout`` and ``execution_timeout``, whichever comes first.

        Airflow does not apply ``execution_timeout`` to a deferred task, so the trigger enforces it,
        a little early (5 s, or a fifth of a short limit), so that the task still gets to cancel the run
        and say why it failed. In blocking mode the same early deadline gives the same clear failure;
        Airflow's own timeout (and ``on_kill``) remains the backstop when a poll hangs.

        ``began``: when ``execute`` started, for the blocking path. Airflow's timer starts there, not at
        the task instance's ``start_date`` (seconds earlier on a busy worker: DAG parsing and start-up),
        so anchoring there keeps the clean failure just ``margin`` ahead of Airflow's kill. Without it
        (deferred) the anchor is ``start_date``: the whole task's time counts.
        """
        candidates = []
        if timeout is not None:
            candidates.append(time.time() + timeout)
        if self.execution_timeout is not None:
            begun = began
            if begun is None:
                start = getattr(context.get("ti"), "start_date", None)
                begun = start.timestamp() if start is not None else time.time()
            candidates.append(begun + self.execution_timeout.total_seconds() - (self.execution_timeout_margin() or 0.0))
        return min(candidates) if candidates else None

    def execution_timeout_margin(self) -> float | None:
        """How long before ``execution_timeout`` the wait's deadline falls (``None`` without one): the time the
        failure path has, after that deadline, to read, cancel and say why before Airflow kills the task."""
        if self.execution_timeout is None:
            return None
        return min(EXECUTION_TIMEOUT_MARGIN, self.execution_timeout.total_seconds() * EXECUTION_TIMEOUT_MARGIN_SHARE)

    def trigger_kwargs(self) -> dict[str, Any]:
        """What this task's trigger takes besides the kwargs every trigger takes: a vendor's own (Gumloop's
        per-task user/project override, say). None of it may be a secret: trigger kwargs are stored."""
        return {}

    def make_trigger(self, run_id: str, deadline: float | None, *, stop_on_paused: bool = True) -> RunTrigger:
        trigger_class: type[RunTrigger] = import_attribute(self.trigger_class_path)
        return trigger_class(
            conn_id=self.hook.conn_id,
            run_id=run_id,
            poll_interval=self.poll_interval,
            deadline=deadline,
            max_consecutive_failures=self.max_consecutive_failures,
            stop_on_paused=stop_on_paused,
            cancel_on_kill=self.cancel_on_kill,
            **self.trigger_kwargs(),
        )

    def wait_blocking(self, run_id: str, deadline: float | None, *, stop_on_paused: bool = True) -> RunEvent:
        """The ``deferrable=False`` wait: same Poller as the trigger, blocking the worker slot."""
        from airflow_provider_runwatch.core.polling import Poller, WaitOptions, watch_sync
        from airflow_provider_runwatch.core.retry import NO_RETRY

        options = WaitOptions(
            poll_interval=self.poll_interval,
            deadline=deadline,
            max_consecutive_failures=self.max_consecutive_failures,
            stop_on_paused=stop_on_paused,
        )
        poller = Poller(vendor=self.vendor_name, run_id=run_id, options=options, log=self.log, noun=self.adapter.noun)
        hook, adapter = self.hook, self.adapter
        call = adapter.status_call(hook.settings, adapter.validate_run_id(run_id))
        return watch_sync(poller, lambda: hook.call(call, retry=NO_RETRY, within=poller.time_left()))

    # -- resuming -------------------------------------------------------------------------------------
    def validate_event(self, event: Any, run_id: str | None) -> RunEvent:
        """Refuse anything but a well-formed event about the run we deferred on, with a clear message."""
        from pydantic import ValidationError

        from airflow_provider_runwatch.core.models import RunEvent

        where = f"{self.vendor_name} {self.adapter.noun}"
        if event is None:
            raise RunFailedError(f"{where} {run_id or '?'}: resumed without a trigger event; clear the task to retry")
        if not isinstance(event, dict):
            raise RunFailedError(f"{where} {run_id or '?'}: trigger event must be a dict, got {type(event).__name__}")
        # Events from triggers of 0.1.0 carried their deadline, which nothing read: accepted, dropped.
        event = {key: value for key, value in event.items() if key != "deadline"}
        try:
            parsed = RunEvent.model_validate(event)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            raise RunFailedError(f"{where} {run_id or '?'}: malformed trigger event ({problems})") from None
        if run_id is not None and parsed.run_id != run_id:
            raise RunFailedError(
                f"{where} {run_id}: trigger event is about run {parsed.run_id!r}, not the run this task deferred on"
            )
        return parsed

    def finish(self, context: Context, event: RunEvent, run_id: str) -> Any:
        """Turn the final event into the task's outcome: the answer, or one clear failure line."""
        if event.status == "success":
            return self.succeed(context, self.fetch_result(run_id))
        if event.status == "paused":
            return self.on_paused(context, event, run_id)
        self.push_failure_summary(context, event)
        note = ""
        if event.status == "timeout" and self.cancel_on_kill:
            cancelled = self.hook.cancel(self.adapter, run_id)
            note = " Cancel requested." if cancelled else f" {self.vendor_name} cannot cancel it: it may still finish."
        raise RunFailedError(self.failure_message(event, run_id) + note)

    def fetch_result(self, run_id: str) -> RunResult:
        try:
            return self.hook.get_result(self.adapter, run_id)
        except RunwatchError as exc:
            raise RunFailedError(
                f"{self.what(run_id)} succeeded but its result could not be fetched: {exc}. "
                "Retry the task: it reattaches to this run instead of starting another."
            ) from None

    def succeed(self, context: Context, result: RunResult) -> Any:
        """Push ``messages`` and ``run``; the answer becomes the return value."""
        ti = context["ti"]
        if result.messages is not None:
            ti.xcom_push(key="messages", value=result.messages)
        summary = result.summary
        if summary.url is None:
            url = getattr(self, "_run_url", None) or self.adapter.run_url(self.hook.settings, summary.run_id)
            summary = summary.model_copy(update={"url": url})
        self.push_run(context, summary.to_xcom())
        self.log.info("%s succeeded", self.what(summary.run_id))
        return result.answer

    def on_paused(self, context: Context, event: RunEvent, run_id: str) -> Any:
        raise RunFailedError(self.failure_message(event, run_id))

    def push_run(self, context: Context, value: dict[str, Any]) -> None:
        """The ``run`` XCom, also kept on the task for lineage: the OpenLineage listener reports from a forked
        process, where reading XCom back is not possible."""
        self.last_run: dict[str, Any] | None = value
        context["ti"].xcom_push(key="run", value=value)

    def push_failure_summary(self, context: Context, event: RunEvent) -> None:
        self.push_run(context, self.failure_summary(event))

    def failure_summary(self, event: RunEvent) -> dict[str, Any]:
        """The ``run`` XCom of a run that did not succeed; vendors add to it (GloriaMundo: cost, timings)."""
        return {
            "vendor": event.vendor,
            "run_id": event.run_id,
            "state": event.state.value if event.state else None,
            "vendor_state": event.vendor_state,
            "outcome": event.status,
            "error": event.message,
        }

    def failure_message(self, event: RunEvent, run_id: str) -> str:
        """vendor, run id, vendor state, the vendor's error text (cut), and what the user can do.

        For an ``error`` the error's own line already says what to do (the hook's hint: the connection and
        the field to fix after a 401/403, gone or not visible to this key after a 404); only a spent failure
        budget adds that the run may still be going, since only then nobody knows how it is."""
        if event.vendor_state:
            state = f" (vendor state '{event.vendor_state}')"
        else:
            state = " (vendor state not seen)" if event.status == "error" else ""
        text = f": {shorten(event.message, 1000).rstrip('.')}" if event.message else ""
        what = self.what(run_id)
        hints = {
            "failed": f"{what} failed{state}{text}. Check the input and the agent, then retry the task.",
            "cancelled": f"{what} was cancelled{state}{text}. Clear the task to start a new run.",
            "paused": f"{what} is paused{state}{text}. It needs a human decision in {self.vendor_name}.",
            "timeout": f"{what} did not finish before the deadline{text}. Raise `timeout` if it needs longer.",
            "error": f"Stopped watching {what}{state}{text}."
            + (" The run itself may still be going." if event.gave_up else ""),
        }
        return hints.get(event.status, f"{what} ended with {event.status}{state}{text}")


class RunOperator(RunTaskMixin, BaseOperator):
    """Start a run, record its id, wait for it (on the triggerer by default) and return its answer.

    :param conn_id: Airflow connection id (defaults to the vendor's ``<vendor>_default``).
    :param wait_for_completion: ``False`` returns the run id right after starting.
    :param deferrable: wait on the triggerer (default from ``[operators] default_deferrable``).
    :param poll_interval: seconds between status polls (vendor-appropriate default).
    :param timeout: seconds for the whole wait; an absolute deadline that survives triggerer restarts.
        When it passes the run is cancelled where the vendor allows it and the task fails.
    :param cancel_on_kill: cancel the remote run when the task is killed or times out.
    :param durable: Airflow 3.3's name for retry safety (as ``ResumableJobMixin(durable=True)``): the run id is
        recorded in ``task_state_store`` before the wait, and a retry of the same task instance watches the run
        the previous try started (or hands on its result) instead of starting another. ``False`` leaves
        ``task_state_store`` alone. Needs Airflow >= 3.3; Gumloop sessions are retry-safe on every version.
    :param reattach: deprecated alias of ``durable`` (warns once per process).
    :param max_consecutive_failures: transient poll failures in a row (network, 429, 5xx) before giving up.
    :param start_timeout: seconds (or a timedelta) a start the vendor refuses for capacity or rate (a 429:
        nothing was started) keeps being tried, counted from the first refusal (default 6 hours). Between
        attempts the task waits for ``Retry-After`` or a jittered backoff (:attr:`admission_backoff`): deferred
        on a timer that sends no request (the worker slot is free, the try number does not grow), or
        sleeping with ``deferrable=False``. It never waits past ``execution_timeout``. When it runs out the
        task fails with one line naming the limit. ``None`` fails at the first refusal. ``timeout`` is about
        the run: it counts from when the run finally starts. Any other start failure (a 5xx, a dropped
        connection) is never repeated: the run may exist.
    """

    ui_color = "#e8f0fe"
    #: Starts refused with 429 are admitted here (``start_timeout``), not slept on inside the client.
    hook_retry: ClassVar[RetryPolicy | None] = ADMITTED_STARTS
    #: How long a refused start waits before it starts again. A class attribute, not an argument, on purpose:
    #: it is a policy of a vendor or deployment rather than of one task, and an argument would have to be
    #: serialized with ``partial()``/``expand()`` DAGs, which a dataclass is not. Set it on a subclass
    #: (``class NightlySession(GumloopSessionOperator): admission_backoff = AdmissionBackoff(base=1.0)``), as
    #: the tests do to keep their waits short; ``Retry-After`` always wins over it.
    admission_backoff: ClassVar[AdmissionBackoff] = DEFAULT_BACKOFF
    #: A wait shorter than this is slept on the worker, also when deferrable. A deferral costs a task start on
    #: resume (3.5-7.5 worker-slot seconds measured on 2 cores, more than the wait), and on Airflow 3.3.2 a trigger
    #: that fires within seconds of its deferral can lose the scheduler's stale-executor-event race
    #: (apache/airflow#67287), which fails the task: ``./dev bench --batch`` saw 13 of 150 mapped tasks fail that
    #: way with waits of 1-5 s. Longer waits (the backoff grows past it by the third refusal) free the slot.
    admission_sleep_below: ClassVar[float] = 10.0

    def __init__(
        self,
        *,
        conn_id: str | None = None,
        wait_for_completion: bool = True,
        deferrable: bool | None = None,
        poll_interval: float | None = None,
        timeout: float | timedelta | None = None,
        cancel_on_kill: bool = True,
        durable: bool = True,
        reattach: bool | None = None,
        max_consecutive_failures: int = 5,
        start_timeout: float | timedelta | None = DEFAULT_START_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = seconds(poll_interval, "poll_interval") or self.default_poll_interval
        self.timeout = seconds(timeout, "timeout")
        self.start_timeout = seconds(start_timeout, "start_timeout")
        self.cancel_on_kill = cancel_on_kill
        self.durable = _durable(durable, reattach)
        if max_consecutive_failures < 1:
            raise ConfigurationError(f"max_consecutive_failures must be >= 1, got {max_consecutive_failures}")
        self.max_consecutive_failures = max_consecutive_failures
        self._run_id: str | None = None
        #: The vendor's link to the run, when it gave one at the start (Gumloop flows): for the summary and lineage.
        self._run_url: str | None = None

    # -- to implement per operator --------------------------------------------------------------------
    def start_run(self, context: Context) -> StartedRun:
        """Start the remote run on the worker and return its id (and URL when the vendor gives one)."""
        raise NotImplementedError

    # -- flow -----------------------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        began = time.time()  # where Airflow's execution_timeout timer starts
        task_deadline = self.deadline(context, None, began=None if self.deferrable else began)
        return self._start_and_wait(context, _Admission(task_deadline=task_deadline))

    def execute_admitted(
        self,
        context: Context,
        event: Any = None,
        first_refused: float | None = None,
        attempts: int = 0,
        task_deadline: float | None = None,
    ) -> Any:
        """Resume after the timer a refused start deferred on: start again (and wait, as ``execute`` does)."""
        self.before_admitted_start(context)
        return self._start_and_wait(context, _Admission(task_deadline, first_refused, int(attempts)))

    def before_admitted_start(self, context: Context) -> None:
        """Called on that resume before starting again: whatever ``execute`` prepared is to be prepared again
        (the TaskFlow decorators call their function). Nothing here."""

    def _start_and_wait(self, context: Context, admission: _Admission) -> Any:
        while True:
            try:
                run_id, status = self.reattach_or_start(context)
                break
            except RunwatchError as exc:
                refusal = refusal_of(exc)
                if refusal is None:
                    raise  # anything but a 429 may have started the run: never start it again
                self._refused(context, refusal, admission)  # defers, sleeps, or raises
        if not self.wait_for_completion:
            return run_id
        if status is not None and status.state.terminal:
            # A previous try's run already finished successfully: hand on its result, start nothing.
            from airflow_provider_runwatch.core.polling import event_for, outcome_of

            outcome = outcome_of(status)
            assert outcome is not None  # a terminal state always has one
            return self.finish(context, event_for(status, outcome), run_id)
        # ``timeout`` is about the run: it counts from now, however long the start waited for admission.
        deadline = _earliest(time.time() + self.timeout if self.timeout is not None else None, admission.task_deadline)
        if self.deferrable:
            self.log.info("Deferring: the triggerer polls %s every %gs", self.what(run_id), self.poll_interval)
            self.defer(
                trigger=self.make_trigger(run_id, deadline, stop_on_paused=self.stop_on_paused),
                method_name="execute_complete",
                kwargs={"run_id": run_id, "run_url": self._run_url},
            )
        event = self.wait_blocking(run_id, deadline, stop_on_paused=self.stop_on_paused)
        return self.finish(context, event, run_id)

    def _refused(self, context: Context, refusal: Refusal, admission: _Admission) -> None:
        """A start refused for capacity or rate: wait (on a timer, or asleep) and return to start again, or
        fail with one line once ``start_timeout`` (or ``execution_timeout``) leaves no time."""
        now = time.time()
        if admission.first_refused is None:
            admission.first_refused = now
        admission.attempts += 1
        wait = admission_wait(
            self.admission_backoff,
            refusal,
            admission.attempts,
            now=now,
            first_refused=admission.first_refused,
            start_timeout=self.start_timeout,
            deadline=admission.task_deadline,
        )
        waited = now - admission.first_refused
        if wait is None:
            by_deadline = (
                self.start_timeout is not None
                and admission.task_deadline is not None
                and admission.task_deadline < admission.first_refused + self.start_timeout
            )
            # One line: the refusal's own traceback would only repeat what the line says.
            raise RunFailedError(
                give_up_line(refusal, admission.attempts, waited, self.start_timeout, by_deadline=by_deadline)
            ) from None
        assert self.start_timeout is not None  # admission_wait gives None without one
        self.log.warning(
            "%s; attempt %d, starting again in %s (%s; %s of start_timeout %s waited)",
            refusal.describe(),
            admission.attempts,
            span(wait),
            "deferring on a timer" if self._defers(wait) else "sleeping",
            span(waited),
            span(self.start_timeout),
        )
        if self._defers(wait):
            from datetime import datetime, timezone

            from airflow.providers.standard.triggers.temporal import DateTimeTrigger

            self.defer(
                trigger=DateTimeTrigger(moment=datetime.now(timezone.utc) + timedelta(seconds=wait)),
                method_name="execute_admitted",
                kwargs={
                    "first_refused": admission.first_refused,
                    "attempts": admission.attempts,
                    "task_deadline": admission.task_deadline,
                },
            )
        time.sleep(wait)

    def _defers(self, wait: float) -> bool:
        """Whether a refused start waits on the triggerer (else asleep on the worker): see
        :attr:`admission_sleep_below`."""
        return self.deferrable and wait >= self.admission_sleep_below

    def execute_complete(
        self, context: Context, event: Any = None, run_id: str | None = None, run_url: Any = _UNSET
    ) -> Any:
        """Resume after the trigger: validate its event, then finish on the worker."""
        self._run_id = run_id
        parsed = self.validate_event(event, run_id)
        if run_url is _UNSET:
            # Deferred without it (an older version of this provider, or `dags test`, which resumes with the
            # event only): the link is still in this try's XCom.
            run_url = _pulled_run_url(context, self.task_id)
        self._run_url = run_url if isinstance(run_url, str) and run_url else None
        return self.finish(context, parsed, parsed.run_id)

    @property
    def stop_on_paused(self) -> bool:
        return True

    @property
    def reattach(self) -> bool:
        """Deprecated name of :attr:`durable`."""
        return self.durable

    def state_store(self, context: Context) -> Any:
        """This task instance's ``task_state_store`` when the task is durable (and Airflow >= 3.3 has one)."""
        return context.get("task_state_store") if self.durable else None  # type: ignore[call-overload]

    def reattach_or_start(self, context: Context) -> tuple[str, RunStatus | None]:
        """Reattach to this task instance's earlier run when it is still going or succeeded; else start."""
        store = self.state_store(context)
        previous = store.get(STATE_KEY) if store is not None else None
        if isinstance(previous, str) and previous:
            from airflow_provider_runwatch.core.models import RunState

            status = self._status_of_previous(previous)
            if status is not None and status.state not in (RunState.FAILED, RunState.CANCELLED):
                self.log.info(
                    "Reattaching to %s started by an earlier try (%s)",
                    self.what(previous),
                    status.state.value,
                )
                url = _stored_url(store, previous) or self.adapter.run_url(self.hook.settings, previous)
                self.remember(context, StartedRun(previous, url), store)
                return previous, status
        elif self.durable and store is None and (context.get("ti") is not None) and try_number(context) > 1:
            self.log.warning("task_state_store needs Airflow >= 3.3: this retry cannot reattach and starts a new run")
        started = self.start_run(context)
        verb = "Reattached to" if started.reattached else "Started"
        self.log.info("%s %s%s", verb, self.what(started.run_id), f" - {started.url}" if started.url else "")
        self.remember(context, started, store)
        return started.run_id, None

    def _status_of_previous(self, run_id: str) -> RunStatus | None:
        try:
            return self.hook.get_status(self.adapter, run_id)
        except RunwatchError as exc:
            self.log.warning("Cannot read %s from an earlier try (%s); starting a new run", self.what(run_id), exc)
            return None

    def remember(self, context: Context, started: StartedRun, store: Any) -> None:
        """Record the run before waiting: XCom for users and downstream tasks, task_state_store for retries."""
        self._run_id = started.run_id
        self._run_url = started.url
        ti = context["ti"]
        ti.xcom_push(key="run_id", value=started.run_id)
        if started.url:
            ti.xcom_push(key="run_url", value=started.url)
        if store is not None:
            store.set(STATE_KEY, started.run_id)
            if started.url:
                store.set(STATE_URL_KEY, {"run_id": started.run_id, "url": started.url})

    def succeed(self, context: Context, result: RunResult) -> Any:
        answer = super().succeed(context, result)
        store = self.state_store(context)
        if store is not None:
            # Nothing left to reattach to: a later clear of this task must start a fresh run.
            store.delete(STATE_KEY)
            store.delete(STATE_URL_KEY)
        return answer

    # -- OpenLineage (called by apache-airflow-providers-openlineage, when installed) ---------------------------
    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The ``runwatch`` run facet: vendor, run id and link, agent/workflow/flow id, state, cost, usage."""
        return _lineage(self, task_instance, failed=False)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """The same facet for a run that failed, was cancelled or timed out, with the vendor's error."""
        return _lineage(self, task_instance, failed=True)

    def on_kill(self) -> None:
        """Blocking path (SIGTERM, or ``execution_timeout`` firing while a poll hangs): cancel the remote run
        where the vendor can, else say once, with its id, that it goes on. Bounded in time, never raises."""
        if self._run_id is None:
            return
        if not self.cancel_on_kill:
            self.log.info("cancel_on_kill is off: %s keeps running", self.what(self._run_id))
            return
        self.log.warning("Task killed while %s was still going", self.what(self._run_id))
        self.hook.cancel(self.adapter, self._run_id)


@dataclass
class _Admission:
    """Where a start stands with admission: the task's own deadline, the first refusal, refusals so far."""

    task_deadline: float | None
    first_refused: float | None = None
    attempts: int = 0


def _earliest(*deadlines: float | None) -> float | None:
    present = [d for d in deadlines if d is not None]
    return min(present) if present else None


def _pulled_run_url(context: Context, task_id: str) -> Any:
    pull = getattr(context.get("ti"), "xcom_pull", None)
    if pull is None:
        return None
    try:
        return pull(task_ids=task_id, key="run_url")
    except Exception:  # only the link is lost, never the run
        return None


def _lineage(task: RunOperator, task_instance: Any, *, failed: bool) -> Any:
    try:
        from airflow_provider_runwatch.operators.lineage import run_lineage
    except ImportError:  # the OpenLineage provider is not installed: nothing asks for lineage
        return None
    return run_lineage(task, task_instance, failed=failed)


_warned_reattach = False


def _durable(durable: bool, reattach: bool | None) -> bool:
    """``durable``, or the deprecated ``reattach`` (one warning per process: a DAG file is parsed again and again)."""
    global _warned_reattach
    if reattach is None:
        return bool(durable)
    if not _warned_reattach:
        _warned_reattach = True
        from airflow.exceptions import AirflowProviderDeprecationWarning

        warnings.warn(
            "`reattach` is deprecated: use `durable` (Airflow 3.3's name for the same option)",
            AirflowProviderDeprecationWarning,
            stacklevel=4,
        )
    if not durable and reattach:
        raise ConfigurationError("durable=False and reattach=True contradict each other: pass only `durable`")
    return bool(reattach)


def _stored_url(store: Any, run_id: str) -> str | None:
    """The run URL an earlier try recorded for ``run_id`` (not for another run of this task instance)."""
    value = store.get(STATE_URL_KEY) if store is not None else None
    if isinstance(value, dict) and value.get("run_id") == run_id and isinstance(value.get("url"), str):
        return str(value["url"])
    return None


def try_number(context: Context) -> int:
    """This try's number (1 outside a task instance, as in unit tests)."""
    return int(getattr(context.get("ti"), "try_number", 1) or 1)
