"""Drills against a real deployment, every run kind side by side in one DAG run (``dags/e2e_drills.py``):

(a) ``kill -9`` the triggerer while tasks are deferred, start a new one: every task completes with its own answer
    and no run is started twice;
(b) mark deferred tasks failed through the REST API: the emulator records the cancel of the kinds that can be
    cancelled, the others log one warning naming the run; a blocking task marked failed (Gumloop session and
    flow) is cancelled by the operator's ``on_kill``;
(c) deadlines across the outage: a deadline that passed while no triggerer ran fails on pickup, a later one is met
    at its original time, for every trigger class.

Every assertion reads recorded facts: the REST API (states, XComs, task logs) and the emulator's request log.

Timeline (one DAG run, ~75 s; written to test-artifacts/e2e-drill-timeline.json): all 18 tasks start and
defer; once the old triggerer has polled each run it is killed with ``kill -9``; it stays down until every
``deadline_in_downtime__*`` deadline has passed (and at least 20 s); a new triggerer starts; the deadline tasks
fail (at pickup, and at ``deadline_after_restart__puffle``'s deadline); then the ``mark__*`` tasks, still deferred
on the new triggerer, and the blocking tasks are marked failed, and the run ends.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from tests.deployment import ARTIFACTS, SECRET_KEY, Deployment
from tests.e2e.dags.e2e_drills import DEADLINE_AFTER_RESTART, DEADLINE_IN_DOWNTIME, SUBJECTS, SURVIVE_SECONDS

pytestmark = pytest.mark.e2e

DAG_ID = "e2e_drills"
KINDS = list(SUBJECTS)
#: The kinds whose vendor has a cancel call, and that call's path at the emulator.
CANCELLABLE = {"gumloop_session": "/api/v1/sessions/{run_id}/cancel", "gumloop_flow": "/api/v1/kill_pipeline"}
NOT_CANCELLABLE = [k for k in KINDS if k not in CANCELLABLE]
SURVIVORS = {f"survive__{k}": k for k in KINDS}
IN_DOWNTIME = {f"deadline_in_downtime__{k}": k for k in KINDS}
AFTER_RESTART = {"deadline_after_restart__puffle": "puffle"}
MARKED = {f"mark__{k}": k for k in KINDS}
BLOCKING = {f"mark_blocking__{k}": k for k in CANCELLABLE}
TASKS = {**SURVIVORS, **IN_DOWNTIME, **AFTER_RESTART, **MARKED, **BLOCKING}
#: The triggerer is down at least this long, longer than the slack the deadline bounds below allow.
MIN_DOWNTIME = 20.0
FINISHED = {"success", "failed", "upstream_failed", "skipped", "removed"}


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass
class Drill:
    dag_run_id: str
    ids: dict[str, str]  # task id -> vendor run id
    started: dict[str, float]  # task id -> when the emulator got the start call
    killed_at: float
    restarted_at: float
    #: The new triggerer's first poll of any deferred run: when it had booted and adopted the triggers.
    pickup_at: float
    marked_at: float
    state: str
    tis: dict[str, dict[str, Any]]


def _wait_until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not after {timeout}s: {what}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def drill(deployment: Deployment) -> Drill:
    emu = deployment.emulator
    dag_run_id = deployment.trigger(DAG_ID)
    deferred = [t for t in TASKS if t not in BLOCKING]
    deployment.wait_for_tasks(DAG_ID, dag_run_id, "deferred", deferred, timeout=120)
    deployment.wait_for_tasks(DAG_ID, dag_run_id, "running", list(BLOCKING), timeout=60)
    ids = {t: deployment.xcom(DAG_ID, dag_run_id, t, "run_id") for t in TASKS}
    started = {t: deployment.starts_of(kind, ids[t])[0]["ts"] for t, kind in TASKS.items()}
    # Every run is watched (a status poll reached the emulator) before the triggerer dies.
    _wait_until(
        "every run polled by the first triggerer",
        lambda: all(emu.requests(method="GET", run_id=i) for i in ids.values()),
        timeout=60,
    )
    killed_at = time.time()
    # Preconditions of a meaningful drill (a slow start-up would break them, not a bug in the provider).
    assert all(killed_at < started[t] + SURVIVE_SECONDS - 1 for t in SURVIVORS), "survivors ended before the kill"
    assert all(killed_at < started[t] + DEADLINE_IN_DOWNTIME - 2 for t in IN_DOWNTIME), "deferred too late"
    deployment.kill9("triggerer")

    last_deadline = max(started[t] + DEADLINE_IN_DOWNTIME for t in IN_DOWNTIME)
    time.sleep(max(killed_at + MIN_DOWNTIME, last_deadline + 2) - time.time())
    restarted_at = time.time()
    after_deadline = min(started[t] + DEADLINE_AFTER_RESTART for t in AFTER_RESTART)
    # The new triggerer boots and takes over in ~20 s: it must be polling that run before its deadline (asserted
    # by the test of that task).
    assert restarted_at < after_deadline - 15, "restart too late for the deadline after the restart"
    deployment.start_triggerer()

    # The timed part ends when every deadline task has ended; only then does the user step in, so that the
    # marking (database writes, cancels, killing the blocking task) cannot delay what the deadline tests time.
    timed = [*IN_DOWNTIME, *AFTER_RESTART]
    _wait_until(
        "every deadline task has ended",
        lambda: all(
            ti["state"] in FINISHED for t, ti in deployment.task_instances(DAG_ID, dag_run_id).items() if t in timed
        ),
        timeout=120,
    )
    # (b) the new triggerer has re-created and polled the mark__* runs (the blocking one polls on its worker):
    # the user marks them failed.
    _wait_until(
        "the new triggerer polls the runs to mark",
        lambda: all(
            any(p["ts"] > restarted_at for p in emu.requests(method="GET", run_id=ids[t])) for t in [*MARKED, *BLOCKING]
        ),
        timeout=90,
    )
    marked_at = time.time()
    for task_id in [*MARKED, *BLOCKING]:
        deployment.set_state(DAG_ID, dag_run_id, task_id, "failed")
    result = deployment.wait_for(DAG_ID, dag_run_id, timeout=150)
    deferred = [i for t, i in ids.items() if t not in BLOCKING]  # the blocking task polls from its worker
    polls_after = [p["ts"] for i in deferred for p in emu.requests(method="GET", run_id=i)]
    done = Drill(
        dag_run_id=dag_run_id,
        ids=ids,
        started=started,
        killed_at=killed_at,
        restarted_at=restarted_at,
        pickup_at=min((ts for ts in polls_after if ts > restarted_at), default=restarted_at),
        marked_at=marked_at,
        state=result["state"],
        tis=deployment.task_instances(DAG_ID, dag_run_id),
    )
    _write_timeline(deployment, done)
    return done


def _write_timeline(deployment: Deployment, drill: Drill) -> None:
    """test-artifacts/e2e-drill-timeline.json: when each thing happened, in seconds after the first start."""
    t0 = min(drill.started.values())
    tasks = {
        t: {
            "started": round(drill.started[t] - t0, 1),
            "ended": round(_ts(ti["end_date"]) - t0, 1) if ti.get("end_date") else None,
            "state": ti["state"],
        }
        for t, ti in sorted(drill.tis.items())
    }
    events = {
        "killed": drill.killed_at,
        "restarted": drill.restarted_at,
        "first_poll_of_new_triggerer": drill.pickup_at,
        "marked": drill.marked_at,
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "e2e-drill-timeline.json").write_text(
        json.dumps({"t0": t0, **{k: round(v - t0, 1) for k, v in events.items()}, "tasks": tasks}, indent=1)
    )


# -- (a) kill -9 of the triggerer -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_kill9_each_run_completes_with_its_own_answer(deployment: Deployment, drill: Drill, kind: str) -> None:
    task_id = f"survive__{kind}"
    assert drill.tis[task_id]["state"] == "success", deployment.tail()
    run_id = drill.ids[task_id]
    answer = deployment.xcom(DAG_ID, drill.dag_run_id, task_id)
    # The emulator's own answer for this run, read from its vendor API, and it is about this task's input.
    assert answer == deployment.vendor_answer(kind, run_id)
    assert f"Review {SUBJECTS[kind]}" in str(answer), answer
    assert "[emulator" not in str(answer)
    summary = deployment.xcom(DAG_ID, drill.dag_run_id, task_id, "run")
    assert summary["run_id"] == run_id and summary["state"] == "succeeded"
    # It ended while no triggerer ran, and the new triggerer is the one that saw it finished.
    polls = deployment.emulator.requests(method="GET", run_id=run_id)
    assert any(p["ts"] < drill.killed_at for p in polls) and any(p["ts"] > drill.restarted_at for p in polls)


def test_kill9_no_run_started_twice(deployment: Deployment, drill: Drill) -> None:
    starts = {t: len(deployment.starts_of(kind, drill.ids[t])) for t, kind in TASKS.items()}
    assert starts == dict.fromkeys(TASKS, 1)
    assert len(set(drill.ids.values())) == len(TASKS)


# -- (c) deadlines across the outage ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_deadline_that_passed_during_the_outage_fails_on_pickup(
    deployment: Deployment, drill: Drill, kind: str
) -> None:
    task_id = f"deadline_in_downtime__{kind}"
    ti = drill.tis[task_id]
    assert ti["state"] == "failed"
    deadline = drill.started[task_id] + DEADLINE_IN_DOWNTIME
    assert drill.killed_at < deadline < drill.restarted_at
    ended = _ts(ti["end_date"])
    # No triggerer, no failure: it fails once the new one has picked the triggers up, within 20 s of that
    # pickup (the resume on a worker: ~5-12 s on 2 busy cores) -- not a full `timeout` (30 s) after it. Counted
    # from the pickup, not the restart: the triggerer's boot (~20 s here: imports, then its first heartbeat
    # waits for the trigger runner's start) is Airflow's and varies with the load.
    assert drill.restarted_at < ended < drill.pickup_at + 20, (ended - drill.restarted_at, ended - drill.pickup_at)
    log = deployment.task_log(DAG_ID, drill.dag_run_id, task_id)
    assert f"{drill.ids[task_id]} did not finish before the deadline" in log, log[-3000:]
    run_id = drill.ids[task_id]
    if kind in CANCELLABLE:
        # A deadline cancels the run where the vendor can.
        path = CANCELLABLE[kind].format(run_id=run_id)
        assert [r["status"] for r in deployment.emulator.requests(method="POST", path_prefix=path, run_id=run_id)] == [
            200
        ]
        assert "Cancel requested." in log
    else:
        assert "cannot cancel it: it may still finish" in log


def test_deadline_after_the_restart_is_not_pushed_back(deployment: Deployment, drill: Drill) -> None:
    (task_id,) = AFTER_RESTART
    ti = drill.tis[task_id]
    assert ti["state"] == "failed"
    deadline = drill.started[task_id] + DEADLINE_AFTER_RESTART
    downtime = drill.restarted_at - drill.killed_at
    assert downtime >= MIN_DOWNTIME
    # The new triggerer was already watching it before the deadline (so a late pickup cannot explain the end) ...
    polls = deployment.emulator.requests(method="GET", run_id=drill.ids[task_id])
    assert any(drill.restarted_at < p["ts"] < deadline for p in polls)
    # ... and it ended at the original deadline plus at most the resume on a worker (15 s: a worker start and a
    # DAG parse on 2 busy cores; 10.9 s seen), under the downtime (>= 20 s) it would be late by if the deadline
    # moved.
    ended = _ts(ti["end_date"])
    assert deadline <= ended < deadline + MIN_DOWNTIME - 5, (ended - deadline, downtime)
    log = deployment.task_log(DAG_ID, drill.dag_run_id, task_id)
    assert "did not finish before the deadline" in log, log[-3000:]


# -- (b) mark failed --------------------------------------------------------------------------------------------
def test_marked_tasks_end_failed(drill: Drill) -> None:
    assert {t: drill.tis[t]["state"] for t in [*MARKED, *BLOCKING]} == dict.fromkeys([*MARKED, *BLOCKING], "failed")
    assert drill.state == "failed"


@pytest.mark.parametrize("kind", list(CANCELLABLE))
def test_mark_failed_while_deferred_cancels_the_run(deployment: Deployment, drill: Drill, kind: str) -> None:
    run_id = drill.ids[f"mark__{kind}"]
    path = CANCELLABLE[kind].format(run_id=run_id)
    emu = deployment.emulator
    cancels: list[dict[str, Any]] = []

    def cancelled() -> bool:
        cancels[:] = emu.requests(method="POST", path_prefix=path, run_id=run_id)
        return bool(cancels)

    _wait_until(f"a cancel of {run_id}: {emu.requests(run_id=run_id)}", cancelled, timeout=30)
    assert [c["status"] for c in cancels] == [200], cancels
    # The new triggerer's trigger.on_kill sent it, after the user's action.
    assert cancels[0]["ts"] > drill.marked_at


@pytest.mark.parametrize("kind", NOT_CANCELLABLE)
def test_mark_failed_while_deferred_warns_when_the_vendor_cannot_cancel(
    deployment: Deployment, drill: Drill, kind: str
) -> None:
    task_id = f"mark__{kind}"
    run_id = drill.ids[task_id]
    # Nothing but the start and status polls reached the vendor.
    assert [r["path"] for r in deployment.emulator.requests(method="POST", run_id=run_id)] == [
        r["path"] for r in deployment.starts_of(kind, run_id)
    ]
    warning = re.compile(rf"^.* warning .*has no API to cancel.*{re.escape(run_id)}.*$", re.MULTILINE)
    log = ""

    def warned() -> bool:
        nonlocal log
        log = deployment.task_log(DAG_ID, drill.dag_run_id, task_id)
        return bool(warning.search(log))

    _wait_until(f"the no-cancel warning in the log of {task_id}", warned, timeout=30)
    assert len(warning.findall(log)) == 1, log[-3000:]  # one clear line, naming the run
    assert SECRET_KEY not in log


@pytest.mark.parametrize("task_id", list(BLOCKING))
def test_mark_failed_while_blocking_cancels_through_operator_on_kill(
    deployment: Deployment, drill: Drill, task_id: str
) -> None:
    run_id = drill.ids[task_id]
    emu = deployment.emulator
    path = CANCELLABLE[BLOCKING[task_id]].format(run_id=run_id)
    cancels: list[dict[str, Any]] = []

    def cancelled() -> bool:
        cancels[:] = emu.requests(method="POST", path_prefix=path, run_id=run_id)
        return bool(cancels)

    _wait_until(f"a cancel of {run_id}", cancelled, timeout=30)
    assert [c["status"] for c in cancels] == [200] and cancels[0]["ts"] > drill.marked_at
    # It waited on the worker (no trigger), and the worker's on_kill sent the cancel.
    log = deployment.task_log(DAG_ID, drill.dag_run_id, task_id)
    assert "Deferring" not in log
    assert re.search(rf"Asked Gumloop to cancel \w[\w ]* {re.escape(run_id)}", log), log[-3000:]
    assert SECRET_KEY not in log


def test_no_secret_in_any_component_log(deployment: Deployment, drill: Drill) -> None:
    for name in ("triggerer", "scheduler", "dag-processor", "api-server"):
        assert SECRET_KEY not in deployment.logs(name), name
