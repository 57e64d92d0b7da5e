"""``@task.puffle_chat``: the function returns the message; the task is a
:class:`~airflow_provider_runwatch.operators.puffle.PuffleAgentChatOperator`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory

from airflow_provider_runwatch.decorators.base import RunDecoratedOperator
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator


class _PuffleChatDecoratedOperator(RunDecoratedOperator, PuffleAgentChatOperator):
    field = "message"
    expected = "the message, a non-empty string"
    custom_operator_name = "@task.puffle_chat"
    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, "history", "conversation_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **PuffleAgentChatOperator.template_fields_renderers,
    }
    #: Durable as the operator is (the same start, record and reattach code): the Airflow registry's marker.
    __supports_durable_execution: ClassVar[bool] = True


def puffle_chat_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function that returns a message into a Puffle agent chat task.

    Takes every :class:`~airflow_provider_runwatch.operators.puffle.PuffleAgentChatOperator` argument except
    ``message``; the task's return value is the agent's final text.
    """
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=_PuffleChatDecoratedOperator, **kwargs
    )
