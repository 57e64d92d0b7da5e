"""E2E drills in one DAG run, every run kind side by side (tests/e2e/test_e2e_drills.py drives it).

The kinds: Puffle chat, Gumloop agent interaction, Gumloop session, Gumloop flow, GloriaMundo workflow run
(one trigger class each). Task ids are ``<role>__<kind>``:

- ``survive__*``: end ``SURVIVE_SECONDS`` after their start, i.e. while the triggerer is down after its
  ``kill -9``; the new triggerer must pick them up and each returns its own answer.
- ``deadline_in_downtime__*``: never end; their deadline (start + ``DEADLINE_IN_DOWNTIME``) passes while the
  triggerer is down, so they must fail as soon as a new triggerer picks them up.
- ``deadline_after_restart__puffle``: never ends; its deadline (start + ``DEADLINE_AFTER_RESTART``) comes after
  the restart and must be met then, not pushed back by the downtime.
- ``mark__*``: never end; marked failed through the REST API while deferred (after the restart, so on triggers
  the new triggerer re-created): the cancellable kinds are cancelled, the others log that they cannot be.
- ``mark_blocking__gumloop_session`` / ``mark_blocking__gumloop_flow``: ``deferrable=False``, never end; marked
  failed while they poll on the worker, the operator's ``on_kill`` cancels each.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, BaseOperator

from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator
from airflow_provider_runwatch.operators.gumloop import (
    GumloopAgentOperator,
    GumloopFlowOperator,
    GumloopSessionOperator,
)
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator

SURVIVE_SECONDS = 25
DEADLINE_IN_DOWNTIME = 30
DEADLINE_AFTER_RESTART = 75  # the restarted triggerer polls ~20 s after its start (seen at start + 58 s)
#: The subject each kind's run works on; the answers quote it.
SUBJECTS = {
    "puffle": "Alpha Corp",
    "gumloop_agent": "Beta Industries",
    "gumloop_session": "Gamma Holdings",
    "gumloop_flow": "Delta Logistics",
    "gloriamundo": "Epsilon Labs",
}


def run_task(kind: str, task_id: str, text: str, mixin: type | None = None, **options: Any) -> BaseOperator:
    """One task of ``kind`` whose run works on ``text`` (which may carry an emulator directive); ``mixin``, if
    given, is mixed into the operator class (a drill that changes one step of the operator, e.g. a pause)."""
    options.setdefault("deferrable", True)
    options.setdefault("poll_interval", 1)

    def make(cls: type[BaseOperator], **kwargs: Any) -> BaseOperator:
        if mixin is not None:
            cls = type(f"{mixin.__name__}{cls.__name__}", (mixin, cls), {})
        return cls(task_id=task_id, **kwargs, **options)

    if kind == "puffle":
        return make(PuffleAgentChatOperator, message=text)
    if kind == "gumloop_agent":
        return make(GumloopAgentOperator, agent_id="agent_e2e", message=text)
    if kind == "gumloop_session":
        return make(GumloopSessionOperator, agent_id="agent_e2e", input=text)
    if kind == "gumloop_flow":
        return make(GumloopFlowOperator, flow_id="flow_e2e", inputs={"subject": text})
    return make(GloriaMundoWorkflowOperator, workflow_id="wf_e2e", input={"subject": text})


with DAG(
    "e2e_drills",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=32,
) as dag:
    for kind, subject in SUBJECTS.items():
        run_task(kind, f"survive__{kind}", f"Review {subject} [emulator: seconds={SURVIVE_SECONDS}]", timeout=300)
        run_task(
            kind,
            f"deadline_in_downtime__{kind}",
            "Never ends [emulator: polls=never]",
            timeout=DEADLINE_IN_DOWNTIME,
        )
        run_task(kind, f"mark__{kind}", "Never ends, marked failed [emulator: polls=never]")
    run_task(
        "puffle",
        "deadline_after_restart__puffle",
        "Never ends either [emulator: polls=never]",
        timeout=DEADLINE_AFTER_RESTART,
    )
    for kind in ("gumloop_session", "gumloop_flow"):
        run_task(kind, f"mark_blocking__{kind}", "Never ends, blocking [emulator: polls=never]", deferrable=False)
