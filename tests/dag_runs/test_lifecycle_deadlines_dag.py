"""Deadlines and kills through real Airflow, for every run kind (tests/dag_files/runwatch_test_lifecycle.py,
DAG ``runwatch_test_lifecycle_deadlines``, run once for the module):

- ``timeout`` passes (deferrable and blocking): the task fails saying the run was still going, naming it; the
  emulator records a cancel for the kinds that can cancel (Gumloop sessions and flows), none for the others.
- ``execution_timeout`` on a deferred task: Airflow does not enforce it there, the trigger does, the same way.
- ``execution_timeout`` while a blocking poll hangs (and, for GloriaMundo, waits for a slot of the key's rate
  budget): the provider's deadline, a margin before it, ends the wait the same way, before Airflow must kill it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.conftest import DagResult
from tests.helpers import KINDS, RunKind, cancel_requests, run_lifecycle_dag, start_requests

pytestmark = [pytest.mark.dag, pytest.mark.timeout(600)]

DAG_ID = "runwatch_test_lifecycle_deadlines"
MODES = ("deferred", "blocking")


@pytest.fixture(scope="module")
def result(dag_runner: Callable[..., DagResult], runwatch_emulator: EmulatorServer) -> DagResult:
    return run_lifecycle_dag(dag_runner, runwatch_emulator, DAG_ID)


def _one_run(result: DagResult, emulator: EmulatorServer, task_id: str) -> str:
    assert result.states[task_id] == "failed", result.output[-3000:]
    run_id: str = result.xcom(task_id, "run_id")
    assert len(start_requests(emulator, run_id)) == 1
    return run_id


def assert_deadline_failure(result: DagResult, emulator: EmulatorServer, kind: RunKind, task_id: str) -> None:
    """Failed with one line that says the run was still going and names it; cancelled where the vendor can."""
    run_id = _one_run(result, emulator, task_id)
    line = re.search(rf"{kind.what} {re.escape(run_id)} did not finish before the deadline: ([^\n]*)", result.output)
    assert line, lines_about(result, run_id)
    # "last seen running (vendor state ...)", or "never seen" when the deadline passed before the trigger's
    # first poll (Airflow 3.1's `dags test` takes a few seconds to hand a deferred task to its trigger).
    seen = r"(last seen (queued|running) \(vendor state '[^']+'\)|never seen)"
    assert re.match(rf"deadline passed while the run was still going; {seen}\. ", line.group(1)), line.group(0)
    assert "Raise `timeout` if it needs longer." in line.group(1)
    assert result.xcom(task_id, "run")["outcome"] == "timeout"
    cancels = cancel_requests(emulator, run_id)
    vendor = kind.trigger_class.adapter.vendor.display_name
    if kind.can_cancel:
        assert line.group(1).endswith("Cancel requested."), line.group(0)
        assert [c["status"] for c in cancels] == [200]
        assert emulator.run(run_id)["cancel_requested_at"] is not None
    else:
        assert line.group(1).endswith(f"{vendor} cannot cancel it: it may still finish."), line.group(0)
        assert cancels == []
        assert result.output.count(f"{kind.trigger_class.adapter.noun} {run_id} keeps running") == 1


def lines_about(result: DagResult, run_id: str) -> str:
    """The log lines that mention ``run_id``, for a failing assertion's message."""
    return "\n".join(line[:300] for line in result.output.splitlines() if run_id in line)


def test_task_states(result: DagResult) -> None:
    expected = {f"{scenario}_{kind}_{mode}": "failed" for scenario in ("timeout",) for kind in KINDS for mode in MODES}
    expected |= {f"kill_{kind}_blocking": "failed" for kind in KINDS}
    expected |= {f"exec_timeout_{kind}_deferred": "failed" for kind in KINDS}
    assert result.states == expected, result.output[-4000:]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_timeout_fails_saying_the_run_was_still_going(
    result: DagResult, runwatch_emulator: EmulatorServer, kind: RunKind, mode: str
) -> None:
    assert_deadline_failure(result, runwatch_emulator, kind, f"timeout_{kind}_{mode}")


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_execution_timeout_of_a_deferred_task_is_enforced_by_the_trigger(
    result: DagResult, runwatch_emulator: EmulatorServer, kind: RunKind
) -> None:
    assert_deadline_failure(result, runwatch_emulator, kind, f"exec_timeout_{kind}_deferred")


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_execution_timeout_during_a_hung_poll_ends_at_the_providers_deadline(
    result: DagResult, runwatch_emulator: EmulatorServer, kind: RunKind
) -> None:
    """A blocking poll that hangs (the vendor answers after 30 s) is cut at the wait's deadline, which
    execution_timeout (5 s) sets a margin early: the task fails with the deadline line and cancels where the
    vendor can, before Airflow's own timeout has to kill it. GloriaMundo's polls first wait for a slot of the
    key's rate budget, which every GloriaMundo task of this DAG shares: that wait is bounded by the deadline
    too, so its task ends the same way (before: Airflow killed it)."""
    task_id = f"kill_{kind}_blocking"
    assert_deadline_failure(result, runwatch_emulator, kind, task_id)
    run_id = _one_run(result, runwatch_emulator, task_id)
    assert f"Task killed while {kind.what} {run_id} was still going" not in result.output, lines_about(result, run_id)
