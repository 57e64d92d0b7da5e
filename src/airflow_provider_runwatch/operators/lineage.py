"""OpenLineage run facets for the run operators (only imported when apache-airflow-providers-openlineage is).

On completion and on failure every run operator reports one ``runwatch`` run facet: which vendor ran what (run id,
agent / workflow / flow id), how it ended (normalized and vendor state), what it cost, the run's link where the
vendor gave one, and the vendor's error. It is built from what the task pushed as its ``run_id``, ``run_url`` and
``run`` XComs (kept on the task as it pushed them), which already follow the rule that no secret reaches XCom, so
lineage carries nothing the task did not already record, and the conversations (big, possibly personal) stay out.
"""

from __future__ import annotations

from typing import Any

import attr
from airflow.providers.openlineage.extractors import OperatorLineage
from openlineage.client.facet_v2 import RunFacet

#: The run facet's key in the OpenLineage event (``run.facets.runwatch``).
FACET_KEY = "runwatch"
#: Operator attributes naming what was run, by facet field (the first one an operator has is used).
SUBJECTS = ("agent_id", "workflow_id", "flow_id")


@attr.define
class RunwatchRunFacet(RunFacet):
    """One hosted agent run, as the task saw it end (field names in camelCase, as OpenLineage facets have them)."""

    vendor: str
    kind: str
    runId: str | None = None
    runUrl: str | None = None
    agentId: str | None = None
    workflowId: str | None = None
    flowId: str | None = None
    state: str | None = None
    vendorState: str | None = None
    cost: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    durationSeconds: float | None = None
    error: str | None = None


def run_lineage(task: Any, task_instance: Any, *, failed: bool) -> OperatorLineage:  # type: ignore[type-arg]
    """The ``runwatch`` run facet of ``task``'s run, from what the task recorded while it ran (no I/O: the
    OpenLineage listener calls this in a forked process by default, which cannot reach the API server)."""
    summary = getattr(task, "last_run", None)
    summary = summary if isinstance(summary, dict) else {}
    run_id = summary.get("run_id") or getattr(task, "_run_id", None)
    url = summary.get("url") or getattr(task, "_run_url", None)
    ids = {name: getattr(task, name, None) for name in SUBJECTS}
    state = summary.get("state") or ("failed" if failed else None)
    if failed and not run_id:
        state = "not started"
    error = summary.get("error") or (summary.get("extra") or {}).get("error")
    facet = RunwatchRunFacet(
        vendor=task.vendor_name,
        kind=task.adapter.noun,
        runId=str(run_id) if run_id else None,
        runUrl=url if isinstance(url, str) and url else None,
        agentId=_text(ids["agent_id"]),
        workflowId=_text(ids["workflow_id"]),
        flowId=_text(ids["flow_id"]),
        state=state,
        vendorState=summary.get("vendor_state"),
        cost=summary.get("cost"),
        usage=summary.get("usage"),
        durationSeconds=summary.get("duration_seconds"),
        error=error or None,
    )
    return OperatorLineage(run_facets={FACET_KEY: facet})


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
