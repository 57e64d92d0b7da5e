"""E2E: every run kind through an authenticating egress proxy to an https vendor (tests/e2e/test_e2e_proxied.py).

The ``*_proxied`` connections (tests/e2e/conftest.py) point at ``https://localhost:<port>``, a second emulator
served over TLS with a certificate from a CA made at test time. The connections have no network extras: every
component's environment has HTTPS_PROXY (a tinyproxy with BasicAuth), NO_PROXY=127.0.0.1 and SSL_CERT_FILE (that
CA), and the provider takes all three from there, as in a production image.

One task per run kind, at most two at a time (the e2e box has 2 cores):

- ``deferred__<kind>``: started on the worker, waited for on the triggerer;
- ``blocking__<kind>``: ``deferrable=False``, started and polled on the worker.

(Not built on e2e_drills.run_task: importing another DAG file from a DAG file would bag its DAG here too.)
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

#: Vendor -> its connection to the https emulator (defined as AIRFLOW_CONN_* by the e2e deployment).
CONN_IDS = {"puffle": "puffle_proxied", "gumloop": "gumloop_proxied", "gloriamundo": "gloriamundo_proxied"}
#: Run kind (as in e2e_drills) -> the subject its run works on (the answer quotes it).
SUBJECTS = {
    "puffle": "Zeta Freight",
    "gumloop_agent": "Eta Mining",
    "gumloop_session": "Theta Retail",
    "gumloop_flow": "Iota Energy",
    "gloriamundo": "Kappa Media",
}
#: The kinds run blocking (on the worker only); the others defer.
BLOCKING = ("gloriamundo",)
#: Task id -> run kind.
TASKS = {f"{'blocking' if k in BLOCKING else 'deferred'}__{k}": k for k in SUBJECTS}


def proxied_task(task_id: str, kind: str) -> BaseOperator:
    text = f"Review {SUBJECTS[kind]}"
    options: dict[str, Any] = {
        "task_id": task_id,
        "conn_id": CONN_IDS[kind.split("_")[0]],
        "deferrable": task_id.startswith("deferred__"),
        "poll_interval": 2,
        "timeout": 240,
    }
    if kind == "puffle":
        return PuffleAgentChatOperator(message=text, **options)
    if kind == "gumloop_agent":
        return GumloopAgentOperator(agent_id="agent_e2e", message=text, **options)
    if kind == "gumloop_session":
        return GumloopSessionOperator(agent_id="agent_e2e", input=text, **options)
    if kind == "gumloop_flow":
        return GumloopFlowOperator(flow_id="flow_e2e", inputs={"subject": text}, **options)
    return GloriaMundoWorkflowOperator(workflow_id="wf_e2e", input={"subject": text}, **options)


with DAG(
    "e2e_proxied",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=2,
) as dag:
    for task_id, kind in TASKS.items():
        proxied_task(task_id, kind)
