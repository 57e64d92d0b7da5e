"""The TaskFlow decorators at parse time and on a bad return value (no run is started: no network)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from airflow.sdk import DAG, task

from airflow_provider_runwatch.core.errors import ConfigurationError
from airflow_provider_runwatch.decorators.gloriamundo import _GloriaMundoWorkflowDecoratedOperator
from airflow_provider_runwatch.decorators.gumloop import _GumloopSessionDecoratedOperator
from airflow_provider_runwatch.decorators.puffle import _PuffleChatDecoratedOperator

CASES: list[tuple[str, dict[str, Any], type[Any], Any]] = [
    ("puffle_chat", {}, _PuffleChatDecoratedOperator, "  "),
    ("gumloop_session", {"agent_id": "a"}, _GumloopSessionDecoratedOperator, None),
    ("gloriamundo_workflow", {"workflow_id": "wf"}, _GloriaMundoWorkflowDecoratedOperator, ["not", "a", "dict"]),
]


def _build(name: str, kwargs: dict[str, Any], returns: Any) -> Any:
    with DAG("decorated", schedule=None) as dag:
        # @task.<name>(**kwargs) takes the function and gives what a DAG calls to add the task
        decorator: Callable[..., Callable[[Callable[[], Any]], Callable[[], object]]] = getattr(task, name)

        @decorator(**kwargs)
        def make() -> Any:
            return returns

        make()
    return dag.get_task("make")


@pytest.mark.parametrize(("name", "kwargs", "cls", "bad"), CASES, ids=[c[0] for c in CASES])
def test_airflow_finds_the_decorator_and_builds_the_operator(
    name: str, kwargs: dict[str, Any], cls: type[Any], bad: Any
) -> None:
    op = _build(name, kwargs, "x")
    assert type(op) is cls and op.custom_operator_name == f"@task.{name}"
    assert op.durable is True and op.deferrable in (True, False)
    assert cls.__dict__[f"_{cls.__name__.lstrip('_')}__supports_durable_execution"] is True  # as Python mangles it


@pytest.mark.parametrize(("name", "kwargs", "cls", "bad"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_return_value_fails_before_any_run(name: str, kwargs: dict[str, Any], cls: type[Any], bad: Any) -> None:
    op = _build(name, kwargs, bad)
    with pytest.raises(TypeError, match=rf"@task\.{name}: the decorated function must return .*, got "):
        op.execute({})  # raises before start_run: no hook, no request


def test_the_field_the_function_returns_cannot_also_be_passed() -> None:
    with pytest.raises(ConfigurationError, match="the function returns the message; do not pass message="):
        _build("puffle_chat", {"message": "hi"}, "x")
