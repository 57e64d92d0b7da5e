"""Retries through real Airflow (tests/dag_files/runwatch_test_lifecycle.py, DAG ``runwatch_test_lifecycle``, run
once for the module): a retry after a simulated worker crash reattaches to the run the first try started,
for every run kind in deferrable and blocking mode, mapped tasks included. The emulator's request log
proves that exactly one run was started; the answer is that run's.

Airflow < 3.3 has no task_state_store: there only Gumloop sessions reattach (their derived session id
makes the retry's create call answer 409), and the DAG shows the others' documented fallback on one task.
The ``xcom_probe`` task records, on every version, that a retry cannot read its earlier try's XCom.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.conftest import DagResult
from tests.helpers import KINDS, RunKind, run_lifecycle_dag, runs_started_by, start_requests

pytestmark = [pytest.mark.dag, pytest.mark.timeout(600)]

DAG_ID = "runwatch_test_lifecycle"
MODES = ("deferred", "blocking")
HAS_TASK_STATE_STORE = Version(airflow_version) >= Version("3.3.0")
needs_task_state_store = pytest.mark.skipif(
    not HAS_TASK_STATE_STORE, reason="reattaching without a vendor idempotency key needs task_state_store (3.3)"
)


@pytest.fixture(scope="module")
def result(dag_runner: Callable[..., DagResult], runwatch_emulator: EmulatorServer) -> DagResult:
    return run_lifecycle_dag(dag_runner, runwatch_emulator, DAG_ID)


def retried_kinds() -> list[object]:
    """Every kind; without task_state_store only Gumloop sessions are expected to reattach."""
    return [
        k if HAS_TASK_STATE_STORE or k.name == "gumloop_session" else pytest.param(k, marks=needs_task_state_store)
        for k in KINDS
    ]


def test_task_states(result: DagResult) -> None:
    if HAS_TASK_STATE_STORE:
        expected = {f"retry_{kind}_{mode}": "success" for kind in KINDS for mode in MODES}
        expected |= {"retry_mapped[0]": "success", "retry_mapped[1]": "success"}
    else:
        expected = {f"retry_gumloop_session_{mode}": "success" for mode in MODES}
        expected["retry_fallback_puffle_blocking"] = "success"
    expected["xcom_probe"] = "success"
    assert result.states == expected, result.output[-4000:]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", retried_kinds(), ids=str)
def test_retry_after_a_crash_reattaches_without_a_second_start(
    result: DagResult, runwatch_emulator: EmulatorServer, kind: RunKind, mode: str
) -> None:
    task_id = f"retry_{kind}_{mode}"
    assert result.states[task_id] == "success", result.output[-3000:]
    run_id = result.xcom(task_id, "run_id")
    # One run for this task in the whole emulator, started by one accepted start call.
    assert runs_started_by(runwatch_emulator, task_id) == [run_id]
    assert len(start_requests(runwatch_emulator, run_id)) == 1
    if HAS_TASK_STATE_STORE:
        assert f"Reattaching to {kind.what} {run_id} started by an earlier try (running)" in result.output
    else:  # the derived session id: the retry's create call answers 409 session_already_exists
        assert f"Gumloop session {run_id} already exists (started by an earlier try" in result.output
        assert [e["status"] for e in runwatch_emulator.requests(method="POST", run_id=run_id)] == [202, 409]
    if mode == "deferred":
        assert f"Deferring: the triggerer polls {kind.what} {run_id}" in result.output
    # The answer is that run's own: it quotes the task's input (the emulator strips its directive).
    answer = json.dumps(result.xcom(task_id))
    assert task_id in answer and "[emulator" not in answer
    run = result.xcom(task_id, "run")
    assert (run["run_id"], run["state"]) == (run_id, "succeeded")


def test_each_retry_task_crashed_once_then_succeeded(result: DagResult) -> None:
    tasks = [t for t in result.states if t.startswith("retry_")]
    assert tasks
    for task in tasks:
        when = "before deferring" if task.endswith("_deferred") else "while waiting"
        assert f"SimulatedWorkerCrash: {task}: worker died {when}" in result.output, task
        assert result.tries[task] == 2, f"{task}: one crashed try, one retry"


@needs_task_state_store
@pytest.mark.parametrize("mode", MODES)
def test_run_url_and_link_survive_the_retry(result: DagResult, runwatch_emulator: EmulatorServer, mode: str) -> None:
    """The retry's XCom starts empty; the URL Gumloop gave the first try comes back from task_state_store, and
    the "View run on Gumloop" link Airflow stores at the end of the task (``get_link``) points at it."""
    task_id = f"retry_gumloop_flow_{mode}"
    run_id = result.xcom(task_id, "run_id")
    url = runwatch_emulator.run(run_id)["data"]["url"]
    assert result.xcom(task_id, "run_url") == url
    assert result.xcom(task_id, "_link_GumloopRunLink") == url


@needs_task_state_store
def test_mapped_retry_reattaches_per_map_index(result: DagResult, runwatch_emulator: EmulatorServer) -> None:
    run_ids = [result.mapped[("retry_mapped", index, "run_id")] for index in range(2)]
    assert sorted(runs_started_by(runwatch_emulator, "retry_mapped")) == sorted(run_ids)
    assert len(set(run_ids)) == 2, "each map index has its own run"
    for index, run_id in enumerate(run_ids):
        assert len(start_requests(runwatch_emulator, run_id)) == 1
        assert f"Reattaching to GloriaMundo workflow run {run_id} started by an earlier try" in result.output
        assert result.mapped[("retry_mapped", index, "return_value")]["input"] == {"account": f"retry_mapped {index}"}


@pytest.mark.skipif(HAS_TASK_STATE_STORE, reason="the fallback of Airflow < 3.3")
def test_without_task_state_store_a_retry_starts_a_new_run_and_says_so(
    result: DagResult, runwatch_emulator: EmulatorServer
) -> None:
    task_id = "retry_fallback_puffle_blocking"
    started = runs_started_by(runwatch_emulator, task_id)
    assert len(started) == 2
    assert result.xcom(task_id, "run_id") == started[-1]
    assert "task_state_store needs Airflow >= 3.3: this retry cannot reattach and starts a new run" in result.output


def test_a_retry_cannot_read_the_xcom_of_its_earlier_try(result: DagResult) -> None:
    """Why the reattach fallback cannot be XCom: Airflow deletes a task instance's XComs when a new try starts
    (see docs/lifecycle.md). Should that ever change, this fails and the fallback becomes possible."""
    assert "first try dies after pushing an XCom" in result.output
    assert result.xcom("xcom_probe") == {"try_number": 2, "seen": None}
