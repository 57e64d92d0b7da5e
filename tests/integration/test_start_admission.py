"""Start admission against the emulator, both modes, each vendor's refusal shape: a start refused with 429 waits
(a timer deferral, or a sleep) and starts again until it is admitted or ``start_timeout`` passes; anything else
(a spend limit, a 5xx) fails at once and is never sent twice. The emulator's request log counts the attempts.

Deferrals are driven as Airflow does: the trigger is serialized and rebuilt, run to its first event, and a fresh
operator (made from the same arguments, as a worker would from the DAG file) resumes with the deferral's kwargs.
The path through real Airflow (try number, mapped tasks) is tests/dag_runs/test_admission_dag.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow < 3.2
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined,unused-ignore]

from airflow.providers.standard.triggers.temporal import DateTimeTrigger

from airflow_provider_runwatch.core.admission import AdmissionBackoff
from airflow_provider_runwatch.core.errors import ClientError, ServerError
from airflow_provider_runwatch.core.retry import ADMITTED_STARTS
from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks.gloriamundo import ExecuteRetryPolicy, GloriaMundoHook
from airflow_provider_runwatch.hooks.gumloop import GumloopHook
from airflow_provider_runwatch.operators.base import STATE_KEY, RunFailedError, RunOperator
from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator
from airflow_provider_runwatch.operators.gumloop import (
    GENERATION_KEY,
    GumloopAgentOperator,
    GumloopFlowOperator,
    GumloopSessionOperator,
)
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator
from airflow_provider_runwatch.vendors import gloriamundo
from airflow_provider_runwatch.vendors.gumloop import derive_session_id
from tests.conftest import SECRET_KEY
from tests.helpers import first_event, rehydrate
from tests.integration.test_gumloop_operators import FakeStore, context

#: Waits of tenths of a second where the vendor gives no Retry-After (Gumloop's concurrency refusal).
QUICK = AdmissionBackoff(base=0.2, ceiling=0.4)
MODES = [pytest.param(True, id="deferrable"), pytest.param(False, id="blocking")]


def quick(cls: type[RunOperator]) -> type[RunOperator]:
    """``cls`` with a short admission backoff, set the way a DAG author would: on a subclass."""
    return type(f"Quick{cls.__name__}", (cls,), {"admission_backoff": QUICK, "admission_sleep_below": 0.0})


def ctx_for(run_id: str, store: FakeStore | None = None) -> Any:
    """A minimal task context (fake ``ti``, optional ``task_state_store``) with this test's run id."""
    return context(run_id, store)


def drive(make: Callable[[], RunOperator], ctx: Any) -> tuple[Any, list[Any]]:
    """Run a task to its end as Airflow would, every deferral through a rebuilt trigger and a fresh operator.
    Returns the task's result and the deferrals it made."""
    deferrals: list[Any] = []
    method, event = "execute", None
    kwargs: dict[str, Any] = {}
    while True:
        operator = make()
        try:
            if method == "execute":
                return operator.execute(ctx), no_secret_in(deferrals)
            return getattr(operator, method)(ctx, event=event, **kwargs), no_secret_in(deferrals)
        except TaskDeferred as deferred:
            no_secret_in([deferred])
            deferrals.append(deferred)
            event = asyncio.run(first_event(rehydrate(deferred.trigger)))
            method, kwargs = deferred.method_name, dict(deferred.kwargs or {})


def no_secret_in(deferrals: list[Any]) -> list[Any]:
    """Fail if the key is in any trigger's serialized kwargs or any deferral's resume kwargs."""
    for deferred in deferrals:
        assert SECRET_KEY not in repr(deferred.trigger.serialize()) + repr(deferred.kwargs)
    return deferrals


def timers(deferrals: list[Any]) -> list[Any]:
    return [d for d in deferrals if isinstance(d.trigger, DateTimeTrigger)]


def run_to_end(make: Callable[[], RunOperator], ctx: Any, deferrable: bool) -> tuple[Any, list[Any]]:
    if deferrable:
        return drive(make, ctx)
    return make().execute(ctx), []


