"""Puffle operators: start an agent chat run, wait, return its final text; and the batch of many."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_runwatch.core.errors import ConfigurationError
from airflow_provider_runwatch.operators.base import RunOperator, StartedRun
from airflow_provider_runwatch.operators.batch import RunBatchOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_runwatch.core.batch import BatchItem
    from airflow_provider_runwatch.hooks.puffle import PuffleHook


class PuffleAgentChatOperator(RunOperator):
    """Run a Puffle agent chat and hand on its answer.

    XCom: ``run_id`` (before waiting); return value = the final ``text``; ``messages`` = the conversation
    as Puffle sent it; ``run`` = summary (state, tool calls, conversation id).

    :param message: the user message (templated, non-empty).
    :param history: earlier turns, a list of ``{"role", "content"}`` (templated).
    :param conversation_id: continue a conversation of yours (a UUID, templated).

    Plus every :class:`~airflow_provider_runwatch.operators.base.RunOperator` option. Puffle advises
    polling every 1-2 s, hence the 2 s default. Puffle cannot cancel a run: a kill or a timeout logs that
    the run goes on, with its id.
    """

    #: Durable without ``ResumableJobMixin`` (see RunOperator's ``durable``): the Airflow registry's marker.
    __supports_durable_execution: ClassVar[bool] = True
    template_fields: Sequence[str] = ("message", "history", "conversation_id")
    template_fields_renderers = {"history": "json"}
    hook_class_path = "airflow_provider_runwatch.hooks.puffle.PuffleHook"
    adapter_path = "airflow_provider_runwatch.vendors.puffle.CHAT_RUNS"
    trigger_class_path = "airflow_provider_runwatch.triggers.puffle.PuffleChatRunTrigger"
    default_poll_interval = 2.0

    def __init__(
        self,
        *,
        message: str,
        history: list[dict[str, str]] | None = None,
        conversation_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.message = message
        self.history = history
        self.conversation_id = conversation_id

    def start_run(self, context: Context) -> StartedRun:
        hook: PuffleHook = self.hook  # type: ignore[assignment]
        started = hook.start_chat(self.message, self.history, self.conversation_id)
        return StartedRun(started.runId)


class PuffleAgentChatBatchOperator(RunBatchOperator):
    """Run one Puffle agent chat per message, at most ``max_concurrency`` at once, in one task.

    Return value: the final ``text`` of each run, in the order of ``messages`` (``None`` where a run did not
    succeed). XCom ``runs``: one summary per message (``index``, ``run_id``, ``state``, ``error``).

    :param messages: the user messages (templated; a list of non-empty strings).
    :param max_concurrency: runs held at once (default 10). A start Puffle refuses with 429 waits for its
        ``Retry-After`` and starts again; nothing else is retried.

    Plus every :class:`~airflow_provider_runwatch.operators.batch.RunBatchOperator` option (``max_failed``,
    ``timeout``, ``deferrable``, ...). Puffle cannot cancel a run: a kill or a timeout logs the runs that go
    on, with their ids. A retry on Airflow < 3.3 (no ``task_state_store``) starts every message again.
    """

    __supports_durable_execution: ClassVar[bool] = True
    template_fields: Sequence[str] = ("messages",)
    template_fields_renderers = {"messages": "json"}
    hook_class_path = PuffleAgentChatOperator.hook_class_path
    adapter_path = PuffleAgentChatOperator.adapter_path
    batch_trigger_class_path = "airflow_provider_runwatch.triggers.puffle.PuffleChatBatchTrigger"
    default_poll_interval = 2.0
    default_max_concurrency = 10
    inputs_attribute = "messages"

    def __init__(self, *, messages: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.messages = messages

    def check_input(self, index: int, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(f"{self.task_id}: messages[{index}] must be a non-empty string, got {value!r}")
        return value

    def start_item(self, context: Context, item: BatchItem, value: Any) -> StartedRun:
        hook: PuffleHook = self.hook  # type: ignore[assignment]
        return StartedRun(hook.start_chat(value).runId)
