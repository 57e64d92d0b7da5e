"""Gumloop approvals answered in Airflow, through the real deployment (DAG tests/e2e/dags/e2e_gumloop_approvals.py).

One DAG run, five drills side by side: a human accepts in the UI (headless chromium clicks through Required
Actions) and answers the next round through the REST API; a rejection that fails the session; a timeout that
takes the default; a clear (a new try) while a request is open; a mark-failed while a request is open.

How it fits in the suite's wall time (tests/e2e/conftest.py orders the tests): the run is triggered by the
first test of the e2e session (this module is collected first), whose tasks start and defer before the happy
example runs are triggered. The REST drills are then driven by :class:`Drills`, one background thread each,
while the rest of the suite runs. The browser round (``approvals_page``) comes right after the browser module,
a few seconds of clicking, its session resuming during the next module. The tests that read the outcomes
request ``approvals_done`` and run after every other e2e test, by when the drills have long ended.

The guard against Airflow 3.3.2's stale-executor-event race (apache/airflow#67287: a trigger that fires before
the scheduler has read the worker's exit of the deferral lets that stale "success" fail the task): no answer
is given before the scheduler has taken the exit of every deferral of the task's current try (:func:`_settled`,
from the task log and the scheduler's log), and every session takes :data:`~tests.e2e.dags.e2e_gumloop_approvals.
POLLS` polls to pause or resume, so no session trigger fires within seconds of its deferral.

Screenshots: ``test-artifacts/e2e-approvals/`` (see :data:`SHOTS`); the drills' timeline (when each request
was open, when it was answered, how long the scheduler took to read the deferral's exit):
``test-artifacts/e2e-approvals/timeline.json``.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest

import tests.e2e.test_e2e_browser as browser_module
from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.deployment import ARTIFACTS, DEFAULT_SCENARIO, SECRET_KEY, Deployment
from tests.e2e.test_e2e_browser import page  # noqa: F401  (the browser fixture, reused by approvals_page)

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

DAG_ID = "e2e_gumloop_approvals"
CONN_ID = "gumloop_approvals"  # the DAG's
SHOTS = ARTIFACTS / "e2e-approvals"
#: How long a drill may wait for one request to open (a pause takes POLLS polls, plus task starts under load).
OPEN_TIMEOUT = 180


class Stopped(Exception):
    """The session is over (teardown): a drill thread still waiting gives up."""


@dataclass
class Drills:
    """The approvals DAG run and the drills driven in the background, one thread each.

    Each thread's outcome (its facts, or the exception it raised) is read by the test of that drill."""

    dep: Deployment
    #: The sessions' Gumloop (connection ``gumloop_approvals``), not the deployment's default emulator.
    emulator: EmulatorServer
    run_id: str
    stop: threading.Event = field(default_factory=threading.Event)
    threads: dict[str, threading.Thread] = field(default_factory=dict)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)

    def start(self, task_id: str, drill: Callable[[Drills, str], dict[str, Any]]) -> None:
        def body() -> None:
            try:
                self.facts[task_id] = drill(self, task_id)
            except Stopped:
                self.errors[task_id] = "stopped at teardown"
            except BaseException:
                self.errors[task_id] = traceback.format_exc()

        thread = threading.Thread(target=body, name=f"approvals-{task_id}", daemon=True)
        self.threads[task_id] = thread
        thread.start()

    def outcome(self, task_id: str, timeout: float = 240) -> dict[str, Any]:
        """What the drill of ``task_id`` saw, once it is done; its failure, raised here."""
        thread = self.threads[task_id]
        thread.join(timeout)
        assert not thread.is_alive(), f"the {task_id} drill still runs after {timeout}s more"
        assert task_id not in self.errors, f"the {task_id} drill failed:\n{self.errors[task_id]}"
        return self.facts[task_id]

    def note(self, task_id: str, what: str, **extra: Any) -> None:
        at = round(time.monotonic() - self.started_at, 1)
        self.timeline.append({"t": at, "task": task_id, "what": what, **extra})

    def until(self, what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not seen after {timeout}s")
            if self.stop.wait(0.5):
                raise Stopped(what)


@pytest.fixture(scope="session")
def approvals(deployment: Deployment) -> Iterator[Drills]:
    """Trigger the approvals DAG run and start the REST drills; the browser round is the UI test's.

    Returns once the five tasks have started their sessions and deferred: the happy example runs (the UI test's
    ``page``) are triggered after that, so the two bursts of task starts come one after the other."""
    emulator = EmulatorServer(mode="process", scenario=DEFAULT_SCENARIO)
    deployment.on_teardown(emulator.stop)  # after the Airflow components, also on SIGTERM
    emulator.start()
    conn = json.loads(emulator.connection_env(api_key=SECRET_KEY)["AIRFLOW_CONN_GUMLOOP_DEFAULT"])
    with deployment.api() as c:
        r = c.post("/connections", json={"connection_id": CONN_ID, **conn})
    assert r.status_code == 201, r.text
    drills = Drills(deployment, emulator, deployment.trigger(DAG_ID))
    drills.until(
        "every approvals task deferred on its session",
        lambda: all(ti["state"] == "deferred" for ti in deployment.task_instances(DAG_ID, drills.run_id).values()),
        timeout=120,
    )
    drills.note("*", "every task deferred")
    drills.start("ui_then_api", _second_round_through_the_api)
    drills.start("rejected", _reject)
    drills.start("retry_open", _clear_while_open)
    drills.start("mark_failed", _mark_failed_while_open)
    yield drills
    drills.stop.set()
    for thread in drills.threads.values():
        thread.join(10)
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "timeline.json").write_text(json.dumps(drills.timeline, indent=1))


