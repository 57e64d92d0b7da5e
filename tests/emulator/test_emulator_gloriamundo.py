"""GloriaMundo endpoints over real HTTP: the documented answers and errors, progress, costs, scenarios,
and the enforced per-key budgets."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_runwatch.emulator.gloriamundo import LIMITS_PATH, STEPS

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx

    from airflow_provider_runwatch.emulator.server import EmulatorServer

KEY = "gm_live_emulator_test_key_0123456789"


class GM:
    """Raw GloriaMundo calls (httpx responses), so every status code and header can be asserted."""

    def __init__(self, http: httpx.Client, key: str = KEY) -> None:
        self.http = http
        self.key = key

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def execute(
        self,
        workflow_id: str = "wf_report",
        input: Any = None,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        payload = body if body is not None else ({} if input is None else {"input": input})
        return self.http.post(
            f"/api/v1/workflows/{workflow_id}/execute",
            json=payload,
            headers={**self.auth(key), **(headers or {})},
        )

    def start(self, directive: str = "", **kwargs: Any) -> str:
        response = self.execute(input={"account": f"Acme {directive}".strip()}, **kwargs)
        assert response.status_code == 200, response.text
        run_id: str = response.json()["run_id"]
        return run_id

    def poll(self, run_id: str, key: str | None = None) -> httpx.Response:
        return self.http.get(f"/api/v1/runs/{run_id}/status", headers=self.auth(key))

    def polls(self, run_id: str, count: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(count):
            response = self.poll(run_id)
            assert response.status_code == 200, response.text
            out.append(response.json())
        return out

    def limits(self, **limits: Any) -> httpx.Response:
        return self.http.put(LIMITS_PATH, json=limits)


@pytest.fixture
def gm(http: httpx.Client, emulator: EmulatorServer) -> Iterator[GM]:
    """A client on a clean emulator with budgets out of the way (tests of the budgets set their own)."""
    emulator.reset()
    client = GM(http, key=f"gm_live_{uuid.uuid4().hex}")
    assert client.limits(executions=None, polls=None).status_code == 200
    yield client
    emulator.reset()


# -- execute ----------------------------------------------------------------------------------------------


def test_execute_answers_run_id_and_origin_relative_poll_url(gm: GM) -> None:
    response = gm.execute(input={"account": "Acme"})
    assert response.status_code == 200
    body = response.json()
    assert uuid.UUID(body["run_id"])
    assert body["status"] == "queued"
    assert body["poll_url"] == f"/api/v1/runs/{body['run_id']}/status"
    assert gm.http.get(body["poll_url"], headers=gm.auth()).status_code == 200


def test_input_is_optional(gm: GM) -> None:
    assert gm.execute(body={}).status_code == 200
    assert gm.http.post("/api/v1/workflows/wf_x/execute", headers=gm.auth()).status_code == 200
    assert gm.execute(body={"input": None}).status_code == 200


@pytest.mark.parametrize("value", [["a"], "text", 3, True])
def test_non_object_input_is_400(gm: GM, value: object) -> None:
    response = gm.execute(body={"input": value})
    assert (response.status_code, response.json()) == (400, {"error": "input must be an object"})


def test_non_object_body_is_400(gm: GM) -> None:
    response = gm.http.post("/api/v1/workflows/wf/execute", content=b"[1]", headers=gm.auth())
    assert response.status_code == 400
    response = gm.http.post("/api/v1/workflows/wf/execute", content=b"{nope", headers=gm.auth())
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        ({"Authorization": "Bearer gm_invalid_abc"}, 401),
        ({"X-API-Key": "gm_invalid_abc"}, 401),
        ({"X-API-Key": "gm_live_header_key"}, 200),
        ({"Authorization": "Bearer gm_live_bearer_key"}, 200),
    ],
)
def test_auth(gm: GM, headers: dict[str, str], status: int) -> None:
    response = gm.http.post("/api/v1/workflows/wf/execute", json={}, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json() == {"error": "Invalid or missing API key"}
        run_id = gm.start()
        assert gm.http.get(f"/api/v1/runs/{run_id}/status", headers=headers).status_code == 401


def test_x_api_key_owns_runs_like_bearer(gm: GM) -> None:
    run_id = gm.start()
    same_key = gm.http.get(f"/api/v1/runs/{run_id}/status", headers={"X-API-Key": gm.key})
    assert same_key.status_code == 200


def test_unknown_workflow_is_404(gm: GM) -> None:
    response = gm.execute("wf_missing_nightly")
    assert (response.status_code, response.json()) == (404, {"error": "Workflow not found"})


def test_runs_of_another_key_and_unknown_runs_are_404(gm: GM) -> None:
    run_id = gm.start()
    assert gm.poll(run_id, key="gm_live_someone_else").status_code == 404
    assert gm.poll(str(uuid.uuid4())).json() == {"error": "Run not found"}
    assert gm.poll("not-a-uuid").status_code == 404


@pytest.mark.parametrize(
    ("directive", "status", "body"),
    [
        ("start_status=400", 400, {"error": "input must be an object"}),
        ("start_status=401", 401, {"error": "Invalid or missing API key"}),
        ("start_status=402", 402, {"error": "Insufficient credits"}),
        ("start_status=404", 404, {"error": "Workflow not found"}),
        ("start_status=500", 500, {"error": "Internal Server Error"}),
    ],
)
def test_start_status_renders_documented_errors(gm: GM, directive: str, status: int, body: dict[str, str]) -> None:
    response = gm.execute(input={"note": f"[emulator: {directive}]"})
    assert (response.status_code, response.json()) == (status, body)


def test_start_429_rate_limit_has_retry_after(gm: GM) -> None:
    response = gm.execute(input={"n": "[emulator: start_status=429]"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "6"
    assert response.json() == {"error": "Rate limit exceeded: 10 workflow executions per minute", "retry_after": 6}


@pytest.mark.parametrize("status", [402, 429])
def test_spend_limit_names_itself_and_the_reset_time(gm: GM, status: int) -> None:
    response = gm.execute(input={"n": f"[emulator: start_status={status} error=spend_limit_exceeded]"})
    assert response.status_code == status
    body = response.json()
    assert body["error"] == "spend_limit_exceeded"
    resets = datetime.fromisoformat(body["resets_at"].replace("Z", "+00:00"))
    assert resets.day == 1 and resets.hour == 0 and resets.timestamp() > time.time()


def test_scenario_in_nested_input_or_header(gm: GM) -> None:
    nested = gm.execute(input={"a": {"b": ["plain", "x [emulator: start_status=402]"]}})
    assert nested.status_code == 402
    header = gm.execute(input={"a": 1}, headers={"X-Emulator-Scenario": "start_status=404"})
    assert header.status_code == 404
    bad = gm.execute(input={"a": "[emulator: pols=1]"})
    assert (bad.status_code, bad.json()) == (400, {"error": "emulator: unknown scenario key 'pols'"})


# -- status -----------------------------------------------------------------------------------------------


def test_progress_advances_a_named_step_per_poll_then_completes(gm: GM) -> None:
    run_id = gm.start("[emulator: queued=1 polls=4]")
    answers = gm.polls(run_id, 6)
    assert [a["status"] for a in answers] == ["queued", "running", "running", "running", "completed", "completed"]
    queued = answers[0]
    assert queued["progress"] == {"current_step": 0, "total_steps": 5, "current_step_name": None, "percentage": 0}
    assert queued["started_at"] is None
    steps = [(a["progress"]["current_step"], a["progress"]["current_step_name"]) for a in answers[1:4]]
    assert steps == [(1, STEPS[0]), (2, STEPS[1]), (3, STEPS[2])]
    assert answers[2]["progress"]["percentage"] == 40
    done = answers[4]
    assert done["progress"] == {
        "current_step": 5,
        "total_steps": 5,
        "current_step_name": "Deliver results",
        "percentage": 100,
    }
    assert done["started_at"] == answers[1]["started_at"] and done["completed_at"] >= done["started_at"]
    assert done["error"] is None
    assert isinstance(done["cost_cents"], int) and 25 <= done["cost_cents"] < 45
    assert done["result"]["input"] == {"account": "Acme"}, "the directive is not part of the workflow's input"
    assert done["result"]["summary"] == "Processed 'Acme' through 5 steps"
    assert answers[5] == done, "terminal answers repeat"
    assert set(done) == {
        "run_id",
        "status",
        "progress",
        "started_at",
        "completed_at",
        "result",
        "cost_cents",
        "error",
    }


def test_costs_are_deterministic_per_workflow_and_input(gm: GM) -> None:
    def cost(run_id: str) -> int:
        value: int = gm.polls(run_id, 1)[0]["cost_cents"]
        return value

    a = gm.start("[emulator: polls=0]")
    b = gm.execute(input={"account": "Acme [emulator: polls=0 slow=0]"}).json()["run_id"]
    c = gm.execute("wf_other", input={"account": "Acme [emulator: polls=0]"}).json()["run_id"]
    assert cost(a) == cost(b)
    assert isinstance(cost(c), int)


def test_failed_run_reports_error_partial_cost_and_where_it_stopped(gm: GM) -> None:
    run_id = gm.start("[emulator: polls=2 outcome=failed error='step 2 exploded']")
    answers = gm.polls(run_id, 3)
    failed = answers[-1]
    assert failed["status"] == "failed"
    assert failed["error"] == "step 2 exploded"
    assert failed["result"] is None
    assert failed["progress"]["current_step"] == 2
    assert 0 < failed["cost_cents"] < 45
    assert failed["completed_at"] is not None


def test_cancelled_and_paused_map_to_documented_states(gm: GM, emulator: EmulatorServer) -> None:
    cancelled = gm.start("[emulator: polls=0 outcome=cancelled]")
    assert gm.polls(cancelled, 1)[0]["status"] == "failed"
    paused = gm.start("[emulator: polls=0 outcome=paused]")
    assert [a["status"] for a in gm.polls(paused, 3)] == ["running"] * 3
    emulator.complete(paused)
    assert gm.polls(paused, 1)[0]["status"] == "completed"


def test_unknown_state_and_seconds(gm: GM) -> None:
    odd = gm.start("[emulator: polls=1 unknown_state=warming_up]")
    assert [a["status"] for a in gm.polls(odd, 2)] == ["warming_up", "completed"]
    timed = gm.start("[emulator: seconds=0.5]")
    first = gm.polls(timed, 1)[0]
    assert first["status"] == "running" and first["progress"]["current_step"] == 1
    time.sleep(0.55)
    assert gm.polls(timed, 1)[0]["status"] == "completed"


def test_faults(gm: GM) -> None:
    run_id = gm.start("[emulator: http5xx=1 rate_limit=1 retry_after=2 malformed=1 polls=0]")
    gateway = gm.poll(run_id)
    assert gateway.status_code == 503 and gateway.headers["content-type"].startswith("text/html")
    limited = gm.poll(run_id)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    broken = gm.poll(run_id)
    assert broken.status_code == 200
    with pytest.raises(ValueError, match=r"Expecting|Unterminated|delimiter"):
        broken.json()
    assert gm.poll(run_id).json()["status"] == "completed"


def test_run_record_and_request_log(gm: GM, emulator: EmulatorServer) -> None:
    run_id = gm.start("[emulator: polls=1]")
    record = emulator.run(run_id)
    assert record["vendor"] == "gloriamundo" and record["state"] == "running"
    assert record["data"]["workflow_id"] == "wf_report" and record["data"]["total_steps"] == 5
    assert gm.key not in str(record)
    gm.polls(run_id, 2)
    assert emulator.run(run_id)["state"] == "completed"
    log = emulator.requests(vendor="gloriamundo", run_id=run_id)
    assert [(e["method"], e["status"], e["authorized"]) for e in log] == [
        ("POST", 200, True),
        ("GET", 200, True),
        ("GET", 200, True),
    ]


# -- enforced budgets -------------------------------------------------------------------------------------


def test_default_limits_are_the_documented_ones(gm: GM, emulator: EmulatorServer) -> None:
    emulator.reset()
    assert gm.http.get(LIMITS_PATH).json() == {"window_seconds": 60.0, "executions": 10, "polls": 60}


def test_ten_executions_per_window_per_key(gm: GM) -> None:
    assert gm.limits(window_seconds=2, executions=10).status_code == 200
    statuses = [gm.execute(input={"i": i}).status_code for i in range(11)]
    assert statuses == [200] * 10 + [429]
    refused = gm.execute()
    assert refused.json()["error"] == "Rate limit exceeded: 10 workflow executions per 2 seconds"
    assert refused.headers["retry-after"] in ("1", "2")
    assert gm.execute(key="gm_live_another_key").status_code == 200, "budgets are per key"
    time.sleep(2.05)
    assert gm.execute().status_code == 200, "a sliding window: the old executions fell out"


def test_sixty_polls_per_window_per_key_and_refusals_do_not_count(gm: GM) -> None:
    run_id = gm.start("[emulator: polls=never]")
    assert gm.limits(window_seconds=1.5, polls=60).status_code == 200
    started = time.monotonic()
    statuses = [gm.poll(run_id).status_code for _ in range(65)]
    assert time.monotonic() - started < 1.5, "the loop must finish inside the window for this test"
    assert statuses == [200] * 60 + [429] * 5
    refused = gm.poll(run_id)
    assert refused.json()["error"] == "Rate limit exceeded: 60 status requests per 1.5 seconds"
    assert refused.json()["retry_after"] in (1, 2) and refused.headers["retry-after"] in ("1", "2")
    time.sleep(1.55)
    assert gm.poll(run_id).status_code == 200, "429s did not count against the window"


def test_limits_control_api_validates_and_reset_restores(gm: GM, emulator: EmulatorServer) -> None:
    assert gm.limits(window_seconds=6).json() == {"window_seconds": 6.0, "executions": None, "polls": None}
    assert gm.limits(polls=0).status_code == 400
    assert gm.limits(bogus=1).json() == {"error": "emulator: unknown limit 'bogus'"}
    assert gm.http.put(LIMITS_PATH, json=[1]).status_code == 400
    assert gm.limits(window_seconds=0).status_code == 400
    emulator.reset()
    assert gm.http.get(LIMITS_PATH).json()["polls"] == 60
