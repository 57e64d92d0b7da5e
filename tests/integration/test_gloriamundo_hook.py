"""GloriaMundoHook against the emulator over loopback: every endpoint and documented error, sync and async.

Each test uses its own API key (budgets are per key), and the emulator's and the client's windows are both
scaled from 60 s to 6 s, so the documented 10 executions / 60 polls per window still hold, ten times faster.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from airflow_provider_runwatch.core.errors import ConfigurationError, NotFoundError, RateLimitedError
from airflow_provider_runwatch.core.http import ApiRequest, Call, RetryPolicy
from airflow_provider_runwatch.core.models import RunState
from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks.gloriamundo import GloriaMundoHook
from airflow_provider_runwatch.vendors.gloriamundo import (
    GloriaMundoAuthError,
    GloriaMundoCreditsError,
    GloriaMundoInputError,
    GloriaMundoNotFoundError,
    GloriaMundoRateLimitedError,
    GloriaMundoSpendLimitError,
)
from tests.conftest import SECRET_KEY
from tests.helpers import FAST, web_page_server

LIMITS = "/_emulator/gloriamundo/limits"


@pytest.fixture(autouse=True)
def scaled_limits(runwatch_emulator: EmulatorServer) -> Iterator[None]:
    with httpx.Client(base_url=runwatch_emulator.url, trust_env=False) as http:
        http.put(LIMITS, json={"window_seconds": 6, "executions": 10, "polls": 60}).raise_for_status()
        yield
        http.put(LIMITS, json={"window_seconds": 60, "executions": 10, "polls": 60}).raise_for_status()


def connect(
    monkeypatch: pytest.MonkeyPatch,
    emulator: EmulatorServer,
    *,
    key: str | None = None,
    conn_id: str = "gloriamundo_default",
    **extra: object,
) -> str:
    """A connection to the emulator with a fresh key (containing SECRET_KEY, so leaks are caught)."""
    key = key or f"{SECRET_KEY}_{uuid.uuid4().hex[:8]}"
    conn = {
        "conn_type": "gloriamundo",
        "host": emulator.gloriamundo_url,
        "password": key,
        "extra": {"rate_window_seconds": 6, **extra},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return key


def test_execute_poll_complete(monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer) -> None:
    connect(monkeypatch, runwatch_emulator)
    hook = GloriaMundoHook(retry=FAST)
    started = hook.execute_workflow("wf_nightly", {"account": "Acme [emulator: polls=2]", "limit": 3})
    assert uuid.UUID(started.run_id) and started.status == "queued"
    first = hook.get_run_status(started.run_id, started.poll_url)
    assert (first.status, first.progress and first.progress.current_step) == ("running", 1)
    status = hook.get_status(hook.adapter, started.run_id)
    assert status.state is RunState.RUNNING and status.progress is not None
    assert status.progress.describe() == "step 2/5 Generate content, 40%"
    result = hook.get_result(hook.adapter, started.run_id)
    assert result.status.state is RunState.SUCCEEDED
    assert result.answer["input"] == {"account": "Acme", "limit": 3}
    summary = result.summary.to_xcom()
    held = runwatch_emulator.run(started.run_id)["data"]
    assert summary["cost"]["cost_cents"] == held["cost_cents"]
    # The duration comes from the vendor's timestamps (">= 0" would hold of anything: the model clamps at 0).
    took = datetime.fromisoformat(held["completed_at"].replace("Z", "+00:00")) - datetime.fromisoformat(
        held["started_at"].replace("Z", "+00:00")
    )
    assert summary["progress"]["percentage"] == 100
    assert summary["duration_seconds"] == pytest.approx(took.total_seconds(), abs=1e-3) and took.total_seconds() > 0
    log = runwatch_emulator.requests(vendor="gloriamundo", run_id=started.run_id)
    assert [e["path"] for e in log[:2]] == [
        "/api/v1/workflows/wf_nightly/execute",
        f"/api/v1/runs/{started.run_id}/status",  # the relative poll_url, not /api/v1/api/v1/...
    ]
    assert all(e["authorized"] for e in log)


@pytest.mark.anyio
async def test_async_twins(monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer) -> None:
    connect(monkeypatch, runwatch_emulator)
    hook = GloriaMundoHook(retry=FAST)
    started = await hook.aexecute_workflow("wf_async", {"x": "[emulator: polls=0]"})
    run = await hook.aget_run_status(started.run_id, started.poll_url)
    assert run.status == "completed" and run.result and run.result["input"] == {"x": ""}
    assert isinstance(run.cost_cents, int)


def test_x_api_key_header(monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer) -> None:
    connect(monkeypatch, runwatch_emulator, key_header="x-api-key")
    hook = GloriaMundoHook(retry=FAST)
    started = hook.execute_workflow("wf_header")
    assert hook.get_run_status(started.run_id).run_id == started.run_id
    assert set(hook.client_options(hook.settings).headers) == {"X-API-Key"}


@pytest.mark.parametrize("key_header", ["bearer", "x-api-key"])
def test_401_says_check_the_key(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer, key_header: str
) -> None:
    key = connect(monkeypatch, runwatch_emulator, key=f"gm_invalid_{SECRET_KEY}", key_header=key_header)
    hook = GloriaMundoHook(retry=FAST)
    with pytest.raises(GloriaMundoAuthError, match="HTTP 401") as info:
        hook.execute_workflow("wf_1")
    assert "Password field of connection 'gloriamundo_default'" in str(info.value)
    assert key not in str(info.value) and SECRET_KEY not in str(info.value)
    ok, message = GloriaMundoHook().test_connection()
    assert ok is False and "HTTP 401" in message and SECRET_KEY not in message


def test_connection_test_starts_nothing(monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer) -> None:
    connect(monkeypatch, runwatch_emulator)
    runwatch_emulator.clear_requests()
    assert GloriaMundoHook().test_connection() == (
        True,
        'GloriaMundo accepted the API key (a run id that cannot exist got 404 "Run not found")',
    )
    log = runwatch_emulator.requests(vendor="gloriamundo")
    assert [(e["method"], e["status"]) for e in log] == [("GET", 404)]


def test_unknown_workflow_404(monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer) -> None:
    connect(monkeypatch, runwatch_emulator)
    with pytest.raises(GloriaMundoNotFoundError) as info:
        GloriaMundoHook(retry=FAST).execute_workflow("wf_missing_report")
    assert isinstance(info.value, NotFoundError)
    assert "Workflow 'wf_missing_report' does not exist or is not owned by the account of the key" in str(info.value)


def test_run_of_another_key_404(monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer) -> None:
    connect(monkeypatch, runwatch_emulator)
    started = GloriaMundoHook(retry=FAST).execute_workflow("wf_mine")
    connect(monkeypatch, runwatch_emulator, conn_id="gm_other")
    with pytest.raises(GloriaMundoNotFoundError, match="was started with another API key") as info:
        GloriaMundoHook("gm_other", retry=FAST).get_run_status(started.run_id)
    assert started.run_id in str(info.value) and "connection 'gm_other'" in str(info.value)


def test_non_object_input_refused_locally_and_by_the_server(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer
) -> None:
    connect(monkeypatch, runwatch_emulator)
    runwatch_emulator.clear_requests()
    hook = GloriaMundoHook(retry=FAST)
    with pytest.raises(ConfigurationError, match="must be a JSON object"):
        hook.execute_workflow("wf_1", ["not", "an", "object"])  # type: ignore[arg-type]
    assert runwatch_emulator.requests(vendor="gloriamundo") == [], "nothing was sent"
    # A client that skips validation gets the server's 400, explained.
    raw = Call(
        ApiRequest("POST", "/workflows/wf_1/execute", "POST /workflows/{workflow_id}/execute", json={"input": [1]}),
        lambda payload: payload,
    )
    with pytest.raises(GloriaMundoInputError, match=r"input must be an object.*pass `input` as a JSON object"):
        hook.call(raw)


def test_402_out_of_credits(monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer) -> None:
    connect(monkeypatch, runwatch_emulator)
    with pytest.raises(GloriaMundoCreditsError, match=r"\(HTTP 402\): Insufficient credits\. .*add credits"):
        GloriaMundoHook(retry=FAST).execute_workflow("wf_1", {"a": "[emulator: start_status=402]"})


@pytest.mark.parametrize("status", [402, 429])
def test_spend_limit_gives_the_reset_time_and_is_not_retried(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer, status: int
) -> None:
    connect(monkeypatch, runwatch_emulator)
    runwatch_emulator.clear_requests()
    with pytest.raises(GloriaMundoSpendLimitError) as info:
        GloriaMundoHook(retry=FAST).execute_workflow(
            "wf_1", {"a": f"[emulator: start_status={status} error=spend_limit_exceeded]"}
        )
    message = str(info.value)
    assert f"HTTP {status}" in message and "spend limit is reached (it resets at " in message
    assert info.value.resets_at and info.value.resets_at.endswith("00:00 UTC")
    assert len(runwatch_emulator.requests(vendor="gloriamundo", method="POST")) == 1


@pytest.mark.anyio
async def test_spend_limit_reset_time_async(monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer) -> None:
    connect(monkeypatch, runwatch_emulator)
    with pytest.raises(GloriaMundoSpendLimitError, match="it resets at 20"):
        await GloriaMundoHook(retry=FAST).aexecute_workflow(
            "wf_1", {"a": "[emulator: start_status=402 error=spend_limit_exceeded]"}
        )


def test_429_rate_limit_at_start_is_retried_then_explained(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer
) -> None:
    connect(monkeypatch, runwatch_emulator)
    runwatch_emulator.clear_requests()
    with pytest.raises(GloriaMundoRateLimitedError) as info:
        GloriaMundoHook(retry=RetryPolicy(max_attempts=2)).execute_workflow(
            "wf_1", {"a": "[emulator: start_status=429 retry_after=1]"}
        )
    assert isinstance(info.value, RateLimitedError)
    assert "10 workflow executions per minute per API key" in str(info.value)
    assert "spend" not in str(info.value)
    posts = runwatch_emulator.requests(vendor="gloriamundo", method="POST")
    assert len(posts) == 2 and posts[1]["ts"] - posts[0]["ts"] >= 1.0, "Retry-After honoured once"


def test_starts_are_paced_under_the_execution_budget(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer
) -> None:
    """12 starts on one key: the client's budget (9 per window) holds the 10th back until the window
    allows it, so the emulator's 10-per-window limit never answers 429."""
    connect(monkeypatch, runwatch_emulator, rate_window_seconds=2)
    with httpx.Client(base_url=runwatch_emulator.url, trust_env=False) as http:
        http.put(LIMITS, json={"window_seconds": 2}).raise_for_status()
    runwatch_emulator.clear_requests()
    hook = GloriaMundoHook(retry=FAST)
    for i in range(12):
        hook.execute_workflow("wf_batch", {"i": i})
    posts = runwatch_emulator.requests(vendor="gloriamundo", method="POST")
    assert [p["status"] for p in posts] == [200] * 12
    assert posts[9]["ts"] - posts[0]["ts"] >= 2.0 - 0.05


def test_connection_test_fails_on_a_web_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that is a website (or a proxy), not the API: its HTML 404 is not taken as "key accepted"."""
    with web_page_server() as url:
        conn = {"conn_type": "gloriamundo", "host": url, "password": "gm_live_k"}
        monkeypatch.setenv("AIRFLOW_CONN_GLORIAMUNDO_WEB", json.dumps(conn))
        ok, message = GloriaMundoHook("gloriamundo_web").test_connection()
    assert ok is False
    assert "answered 404 with an HTML page, not an API error; check the host" in message, message
    assert message.startswith("GloriaMundo connection 'gloriamundo_web': ")