@pytest.fixture(scope="module")
def approvals_page(deployment: Deployment, request: pytest.FixtureRequest) -> Page:
    """The browser module's chromium tab (its ``page`` fixture), for the test that runs after that module: the
    fixture starts by clearing the browser module's screenshot folder, pointed at a scratch folder meanwhile."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(browser_module, "SHOTS", deployment.home / "browser-shots-scratch")
        tab: Page = request.getfixturevalue("page")
    return tab


@pytest.fixture(scope="session")
def approvals_done(approvals: Drills) -> Drills:
    """For the tests that read the drills' outcomes: they run last (tests/e2e/conftest.py), after the drills."""
    return approvals


def _hitl_url(run_id: str, task_id: str) -> str:
    return f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"


def _exits_read(dep: Deployment, run_id: str, task_id: str, try_number: int) -> int:
    """How many of this try's worker exits the scheduler has taken from its executor (one "Received executor
    event" line each). Each is handled in the same pass: compared with the task's state, or dropped when another
    transaction holds the row (then no "TaskInstance Finished" line follows, seen under load); either way it can
    no longer meet a resumed task."""
    key = f"TaskInstanceKey(dag_id='{DAG_ID}', task_id='{task_id}', run_id='{run_id}', try_number={try_number},"
    return sum(1 for line in dep.logs("scheduler").splitlines() if "Received executor event" in line and key in line)


def _settled(dep: Deployment, run_id: str, task_id: str, try_number: int) -> bool:
    """Has the scheduler taken the worker's exit of every deferral of this try? Only then may a trigger fire
    without the stale "success" of a deferral failing the task (apache/airflow#67287)."""
    deferrals = dep.task_log(DAG_ID, run_id, task_id, try_number=try_number).count("Pausing task as DEFERRED")
    return deferrals > 0 and _exits_read(dep, run_id, task_id, try_number) >= deferrals


