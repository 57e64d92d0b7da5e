"""Operator resume validation and option checks (unit level: no Airflow run, no network)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_runwatch.core.errors import ConfigurationError
from airflow_provider_runwatch.operators.base import RunFailedError
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator


def op(**kw: Any) -> PuffleAgentChatOperator:
    return PuffleAgentChatOperator(task_id="t", message="hi", **kw)


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (None, "resumed without a trigger event"),
        ("success", "trigger event must be a dict, got str"),
        ({"status": "done", "vendor": "Puffle", "run_id": "run_1"}, "malformed trigger event (status:"),
        ({"vendor": "Puffle", "run_id": "run_1"}, "malformed trigger event (status: Field required"),
        ({"status": "success", "vendor": "Puffle", "run_id": "run_1", "x": 1}, "malformed trigger event (x:"),
        ({"status": "success", "vendor": "Puffle", "run_id": "run_2"}, "is about run 'run_2', not the run this task"),
    ],
)
def test_unexpected_events_are_clear_errors(event: Any, problem: str) -> None:
    with pytest.raises(RunFailedError) as info:
        op().execute_complete(context={}, event=event, run_id="run_1")  # type: ignore[arg-type]
    assert problem in str(info.value)
    assert "Puffle chat run run_1" in str(info.value)


def test_failure_event_is_one_line_with_what_to_do() -> None:
    pushed: dict[str, Any] = {}

    class TI:
        def xcom_push(self, key: str, value: Any) -> None:
            pushed[key] = value

    event = {
        "status": "failed",
        "vendor": "Puffle",
        "run_id": "run_1",
        "state": "failed",
        "vendor_state": "failed",
        "message": "tool crashed",
    }
    with pytest.raises(RunFailedError) as info:
        op().execute_complete(context={"ti": TI()}, event=event, run_id="run_1")  # type: ignore[arg-type]
    assert str(info.value) == (
        "Puffle chat run run_1 failed (vendor state 'failed'): tool crashed. "
        "Check the input and the agent, then retry the task."
    )
    assert pushed["run"]["outcome"] == "failed"
    assert pushed["run"]["error"] == "tool crashed"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"timeout": 0}, "timeout must be positive"),
        ({"timeout": timedelta(seconds=-1)}, "timeout must be positive"),
        ({"poll_interval": -2}, "poll_interval must be positive"),
        ({"max_consecutive_failures": 0}, "max_consecutive_failures must be >= 1"),
    ],
)
def test_bad_options_fail_at_parse_time(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        op(**kwargs)


def test_defaults_and_timedelta() -> None:
    task = op(timeout=timedelta(minutes=2))
    assert task.timeout == 120.0
    assert task.poll_interval == 2.0
    assert task.cancel_on_kill is True
    assert task.reattach is True
