"""Operator resume validation and option checks (unit level: no Airflow run, no network)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_runwatch.core.errors import ConfigurationError
from airflow_provider_runwatch.operators.base import RunFailedError
from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator
from airflow_provider_runwatch.operators.gumloop import (
    GumloopAgentOperator,
    GumloopFlowOperator,
    GumloopSessionOperator,
)
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator
from airflow_provider_runwatch.sensors.gloriamundo import GloriaMundoRunSensor
from airflow_provider_runwatch.sensors.gumloop import GumloopAgentSensor, GumloopFlowSensor, GumloopSessionSensor
from airflow_provider_runwatch.sensors.puffle import PuffleChatRunSensor
from tests.helpers import task_context


def op(**kw: Any) -> PuffleAgentChatOperator:
    return PuffleAgentChatOperator(task_id="t", message="hi", **kw)


#: Every operator and sensor class that defers, with its required arguments, a run id of the right shape, and
#: the name its messages give a run.
RESUMABLE: list[tuple[type[Any], dict[str, Any], str, str]] = [
    (PuffleAgentChatOperator, {"message": "hi"}, "run_1", "Puffle chat run"),
    (GumloopAgentOperator, {"agent_id": "g", "message": "hi"}, "i_1", "Gumloop agent interaction"),
    (GumloopSessionOperator, {"agent_id": "a", "input": "hi"}, "sess_1", "Gumloop session"),
    (GumloopFlowOperator, {"flow_id": "f"}, "r_1", "Gumloop flow run"),
    (GloriaMundoWorkflowOperator, {"workflow_id": "wf"}, "3f1c0d2e-run-1", "GloriaMundo workflow run"),
    (PuffleChatRunSensor, {"run_id": "run_1"}, "run_1", "Puffle chat run"),
    (GumloopAgentSensor, {"run_id": "i_1"}, "i_1", "Gumloop agent interaction"),
    (GumloopSessionSensor, {"run_id": "sess_1"}, "sess_1", "Gumloop session"),
    (GumloopFlowSensor, {"run_id": "r_1"}, "r_1", "Gumloop flow run"),
    (GloriaMundoRunSensor, {"run_id": "3f1c0d2e-run-1"}, "3f1c0d2e-run-1", "GloriaMundo workflow run"),
]


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (None, "resumed without a trigger event"),
        ("success", "trigger event must be a dict, got str"),
        ({"status": "done", "vendor": "V", "run_id": "{run}"}, "malformed trigger event (status:"),
        ({"vendor": "V", "run_id": "{run}"}, "malformed trigger event (status: Field required"),
        ({"status": "success", "vendor": "V", "run_id": "{run}", "x": 1}, "malformed trigger event (x:"),
        ({"status": "success", "vendor": "V", "run_id": "other_2"}, "is about run 'other_2', not the run this task"),
    ],
    ids=["none", "not-a-dict", "unknown-status", "no-status", "extra-field", "another-run"],
)
@pytest.mark.parametrize(("cls", "kwargs", "run_id", "what"), RESUMABLE, ids=[c[0].__name__ for c in RESUMABLE])
def test_unexpected_events_are_clear_errors(
    cls: type[Any], kwargs: dict[str, Any], run_id: str, what: str, event: Any, problem: str
) -> None:
    if isinstance(event, dict):
        event = {
            key: value.replace("{run}", run_id) if isinstance(value, str) else value for key, value in event.items()
        }
    task = cls(task_id="t", **kwargs)
    with pytest.raises(RunFailedError) as info:
        task.execute_complete(context={}, event=event, run_id=run_id)
    assert problem in str(info.value)
    assert str(info.value).startswith(f"{what} {run_id}: ")


class _NoXCom:
    def xcom_push(self, key: str, value: Any) -> None:
        pass


@pytest.mark.parametrize(("cls", "kwargs", "run_id", "what"), RESUMABLE, ids=[c[0].__name__ for c in RESUMABLE])
def test_an_event_of_the_previous_release_with_its_deadline_is_still_read(
    cls: type[Any], kwargs: dict[str, Any], run_id: str, what: str
) -> None:
    """A deferred task resumed across an upgrade gets an event with ``deadline`` (no longer sent)."""
    event = {"status": "cancelled", "vendor": "V", "run_id": run_id, "message": "boom", "deadline": 1.0}
    task = cls(task_id="t", **kwargs)
    with pytest.raises(RunFailedError) as info:
        task.execute_complete(context={"ti": _NoXCom()}, event=event, run_id=run_id)
    assert "malformed" not in str(info.value) and "boom" in str(info.value)


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
        op().execute_complete(context=task_context(ti=TI()), event=event, run_id="run_1")
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


def test_execution_timeout_deadline_anchors() -> None:
    """Deferred: the task's start_date (the whole task's time counts). Blocking: when execute began, where
    Airflow's own timer starts, so the clean failure comes just before Airflow's kill. Margin: 5 s, or a
    fifth of a short limit (a 4 s limit still leaves time to poll)."""

    class TI:
        start_date = datetime.now(timezone.utc) - timedelta(seconds=100)

    now = time.time()
    task = op(execution_timeout=timedelta(seconds=60))
    assert task.deadline(task_context(ti=TI()), None) == pytest.approx(TI.start_date.timestamp() + 55)
    assert task.deadline(task_context(ti=TI()), None, began=now) == pytest.approx(now + 55)
    assert op(execution_timeout=timedelta(seconds=4)).deadline(task_context(), None, began=now) == pytest.approx(
        now + 3.2
    )
    assert task.deadline(task_context(), 10, began=now) == pytest.approx(time.time() + 10, abs=1)
