"""Event-driven scheduling through the real deployment: the triggerer runs GumloopSessionEventTrigger in an
AssetWatcher, sessions started "from outside" (planned in the emulator) finish on their own, and the
scheduler starts DAG runs from the asset events: every finished session lands in exactly one DAG run.

Asset-triggered DAG runs come from the scheduler's job scheduling, which the suite switches off (only
REST-triggered runs): for this test the scheduler is restarted with it on, the cron examples paused so they
add no runs of their own, and both are put back afterwards.

Airflow 3.3.2 can leave an asset event unconsumed until the next one arrives (apache/airflow#54659: two events
in quick succession share one queue row, the run's window ends at the first, the row is deleted; seen here on
PostgreSQL, two sessions finishing within a millisecond). What the provider controls is asserted as such: one
asset event per finished session, with its ids. A session whose event is stranded that way must arrive with the
next event: the test ends with one more session, finishing alone seconds after the others, whose event must
bring any held-back ones along (the figures count them). When the triggerer's trigger runner stalls (10-30 s seen
on 2 busy cores) the watcher reports everything that finished meanwhile in one burst, the closing session's
event among them, and the race can strand that one too (CI, stop 16: three events fired within 12 ms after a
16 s stall, all three stranded): while some are stranded and no DAG run has started for 20 s, one more closing
session follows, at most ``MAX_CLOSINGS`` in all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deployment import ARTIFACTS, Deployment
from tests.e2e.conftest import EXAMPLE_DAG_IDS

# Back in ./dev test: it missed its 150 s bound once in a full-suite run (stop 12) without saying why; a timeout
# now names the sessions that never reached a DAG run, their emulator states and every run's state.
pytestmark = [pytest.mark.e2e]

DAG_ID = "e2e_gumloop_events"
AGENT = "agt_e2e_events"
FINISHED = 6
#: Closing sessions at most (see the module docstring): each finishes alone and flushes what the race held back.
MAX_CLOSINGS = 3
#: Seconds without a new DAG run, every event in, before another closing session is started.
STRANDED_AFTER = 20.0


@pytest.fixture
def job_scheduling(deployment: Deployment, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """The scheduler with job scheduling on and the cron examples paused, for the length of one test.

    Examples are unpaused only when the suite's happy runs were started: those are waited for first, so that
    pausing their DAGs stalls nothing; alone, this test finds them paused and skips that wait."""
    examples = [dag_id for dag_id in EXAMPLE_DAG_IDS if dag_id != "example_gumloop_session_events"]
    with deployment.api() as c:
        others = [dag_id for dag_id in examples if not c.get(f"/dags/{dag_id}").json()["is_paused"]]
    if others:
        request.getfixturevalue("happy_runs")
    with deployment.api() as c:
        for dag_id in others:
            c.patch(f"/dags/{dag_id}", json={"is_paused": True}).raise_for_status()
        c.patch(f"/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
    deployment.stop("scheduler")
    deployment.env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "True"
    deployment.start("scheduler", "scheduler")
    try:
        yield deployment
    finally:
        with deployment.api() as c:
            c.patch(f"/dags/{DAG_ID}", json={"is_paused": True})
        deployment.stop("scheduler")
        deployment.env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"
        deployment.start("scheduler", "scheduler")
        with deployment.api() as c:
            for dag_id in others:
                c.patch(f"/dags/{dag_id}", json={"is_paused": False})


def _runs(dep: Deployment) -> list[dict[str, Any]]:
    """The DAG's runs; a finished one with the sessions its task read from ``triggering_asset_events`` (and
    fetched the answers of) as ``rows``, and their ids as ``session_ids``."""
    runs = dep.read(f"/dags/{DAG_ID}/dagRuns", {"limit": 100})["dag_runs"]
    for run in runs:
        run["rows"] = dep.xcom(DAG_ID, run["dag_run_id"], "answers") if run["state"] == "success" else []
        run["session_ids"] = [row["session_id"] for row in run["rows"]]
    return list(runs)


def _asset_events(dep: Deployment) -> dict[str, int]:
    """Session id -> how many asset events the watcher's payloads carry for it, sessions of :data:`AGENT` only
    (Airflow's record of what the triggerer fired)."""
    counts: dict[str, int] = {}
    for event in dep.read("/assets/events", {"limit": 200})["asset_events"]:
        payload = (event.get("extra") or {}).get("payload") or {}
        if payload.get("agent_id") == AGENT and payload.get("session_id"):
            counts[payload["session_id"]] = counts.get(payload["session_id"], 0) + 1
    return counts


def _emulated_state(emu: Any, session_id: str) -> str:
    try:
        return str(emu.run(session_id).get("state"))
    except KeyError:  # planned, not yet appeared
        return "not started"


def _wait(what: str, check: Any, timeout: float, explain: Any = None) -> None:
    """Until ``check()``; on timeout, fail with ``what`` and what ``explain()`` says of the state reached."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} after {timeout}s" + (f": {explain()}" if explain else ""))
        time.sleep(1)


@pytest.mark.timeout(900)  # alone, the deployment's start counts too
def test_every_finished_session_starts_exactly_one_dag_run_with_its_id(job_scheduling: Deployment) -> None:
    dep, emu = job_scheduling, job_scheduling.emulator
    started = time.monotonic()
    listing = f"/api/v1/agents/{AGENT}/sessions"
    _wait("the triggerer never polled the watcher's agent", lambda: emu.requests(path_prefix=listing), 240)
    baseline_seq = max(r["seq"] for r in emu.requests(path_prefix=listing))
    _wait(
        "no poll after the baseline",
        lambda: any(r["seq"] > baseline_seq for r in emu.requests(path_prefix=listing)),
        30,
    )
    # Started from "Slack", outside Airflow: 6 that complete and 2 that fail, over ~10 s; then, alone, a closing
    # one whose event brings along any that Airflow held back (apache/airflow#54659, see the module docstring).
    done = emu.schedule_sessions(AGENT, FINISHED, every=1.5, scenario="seconds=2", type="slack")
    failed = emu.schedule_sessions(AGENT, 2, every=1.5, scenario="seconds=2 outcome=failed", type="slack")
    closings = emu.schedule_sessions(AGENT, 1, start_in=FINISHED * 1.5 + 6, scenario="seconds=2", type="slack")
    done.extend(closings)

    def all_in() -> bool:
        runs = _runs(dep)
        seen = {sid for run in runs for sid in run["session_ids"]}
        return set(done) <= seen and all(run["state"] in ("success", "failed") for run in runs)

    def where_it_stands() -> str:
        """Which sessions never reached a DAG run, and each run's state: a miss and a slow scheduler differ."""
        runs = _runs(dep)
        seen = {sid for run in runs for sid in run["session_ids"]}
        emulated = {sid: _emulated_state(emu, sid) for sid in done}
        events = dep.logs("triggerer").count("session events of agent")
        return (
            f"missing {sorted(set(done) - seen)} (emulator states {emulated}); DAG runs "
            f"{[(run['dag_run_id'], run['state'], run['session_ids']) for run in runs]}; "
            f"{events} watcher lines in the triggerer log; {dep.tail()}"
        )

    _wait(
        "not every finished session became one asset event",
        lambda: set(done) <= set(_asset_events(dep)),
        150,
        where_it_stands,
    )
    deadline = time.monotonic() + 90 + STRANDED_AFTER * (MAX_CLOSINGS - 1)
    last_change, last_runs = time.monotonic(), len(_runs(dep))
    while not all_in():
        assert time.monotonic() < deadline, (
            f"not every finished session reached a finished DAG run: {where_it_stands()}"
        )
        if len(runs_now := _runs(dep)) != last_runs:
            last_change, last_runs = time.monotonic(), len(runs_now)
        elif (
            time.monotonic() - last_change > STRANDED_AFTER
            and len(closings) < MAX_CLOSINGS
            and set(done) <= set(_asset_events(dep))
        ):
            # Every event is in, yet some sit in no DAG run: stranded by the race, the last closing one too.
            more = emu.schedule_sessions(AGENT, 1, scenario="seconds=2", type="slack")
            closings.extend(more)
            done.extend(more)
            last_change = time.monotonic()
        time.sleep(1)
    time.sleep(6)  # three more polls: nothing fires again
    assert _asset_events(dep) == dict.fromkeys(done, 1), "one asset event per finished session"
    runs = _runs(dep)
    ids = [sid for run in runs for sid in run["session_ids"]]
    duplicates = len(ids) - len(set(ids))
    misses = len(set(done) - set(ids))
    # Finished seconds before a closing session, yet consumed by its DAG run: held back by Airflow's race.
    held = [
        sid
        for run in runs
        if set(closings) & set(run["session_ids"])
        for sid in run["session_ids"]
        if sid not in closings
    ]
    figures = (
        f"e2e events: {len(done)} sessions completed, {len(failed)} failed (not watched), {len(runs)} DAG runs "
        f"started, {len(ids)} session events, {duplicates} duplicates, {misses} misses, "
        f"{len(held)} held back until a closing session's event (apache/airflow#54659), "
        f"{len(closings)} closing sessions, "
        f"{time.monotonic() - started:.0f}s"
    )
    print(figures)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "e2e-events.txt").write_text(figures + "\n")  # what the closing note quotes
    assert duplicates == 0 and misses == 0, runs
    assert sorted(ids) == sorted(done), (ids, done)
    assert all(run["state"] == "success" and run["run_type"] == "asset_triggered" for run in runs), runs
    assert all(row["answer"] for run in runs for row in run["rows"]), runs  # each answer fetched with the hook
    assert f"session events of agent {AGENT} stopped" not in dep.logs("triggerer")
