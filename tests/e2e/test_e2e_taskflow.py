"""The TaskFlow decorators' example DAG in a real deployment (scheduler, worker, triggerer): each decorated task's
answer is what the emulator's vendor API says that run answered."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deployment import SECRET_KEY, Deployment

pytestmark = pytest.mark.e2e

DAG_ID = "example_taskflow_decorators"


def test_taskflow_decorators(deployment: Deployment, happy_runs: dict[str, dict[str, Any]]) -> None:
    dag_run_id = str(happy_runs[DAG_ID]["dag_run_id"])
    assert happy_runs[DAG_ID]["state"] == "success", deployment.explain(DAG_ID, dag_run_id)
    tis = deployment.task_instances(DAG_ID, dag_run_id)
    assert {key: ti["state"] for key, ti in tis.items()} == dict.fromkeys(
        ["account", "review", "health_report", "summary", "publish"], "success"
    )
    for task_id, kind in (("review", "gumloop_session"), ("health_report", "gloriamundo"), ("summary", "puffle")):
        run_id = deployment.xcom(DAG_ID, dag_run_id, task_id, "run_id")
        assert deployment.xcom(DAG_ID, dag_run_id, task_id) == deployment.vendor_answer(kind, run_id), task_id
        assert len(deployment.starts_of(kind, run_id)) == 1, task_id
    assert SECRET_KEY not in str(tis["summary"].get("rendered_fields"))
