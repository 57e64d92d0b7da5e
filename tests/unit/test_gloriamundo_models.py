"""GloriaMundo payload parsing, request building, input validation and error hints (sans-I/O)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from airflow_provider_runwatch.core.connection import ConnectionSettings
from airflow_provider_runwatch.core.errors import (
    AuthError,
    ClientError,
    ConfigurationError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    VendorAPIError,
)
from airflow_provider_runwatch.core.http import ApiRequest
from airflow_provider_runwatch.core.models import RunState
from airflow_provider_runwatch.hooks.gloriamundo import ExecuteRetryPolicy, GloriaMundoHook
from airflow_provider_runwatch.vendors import gloriamundo as gm

BASE = "https://app.gloriamundo.com/api/v1"
KEY = "gm_live_MODELS_SECRET_abcdef123456"
SETTINGS = ConnectionSettings(vendor=gm.GLORIAMUNDO, conn_id="gm", base_url=BASE, api_key=KEY)
RUN_ID = "3f1c2a9e-6b7d-4e8f-9a0b-1c2d3e4f5a6b"

COMPLETED = {
    "run_id": RUN_ID,
    "status": "completed",
    "progress": {"current_step": 5, "total_steps": 5, "current_step_name": "Deliver", "percentage": 100},
    "started_at": "2026-03-01T10:00:00Z",
    "completed_at": "2026-03-01T10:01:30",  # no offset: still UTC
    "result": {"summary": "ok", "rows": [1, 2]},
    "cost_cents": 42,
    "error": None,
    "workflow_version": 7,  # unknown field: kept, never a crash
}


def test_spec_and_public_names() -> None:
    assert gm.GLORIAMUNDO.conn_type == "gloriamundo"
    assert gm.GLORIAMUNDO.default_conn_id == "gloriamundo_default"
    assert gm.GLORIAMUNDO.default_base_url == BASE
    assert gm.WORKFLOW_RUNS.noun == "workflow run"
    assert gm.WORKFLOW_RUNS.cancel_supported is False
    assert gm.WORKFLOW_RUNS.cancel_call(SETTINGS, RUN_ID) is None


def test_completed_payload_to_result_and_summary() -> None:
    result = gm.WORKFLOW_RUNS.result_call(SETTINGS, RUN_ID).parse(COMPLETED)
    assert result.answer == {"summary": "ok", "rows": [1, 2]}
    assert result.messages is None
    assert result.status.state is RunState.SUCCEEDED
    summary = result.summary.to_xcom()
    assert summary["cost"] == {"cost_cents": 42}
    assert summary["created_at"] == "2026-03-01T10:00:00Z"
    assert summary["finished_at"] == "2026-03-01T10:01:30Z"
    assert summary["duration_seconds"] == 90.0
    assert summary["progress"] == {
        "current_step": 5,
        "total_steps": 5,
        "current_step_name": "Deliver",
        "percentage": 100.0,
    }
    json.dumps(summary)  # XCom-safe


@pytest.mark.parametrize(
    ("status", "state", "unknown"),
    [
        ("queued", RunState.QUEUED, False),
        ("running", RunState.RUNNING, False),
        ("completed", RunState.SUCCEEDED, False),
        ("failed", RunState.FAILED, False),
        ("paused_for_review", RunState.RUNNING, True),
    ],
)
def test_states(status: str, state: RunState, unknown: bool) -> None:
    parsed = gm.WORKFLOW_RUNS.status_call(SETTINGS, RUN_ID).parse({"run_id": RUN_ID, "status": status})
    assert (parsed.state, parsed.vendor_state, parsed.unknown_state) == (state, status, unknown)


def test_status_carries_progress_described_for_the_log() -> None:
    payload = {
        "run_id": RUN_ID,
        "status": "running",
        "progress": {"current_step": 2, "total_steps": 5, "current_step_name": "Generate content", "percentage": 40},
    }
    status = gm.WORKFLOW_RUNS.status_call(SETTINGS, RUN_ID).parse(payload)
    assert status.progress is not None
    assert status.progress.describe() == "step 2/5 Generate content, 40%"
    assert gm.GloriaMundoProgress(percentage=12.5).describe() == "12.5%"
    assert gm.GloriaMundoProgress(current_step=1, total_steps=3).describe() == "step 1/3"


def test_odd_fields_are_dropped_not_fatal() -> None:
    run = gm.get_run_status(RUN_ID).parse(
        {
            "run_id": RUN_ID,
            "status": "running",
            "progress": {"current_step": "two", "total_steps": 5, "percentage": "n/a", "current_step_name": "Draft"},
            "started_at": "yesterday-ish",
            "cost_cents": "17",
            "error": {"message": "partial failure", "code": "E1"},
        }
    )
    assert run.progress is not None and run.progress.current_step is None and run.progress.total_steps == 5
    assert run.progress.current_step_name == "Draft"
    assert run.started_at is None
    assert run.cost_cents == 17
    assert run.error == "partial failure"
    assert gm.get_run_status(RUN_ID).parse({"run_id": RUN_ID, "status": "x", "progress": "50%"}).progress is None
    naive = gm.get_run_status(RUN_ID).parse({"run_id": RUN_ID, "status": "x", "started_at": "2026-01-02T03:04:05"})
    assert naive.started_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize("junk", [[], "text", {"status": "running"}, {"run_id": RUN_ID}, None])
def test_junk_payload_is_malformed_not_a_crash(junk: object) -> None:
    with pytest.raises(MalformedResponseError, match="unexpected payload shape"):
        gm.WORKFLOW_RUNS.status_call(SETTINGS, RUN_ID).parse(junk)


@pytest.mark.parametrize("bad", ["abc", "", "run_123", RUN_ID[:-1], RUN_ID + "0", None, 5])
def test_run_id_validated_before_any_request(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="GloriaMundo run ids are UUIDs"):
        gm.get_run_status(bad)  # type: ignore[arg-type]


def test_execute_request() -> None:
    call = gm.execute_workflow("wf abc/1", {"account": "Acme", "n": [1, 2]})
    request = call.request
    assert (request.method, request.path, request.endpoint) == (
        "POST",
        "/workflows/wf%20abc%2F1/execute",
        "POST /workflows/{workflow_id}/execute",
    )
    assert request.json == {"input": {"account": "Acme", "n": [1, 2]}}
    assert request.bucket == "execute" and not request.idempotent
    assert gm.execute_workflow("wf_1").request.json == {}
    started = call.parse({"run_id": RUN_ID, "status": "queued", "poll_url": f"/api/v1/runs/{RUN_ID}/status"})
    assert started.run_id == RUN_ID


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["a", "b"], "must be a JSON object \\(a dict\\), got list"),
        ("{'a': 1}", "got str.*render_template_as_native_obj"),
        (42, "got int"),
        ({"when": datetime(2026, 1, 1)}, "JSON-serializable"),
        ({"x": float("nan")}, "JSON-serializable"),
    ],
)
def test_non_object_input_refused_before_sending(value: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        gm.execute_workflow("wf_1", value)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "  ", None])
def test_workflow_id_required(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="workflow_id must be a non-empty string"):
        gm.execute_workflow(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("poll_url", "base", "expected"),
    [
        (None, BASE, f"/runs/{RUN_ID}/status"),
        (f"/api/v1/runs/{RUN_ID}/status", BASE, f"/runs/{RUN_ID}/status"),  # origin-relative, prefix stripped
        (f"/api/v1/runs/{RUN_ID}/status", "http://127.0.0.1:8765/api/v1/", f"/runs/{RUN_ID}/status"),
        (f"https://app.gloriamundo.com/api/v1/runs/{RUN_ID}/status", BASE, f"/runs/{RUN_ID}/status"),
        (f"/api/v1/runs/{RUN_ID}/status/v2", BASE, f"/runs/{RUN_ID}/status/v2"),  # the vendor moved it: follow
        (f"runs/{RUN_ID}/status", BASE, f"/runs/{RUN_ID}/status"),  # base-relative
        (f"https://evil.example/api/v1/runs/{RUN_ID}/status", BASE, f"/runs/{RUN_ID}/status"),  # key stays home
        (f"/api/v2/runs/{RUN_ID}/status", BASE, f"/runs/{RUN_ID}/status"),  # outside the base path
        ("/api/v1/runs/another/status", BASE, f"/runs/{RUN_ID}/status"),  # not this run
        (f"/api/v1/runs/{RUN_ID}/../../admin", BASE, f"/runs/{RUN_ID}/status"),
        (f"/gm/api/v1/runs/{RUN_ID}/status", "https://proxy.example/gm/api/v1", f"/runs/{RUN_ID}/status"),
    ],
)
def test_poll_url_is_resolved_against_the_base_url(poll_url: str | None, base: str, expected: str) -> None:
    request = gm.get_run_status(RUN_ID, poll_url, base).request
    assert request.path == expected
    assert (request.method, request.bucket, request.endpoint) == ("GET", "poll", "GET /runs/{run_id}/status")


# -- errors that say what to do -------------------------------------------------------------------------

EXECUTE = "POST /workflows/{workflow_id}/execute"
STATUS = "GET /runs/{run_id}/status"


def _error(
    kind: type[VendorAPIError], status: int, detail: str, endpoint: str = EXECUTE, retry_after: float | None = None
) -> VendorAPIError:
    return kind(vendor="GloriaMundo", endpoint=endpoint, status_code=status, detail=detail, retry_after=retry_after)


def test_401_hint_names_the_connection_and_the_header_option() -> None:
    err = gm.explain_error(_error(AuthError, 401, "Invalid API key"), conn_id="gm_prod", workflow_id="wf_1")
    assert isinstance(err, gm.GloriaMundoAuthError) and isinstance(err, AuthError) and not err.transient
    assert "HTTP 401" in str(err) and "connection 'gm_prod'" in str(err) and "key_header" in str(err)


def test_404_hints_differ_for_workflow_and_run() -> None:
    wf = gm.explain_error(_error(NotFoundError, 404, "Workflow not found"), conn_id="c", workflow_id="wf_x")
    assert isinstance(wf, NotFoundError)
    assert "Workflow 'wf_x' does not exist or is not owned by the account of the key in connection 'c'" in str(wf)
    run = gm.explain_error(_error(NotFoundError, 404, "Run not found", STATUS), conn_id="c", run_id=RUN_ID)
    assert f"Run {RUN_ID} does not exist or was started with another API key" in str(run)


def test_402_out_of_credits() -> None:
    err = gm.explain_error(_error(ClientError, 402, "Insufficient credits"), conn_id="c", workflow_id="wf")
    assert isinstance(err, gm.GloriaMundoCreditsError)
    assert "out of credits: add credits" in str(err)


@pytest.mark.parametrize("status", [402, 429])
@pytest.mark.parametrize(
    ("body", "when"),
    [
        ({"error": "spend_limit_exceeded", "resets_at": "2026-12-01T00:00:00Z"}, "resets at 2026-12-01 00:00 UTC"),
        ({"error": {"code": "spend_limit_exceeded", "reset_at": 1796083200}}, "resets at 2026-12-01 00:00 UTC"),
        ({"error": "spend_limit_exceeded", "resetsIn": 3600}, "resets in 3600s"),
        ({"error": "spend_limit_exceeded", "limit_reset": "first of the month"}, "resets at first of the month"),
        (None, None),
    ],
)
def test_spend_limit_with_and_without_a_reset_time(status: int, body: object, when: str | None) -> None:
    kind = RateLimitedError if status == 429 else ClientError
    err = gm.explain_error(_error(kind, status, "spend_limit_exceeded"), conn_id="c", workflow_id="wf", body=body)
    assert isinstance(err, gm.GloriaMundoSpendLimitError)
    assert not err.transient
    assert "spend limit is reached" in str(err) and "raise the limit" in str(err)
    if when:
        assert when in str(err)
    else:
        assert "(it resets" not in str(err) and err.resets_at is None


def test_429_at_start_that_is_the_rate_limit() -> None:
    err = gm.explain_error(
        _error(RateLimitedError, 429, "Rate limit exceeded", retry_after=6), conn_id="c", workflow_id="wf"
    )
    assert isinstance(err, gm.GloriaMundoRateLimitedError) and isinstance(err, RateLimitedError)
    assert "10 workflow executions per minute per API key" in str(err)
    assert "spend" not in str(err).lower()
    assert err.retry_after == 6


def test_other_errors_pass_through_and_hints_are_not_stacked() -> None:
    poll_429 = _error(RateLimitedError, 429, "slow down", STATUS)
    assert gm.explain_error(poll_429, conn_id="c", run_id=RUN_ID) is poll_429
    boom = _error(ServerError, 503, "")
    assert gm.explain_error(boom, conn_id="c", workflow_id="wf") is boom
    once = gm.explain_error(_error(ClientError, 402, "x"), conn_id="c", workflow_id="wf")
    assert gm.explain_error(once, conn_id="c", workflow_id="wf") is once


def test_execute_retries_the_rate_limit_but_not_the_spend_limit() -> None:
    policy = ExecuteRetryPolicy(max_attempts=3)
    post = ApiRequest("POST", "/workflows/w/execute", EXECUTE, json={}, bucket="execute")
    assert policy.should_retry(post, _error(RateLimitedError, 429, "Rate limit exceeded"), 1)
    assert not policy.should_retry(post, _error(RateLimitedError, 429, "spend_limit_exceeded"), 1)
    assert not policy.should_retry(post, _error(ServerError, 500, ""), 1), "a start is never retried blindly"


# -- connection -> client options -----------------------------------------------------------------------


def _settings(**extras: object) -> ConnectionSettings:
    return ConnectionSettings(vendor=gm.GLORIAMUNDO, conn_id="gm", base_url=BASE, api_key=KEY, extras=extras)


@pytest.mark.parametrize(
    ("extra", "header", "value"),
    [
        ({}, "Authorization", f"Bearer {KEY}"),
        ({"key_header": "bearer"}, "Authorization", f"Bearer {KEY}"),
        ({"key_header": "X-API-Key"}, "X-API-Key", KEY),
        ({"key_header": "x_api_key"}, "X-API-Key", KEY),
        # the legacy name, and the new one winning over it
        ({"auth_header": "x-api-key"}, "X-API-Key", KEY),
        ({"auth_header": "x-api-key", "key_header": "bearer"}, "Authorization", f"Bearer {KEY}"),
    ],
)
def test_key_header_choice(extra: dict[str, str], header: str, value: str) -> None:
    options = GloriaMundoHook().client_options(_settings(**extra))
    assert options.headers == {header: value}
    assert options.limiter is not None


@pytest.mark.parametrize("name", ["key_header", "auth_header"])
def test_bad_key_header_is_a_configuration_error(name: str) -> None:
    with pytest.raises(ConfigurationError, match=f"'{name}' must be 'bearer' or 'x-api-key'"):
        GloriaMundoHook().client_options(_settings(**{name: "basic"}))


def test_budget_from_extras() -> None:
    default = GloriaMundoHook.budget_specs(_settings())
    assert (default["poll"].limit, default["poll"].window, default["poll"].smooth) == (50, 60.0, True)
    assert (default["execute"].limit, default["execute"].smooth) == (9, False)
    # Polls hold on a 429's Retry-After; starts do not: start admission waits a refused start out within
    # start_timeout (tests/integration/test_start_admission.py), a hold would sleep the worker past it.
    assert default["poll"].holds and not default["execute"].holds
    assert not GloriaMundoHook.budget_specs(_settings(adaptive_rate=False))["poll"].holds
    custom = GloriaMundoHook.budget_specs(
        _settings(polls_per_minute="30", executions_per_minute=5, rate_window_seconds=6)
    )
    assert (custom["poll"].limit, custom["poll"].window, custom["execute"].limit) == (30, 6.0, 5)
    with pytest.raises(ConfigurationError, match="'polls_per_minute' must be at least 1"):
        GloriaMundoHook.budget_specs(_settings(polls_per_minute=0))
    with pytest.raises(ConfigurationError, match="'polls_per_minute' must be a number"):
        GloriaMundoHook.budget_specs(_settings(polls_per_minute="fast"))


def test_budget_above_the_documented_limit_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        GloriaMundoHook.budget_specs(_settings(polls_per_minute=90))
        GloriaMundoHook.budget_specs(_settings(polls_per_minute=90))
    assert [r.getMessage() for r in caplog.records].count(
        "GloriaMundo connection 'gm': polls_per_minute=90 is above the 60 status polls per minute GloriaMundo "
        "allows per key; expect 429s"
    ) == 1
