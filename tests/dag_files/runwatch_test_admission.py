"""Test DAG: start admission through real Airflow. Mapped Gumloop sessions on a Free-plan key (5 unfinished
agent runs at most) whose slots the test keeps busy: each start that is refused defers on a timer and starts
again on resume, in the same try, until a slot frees (tests/dag_runs/test_admission_dag.py plays the other
sessions of the key)."""

from __future__ import annotations

from typing import ClassVar

import pendulum
from airflow.sdk import DAG

from airflow_provider_runwatch.core.admission import AdmissionBackoff
from airflow_provider_runwatch.operators.gumloop import GumloopSessionOperator

ACCOUNTS = ["Acme", "Beta", "Gamma"]


class NightlySession(GumloopSessionOperator):
    """The session operator with waits of tenths of a second between refused starts (a test's clock, set the
    way a DAG author sets a deployment's backoff: on a subclass)."""

    admission_backoff: ClassVar[AdmissionBackoff] = AdmissionBackoff(base=0.3, ceiling=0.6)
    #: Every refusal defers here, however short the wait (what is tested is the deferral).
    admission_sleep_below: ClassVar[float] = 0.0


with DAG("runwatch_test_admission", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
    NightlySession.partial(
        task_id="review",
        agent_id="agent_nightly",
        deferrable=True,
        poll_interval=1,
        start_timeout=120,
    ).expand(input=[f"Review account {name} [emulator: polls=1]" for name in ACCOUNTS])
