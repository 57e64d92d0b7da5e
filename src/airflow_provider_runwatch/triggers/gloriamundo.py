"""GloriaMundo trigger: polls ``GET /runs/{run_id}/status`` on the triggerer, inside the key's budget."""

from __future__ import annotations

from typing import Any

from airflow_provider_runwatch.hooks.gloriamundo import GloriaMundoHook
from airflow_provider_runwatch.triggers.base import RunTrigger
from airflow_provider_runwatch.triggers.batch import RunBatchTrigger
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

    def __init__(self, *, poll_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.with_poll_url(poll_url)

    def with_poll_url(self, poll_url: str | None) -> GloriaMundoRunTrigger:
        """Poll the execute answer's ``poll_url`` (a path on the connection's host, not a secret)."""
        self.poll_url = poll_url
        self.adapter = WORKFLOW_RUNS.with_poll_url(poll_url)  # type: ignore[misc]
        return self

    def serialize(self) -> tuple[str, dict[str, Any]]:
        classpath, kwargs = super().serialize()
        return classpath, {**kwargs, "poll_url": self.poll_url}


class GloriaMundoBatchTrigger(RunBatchTrigger):
    """Watches every running workflow run of a GloriaMundo batch. All its polls draw from the key's budget
    (``polls_per_minute``), so N runs are each polled about every ``max(poll_interval, N * 60 / budget)`` s.
    GloriaMundo has no cancel: ``on_kill`` logs the runs that go on, with their ids."""

    hook_class = GloriaMundoHook
    adapter = WORKFLOW_RUNS
