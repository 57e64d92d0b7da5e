"""(c) Worker loss between a run's start and the deferral, every run kind.

Only the first worker runs while ``dist_worker_loss`` starts: each task's first try starts its run, records it
(XCom and ``task_state_store``), writes which worker it is on and pauses before deferring. The second worker
joins, the first is killed with ``kill -9`` (the task processes die with it). The scheduler fails the silent
tries after ``task_instance_heartbeat_timeout`` (20 s here), the retries run on the second worker and must
reattach to the runs already started: exactly one start per task in the emulator's request log, each task
succeeds with its own run's answer on try 2.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.distributed.conftest import WORKERS, Cluster
from tests.e2e.dags.e2e_drills import SUBJECTS

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

DAG_ID = "dist_worker_loss"
TASKS = {f"lost__{k}": k for k in SUBJECTS}


def _wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not after {timeout}s: {what}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def worker_loss(cluster: Cluster) -> dict[str, object]:
    dep = cluster.dep
    first, second = WORKERS
    dep.stop(second)  # idle: every try of the drill must land on the first worker
    markers = Path(dep.home) / "markers"
    run = dep.trigger(DAG_ID)
    _wait_until(
        "every first try has started its run and paused",
        lambda: all((markers / t).exists() for t in TASKS),
        timeout=240,
    )
    on = {t: (markers / t).read_text() for t in TASKS}
    ids = {t: dep.xcom(DAG_ID, run, t, "run_id") for t in TASKS}
    starts_before = {t: len(dep.starts_of(k, ids[t])) for t, k in TASKS.items()}
    cluster.start_worker(second)
    _wait_until("the second worker is ready", lambda: " ready." in dep.log_path(second).read_text(), timeout=120)
    dep.kill9(first)
    dep.procs.pop(first)
    dep.wait_for_tasks(DAG_ID, run, "deferred", list(TASKS), timeout=300)
    for run_id in ids.values():
        dep.emulator.complete(run_id)
    state = dep.wait_for(DAG_ID, run, timeout=180)["state"]
    tis = dep.task_instances(DAG_ID, run)
    cluster.start_worker(first)  # the next drills have both workers again
    return {"run": run, "on": on, "ids": ids, "starts_before": starts_before, "state": state, "tis": tis}


def test_first_tries_ran_on_the_killed_worker(worker_loss: dict[str, object]) -> None:
    assert worker_loss["on"] == dict.fromkeys(TASKS, WORKERS[0])
    assert worker_loss["starts_before"] == dict.fromkeys(TASKS, 1)


@pytest.mark.parametrize("task_id", list(TASKS))
def test_retry_on_the_other_worker_reattaches(cluster: Cluster, worker_loss: dict[str, object], task_id: str) -> None:
    dep = cluster.dep
    kind = TASKS[task_id]
    ids: dict[str, str] = worker_loss["ids"]  # type: ignore[assignment]
    tis: dict[str, dict[str, object]] = worker_loss["tis"]  # type: ignore[assignment]
    run: str = worker_loss["run"]  # type: ignore[assignment]
    assert tis[task_id]["state"] == "success", dep.explain(DAG_ID, run)
    assert tis[task_id]["try_number"] == 2
    assert len(dep.starts_of(kind, ids[task_id])) == 1, "the retry started a second run"
    assert dep.xcom(DAG_ID, run, task_id, "run_id") == ids[task_id]
    answer = dep.xcom(DAG_ID, run, task_id)
    assert answer == dep.vendor_answer(kind, ids[task_id]) and SUBJECTS[kind] in str(answer)
    assert "Reattaching to" in dep.task_log(DAG_ID, run, task_id, try_number=2)