def statuses(entries: list[dict[str, Any]]) -> list[int]:
    return [int(e["status"]) for e in entries]


def use_connection(monkeypatch: pytest.MonkeyPatch, name: str, conn: dict[str, str]) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", json.dumps(conn))


@pytest.fixture
def free_plan(runwatch_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, request: Any) -> str:
    """``gumloop_default`` on a Free-plan key of this test's own (5 unfinished agent runs at most)."""
    key = f"gl_free_{SECRET_KEY}_{abs(hash(request.node.nodeid))}"
    conn = {"conn_type": "gumloop", "host": runwatch_emulator.gumloop_url, "login": "emulator-user", "password": key}
    use_connection(monkeypatch, "gumloop_default", conn)
    return key


@pytest.fixture
def gm_key(runwatch_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, request: Any) -> Iterator[str]:
    """``gloriamundo_default`` on a key of this test's own; the emulator's limits restored afterwards."""
    key = f"{SECRET_KEY}_{abs(hash(request.node.nodeid))}"
    use_connection(
        monkeypatch,
        "gloriamundo_default",
        {"conn_type": "gloriamundo", "host": runwatch_emulator.gloriamundo_url, "password": key},
    )
    yield key
    set_limits(runwatch_emulator, window_seconds=60, executions=10, polls=60)


def set_limits(emulator: EmulatorServer, **limits: Any) -> None:
    with httpx.Client(base_url=emulator.url, timeout=10, trust_env=False) as http:
        http.put("/_emulator/gloriamundo/limits", json=limits).raise_for_status()


def check_failure_line(exc: BaseException, *words: str) -> str:
    line = str(exc)
    assert "\n" not in line, "one line"
    assert exc.__suppress_context__, "and no traceback of the last refusal under it"
    assert SECRET_KEY not in line
    for word in words:
        assert word in line, (word, line)
    return line


# -- Gumloop: 429 without Retry-After (the plan's concurrency) -----------------------------------------------------
@pytest.mark.parametrize("deferrable", MODES)
@pytest.mark.parametrize("approvals", ["fail", "airflow"])
def test_a_free_plan_session_waits_for_a_slot_then_starts_once(
    free_plan: str, runwatch_emulator: EmulatorServer, deferrable: bool, approvals: str
) -> None:
    if approvals == "airflow" and not deferrable:
        pytest.skip("one approvals mode is enough to show the session's own start path is admitted")
    hook = GumloopHook()
    for i in range(5):  # the plan's five slots, busy for two more seconds
        hook.create_session("agent_busy", f"busy {i} [emulator: seconds=2]")
    run_id = f"manual__admit_{deferrable}_{approvals}"
    store = FakeStore()
    ctx = ctx_for(run_id, store)
    session_id = derive_session_id("dag_ops", "review", run_id, -1)
    make = lambda: quick(GumloopSessionOperator)(  # noqa: E731
        task_id="review",
        agent_id="agent_admit",
        input="Review Acme [emulator: polls=1]",
        deferrable=deferrable,
        poll_interval=1,
        start_timeout=30,
        timeout=20,
        on_approval_required=approvals,
    )
    answer, deferrals = run_to_end(make, ctx, deferrable)
    assert answer and "Acme" in answer
    log = runwatch_emulator.requests(method="POST", run_id=session_id)
    starts = statuses(log)
    assert starts[-1] == 202 and set(starts[:-1]) == {429} and len(starts) >= 2, starts
    # Durable: only the admitted start was recorded (the refused ones started nothing); the success then moved
    # the derived id on, so a later clear starts a fresh session.
    assert store[GENERATION_KEY] == 1 and STATE_KEY not in store
    if deferrable:
        # ``timeout`` is about the run: counted from the start that was admitted, not from the first refusal.
        assert deferrals[-1].trigger.deadline >= log[-1]["ts"] + 20 - 1
        waits = timers(deferrals)
        assert len(waits) == len(starts) - 1, "one timer per refusal, the worker slot free meanwhile"
        assert [d.kwargs["attempts"] for d in waits] == list(range(1, len(waits) + 1))
        assert deferrals[-1].method_name == "execute_complete", "then the usual wait on the run"


