"""Start admission's pure decisions: which errors are refusals worth waiting for, and how long to wait."""

from __future__ import annotations

import pytest

from airflow_provider_runwatch.core.admission import AdmissionBackoff, Refusal, refusal_of
from airflow_provider_runwatch.core.errors import ClientError, RateLimitedError, ServerError, TransportError


def _limited(retry_after: float | None = None, detail: str = "Agent concurrency limit reached") -> RateLimitedError:
    return RateLimitedError(
        vendor="Gumloop",
        endpoint="POST /agents/{agent_id}/sessions",
        status_code=429,
        detail=detail,
        retry_after=retry_after,
    )


def test_a_429_is_a_refusal_with_the_vendors_words_and_hint() -> None:
    refusal = refusal_of(_limited(retry_after=30))
    assert refusal == Refusal("Gumloop", "POST /agents/{agent_id}/sessions", "Agent concurrency limit reached", 30)
    assert refusal.describe() == (
        "Gumloop POST /agents/{agent_id}/sessions refused the start "
        "(HTTP 429: Agent concurrency limit reached; Retry-After 30 s)"
    )


@pytest.mark.parametrize(
    "error",
    [
        ClientError(vendor="GloriaMundo", endpoint="POST /workflows/{workflow_id}/execute", status_code=402),
        ServerError(vendor="Puffle", endpoint="POST /api/agent/chat", status_code=503),
        TransportError(vendor="Puffle", endpoint="POST /api/agent/chat", reached_server=True),
        ValueError("not a vendor error"),
    ],
)
def test_anything_but_a_429_is_not_admitted(error: BaseException) -> None:
    # A 5xx or a dropped connection may have started the run: starting again could make a duplicate.
    assert refusal_of(error) is None


def test_retry_after_wins_within_its_cap_plus_at_most_ten_percent() -> None:
    backoff = AdmissionBackoff(max_retry_after=100)
    for _ in range(200):
        assert 30 <= backoff.delay(refusal_of(_limited(30)), 1) <= 33  # type: ignore[arg-type]
        assert 100 <= backoff.delay(refusal_of(_limited(5000)), 1) <= 110  # type: ignore[arg-type]
        assert 1 <= backoff.delay(refusal_of(_limited(0)), 7) <= 1.1  # type: ignore[arg-type]


def test_without_retry_after_the_backoff_grows_to_its_ceiling_and_never_reaches_zero() -> None:
    backoff = AdmissionBackoff(base=4, ceiling=40)
    refusal = refusal_of(_limited(None))
    assert refusal is not None
    firsts = [backoff.delay(refusal, 1) for _ in range(200)]
    lates = [backoff.delay(refusal, 12) for _ in range(200)]
    assert all(2 <= d <= 4 for d in firsts) and max(firsts) > min(firsts)
    assert all(20 <= d <= 40 for d in lates)


def test_admitted_starts_leave_a_refused_start_to_the_caller_and_retry_everything_else() -> None:
    from airflow_provider_runwatch.core.calls import ApiRequest
    from airflow_provider_runwatch.core.retry import ADMITTED_STARTS, RetryPolicy

    start = ApiRequest("POST", "/api/agent/chat", "POST /api/agent/chat")
    poll = ApiRequest("GET", "/api/agent/chat/run_1", "GET /api/agent/chat/{runId}")
    refused = _limited(1)
    never_sent = TransportError(vendor="Puffle", endpoint="POST /api/agent/chat", reached_server=False)
    assert RetryPolicy().should_retry(start, refused, 1)
    assert not ADMITTED_STARTS.should_retry(start, refused, 1)
    assert ADMITTED_STARTS.should_retry(poll, refused, 1)
    assert ADMITTED_STARTS.should_retry(start, never_sent, 1)
