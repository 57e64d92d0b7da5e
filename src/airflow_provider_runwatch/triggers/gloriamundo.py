"""GloriaMundo trigger: polls ``GET /runs/{run_id}/status`` on the triggerer, inside the key's budget."""

from __future__ import annotations

from airflow_provider_runwatch.hooks.gloriamundo import GloriaMundoHook
from airflow_provider_runwatch.triggers.base import RunTrigger
from airflow_provider_runwatch.vendors.gloriamundo import WORKFLOW_RUNS


class GloriaMundoRunTrigger(RunTrigger):
    """Waits for a GloriaMundo workflow run, logging its progress as it changes.

    Every poll draws from the per-key budget shared by all triggers of the same API key on this
    triggerer (``polls_per_minute`` on the connection, default 50), handed out first come, first served,
    so the effective interval of each run is ``max(poll_interval, runs_of_this_key * 60 / polls_per_minute)``.
    GloriaMundo has no cancel: ``on_kill`` logs that the run goes on, with its id.
    """

    hook_class = GloriaMundoHook
    adapter = WORKFLOW_RUNS
