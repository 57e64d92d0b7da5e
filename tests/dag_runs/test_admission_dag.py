"""Start admission through real Airflow (`airflow dags test`): mapped sessions on a Gumloop Free-plan key whose
five slots a thread keeps busy. A task's refused start defers on a timer and starts again in the same try; the
thread frees one slot when it sees a refusal and takes it back once the task's session started, so the next task
finds the plan full again. Every task succeeds with its own answer, try number 1, one accepted start each."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_runwatch.core.errors import RateLimitedError
from airflow_provider_runwatch.core.retry import NO_RETRY
from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.conftest import SECRET_KEY, DagResult
from tests.dag_files.runwatch_test_admission import ACCOUNTS
from tests.helpers import plain

pytestmark = pytest.mark.dag

DAG_ID = "runwatch_test_admission"
KEY = f"gl_free_{SECRET_KEY}_admission"
SESSIONS = "/api/v1/agents/agent_nightly/sessions"


def free_plan_env(emulator: EmulatorServer) -> dict[str, str]:
    conn = {"conn_type": "gumloop", "host": emulator.gumloop_url, "login": "emulator-user", "password": KEY}
    return {"AIRFLOW_CONN_GUMLOOP_DEFAULT": json.dumps(conn)}


class Neighbours:
    """The key's other sessions: five at first; one completed per refusal seen, one started again per start."""

    def __init__(self, emulator: EmulatorServer) -> None:
        from airflow_provider_runwatch.hooks.gumloop import GumloopHook

        self.emulator = emulator
        self.hook = GumloopHook(retry=NO_RETRY)
        self.busy: list[str] = []
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        for _ in range(5):
            self.start()

    def start(self) -> None:
        while not self.stop.is_set():
            try:
                self.busy.append(self.hook.create_session("agent_busy", "busy [emulator: polls=never]").session.id)
                return
            except RateLimitedError:  # the task's own session holds the slot until it ends
                time.sleep(0.05)

    def play(self) -> None:
        freed: set[str] = set()
        refilled: set[str] = set()
        try:
            while not self.stop.wait(0.05):
                for entry in self.emulator.requests(method="POST", path_prefix=SESSIONS):
                    run_id, status = entry["run_id"], entry["status"]
                    if status == 429 and run_id not in freed and self.busy:
                        freed.add(run_id)
                        self.emulator.complete(self.busy.pop(0))
                    elif status == 202 and run_id in freed and run_id not in refilled:
                        refilled.add(run_id)
                        self.start()
        except BaseException as exc:  # surfaced by the fixture
            self.errors.append(exc)

    def close(self) -> None:
        self.stop.set()
        for run_id in self.busy:
            self.emulator.complete(run_id)


@pytest.fixture(scope="module")
def result(
    dag_runner: Callable[..., DagResult], runwatch_emulator: EmulatorServer
) -> tuple[DagResult, list[dict[str, Any]]]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in free_plan_env(runwatch_emulator).items():
            patch.setenv(name, value)
        neighbours = Neighbours(runwatch_emulator)
    player = threading.Thread(target=neighbours.play, daemon=True)
    player.start()
    try:
        outcome = dag_runner(DAG_ID, extra_env=free_plan_env(runwatch_emulator), timeout=180)
    finally:
        neighbours.close()
        player.join(5)
    assert not neighbours.errors, neighbours.errors
    outcome.output = plain(outcome.output)
    return outcome, runwatch_emulator.requests(method="POST", path_prefix=SESSIONS)


def test_every_mapped_task_succeeds_in_its_first_try(result: tuple[DagResult, list[dict[str, Any]]]) -> None:
    dag_run, _ = result
    names = [f"review[{i}]" for i in range(len(ACCOUNTS))]
    assert dag_run.state == "success", dag_run.output[-3000:]
    assert {name: dag_run.states[name] for name in names} == dict.fromkeys(names, "success")
    assert {name: dag_run.tries[name] for name in names} == dict.fromkeys(names, 1), "a deferral is not a try"


def test_each_task_hands_on_its_own_answer(result: tuple[DagResult, list[dict[str, Any]]]) -> None:
    dag_run, _ = result
    for index, name in enumerate(ACCOUNTS):
        answer = dag_run.mapped[("review", index, "return_value")]
        assert name in answer and all(other not in answer for other in ACCOUNTS if other != name), answer


def test_refused_starts_waited_on_timers_and_each_task_started_once(
    result: tuple[DagResult, list[dict[str, Any]]],
) -> None:
    dag_run, starts = result
    accepted: dict[str, int] = {}
    refused = 0
    for entry in starts:
        if entry["status"] == 202:
            accepted[entry["run_id"]] = accepted.get(entry["run_id"], 0) + 1
        elif entry["status"] == 429:
            refused += 1
    assert sorted(accepted.values()) == [1] * len(ACCOUNTS), "exactly one accepted start per task"
    assert refused >= 1, "the plan was full when the tasks began"
    timer_lines = [line for line in dag_run.output.splitlines() if "deferring on a timer" in line]
    assert len(timer_lines) == refused, "each refusal deferred on one timer"
    assert all("Agent concurrency limit reached" in line for line in timer_lines)
    assert "DateTimeTrigger" in dag_run.output
