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

Every session takes 20 polls (1 s apart) to pause and as many to resume after an answer, so no trigger fires
within seconds of its deferral: Airflow 3.3.2's scheduler can then fail the task on the worker's stale "success"
for the deferral (apache/airflow#67287, see tests/deployment.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

import pendulum
from airflow.sdk import DAG

from airflow_provider_runwatch.operators.gumloop import GumloopSessionOperator

if TYPE_CHECKING:
    from airflow_provider_runwatch.operators.gumloop_shared import ApprovalMode


class Common(TypedDict):
    """What every session of this DAG shares."""

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
        "agent_id": "agent_e2e",
        "deferrable": True,
        "poll_interval": 1,
        "on_approval_required": "airflow",
    }
    GumloopSessionOperator(
        task_id="ui_then_api",
        input="Acme Corp [emulator: polls=20 approvals=send_email/update_crm]",
        timeout=600,
        **common,
    )
    GumloopSessionOperator(
        task_id="rejected", input="Pay Beta [emulator: polls=20 approvals=wire_money on_reject=fail]", **common
    )
    GumloopSessionOperator(
        task_id="timeout_default",
        input="Gamma Holdings [emulator: polls=20 approvals=post_slack]",
        approval_timeout=25,
        **common,
    )
    GumloopSessionOperator(
        task_id="retry_open",
        input="Delta Logistics [emulator: polls=20 approvals=send_email]",
        cancel_on_kill=False,
        retries=0,
        **common,
    )
    GumloopSessionOperator(
        task_id="mark_failed", input="Epsilon Labs [emulator: polls=20 approvals=send_email]", **common
    )
