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


# -- admission_wait, give_up_line: when to stop, and what the task says then ----------------------------------------
def test_waits_are_cut_to_start_timeout_then_stop() -> None:
    from airflow_provider_runwatch.core.admission import admission_wait

    refusal = refusal_of(_limited(retry_after=30))
    assert refusal is not None

    def wait(attempt: int, now: float, start_timeout: float | None = 40.0) -> float | None:
        return admission_wait(
            DEFAULT, refusal, attempt, now=now, first_refused=100.0, start_timeout=start_timeout, deadline=None
        )

    first = wait(1, 100.0)
    assert first is not None and 30 <= first <= 33
    assert wait(2, 135.0) == 5.0, "cut to what is left"
    assert wait(3, 140.0) is None
    assert wait(1, 100.0, start_timeout=None) is None


def test_a_wait_never_passes_the_tasks_own_deadline() -> None:
    from airflow_provider_runwatch.core.admission import admission_wait

    refusal = refusal_of(_limited(retry_after=30))
    assert refusal is not None
    wait = admission_wait(DEFAULT, refusal, 1, now=100.0, first_refused=100.0, start_timeout=3600.0, deadline=110.0)
    assert wait == 10.0
    assert admission_wait(DEFAULT, refusal, 2, now=110.0, first_refused=100.0, start_timeout=3600, deadline=110) is None


def test_the_give_up_line_names_the_limit_the_time_the_attempts_and_what_to_do() -> None:
    from airflow_provider_runwatch.core.admission import give_up_line, span

    refusal = refusal_of(_limited())
    assert refusal is not None
    line = give_up_line(refusal, 7, 3725.0, 3600.0, by_deadline=False)
    assert line.startswith("Gumloop POST /agents/{agent_id}/sessions refused the start (HTTP 429: Agent concurrency")
    assert "still refused after 7 attempts over 1 h 2 min (start_timeout 1 h; nothing was started)" in line
    assert "Raise start_timeout" in line and "a pool" in line and "batch operator" in line
    assert "execution_timeout leaves no time" in give_up_line(refusal, 1, 5.0, 60.0, by_deadline=True)
    assert "start_timeout=None fails at the first refusal" in give_up_line(refusal, 1, 0.0, None, by_deadline=False)
    assert [span(s) for s in (0.84, 42, 725, 21600, 9000)] == ["0.8 s", "42 s", "12 min 5 s", "6 h", "2 h 30 min"]


DEFAULT = AdmissionBackoff()


def test_start_timeout_is_validated_like_timeout_and_defaults_to_six_hours() -> None:
    from datetime import timedelta

    from airflow_provider_runwatch.core.admission import DEFAULT_START_TIMEOUT
    from airflow_provider_runwatch.core.errors import ConfigurationError
    from airflow_provider_runwatch.core.retry import ADMITTED_STARTS
    from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator

    assert PuffleAgentChatOperator(task_id="a", message="m").start_timeout == DEFAULT_START_TIMEOUT == 6 * 3600
    assert PuffleAgentChatOperator(task_id="b", message="m", start_timeout=timedelta(minutes=2)).start_timeout == 120
    assert PuffleAgentChatOperator(task_id="c", message="m", start_timeout=None).start_timeout is None
    with pytest.raises(ConfigurationError, match="start_timeout must be positive"):
        PuffleAgentChatOperator(task_id="d", message="m", start_timeout=0)
    assert PuffleAgentChatOperator.hook_retry is ADMITTED_STARTS
