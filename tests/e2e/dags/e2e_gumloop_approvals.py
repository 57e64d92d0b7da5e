"""E2E: Gumloop session approvals answered in Airflow (tests/e2e/test_e2e_approvals.py drives it).

One DAG run, the drills side by side (task ids name them):

- ``ui_then_api``: pauses twice (send_email, then update_crm); round 1 is accepted by a human clicking through
  Required Actions in a headless browser, round 2 is answered through the REST API; the session completes.
- ``rejected``: the agent asks to run wire_money and fails when refused; rejected through the REST API.
- ``timeout_default``: nobody answers; after ``approval_timeout`` the default (reject) goes to Gumloop and the
  session completes without the tool.
- ``retry_open``: cleared (a new try) while its request is open; the new try reattaches to the same session and
  the same request, which is then accepted through the REST API (``cancel_on_kill=False``: a clear must not
  cancel).
- ``mark_failed``: marked failed while its request is open: the session is cancelled.

Every session pauses :data:`FIRST_PAUSE` seconds after its start, takes :data:`POLLS` polls (5 s apart) to
resume after an answer (and to pause again), and the timeout is :data:`APPROVAL_TIMEOUT`, so no trigger of the
session fires within seconds of its deferral: Airflow 3.3.2's scheduler can then fail the task on the worker's
stale "success" for the deferral (apache/airflow#67287, see tests/deployment.py). (The human's answers wait for
the scheduler to read the deferral instead: see the test module.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

import pendulum
from airflow.sdk import DAG

from airflow_provider_runwatch.operators.gumloop import GumloopSessionOperator

if TYPE_CHECKING:
    from airflow_provider_runwatch.operators.gumloop_shared import ApprovalMode


#: Seconds from a session's start to its first pause: the five tasks start and defer before the suite's happy
#: example runs are triggered (the test waits for that) and ask after those runs' burst of task starts, which
#: alone stalls the triggerer for 10-30 s on 2 cores (the examples check their poll counts): not to add to it.
FIRST_PAUSE = 40
#: Polls to resume after an answer, and to pause again, :data:`POLL_INTERVAL` apart: 15 s, above the 10 s the
#: batch operators keep between a deferral and its event (``admission_sleep_below``), against the race above.
POLLS = 3
#: Seconds between polls: five sessions polling each second add to the triggerer's load in the happy runs'
#: burst, when it already stalls.
POLL_INTERVAL = 5
#: ``timeout_default``'s wait for an answer: the HITL trigger then fires at its next poke (every 5 s).
APPROVAL_TIMEOUT = 20
PACE = f"seconds={FIRST_PAUSE} polls={POLLS}"
#: An emulator of their own (the test module starts it and creates this connection through the REST API): the
#: sessions poll all along, and the browser module's checks read the default emulator's request log as theirs.
CONN_ID = "gumloop_approvals"


class Common(TypedDict):
    """What every session of this DAG shares."""

    conn_id: str
    agent_id: str
    deferrable: bool
    poll_interval: float
    on_approval_required: ApprovalMode


with DAG(
    "e2e_gumloop_approvals",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=8,
) as dag:
    common: Common = {
        "conn_id": CONN_ID,
        "agent_id": "agent_e2e",
        "deferrable": True,
        "poll_interval": POLL_INTERVAL,
        "on_approval_required": "airflow",
    }
    GumloopSessionOperator(
        task_id="ui_then_api",
        input=f"Acme Corp [emulator: {PACE} approvals=send_email/update_crm]",
        timeout=600,
        **common,
    )
    GumloopSessionOperator(
        task_id="rejected", input=f"Pay Beta [emulator: {PACE} approvals=wire_money on_reject=fail]", **common
    )
    GumloopSessionOperator(
        task_id="timeout_default",
        input=f"Gamma Holdings [emulator: {PACE} approvals=post_slack]",
        approval_timeout=APPROVAL_TIMEOUT,
        **common,
    )
    GumloopSessionOperator(
        task_id="retry_open",
        input=f"Delta Logistics [emulator: {PACE} approvals=send_email]",
        cancel_on_kill=False,
        retries=0,
        **common,
    )
    GumloopSessionOperator(
        task_id="mark_failed", input=f"Epsilon Labs [emulator: {PACE} approvals=send_email]", **common
    )
