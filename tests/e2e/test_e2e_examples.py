"""The shipped example DAGs (example_dags/) in a real deployment: triggered through the REST API (all at once,
see ``happy_runs``), task states, XComs and logs read back through the REST API, and every answer compared with
what the emulator itself answers for that run (read from its vendor API, not through the provider)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.deployment import EMULATOR_USER, SECRET_KEY, Deployment
from tests.e2e.conftest import EXAMPLE_DAG_IDS

pytestmark = pytest.mark.e2e


def _run(deployment: Deployment, happy_runs: dict[str, dict[str, Any]], dag_id: str) -> str:
    dag_run_id = str(happy_runs[dag_id]["dag_run_id"])
    assert happy_runs[dag_id]["state"] == "success", deployment.explain(dag_id, dag_run_id)
    return dag_run_id


def _states(deployment: Deployment, dag_id: str, dag_run_id: str) -> dict[str, str]:
    return {key: ti["state"] for key, ti in deployment.task_instances(dag_id, dag_run_id).items()}


def test_every_example_dag_ran(deployment: Deployment, happy_runs: dict[str, dict[str, Any]]) -> None:
    assert EXAMPLE_DAG_IDS == [
        "example_gloriamundo_batch",
        "example_gumloop_agent_batch",
        "example_gumloop_list_sessions",
        "example_gumloop_session_events",
        "example_puffle_chat",
        "example_taskflow_decorators",
    ]
    for dag_id in EXAMPLE_DAG_IDS:
        _run(deployment, happy_runs, dag_id)


def test_puffle_chat(deployment: Deployment, happy_runs: dict[str, dict[str, Any]]) -> None:
    dag_id = "example_puffle_chat"
    dag_run_id = _run(deployment, happy_runs, dag_id)
    assert _states(deployment, dag_id, dag_run_id) == dict.fromkeys(
        ["morning_briefing", "wait_for_briefing", "publish", "triage_tickets", "store"], "success"
    )
    run_id = deployment.xcom(dag_id, dag_run_id, "morning_briefing", "run_id")
    answer = deployment.xcom(dag_id, dag_run_id, "morning_briefing")
    assert answer == deployment.vendor_answer("puffle", run_id)
    # The rendered message (the run's date) is the one the agent answered.
    day = happy_runs[dag_id]["run_after"][:10]
    message = deployment.task_instances(dag_id, dag_run_id)["morning_briefing"]["rendered_fields"]["message"]
    assert day in message and answer.startswith(f"Summary for '{message}'"), (message, answer)
    run = deployment.xcom(dag_id, dag_run_id, "morning_briefing", "run")
    assert run["run_id"] == run_id and run["vendor"] == "Puffle" and run["tool_calls"]
    assert deployment.xcom(dag_id, dag_run_id, "morning_briefing", "messages")[-1]["role"] == "assistant"
    tools = ", ".join(run["tool_calls"])
    assert deployment.xcom(dag_id, dag_run_id, "publish") == f"{answer[:200]} (run {run_id}, {tools})"
    # One chat run; the sensor waited on that same run (it started nothing).
    assert len(deployment.starts_of("puffle", run_id)) == 1
    assert len(deployment.emulator.requests(vendor="puffle", method="POST", run_id=run_id)) == 1
    sensor_log = deployment.task_log(dag_id, dag_run_id, "wait_for_briefing")
    assert run_id in sensor_log


def test_gumloop_agent_batch(deployment: Deployment, happy_runs: dict[str, dict[str, Any]]) -> None:
    """One batch task: a session per account, the answers in account order, the ``runs`` XCom, each started once."""
    dag_id = "example_gumloop_agent_batch"
    dag_run_id = _run(deployment, happy_runs, dag_id)
    assert _states(deployment, dag_id, dag_run_id) == dict.fromkeys(["review_accounts", "load_answers"], "success")
    accounts = ["Acme Corp", "Globex", "Initech", "Umbrella"]  # as in the example
    prompts = [f"Review the account {a}: recent activity, open tickets and renewal risk." for a in accounts]
    answers = deployment.xcom(dag_id, dag_run_id, "review_accounts")
    runs = deployment.xcom(dag_id, dag_run_id, "review_accounts", "runs")
    rows = deployment.xcom(dag_id, dag_run_id, "load_answers")
    assert len(prompts) == len(answers) == len(runs) == len(rows) == 4
    for i, (prompt, answer, run, row) in enumerate(zip(prompts, answers, runs, rows, strict=True)):
        assert (run["index"], run["state"]) == (i, "succeeded")
        session_id = run["run_id"]
        assert answer == deployment.vendor_answer("gumloop_session", session_id)
        assert answer.startswith(f"Summary for '{prompt}'"), (prompt, answer)
        # The downstream task loaded each account's own answer, in input order.
        assert row["answer"] == answer and row["account"] in prompt and row["session_id"] == session_id
        assert len(deployment.starts_of("gumloop_session", session_id)) == 1


def test_gloriamundo_batch(deployment: Deployment, happy_runs: dict[str, dict[str, Any]]) -> None:
    dag_id = "example_gloriamundo_batch"
    dag_run_id = _run(deployment, happy_runs, dag_id)
    inputs = deployment.xcom(dag_id, dag_run_id, "accounts_to_refresh")
    assert _states(deployment, dag_id, dag_run_id) == dict.fromkeys(
        ["accounts_to_refresh", "refresh_accounts", "total_cost"], "success"
    )
    results = deployment.xcom(dag_id, dag_run_id, "refresh_accounts")
    runs = deployment.xcom(dag_id, dag_run_id, "refresh_accounts", "runs")
    cents = 0
    for i, (given, result, run) in enumerate(zip(inputs, results, runs, strict=True)):
        run_id = run["run_id"]
        assert (run["index"], run["state"]) == (i, "succeeded")
        assert result == deployment.vendor_answer("gloriamundo", run_id)
        # The emulator names the first string of the input it got; which key comes first is the metadata
        # database's business (PostgreSQL stores XComs as JSONB, which orders keys by length).
        subjects = [f"Processed '{v}'" for v in given.values() if isinstance(v, str)]
        assert result["input"] == given and result["summary"].startswith(tuple(subjects)), result["summary"]
        recorded = deployment.emulator.run(run_id)["data"]["cost_cents"]  # what the emulator billed
        assert run["cost"]["cost_cents"] == recorded
        cents += recorded
        assert len(deployment.starts_of("gloriamundo", run_id)) == 1
    total = deployment.xcom(dag_id, dag_run_id, "total_cost")
    assert total["runs"] == len(inputs) == total["succeeded"]
    assert total["total_cost_cents"] == cents and total["total_cost_usd"] == f"${cents / 100:.2f}"


def test_gloriamundo_task_log_tells_the_story_without_the_secret(
    deployment: Deployment, happy_runs: dict[str, dict[str, Any]]
) -> None:
    """The log a user reads for the deferred batch: each run's id as it starts, its state changes with progress
    (written by the trigger on the triggerer, shown in the same task log), and the batch's outcome.

    The runs last 20 s from their start (``DEFAULT_SCENARIO``), so whether the trigger sees one running depends
    on how soon the triggerer picks the trigger up: on a loaded box it once took longer than the runs did, and
    the first poll of every run answered ``completed``. So the running lines are required for each run the
    emulator answered ``running`` (a status poll it logged more than a second before the run's end); the final
    line, which the trigger also writes, is required of every run. tests/integration/test_gloriamundo_trigger.py
    and tests/dag_runs/test_gloriamundo_dag.py check the progress lines step by step without that race."""
    dag_id = "example_gloriamundo_batch"
    dag_run_id = _run(deployment, happy_runs, dag_id)
    runs = deployment.xcom(dag_id, dag_run_id, "refresh_accounts", "runs")
    log = deployment.task_log(dag_id, dag_run_id, "refresh_accounts")
    assert len(runs) == 4
    for index, run in enumerate(runs):
        run_id = run["run_id"]
        what = f"GloriaMundo workflow run {run_id}"
        assert f"Started item {index}: {what}" in log, log[-3000:]
        progress = [line for line in log.splitlines() if f"{what}: running (vendor state 'running'), step " in line]
        assert len(progress) == len(set(progress)), progress
        if _answered_running(deployment, run_id):
            assert progress, (run_id, log[-3000:])
        assert f"{what}: succeeded (vendor state 'completed'), step 5/5 Deliver results, 100%" in log, log[-3000:]
    assert "GloriaMundo batch over: 4 items: 4 succeeded" in log
    assert SECRET_KEY not in log


def _answered_running(deployment: Deployment, run_id: str) -> bool:
    """Whether the emulator logged a status poll of the run more than 1 s before its end (the e2e emulator runs
    at speed 1, so the run's duration is in wall seconds): that poll was answered ``running``."""
    record = deployment.emulator.run(run_id)
    ends = datetime.fromisoformat(record["created_at"]).timestamp() + float(record["duration_seconds"])
    polls = [r for r in deployment.emulator.requests(method="GET", run_id=run_id) if r["path"].endswith("/status")]
    return any(r["ts"] < ends - 1.0 for r in polls)


def test_puffle_chat_batch(deployment: Deployment, happy_runs: dict[str, dict[str, Any]]) -> None:
    dag_id = "example_puffle_chat"
    dag_run_id = _run(deployment, happy_runs, dag_id)
    answers = deployment.xcom(dag_id, dag_run_id, "triage_tickets")
    runs = deployment.xcom(dag_id, dag_run_id, "triage_tickets", "runs")
    assert [r["index"] for r in runs] == [0, 1, 2]
    for answer, run in zip(answers, runs, strict=True):
        assert answer == deployment.vendor_answer("puffle", run["run_id"])
        assert len(deployment.starts_of("puffle", run["run_id"])) == 1
    assert deployment.xcom(dag_id, dag_run_id, "store") == 3


def test_gumloop_list_sessions(deployment: Deployment, happy_runs: dict[str, dict[str, Any]]) -> None:
    dag_id = "example_gumloop_list_sessions"
    dag_run_id = _run(deployment, happy_runs, dag_id)
    assert _states(deployment, dag_id, dag_run_id) == {"list_yesterdays_sessions": "success", "summarize": "success"}
    listed = deployment.xcom(dag_id, dag_run_id, "list_yesterdays_sessions")
    fields = deployment.task_instances(dag_id, dag_run_id)["list_yesterdays_sessions"]["rendered_fields"]
    after = datetime.fromisoformat(fields["created_after"]).replace(tzinfo=None)
    before = datetime.fromisoformat(fields["created_before"]).replace(tzinfo=None)
    # The emulator's whole session list for the agent, paged here by hand, filtered to the rendered window.
    everything: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = httpx.get(
            f"{deployment.emulator.gumloop_url}/agents/{fields['agent_id']}/sessions",
            params={"page_size": 100, **({"cursor": cursor} if cursor else {})},
            headers={"Authorization": f"Bearer {SECRET_KEY}", "x-auth-key": EMULATOR_USER},
            timeout=30,
        )
        r.raise_for_status()
        everything += r.json()["sessions"]
        if not (cursor := r.json()["next_cursor"]):
            break

    def created(s: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(s["created_at"].replace("Z", "+00:00")).replace(tzinfo=None)

    expected = [s["id"] for s in sorted(everything, key=created, reverse=True) if after <= created(s) < before]
    assert expected, "the emulator seeds sessions every few hours: yesterday cannot be empty"
    assert [s["id"] for s in listed] == expected
    assert deployment.xcom(dag_id, dag_run_id, "summarize") == {
        "sessions": len(listed),
        "by_state": dict(Counter(s["state"] for s in listed)),
        "by_type": dict(Counter(s.get("type") or "?" for s in listed)),
        "credits": sum((s.get("usage") or {}).get("credit_cost") or 0 for s in listed),
    }
