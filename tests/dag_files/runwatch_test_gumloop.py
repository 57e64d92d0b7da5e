"""Test DAG: every Gumloop operator and sensor through real Airflow against the emulator, in deferrable and
blocking mode, plus a retry that must not start a second session, approvals, a deadline that cancels, and a
session listing. Scenarios ride in the messages/inputs."""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

import pendulum
from airflow.sdk import DAG

from airflow_provider_runwatch.operators.gumloop import (
    GumloopAgentOperator,
    GumloopFlowOperator,
    GumloopListSessionsOperator,
    GumloopSessionOperator,
)
from airflow_provider_runwatch.sensors.gumloop import GumloopAgentSensor, GumloopFlowSensor, GumloopSessionSensor


class Polling(TypedDict):
    """The options every task of this DAG spreads in (typed, so each lands on its own argument)."""

    poll_interval: float


FAST: Polling = {"poll_interval": 1}  # the fastest Gumloop allows

with DAG("runwatch_test_gumloop", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
    # -- agent interactions ---------------------------------------------------------------------------------------
    agent_deferred = GumloopAgentOperator(
        task_id="agent_deferred",
        agent_id="gummie_dag",
        message="Summarise Acme Corp [emulator: polls=2]",
        deferrable=True,
        **FAST,
    )
    agent_blocking = GumloopAgentOperator(
        task_id="agent_blocking",
        agent_id="gummie_dag",
        message="Summarise Beta LLC [emulator: polls=1 http5xx=1]",
        user_id="{{ 'usr_' ~ 'override' }}",
        deferrable=False,
        **FAST,
    )
    agent_start = GumloopAgentOperator(
        task_id="agent_start",
        agent_id="gummie_dag",
        message="Summarise Gamma Inc [emulator: polls=2]",
        wait_for_completion=False,
    )
    agent_sensor_deferred = GumloopAgentSensor(
        task_id="agent_sensor_deferred",
        interaction_id="{{ ti.xcom_pull(task_ids='agent_start', key='run_id') }}",
        deferrable=True,
        poke_interval=1,
    )
    agent_sensor_poke = GumloopAgentSensor(
        task_id="agent_sensor_poke",
        interaction_id="{{ ti.xcom_pull(task_ids='agent_blocking', key='run_id') }}",
        user_id="usr_override",
        deferrable=False,
        poke_interval=1,
    )
    agent_start >> agent_sensor_deferred
    agent_blocking >> agent_sensor_poke

    # -- agent sessions -------------------------------------------------------------------------------------------
    session_deferred = GumloopSessionOperator(
        task_id="session_deferred",
        agent_id="agent_dag",
        input="Review Acme Corp [emulator: queued=1 polls=2]",
        metadata={"dag_run": "{{ run_id }}"},
        deferrable=True,
        **FAST,
    )
    session_blocking = GumloopSessionOperator(
        task_id="session_blocking",
        agent_id="agent_dag",
        input="Review Beta LLC [emulator: polls=1 rate_limit=1 retry_after=1]",
        deferrable=False,
        **FAST,
    )
    session_start = GumloopSessionOperator(
        task_id="session_start",
        agent_id="agent_dag",
        input="Review Gamma Inc [emulator: polls=2]",
        wait_for_completion=False,
    )
    session_sensor_deferred = GumloopSessionSensor(
        task_id="session_sensor_deferred",
        session_id="{{ ti.xcom_pull(task_ids='session_start', key='run_id') }}",
        deferrable=True,
        poke_interval=1,
    )
    session_sensor_poke = GumloopSessionSensor(
        task_id="session_sensor_poke",
        session_id="{{ ti.xcom_pull(task_ids='session_blocking', key='run_id') }}",
        deferrable=False,
        poke_interval=1,
    )
    session_start >> session_sensor_deferred
    session_blocking >> session_sensor_poke

    # The first try gives up after two failed polls (a 5xx burst) while the session keeps running; the retry's
    # create call gets 409 session_already_exists and reattaches. durable=False: no task_state_store help.
    # Blocking on purpose: Airflow 3.1's `dags test` resumes a retried deferred task with the old trigger event
    # instead of running execute again (the deferred re-execute is covered in test_gumloop_operators.py).
    session_retry = GumloopSessionOperator(
        task_id="session_retry",
        agent_id="agent_dag",
        input="Review Delta Co [emulator: http5xx=3 polls=1]",
        deferrable=False,
        durable=False,
        max_consecutive_failures=2,
        retries=1,
        retry_delay=timedelta(seconds=1),
        **FAST,
    )
    session_timeout = GumloopSessionOperator(
        task_id="session_timeout",
        agent_id="agent_dag",
        input="Never ends [emulator: polls=never]",
        deferrable=True,
        timeout=2,
        **FAST,
    )

    # -- approvals ----------------------------------------------------------------------------------------------
    approval_fail = GumloopSessionOperator(
        task_id="approval_fail",
        agent_id="agent_dag",
        input="Email the owner of Acme [emulator: polls=1 outcome=paused]",
        deferrable=True,
        **FAST,
    )
    approval_succeed = GumloopSessionOperator(
        task_id="approval_succeed",
        agent_id="agent_dag",
        input="Email the owner of Beta [emulator: polls=1 outcome=paused]",
        on_approval_required="succeed",
        deferrable=True,
        **FAST,
    )
    approval_wait = GumloopSessionOperator(
        task_id="approval_wait",
        agent_id="agent_dag",
        input="Email the owner of Gamma, wait for approval [emulator: polls=1 outcome=paused]",
        on_approval_required="wait",
        deferrable=False,
        timeout=60,
        **FAST,
    )

    # -- flows ----------------------------------------------------------------------------------------------------
    flow_deferred = GumloopFlowOperator(
        task_id="flow_deferred",
        flow_id="flow_enrich",
        inputs={"company": "Acme Corp [emulator: queued=1 polls=2]", "limit": 5},
        deferrable=True,
        **FAST,
    )
    flow_blocking = GumloopFlowOperator(
        task_id="flow_blocking",
        flow_id="flow_enrich",
        inputs={"company": "{{ 'Beta' }} LLC [emulator: polls=1 unknown_state=STARTED]"},
        deferrable=False,
        **FAST,
    )
    flow_start = GumloopFlowOperator(
        task_id="flow_start",
        flow_id="flow_enrich",
        inputs={"company": "Gamma Inc [emulator: polls=2]"},
        wait_for_completion=False,
    )
    flow_sensor_deferred = GumloopFlowSensor(
        task_id="flow_sensor_deferred",
        run_id="{{ ti.xcom_pull(task_ids='flow_start', key='run_id') }}",
        deferrable=True,
        poke_interval=1,
    )
    flow_sensor_poke = GumloopFlowSensor(
        task_id="flow_sensor_poke",
        run_id="{{ ti.xcom_pull(task_ids='flow_blocking', key='run_id') }}",
        deferrable=False,
        poke_interval=1,
    )
    flow_start >> flow_sensor_deferred
    flow_blocking >> flow_sensor_poke

    # -- listing --------------------------------------------------------------------------------------------------
    list_sessions = GumloopListSessionsOperator(
        task_id="list_sessions",
        agent_id="agent_dag_list",
        state="{{ 'completed' }}",
        page_size=10,
        max_sessions=25,
    )
