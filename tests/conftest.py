"""Test-wide setup.

- A throwaway AIRFLOW_HOME on sqlite, set before anything imports Airflow; the DAGs folder is tests/dag_files.
- The bundled emulator's pytest plugin: a real HTTP server on loopback, in its own process.
- ``run_dag``: runs a DAG from tests/dag_files with ``dag.test()`` (real Airflow, triggers run in line) and
  returns task states, every XCom and the captured output, so tests assert on what Airflow recorded.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_HOME = tempfile.mkdtemp(prefix="runwatch-airflow-home-")
# Each pytest process (and each xdist worker) makes one; gone when it exits, so runs leave nothing in /tmp.
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
DAGS_FOLDER = Path(__file__).parent / "dag_files"
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO"

from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from airflow_provider_runwatch.emulator.server import EmulatorServer  # noqa: E402

pytest_plugins = ["airflow_provider_runwatch.emulator.pytest_plugin"]

#: A key distinctive enough to search for in every log line, XCom and trigger payload.
SECRET_KEY = "pk_live_RUNWATCH_SECRET_5f2b9c1d7e"


@pytest.fixture(autouse=True)
def _fresh_cancel_claims() -> None:
    """Each test starts with the process's cancel claims empty, as a new triggerer would (a run id reused by
    another test within a minute must still be cancelled)."""
    from airflow_provider_runwatch.core.cancels import CLAIMS

    CLAIMS.clear()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the triggerer's loop) via anyio's bundled pytest plugin."""
    return "asyncio"


@pytest.fixture
def secret_connections(runwatch_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The three default connections, pointing at the emulator, holding :data:`SECRET_KEY`."""
    env = runwatch_emulator.connection_env(api_key=SECRET_KEY)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """Migrate the throwaway metadata DB once per session (about 6-10 s)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ.copy()
    )
    return _HOME


@dataclass
class DagResult:
    """What Airflow recorded for one DAG run: run state, task states, XComs, and the CLI's output."""

    dag_run_id: str
    state: str
    states: dict[str, str]
    xcoms: dict[tuple[str, str], Any]
    output: str
    mapped: dict[tuple[str, int, str], Any] = field(default_factory=dict)
    #: How many tries each task instance took (its ``try_number``), keyed like :attr:`states`.
    tries: dict[str, int] = field(default_factory=dict)

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        return self.xcoms[(task_id, key)]

    def check_no_secret(self, secret: str = SECRET_KEY) -> None:
        """Fail, saying where, if the key shows in the CLI's output (task and trigger logs) or any XCom.
        :func:`dag_runner` calls it on every DAG run, so no DAG test can forget it."""
        assert secret not in self.output, f"the API key leaked into the output of {self.dag_run_id}"
        for where, value in [*self.xcoms.items(), *self.mapped.items()]:
            assert secret not in repr(value), f"the API key leaked into XCom {where} of {self.dag_run_id}"


def read_dag_run(dag_id: str) -> DagResult:
    """The newest run of ``dag_id`` from the metadata DB (its ``output`` left empty)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        dag_run = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).first()
        assert dag_run is not None, f"{dag_id} never ran"
        states: dict[str, str] = {}
        tries: dict[str, int] = {}
        for ti in session.query(TaskInstance).filter(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == dag_run.run_id
        ):
            name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            states[name] = str(ti.state)
            tries[name] = int(ti.try_number or 0)
        xcoms: dict[tuple[str, str], Any] = {}
        mapped: dict[tuple[str, int, str], Any] = {}
        for row in session.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == dag_run.run_id):
            value = XComModel.deserialize_value(row)
            if row.map_index < 0:
                xcoms[(row.task_id, row.key)] = value
            else:
                mapped[(row.task_id, row.map_index, row.key)] = value
        return DagResult(dag_run.run_id, str(dag_run.state), states, xcoms, "", mapped, tries)


@pytest.fixture(scope="session")
def dag_runner(airflow_db: str, runwatch_emulator: EmulatorServer) -> Callable[..., DagResult]:
    """``airflow dags test <dag_id>`` in a subprocess (the real CLI; triggers run in line), connections
    as ``AIRFLOW_CONN_*`` env vars holding :data:`SECRET_KEY`; then what Airflow stored, read back."""

    def run(dag_id: str, *, extra_env: dict[str, str] | None = None, timeout: float = 240) -> DagResult:
        env = {**os.environ, **runwatch_emulator.connection_env(api_key=SECRET_KEY), **(extra_env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", dag_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        result = read_dag_run(dag_id)
        result.output = proc.stdout + proc.stderr
        result.check_no_secret()
        return result

    return run
