"""OpenLineage through real Airflow: the OpenLineage provider's listener, its file transport, a DAG run against the
emulator (tests/dags/runwatch_test_lineage.py). Every run task's COMPLETE or FAIL event carries the ``runwatch``
run facet, with what the emulator holds for that run, and no secret anywhere in the events."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.conftest import SECRET_KEY, DagResult

pytest.importorskip("airflow.providers.openlineage", reason="needs apache-airflow-providers-openlineage")
pytestmark = pytest.mark.dag

DAG_ID = "runwatch_test_lineage"


@pytest.fixture(scope="module")
def lineage(
    dag_runner: Callable[..., DagResult], tmp_path_factory: pytest.TempPathFactory
) -> tuple[DagResult, list[dict[str, Any]]]:
    events_file = tmp_path_factory.mktemp("openlineage") / "events.jsonl"
    transport = {"type": "file", "log_file_path": str(events_file), "append": True}
    result = dag_runner(
        DAG_ID,
        extra_env={
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "runwatch-test",
            "AIRFLOW__OPENLINEAGE__DISABLED": "False",
        },
    )
    text = events_file.read_text() if events_file.exists() else ""
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    return result, events


def _facets(events: list[dict[str, Any]], task_id: str, event_type: str) -> dict[str, Any]:
    found = [
        e["run"]["facets"]
        for e in events
        if e.get("eventType") == event_type and e.get("job", {}).get("name") == f"{DAG_ID}.{task_id}"
    ]
    assert len(found) == 1, (task_id, event_type, [(e.get("eventType"), e.get("job")) for e in events])
    facets: dict[str, Any] = found[0]
    return facets


def test_dag_ran(lineage: tuple[DagResult, list[dict[str, Any]]]) -> None:
    result, events = lineage
    assert result.states == {"workflow": "success", "flow": "success", "session": "success", "chat_failed": "failed"}
    assert events, result.output[-3000:]


def test_completed_runs_report_their_facet(
    lineage: tuple[DagResult, list[dict[str, Any]]], runwatch_emulator: EmulatorServer
) -> None:
    result, events = lineage
    workflow = _facets(events, "workflow", "COMPLETE")["runwatch"]
    run_id = result.xcom("workflow", "run_id")
    assert workflow["vendor"] == "GloriaMundo" and workflow["kind"] == "workflow run"
    assert workflow["runId"] == run_id and workflow["workflowId"] == "wf_lineage"
    assert workflow["state"] == "succeeded" and workflow["vendorState"] == "completed"
    assert workflow["cost"] == {"cost_cents": runwatch_emulator.run(run_id)["data"]["cost_cents"]}
    assert workflow["_schemaURL"].startswith("https://openlineage.io/spec/") and "error" not in workflow

    flow = _facets(events, "flow", "COMPLETE")["runwatch"]
    assert flow["runId"] == result.xcom("flow", "run_id") and flow["flowId"] == "flow_lineage"
    assert flow["runUrl"] == result.xcom("flow", "run_url") == runwatch_emulator.run(flow["runId"])["data"]["url"]

    session = _facets(events, "session", "COMPLETE")["runwatch"]  # a TaskFlow-decorated task reports the same
    assert session["vendor"] == "Gumloop" and session["agentId"] == "agent_lineage"
    assert (
        session["runId"] == result.xcom("session", "run_id")
        and session["usage"] == result.xcom("session", "run")["usage"]
    )


def test_a_failed_run_reports_state_and_error(lineage: tuple[DagResult, list[dict[str, Any]]]) -> None:
    result, events = lineage
    chat = _facets(events, "chat_failed", "FAIL")["runwatch"]
    assert chat["vendor"] == "Puffle" and chat["runId"] == result.xcom("chat_failed", "run_id")
    assert chat["state"] == "failed" and chat["vendorState"] == "failed"
    assert "tool exploded" in chat["error"]


def test_no_secret_in_any_event(lineage: tuple[DagResult, list[dict[str, Any]]]) -> None:
    _, events = lineage
    assert SECRET_KEY not in json.dumps(events)