def _open_request(drills: Drills, task_id: str, *, round_subject: str) -> dict[str, Any]:
    """Wait until ``task_id`` waits (deferred) on an unanswered request whose deferral the scheduler has read;
    returns the request."""
    dep, run_id = drills.dep, drills.run_id
    seen: dict[str, Any] = {}

    def look() -> dict[str, Any] | None:
        with dep.api() as c:
            r = c.get(_hitl_url(run_id, task_id))
        ti = dep.task_instances(DAG_ID, run_id)[task_id]
        seen.update(request=r.status_code, state=ti["state"], try_number=ti["try_number"])
        if r.status_code != 200:
            return None
        detail: dict[str, Any] = r.json()
        seen.update(response_received=detail["response_received"])
        if detail["response_received"] or ti["state"] != "deferred":
            return None
        # Airflow keeps the subject the request was first given, in every round and try (one per task instance).
        assert detail["subject"] == round_subject, detail
        if "open_at" not in seen:
            seen["open_at"] = time.monotonic()
            drills.note(task_id, "request open", try_number=ti["try_number"])
        if not _settled(dep, run_id, task_id, ti["try_number"]):
            return None
        return detail

    try:
        detail: dict[str, Any] = drills.until(f"an open request of {task_id}", look, timeout=OPEN_TIMEOUT)
    except AssertionError as exc:
        log = dep.task_log(DAG_ID, run_id, task_id, try_number=max(1, seen.get("try_number", 1)))
        raise AssertionError(f"{exc}; last seen {seen}; task log:\n{log[-4000:]}") from None
    drills.note(task_id, "deferral read by the scheduler", after_s=round(time.monotonic() - seen["open_at"], 1))
    return detail


def _answer(drills: Drills, task_id: str, option: str) -> dict[str, Any]:
    """What a user (or a script) does through the REST API."""
    with drills.dep.api() as c:
        r = c.patch(_hitl_url(drills.run_id, task_id), json={"chosen_options": [option]})
    assert r.status_code == 200, r.text
    drills.note(task_id, f"answered {option} through the REST API")
    body: dict[str, Any] = r.json()
    return body


def _xcom_or_none(dep: Deployment, run_id: str, task_id: str, key: str) -> Any:
    try:
        return dep.xcom(DAG_ID, run_id, task_id, key)
    except httpx.HTTPStatusError:
        return None


def _session_state(emulator: EmulatorServer, session_id: str) -> str:
    headers = {"Authorization": f"Bearer {SECRET_KEY}", "x-auth-key": "emulator-user"}
    r = httpx.get(f"{emulator.gumloop_url}/sessions/{session_id}", headers=headers, timeout=30)
    r.raise_for_status()
    return str(r.json()["session"]["state"])


# -- the drills (background threads) ---------------------------------------------------------------------------
def _second_round_through_the_api(drills: Drills, task_id: str) -> dict[str, Any]:
    """After the UI test's round 1, the session pauses again (update_crm): answered through the REST API."""
    drills.until(
        "round 1 recorded",
        lambda: _xcom_or_none(drills.dep, drills.run_id, task_id, "approvals"),
        timeout=900,  # the UI test answers round 1, after the browser module
    )
    _open_request(drills, task_id, round_subject="Gumloop agent asks to run send_email")
    _answer(drills, task_id, "Accept")
    return {}


def _reject(drills: Drills, task_id: str) -> dict[str, Any]:
    request = _open_request(drills, task_id, round_subject="Gumloop agent asks to run wire_money")
    _answer(drills, task_id, "Reject")
    return {"request": request}


def _clear_while_open(drills: Drills, task_id: str) -> dict[str, Any]:
    dep, run_id = drills.dep, drills.run_id
    first = _open_request(drills, task_id, round_subject="Gumloop agent asks to run send_email")
    session_id = dep.xcom(DAG_ID, run_id, task_id, "run_id")
    with dep.api() as c:
        r = c.post(
            f"/dags/{DAG_ID}/clearTaskInstances",
            json={"dag_run_id": run_id, "task_ids": [task_id], "dry_run": False, "only_failed": False},
        )
    assert r.status_code == 200, r.text
    drills.note(task_id, "cleared")
    drills.until("the second try", lambda: dep.task_instances(DAG_ID, run_id)[task_id]["try_number"] >= 2)
    again = _open_request(drills, task_id, round_subject="Gumloop agent asks to run send_email")
    _answer(drills, task_id, "Accept")
    return {"first": first, "again": again, "session_id": session_id}


