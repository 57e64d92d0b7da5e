"""Test DAGs: the run lifecycle through real Airflow, for every run kind in deferrable and blocking mode.

Three DAGs from one file (one task per scenario x kind x mode; tests/dag_runs/test_lifecycle*_dag.py read what
Airflow stored and what the emulator saw):

- ``runwatch_test_lifecycle``: a retry after a simulated worker crash reattaches instead of starting a second
  run; the run URL and the "View run on Gumloop" link survive the retry; a probe shows what a retry sees of
  its earlier try's XCom.
- ``runwatch_test_lifecycle_deadlines``: ``timeout`` passing (both modes), ``execution_timeout`` enforced by the
  trigger (deferred), and ``execution_timeout`` while a poll hangs (blocking: the provider's deadline, a margin
  before Airflow's kill, cuts the poll and ends the wait; ``on_kill`` remains the backstop).
- ``runwatch_test_lifecycle_budget``: 5xx bursts shorter and longer than ``max_consecutive_failures``; its
  tasks also show which kinds store a "View run" link (Gumloop flows only).

Each task's run is told apart in the emulator by its task id: in the Puffle message, the Gumloop agent / flow
ids, the GloriaMundo workflow id (see ``tests.helpers.runs_started_by``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow import __version__ as airflow_version
from airflow.sdk import DAG, BaseOperator, task
from packaging.version import Version

from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator
from airflow_provider_runwatch.operators.gumloop import (
    GumloopAgentOperator,
    GumloopFlowOperator,
    GumloopSessionOperator,
)
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator

#: Airflow >= 3.3 has task_state_store: every kind can reattach on a retry. Before, only Gumloop sessions can
#: (their derived session_id); the other retry tasks are built only where they can pass.
HAS_TASK_STATE_STORE = Version(airflow_version) >= Version("3.3.0")

KINDS = ("puffle", "gumloop_agent", "gumloop_session", "gumloop_flow", "gloriamundo")
MODES = {"deferred": True, "blocking": False}


class SimulatedWorkerCrash(RuntimeError):
    pass


def _first_try() -> bool:
    from airflow.sdk import get_current_context

    return int(get_current_context()["ti"].try_number) == 1


def _crash(when: str) -> SimulatedWorkerCrash:
    """The crash, naming the task instance, so a test can prove each task crashed (not just that some did)."""
    from airflow.sdk import get_current_context

    ti = get_current_context()["ti"]
    name = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
    return SimulatedWorkerCrash(f"{name}: worker died {when}")


class CrashOnce:
    """Start the run and record it, then die on the first try as a worker crash would (after the run id is
    stored, before the wait ends); Airflow retries and the retry must reattach. Mixed into each operator."""

    def wait_blocking(self, *args: Any, **kwargs: Any) -> Any:
        if _first_try():
            raise _crash("while waiting")
        return super().wait_blocking(*args, **kwargs)  # type: ignore[misc]

    def make_trigger(self, *args: Any, **kwargs: Any) -> Any:
        if _first_try():
            raise _crash("before deferring")
        return super().make_trigger(*args, **kwargs)  # type: ignore[misc]


class CrashOncePuffle(CrashOnce, PuffleAgentChatOperator):
    pass


class CrashOnceGumloopAgent(CrashOnce, GumloopAgentOperator):
    pass


class CrashOnceGumloopSession(CrashOnce, GumloopSessionOperator):
    pass


class CrashOnceGumloopFlow(CrashOnce, GumloopFlowOperator):
    pass


class CrashOnceGloriaMundo(CrashOnce, GloriaMundoWorkflowOperator):
    pass


CLASSES: dict[str, tuple[type[BaseOperator], type[BaseOperator]]] = {
    "puffle": (PuffleAgentChatOperator, CrashOncePuffle),
    "gumloop_agent": (GumloopAgentOperator, CrashOnceGumloopAgent),
    "gumloop_session": (GumloopSessionOperator, CrashOnceGumloopSession),
    "gumloop_flow": (GumloopFlowOperator, CrashOnceGumloopFlow),
    "gloriamundo": (GloriaMundoWorkflowOperator, CrashOnceGloriaMundo),
}


def run_task(kind: str, task_id: str, directive: str, *, crash_once: bool = False, **kwargs: Any) -> BaseOperator:
    """One operator of ``kind`` whose run carries ``task_id`` (so tests find it) and the emulator ``directive``.

    Polls every 0.3 s, except Gumloop: it allows no less than 1 s.
    """
    cls = CLASSES[kind][1 if crash_once else 0]
    text = f"{task_id} [emulator: {directive}]"
    inputs: dict[str, dict[str, Any]] = {
        "puffle": {"message": text, "poll_interval": 0.3},
        "gumloop_agent": {"agent_id": f"gummie_{task_id}", "message": text, "poll_interval": 1},
        "gumloop_session": {"agent_id": f"agent_{task_id}", "input": text, "poll_interval": 1},
        "gumloop_flow": {"flow_id": f"flow_{task_id}", "inputs": {"company": text}, "poll_interval": 1},
        "gloriamundo": {"workflow_id": f"wf_{task_id}", "input": {"account": text}, "poll_interval": 0.3},
    }
    return cls(task_id=task_id, **inputs[kind], **kwargs)


START = pendulum.datetime(2026, 1, 1)

# -- retries ------------------------------------------------------------------------------------------------------
with DAG(
    "runwatch_test_lifecycle",
    schedule=None,
    start_date=START,
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=0)},
) as lifecycle:
    for kind in KINDS:
        for mode, deferrable in MODES.items():
            # polls=1: the retry's look at the earlier run (one status read) still finds it running.
            if HAS_TASK_STATE_STORE or kind == "gumloop_session":
                run_task(kind, f"retry_{kind}_{mode}", "polls=1", crash_once=True, deferrable=deferrable)
    if HAS_TASK_STATE_STORE:
        # Mapped: the map index is part of the identity, each index reattaches to its own run.
        CrashOnceGloriaMundo.partial(
            task_id="retry_mapped", workflow_id="wf_retry_mapped", deferrable=False, poll_interval=0.3
        ).expand(input=[{"account": f"retry_mapped {i} [emulator: polls=1]"} for i in range(2)])
    else:
        # Airflow < 3.3: no task_state_store, so this retry starts a second run and says why.
        run_task("puffle", "retry_fallback_puffle_blocking", "polls=1", crash_once=True, deferrable=False)

    @task
    def xcom_probe() -> dict[str, Any]:
        """Does a retry see the XCom its earlier try pushed? (the 'XCom otherwise' reattach fallback)."""
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
        if ti.try_number == 1:
            ti.xcom_push(key="earlier_try", value="pushed by try 1")
            raise SimulatedWorkerCrash("first try dies after pushing an XCom")
        return {"try_number": ti.try_number, "seen": ti.xcom_pull(task_ids=ti.task_id, key="earlier_try")}

    xcom_probe()

# -- deadlines and kills ----------------------------------------------------------------------------------------
with DAG("runwatch_test_lifecycle_deadlines", schedule=None, start_date=START, catchup=False) as deadlines:
    for kind in KINDS:
        for mode, deferrable in MODES.items():
            run_task(kind, f"timeout_{kind}_{mode}", "polls=never", deferrable=deferrable, timeout=2)
        # Blocking: a poll hangs (the vendor holds the answer 30 s). The provider's own deadline (4 s after execute
        # began, a margin before execution_timeout) cuts it and the task fails with the deadline line, cancelling
        # where the vendor can, before Airflow must kill it; that deadline must not pass before the first poll
        # (within 1 s for Gumloop).
        run_task(
            kind,
            f"kill_{kind}_blocking",
            "polls=never slow=30",
            deferrable=False,
            execution_timeout=timedelta(seconds=5),
        )
    # Deferred: Airflow does not apply execution_timeout to a deferred task; the trigger enforces it a little
    # early, and the task fails (and cancels where the vendor can) like with `timeout`.
    for kind in KINDS:
        run_task(
            kind,
            f"exec_timeout_{kind}_deferred",
            "polls=never",
            deferrable=True,
            execution_timeout=timedelta(seconds=3),
        )

# -- transient failures -----------------------------------------------------------------------------------------
with DAG("runwatch_test_lifecycle_budget", schedule=None, start_date=START, catchup=False) as budget:
    for kind in KINDS:
        for mode, deferrable in MODES.items():
            # Budget 2: one 5xx in a row is ridden out, three in a row end the wait after the second.
            run_task(
                kind, f"burst_ok_{kind}_{mode}", "http5xx=1 polls=1", deferrable=deferrable, max_consecutive_failures=2
            )
            run_task(
                kind,
                f"burst_over_{kind}_{mode}",
                "http5xx=3 polls=1",
                deferrable=deferrable,
                max_consecutive_failures=2,
            )
