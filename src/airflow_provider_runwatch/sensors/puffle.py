"""Puffle sensor: wait for an agent chat run started elsewhere."""

from __future__ import annotations

from airflow_provider_runwatch.sensors.base import RunSensor


class PuffleChatRunSensor(RunSensor):
    """Wait for Puffle chat run ``run_id`` (must start with ``run_``); returns its final text."""

    hook_class_path = "airflow_provider_runwatch.hooks.puffle.PuffleHook"
    adapter_path = "airflow_provider_runwatch.vendors.puffle.CHAT_RUNS"
    trigger_class_path = "airflow_provider_runwatch.triggers.puffle.PuffleChatRunTrigger"
    default_poll_interval = 2.0
