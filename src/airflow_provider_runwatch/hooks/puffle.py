"""Puffle hook: agent chat runs, blocking and asyncio."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_runwatch.hooks.base import RunwatchHook, twins
from airflow_provider_runwatch.vendors import puffle
from airflow_provider_runwatch.vendors.puffle import PUFFLE, PuffleChatRun, PuffleChatStarted

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.calls import Call
    from airflow_provider_runwatch.core.connection import ConnectionSettings


class PuffleHook(RunwatchHook):
    """Talks to Puffle's agent chat API. Connection: host = API base URL, password = admin API key."""

    vendor = PUFFLE
    default_conn_name = "puffle_default"
    conn_type = "puffle"
    hook_name = "Puffle"
    adapter = puffle.CHAT_RUNS

    # Each operation is defined once, as the call it sends; ``twins`` makes the blocking and asyncio methods.
    def _start_chat(
        self,
        settings: ConnectionSettings,
        message: str,
        history: Sequence[Any] | None = None,
        conversation_id: str | None = None,
    ) -> Call[PuffleChatStarted]:
        """Start a chat run. Not retried once it may have reached Puffle (no idempotency key exists)."""
        return puffle.start_chat(message, history, conversation_id)

    start_chat, astart_chat = twins(_start_chat)

    def _get_chat_run(self, settings: ConnectionSettings, run_id: str) -> Call[PuffleChatRun]:
        """The chat run: its status, and its text, messages and usage once it is over."""
        return puffle.get_chat_run(run_id)

    get_chat_run, aget_chat_run = twins(_get_chat_run)

    def probe(self) -> str:
        """Puffle has no "whoami": ask for a run id that cannot exist; nothing is started."""
        return self.probe_missing_run(lambda: self.get_chat_run("run_runwatch_connection_test"))
