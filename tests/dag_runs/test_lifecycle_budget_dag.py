"""The transient-failure budget through real Airflow, for every run kind in deferrable and blocking mode
(tests/dag_files/runwatch_test_lifecycle.py, DAG ``runwatch_test_lifecycle_budget``, run once for the module).

Every task has ``max_consecutive_failures=2``: a burst of one 5xx is ridden out and the task returns the
right answer; a burst of three ends the wait at the second failure, and the task fails naming the run.
The same tasks show which kinds get a "View run" extra link (Gumloop flows only, from the stored XCom).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.conftest import DagResult
from tests.helpers import KINDS, RunKind, run_lifecycle_dag, start_requests

pytestmark = [pytest.mark.dag, pytest.mark.timeout(600)]

DAG_ID = "runwatch_test_lifecycle_budget"
MODES = ("deferred", "blocking")


@pytest.fixture(scope="module")
def result(dag_runner: Callable[..., DagResult], runwatch_emulator: EmulatorServer) -> DagResult:
    return run_lifecycle_dag(dag_runner, runwatch_emulator, DAG_ID)


def polls(emulator: EmulatorServer, run_id: str) -> list[int]:
    """Status codes of the waiting polls (the operator's one result fetch after a success included)."""
    return [e["status"] for e in emulator.requests(method="GET", run_id=run_id)]


def test_task_states(result: DagResult) -> None:
    expected = {
        f"burst_{outcome}_{kind}_{mode}": state
        for kind in KINDS
        for mode in MODES
        for outcome, state in (("ok", "success"), ("over", "failed"))
    }
    assert result.states == expected, result.output[-4000:]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_burst_shorter_than_the_budget_is_ridden_out(
    result: DagResult, runwatch_emulator: EmulatorServer, kind: RunKind, mode: str
) -> None:
    task_id = f"burst_ok_{kind}_{mode}"
    assert result.states[task_id] == "success"
    run_id = result.xcom(task_id, "run_id")
    assert len(start_requests(runwatch_emulator, run_id)) == 1
    assert polls(runwatch_emulator, run_id)[:2] == [503, 200]
    warned = re.findall(
        rf"{kind.what} {re.escape(run_id)}: [^\n]*(server error \(HTTP 503\))[^\n]*; (failure 1/2)", result.output
    )
    assert warned == [("server error (HTTP 503)", "failure 1/2")], "one failure, logged, then back on track"
    # The answer is the run's own: it quotes the task's input (the emulator strips its directive).
    answer = json.dumps(result.xcom(task_id))
    assert task_id in answer and "[emulator" not in answer
    run = result.xcom(task_id, "run")
    assert (run["run_id"], run["state"]) == (run_id, "succeeded")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_burst_longer_than_the_budget_fails_naming_the_run(
    result: DagResult, runwatch_emulator: EmulatorServer, kind: RunKind, mode: str
) -> None:
    task_id = f"burst_over_{kind}_{mode}"
    assert result.states[task_id] == "failed"
    run_id = result.xcom(task_id, "run_id")
    assert len(start_requests(runwatch_emulator, run_id)) == 1
    assert polls(runwatch_emulator, run_id) == [503, 503], "gave up at the second failure in a row"
    line = re.search(
        rf"Stopped watching {kind.what} {re.escape(run_id)} \(vendor state not seen\): ([^\n]*)", result.output
    )
    assert line, result.output[-3000:]
    assert line.group(1).startswith("gave up after 2 consecutive failed polls; last: "), line.group(0)
    assert "server error (HTTP 503)" in line.group(1)
    assert line.group(1).endswith("The run itself may still be going."), line.group(0)
    assert result.xcom(task_id, "run")["outcome"] == "error"


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_view_run_link_only_where_the_vendor_gives_a_url(
    result: DagResult, runwatch_emulator: EmulatorServer, kind: RunKind
) -> None:
    """Airflow stores each extra link's ``get_link`` as an XCom at the end of the task, success or failure.

    Only Gumloop flows get a URL (``start_pipeline`` returns it); the other kinds have no link at all.
    """
    for outcome in ("ok", "over"):
        for mode in MODES:
            task_id = f"burst_{outcome}_{kind}_{mode}"
            links = {key: value for (task, key), value in result.xcoms.items() if task == task_id and "_link_" in key}
            if kind.name == "gumloop_flow":
                url = runwatch_emulator.run(result.xcom(task_id, "run_id"))["data"]["url"]
                assert result.xcom(task_id, "run_url") == url
                assert links == {"_link_GumloopRunLink": url}
            else:
                assert links == {}
                assert (task_id, "run_url") not in result.xcoms
