"""(a) Triggerer failover on the distributed deployment, every run kind.

The first triggerer (capacity 10) holds all ten deferred tasks of ``dist_failover``; the second one joins, and
the five tasks of ``dist_steady`` deferred next go to it (the first is full): the trigger table shows the spread.
No run ends by itself before the kill (the first triggerer stays full). Then ``kill -9`` of the first: the second
adopts its triggers once the dead one's heartbeat is older than the health-check threshold (5 s here); the
emulator then completes the survivors' runs, and each completes with its own answer, no run is started twice, and
a deadline set before the kill fails its task at the original time (start + timeout), not later.

The adoption time (kill -> every orphaned trigger assigned to the survivor, read from the trigger table) is
written to test-artifacts/distributed-failover.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from tests.deployment import ARTIFACTS
from tests.distributed.conftest import FAILOVER_CAPACITY, TRIGGERER_CAPACITY, TRIGGERERS, Cluster
from tests.e2e.dags.e2e_drills import SUBJECTS

# The first test's setup includes the deployment's start-up (2-3 minutes on 2 busy cores).
pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

KINDS = list(SUBJECTS)
#: Kept in step with tests/distributed/dags/dist_drills.py.
DEADLINE_SECONDS = 75
FAILOVER = {**{f"survive__{k}": k for k in KINDS}, **{f"deadline__{k}": k for k in KINDS}}
STEADY = {f"steady__{k}": k for k in KINDS}
HEALTH_CHECK_THRESHOLD = 5.0
#: How long after the threshold the survivor may take to notice (its loop runs about every second; 2 busy cores).
ADOPTION_SLACK = 10.0
#: How late a deadline may fail its task after the deadline (the trigger's check, event, resume on a worker).
DEADLINE_SLACK = 20.0


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _wait_until(what: str, check: Any, timeout: float, every: float = 0.5, cluster: Cluster | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            state = _tables(cluster) if cluster is not None else ""
            raise AssertionError(f"not after {timeout}s: {what}\n{state}")
        time.sleep(every)
    return value


def _tables(cluster: Cluster) -> str:
    """The trigger and triggerer-job tables, for a failure message."""
    triggers = cluster.sql("SELECT id, triggerer_id, queue, classpath FROM trigger ORDER BY id")
    jobs = cluster.sql("SELECT id, state, latest_heartbeat FROM job WHERE job_type = 'TriggererJob' ORDER BY id")
    return f"triggers (id, triggerer, queue, class): {triggers}\ntriggerer jobs: {jobs}"


def _running_triggerer_jobs(cluster: Cluster) -> set[int]:
    rows = cluster.sql("SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running'")
    return {int(str(r[0])) for r in rows}


def _assignments(cluster: Cluster, trigger_ids: list[int]) -> dict[int, int | None]:
    rows = cluster.sql("SELECT id, triggerer_id FROM trigger WHERE id = ANY(%s)", trigger_ids)
    return {int(str(i)): (None if t is None else int(str(t))) for i, t in rows}


def _trigger_ids(cluster: Cluster, dag_id: str, run_id: str) -> dict[str, int]:
    rows = cluster.sql(
        "SELECT task_id, trigger_id FROM task_instance WHERE dag_id = %s AND run_id = %s AND trigger_id IS NOT NULL",
        dag_id,
        run_id,
    )
    return {str(t): int(str(i)) for t, i in rows}


def _held(cluster: Cluster, dag_id: str, run_id: str, tasks: dict[str, str], job: int) -> dict[str, int] | None:
    """The trigger ids of the run's tasks once every one of them is deferred and assigned to ``job``."""
    ids = _trigger_ids(cluster, dag_id, run_id)
    if len(ids) == len(tasks) and set(_assignments(cluster, list(ids.values())).values()) == {job}:
        return ids
    return None


@dataclass
class Failover:
    runs: dict[str, str]  # dag id -> dag run id
    ids: dict[str, str]  # task id -> vendor run id
    started: dict[str, float]
    held_by_a: dict[str, int]
    held_by_b: dict[str, int]
    killed_at: float
    adoption_seconds: float
    tis: dict[str, dict[str, Any]]
    states: dict[str, str]


