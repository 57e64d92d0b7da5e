"""GloriaMundo sensor: wait for a workflow run started elsewhere."""

from __future__ import annotations

from airflow_provider_runwatch.sensors.base import RunSensor


class GloriaMundoRunSensor(RunSensor):
    """Wait for GloriaMundo workflow run ``run_id`` (a UUID); returns its ``result`` object.

    XCom: return value = ``result``; ``run`` = summary with ``cost`` (``cost_cents``), timings
    (``created_at`` = started_at, ``finished_at`` = completed_at, ``duration_seconds``) and the last
    ``progress``. Pokes (and, with ``deferrable=True``, the trigger's polls) draw from the per-key poll
    budget, like the operator's. The sensor did not start the run, so it never tries to stop it
    (GloriaMundo has no cancel anyway).
    """

    hook_class_path = "airflow_provider_runwatch.hooks.gloriamundo.GloriaMundoHook"
    adapter_path = "airflow_provider_runwatch.vendors.gloriamundo.WORKFLOW_RUNS"
    trigger_class_path = "airflow_provider_runwatch.triggers.gloriamundo.GloriaMundoRunTrigger"
    default_poll_interval = 5.0
