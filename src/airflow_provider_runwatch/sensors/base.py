"""A sensor for a run started elsewhere, for every vendor: give it the run id, get the answer.

Poke and reschedule modes check once per poke through the same adapter the triggers use; deferrable
mode hands the wait to the same trigger the operators use, with the sensor's ``timeout`` as an absolute
deadline.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_runwatch.core.errors import ConfigurationError, VendorAPIError
from airflow_provider_runwatch.core.models import RunEvent
from airflow_provider_runwatch.operators.base import RunTaskMixin, default_deferrable

if TYPE_CHECKING:
    from airflow.sdk import Context


class RunSensor(RunTaskMixin, BaseSensorOperator):
    """Wait for an existing run; the answer is the return value, like the operators'.

    :param run_id: the vendor's id of the run to watch (templated).
    :param conn_id: Airflow connection id.
    :param deferrable: wait on the triggerer instead of poking from a worker slot.
    :param max_consecutive_failures: transient errors in a row (network, 429, 5xx) tolerated.
    :param cancel_on_kill: in deferrable mode, cancel the run when the task is killed (off by default:
        the sensor did not start the run).
    """

    template_fields = ("run_id",)
    ui_color = "#fef7e0"

    def __init__(
        self,
        *,
        run_id: str,
        conn_id: str | None = None,
        deferrable: bool | None = None,
        max_consecutive_failures: int = 5,
        cancel_on_kill: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", self.default_poll_interval)
        super().__init__(**kwargs)
        self.run_id = run_id
        self.conn_id = conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = float(self.poke_interval)
        if max_consecutive_failures < 1:
            raise ConfigurationError(f"max_consecutive_failures must be >= 1, got {max_consecutive_failures}")
        self.max_consecutive_failures = max_consecutive_failures
        self.cancel_on_kill = cancel_on_kill
        self._failures = 0

    def execute(self, context: Context) -> Any:
        self.run_id = self.adapter.validate_run_id(self.run_id)
        if not self.deferrable:
            return super().execute(context)
        # One look first: a run that is already over needs no trigger.
        result = self.poke(context)
        if isinstance(result, PokeReturnValue) and result.is_done:
            return result.xcom_value
        deadline = time.time() + float(self.timeout) if self.timeout else None
        self.defer(
            trigger=self.make_trigger(self.run_id, deadline),
            method_name="execute_complete",
            kwargs={"run_id": self.run_id},
        )

    def poke(self, context: Context) -> PokeReturnValue:
        from airflow_provider_runwatch.core.polling import Poller, WaitOptions, event_for, outcome_of

        try:
            status = self.hook.get_status(self.adapter, self.run_id)
        except VendorAPIError as exc:
            # The same decision and the same failure line as the operators' and the triggers' wait.
            options = WaitOptions(
                poll_interval=self.poll_interval, max_consecutive_failures=self.max_consecutive_failures
            )
            poller = Poller(
                vendor=self.vendor_name,
                run_id=self.run_id,
                options=options,
                log=self.log,
                noun=self.adapter.noun,
                failures=self._failures,
            )
            ended = poller.after_error(exc)
            self._failures = poller.failures
            if isinstance(ended, RunEvent):
                self.finish(context, ended, self.run_id)  # raises the failure line
            return PokeReturnValue(is_done=False)
        self._failures = 0
        self.log.info("%s: %s (vendor state '%s')", self.what(self.run_id), status.state.value, status.vendor_state)

        outcome = outcome_of(status)
        if outcome == "success":
            return PokeReturnValue(is_done=True, xcom_value=self.succeed(context, self.fetch_result(self.run_id)))
        if outcome is not None:
            self.finish(context, event_for(status, outcome), self.run_id)  # raises, or handles a pause
        return PokeReturnValue(is_done=False)

    def execute_complete(self, context: Context, event: Any = None, run_id: str | None = None) -> Any:
        parsed = self.validate_event(event, run_id)
        return self.finish(context, parsed, parsed.run_id)