@pytest.mark.parametrize("deferrable", MODES)
@pytest.mark.parametrize("kind", ["agent", "session", "flow"])
def test_refused_until_start_timeout_fails_with_one_line_naming_the_limit(
    secret_connections: dict[str, str],
    runwatch_emulator: EmulatorServer,
    capsys: pytest.CaptureFixture[str],
    deferrable: bool,
    kind: str,
) -> None:
    if kind != "agent" and not deferrable:
        pytest.skip("the blocking loop is the same for every kind: one is enough")
    directive = "[emulator: start_status=429]"
    common: dict[str, Any] = {"task_id": "review", "deferrable": deferrable, "poll_interval": 1, "start_timeout": 1.2}
    if kind == "agent":
        make = lambda: quick(GumloopAgentOperator)(agent_id="gummie_x", message=f"x {directive}", **common)  # noqa: E731
        prefix, words = "/api/v1/start_agent", "Concurrency limit reached for your plan"
    elif kind == "session":
        make = lambda: quick(GumloopSessionOperator)(agent_id="agent_x", input=f"x {directive}", **common)  # noqa: E731
        prefix, words = "/api/v1/agents/agent_x/sessions", "Agent concurrency limit reached"
    else:
        make = lambda: quick(GumloopFlowOperator)(flow_id="flow_x", inputs={"q": f"x {directive}"}, **common)  # noqa: E731
        prefix, words = "/api/v1/start_pipeline", "Concurrency limit reached for your plan"
    before = len(runwatch_emulator.requests(method="POST", path_prefix=prefix))
    began = time.monotonic()
    store = FakeStore()
    with pytest.raises(RunFailedError) as info:
        run_to_end(make, ctx_for(f"manual__timeout_{kind}_{deferrable}", store), deferrable)
    took = time.monotonic() - began
    assert not store, "a start that was refused records nothing for a retry to reattach to"
    sent = runwatch_emulator.requests(method="POST", path_prefix=prefix)[before:]
    # The first attempt, and a last one when start_timeout is reached (more in between unless the host is slow).
    assert set(statuses(sent)) == {429} and len(sent) >= 2, "refused again and again, never started"
    line = check_failure_line(
        info.value, words, f"still refused after {len(sent)} attempts", "start_timeout 1.2 s", "batch operator"
    )
    assert line.startswith("Gumloop POST ")
    assert took >= 1.2, "waited the whole start_timeout"
    log = capsys.readouterr().out
    waits = [line for line in log.splitlines() if "starting again in" in line]
    assert len(waits) == len(sent) - 1 and all(f"attempt {i}," in w for i, w in enumerate(waits, 1)), waits
    assert all(words in w for w in waits), "each wait names the limit in the vendor's words"
    assert SECRET_KEY not in log


