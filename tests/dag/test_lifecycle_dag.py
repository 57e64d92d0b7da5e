"""Lifecycle drills through real Airflow: a retry after a worker crash reattaches instead of starting a
second run (Airflow >= 3.3's task_state_store), in blocking and deferrable mode."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.conftest import DagResult

pytestmark = [
    pytest.mark.dag,
    pytest.mark.skipif(Version(airflow_version) < Version("3.3.0"), reason="task_state_store needs Airflow >= 3.3"),
]

DAG_ID = "runwatch_test_lifecycle"


@pytest.fixture(scope="module")
def result(dag_runner: Callable[..., DagResult]) -> DagResult:
    return dag_runner(DAG_ID)


@pytest.mark.parametrize(
    ("task_id", "message"),
    [
        ("puffle_blocking_retry", "lifecycle puffle blocking"),
        ("puffle_deferred_retry", "lifecycle puffle deferred"),
    ],
)
def test_retry_after_crash_reattaches_without_a_second_start(
    result: DagResult, runwatch_emulator: EmulatorServer, task_id: str, message: str
) -> None:
    assert result.states[task_id] == "success", result.output[-3000:]
    run_id = result.xcom(task_id, "run_id")
    assert message in result.xcom(task_id)
    # Exactly one start for this run across both tries, and the retry said it reattached.
    assert len(runwatch_emulator.requests(method="POST", run_id=run_id)) == 1
    assert f"Reattaching to Puffle chat run {run_id} started by an earlier try" in result.output
    assert "SimulatedWorkerCrash" in result.output


def test_each_task_started_exactly_one_run(result: DagResult) -> None:
    # Two tasks, two tries each: a duplicate start would log a third "Started" line.
    assert result.output.count("Started Puffle chat run") == 2
