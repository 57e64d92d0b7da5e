"""The batch operators through real Airflow (`airflow dags test`, triggers in line), against the emulator.

DAGs in tests/dag_files/runwatch_test_batch.py. What the tests read: the task states and XComs Airflow stored,
the log, and the emulator's request log (which run each start created, which were refused, what was cancelled).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.conftest import SECRET_KEY, DagResult
from tests.helpers import cancel_requests, gloriamundo_key_env, plain

pytestmark = [pytest.mark.dag, pytest.mark.timeout(600)]

HAS_TASK_STATE_STORE = Version(airflow_version) >= Version("3.3.0")


def runs_of(emulator: EmulatorServer, task_id: str) -> dict[int, list[str]]:
    """Item index -> ids of the runs the emulator created for it, oldest first (prompt ``<task_id> <index> ...``)."""
    with httpx.Client(base_url=emulator.url, timeout=10, trust_env=False) as http:
        runs = http.get("/_emulator/runs").json()["runs"]
    found: dict[int, list[str]] = {}
    for run in sorted(runs, key=lambda r: r.get("created_at") or 0):
        words = str(run["data"].get("prompt") or "").split()
        if len(words) >= 2 and words[0] == task_id:
            found.setdefault(int(words[1]), []).append(str(run["id"]))
    return found


def accepted_starts(emulator: EmulatorServer, run_id: str) -> int:
    return sum(
        1
        for e in emulator.requests(method="POST", run_id=run_id)
        if e["status"] < 300 and not e["path"].endswith("/cancel")
    )


@pytest.fixture(scope="module")
def gloriamundo_limits(runwatch_emulator: EmulatorServer) -> Iterator[None]:
    """The emulator's GloriaMundo executions limit lowered to 3 per 2 s for this module, then restored."""
    limits = f"{runwatch_emulator.url}/_emulator/gloriamundo/limits"
    with httpx.Client(trust_env=False, timeout=10) as http:
        before = http.get(limits).json()
        http.put(limits, json={"window_seconds": 2, "executions": 3, "polls": 60}).raise_for_status()
        try:
            yield
        finally:
            http.put(limits, json={k: before[k] for k in ("window_seconds", "executions", "polls")})


@pytest.fixture(scope="module")
def result(
    dag_runner: Callable[..., DagResult], runwatch_emulator: EmulatorServer, gloriamundo_limits: None
) -> DagResult:
    free = {
        "conn_type": "gumloop",
        "host": runwatch_emulator.gumloop_url,
        "login": "emulator-user",
        "password": f"gl_free_{SECRET_KEY}_{time.time_ns()}",
    }
    env = {**gloriamundo_key_env(runwatch_emulator, "batch"), "AIRFLOW_CONN_GUMLOOP_FREE": json.dumps(free)}
    outcome = dag_runner("runwatch_test_batch", extra_env=env, timeout=400)
    outcome.output = plain(outcome.output)
    return outcome


def test_task_states(result: DagResult) -> None:
    assert result.states == {
        "gumloop_free": "success",
        "gloriamundo": "success",
        "puffle_within_max_failed": "success",
        "puffle_over_max_failed": "failed",
        "gumloop_blocking": "success",
    }, result.output[-4000:]


def test_gumloop_free_plan_limit_bites_and_every_item_runs_once(
    result: DagResult, runwatch_emulator: EmulatorServer
) -> None:
    answers = result.xcom("gumloop_free")
    assert len(answers) == 7
    for index, answer in enumerate(answers):
        assert answer.startswith(f"gumloop_free {index}") or f"gumloop_free {index}" in answer, (index, answer)
    runs = result.xcom("gumloop_free", "runs")
    assert [r["index"] for r in runs] == list(range(7))
    assert {r["state"] for r in runs} == {"succeeded"}
    assert all("usage" in r for r in runs), runs[0]
    created = runs_of(runwatch_emulator, "gumloop_free")
    assert {i: len(ids) for i, ids in created.items()} == dict.fromkeys(range(7), 1), "each item started once"
    assert [r["run_id"] for r in runs] == [created[i][0] for i in range(7)]
    refused = [
        e
        for e in runwatch_emulator.requests(vendor="gumloop", method="POST")
        if "/agents/agent_batch/sessions" in e["path"] and e["status"] == 429
    ]
    assert refused, "6 at once on a Free plan (5 unfinished runs): some starts must have been refused"
    assert "refused the start (HTTP 429" in result.output
    # Coalesced: one deferral per "Gumloop batch: 7 items: ..." line, far fewer than one per item.
    assert 1 <= result.output.count("Gumloop batch: 7 items:") <= 3


