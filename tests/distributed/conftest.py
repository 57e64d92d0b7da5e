"""A production-shaped Airflow 3 deployment on loopback: PostgreSQL, Redis, CeleryExecutor, two triggerers.

One session fixture, ``cluster``, starts in a throwaway AIRFLOW_HOME:

- a PostgreSQL 15 cluster made by ``initdb`` in that directory, on a free port (``tests.deployment.start_postgres``,
  as the e2e suite's);
- ``redis-server`` on a free port without persistence, the Celery broker;
- the bundled emulator, ``airflow api-server``, ``scheduler``, ``dag-processor``, two ``triggerer`` processes and
  two ``celery worker`` processes (concurrency 5), each in its own process group (``Deployment.spawn``:
  stopped on teardown, on SIGTERM and at exit).

Everything else (REST helpers, the emulator's request log, process control) is ``tests.deployment.Deployment``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from airflow_provider_runwatch.emulator.gloriamundo import LIMITS_PATH
from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.deployment import (
    DEFAULT_SCENARIO,
    PG_BIN,
    SECRET_KEY,
    Deployment,
    airflow_env,
    free_port,
    postgres_env,
    running,
    start_airflow_core,
    start_postgres,
    start_redis,
    wait_dags,
    wait_healthy,
)
from tests.e2e.conftest import E2E_DAGS

#: The window GloriaMundo's per-key limits are counted over in this deployment (60 s at the real service).
BUDGET_WINDOW = 6.0
BUDGETS = ("fixed", "adaptive")
DIST_DAGS = Path(__file__).parent / "dags"
#: The DAGs of dags/dist_drills.py.
DIST_DAG_IDS = ["dist_failover", "dist_steady", "dist_worker_loss", "dist_budget_fixed", "dist_budget_adaptive"]
TRIGGERERS = ("triggerer-a", "triggerer-b")
WORKERS = ("worker-1", "worker-2")
#: Task slots per Celery worker: the worker-loss drill parks one task of every run kind (5) on one worker.
WORKER_CONCURRENCY = 5
#: Each triggerer's capacity unless a drill says otherwise.
TRIGGERER_CAPACITY = 60
#: The first triggerer's capacity during the failover drill: exactly the failover DAG's deferred tasks, so the
#: tasks deferred after it is full go to the second one (a deterministic spread over both).
FAILOVER_CAPACITY = 10


@dataclass
class Cluster:
    """The deployment and where its services listen."""

    dep: Deployment
    pg_port: int
    redis_port: int

    @property
    def dsn(self) -> str:
        return f"postgresql://airflow@127.0.0.1:{self.pg_port}/airflow"

    def sql(self, query: str, *args: object) -> list[tuple[object, ...]]:
        """Rows of a query on the metadata database (the trigger and job tables the drills read)."""
        import psycopg2

        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute(query, args)
            return list(cur.fetchall())

    def start_triggerer(self, name: str, capacity: int = TRIGGERER_CAPACITY) -> None:
        # --skip-serve-logs: two on one host would fight over the log server port; the API server reads
        # their log files from the shared AIRFLOW_HOME.
        self.dep.start(name, "triggerer", "--capacity", str(capacity), "--skip-serve-logs")

    def ensure_triggerers(self) -> None:
        """Both triggerers running (a drill may have killed one), at full capacity."""
        for name in TRIGGERERS:
            proc = self.dep.procs.get(name)
            if proc is None or proc.poll() is not None:
                self.start_triggerer(name)

    def start_worker(self, name: str) -> None:
        self.dep.start(
            name,
            "celery",
            "worker",
            "--concurrency",
            str(WORKER_CONCURRENCY),
            "--celery-hostname",
            f"{name}@%h",
            "--skip-serve-logs",
            # Which worker ran a task: the drill DAGs write it into their marker files.
            env={"RUNWATCH_WORKER": name},
        )


def budget_connections(emulator: EmulatorServer) -> dict[str, str]:
    """``gloriamundo_budget_<name>``: one key each (containing SECRET_KEY), the emulator's scaled window, and the
    fixed (today's) or adaptive per-process budget."""
    env = {}
    for name in BUDGETS:
        extra = {"rate_window_seconds": BUDGET_WINDOW, "adaptive_rate": name == "adaptive"}
        conn = {
            "conn_type": "gloriamundo",
            "host": emulator.gloriamundo_url,
            "password": f"{SECRET_KEY}_budget_{name}",
            "extra": extra,
        }
        env[f"AIRFLOW_CONN_GLORIAMUNDO_BUDGET_{name.upper()}"] = json.dumps(conn)
    return env


def _dags_folder(home: Path) -> Path:
    folder = home / "dags"
    folder.mkdir()
    for source in DIST_DAGS.glob("dist_*.py"):
        shutil.copy(source, folder / source.name)
    # The e2e drill DAG's task factory (one operator per run kind) is imported, its DAG is not parsed here.
    shutil.copy(E2E_DAGS / "e2e_drills.py", folder / "e2e_drills.py")
    (folder / ".airflowignore").write_text("e2e_drills\\.py\n")
    return folder


def _wait_workers(dep: Deployment, timeout: float = 90) -> None:
    """Until each Celery worker has logged that it is ready to consume."""
    deadline = time.monotonic() + timeout
    while not all(" ready." in dep.logs(w) for w in WORKERS):
        for w in WORKERS:
            if dep.procs[w].poll() is not None:
                raise RuntimeError(f"{w} exited:\n{dep.logs(w)[-4000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Celery workers not ready after {timeout}s:\n{dep.tail()}")
        time.sleep(1)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    from airflow import __version__ as airflow_version
    from packaging.version import Version

    if Version(airflow_version) < Version("3.3"):
        pytest.skip(f"the distributed suite targets Airflow >= 3.3 (found {airflow_version})")
    if not (PG_BIN / "initdb").exists() or shutil.which("redis-server") is None:
        pytest.fail("the distributed suite needs Debian's postgresql-15 and redis-server (./dev test installs them)")
    home = Path(tempfile.mkdtemp(prefix="runwatch-dist-home-"))
    emulator = EmulatorServer(mode="process", scenario=DEFAULT_SCENARIO)
    emulator.start()
    port = free_port()
    env = airflow_env(home, port, emulator, dags=_dags_folder(home))
    env.update(budget_connections(emulator))
    dep = Deployment(home=home, env=env, api_url=f"http://127.0.0.1:{port}", emulator=emulator)
    with running(dep, "distributed-logs"):
        # GloriaMundo's per-key limits (10 executions, 60 polls) counted over 6 s instead of a minute: the budget
        # drill's 40 runs take seconds, not minutes. The budget connections count over the same window.
        httpx.put(f"{emulator.url}{LIMITS_PATH}", json={"window_seconds": BUDGET_WINDOW}, timeout=10).raise_for_status()
        pg_port = start_postgres(dep)
        redis_port = start_redis(dep)
        env.update(postgres_env(pg_port))
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": "16",
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://airflow@127.0.0.1:{pg_port}/airflow",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
                # A worker killed with -9 leaves its task running in the database: fail it (and retry it
                # elsewhere) after this many seconds without a heartbeat, not the default 5 minutes.
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
                # Airflow's HA knob: a triggerer claims at most this many new triggers per loop, so a burst of
                # deferrals spreads over both triggerers instead of landing on whichever looked first.
                "AIRFLOW__TRIGGERER__MAX_TRIGGER_TO_SELECT_PER_LOOP": "4",
            }
        )
        start_airflow_core(dep, port)
        c = Cluster(dep=dep, pg_port=pg_port, redis_port=redis_port)
        # One triggerer at first: the failover drill fills it, then starts the second (see test_drill_1_failover).
        c.start_triggerer(TRIGGERERS[0], capacity=FAILOVER_CAPACITY)
        for name in WORKERS:
            c.start_worker(name)
        wait_healthy(dep)
        _wait_workers(dep)
        wait_dags(dep, DIST_DAG_IDS)
        yield c
