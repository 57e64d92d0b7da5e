"""Test DAGs: the batch operators through real Airflow (tests/dag_runs/test_batch_dag.py reads what Airflow stored
and what the emulator saw).

- ``runwatch_test_batch``: a batch per vendor whose concurrency limit bites (Gumloop on a Free-plan key with
  more at once than the plan allows; GloriaMundo with the emulator's executions limit lowered by the test; Puffle
  with more inputs than slots), answers in input order, the ``runs`` XCom, ``max_failed`` both ways, and a
  blocking Gumloop batch.
- ``runwatch_test_batch_retry``: a crash mid-batch (after some items ended and more were started), then the
  retry: finished items are not started again, running ones are watched again; and a batch whose failed item
  starts again on the retry while the items that succeeded do not.
- ``runwatch_test_batch_kill``: sessions that never end, cut by ``timeout`` (deferred: the trigger's deadline ends
  the wait) and by ``execution_timeout`` (blocking: the poll loop's deadline); either way the worker cancels every
  session still going.

Every item's text starts with its task id and its index (``<task_id> <index>``), so tests find its runs.

The operators here hand the task back as soon as the resume rule holds (``admission_sleep_below = 0``, set on
subclasses as a DAG author would): these DAGs test what the batch does, and a 10 s floor per deferral would add
minutes. tests/dag_files/runwatch_test_batch_refusals.py runs the default, the floor included.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow import __version__ as airflow_version
from airflow.sdk import DAG
from packaging.version import Version

from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowBatchOperator
from airflow_provider_runwatch.operators.gumloop import GumloopSessionBatchOperator
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatBatchOperator

HAS_TASK_STATE_STORE = Version(airflow_version) >= Version("3.3.0")
START = pendulum.datetime(2026, 1, 1)


class QuickGumloopBatch(GumloopSessionBatchOperator):
    admission_sleep_below = 0.0


class QuickGloriaMundoBatch(GloriaMundoWorkflowBatchOperator):
    admission_sleep_below = 0.0


class QuickPuffleBatch(PuffleAgentChatBatchOperator):
    admission_sleep_below = 0.0


def texts(task_id: str, directives: list[str]) -> list[str]:
    return [f"{task_id} {index} [emulator: {directive}]" for index, directive in enumerate(directives)]


with DAG("runwatch_test_batch", schedule=None, start_date=START, catchup=False):
    # Free plan: 5 unfinished runs per key; 6 at once must meet 429s, and the batch must wait them out.
    QuickGumloopBatch(
        task_id="gumloop_free",
        conn_id="gumloop_free",
        agent_id="agent_batch",
        inputs=texts("gumloop_free", ["seconds=1.5"] * 7),
        max_concurrency=6,
        deferrable=True,
        poll_interval=1,
    )
    QuickGloriaMundoBatch(
        task_id="gloriamundo",
        workflow_id="wf_gloriamundo_batch",
        inputs=[{"account": t} for t in texts("gloriamundo", ["polls=1"] * 4)],
        max_concurrency=2,
        deferrable=True,
        poll_interval=0.3,
    )
    QuickPuffleBatch(
        task_id="puffle_within_max_failed",
        messages=texts(
            "puffle_within_max_failed", ["polls=1", "polls=0 outcome=failed error='tool broke'", "polls=1", "polls=1"]
        ),
        max_concurrency=2,
        max_failed=1,
        deferrable=True,
        poll_interval=0.3,
    )
    QuickPuffleBatch(
        task_id="puffle_over_max_failed",
        messages=texts("puffle_over_max_failed", ["polls=0 outcome=failed error='tool broke'", "polls=1", "polls=1"]),
        max_concurrency=3,
        deferrable=True,
        poll_interval=0.3,
    )
    QuickGumloopBatch(
        task_id="gumloop_blocking",
        agent_id="agent_batch",
        inputs=texts("gumloop_blocking", ["polls=1"] * 3),
        max_concurrency=2,
        deferrable=False,
        poll_interval=1,
    )


class SimulatedWorkerCrash(RuntimeError):
    pass


class CrashMidBatch:
    """Dies on the first try when it is about to defer the second time: by then some items ended and more were
    started (and recorded), as a worker lost mid-batch would leave them."""

    _deferrals = 0

    def _defer(self, *args: Any, **kwargs: Any) -> None:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
        if int(ti.try_number) == 1 and self.saved_plan_exists(ti):
            raise SimulatedWorkerCrash(f"{ti.task_id}: worker died mid-batch")
        super()._defer(*args, **kwargs)  # type: ignore[misc]

    def saved_plan_exists(self, ti: Any) -> bool:
        return ti.xcom_pull(task_ids=ti.task_id, key="batch") is not None


class CrashingGumloopBatch(CrashMidBatch, QuickGumloopBatch):
    pass


class CrashingPuffleBatch(CrashMidBatch, QuickPuffleBatch):
    pass


with DAG(
    "runwatch_test_batch_retry",
    schedule=None,
    start_date=START,
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=0)},
):
    # Items 0-1 end at once, 2-4 take longer: at the crash 0-1 have succeeded and 2-4 are running.
    CrashingGumloopBatch(
        task_id="retry_gumloop",
        agent_id="agent_batch_retry",
        inputs=texts("retry_gumloop", ["polls=0", "polls=0", "seconds=4", "seconds=4", "seconds=4"]),
        max_concurrency=3,
        deferrable=True,
        poll_interval=1,
    )
    if HAS_TASK_STATE_STORE:
        CrashingPuffleBatch(
            task_id="retry_puffle",
            messages=texts("retry_puffle", ["polls=0", "polls=0", "seconds=3", "seconds=3", "seconds=3"]),
            max_concurrency=3,
            deferrable=True,
            poll_interval=0.3,
        )
    # Fails on the first try (one item failed); the retry starts only that item again (and it fails again).
    QuickGumloopBatch(
        task_id="retry_failed_item",
        agent_id="agent_batch_retry",
        inputs=texts("retry_failed_item", ["polls=0", "polls=0 outcome=failed error='tool broke'", "polls=0"]),
        max_concurrency=3,
        deferrable=True,
        poll_interval=1,
    )


with DAG("runwatch_test_batch_kill", schedule=None, start_date=START, catchup=False):
    # Sessions that never end. Deferred: `timeout` (counted from the start of execute) passes while the trigger
    # watches; the trigger ends the wait and the worker cancels every session still going. (Not execution_timeout:
    # deferred, it counts from the task's start_date, and the first task of a `dags test` can take 20 s to start.)
    QuickGumloopBatch(
        task_id="kill_deferred",
        agent_id="agent_batch_kill",
        inputs=texts("kill_deferred", ["polls=never"] * 3),
        max_concurrency=3,
        deferrable=True,
        poll_interval=1,
        timeout=5,
    )
    # Blocking: execution_timeout (less its margin) ends the poll loop; Airflow's kill and on_kill are the backstop.
    QuickGumloopBatch(
        task_id="kill_blocking",
        agent_id="agent_batch_kill",
        inputs=texts("kill_blocking", ["polls=never"] * 3),
        max_concurrency=3,
        deferrable=False,
        poll_interval=1,
        execution_timeout=timedelta(seconds=8),
    )