def test_start_timeout_none_fails_at_the_first_refusal_without_sleeping(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    before = len(runwatch_emulator.requests(method="POST", path_prefix="/api/v1/start_agent"))
    op = GumloopAgentOperator(
        task_id="review", agent_id="g", message="x [emulator: start_status=429]", deferrable=False, start_timeout=None
    )
    with pytest.raises(RunFailedError) as info:
        op.execute(ctx_for("manual__none"))
    sent = len(runwatch_emulator.requests(method="POST", path_prefix="/api/v1/start_agent")) - before
    assert sent == 1, "sent once: the client does not retry (and sleep on) the 429 either"
    check_failure_line(info.value, "start_timeout=None fails at the first refusal", "Concurrency limit reached")


def test_admission_never_waits_past_execution_timeout(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    """Blocking: Airflow kills the task at execution_timeout; admission gives up just before, with its own line."""
    from datetime import timedelta

    op = quick(GumloopAgentOperator)(
        task_id="review",
        agent_id="g",
        message="x [emulator: start_status=429]",
        deferrable=False,
        start_timeout=3600,
        execution_timeout=timedelta(seconds=2),
    )
    began = time.monotonic()
    with pytest.raises(RunFailedError) as info:
        op.execute(ctx_for("manual__exec_timeout"))
    assert time.monotonic() - began >= 1.5, "waited until execution_timeout less its margin (a fifth of 2 s)"
    check_failure_line(info.value, "execution_timeout leaves no time to wait longer", "Raise execution_timeout")


# -- Puffle: 429 with Retry-After ------------------------------------------------------------------------------
@pytest.mark.parametrize("deferrable", MODES)
def test_puffle_waits_for_retry_after_until_admitted(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer, deferrable: bool
) -> None:
    marker = f"admitted{int(deferrable)}"
    before = len(runwatch_emulator.requests(method="POST", path_prefix="/api/agent/chat"))
    runwatch_emulator.set_scenario("start_status=429 retry_after=1")  # every start refused until cleared

    def clear_after_two_refusals() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if len(runwatch_emulator.requests(method="POST", path_prefix="/api/agent/chat")) - before >= 2:
                break
            time.sleep(0.1)
        runwatch_emulator.set_scenario(None)

    freer = threading.Thread(target=clear_after_two_refusals, daemon=True)
    freer.start()
    try:
        make = lambda: quick(PuffleAgentChatOperator)(  # noqa: E731
            task_id="chat",
            message=f"{marker} Summarise Acme",
            deferrable=deferrable,
            poll_interval=0.5,
            start_timeout=30,
        )
        answer, deferrals = run_to_end(make, ctx_for(f"manual__{marker}"), deferrable)
    finally:
        freer.join(25)
        runwatch_emulator.set_scenario(None)
    sent = runwatch_emulator.requests(method="POST", path_prefix="/api/agent/chat")[before:]
    assert statuses(sent)[-1] == 202 and set(statuses(sent)[:-1]) == {429} and len(sent) >= 3, statuses(sent)
    assert answer
    if deferrable:
        waits = timers(deferrals)
        assert len(waits) == len(sent) - 1
        moments = [w.trigger.serialize()[1]["moment"] for w in waits]
        assert all(m is not None for m in moments)


def test_a_wait_shorter_than_a_deferral_is_worth_is_slept_on_the_worker(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    """Deferrable, but Retry-After 1 s: below ``admission_sleep_below`` (10 s) the task sleeps instead of
    deferring (a resume costs more than the wait, and Airflow 3.3.2 can fail a task whose trigger fires within
    seconds of its deferral); ``execute`` never raises TaskDeferred, and the start is tried again after ~1 s."""
    before = len(runwatch_emulator.requests(method="POST", path_prefix="/api/agent/chat"))
    task = PuffleAgentChatOperator(
        task_id="chat", message="x [emulator: start_status=429 retry_after=1]", deferrable=True, start_timeout=2.5
    )
    assert task.admission_sleep_below == 10.0
    with pytest.raises(RunFailedError, match="still refused after"):
        task.execute(ctx_for("manual__short_waits_sleep"))  # a TaskDeferred would escape pytest.raises
    sent = runwatch_emulator.requests(method="POST", path_prefix="/api/agent/chat")[before:]
    # Attempts at about 0, 1, 2.1 s: started again after sleeping, within the one execute call.
    assert set(statuses(sent)) == {429} and len(sent) >= 2, statuses(sent)


@pytest.mark.parametrize("deferrable", MODES)
def test_puffle_refused_until_start_timeout(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer, deferrable: bool
) -> None:
    before = len(runwatch_emulator.requests(method="POST", path_prefix="/api/agent/chat"))
    make = lambda: PuffleAgentChatOperator(  # noqa: E731
        task_id="chat",
        message="x [emulator: start_status=429 retry_after=1]",
        deferrable=deferrable,
        start_timeout=2.5,
    )
    with pytest.raises(RunFailedError) as info:
        run_to_end(make, ctx_for(f"manual__puffle_timeout_{deferrable}"), deferrable)
    sent = runwatch_emulator.requests(method="POST", path_prefix="/api/agent/chat")[before:]
    # Retry-After 1 s (plus up to 10 % jitter) within 2.5 s: refused at about 0, 1, 2.1 and 2.5 s; never more
    # often than Retry-After allows, and at least the first attempt and the last at start_timeout.
    assert set(statuses(sent)) == {429} and 2 <= len(sent) <= 4, statuses(sent)
    check_failure_line(
        info.value,
        "Puffle POST /api/agent/chat refused the start (HTTP 429",
        "Retry-After 1 s",
        f"still refused after {len(sent)} attempts",
        "start_timeout 2.5 s",
    )


# -- GloriaMundo: the executions-per-window 429 (admitted), the spend-limit 429 (not) --------------------------------
def gm_starts(emulator: EmulatorServer, workflow_id: str) -> list[int]:
    return statuses(emulator.requests(method="POST", path_prefix=f"/api/v1/workflows/{workflow_id}/execute"))


@pytest.mark.parametrize("deferrable", MODES)
def test_gloriamundo_waits_for_its_execution_window_then_starts_once(
    gm_key: str, runwatch_emulator: EmulatorServer, deferrable: bool
) -> None:
    set_limits(runwatch_emulator, window_seconds=2, executions=1, polls=None)
    workflow = f"wf_window_{int(deferrable)}"
    GloriaMundoHook().execute_workflow(workflow, {"q": "the one execution this window allows [emulator: polls=0]"})
    make = lambda: quick(GloriaMundoWorkflowOperator)(  # noqa: E731
        task_id="wf",
        workflow_id=workflow,
        input={"q": "[emulator: polls=1]"},
        deferrable=deferrable,
        poll_interval=0.5,
        start_timeout=30,
    )
    result, deferrals = run_to_end(make, ctx_for(f"manual__gm_{deferrable}"), deferrable)
    assert isinstance(result, dict)
    starts = gm_starts(runwatch_emulator, workflow)
    assert starts[0] == 200 and starts[-1] == 200 and set(starts[1:-1]) == {429} and len(starts) >= 3, starts
    if deferrable:
        assert len(timers(deferrals)) == len(starts) - 2


@pytest.mark.parametrize("deferrable", MODES)
def test_gloriamundo_rate_refused_until_start_timeout(
    gm_key: str, runwatch_emulator: EmulatorServer, deferrable: bool
) -> None:
    set_limits(runwatch_emulator, window_seconds=30, executions=1, polls=None)
    workflow = f"wf_closed_{int(deferrable)}"
    GloriaMundoHook().execute_workflow(workflow, {"q": "[emulator: polls=0]"})
    make = lambda: GloriaMundoWorkflowOperator(  # noqa: E731
        task_id="wf", workflow_id=workflow, input={"q": "x"}, deferrable=deferrable, start_timeout=1.5
    )
    with pytest.raises(RunFailedError) as info:
        run_to_end(make, ctx_for(f"manual__gm_closed_{deferrable}"), deferrable)
    starts = gm_starts(runwatch_emulator, workflow)
    # Retry-After is about 30 s, start_timeout 1.5 s: one wait cut to what is left, one last attempt.
    assert starts == [200, 429, 429], starts
    check_failure_line(
        info.value,
        "GloriaMundo POST",
        "Rate limit exceeded: 1 workflow executions per 30 seconds",
        "still refused after 2 attempts",
        "start_timeout 1.5 s",
    )


@pytest.mark.parametrize("deferrable", MODES)
def test_gloriamundo_spend_limit_is_not_admitted_it_fails_at_once(
    gm_key: str, runwatch_emulator: EmulatorServer, deferrable: bool
) -> None:
    workflow = f"wf_spend_{int(deferrable)}"
    op = GloriaMundoWorkflowOperator(
        task_id="wf",
        workflow_id=workflow,
        input={"q": "[emulator: start_status=429 error=spend_limit_exceeded]"},
        deferrable=deferrable,
    )
    with pytest.raises(ClientError) as info:  # not a TaskDeferred: no timer, no sleep
        op.execute(ctx_for(f"manual__spend_{deferrable}"))
    assert "spend limit" in str(info.value).lower()
    assert gm_starts(runwatch_emulator, workflow) == [429], "sent once"


def test_gloriamundo_execute_policy_keeps_refused_starts_to_the_operator() -> None:
    """The hook turns every policy into an ExecuteRetryPolicy for the execute call; the operators' choice not to
    retry a 429 in the client must survive that, or a refused start would sleep on the worker first."""
    hook = GloriaMundoHook(retry=ADMITTED_STARTS)
    policy = hook.retry_for(gloriamundo.execute_workflow("wf_1", {}), None)
    assert isinstance(policy, ExecuteRetryPolicy) and policy.refused_starts is False
    assert GloriaMundoWorkflowOperator(task_id="wf", workflow_id="wf_1").hook.retry is ADMITTED_STARTS


# -- a start that may have reached the vendor is never repeated ----------------------------------------------------
@pytest.mark.parametrize("deferrable", MODES)
@pytest.mark.parametrize("vendor", ["puffle", "gumloop_session", "gloriamundo"])
def test_a_5xx_start_is_not_repeated(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer, deferrable: bool, vendor: str
) -> None:
    directive = "[emulator: start_status=503]"
    if vendor == "puffle":
        op: RunOperator = PuffleAgentChatOperator(task_id="t", message=f"five {directive}", deferrable=deferrable)
        prefix = "/api/agent/chat"
    elif vendor == "gumloop_session":
        op = GumloopSessionOperator(task_id="t", agent_id="agent_5xx", input=f"x {directive}", deferrable=deferrable)
        prefix = "/api/v1/agents/agent_5xx/sessions"
    else:
        op = GloriaMundoWorkflowOperator(
            task_id="t", workflow_id="wf_5xx", input={"q": directive}, deferrable=deferrable
        )
        prefix = "/api/v1/workflows/wf_5xx/execute"
    before = len(runwatch_emulator.requests(method="POST", path_prefix=prefix))
    with pytest.raises(ServerError):
        op.execute(ctx_for(f"manual__5xx_{vendor}_{deferrable}"))
    assert statuses(runwatch_emulator.requests(method="POST", path_prefix=prefix)[before:]) == [503]


# -- TaskFlow: the decorators take start_timeout, and the function runs again for the start after a timer ----------
def test_a_decorated_task_is_admitted_and_sends_what_its_function_returns(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The decorator builds its own operator class: every refusal defers here, however short the wait.
    monkeypatch.setattr(RunOperator, "admission_sleep_below", 0.0)
    from airflow.sdk import DAG, task

    calls: list[int] = []

    def make() -> RunOperator:
        with DAG("decorated_admission", schedule=None) as dag:

            @task.puffle_chat(deferrable=True, poll_interval=0.5, start_timeout=20)
            def ask() -> str:
                calls.append(1)
                return "refused [emulator: start_status=429 retry_after=1]" if len(calls) == 1 else "decorated Acme"

            ask()
        op = dag.get_task("ask")
        assert isinstance(op, RunOperator)
        return op

    assert make().start_timeout == 20
    before = len(runwatch_emulator.requests(method="POST", path_prefix="/api/agent/chat"))
    answer, deferrals = drive(make, ctx_for("manual__decorated"))
    assert answer and len(timers(deferrals)) == 1
    assert len(calls) == 2, "once by execute, once by the resume that starts again; not by execute_complete"
    sent = runwatch_emulator.requests(method="POST", path_prefix="/api/agent/chat")[before:]
    assert statuses(sent) == [429, 202]
    assert runwatch_emulator.run(sent[-1]["run_id"])["data"]["prompt"] == "decorated Acme"
