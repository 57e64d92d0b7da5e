"""DAGs of the triggerer capacity benchmark (``tests/benchmarks/bench_triggerer.py``).

Both DAGs defer N tasks straight from the scheduler to the triggerer (Airflow >= 3.3 ``start_from_trigger``: no
worker start per task, which on 2 cores would cost hours at N = 2000) and differ only in the trigger:

- ``bench_triggerer_runwatch``: the provider's real :class:`PuffleChatRunTrigger`, polling the emulator every
  ``conf["poll_interval"]`` (5) seconds for run ``run_bench<map index>`` (the harness creates those runs);
- ``bench_triggerer_baseline``: Airflow's own cheapest trigger, ``DateTimeTrigger``, with a target beyond the
  measuring window.

The run id (ours) and the target time (baseline) are Jinja templates the triggerer renders per trigger, so both
sides pay the same Airflow machinery (a template context per trigger). The first ``conf["early"]`` tasks of each
DAG end soon (ours: runs the harness completes; baseline: the moments in ``conf["soon"]``): their resumes on a
worker give event-to-resume latency. Each resume appends ``{"run_id", "map_index", "resumed"}`` to
``$BENCH_TRIGGERER_SPANS/<pid>.jsonl``.
The width of the mapped task comes from ``conf["n"]`` through one upstream task (the only other worker start).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, BaseOperator, task
from airflow.triggers.base import StartTriggerArgs

SPANS = Path(os.environ.get("BENCH_TRIGGERER_SPANS", "/tmp/bench-triggerer-spans"))
#: What the harness's emulator names the runs (``run_`` is Puffle's required prefix).
RUN_ID_TEMPLATE = "{{ 'run_bench%06d' % ti.map_index }}"
TARGET_TEMPLATE = (
    "{{ dag_run.conf['soon'][ti.map_index] if ti.map_index < dag_run.conf['early'] else dag_run.conf['far'] }}"
)


def _starts_on(trigger_cls: str, trigger_kwargs: dict[str, Any]) -> StartTriggerArgs:
    """Start on the triggerer with this trigger; resume in ``execute_complete``; no timeout."""
    return StartTriggerArgs(
        trigger_cls=trigger_cls,
        trigger_kwargs=trigger_kwargs,
        next_method="execute_complete",
        next_kwargs=None,
        timeout=None,
    )


class _ResumeRecorder(BaseOperator):
    """Starts on the triggerer; on resume (a worker), records when and returns at once."""

    start_from_trigger = True

    def __init__(self, *, index: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index = index

    def execute(self, context: Any) -> None:  # never called: the task starts on the triggerer
        raise RuntimeError("bench task ran on a worker: start_from_trigger was not honoured")

    def execute_complete(self, context: Any, event: Any = None) -> None:
        resumed = time.time()
        SPANS.mkdir(parents=True, exist_ok=True)
        with (SPANS / f"{os.getpid()}.jsonl").open("a") as out:
            record = {"run_id": context["run_id"], "map_index": context["ti"].map_index, "resumed": resumed}
            out.write(json.dumps(record) + "\n")


class RunwatchOnTriggerer(_ResumeRecorder):
    """The provider's Puffle trigger, started by the scheduler with a templated run id."""

    template_fields = ("run_id",)
    start_trigger_args = _starts_on(
        "airflow_provider_runwatch.triggers.puffle.PuffleChatRunTrigger",
        {
            "conn_id": "puffle_default",
            "run_id": RUN_ID_TEMPLATE,
            "poll_interval": float(os.environ.get("BENCH_TRIGGERER_POLL", "5")),
            # Marking the leftover tasks failed at the end must not send a cancel per run (Puffle has none anyway).
            "cancel_on_kill": False,
        },
    )

    def __init__(self, *, run_id: str = RUN_ID_TEMPLATE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_id = run_id


class DateTimeOnTriggerer(_ResumeRecorder):
    """Airflow's ``DateTimeTrigger`` (as ``DateTimeSensorAsync(start_from_trigger=True)`` uses it on 3.3)."""

    template_fields = ("target_time",)
    start_trigger_args = _starts_on(
        "airflow.providers.standard.triggers.temporal.DateTimeTrigger",
        {"target_time": TARGET_TEMPLATE, "end_from_trigger": False},
    )

    def __init__(self, *, target_time: str = TARGET_TEMPLATE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target_time = target_time


@task
def indexes(n: str) -> list[int]:
    return list(range(int(n)))


for dag_id, operator in (
    ("bench_triggerer_runwatch", RunwatchOnTriggerer),
    ("bench_triggerer_baseline", DateTimeOnTriggerer),
):
    with DAG(dag_id, schedule=None, catchup=False, max_active_tasks=100_000, tags=["benchmark"]) as dag:
        operator.partial(task_id="deferred").expand(index=indexes("{{ dag_run.conf['n'] }}"))
    globals()[dag_id] = dag
