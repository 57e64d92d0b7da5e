"""``@task.gumloop_session``: the function returns the input that starts the session; the task is a
:class:`~airflow_provider_runwatch.operators.gumloop.GumloopSessionOperator` (retry-safe on every Airflow 3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory

from airflow_provider_runwatch.decorators.base import RunDecoratedOperator
from airflow_provider_runwatch.operators.gumloop import GumloopSessionOperator


class _GumloopSessionDecoratedOperator(RunDecoratedOperator, GumloopSessionOperator):
    field = "input"
    expected = "the session input, a non-empty string"
    custom_operator_name = "@task.gumloop_session"
    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, "agent_id", "metadata", "session_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **GumloopSessionOperator.template_fields_renderers,
    }
    #: Durable as the operator is (the same start, record and reattach code): the Airflow registry's marker.
    __supports_durable_execution: ClassVar[bool] = True


def gumloop_session_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function that returns the session input into a Gumloop agent session task.

    Takes every :class:`~airflow_provider_runwatch.operators.gumloop.GumloopSessionOperator` argument except
    ``input`` (``agent_id`` is required); the task's return value is the last assistant text.
    """
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=_GumloopSessionDecoratedOperator, **kwargs
    )
