"""GloriaMundo operator: execute a workflow, wait for the run (progress logged as it changes), return its
``result`` object."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_runwatch.core.errors import ConfigurationError, RunwatchError
from airflow_provider_runwatch.core.retry import NO_RETRY
from airflow_provider_runwatch.operators.base import RunOperator, StartedRun, import_attribute
from airflow_provider_runwatch.operators.batch import RunBatchOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_runwatch.core.adapter import RunAdapter
    from airflow_provider_runwatch.core.batch import BatchItem
    from airflow_provider_runwatch.core.models import RunEvent
    from airflow_provider_runwatch.hooks.gloriamundo import GloriaMundoHook
    from airflow_provider_runwatch.triggers.base import RunTrigger


class GloriaMundoWorkflowOperator(RunOperator):
    """Execute a GloriaMundo workflow and hand on its result.

    XCom: ``run_id`` (before waiting); return value = the run's ``result`` object; ``run`` = summary with
    ``cost`` (``{"cost_cents": ...}``), timings (``created_at`` = started_at, ``finished_at`` =
    completed_at, ``duration_seconds``) and the last ``progress`` (``current_step``, ``total_steps``,
    ``current_step_name``, ``percentage``). A failed or timed-out run's ``run`` XCom carries the same
    cost, progress and timings when GloriaMundo reports them.

    :param workflow_id: the workflow to execute (templated).
    :param input: the workflow input, a JSON object (templated; anything else is refused before sending).

    Plus every :class:`~airflow_provider_runwatch.operators.base.RunOperator` option.

    Polling: every ``poll_interval`` seconds (default 5), but all runs of one API key in one process
    (a triggerer, or a worker for ``deferrable=False``) share the key's budget of ``polls_per_minute``
    (connection extra, default 50 of the 60 GloriaMundo allows), handed out first come, first served. With
    N runs of a key in flight each is polled about every ``max(poll_interval, N * 60 / polls_per_minute)``
    seconds: 4 runs at 5 s fit the budget, 50 runs are polled about once a minute each. Starts are paced at
    ``executions_per_minute`` (default 9 of 10) per key and process. GloriaMundo cannot cancel a run: a kill
    or a timeout logs that the run goes on, with its id.
    """

    #: Durable without ``ResumableJobMixin`` (see RunOperator's ``durable``): the Airflow registry's marker.
    __supports_durable_execution: ClassVar[bool] = True
    template_fields: Sequence[str] = ("workflow_id", "input")
    template_fields_renderers = {"input": "json"}
    hook_class_path = "airflow_provider_runwatch.hooks.gloriamundo.GloriaMundoHook"
    adapter_path = "airflow_provider_runwatch.vendors.gloriamundo.WORKFLOW_RUNS"
    trigger_class_path = "airflow_provider_runwatch.triggers.gloriamundo.GloriaMundoRunTrigger"
    default_poll_interval = 5.0

    def __init__(self, *, workflow_id: str, input: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workflow_id = workflow_id
        self.input = input
        self._poll_url: str | None = None

    @property
    def adapter(self) -> RunAdapter:
        """Polls the execute answer's ``poll_url`` once this task started the run (the documented path else)."""
        adapter: RunAdapter = import_attribute(self.adapter_path)
        return adapter.with_poll_url(getattr(self, "_poll_url", None))

    def make_trigger(self, run_id: str, deadline: float | None, *, stop_on_paused: bool = True) -> RunTrigger:
        trigger: Any = super().make_trigger(run_id, deadline, stop_on_paused=stop_on_paused)
        return trigger.with_poll_url(getattr(self, "_poll_url", None))  # type: ignore[no-any-return]

    def start_run(self, context: Context) -> StartedRun:
        hook: GloriaMundoHook = self.hook  # type: ignore[assignment]
        started = hook.execute_workflow(self.workflow_id, self.input)
        self._poll_url = started.poll_url
        return StartedRun(started.run_id)

    def failure_summary(self, event: RunEvent) -> dict[str, Any]:
        """The base failure summary, plus cost, progress and timings from one more status read."""
        value = super().failure_summary(event)
        if event.status in ("failed", "timeout"):
            # One attempt, within half the margin before execution_timeout: a slow answer (or a wait for a slot of
            # the key's poll budget) must not keep the failure line from being written before Airflow's kill.
            margin = self.execution_timeout_margin()
            call = self.adapter.result_call(self.hook.settings, self.adapter.validate_run_id(event.run_id))
            try:
                result = self.hook.call(call, retry=NO_RETRY, within=None if margin is None else margin / 2)
            except RunwatchError as exc:
                self.log.info("Could not read the final cost of %s: %s", self.what(event.run_id), exc)
            else:
                summary = result.summary.to_xcom()
                for key in ("cost", "progress", "created_at", "finished_at", "duration_seconds"):
                    if key in summary:
                        value[key] = summary[key]
        return value


class GloriaMundoWorkflowBatchOperator(RunBatchOperator):
    """Execute a GloriaMundo workflow once per input, at most ``max_concurrency`` at once, in one task.

    Return value: each run's ``result`` object, in the order of ``inputs`` (``None`` where a run did not
    succeed). XCom ``runs``: one summary per input (``index``, ``run_id``, ``state``, ``error``, ``cost``).

    :param workflow_id: the workflow to execute (templated).
    :param inputs: the workflow inputs, a list of JSON objects (templated).
    :param max_concurrency: runs held at once (default 10).

    GloriaMundo allows 10 executions and 60 status polls a minute per key: starts are paced at the key's
    ``executions_per_minute`` (a start refused with 429 waits and starts again), and the polls of all runs of
    the batch share the key's ``polls_per_minute``, so a batch of N inputs takes about N / 10 minutes however
    high ``max_concurrency`` is. Plus every
    :class:`~airflow_provider_runwatch.operators.batch.RunBatchOperator` option. GloriaMundo cannot cancel a
    run: a kill or a timeout logs the runs that go on, with their ids. A retry on Airflow < 3.3 (no
    ``task_state_store``) starts every input again.
    """

    __supports_durable_execution: ClassVar[bool] = True
    template_fields: Sequence[str] = ("workflow_id", "inputs")
    template_fields_renderers = {"inputs": "json"}
    hook_class_path = GloriaMundoWorkflowOperator.hook_class_path
    adapter_path = GloriaMundoWorkflowOperator.adapter_path
    batch_trigger_class_path = "airflow_provider_runwatch.triggers.gloriamundo.GloriaMundoBatchTrigger"
    default_poll_interval = 5.0
    default_max_concurrency = 10

    def __init__(self, *, workflow_id: str, inputs: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workflow_id = workflow_id
        self.inputs = inputs

    def check_input(self, index: int, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ConfigurationError(
                f"{self.task_id}: inputs[{index}] must be a JSON object (a dict), got {type(value).__name__}"
            )
        return value

    def start_wait(self) -> float:
        """How long the next execute waits for the key's ``executions_per_minute`` in this process."""
        from airflow_provider_runwatch.vendors.gloriamundo import EXECUTE_BUCKET

        hook: GloriaMundoHook = self.hook  # type: ignore[assignment]
        return hook.budget(hook.settings).wait_before(EXECUTE_BUCKET)

    def start_item(self, context: Context, item: BatchItem, value: Any) -> StartedRun:
        hook: GloriaMundoHook = self.hook  # type: ignore[assignment]
        started = hook.execute_workflow(self.workflow_id, value)
        return StartedRun(started.run_id, poll_url=started.poll_url)
