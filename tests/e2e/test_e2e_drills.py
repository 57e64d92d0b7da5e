"""Drills against a real deployment: mark a deferred task failed, kill -9 the triggerer, deadlines across
a triggerer outage. Every assertion reads the REST API or the emulator's request log."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from tests.e2e.conftest import SECRET_KEY, Deployment

pytestmark = pytest.mark.e2e


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- (b) mark failed while deferred ----------------------------------------------------------------------------
MARK = "e2e_mark_failed"


@pytest.fixture(scope="module")
def marked(deployment: Deployment) -> dict[str, Any]:
    dag_run_id = deployment.trigger(MARK)
    tasks = ["gumloop_session", "puffle_chat"]
    deployment.wait_for_tasks(MARK, dag_run_id, "deferred", tasks, timeout=90)
    ids = {t: deployment.xcom(MARK, dag_run_id, t, "run_id") for t in tasks}
    # Let the triggerer pick the triggers up (it polls every second) before the user steps in.
    emu = deployment.emulator
    until = time.monotonic() + 30
    while not all(emu.requests(method="GET", run_id=i) for i in ids.values()) and time.monotonic() < until:
        time.sleep(0.5)
    with deployment.api() as c:
        for task_id in tasks:
            r = c.patch(f"/dags/{MARK}/dagRuns/{dag_run_id}/taskInstances/{task_id}", json={"new_state": "failed"})
            assert r.status_code == 200, r.text
    deployment.wait_for(MARK, dag_run_id, timeout=60)
    return {"dag_run_id": dag_run_id, "ids": ids}


def test_mark_failed_cancels_a_gumloop_session(deployment: Deployment, marked: dict[str, Any]) -> None:
    session_id = marked["ids"]["gumloop_session"]
    emu = deployment.emulator
    until = time.monotonic() + 30
    while not (cancels := emu.requests(method="POST", path_prefix=f"/api/v1/sessions/{session_id}/cancel")):
        assert time.monotonic() < until, f"no cancel of {session_id}: {emu.requests(run_id=session_id)}"
        time.sleep(0.5)
    assert len(cancels) == 1 and cancels[0]["status"] < 300, cancels
    states = {t: ti["state"] for t, ti in deployment.task_instances(MARK, marked["dag_run_id"]).items()}
    assert states == {"gumloop_session": "failed", "puffle_chat": "failed"}


def test_mark_failed_on_puffle_says_it_cannot_cancel(deployment: Deployment, marked: dict[str, Any]) -> None:
    run_id = marked["ids"]["puffle_chat"]
    # Puffle has no cancel endpoint: nothing but the start and status polls reached it, and the log says so.
    assert {r["method"] for r in deployment.emulator.requests(run_id=run_id)} == {"POST", "GET"}
    assert len(deployment.emulator.requests(method="POST", run_id=run_id)) == 1
    log = deployment.task_log(MARK, marked["dag_run_id"], "puffle_chat")
    said = f"Puffle has no API to cancel a chat run: chat run {run_id} keeps running on the vendor's side"
    until = time.monotonic() + 20
    while said not in log and time.monotonic() < until:
        time.sleep(1)
        log = deployment.task_log(MARK, marked["dag_run_id"], "puffle_chat")
    assert said in log, log[-3000:]
    assert SECRET_KEY not in log


# -- (a) + (c) kill -9 the triggerer while tasks are deferred ----------------------------------------------------
DRILL = "e2e_triggerer_restart"
FINISHING = ["puffle_alpha", "puffle_beta", "puffle_gamma", "gumloop_session"]
DEADLINES = {"deadline_in_downtime": 35.0, "deadline_after_restart": 65.0}  # the DAG's `timeout`s


@pytest.fixture(scope="module")
def drill(deployment: Deployment) -> dict[str, Any]:
    dag_run_id = deployment.trigger(DRILL)
    tasks = FINISHING + list(DEADLINES)
    deployment.wait_for_tasks(DRILL, dag_run_id, "deferred", tasks, timeout=120)
    ids = {t: deployment.xcom(DRILL, dag_run_id, t, "run_id") for t in tasks}
    emu = deployment.emulator
    # The operator computes its deadline right after the start call: start time + timeout.
    deadlines = {t: emu.requests(method="POST", run_id=ids[t])[0]["ts"] + s for t, s in DEADLINES.items()}
    until = time.monotonic() + 30
    while not all(emu.requests(method="GET", run_id=i) for i in ids.values()) and time.monotonic() < until:
        time.sleep(0.5)
    killed_at = time.time()
    assert killed_at < deadlines["deadline_in_downtime"] - 2, "tasks deferred too late for the drill"
    deployment.kill9("triggerer")
    # Down until the first deadline has passed, and at least 15 s.
    time.sleep(max(15.0, deadlines["deadline_in_downtime"] + 2 - time.time()))
    restarted_at = time.time()
    assert restarted_at < deadlines["deadline_after_restart"] - 15, "restart too late for the second deadline"
    deployment.start_triggerer()
    result = deployment.wait_for(DRILL, dag_run_id, timeout=150)
    return {
        "dag_run_id": dag_run_id,
        "ids": ids,
        "deadlines": deadlines,
        "killed_at": killed_at,
        "restarted_at": restarted_at,
        "state": result["state"],
        "tis": deployment.task_instances(DRILL, dag_run_id),
    }


def test_every_task_completes_with_its_own_answer_after_kill9(deployment: Deployment, drill: dict[str, Any]) -> None:
    states = {t: drill["tis"][t]["state"] for t in FINISHING}
    assert states == dict.fromkeys(FINISHING, "success"), deployment.tail()
    for name in ("alpha", "beta", "gamma"):
        answer = deployment.xcom(DRILL, drill["dag_run_id"], f"puffle_{name}")
        assert f"Summarise {name.title()} Corp" in answer, answer
    session_answer = deployment.xcom(DRILL, drill["dag_run_id"], "gumloop_session")
    assert isinstance(session_answer, str) and session_answer
    run = deployment.xcom(DRILL, drill["dag_run_id"], "gumloop_session", "run")
    assert run["run_id"] == drill["ids"]["gumloop_session"] and run["state"] == "succeeded"


def test_no_run_started_twice(deployment: Deployment, drill: dict[str, Any]) -> None:
    emu = deployment.emulator
    for task_id, run_id in drill["ids"].items():
        starts = [r for r in emu.requests(method="POST", run_id=run_id) if "cancel" not in r["path"]]
        assert len(starts) == 1, (task_id, starts)
    # ... and the waiting resumed after the restart: each run was polled by the new triggerer too.
    for task_id in FINISHING:
        polls = emu.requests(method="GET", run_id=drill["ids"][task_id])
        assert any(p["ts"] > drill["restarted_at"] for p in polls), task_id


def test_deadline_that_passed_during_the_outage_fails_on_pickup(deployment: Deployment, drill: dict[str, Any]) -> None:
    ti = drill["tis"]["deadline_in_downtime"]
    assert ti["state"] == "failed"
    ended = _ts(ti["end_date"])
    # It cannot fail before a triggerer exists; it must fail as soon as the new one picks it up (within 30 s of
    # the restart: triggerer boot ~5-10 s on a loaded 2-core box, re-assignment after the 5 s health threshold,
    # resume on a worker ~3-5 s) -- not a full `timeout` (35 s) after the restart.
    assert drill["restarted_at"] < ended < drill["restarted_at"] + 30, ended - drill["restarted_at"]
    log = deployment.task_log(DRILL, drill["dag_run_id"], "deadline_in_downtime")
    assert "did not finish before the deadline" in log, log[-3000:]


def test_deadline_after_the_restart_is_not_pushed_back(deployment: Deployment, drill: dict[str, Any]) -> None:
    ti = drill["tis"]["deadline_after_restart"]
    assert ti["state"] == "failed"
    deadline = drill["deadlines"]["deadline_after_restart"]
    ended = _ts(ti["end_date"])
    downtime = drill["restarted_at"] - drill["killed_at"]
    # Ends after the original deadline, plus at most the resume on a worker (10 s: worker start and DAG parse
    # on 2 busy cores), which is well under the downtime (>= 15 s) it would be late by if the deadline moved.
    assert deadline <= ended < deadline + 10, (ended - deadline, downtime)
    assert downtime > 10
    log = deployment.task_log(DRILL, drill["dag_run_id"], "deadline_after_restart")
    assert "did not finish before the deadline" in log, log[-3000:]
