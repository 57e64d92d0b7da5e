"""The shared HTTP layer: Retry-After, backoff, retry decisions, error mapping, size cap, redirects."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from airflow_provider_runwatch.core.connection import ConnectionSettings
from airflow_provider_runwatch.core.errors import (
    AuthError,
    ClientError,
    ConflictError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    ResponseTooLargeError,
    ServerError,
    TransportError,
)
from airflow_provider_runwatch.core.http import (
    ApiClient,
    ApiRequest,
    AsyncApiClient,
    ClientOptions,
    RetryPolicy,
    error_text,
    interpret,
    parse_retry_after,
)
from airflow_provider_runwatch.vendors.puffle import PUFFLE

KEY = "pk_live_SECRET_should_never_leak_1234"
SETTINGS = ConnectionSettings(vendor=PUFFLE, conn_id="puffle_default", base_url="http://127.0.0.1:1", api_key=KEY)
GET = ApiRequest("GET", "/api/agent/chat/run_1", "GET /api/agent/chat/{runId}")
POST = ApiRequest("POST", "/api/agent/chat", "POST /api/agent/chat", json={"message": "hi"})


class TestRetryAfter:
    def test_delta_seconds(self) -> None:
        assert parse_retry_after("7") == 7.0
        assert parse_retry_after(" 2.5 ") == 2.5

    def test_http_date_is_relative_to_now(self) -> None:
        now = datetime(2026, 1, 1, tzinfo=timezone.utc)
        header = format_datetime(now + timedelta(seconds=30), usegmt=True)
        assert parse_retry_after(header, now=now.timestamp()) == pytest.approx(30.0)

    def test_past_date_and_negative_are_zero(self) -> None:
        assert parse_retry_after("-5") == 0.0
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0

    @pytest.mark.parametrize("value", [None, "", "soon", "Mon, 99 Foo"])
    def test_junk_is_none(self, value: str | None) -> None:
        assert parse_retry_after(value) is None


class TestRetryPolicy:
    def test_backoff_grows_with_jitter_within_bounds(self) -> None:
        policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
        for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
            delays = {policy.backoff(attempt) for _ in range(50)}
            assert all(ceiling / 2 <= d <= ceiling for d in delays)
            assert len(delays) > 1, "backoff must be jittered"

    def test_retry_after_wins_and_is_capped(self) -> None:
        policy = RetryPolicy(max_retry_after=60.0)
        hinted = RateLimitedError(vendor="Puffle", endpoint="x", status_code=429, retry_after=12.0)
        assert 12.0 <= policy.delay_for(hinted, 1) <= 12.25
        huge = RateLimitedError(vendor="Puffle", endpoint="x", status_code=429, retry_after=86400.0)
        assert policy.delay_for(huge, 1) <= 60.25

    def test_get_retries_transient_only(self) -> None:
        policy = RetryPolicy(max_attempts=3)
        assert policy.should_retry(GET, ServerError(vendor="P", endpoint="e", status_code=503), 1)
        assert not policy.should_retry(GET, ServerError(vendor="P", endpoint="e", status_code=503), 3)
        assert not policy.should_retry(GET, AuthError(vendor="P", endpoint="e", status_code=401), 1)
        assert not policy.should_retry(GET, NotFoundError(vendor="P", endpoint="e", status_code=404), 1)

    def test_start_post_never_retried_once_it_may_have_arrived(self) -> None:
        policy = RetryPolicy(max_attempts=3)
        assert not policy.should_retry(POST, ServerError(vendor="P", endpoint="e", status_code=502), 1)
        assert not policy.should_retry(POST, TransportError(reached_server=True, vendor="P", endpoint="e"), 1)
        assert not policy.should_retry(POST, MalformedResponseError(vendor="P", endpoint="e", status_code=200), 1)
        # Provably never sent, or explicitly refused: safe.
        assert policy.should_retry(POST, TransportError(reached_server=False, vendor="P", endpoint="e"), 1)
        assert policy.should_retry(POST, RateLimitedError(vendor="P", endpoint="e", status_code=429), 1)


class TestErrorText:
    def test_shapes(self) -> None:
        assert error_text(b'{"error": "message is required"}', "application/json") == "message is required"
        nested = json.dumps(
            {"error": {"message": "Session exists", "type": "conflict", "code": "session_already_exists"}}
        )
        assert error_text(nested.encode(), "application/json") == "Session exists [conflict, session_already_exists]"
        assert error_text(b'{"detail": "nope"}', None) == "nope"
        page = b"<!DOCTYPE html><html><head><title>502 Bad &amp; Gateway</title></head><body>" + b"<p>x</p>" * 200
        assert error_text(page, "text/html; charset=utf-8") == "HTML page: 502 Bad & Gateway"
        assert error_text(b"<html><body>oops</body></html>", None) == "HTML page (no title)"
        assert error_text(b"upstream timed out\nline two\nline three", "text/plain") == "upstream timed out"
        assert "<" not in error_text(page, "text/html"), "never raw markup in a log line"
        assert error_text(b"", None) == ""


class TestInterpret:
    @pytest.mark.parametrize(
        ("status", "kind"),
        [
            (400, ClientError),
            (401, AuthError),
            (402, ClientError),
            (403, AuthError),
            (404, NotFoundError),
            (409, ConflictError),
            (429, RateLimitedError),
            (500, ServerError),
            (503, ServerError),
            (302, ClientError),
        ],
    )
    def test_status_maps_to_typed_error_naming_vendor_endpoint_status(self, status: int, kind: type) -> None:
        with pytest.raises(kind) as info:
            interpret(SETTINGS, GET, status, httpx.Headers({"content-type": "application/json"}), b'{"error": "boom"}')
        text = str(info.value)
        assert "Puffle" in text
        assert "GET /api/agent/chat/{runId}" in text
        assert f"HTTP {status}" in text

    def test_vendor_text_echoing_the_key_is_redacted(self) -> None:
        body = json.dumps({"error": f"invalid key {KEY}"}).encode()
        with pytest.raises(AuthError) as info:
            interpret(SETTINGS, GET, 401, httpx.Headers({}), body)
        assert KEY not in str(info.value)
        assert "***" in str(info.value)

    def test_429_reads_header_then_body_hint(self) -> None:
        with pytest.raises(RateLimitedError) as info:
            interpret(SETTINGS, GET, 429, httpx.Headers({"retry-after": "9"}), b"{}")
        assert info.value.retry_after == 9.0
        with pytest.raises(RateLimitedError) as info:
            interpret(SETTINGS, GET, 429, httpx.Headers({}), b'{"error": "slow down", "retryAfter": 4}')
        assert info.value.retry_after == 4.0

    def test_2xx_non_json_is_malformed(self) -> None:
        with pytest.raises(MalformedResponseError, match="not JSON"):
            interpret(SETTINGS, GET, 200, httpx.Headers({}), b'{"runId": "run_1", "status": ')


def _client_with(handler: httpx.MockTransport, options: ClientOptions | None = None) -> ApiClient:
    client = ApiClient(SETTINGS, options or ClientOptions(retry=RetryPolicy(base_delay=0.01, max_delay=0.02)))
    client._http = httpx.Client(base_url=SETTINGS.base_url, transport=handler, follow_redirects=False)
    return client


class TestClientsWithMockTransport:
    """Unit level (mocked transport). The same behaviours run over loopback in tests/integration."""

    def test_redirect_is_not_followed(self) -> None:
        transport = httpx.MockTransport(lambda r: httpx.Response(302, headers={"location": "https://evil.example/x"}))
        with pytest.raises(ClientError, match="redirects are not followed"):
            _client_with(transport).send(GET)

    def test_body_over_cap_is_refused_with_and_without_content_length(self) -> None:
        big = b"{" + b" " * 5000 + b"}"
        options = ClientOptions(max_response_bytes=1000)
        with pytest.raises(ResponseTooLargeError):
            _client_with(httpx.MockTransport(lambda r: httpx.Response(200, content=big)), options).send(GET)

        def streamed(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=iter([b"{", b" " * 600, b" " * 600, b"}"]))

        with pytest.raises(ResponseTooLargeError):
            _client_with(httpx.MockTransport(streamed), options).send(GET)

    def test_get_retries_5xx_then_succeeds_post_does_not(self) -> None:
        calls: list[str] = []

        def flaky(request: httpx.Request) -> httpx.Response:
            calls.append(request.method)
            if len([c for c in calls if c == request.method]) < 3:
                return httpx.Response(503, text="busy")
            return httpx.Response(200, json={"ok": True})

        client = _client_with(httpx.MockTransport(flaky))
        assert client.send(GET) == {"ok": True}
        assert calls.count("GET") == 3
        with pytest.raises(ServerError):
            client.send(POST)
        assert calls.count("POST") == 1

    def test_retry_line_counts_against_the_policy_in_force(self, caplog: pytest.LogCaptureFixture) -> None:
        """A call's own retry policy (a cancel's, say) is the one its retry lines count against, not the
        client's default."""

        def busy(request: httpx.Request) -> httpx.Response:
            return httpx.Response(503, text="busy")

        client = _client_with(httpx.MockTransport(busy))  # default policy: 4 attempts
        with caplog.at_level("WARNING"), pytest.raises(ServerError):
            client.send(GET, retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02))
        retries = [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]
        assert len(retries) == 1 and retries[0].endswith("; retry 1/1 in 0.0s"), retries  # delays are <= 0.02 s

    def test_none_params_are_dropped(self) -> None:
        seen: list[str] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(
                str(request.url.query, "ascii") if isinstance(request.url.query, bytes) else str(request.url.query)
            )
            return httpx.Response(200, json={})

        request = ApiRequest("GET", "/x", "GET /x", params={"user_id": "u1", "project_id": None, "cursor": None})
        _client_with(httpx.MockTransport(record)).send(request)
        assert seen == ["user_id=u1"]

    @pytest.mark.anyio
    async def test_async_client_maps_connect_errors_as_not_reached(self) -> None:
        client = AsyncApiClient(SETTINGS, ClientOptions(retry=RetryPolicy(max_attempts=1)))
        try:
            with pytest.raises(TransportError) as info:
                await client.send(GET)  # nothing listens on port 1
            assert info.value.reached_server is False
            assert KEY not in str(info.value)
        finally:
            await client.aclose()
