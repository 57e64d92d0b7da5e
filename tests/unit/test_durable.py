"""``durable`` (Airflow 3.3's name for retry safety), its deprecated alias ``reattach``, and the marker the Airflow
registry reads to show the "Durable" badge."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from airflow.exceptions import AirflowProviderDeprecationWarning

from airflow_provider_runwatch.core.errors import ConfigurationError
from airflow_provider_runwatch.operators import base
from airflow_provider_runwatch.operators.base import STATE_KEY, RunOperator, StartedRun
from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator
from airflow_provider_runwatch.operators.gumloop import (
    GumloopAgentOperator,
    GumloopFlowOperator,
    GumloopListSessionsOperator,
    GumloopSessionOperator,
)
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator
from airflow_provider_runwatch.sensors.puffle import PuffleChatRunSensor
from tests.helpers import task_context

DURABLE = [PuffleAgentChatOperator, GumloopAgentOperator, GumloopSessionOperator, GumloopFlowOperator]
DURABLE += [GloriaMundoWorkflowOperator]


@pytest.fixture
def fresh_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_warned_reattach", False)


def chat(**kwargs: Any) -> PuffleAgentChatOperator:
    return PuffleAgentChatOperator(task_id="t", message="hi", **kwargs)


def test_durable_by_default() -> None:
    task = chat()
    assert task.durable is True and task.reattach is True


@pytest.mark.usefixtures("fresh_warning")
def test_reattach_is_a_deprecated_alias_that_warns_once_per_process() -> None:
    with pytest.warns(AirflowProviderDeprecationWarning, match="use `durable`"):
        first = chat(reattach=False)
    assert first.durable is False and first.reattach is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second DAG file (or a re-parse) must stay quiet
        second = chat(reattach=True)
    assert second.durable is True


@pytest.mark.usefixtures("fresh_warning")
def test_contradicting_durable_and_reattach_is_refused() -> None:
    with pytest.warns(AirflowProviderDeprecationWarning), pytest.raises(ConfigurationError, match="contradict"):
        chat(durable=False, reattach=True)


def test_durable_from_default_args() -> None:
    from airflow.sdk import DAG

    with DAG("d", default_args={"durable": False}, schedule=None):
        task = chat()
    assert task.durable is False


class FakeStore:
    def __init__(self, **values: Any) -> None:
        self.values = dict(values)
        self.calls: list[str] = []

    def get(self, key: str) -> Any:
        self.calls.append(f"get {key}")
        return self.values.get(key)

    def set(self, key: str, value: Any) -> None:
        self.calls.append(f"set {key}")
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.calls.append(f"delete {key}")
        self.values.pop(key, None)


class TI:
    try_number = 2

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


@pytest.mark.parametrize("durable", [True, False])
def test_durable_false_leaves_the_task_state_store_alone(durable: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow 3.3's meaning: ``durable=False`` reads and writes nothing in task_state_store (a retry starts anew)."""
    task = chat(durable=durable)
    monkeypatch.setattr(type(task), "start_run", lambda self, context: StartedRun("run_new"))
    monkeypatch.setattr(type(task), "_status_of_previous", lambda self, run_id: None)
    store = FakeStore(**{STATE_KEY: "run_old"})
    run_id, status = task.reattach_or_start(task_context(ti=TI(), task_state_store=store))
    assert (run_id, status) == ("run_new", None)
    if durable:
        assert store.calls == [f"get {STATE_KEY}", f"set {STATE_KEY}"] and store.values[STATE_KEY] == "run_new"
    else:
        assert store.calls == [] and store.values[STATE_KEY] == "run_old"


@pytest.mark.parametrize("cls", DURABLE, ids=[c.__name__ for c in DURABLE])
def test_registry_sees_every_run_operator_as_durable(cls: type[RunOperator]) -> None:
    """The registry's manual path (apache/airflow#70291): ``__supports_durable_execution = True`` declared on the
    class itself (name-mangled, so a subclass does not inherit the claim)."""
    assert cls.__dict__.get(f"_{cls.__name__}__supports_durable_execution") is True


@pytest.mark.parametrize("cls", [RunOperator, PuffleChatRunSensor, GumloopListSessionsOperator])
def test_nothing_else_claims_to_be_durable(cls: type[Any]) -> None:
    """Sensors watch a run they are given and the listing starts none: there is nothing to make durable."""
    assert not any(k.endswith("__supports_durable_execution") for k in vars(cls))