def test_gloriamundo_batch_waits_out_the_executions_limit(result: DagResult, runwatch_emulator: EmulatorServer) -> None:
    answers = result.xcom("gloriamundo")
    assert [a["input"]["account"] for a in answers] == [f"gloriamundo {i}" for i in range(4)]
    runs = result.xcom("gloriamundo", "runs")
    assert all(r["state"] == "succeeded" and "cost" in r for r in runs), runs
    for r in runs:
        assert accepted_starts(runwatch_emulator, r["run_id"]) == 1


def test_max_failed_both_ways(result: DagResult) -> None:
    within = result.xcom("puffle_within_max_failed")
    assert within[1] is None and all(within[i] for i in (0, 2, 3))
    assert result.xcom("puffle_within_max_failed", "runs")[1]["error"] == "tool broke"
    over = result.xcom("puffle_over_max_failed", "runs")
    assert [r["state"] for r in over] == ["failed", "succeeded", "succeeded"], "every item ran before the failure"
    assert ("puffle_over_max_failed", "return_value") not in result.xcoms
    assert "1 of 3 items did not succeed (max_failed=0)" in result.output
    assert over[0]["run_id"] in result.output.split("1 of 3 items did not succeed", 1)[1][:2000]


def test_blocking_batch(result: DagResult) -> None:
    answers = result.xcom("gumloop_blocking")
    assert [f"gumloop_blocking {i}" in a for i, a in enumerate(answers)] == [True] * 3


def test_no_secret_in_the_batch_xcoms(result: DagResult) -> None:
    for (task_id, key), value in result.xcoms.items():
        assert SECRET_KEY not in json.dumps(value, default=str), (task_id, key)


# -- retries ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def retried(dag_runner: Callable[..., DagResult]) -> DagResult:
    outcome = dag_runner("runwatch_test_batch_retry", timeout=400)
    outcome.output = plain(outcome.output)
    return outcome


@pytest.mark.parametrize(
    "task_id",
    [
        "retry_gumloop",
        pytest.param(
            "retry_puffle",
            marks=pytest.mark.skipif(not HAS_TASK_STATE_STORE, reason="Puffle reattaches through task_state_store"),
        ),
    ],
)
def test_a_crash_mid_batch_retries_without_starting_finished_items_again(
    retried: DagResult, runwatch_emulator: EmulatorServer, task_id: str
) -> None:
    assert retried.states[task_id] == "success", retried.output[-4000:]
    assert retried.tries[task_id] == 2
    assert f"SimulatedWorkerCrash: {task_id}: worker died mid-batch" in retried.output
    created = runs_of(runwatch_emulator, task_id)
    assert {i: len(ids) for i, ids in created.items()} == dict.fromkeys(range(5), 1), "no item started twice"
    for index, ids in created.items():
        assert accepted_starts(runwatch_emulator, ids[0]) == 1, index
    runs = retried.xcom(task_id, "runs")
    assert [r["run_id"] for r in runs] == [created[i][0] for i in range(5)]
    answers = retried.xcom(task_id)
    assert all(f"{task_id} {i}" in answers[i] for i in range(5)), answers
    if HAS_TASK_STATE_STORE:
        assert "Reattaching to the batch of an earlier try: 2 succeeded (not run again)" in retried.output


def test_a_retry_starts_only_the_failed_item_again(retried: DagResult, runwatch_emulator: EmulatorServer) -> None:
    assert retried.states["retry_failed_item"] == "failed"
    assert retried.tries["retry_failed_item"] == 2
    created = runs_of(runwatch_emulator, "retry_failed_item")
    assert {i: len(ids) for i, ids in created.items()} == {0: 1, 1: 2, 2: 1}
    assert len(set(created[1])) == 2, "the failed item's second session has a fresh derived id"


# -- kill and timeout ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def killed(dag_runner: Callable[..., DagResult]) -> DagResult:
    outcome = dag_runner("runwatch_test_batch_kill", timeout=300)
    outcome.output = plain(outcome.output)
    return outcome


@pytest.mark.parametrize("mode", ["deferred", "blocking"])
def test_a_timeout_cancels_every_session_still_going(
    killed: DagResult, runwatch_emulator: EmulatorServer, mode: str
) -> None:
    task_id = f"kill_{mode}"
    assert killed.states[task_id] == "failed", killed.output[-3000:]
    created = runs_of(runwatch_emulator, task_id)
    assert sorted(created) == [0, 1, 2]
    for ids in created.values():
        session_id = ids[0]
        assert [c["status"] for c in cancel_requests(runwatch_emulator, session_id)] == [200], session_id
        assert runwatch_emulator.run(session_id)["cancel_requested_at"] is not None
    runs: list[dict[str, Any]] = killed.xcom(task_id, "runs")
    assert {r["state"] for r in runs} == {"timeout"}
