"""Puffle hook: agent chat runs, blocking and asyncio."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_runwatch.hooks.base import RunwatchHook
from airflow_provider_runwatch.vendors import puffle
from airflow_provider_runwatch.vendors.puffle import PUFFLE, PuffleChatRun, PuffleChatStarted


class PuffleHook(RunwatchHook):
    """Talks to Puffle's agent chat API. Connection: host = API base URL, password = admin API key."""

    vendor = PUFFLE
    default_conn_name = "puffle_default"
    conn_type = "puffle"
    hook_name = "Puffle"
    adapter = puffle.CHAT_RUNS

    def start_chat(
        self, message: str, history: Sequence[Any] | None = None, conversation_id: str | None = None
    ) -> PuffleChatStarted:
        """Start a chat run. Not retried once it may have reached Puffle (no idempotency key exists)."""
        return self.call(puffle.start_chat(message, history, conversation_id))

    async def astart_chat(
        self, message: str, history: Sequence[Any] | None = None, conversation_id: str | None = None
    ) -> PuffleChatStarted:
        return await self.acall(puffle.start_chat(message, history, conversation_id))

    def get_chat_run(self, run_id: str) -> PuffleChatRun:
        return self.call(puffle.get_chat_run(run_id))

    async def aget_chat_run(self, run_id: str) -> PuffleChatRun:
        return await self.acall(puffle.get_chat_run(run_id))

    def probe(self) -> str:
        """Puffle has no "whoami": ask for a run id that cannot exist; nothing is started."""
        return self.probe_missing_run(lambda: self.get_chat_run("run_runwatch_connection_test"))
