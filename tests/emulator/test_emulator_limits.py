"""Plan limits per key, the fast clock and the 429 counters of the emulator, over real HTTP.

Nothing here asserts wall time against a tight bound: a run's end is checked on the emulator's own reported
state before and after, and waits are deadlines far longer than the clock needs (at speed 1 they would fail).
"""

from __future__ import annotations

import calendar
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_runwatch.emulator.cli import main
from airflow_provider_runwatch.emulator.server import EmulatorServer

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

V1 = "/api/v1"
PUFFLE_KEY = "pk_live_emulator_limits_key"
GM_KEY = "gm_live_emulator_limits_key"


@pytest.fixture
def clean(emulator: EmulatorServer) -> EmulatorServer:
    emulator.reset()
    return emulator


def _gl_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "x-auth-key": "usr_limits"}


def _session(http: httpx.Client, key: str, text: str = "x [emulator: polls=never]", **body: Any) -> httpx.Response:
    return http.post(f"{V1}/agents/agent_1/sessions", json={"input": text, **body}, headers=_gl_headers(key))


def _interaction(http: httpx.Client, key: str, text: str = "x [emulator: polls=never]") -> httpx.Response:
    body = {"gummie_id": "gummie_1", "message": text, "user_id": "usr_limits"}
    return http.post(f"{V1}/start_agent", json=body, headers=_gl_headers(key))


