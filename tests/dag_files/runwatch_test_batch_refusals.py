"""Test DAG: a batch whose starts are refused, with the default guard against apache/airflow#67287
(tests/dag_runs/test_batch_refusals_dag.py reads what Airflow stored and what the emulator saw).

``runwatch_test_batch_refusals``: four Puffle chats of about a second, four at once, on a key the emulator (set
by the test) lets hold two: the third start is refused with ``Retry-After`` of about a second. The operator is
the shipped one, ``admission_sleep_below`` at its default (10 s), so no deferral hands the task back sooner than
that after it deferred, although the refusal asked for a second and the runs end within two.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_runwatch.operators.puffle import PuffleAgentChatBatchOperator

with DAG("runwatch_test_batch_refusals", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    PuffleAgentChatBatchOperator(
        task_id="refused",
        conn_id="puffle_refusals",
        messages=[f"refused {index} [emulator: seconds=1]" for index in range(4)],
        max_concurrency=4,
        deferrable=True,
        poll_interval=0.3,
    )