def _mark_failed_while_open(drills: Drills, task_id: str) -> dict[str, Any]:
    dep, run_id = drills.dep, drills.run_id
    _open_request(drills, task_id, round_subject="Gumloop agent asks to run send_email")
    session_id = dep.xcom(DAG_ID, run_id, task_id, "run_id")
    # The cancel is the trigger's on_kill, which Airflow calls for a running trigger only: a task marked failed
    # before the triggerer has started the wait (it can be silent for ~30 s under this suite's load) ends with
    # no trigger to tell, and the session stays paused. A user marks it failed later than that.
    trigger_id = dep.task_instances(DAG_ID, run_id)[task_id]["trigger"]["id"]
    drills.until(
        "the triggerer running the wait for the answer",
        lambda: f"(ID {trigger_id}) starting" in dep.task_log(DAG_ID, run_id, task_id),
        timeout=120,
    )
    drills.note(task_id, "the wait runs in the triggerer")
    dep.set_state(DAG_ID, run_id, task_id, "failed")
    drills.note(task_id, "marked failed")
    return {"session_id": session_id}


# -- the start (the session's first test) and the browser round (after the browser module) -----------------------
def test_the_drills_start_with_the_e2e_session(approvals: Drills) -> None:
    """Five sessions started, one each, while their tasks wait deferred; nothing answered yet."""
    dep, run_id = approvals.dep, approvals.run_id
    tis = dep.task_instances(DAG_ID, run_id)
    assert sorted(tis) == ["mark_failed", "rejected", "retry_open", "timeout_default", "ui_then_api"]
    for task_id in tis:
        session_id = dep.xcom(DAG_ID, run_id, task_id, "run_id")
        assert len(dep.starts_of("gumloop_session", session_id, approvals.emulator)) == 1, task_id


def _shot(page: Page, name: str) -> None:  # noqa: F811
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def test_a_human_accepts_round_one_in_the_ui(approvals: Drills, approvals_page: Page) -> None:
    """Round 1 of ``ui_then_api``, clicked through the task's Required Action tab (round 2 is a REST drill)."""
    task_id, dep, tab = "ui_then_api", approvals.dep, approvals_page
    _open_request(approvals, task_id, round_subject="Gumloop agent asks to run send_email")
    tab.goto(f"{dep.api_url}/dags/{DAG_ID}/runs/{approvals.run_id}/tasks/{task_id}/required_actions")
    tab.get_by_text("Gumloop agent asks to run send_email").first.wait_for()
    accept = tab.get_by_role("button", name="Accept", exact=True)
    accept.wait_for()
    tab.get_by_text("send_email").first.wait_for()
    _shot(tab, "approval-request.png")
    # The request alone, small (docs/_static/gumloop-approval-request.png): the task page's Required Action tab.
    tab.screenshot(
        path=str(SHOTS / "approval-request-panel.png"), clip={"x": 340, "y": 240, "width": 1050, "height": 360}
    )
    accept.click()
    tab.get_by_text("response successful").first.wait_for()
    approvals.note(task_id, "accepted in the UI")
    _shot(tab, "approval-accepted.png")


# -- the outcomes (after the rest of the suite) ---------------------------------------------------------------------
def test_ui_then_api_completes_with_both_rounds_on_record(approvals_done: Drills) -> None:
    task_id, dep, run_id = "ui_then_api", approvals_done.dep, approvals_done.run_id
    approvals_done.outcome(task_id)
    dep.wait_for_tasks(DAG_ID, run_id, "success", [task_id], timeout=150)
    rounds = dep.xcom(DAG_ID, run_id, task_id, "approvals")
    assert [[a["tool"] for a in r["answer"]] for r in rounds] == [["send_email"], ["update_crm"]]
    assert all(r["answered_by"]["name"] and not r["timed_out"] for r in rounds)
    assert [a["action"] for r in rounds for a in r["answer"]] == ["accept", "accept"]
    session_id = dep.xcom(DAG_ID, run_id, task_id, "run_id")
    emulator = approvals_done.emulator
    assert dep.xcom(DAG_ID, run_id, task_id) == dep.vendor_answer("gumloop_session", session_id, emulator)
    posts = emulator.requests(method="POST", path_prefix=f"/api/v1/sessions/{session_id}/approvals")
    assert [p["status"] for p in posts] == [200, 200]
    log = dep.task_log(DAG_ID, run_id, task_id)
    assert "Approval round 1: accepted send_email (" in log and "Approval round 2: accepted update_crm (" in log


