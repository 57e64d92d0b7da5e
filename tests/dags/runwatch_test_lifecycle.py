"""Test DAG: lifecycle drills through real Airflow (retry after a crash reattaches, no duplicate run).

``CrashOnce`` subclasses start the run, record it, then die on the first try as a worker crash would
(after the run id is stored, before the wait finishes); Airflow retries; the retry must reattach.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator


class SimulatedWorkerCrash(RuntimeError):
    pass


class CrashOncePuffle(PuffleAgentChatOperator):
    def wait_blocking(self, *args: Any, **kwargs: Any) -> Any:
        if self._first_try():
            raise SimulatedWorkerCrash("worker died while waiting")
        return super().wait_blocking(*args, **kwargs)

    def make_trigger(self, *args: Any, **kwargs: Any) -> Any:
        if self._first_try():
            raise SimulatedWorkerCrash("worker died before deferring")
        return super().make_trigger(*args, **kwargs)

    def _first_try(self) -> bool:
        from airflow.sdk import get_current_context

        return int(get_current_context()["ti"].try_number) == 1


DEFAULTS = {"retries": 1, "retry_delay": timedelta(seconds=0)}

with DAG(
    "runwatch_test_lifecycle",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1),
    catchup=False,
    default_args=DEFAULTS,
) as dag:
    CrashOncePuffle(
        task_id="puffle_blocking_retry",
        message="lifecycle puffle blocking [emulator: polls=3]",
        deferrable=False,
        poll_interval=0.3,
    )
    CrashOncePuffle(
        task_id="puffle_deferred_retry",
        message="lifecycle puffle deferred [emulator: polls=3]",
        deferrable=True,
        poll_interval=0.3,
    )
