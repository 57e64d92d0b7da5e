"""``@task.gloriamundo_workflow``: the function returns the workflow input (a dict); the task is a
:class:`~airflow_provider_runwatch.operators.gloriamundo.GloriaMundoWorkflowOperator`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory

from airflow_provider_runwatch.decorators.base import RunDecoratedOperator
from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator


class _GloriaMundoWorkflowDecoratedOperator(RunDecoratedOperator, GloriaMundoWorkflowOperator):
    field = "input"
    expected = "the workflow input, a dict (JSON object)"
    custom_operator_name = "@task.gloriamundo_workflow"
    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, "workflow_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **GloriaMundoWorkflowOperator.template_fields_renderers,
    }
    #: Durable as the operator is (the same start, record and reattach code): the Airflow registry's marker.
    __supports_durable_execution: ClassVar[bool] = True

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)


def gloriamundo_workflow_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function that returns the workflow input into a GloriaMundo workflow task.

    Takes every :class:`~airflow_provider_runwatch.operators.gloriamundo.GloriaMundoWorkflowOperator` argument
    except ``input`` (``workflow_id`` is required); the task's return value is the run's ``result`` object.
    """
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=_GloriaMundoWorkflowDecoratedOperator, **kwargs
    )
