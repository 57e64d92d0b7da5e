"""Puffle operator: start an agent chat run, wait, return its final text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_runwatch.operators.base import RunOperator, StartedRun

if TYPE_CHECKING:
    from airflow.sdk import Context

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
