"""The TaskFlow decorators through real Airflow: the shipped example DAG (example_dags/example_taskflow_decorators.py)
with ``airflow dags test`` against the emulator. What each decorated function returned is what the vendor received,
the tasks deferred like the operators, and their XComs follow the operators' contract."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.conftest import SECRET_KEY, DagResult

pytestmark = pytest.mark.dag

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"
DAG_ID = "example_taskflow_decorators"


@pytest.fixture(scope="module")
def result(dag_runner: Callable[..., DagResult]) -> DagResult:
    return dag_runner(DAG_ID, extra_env={"AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES)})


def test_every_task_succeeded(result: DagResult) -> None:
    assert result.states == dict.fromkeys(["account", "review", "health_report", "summary", "publish"], "success"), (
        result.output[-3000:]
    )


def _words(text: str) -> str:
    return " ".join(text.split())


def test_each_decorator_started_one_run_with_what_the_function_returned(
    result: DagResult, runwatch_emulator: EmulatorServer
) -> None:
    account = result.xcom("account")
    runs = {task: result.xcom(task, "run_id") for task in ("review", "health_report", "summary")}
    for vendor, task in (("gumloop", "review"), ("gloriamundo", "health_report"), ("puffle", "summary")):
        starts = runwatch_emulator.requests(vendor=vendor, method="POST", run_id=runs[task])
        assert len(starts) == 1, (task, starts)
        assert "Deferring: the triggerer polls" in result.output and runs[task] in result.output
    session = runwatch_emulator.run(runs["review"])["data"]
    assert session["agent_id"] == "agent_account_review"
    assert session["prompt"] == (
        f"Review the account health of {account['name']} ({account['plan']} plan) and list the risks."
    )
    workflow = runwatch_emulator.run(runs["health_report"])["data"]
    sent_input = {"account": account["name"], "region": account["region"], "report": "weekly-health"}
    assert workflow["workflow_id"] == "wf_account_health" and workflow["input_keys"] == sorted(sent_input)
    # The chat message was built from the two upstream answers (the functions' arguments are XComArgs).
    chat = runwatch_emulator.run(runs["summary"])["data"]
    review, report = result.xcom("review"), result.xcom("health_report")
    assert _words(chat["prompt"]).startswith(_words("Write a three-line summary for the account team.\nReview:"))
    assert _words(review[:500]) in _words(chat["prompt"]) and report["input"] == sent_input


def test_xcom_contract_is_the_operators(result: DagResult) -> None:
    for task, vendor, has_messages in (
        ("review", "Gumloop", True),
        ("health_report", "GloriaMundo", False),
        ("summary", "Puffle", True),
    ):
        run = result.xcom(task, "run")
        assert run["vendor"] == vendor and run["run_id"] == result.xcom(task, "run_id"), run
        assert run["state"] == "succeeded"
        assert ((task, "messages") in result.xcoms) is has_messages, task
    assert result.xcom("health_report", "run")["cost"]["cost_cents"] > 0
    assert result.xcom("publish") == result.xcom("summary")[:300]
    assert SECRET_KEY not in result.output