@pytest.fixture(scope="module")
def failover(cluster: Cluster) -> Failover:
    dep = cluster.dep
    emu = dep.emulator
    (job_a,) = _running_triggerer_jobs(cluster)
    runs = {"dist_failover": dep.trigger("dist_failover")}
    dep.wait_for_tasks("dist_failover", runs["dist_failover"], "deferred", list(FAILOVER), timeout=180)
    held_by_a = _wait_until(
        "the first triggerer holds all ten triggers",
        lambda: _held(cluster, "dist_failover", runs["dist_failover"], FAILOVER, job_a),
        timeout=60,
        cluster=cluster,
    )
    cluster.start_triggerer(TRIGGERERS[1], capacity=TRIGGERER_CAPACITY)
    runs["dist_steady"] = dep.trigger("dist_steady")
    (job_b,) = _wait_until(
        "the second triggerer runs", lambda: _running_triggerer_jobs(cluster) - {job_a} or None, timeout=90
    )
    dep.wait_for_tasks("dist_steady", runs["dist_steady"], "deferred", list(STEADY), timeout=180)
    held_by_b = _wait_until(
        "the second triggerer holds the steady triggers",
        lambda: _held(cluster, "dist_steady", runs["dist_steady"], STEADY, job_b),
        timeout=60,
        cluster=cluster,
    )
    ids = {
        t: dep.xcom(d, runs[d], t, "run_id")
        for d, tasks in (("dist_failover", FAILOVER), ("dist_steady", STEADY))
        for t in tasks
    }
    kinds = {**FAILOVER, **STEADY}
    started = {t: dep.starts_of(kinds[t], ids[t])[0]["ts"] for t in ids}
    _wait_until(
        "every run polled by its triggerer", lambda: all(emu.requests(method="GET", run_id=i) for i in ids.values()), 60
    )
    killed_at = time.time()
    dep.kill9(TRIGGERERS[0])
    orphans = list(held_by_a.values())
    _wait_until(
        "the second triggerer adopts the first one's triggers",
        lambda: (
            set(_assignments(cluster, orphans).values()) <= {job_b, None}
            and all(v == job_b for v in _assignments(cluster, orphans).values() if v is not None)
            and len([v for v in _assignments(cluster, orphans).values() if v == job_b])
            == len([i for i in orphans if i in _assignments(cluster, orphans)])
        ),
        timeout=HEALTH_CHECK_THRESHOLD + ADOPTION_SLACK + 30,
        every=0.2,
        cluster=cluster,
    )
    adoption = time.time() - killed_at
    # The vendor finishes the runs only now: the survivor's triggers must see them end.
    for task_id in [*(t for t in FAILOVER if t.startswith("survive")), *STEADY]:
        emu.complete(ids[task_id])
    states = {d: dep.wait_for(d, r, timeout=240)["state"] for d, r in runs.items()}
    tis = {
        **dep.task_instances("dist_failover", runs["dist_failover"]),
        **dep.task_instances("dist_steady", runs["dist_steady"]),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "distributed-failover.json").write_text(
        json.dumps({"adoption_seconds": round(adoption, 2), "threshold_seconds": HEALTH_CHECK_THRESHOLD}, indent=1)
    )
    print(f"failover: the second triggerer adopted {len(orphans)} triggers {adoption:.1f}s after the kill -9")
    # The next drills run with both triggerers at full capacity.
    cluster.start_triggerer(TRIGGERERS[0], capacity=TRIGGERER_CAPACITY)
    return Failover(runs, ids, started, held_by_a, held_by_b, killed_at, adoption, tis, states)


def test_deferred_tasks_were_spread_over_both_triggerers(failover: Failover) -> None:
    assert len(failover.held_by_a) == FAILOVER_CAPACITY and len(failover.held_by_b) == len(STEADY)


def test_survivor_adopts_within_the_health_check_threshold(failover: Failover) -> None:
    assert failover.adoption_seconds <= HEALTH_CHECK_THRESHOLD + ADOPTION_SLACK


@pytest.mark.parametrize("task_id", [*(t for t in FAILOVER if t.startswith("survive")), *STEADY])
def test_every_run_completes_with_its_own_answer(cluster: Cluster, failover: Failover, task_id: str) -> None:
    dep = cluster.dep
    kind = {**FAILOVER, **STEADY}[task_id]
    dag_id = "dist_failover" if task_id in FAILOVER else "dist_steady"
    assert failover.tis[task_id]["state"] == "success", dep.explain(dag_id, failover.runs[dag_id])
    answer = dep.xcom(dag_id, failover.runs[dag_id], task_id)
    assert answer == dep.vendor_answer(kind, failover.ids[task_id])
    assert SUBJECTS[kind] in str(answer)


def test_no_run_started_twice(cluster: Cluster, failover: Failover) -> None:
    kinds = {**FAILOVER, **STEADY}
    assert {t: len(cluster.dep.starts_of(kinds[t], i)) for t, i in failover.ids.items()} == dict.fromkeys(kinds, 1)
    assert len(set(failover.ids.values())) == len(kinds)


@pytest.mark.parametrize("kind", KINDS)
def test_deadline_set_before_the_kill_is_kept(failover: Failover, kind: str) -> None:
    task_id = f"deadline__{kind}"
    ti = failover.tis[task_id]
    assert ti["state"] == "failed"
    deadline = failover.started[task_id] + DEADLINE_SECONDS
    assert failover.killed_at < deadline, "the deadline passed before the kill: the drill did not test adoption"
    ended = _ts(ti["end_date"])
    # Counted from the original start: not before it, and not pushed back by the failover.
    assert deadline <= ended <= deadline + DEADLINE_SLACK, ended - failover.started[task_id]
