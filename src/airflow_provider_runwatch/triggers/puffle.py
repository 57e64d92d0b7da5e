"""Puffle trigger: polls ``GET /api/agent/chat/{runId}`` on the triggerer."""

from __future__ import annotations

from airflow_provider_runwatch.hooks.puffle import PuffleHook
from airflow_provider_runwatch.triggers.base import RunTrigger
from airflow_provider_runwatch.triggers.batch import RunBatchTrigger
from airflow_provider_runwatch.vendors.puffle import CHAT_RUNS


class PuffleChatRunTrigger(RunTrigger):
    """Waits for a Puffle agent chat run. Puffle has no cancel: ``on_kill`` logs that the run goes on."""

    hook_class = PuffleHook
    adapter = CHAT_RUNS


class PuffleChatBatchTrigger(RunBatchTrigger):
    """Watches every running chat run of a Puffle batch. Puffle has no cancel: ``on_kill`` logs the ids."""

    hook_class = PuffleHook
    adapter = CHAT_RUNS