def _read(http: httpx.Client, key: str, session_id: str) -> dict[str, Any]:
    response = http.get(f"{V1}/sessions/{session_id}", headers=_gl_headers(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _until(check: Callable[[], bool], deadline: float = 20.0) -> bool:
    """Poll ``check`` every 0.1 s until it holds or ``deadline`` real seconds passed."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return check()


# -- Gumloop plans ------------------------------------------------------------------------------------------------


def test_gumloop_plan_limits_default_and_override(clean: EmulatorServer, http: httpx.Client) -> None:
    assert http.get("/_emulator/gumloop/limits").json() == {"free": 5, "pro": 25, "enterprise": 100}
    assert clean.set_limits("gumloop", pro=3) == {"free": 5, "pro": 3, "enterprise": 100}
    bad: object
    for bad in ({"team": 3}, {"pro": 0}, {"pro": "3"}, []):
        response = http.put("/_emulator/gumloop/limits", json=bad)
        assert response.status_code == 400 and "emulator:" in response.json()["error"]
    clean.reset()
    assert http.get("/_emulator/gumloop/limits").json()["pro"] == 25


def test_gumloop_pro_refuses_exactly_over_its_limit_on_both_apis(clean: EmulatorServer, http: httpx.Client) -> None:
    key = "gl_pro_limits_1"
    started = [_session(http, key) for _ in range(24)] + [_interaction(http, key)]
    assert [r.status_code for r in started] == [202] * 25
    session_refused = _session(http, key)
    assert session_refused.status_code == 429 and "retry-after" not in session_refused.headers
    error = session_refused.json()["error"]
    assert error["code"] == "concurrency_limit_exceeded" and "25 concurrent runs on the Pro plan" in error["message"]
    legacy_refused = _interaction(http, key)
    assert legacy_refused.status_code == 429 and "retry-after" not in legacy_refused.headers
    assert "25 concurrent agent runs" in legacy_refused.json()["error"]
    # Idle stubs and flows are not agent runs: never refused, never counted.
    assert _session(http, key, text="").status_code == 201
    flow = http.post(
        f"{V1}/start_pipeline",
        json={"saved_item_id": "flow_1", "user_id": "usr_limits", "pipeline_inputs": []},
        headers=_gl_headers(key),
    )
    assert flow.status_code == 200
    # Another Pro key has its own budget; a key without a plan prefix has none.
    assert _session(http, "gl_pro_limits_2").status_code == 202
    assert all(_session(http, "gl_live_no_plan").status_code == 202 for _ in range(30))
    # One run ends: exactly one start is admitted again.
    clean.complete(started[0].json()["session"]["id"])
    assert _interaction(http, key).status_code == 202
    assert _session(http, key).status_code == 429


def test_gumloop_pro_override_admits_again_when_a_run_ends(clean: EmulatorServer, http: httpx.Client) -> None:
    key = "gl_pro_limits_3"
    clean.set_limits("gumloop", pro=2)
    first = _session(http, key, "x [emulator: polls=1]").json()["session"]["id"]
    assert _session(http, key).status_code == 202
    assert _session(http, key).status_code == 429
    assert _read(http, key, first)["session"]["state"] == "processing"
    assert _read(http, key, first)["session"]["state"] == "completed"
    assert _session(http, key).status_code == 202
    assert _session(http, key).status_code == 429


def test_gumloop_free_plan_follows_its_override(clean: EmulatorServer, http: httpx.Client) -> None:
    clean.set_limits("gumloop", free=1)
    assert _interaction(http, "gl_free_limits").status_code == 202
    assert _interaction(http, "gl_free_limits").status_code == 429


def test_gumloop_enterprise_queues_then_runs_its_full_duration(clean: EmulatorServer, http: httpx.Client) -> None:
    key = "gl_ent_limits"
    clean.set_limits("gumloop", enterprise=2)
    clean.set_speed(10)  # seconds=20 is 2 real seconds
    first = _session(http, key).json()["session"]["id"]
    assert _session(http, key).status_code == 202
    third = _session(http, key, "x [emulator: seconds=20]")
    fourth = _session(http, key, "x [emulator: seconds=20]")
    assert third.status_code == 202 and fourth.status_code == 202, "Enterprise queues, never refuses"
    third_id = third.json()["session"]["id"]
    assert third.json()["session"]["state"] == "queued" and third.json()["queue_position"] == 1
    assert fourth.json()["queue_position"] == 2
    time.sleep(2.5)  # longer than third's whole duration: held, it has not run at all
    held = _read(http, key, third_id)
    assert held["session"]["state"] == "queued" and held["queue_position"] == 1
    assert clean.run(third_id)["elapsed_seconds"] == 0.0
    clean.complete(first)
    released = _read(http, key, third_id)
    assert released["session"]["state"] == "processing" and released["queue_position"] is None
    record = clean.run(third_id)
    assert record["queue_position"] is None and record["elapsed_seconds"] < 20, "runs its full duration from now"
    assert _read(http, key, fourth.json()["session"]["id"])["queue_position"] == 1
    assert _until(lambda: _read(http, key, third_id)["session"]["state"] == "completed")
    assert clean.rejections() == {}, "queueing is not a refusal"


# -- Puffle concurrency -------------------------------------------------------------------------------------------


def _chat(http: httpx.Client, message: str, sync: bool = False) -> httpx.Response:
    path = "/api/agent/chat/sync" if sync else "/api/agent/chat"
    return http.post(path, json={"message": message}, headers={"Authorization": f"Bearer {PUFFLE_KEY}"})


def test_puffle_concurrency_with_retry_after(clean: EmulatorServer, http: httpx.Client) -> None:
    assert http.get("/_emulator/puffle/limits").json() == {"concurrency": None}
    assert all(_chat(http, "x [emulator: polls=never]").status_code == 202 for _ in range(5)), "unlimited by default"
    clean.reset()
    assert clean.set_limits("puffle", concurrency=2) == {"concurrency": 2}
    first = _chat(http, "a [emulator: seconds=40]").json()["runId"]
    assert _chat(http, "b [emulator: seconds=100]").status_code == 202
    refused = _chat(http, "c")
    assert refused.status_code == 429
    seconds = int(refused.headers["retry-after"])
    assert refused.json()["retryAfter"] == seconds
    assert 30 <= seconds <= 40, "until the earliest run of the key is expected to end"
    assert _chat(http, "d", sync=True).status_code == 429
    clean.set_speed(10)
    assert 1 <= int(_chat(http, "e").headers["retry-after"]) <= 4, "real seconds at speed 10"
    clean.complete(first)
    assert _chat(http, "f [emulator: polls=never]").status_code == 202
    polls_only = _chat(http, "g")
    assert polls_only.status_code == 429 and polls_only.json()["retryAfter"] >= 1
    for bad in ({"concurrency": 0}, {"limit": 2}, {"concurrency": True}):
        assert http.put("/_emulator/puffle/limits", json=bad).status_code == 400
    clean.reset()
    assert http.get("/_emulator/puffle/limits").json() == {"concurrency": None}


# -- the fast clock ----------------------------------------------------------------------------------------------


def test_fast_clock_ends_a_seconds_run_in_a_fraction(clean: EmulatorServer, http: httpx.Client) -> None:
    before_change = http.get("/_emulator/clock").json()
    assert before_change["speed"] == 1.0
    changed = http.put("/_emulator/clock", json={"speed": 30}).json()
    assert changed["speed"] == 30.0
    assert 0 <= changed["now"] - before_change["now"] < 5, "a new speed never makes emulated time jump"
    run_id = _chat(http, "x [emulator: seconds=60]").json()["runId"]
    before = clean.run(run_id)
    assert before["state"] in ("queued", "running") and before["duration_seconds"] == 60
    started = time.time()
    # 60 emulated seconds are 2 real seconds at speed 30; at speed 1 this 20 s deadline would fail.
    assert _until(lambda: clean.run(run_id)["terminal"])
    after = clean.run(run_id)
    assert after["state"] == "completed" and after["elapsed_seconds"] >= 60
    created = calendar.timegm(time.strptime(after["created_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(created - started) < 30, "vendor timestamps stay on the real clock"
    for bad in ({"speed": 0}, {"speed": "fast"}, {"speed": 5000}, {"rate": 2}):
        response = http.put("/_emulator/clock", json=bad)
        assert response.status_code == 400 and "speed" in response.json()["error"]
    clean.reset()
    assert http.get("/_emulator/clock").json()["speed"] == 1.0, "reset restores the launch speed"


def test_gloriamundo_windows_follow_the_clock(clean: EmulatorServer, http: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {GM_KEY}"}
    clean.set_limits("gloriamundo", executions=2)
    clean.set_speed(20)  # the 60 s window is 3 real seconds
    execute = f"{V1}/workflows/wf_1/execute"
    assert [http.post(execute, json={}, headers=headers).status_code for _ in range(2)] == [200, 200]
    refused = http.post(execute, json={}, headers=headers)
    assert refused.status_code == 429
    wait = int(refused.headers["retry-after"])
    assert 1 <= wait <= 3 and refused.json()["retry_after"] == wait
    assert _until(lambda: http.post(execute, json={}, headers=headers).status_code == 200, deadline=15)


def test_random_durations_in_a_range_are_fixed_per_run_id(clean: EmulatorServer, http: httpx.Client) -> None:
    key = "gl_live_range"
    durations = []
    for index in range(12):
        started = _session(http, key, "x [emulator: seconds=30-90]", session_id=f"range_{index}")
        durations.append(clean.run(started.json()["session"]["id"])["duration_seconds"])
    assert all(30 <= d <= 90 for d in durations) and len(set(durations)) > 6
    assert clean.run("range_0")["scenario"]["seconds_max"] == 90
    clean.reset()
    _session(http, key, "x [emulator: seconds=30-90]", session_id="range_0")
    assert clean.run("range_0")["duration_seconds"] == durations[0], "deterministic per run id"
    bad = _session(http, key, "x [emulator: seconds=90-30]")
    assert bad.status_code == 400 and "low-high" in bad.json()["error"]["message"]


# -- 429 counters -------------------------------------------------------------------------------------------------


def test_every_429_is_counted_by_vendor_and_reason(clean: EmulatorServer, http: httpx.Client) -> None:
    clean.set_limits("gumloop", pro=1)
    clean.set_limits("gloriamundo", polls=1)
    clean.set_limits("puffle", concurrency=1)
    _session(http, "gl_pro_count")
    assert [_session(http, "gl_pro_count").status_code for _ in range(2)] == [429] * 2
    assert _interaction(http, "gl_pro_count").status_code == 429
    gm = {"Authorization": f"Bearer {GM_KEY}"}
    run_id = http.post(f"{V1}/workflows/wf_1/execute", json={}, headers=gm).json()["run_id"]
    assert [http.get(f"{V1}/runs/{run_id}/status", headers=gm).status_code for _ in range(3)] == [200, 429, 429]
    _chat(http, "x [emulator: polls=never]")
    assert _chat(http, "y").status_code == 429
    assert _chat(http, "z [emulator: start_status=429]").status_code == 429
    assert clean.rejections() == {
        "gloriamundo": {"total": 2, "rate": 2},
        "gumloop": {"total": 3, "concurrency": 3},
        "puffle": {"total": 2, "concurrency": 1, "scenario": 1},
    }
    logged = [e["status"] for e in clean.requests(vendor="gumloop")]
    assert logged.count(429) == 3, "the request log agrees"
    assert http.delete("/_emulator/rejections").json() == {"ok": True}
    assert clean.rejections() == {}
    _chat(http, "y")
    clean.reset()
    assert clean.rejections() == {}, "reset clears the counters"


# -- launch options ------------------------------------------------------------------------------------------------


def test_cli_speed_and_puffle_concurrency_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["--speed", "0"]) == 2
    assert main(["--puffle-concurrency", "0"]) == 2
    monkeypatch.setenv("RUNWATCH_EMULATOR_SPEED", "fast")
    assert main([]) == 2
    monkeypatch.setenv("RUNWATCH_EMULATOR_SPEED", "4")
    with EmulatorServer(mode="process") as from_env:
        assert from_env.set_limits("puffle", concurrency=None) == {"concurrency": None}
        assert from_env._call("GET", "/_emulator/clock")["speed"] == 4.0
    with EmulatorServer(mode="process", speed=12.5, puffle_concurrency=3) as server:
        assert server._call("GET", "/_emulator/clock")["speed"] == 12.5
        assert server._call("GET", "/_emulator/puffle/limits") == {"concurrency": 3}
        server.set_speed(2)
        server.reset()
        assert server._call("GET", "/_emulator/clock")["speed"] == 12.5, "reset restores the launch speed"
