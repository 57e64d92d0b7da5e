"""The e2e suite's deployment: a real Airflow 3 on loopback (see tests/deployment.py for the machinery).

One session fixture, ``deployment``, starts in a throwaway AIRFLOW_HOME:

- a PostgreSQL cluster of its own (``initdb`` in AIRFLOW_HOME, a free port) as the metadata database;
- the bundled emulator (process mode), the three default connections as ``AIRFLOW_CONN_*`` env vars holding
  :data:`SECRET_KEY`;
- ``airflow api-server``, ``airflow scheduler`` (LocalExecutor, low parallelism), ``airflow dag-processor`` and
  ``airflow triggerer`` as separate processes, each in its own process group, logs under AIRFLOW_HOME;
- DAGS_FOLDER = a copy of tests/e2e/dags/ and example_dags/ (the shipped examples run as users get them);
  ``[scheduler] use_job_schedule = False``: only runs triggered through the REST API happen, even for the
  examples' cron schedules;
- ``[core] simple_auth_manager_all_admins = True``: the REST API and the UI (headless chromium) need no login,
  the auth manager adds an admin token to every request.

Why PostgreSQL and not sqlite (``airflow standalone``'s choice): on sqlite a burst of task starts held the
write lock for ~31 s in CI and a REST call failed with HTTP 500 (stop 13); PostgreSQL costs ~3 s of start-up.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.deployment import (
    AIRFLOW,
    DEFAULT_SCENARIO,
    ROOT,
    Deployment,
    airflow_env,
    free_port,
    postgres_env,
    running,
    start_postgres,
    wait_dags,
    wait_healthy,
)

E2E_DAGS = Path(__file__).parent / "dags"
EXAMPLE_DAGS = ROOT / "example_dags"

E2E_DAG_IDS = sorted(p.stem for p in E2E_DAGS.glob("e2e_*.py"))
#: The shipped examples (each file defines one DAG named like the file).
EXAMPLE_DAG_IDS = sorted(p.stem for p in EXAMPLE_DAGS.glob("example_*.py"))
#: DAGs whose runs only need to succeed: triggered together, waited for together (see ``happy_runs``).
HAPPY_DAG_IDS = [*EXAMPLE_DAG_IDS, "e2e_puffle_chat"]


def _dags_folder(home: Path) -> Path:
    """The e2e DAGs and the shipped examples side by side, as copies (a test never edits the source tree)."""
    folder = home / "dags"
    folder.mkdir()
    for source in [*E2E_DAGS.glob("e2e_*.py"), *EXAMPLE_DAGS.glob("example_*.py")]:
        shutil.copy(source, folder / source.name)
    return folder


@pytest.fixture(scope="session")
def deployment() -> Iterator[Deployment]:
    from airflow import __version__ as airflow_version
    from packaging.version import Version

    if Version(airflow_version) < Version("3.3"):
        # Trigger on_kill (drill b) and the task-log and health APIs asserted here are those of 3.3.
        pytest.skip(f"the e2e suite targets Airflow >= 3.3 (found {airflow_version})")
    home = Path(tempfile.mkdtemp(prefix="runwatch-e2e-home-"))
    emulator = EmulatorServer(mode="process", scenario=DEFAULT_SCENARIO)
    emulator.start()
    port = free_port()
    env = airflow_env(home, port, emulator, dags=_dags_folder(home))
    env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
    dep = Deployment(home=home, env=env, api_url=f"http://127.0.0.1:{port}", emulator=emulator)
    with running(dep, "e2e-logs"):
        env.update(postgres_env(start_postgres(dep)))
        subprocess.run([*AIRFLOW, "db", "migrate"], env=env, cwd=home, check=True, capture_output=True, timeout=180)
        dep.start("api-server", "api-server", "--port", str(port), "--host", "127.0.0.1", "--workers", "1")
        dep.start("scheduler", "scheduler")
        dep.start("dag-processor", "dag-processor")
        dep.start_triggerer()
        wait_healthy(dep)
        wait_dags(dep, [*E2E_DAG_IDS, *EXAMPLE_DAG_IDS])
        yield dep


@pytest.fixture(scope="session")
def happy_started(deployment: Deployment) -> dict[str, str]:
    """One REST-triggered run of every DAG in :data:`HAPPY_DAG_IDS`, all at once: ``{dag_id: dag_run_id}``.

    The browser checks request this first, so these runs overlap with them (nothing in them is timed)."""
    started = {}
    for dag_id in HAPPY_DAG_IDS:
        started[dag_id] = deployment.trigger(dag_id)
        time.sleep(1)  # not all at once: a burst of simultaneous task starts stalls 2 cores
    return started


@pytest.fixture(scope="session")
def happy_runs(deployment: Deployment, happy_started: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The runs of ``happy_started``, waited for to the end: ``{dag_id: dag_run}`` (the REST API's DAG run,
    with its final ``state``)."""
    return {dag_id: deployment.wait_for(dag_id, run_id, timeout=180) for dag_id, run_id in happy_started.items()}