def test_a_rejection_fails_the_task_naming_the_tool_call(approvals_done: Drills) -> None:
    task_id, dep, run_id = "rejected", approvals_done.dep, approvals_done.run_id
    request = approvals_done.outcome(task_id)["request"]
    assert request["options"] == ["Accept", "Reject"] and request["defaults"] == ["Reject"]
    assert "**wire_money**" in request["body"]
    dep.wait_for_tasks(DAG_ID, run_id, "failed", [task_id], timeout=150)
    rounds = dep.xcom(DAG_ID, run_id, task_id, "approvals")
    assert [a["action"] for a in rounds[0]["answer"]] == ["reject"] and rounds[0]["answered_by"]["name"]
    action_id = rounds[0]["answer"][0]["action_request_id"]
    log = dep.task_log(DAG_ID, run_id, task_id)
    who = rounds[0]["answered_by"]["name"]
    assert f"Approval round 1: rejected wire_money ({action_id}) by {who}" in log, log[-3000:]
    assert f"failed after the tool call wire_money ({action_id}) was rejected in Airflow" in log, log[-3000:]
    assert SECRET_KEY not in log


def test_a_timeout_takes_the_default(approvals_done: Drills) -> None:
    dep, run_id = approvals_done.dep, approvals_done.run_id
    dep.wait_for_tasks(DAG_ID, run_id, "success", ["timeout_default"], timeout=180)
    (record,) = dep.xcom(DAG_ID, run_id, "timeout_default", "approvals")
    assert record["timed_out"] and record["answered_by"] is None
    assert record["answer"][0]["tool"] == "post_slack" and record["answer"][0]["action"] == "reject"
    assert dep.xcom(DAG_ID, run_id, "timeout_default") == "Understood: I did not run post_slack."
    log = dep.task_log(DAG_ID, run_id, "timeout_default")
    assert "Approval round 1: rejected post_slack (" in log and "by the timeout default" in log, log[-3000:]


def test_a_retry_while_the_request_is_open_reattaches_to_both(approvals_done: Drills) -> None:
    task_id, dep, run_id = "retry_open", approvals_done.dep, approvals_done.run_id
    facts = approvals_done.outcome(task_id)
    first, again, session_id = facts["first"], facts["again"], facts["session_id"]
    assert again["task_instance"]["try_number"] == 2
    assert (again["created_at"], again["body"]) == (first["created_at"], first["body"]), "the same request"
    dep.wait_for_tasks(DAG_ID, run_id, "success", [task_id], timeout=150)
    assert dep.xcom(DAG_ID, run_id, task_id, "run_id") == session_id
    assert len(dep.starts_of("gumloop_session", session_id, approvals_done.emulator)) == 1, "no second session"
    (record,) = dep.xcom(DAG_ID, run_id, task_id, "approvals")
    assert record["answer"][0]["action"] == "accept"
    log = dep.task_log(DAG_ID, run_id, task_id, try_number=2)
    assert f"Reattaching to Gumloop session {session_id} started by an earlier try (paused)" in log, log[-3000:]


def test_marking_the_task_failed_cancels_the_session(approvals_done: Drills) -> None:
    task_id, dep = "mark_failed", approvals_done.dep
    session_id = approvals_done.outcome(task_id)["session_id"]
    approvals_done.until(
        "the cancel at Gumloop",
        lambda: approvals_done.emulator.run(session_id)["cancel_requested_at"] is not None,
        timeout=60,
    )
    approvals_done.until(
        "the session to end", lambda: _session_state(approvals_done.emulator, session_id) == "failed", timeout=30
    )
    assert dep.wait_for_tasks(DAG_ID, approvals_done.run_id, "failed", [task_id])[task_id]["try_number"] == 1
    assert SECRET_KEY not in dep.logs("triggerer")


def test_no_task_was_failed_by_the_stale_executor_event(approvals_done: Drills) -> None:
    """The drills' guard held: the scheduler never read a deferral's exit after the task had moved on."""
    mismatches = [
        line
        for line in approvals_done.dep.logs("scheduler").splitlines()
        if "but the task instance's state" in line and DAG_ID in line
    ]
    assert not mismatches, mismatches
