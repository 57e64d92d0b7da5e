"""A batch with refused starts completes through real Airflow (`airflow dags test`, triggers in line), with the
guard against apache/airflow#67287 at its default: no deferral hands the task back sooner than
``admission_sleep_below`` (10 s) after it deferred.

Why that guard (the trigger's ``earliest``) and not a later first poll: a trigger firing within seconds of its
deferral can lose the scheduler's race with the deferring try's stale executor event, and the task is failed
from outside the provider. Whatever would make a batch trigger fire early (a refusal's short ``Retry-After``,
runs that end within seconds, a trigger that cannot even connect) ends in its one event, so holding that event
covers every cause at once, while the trigger keeps polling meanwhile and hands back every run that ended. A
floor on the first poll would still fire early on a failure before any poll, and would collect nothing
meanwhile. ``dags test`` has no executor, so it cannot show the race itself; it shows that a batch with refusals
completes under the guard, every item started once, and that every resume came at least the floor after the
deferral that preceded it (the emulator's log: the refused start, then the next start attempt).

DAG in tests/dag_files/runwatch_test_batch_refusals.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.operators.batch import RunBatchOperator
from tests.conftest import SECRET_KEY, DagResult
from tests.helpers import plain

pytestmark = [pytest.mark.dag, pytest.mark.timeout(300)]

FLOOR = RunBatchOperator.admission_sleep_below


@pytest.fixture(scope="module")
def puffle_holds_two(runwatch_emulator: EmulatorServer) -> Iterator[str]:
    """The emulator's Puffle concurrency set to 2 unfinished runs per key for this module (then restored); the key
    of the DAG's connection, its own so no other test's runs count against it."""
    limits = f"{runwatch_emulator.url}/_emulator/puffle/limits"
    with httpx.Client(trust_env=False, timeout=10) as http:
        before = http.get(limits).json()
        http.put(limits, json={"concurrency": 2}).raise_for_status()
        try:
            yield f"pk_live_refusals_{SECRET_KEY}_{time.time_ns()}"
        finally:
            http.put(limits, json=before)


@pytest.fixture(scope="module")
def result(dag_runner: Callable[..., DagResult], runwatch_emulator: EmulatorServer, puffle_holds_two: str) -> DagResult:
    conn = {"conn_type": "puffle", "host": runwatch_emulator.puffle_url, "password": puffle_holds_two}
    env = {"AIRFLOW_CONN_PUFFLE_REFUSALS": json.dumps(conn)}
    outcome = dag_runner("runwatch_test_batch_refusals", extra_env=env, timeout=240)
    outcome.output = plain(outcome.output)
    return outcome


def chat_starts(result: DagResult, emulator: EmulatorServer) -> list[dict[str, Any]]:
    """The DAG's start attempts, oldest first: the emulator's chat POSTs from its first accepted start to its last
    (nothing else runs meanwhile; a refused one has no run id, so it is found by when it came)."""
    ids = {r["run_id"] for r in result.xcom("refused", "runs")}
    posts = [e for e in emulator.requests(vendor="puffle", method="POST") if e["path"].endswith("/chat")]
    accepted = [e["ts"] for e in posts if e["run_id"] in ids]
    return sorted((e for e in posts if min(accepted) <= e["ts"] <= max(accepted)), key=lambda e: e["ts"])


def test_a_batch_with_refusals_completes_each_item_started_once(
    result: DagResult, runwatch_emulator: EmulatorServer
) -> None:
    assert result.states == {"refused": "success"}, result.output[-4000:]
    assert result.tries["refused"] == 1, "refusals and deferrals never cost a try"
    answers = result.xcom("refused")
    assert [f"refused {i}" in answer for i, answer in enumerate(answers)] == [True] * 4, answers
    runs = result.xcom("refused", "runs")
    assert [r["state"] for r in runs] == ["succeeded"] * 4
    accepted = [e["run_id"] for e in chat_starts(result, runwatch_emulator) if e["status"] < 300]
    assert sorted(accepted) == sorted(r["run_id"] for r in runs), "each item started once"


def test_no_resume_came_sooner_than_the_floor_after_its_deferral(
    result: DagResult, runwatch_emulator: EmulatorServer
) -> None:
    """The refusal asked for about a second and both running chats ended within two, yet the next start attempt
    came only once the floor had passed: the trigger held its event until ``earliest``."""
    asked = [float(s) for s in re.findall(r"HTTP 429: [^;]*; Retry-After ([\d.]+) s", result.output)]
    assert asked and max(asked) < FLOOR, "a refusal asked for less than the floor"
    starts = chat_starts(result, runwatch_emulator)
    refused = [i for i, e in enumerate(starts) if e["status"] == 429]
    assert refused, "4 at once on a key that may hold 2: a start must have been refused"
    for i in refused:
        assert i + 1 < len(starts), "a refused start is always followed by another attempt"
        gap = starts[i + 1]["ts"] - starts[i]["ts"]
        assert gap >= FLOOR, f"a start {gap:.1f} s after a refusal: the task was handed back before the floor"
