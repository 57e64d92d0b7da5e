"""DAGs of the distributed drills (tests/distributed/), every run kind side by side.

- ``dist_failover``: per kind, ``survive__<kind>``, whose run the drill completes through the emulator once its
  trigger was adopted, and ``deadline__<kind>``, which never ends: its deadline ``DEADLINE_SECONDS`` after its
  start falls after the kill, and the adopting triggerer must fail it at that original time.
- ``dist_steady``: per kind one run (completed by the drill at the end); deferred on the second triggerer while
  the first is full, it shows the spread and keeps running through the failover.
- ``dist_worker_loss``: per kind one run, ``retries=1``; the first try pauses right after its start is
  recorded (and before it defers), writing which worker runs it to ``$AIRFLOW_HOME/markers/<task id>``, so
  the drill can ``kill -9`` that worker in between; the retry must reattach to the run, not start another.
- ``dist_budget_<budget>``: ``BUDGET_RUNS`` GloriaMundo workflow runs on one key (connection
  ``gloriamundo_budget_<budget>``), polled every second, so the key's budget, not the interval, decides how
  often each run is polled.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import DAG

if TYPE_CHECKING:  # where mypy finds it in the source tree
    from tests.e2e.dags.e2e_drills import SUBJECTS, run_task
else:  # the e2e drill DAG's factory, copied beside this file
    from e2e_drills import SUBJECTS, run_task

DEADLINE_SECONDS = 75
BUDGET_RUNS = 40
BUDGET_RUN_SECONDS = 45
#: The budget drill's two connections (``gloriamundo_budget_<name>``, one key each): today's fixed per-process
#: budget, and the adaptive one.
BUDGETS = ("fixed", "adaptive")

START = pendulum.datetime(2026, 1, 1, tz="UTC")

with DAG("dist_failover", schedule=None, start_date=START, catchup=False, max_active_tasks=16):
    for kind, subject in SUBJECTS.items():
        run_task(kind, f"survive__{kind}", f"Review {subject} [emulator: polls=never]", timeout=300)
        run_task(kind, f"deadline__{kind}", "Never ends [emulator: polls=never]", timeout=DEADLINE_SECONDS)

with DAG("dist_steady", schedule=None, start_date=START, catchup=False, max_active_tasks=16):
    for kind, subject in SUBJECTS.items():
        run_task(kind, f"steady__{kind}", f"Keep {subject} [emulator: polls=never]", timeout=300)

for budget in BUDGETS:
    with DAG(f"dist_budget_{budget}", schedule=None, start_date=START, catchup=False, max_active_tasks=BUDGET_RUNS):
        for i in range(BUDGET_RUNS):
            run_task(
                "gloriamundo",
                f"budget_{i:02d}",
                f"Budget run {i} [emulator: seconds={BUDGET_RUN_SECONDS}]",
                conn_id=f"gloriamundo_budget_{budget}",
                timeout=600,
            )


class PauseAfterStart:
    """The first try stops between "run started and recorded" and "deferred", the window a lost worker hits."""

    def remember(self, context: Any, started: Any, store: Any) -> None:
        super().remember(context, started, store)  # type: ignore[misc]
        if context["ti"].try_number == 1:
            markers = Path(os.environ["AIRFLOW_HOME"]) / "markers"
            markers.mkdir(exist_ok=True)
            (markers / context["ti"].task_id).write_text(os.environ.get("RUNWATCH_WORKER", "?"))
            time.sleep(600)


with DAG("dist_worker_loss", schedule=None, start_date=START, catchup=False, max_active_tasks=16):
    for kind, subject in SUBJECTS.items():
        run_task(
            kind,
            f"lost__{kind}",
            f"Reattach to {subject} [emulator: polls=never]",
            mixin=PauseAfterStart,
            retries=1,
            retry_delay=timedelta(seconds=2),
            timeout=600,
        )
