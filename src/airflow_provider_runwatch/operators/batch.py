"""The batch operator base: one task runs a whole list of inputs at the vendor's limits.

The plan (:mod:`~airflow_provider_runwatch.core.batch`) decides; this module starts runs on the worker, defers
on one :class:`~airflow_provider_runwatch.triggers.batch.RunBatchTrigger` that watches every run still going
(or polls them on the worker with ``deferrable=False``), and on each return to the worker fetches the answers
of the runs that succeeded, starts more, and defers again until every item has ended.

Where the state lives, and why:

- Between deferrals the plan (per item: index, run id, state, a short error, runs started, cost or usage) is
  kept in this try's ``batch`` XCom, pushed before each deferral. Not in ``next_kwargs``: ``airflow dags test``
  (and ``dag.test()``) resume a task with the event only, dropping them; XComs of a try survive its deferrals
  (Airflow clears them only when a new try starts). The ``batch`` XCom also shows the batch's progress.
- Answers are fetched on the worker as items end (at each return from the trigger), never in the trigger,
  and pushed in one ``answers_<n>`` XCom per return; the return value gathers them at the end. Fetching as
  items end spreads the fetches over the batch (for GloriaMundo each one is a poll of the key's 60 a minute,
  taken while the trigger is not polling), instead of adding N fetches after the last run ends.
- For retries each item's run id and state go to ``task_state_store`` as it starts and as it ends (Airflow >=
  3.3): a retry keeps the items that succeeded (their answers are fetched again), watches the running ones
  again, and starts the failed ones again. On Airflow 3.1/3.2 there is no ``task_state_store``: a retry of a
  Gumloop session batch still finds each item's session through its derived ``session_id``; GloriaMundo and
  Puffle have no idempotency key, so a retry there starts every item again (and says so).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from airflow.sdk import BaseOperator

from airflow_provider_runwatch.core.errors import AuthError, ConfigurationError, RunwatchError, shorten
from airflow_provider_runwatch.core.retry import ADMITTED_STARTS
from airflow_provider_runwatch.operators.base import (
    RunFailedError,
    RunOperator,
    RunTaskMixin,
    StartedRun,
    default_deferrable,
    import_attribute,
    seconds,
    try_number,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_runwatch.core.adapter import RunAdapter
    from airflow_provider_runwatch.core.batch import BatchItem, BatchPlan, BatchWatch
    from airflow_provider_runwatch.core.calls import Call
    from airflow_provider_runwatch.core.models import RunStatus

#: task_state_store keys (Airflow >= 3.3): the batch's header, and one per item.
BATCH_KEY = "runwatch_batch"
ITEM_KEY = "runwatch_batch_item_{index}"
#: The XCom holding the plan between deferrals, and the prefix of the answer XComs.
PLAN_XCOM = "batch"
ANSWERS_XCOM = "answers_{chunk}"
#: With ``deferrable=False``, at most one progress line per this many seconds (a blocking round ends per run).
BLOCKING_PROGRESS_EVERY = 30.0


class RunBatchOperator(RunTaskMixin, BaseOperator):
    """Run one input per item, at most ``max_concurrency`` at once, in one task; return the answers in order.

    :param conn_id: Airflow connection id (defaults to the vendor's ``<vendor>_default``).
    :param max_concurrency: runs held at once (default: the connection's limit where it has one, else a vendor
        default); at most 1000. Starts the vendor refuses for capacity or rate (429) wait and start again.
    :param max_failed: items that may fail before the task fails (default 0). The task fails only after every
        item has run, with a table of the failures.
    :param deferrable: wait on the triggerer (default from ``[operators] default_deferrable``).
    :param poll_interval: seconds between two polls of one run (vendor-appropriate default).
    :param timeout: seconds for the whole batch; an absolute deadline that survives triggerer restarts. Runs still
        going then are cancelled where the vendor can; items not started end as ``timeout``.
    :param cancel_on_kill: cancel every run still going when the task is killed or times out.
    :param durable: record each item in ``task_state_store`` so a retry reattaches (Airflow >= 3.3).
    :param max_consecutive_failures: transient poll failures in a row (per run) before giving up on a run.

    Return value: the answers in input order (``None`` for an item that did not succeed). XCom ``runs``: one
    summary per item (``index``, ``run_id``, ``state``, ``error``, and ``cost`` or ``usage``).
    """

    ui_color = "#e8f0fe"
    hook_retry = ADMITTED_STARTS
    #: The batch trigger of this vendor and run kind.
    batch_trigger_class_path: ClassVar[str]
    #: The vendor's default ``max_concurrency`` when the connection names none.
    default_max_concurrency: ClassVar[int] = 10
    #: The attribute that holds the list of inputs (``inputs``, ``messages``).
    inputs_attribute: ClassVar[str] = "inputs"
    #: A wait for the next start shorter than this is slept on the worker; a longer one (the key's start budget
    #: has no slot sooner) is handed to the triggerer, freeing the slot. And no deferral hands the task back
    #: sooner than this after it deferred (the trigger's ``earliest``), whatever ended or a refusal asked. The
    #: single-run operators' threshold, for their reasons
    #: (:attr:`~airflow_provider_runwatch.operators.base.RunOperator.admission_sleep_below`): a deferral costs a
    #: task start on resume, and on Airflow 3.3.2 one that fires within seconds can lose the scheduler's
    #: stale-executor-event race (apache/airflow#67287), which fails the task. A class attribute, as there.
    admission_sleep_below: ClassVar[float] = RunOperator.admission_sleep_below

    def __init__(
        self,
        *,
        conn_id: str | None = None,
        max_concurrency: int | None = None,
        max_failed: int = 0,
        deferrable: bool | None = None,
        poll_interval: float | None = None,
        timeout: float | timedelta | None = None,
        cancel_on_kill: bool = True,
        durable: bool = True,
        max_consecutive_failures: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from airflow_provider_runwatch.core.batch import check_concurrency

        self.conn_id = conn_id
        self.max_concurrency = None if max_concurrency is None else check_concurrency(max_concurrency)
        if isinstance(max_failed, bool) or not isinstance(max_failed, int) or max_failed < 0:
            raise ConfigurationError(f"max_failed must be a whole number >= 0, got {max_failed!r}")
        self.max_failed = max_failed
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = seconds(poll_interval, "poll_interval") or self.default_poll_interval
        self.timeout = seconds(timeout, "timeout")
        self.cancel_on_kill = cancel_on_kill
        self.durable = bool(durable)
        if max_consecutive_failures < 1:
            raise ConfigurationError(f"max_consecutive_failures must be >= 1, got {max_consecutive_failures}")
        self.max_consecutive_failures = max_consecutive_failures
        self._plan: BatchPlan | None = None
        #: The blocking path's watch over every running item, and each one's status call.
        self._watch: BatchWatch | None = None
        self._calls: dict[int, Call[RunStatus]] = {}
        self._answers: dict[int, Any] = {}
        self._chunks = 0
        self._generation = 0

    # -- to implement per vendor ----------------------------------------------------------------------
    def check_input(self, index: int, value: Any) -> Any:
        """Refuse an input the vendor would reject, before anything starts; returns it (cleaned)."""
        return value

    def start_item(self, context: Context, item: BatchItem, value: Any) -> StartedRun:
        """Start the run of one item on the worker (``item.attempts`` runs were started for it before)."""
        raise NotImplementedError

    def connection_concurrency(self) -> int | None:
        """The connection's concurrency limit, when the vendor's connection has one."""
        return None

    def start_wait(self) -> float:
        """Seconds the next start would wait for the key's start budget in this process (GloriaMundo's
        executions per minute); 0 where starts are not paced."""
        return 0.0

    # -- inputs and limits ----------------------------------------------------------------------------
    def batch_inputs(self) -> list[Any]:
        name = self.inputs_attribute
        values = getattr(self, name)
        if isinstance(values, str | bytes | dict) or not isinstance(values, Sequence):
            raise ConfigurationError(
                f"{self.task_id}: `{name}` must be a list (one entry per item), got {type(values).__name__}; a "
                "templated list renders as a string unless the DAG sets render_template_as_native_obj=True or "
                "passes an XComArg"
            )
        return [self.check_input(index, value) for index, value in enumerate(values)]

    def concurrency(self) -> int:
        from airflow_provider_runwatch.core.batch import check_concurrency

        if self.max_concurrency is not None:
            return self.max_concurrency
        configured = self.connection_concurrency()
        return check_concurrency(configured) if configured is not None else self.default_max_concurrency

    # -- the flow -------------------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        began = time.time()
        inputs = self.batch_inputs()
        plan = self._load_or_new(context, len(inputs))
        deadline = self.deadline(context, self.timeout, began=None if self.deferrable else began)
        self.log.info(
            "%s batch of %d items, at most %d at once; max_failed=%d",
            self.vendor_name,
            len(inputs),
            plan.max_concurrency,
            plan.max_failed,
        )
        return self._advance(context, plan, inputs, deadline, self._recheck(plan))

    def execute_complete(self, context: Context, event: Any = None, **_: Any) -> Any:
        """Back from the trigger: record what ended, fetch those answers, start more, defer again or finish."""
        from airflow_provider_runwatch.core.batch import BatchPlan

        saved = context["ti"].xcom_pull(task_ids=self.task_id, key=PLAN_XCOM)
        if not isinstance(saved, dict) or "plan" not in saved:
            raise RunFailedError(
                f"{self.vendor_name} batch: resumed without its saved plan (XCom '{PLAN_XCOM}'); clear the task: "
                "a retry reattaches to the runs it recorded"
            )
        plan = BatchPlan.from_json(saved["plan"])
        self._generation = int(saved.get("generation") or 0)
        this_try = try_number(context)
        if saved.get("try") not in (None, this_try):
            # Airflow 3.1 does not clear next_method when a deferred task fails and is retried: the new try resumes
            # here, with the earlier try's event and XComs. Treat it as the retry it is: keep what succeeded, watch
            # what runs, start the rest again (the stale event says nothing about this try).
            again = plan.restart_failed()
            self.log.warning(
                "Try %d resumed with the state of try %s: reattaching to its batch (%d items start again)",
                this_try,
                saved.get("try"),
                len(again),
            )
            kept = self._recheck(plan)
            return self._advance(context, plan, self.batch_inputs(), self.deadline(context, self.timeout), kept)
        self._chunks = int(saved.get("chunks") or 0)
        deadline = saved.get("deadline")
        if not isinstance(event, dict) or not isinstance(event.get("ended"), list):
            raise RunFailedError(f"{self.vendor_name} batch: malformed trigger event {shorten(repr(event), 200)}")
        ended = plan.apply_events(event["ended"])
        if event.get("message"):
            # The trigger could not watch (a bad connection, a bug): the runs it held are not known to be over.
            self.log.error("%s batch trigger: %s", self.vendor_name, event["message"])
            for item in plan.running():
                plan.ended(item.index, "error", f"could not be watched: {event['message']}")
                ended.append(item)
        return self._advance(context, plan, self.batch_inputs(), deadline, ended)

    def _advance(
        self, context: Context, plan: BatchPlan, inputs: list[Any], deadline: float | None, ended: list[BatchItem]
    ) -> Any:
        self._plan = plan
        self._watch, self._calls = None, {}  # a new watch per call (an operator object may run twice in tests)
        described = -BLOCKING_PROGRESS_EVERY
        while True:
            self._collect(context, plan, ended)
            if deadline is not None and time.time() >= deadline:
                plan.not_started("the deadline passed before it could start")
            self._start_more(context, plan, inputs, deadline)
            if plan.done:
                return self._conclude(context, plan)
            if self.deferrable or time.monotonic() - described >= BLOCKING_PROGRESS_EVERY:
                # Deferred, a line per round; blocking, a round ends with every run that ends (no coalescing),
                # so a line per round would be a line per run: one every BLOCKING_PROGRESS_EVERY seconds instead.
                self.log.info("%s batch: %s", self.vendor_name, plan.describe())
                described = time.monotonic()
            if self.deferrable:
                self._defer(context, plan, deadline)
            ended = plan.apply_events(self._wait_blocking(plan, deadline))

    def _defer(self, context: Context, plan: BatchPlan, deadline: float | None) -> None:
        from airflow_provider_runwatch.core.batch import ref_rows

        ti = context["ti"]
        if self._answers:
            ti.xcom_push(
                key=ANSWERS_XCOM.format(chunk=self._chunks), value={str(k): v for k, v in self._answers.items()}
            )
            self._answers, self._chunks = {}, self._chunks + 1
        saved = {
            "plan": plan.to_json(),
            "deadline": deadline,
            "chunks": self._chunks,
            "generation": self._generation,
            "try": try_number(context),
        }
        ti.xcom_push(key=PLAN_XCOM, value=saved)
        rule = plan.resume_rule()
        earliest = time.time() + self.admission_sleep_below
        if deadline is not None:
            earliest = min(earliest, deadline)  # the deadline's own hand-back is never held back
        trigger_class = import_attribute(self.batch_trigger_class_path)
        trigger = trigger_class(
            conn_id=self.hook.conn_id,
            runs=ref_rows(plan.running_refs()),
            poll_interval=self.poll_interval,
            concurrency=rule.concurrency,
            waiting=rule.waiting,
            free=rule.free,
            not_before=rule.not_before,
            deadline=deadline,
            max_consecutive_failures=self.max_consecutive_failures,
            cancel_on_kill=self.cancel_on_kill,
            earliest=earliest,
        )
        self.defer(trigger=trigger, method_name="execute_complete")

    def _wait_blocking(self, plan: BatchPlan, deadline: float | None) -> list[dict[str, Any]]:
        """The ``deferrable=False`` wait: the trigger's schedule, polling on the worker, until a slot is free.

        One :class:`~airflow_provider_runwatch.core.batch.BatchWatch` serves the whole batch (the runs started
        since the last round join it), and its rule does not coalesce: starting more costs nothing here."""
        from airflow_provider_runwatch.core.batch import BatchWatch, pollers_for, status_calls
        from airflow_provider_runwatch.core.polling import WaitOptions
        from airflow_provider_runwatch.core.retry import NO_RETRY

        hook, adapter = self.hook, self.adapter
        rule = plan.resume_rule(coalesce=False)
        if self._watch is None:
            self._watch = BatchWatch({}, rule, time.time)
        watch = self._watch
        watch.rule = rule
        new = [ref for ref in plan.running_refs() if ref[0] not in watch.pollers]
        options = WaitOptions(self.poll_interval, deadline, self.max_consecutive_failures)
        watch.add(pollers_for(new, self.vendor_name, adapter.noun, options, self.log))
        self._calls.update(status_calls(adapter, hook.settings, new))
        while not watch.due():
            wake = watch.wake_at()
            nxt = watch.next_due()
            now = time.time()
            if nxt is None or nxt[0] > now:
                time.sleep(max(0.0, (wake if wake is not None else now + 1.0) - now))
                continue
            index = watch.take()
            poller = watch.pollers[index]
            timed_out = poller.expired()
            if timed_out is not None:
                watch.polled(index, timed_out)
                continue
            try:
                outcome = poller.after_status(hook.call(self._calls[index], retry=NO_RETRY, within=poller.time_left()))
            except Exception as exc:
                outcome = poller.after_error(exc)
            watch.polled(index, outcome)
        ended = watch.drain()
        for item in ended:
            self._calls.pop(int(item["index"]), None)
        return ended

    # -- starting -------------------------------------------------------------------------------------
    def _start_more(self, context: Context, plan: BatchPlan, inputs: list[Any], deadline: float | None) -> None:
        from airflow_provider_runwatch.core.admission import refusal_of, span

        store = self.state_store(context)
        for item in plan.to_start(time.time()):
            if self.deferrable and (wait := self.start_wait()) > 0 and wait >= self.admission_sleep_below:
                # Asleep in the client this would hold the worker slot for the whole wait: the trigger waits
                # instead (it sends nothing for it) and hands the task back when the slot has come.
                plan.hold(time.time() + wait if deadline is None else min(time.time() + wait, deadline))
                self.log.info(
                    "%s: the key's start budget has no slot for %s; %d running, %d waiting: deferring until then",
                    self.vendor_name,
                    span(wait),
                    len(plan.running()),
                    len(plan.waiting()),
                )
                return
            try:
                started = self.start_item(context, item, inputs[item.index])
            except Exception as exc:
                refusal = refusal_of(exc)
                if refusal is not None:
                    delay = plan.refused(refusal, time.time())
                    if deadline is not None and plan.not_before is not None:
                        plan.not_before = min(plan.not_before, deadline)
                    self.log.info(
                        "%s; %d running, %d waiting: starting again in %.1f s",
                        refusal.describe(),
                        len(plan.running()),
                        len(plan.waiting()),
                        delay,
                    )
                    return
                if isinstance(exc, AuthError):
                    self._stop_at_refused_key(context, plan, item, exc)
                why = str(exc) if isinstance(exc, RunwatchError) else f"unexpected {type(exc).__name__}: {exc}"
                plan.start_failed(item, why)
                self.log.warning("%s batch item %d could not be started: %s", self.vendor_name, item.index, why)
                self._record(store, item)
                continue
            plan.started(item, started.run_id, started.poll_url)
            verb = "Reattached item %d to" if started.reattached else "Started item %d:"
            self.log.info(f"{verb} %s", item.index, self.what(started.run_id))
            self._record(store, item)

    def item_adapter(self, item: BatchItem) -> RunAdapter:
        """The adapter reading ``item``'s run where its start said, as the single-run operator reads its run."""
        return self.adapter.with_poll_url(item.poll_url)

    def _stop_at_refused_key(self, context: Context, plan: BatchPlan, item: BatchItem, error: AuthError) -> NoReturn:
        """A start refused with 401/403: every other start would be refused the same way, so the batch stops
        here with one line (the hook's, naming the connection and the field to fix) instead of failing each item
        in turn. Items not started end as ``not_started``; runs already started keep their ids (``runs`` XCom,
        ``task_state_store``), and a retry once the key is fixed reattaches to them."""
        from airflow_provider_runwatch.core.batch import ITEM_ERROR_CHARS, NOT_STARTED

        cause = shorten(str(error), 1000).rstrip(".")
        plan.not_started(f"not started: the batch stopped at item {item.index}'s refused start", NOT_STARTED)
        item.error = shorten(f"start refused: {cause}", ITEM_ERROR_CHARS)
        context["ti"].xcom_push(key="runs", value=[i.summary(self.adapter.vendor.name) for i in plan.items])
        not_started, running = sum(i.state == NOT_STARTED for i in plan.items), len(plan.running())
        ended = len(plan.items) - not_started - running
        going = (
            f"; {running} started before keep running (their run ids are in the 'runs' XCom: a retry once the "
            "connection is fixed reattaches to them)"
            if running
            else ""
        )
        raise RunFailedError(
            f"{self.vendor_name} batch stopped at item {item.index}, whose start was refused: {cause}. "
            f"{not_started} of {len(plan.items)} items were not started, {ended} had ended{going}."
        ) from None

    # -- collecting -----------------------------------------------------------------------------------
    def _collect(self, context: Context, plan: BatchPlan, ended: list[BatchItem]) -> None:
        """Fetch the answers of items that succeeded (on the worker), cancel timed-out runs, log failures."""
        store = self.state_store(context)
        timed_out = []
        for item in ended:
            if item.state == "succeeded" and item.run_id is not None:
                try:
                    result = self.hook.get_result(self.item_adapter(item), item.run_id)
                except RunwatchError as exc:
                    plan.ended(item.index, "error", f"succeeded but its result could not be fetched: {exc}")
                else:
                    self._answers[item.index] = result.answer
                    summary = result.summary.to_xcom()
                    item.usage = {key: summary[key] for key in ("cost", "usage") if key in summary} or None
            elif item.state == "timeout" and item.run_id is not None:
                timed_out.append(item.run_id)
            if item.failed:
                self.log.warning(
                    "%s batch item %d (%s) ended %s: %s",
                    self.vendor_name,
                    item.index,
                    item.run_id,
                    item.state,
                    item.error,
                )
            self._record(store, item)
        if timed_out and self.cancel_on_kill:
            self.cancel_runs(timed_out)

    def cancel_runs(self, run_ids: list[str]) -> None:
        """Cancel runs where the vendor can; else say once, with their ids, that they go on."""
        from airflow_provider_runwatch.triggers.batch import warn_cannot_cancel

        if not run_ids:
            return
        if not self.adapter.cancel_supported:
            warn_cannot_cancel(self.log, self.adapter, run_ids)
            return
        cancelled = sum(self.hook.cancel(self.adapter, run_id) for run_id in run_ids)
        self.log.warning(
            "Asked %s to cancel %d of %d %ss", self.vendor_name, cancelled, len(run_ids), self.adapter.noun
        )

    def _conclude(self, context: Context, plan: BatchPlan) -> Any:
        answers = self._gather_answers(context, plan)
        vendor = self.adapter.vendor.name
        context["ti"].xcom_push(key="runs", value=[item.summary(vendor) for item in plan.items])
        failed = plan.failures()
        self.log.info("%s batch over: %s", self.vendor_name, plan.describe())
        if plan.too_many_failed:
            raise RunFailedError(
                f"{self.vendor_name} batch: {len(failed)} of {len(plan.items)} items did not succeed "
                f"(max_failed={plan.max_failed}). Retry the task: it keeps the items that succeeded and starts "
                f"the failed ones again.\n{plan.failure_table()}"
            )
        store = self.state_store(context)
        if store is not None:
            # Nothing left to reattach to: a later clear of this task starts a fresh batch (new Gumloop ids).
            store.set(BATCH_KEY, {"count": len(plan.items), "generation": self._generation, "done": True})
        return answers

    def _gather_answers(self, context: Context, plan: BatchPlan) -> list[Any]:
        answers = dict(self._answers)
        ti = context["ti"]
        for chunk in range(self._chunks):
            part = ti.xcom_pull(task_ids=self.task_id, key=ANSWERS_XCOM.format(chunk=chunk))
            if isinstance(part, dict):
                answers.update({int(k): v for k, v in part.items()})
        return [answers.get(item.index) if item.state == "succeeded" else None for item in plan.items]

    # -- retries --------------------------------------------------------------------------------------
    def state_store(self, context: Context) -> Any:
        """This task instance's ``task_state_store`` when durable (and Airflow >= 3.3 has one)."""
        return context.get("task_state_store") if self.durable else None  # type: ignore[call-overload]

    def _record(self, store: Any, item: BatchItem) -> None:
        if store is None or item.run_id is None:
            return
        try:
            store.set(
                ITEM_KEY.format(index=item.index),
                {"run_id": item.run_id, "state": item.state, "attempts": item.attempts, "poll_url": item.poll_url},
            )
        except Exception as exc:  # the store is for retries; the batch itself goes on
            self.log.warning("task_state_store write for item %d failed: %s", item.index, exc)

    def _load_or_new(self, context: Context, count: int) -> BatchPlan:
        """A fresh plan, or, on a retry, the items an earlier try recorded: succeeded ones kept, running ones
        watched again, the rest started again."""
        from airflow_provider_runwatch.core.batch import BatchPlan

        plan = BatchPlan.new(count, self.concurrency(), self.max_failed)
        store = self.state_store(context)
        if store is None:
            if self.durable and context.get("ti") is not None and try_number(context) > 1:
                self.log.warning(
                    "task_state_store needs Airflow >= 3.3: this retry cannot find the runs of its earlier try%s",
                    self.retry_note(),
                )
            return plan
        header = store.get(BATCH_KEY)
        if not isinstance(header, dict) or header.get("count") != count or header.get("done"):
            self._generation = int(header.get("generation", -1)) + 1 if isinstance(header, dict) else 0
            store.set(BATCH_KEY, {"count": count, "generation": self._generation, "done": False})
            return plan
        self._generation = int(header.get("generation") or 0)
        for item in plan.items:
            saved = store.get(ITEM_KEY.format(index=item.index))
            if not isinstance(saved, dict) or not saved.get("run_id"):
                continue
            item.run_id, item.attempts = str(saved["run_id"]), int(saved.get("attempts") or 1)
            item.poll_url = str(saved["poll_url"]) if saved.get("poll_url") else None
            if saved.get("state") in ("succeeded", "running"):
                item.state = str(saved["state"])
        kept = plan.counts()
        self.log.info(
            "Reattaching to the batch of an earlier try: %d succeeded (not run again), %d still running (watched "
            "again), %d to start",
            kept.get("succeeded", 0),
            kept.get("running", 0),
            kept.get("pending", 0),
        )
        return plan

    def _recheck(self, plan: BatchPlan) -> list[BatchItem]:
        """Before a retry goes on with an earlier try's items: one status read of each run recorded as running
        (it may have ended after the earlier try last looked). Succeeded runs are kept, failed or cancelled ones
        start again. Returns the succeeded items, whose answers are fetched next."""
        from airflow_provider_runwatch.core.polling import outcome_of

        for item in plan.running():
            try:
                status = self.hook.get_status(self.item_adapter(item), str(item.run_id))
            except RunwatchError as exc:
                self.log.warning(
                    "Cannot read %s of an earlier try (%s); watching it again", self.what(str(item.run_id)), exc
                )
                continue
            outcome = outcome_of(status)
            if outcome == "success":
                plan.ended(item.index, "succeeded")
            elif outcome is not None:
                self.log.info(
                    "Item %d: %s of an earlier try ended %s; starting it again",
                    item.index,
                    self.what(str(item.run_id)),
                    outcome,
                )
                plan.ended(item.index, "pending")
        return [item for item in plan.items if item.state == "succeeded"]

    def retry_note(self) -> str:
        """What a retry without task_state_store does, per vendor."""
        return ": every item starts again"

    # -- kill -----------------------------------------------------------------------------------------
    def on_kill(self) -> None:
        """Blocking path (SIGTERM, ``execution_timeout``): cancel every run still going where the vendor can."""
        plan = self._plan
        if plan is None:
            return
        run_ids = [str(item.run_id) for item in plan.running()]
        if not run_ids:
            return
        if not self.cancel_on_kill:
            self.log.info("cancel_on_kill is off: %d %s runs keep running", len(run_ids), self.vendor_name)
            return
        self.log.warning("Task killed while %d %s runs were still going", len(run_ids), self.vendor_name)
        self.cancel_runs(run_ids)
