"""The emulator's autonomous Gumloop sessions: planned through the control API, they appear over time as if
someone had started them from Slack or the web app, and finish on their own; listing filters see them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer

KEY = "pk_live_autonomous_test_key"
HEADERS = {"Authorization": f"Bearer {KEY}", "x-auth-key": "usr_test"}


@pytest.fixture
def emu(emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    emulator.reset()
    yield emulator
    emulator.reset()


def listed(http: httpx.Client, agent: str, **params: str) -> list[dict[str, object]]:
    r = http.get(f"/api/v1/agents/{agent}/sessions", params={"page_size": "100", **params}, headers=HEADERS)
    r.raise_for_status()
    return [s for s in r.json()["sessions"] if str(s["id"]).startswith("sess_auto_")]


def test_planned_sessions_appear_over_time_and_finish_on_their_own(emu: EmulatorServer, http: httpx.Client) -> None:
    ids = emu.schedule_sessions("agt_auto", 3, every=0.4, scenario="seconds=0.5", type="slack", trigger_id="trg_1")
    assert len(set(ids)) == 3
    first = listed(http, "agt_auto")
    assert [s["id"] for s in first] == ids[:1] and first[0]["state"] == "processing"
    assert first[0]["type"] == "slack" and first[0]["trigger_id"] == "trg_1"
    time.sleep(1.4)
    now = {s["id"]: s["state"] for s in listed(http, "agt_auto")}
    assert set(now) == set(ids)
    assert now[ids[0]] == now[ids[1]] == "completed"
    # the state and trigger filters of the list see them like any session
    assert {s["id"] for s in listed(http, "agt_auto", state="completed", trigger_id="trg_1")} >= set(ids[:2])
    assert listed(http, "agt_auto", state="failed") == []
    assert listed(http, "agt_auto", type="web") == []
    # readable by id, with the answer, once finished
    time.sleep(0.5)
    body = http.get(f"/api/v1/sessions/{ids[2]}", headers=HEADERS).json()["session"]
    assert body["state"] == "completed" and body["messages"][-1]["role"] == "assistant"


def test_outcome_created_at_and_owner(emu: EmulatorServer, http: httpx.Client) -> None:
    before = time.time()
    [sid] = emu.schedule_sessions("agt_fail", scenario="seconds=0 outcome=failed", api_key="pk_live_someone_else")
    assert listed(http, "agt_fail") == []  # another key's sessions are not ours
    [mine] = emu.schedule_sessions("agt_fail", start_in=0, scenario="seconds=0 outcome=failed")
    [item] = listed(http, "agt_fail", state="failed")
    assert item["id"] == mine != sid
    # created_at is when it was planned to appear, not when it was first listed
    assert (
        before - 1 <= datetime.fromisoformat(str(item["created_at"]).replace("Z", "+00:00")).timestamp() <= time.time()
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"count": 0}, "count must be an integer from 1 to 1000"),
        ({"every": -1}, "every must be a number of seconds >= 0"),
        ({"scenario": "pols=1"}, "unknown scenario key 'pols'"),
        ({"type": 3}, "must be strings"),
    ],
)
def test_bad_plans_are_refused_with_the_reason(
    emu: EmulatorServer, http: httpx.Client, body: dict[str, object], error: str
) -> None:
    r = http.post("/_emulator/gumloop/agents/agt/sessions", json=body)
    assert r.status_code == 400 and error in r.json()["error"]
