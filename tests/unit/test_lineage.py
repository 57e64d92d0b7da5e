"""The ``runwatch`` OpenLineage facet from what a task recorded (the real path: tests/dag/test_openlineage_dag.py)."""

from __future__ import annotations

import pytest

from airflow_provider_runwatch.operators.gumloop import GumloopFlowOperator
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator

pytest.importorskip("airflow.providers.openlineage")


def test_a_task_that_failed_before_starting_a_run_says_so() -> None:
    task = PuffleAgentChatOperator(task_id="t", message="hi")
    facet = task.get_openlineage_facets_on_failure(None).run_facets["runwatch"]
    assert (facet.vendor, facet.kind, facet.runId, facet.state) == ("Puffle", "chat run", None, "not started")


def test_the_facet_is_what_the_task_pushed() -> None:
    task = GumloopFlowOperator(task_id="t", flow_id="flow_1")
    task._run_id, task._run_url = "r1", "https://www.gumloop.com/pipeline?run_id=r1"
    task.last_run = {"vendor": "Gumloop", "run_id": "r1", "state": "succeeded", "vendor_state": "DONE"}
    facet = task.get_openlineage_facets_on_complete(None).run_facets["runwatch"]
    assert (facet.runId, facet.flowId, facet.state, facet.vendorState) == ("r1", "flow_1", "succeeded", "DONE")
    assert facet.runUrl == task._run_url and facet.error is None and facet.agentId is None
