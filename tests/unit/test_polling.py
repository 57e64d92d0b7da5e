"""The Poller's decisions, with a fake clock (no sleeping): the same object drives trigger and sync wait."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_runwatch.core.errors import (
    AuthError,
    ConfigurationError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
    with_hint,
)
from airflow_provider_runwatch.core.http import RetryPolicy
from airflow_provider_runwatch.core.models import RunEvent, RunState, RunStatus
from airflow_provider_runwatch.core.polling import Poller, WaitOptions, event_for, outcome_of, watch_async, watch_sync


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def status(state: RunState, vendor_state: str | None = None, **kw: object) -> RunStatus:
    return RunStatus(vendor="Puffle", run_id="run_1", state=state, vendor_state=vendor_state or state.value, **kw)


def poller(clock: Clock, **options: object) -> Poller:
    opts = WaitOptions(poll_interval=float(options.pop("poll_interval", 2.0)), **options)  # type: ignore[arg-type]
    return Poller(
        vendor="Puffle", run_id="run_1", options=opts, log=logging.getLogger("t"), clock=clock, retry=RetryPolicy()
    )


def run(clock: Clock, p: Poller, answers: list[object]) -> tuple[RunEvent, int]:
    calls = 0

    def fetch() -> RunStatus:
        nonlocal calls
        answer = answers[min(calls, len(answers) - 1)]
        calls += 1
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, RunStatus)
        return answer

    return watch_sync(p, fetch, sleep=clock.sleep), calls


def test_runs_to_success_polling_at_the_interval() -> None:
    clock = Clock()
    p = poller(clock)
    event, calls = run(clock, p, [status(RunState.QUEUED), status(RunState.RUNNING), status(RunState.SUCCEEDED)])
    assert event.status == "success"
    assert calls == 3
    assert event.vendor_state == "succeeded"
    # first poll within one interval (random phase), then two intervals
    assert 1_004.0 <= clock.now <= 1_006.0


@pytest.mark.parametrize(
    ("state", "expected"),
    [(RunState.FAILED, "failed"), (RunState.CANCELLED, "cancelled"), (RunState.PAUSED, "paused")],
)
def test_terminal_and_paused_states_end_the_wait(state: RunState, expected: str) -> None:
    clock = Clock()
    event, _ = run(clock, poller(clock), [status(state, error="tool timed out")])
    assert event.status == expected
    assert event.message == "tool timed out"


def test_paused_keeps_waiting_when_asked() -> None:
    clock = Clock()
    event, calls = run(
        clock,
        poller(clock, stop_on_paused=False),
        [status(RunState.PAUSED), status(RunState.PAUSED), status(RunState.SUCCEEDED)],
    )
    assert event.status == "success"
    assert calls == 3


def test_transient_failures_within_budget_do_not_end_the_wait() -> None:
    clock = Clock()
    boom = ServerError(vendor="Puffle", endpoint="GET x", status_code=503)
    event, calls = run(clock, poller(clock, max_consecutive_failures=3), [boom, boom, status(RunState.SUCCEEDED)])
    assert event.status == "success"
    assert calls == 3


def test_budget_counts_consecutive_failures_only() -> None:
    clock = Clock()
    boom = TransportError(reached_server=True, vendor="Puffle", endpoint="GET x")
    answers: list[object] = [boom, boom, status(RunState.RUNNING), boom, boom, status(RunState.SUCCEEDED)]
    event, _ = run(clock, poller(clock, max_consecutive_failures=3), answers)
    assert event.status == "success"


def test_budget_exhausted_names_the_run_and_the_last_error() -> None:
    clock = Clock()
    boom = ServerError(vendor="Puffle", endpoint="GET /api/agent/chat/{runId}", status_code=502, detail="bad gateway")
    event, calls = run(clock, poller(clock, max_consecutive_failures=4), [boom])
    assert event.status == "error"
    assert calls == 4
    assert "4 consecutive" in event.message
    assert "HTTP 502" in event.message
    assert event.run_id == "run_1"
    assert event.gave_up, "only a spent budget leaves the run's fate unknown"


def test_retry_after_is_honoured_over_the_interval() -> None:
    clock = Clock()
    p = poller(clock, poll_interval=1.0)
    p.first_delay = lambda: 0.0  # type: ignore[method-assign]
    limited = RateLimitedError(vendor="Puffle", endpoint="GET x", status_code=429, retry_after=30.0)
    event, _ = run(clock, p, [limited, status(RunState.SUCCEEDED)])
    assert event.status == "success"
    assert clock.now - 1_000.0 >= 30.0


@pytest.mark.parametrize(
    "error",
    [
        AuthError(vendor="Puffle", endpoint="GET x", status_code=401),
        NotFoundError(vendor="Puffle", endpoint="GET x", status_code=404),
        ConfigurationError("bad run id"),
        ValueError("a bug"),
    ],
)
def test_permanent_errors_end_at_once(error: Exception) -> None:
    clock = Clock()
    event, calls = run(clock, poller(clock), [error])
    assert event.status == "error"
    assert calls == 1
    assert not event.gave_up, "the vendor answered: the failure line must not say the run may still be going"


def test_deadline_fires_at_the_absolute_time_not_later() -> None:
    clock = Clock()
    p = poller(clock, poll_interval=10.0, deadline=1_025.0)
    event, calls = run(clock, p, [status(RunState.RUNNING)])
    assert event.status == "timeout"
    assert clock.now == pytest.approx(1_025.0)
    assert "still going" in event.message
    assert calls >= 2


def test_a_poll_cut_at_the_deadline_ends_with_the_timeout_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    """A poll cut short at the deadline (its answer, or a slot of the key's budget, did not come in the time left)
    ends the wait as if it had said "still running": the timeout outcome, no failure counted or logged, even with
    the failure budget one short of spent."""
    clock = Clock()
    p = poller(clock, poll_interval=1.0, deadline=1_010.0, max_consecutive_failures=2)
    p.first_delay = lambda: 0.0  # type: ignore[method-assign]
    p.after_status(status(RunState.RUNNING))
    cut = TransportError(reached_server=False, vendor="Puffle", endpoint="GET x", detail="no slot within 5s")
    assert p.after_error(cut) == 1.0
    assert p.failures == 1
    clock.now = 1_010.0
    caplog.clear()
    event = p.after_error(cut)
    assert isinstance(event, RunEvent)
    assert (event.status, event.gave_up, p.failures) == ("timeout", False, 1)
    assert event.message.startswith("deadline passed while the run was still going; last seen running")
    assert "failure" not in caplog.text


def test_deadline_already_past_polls_nothing() -> None:
    clock = Clock()
    event, calls = run(clock, poller(clock, deadline=999.0), [status(RunState.RUNNING)])
    assert event.status == "timeout"
    assert calls == 0


def test_unknown_state_is_running_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    odd = status(RunState.RUNNING, vendor_state="thinking_hard", unknown_state=True)
    with caplog.at_level(logging.INFO, logger="t"):
        event, _ = run(clock, poller(clock), [odd, odd, odd, status(RunState.SUCCEEDED)])
    assert event.status == "success"
    warnings = [r for r in caplog.records if "unknown state" in r.getMessage()]
    assert len(warnings) == 1
    changes = [r for r in caplog.records if "vendor state 'thinking_hard'" in r.getMessage()]
    assert len(changes) == 1, "state lines are logged on change, not on every poll"


def test_a_state_line_per_change_of_what_it_shows(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    queued = [status(RunState.QUEUED, queue_position=n) for n in (3, 3, 2, 2)]
    with caplog.at_level(logging.INFO, logger="t"):
        event, calls = run(clock, poller(clock), [*queued, status(RunState.RUNNING), status(RunState.SUCCEEDED)])
    assert event.status == "success" and calls == 6
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(": ", 1)[1] for line in lines] == [
        "queued (vendor state 'queued'), queue position 3",
        "queued (vendor state 'queued'), queue position 2",
        "running (vendor state 'running')",
        "succeeded (vendor state 'succeeded')",
    ]


@pytest.mark.anyio
async def test_watch_async_judges_the_explained_error() -> None:
    """The trigger sends on its client and lets the hook explain the error: the Poller sees (and the event
    says) the explained one, so a permanent error ends the wait with the hint."""
    p = poller(Clock())
    refused = AuthError(vendor="Puffle", endpoint="GET /x", status_code=401, detail="bad key")

    async def fetch() -> RunStatus:
        raise refused

    seen: list[Exception] = []

    def explain(error: Exception) -> Exception:
        seen.append(error)
        return with_hint(refused, "Check the API key of connection 'c'") if error is refused else error

    event = await watch_async(p, fetch, explain=explain)
    assert seen == [refused]
    assert event.status == "error" and "Check the API key of connection 'c'" in event.message


def test_event_is_small_and_strict() -> None:
    event = RunEvent(status="failed", vendor="Puffle", run_id="run_1", message="x" * 5000)
    assert len(event.message) <= 1000
    with pytest.raises(ValueError, match="extra"):
        RunEvent.model_validate({"status": "success", "vendor": "P", "run_id": "r", "api_key": "k"})


@pytest.mark.parametrize(
    ("state", "stop_on_paused", "expected"),
    [
        (RunState.QUEUED, True, None),
        (RunState.RUNNING, True, None),
        (RunState.SUCCEEDED, True, "success"),
        (RunState.FAILED, True, "failed"),
        (RunState.CANCELLED, True, "cancelled"),
        (RunState.PAUSED, True, "paused"),
        (RunState.PAUSED, False, None),
    ],
)
def test_one_decision_from_a_status_to_an_outcome(state: RunState, stop_on_paused: bool, expected: str | None) -> None:
    """The poller, the sensors' poke and the operators' reattachment all use ``outcome_of``: the poller's
    event for a status is the one ``event_for`` builds from it."""
    clock = Clock()
    seen = status(state, error="boom" if state is RunState.FAILED else None)
    assert outcome_of(seen, stop_on_paused=stop_on_paused) == expected
    decided = poller(clock, stop_on_paused=stop_on_paused).after_status(seen)
    if expected is None:
        assert isinstance(decided, float)
    else:
        assert isinstance(decided, RunEvent)
        assert decided == event_for(seen, expected, "" if expected == "success" else None)


def test_a_hint_is_added_once_keeping_the_error_class_and_fields() -> None:
    from airflow_provider_runwatch.core.errors import with_hint

    error = NotFoundError(vendor="Puffle", endpoint="GET x", status_code=404, detail="Run not found.")
    hinted = with_hint(error, "It is gone")
    assert type(hinted) is NotFoundError and hinted.http_status == 404 and hinted.detail == "Run not found."
    assert str(hinted) == "Puffle GET x: not found (HTTP 404): Run not found. It is gone"
    assert with_hint(hinted, "Another hint") is hinted, "the first (the vendor's own) explanation wins"
    assert str(error) == "Puffle GET x: not found (HTTP 404): Run not found.", "the original is left alone"
