"""A real Airflow 3 deployment on loopback, shared by the e2e suite, the distributed suite and the batch benchmark.

- :class:`Deployment`: Airflow components and other servers as separate processes (:meth:`Deployment.spawn`:
  each in its own process group, logging under AIRFLOW_HOME, registered for teardown, which stops every group
  with SIGTERM, then SIGKILL after 10 s, also from ``atexit`` if pytest dies), and REST helpers on the public
  API v2;
- :func:`airflow_env`: the environment every component shares (the emulator's connections, fast heartbeats,
  the REST API open to all);
- :func:`running`: teardown on the way out, also on SIGTERM, with the component logs kept under test-artifacts/;
- :func:`start_postgres` and :func:`postgres_env`: a throwaway PostgreSQL 15 cluster (Debian's
  /usr/lib/postgresql/15/bin) in AIRFLOW_HOME on a free port, and the settings that point Airflow at it;
  :func:`start_redis`: a Redis server without persistence (the Celery broker).

Why PostgreSQL everywhere, also for the LocalExecutor deployment of the e2e suite: on sqlite a burst of task
starts held the database's write lock for ~31 s in CI (every component logged "Heartbeat recovered after 31 s")
and a REST call failed with HTTP 500; PostgreSQL is what production runs and costs ~3 s of start-up here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psutil

from airflow_provider_runwatch.emulator.server import EmulatorServer

#: Distinctive so a test can search every log line and API answer for it.
SECRET_KEY = "pk_live_RUNWATCH_E2E_SECRET_9c41d07a"
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
AIRFLOW = [sys.executable, "-m", "airflow"]

#: How runs without a directive (the shipped examples') behave: done 20 s after their start, like a quick real
#: agent run (they overlap with the browser checks, so this costs no wall time). Not the emulator's built-in
#: "two polls": a trigger that fires within seconds of the deferral can lose a race in Airflow 3.3.2's scheduler
#: (the worker's stale "success" for the deferral is read after the resume was queued, and the task is failed;
#: apache/airflow#67287, #72716), which a loaded 2-core box hits.
DEFAULT_SCENARIO = "seconds=20"
#: The Login of the default Gumloop connection (``EmulatorServer.connection_env``).
EMULATOR_USER = "emulator-user"
#: Run kinds (as in the drill DAG) -> the path prefix of their start call at the emulator.
START_PATHS = {
    "puffle": "/api/agent/chat",
    "gumloop_agent": "/api/v1/start_agent",
    "gumloop_session": "/api/v1/agents/",
    "gumloop_flow": "/api/v1/start_pipeline",
    "gloriamundo": "/api/v1/workflows/",
}

_ALL_PROCS: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], *, hard: bool = False, grace: float = 10) -> None:
    """Stop a component and everything it spawned (its process group)."""
    if proc.poll() is not None:
        # The leader is gone but children (executor workers, task supervisors) may live on.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL if hard else signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _descendants(pid: int) -> list[psutil.Process]:
    """Every process below ``pid``: Airflow's task supervisors and Celery's pool children may leave the
    component's process group, so a group signal alone can orphan them."""
    with contextlib.suppress(psutil.Error):
        return list(psutil.Process(pid).children(recursive=True))
    return []


def _kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=5)


def sweep(home: Path) -> None:
    """SIGKILL whatever still runs with this deployment's AIRFLOW_HOME or in its directory (an orphan of a
    killed component).

    The directory too: a task supervisor that a Celery worker started in a session of its own outlived a
    SIGTERM'd run of the suite, and its environment could not be read (setproctitle writes the process title
    over the memory ``/proc/<pid>/environ`` shows, so ``AIRFLOW_HOME`` was not found there); its working
    directory, inherited from the component spawned in ``home``, still said where it came from."""
    root = str(home)
    leftovers = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            cwd = process.cwd()
            if cwd == root or cwd.startswith(root + os.sep) or process.environ().get("AIRFLOW_HOME") == root:
                leftovers.append(process)
    _kill_all(leftovers)


def _stop_together(procs: list[subprocess.Popen[bytes]], grace: float = 10) -> None:
    """Stop several components at once: SIGTERM to every group, one shared grace period, then SIGKILL
    (one by one, a dozen components would take minutes of grace periods)."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    for proc in procs:
        _stop(proc, hard=True, grace=5)


def _stop_all() -> None:
    for proc in reversed(_ALL_PROCS):
        _stop(proc, grace=5)


atexit.register(_stop_all)


@dataclass
class Deployment:
    home: Path
    env: dict[str, str]
    api_url: str
    emulator: EmulatorServer
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    #: Added to the environment of the Airflow components only (:meth:`start`), not of other spawned processes:
    #: an egress proxy's variables must not send a browser's own traffic to the proxy.
    component_env: dict[str, str] = field(default_factory=dict)
    #: Stops of servers started outside :meth:`spawn` (a proxy, a second emulator), run by :func:`running`.
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    # -- processes ----------------------------------------------------------------------------------------
    def log_path(self, name: str) -> Path:
        return self.home / f"{name}-{self.starts.get(name, 0)}.log"

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start an Airflow component (``airflow <args>``), with :attr:`component_env`."""
        return self.spawn(name, [*AIRFLOW, *args], env={**self.component_env, **(env or {})})

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a process in its own process group, logging to AIRFLOW_HOME, stopped at teardown or exit.

        ``env`` adds to (or overrides) the deployment's environment for this process only."""
        self.starts[name] = self.starts.get(name, 0) + 1
        log = self.log_path(name).open("wb")
        proc = subprocess.Popen(
            argv,
            env={**self.env, **env} if env else self.env,
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: killpg reaches its children
        )
        log.close()
        _ALL_PROCS.append(proc)
        self.procs[name] = proc
        return proc

    def on_teardown(self, stop: Callable[[], None]) -> None:
        """Have :func:`running` call ``stop`` on the way out (after the Airflow components, before the emulator),
        also on SIGTERM: for a server that starts itself (its own readiness handshake) rather than by spawn."""
        self.cleanups.append(stop)

    def start_triggerer(self) -> subprocess.Popen[bytes]:
        return self.start("triggerer", "triggerer", "--capacity", "50")

    def stop(self, name: str) -> None:
        _stop(self.procs.pop(name))

    def kill9(self, name: str) -> None:
        """A machine loss: the component and every process below it die at once."""
        proc = self.procs[name]
        below = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        _kill_all(below)
        proc.wait(timeout=10)

    def logs(self, name: str) -> str:
        return "\n".join(
            (self.home / f"{name}-{i}.log").read_text(errors="replace") for i in range(1, self.starts.get(name, 0) + 1)
        )

    # -- REST API (public API v2; SimpleAuthManager with all_admins needs no token) -------------------------
    def api(self) -> httpx.Client:
        # 120 s, not 30: on 2 busy cores a burst of task starts can stall the API server for tens of seconds (seen
        # on sqlite in CI: every component's heartbeat "recovered after 31 s"); waiting that out is not a failure.
        return httpx.Client(base_url=f"{self.api_url}/api/v2", timeout=120)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        with self.api() as c:
            r = c.patch(f"/dags/{dag_id}", json={"is_paused": False})
            if r.status_code >= 500:  # a database hiccup under load: an unpause is idempotent
                time.sleep(2)
                r = c.patch(f"/dags/{dag_id}", json={"is_paused": False})
            r.raise_for_status()
            # A logical date, as the UI's trigger form sends: templates such as {{ ds }} need one.
            now = datetime.now(timezone.utc).isoformat()
            r = c.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": now, "conf": conf or {}})
            r.raise_for_status()
            return str(r.json()["dag_run_id"])

    def set_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        """What a user does with "Mark as failed/success": PATCH the task instance's state.

        Retried on a 5xx: a write can time out on a lock under load, and a user would simply click again
        (setting a state twice is harmless)."""
        with self.api() as c:
            for attempt in range(3):
                r = c.patch(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", json={"new_state": state})
                if r.status_code < 500 or attempt == 2:
                    break
                time.sleep(2)
            assert r.status_code == 200, r.text

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """Task instances by task id; a mapped one as ``task_id[map_index]``."""
        listed = self.read(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", {"limit": 500})
        return {
            ti["task_id"] if ti.get("map_index", -1) < 0 else f"{ti['task_id']}[{ti['map_index']}]": ti
            for ti in listed["task_instances"]
        }

    def read(
        self, path: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """GET ``path`` from the REST API. A 5xx is asked again for up to a minute: a read is idempotent, and a
        drill must not fail on the API server's transient errors (its database session lost under a burst of
        task starts; Airflow 3.3.2's asset-event listing answering 500 while a DAG run an event created has no
        start date yet: ``created_dagruns.0.start_date`` fails its response model)."""
        deadline = time.monotonic() + 60
        with self.api() as c:
            while True:
                r = c.get(path, params=params, headers=headers)
                if r.status_code < 500 or time.monotonic() > deadline:
                    r.raise_for_status()
                    return dict(r.json())
                time.sleep(1)

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """The DAG run's record (:meth:`read`)."""
        return self.read(f"/dags/{dag_id}/dagRuns/{run_id}")

    def wait_for(
        self, dag_id: str, run_id: str, *, timeout: float = 120, states: tuple[str, ...] = ("success", "failed")
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.dag_run(dag_id, run_id)
            if run["state"] in states:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"{dag_id}/{run_id} still {run['state']} after {timeout}s: {self.tail()}")
            time.sleep(1)

    def wait_for_tasks(
        self, dag_id: str, run_id: str, state: str, task_ids: list[str], *, timeout: float = 60
    ) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            tis = self.task_instances(dag_id, run_id)
            if all(tis.get(t, {}).get("state") == state for t in task_ids):
                return tis
            if time.monotonic() > deadline:
                have = {t: tis.get(t, {}).get("state") for t in task_ids}
                raise AssertionError(f"tasks not {state} after {timeout}s: {have}")
            time.sleep(0.5)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.read(path, {"deserialize": True, "map_index": map_index})["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """The task's log as the UI shows it (worker and triggerer parts), one line per event."""
        content = self.read(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            {"full_content": True, "map_index": map_index},
            headers={"Accept": "application/json"},
        )["content"]
        lines = []
        for item in content if isinstance(content, list) else [content]:
            if isinstance(item, dict):
                extra = {k: v for k, v in item.items() if k not in ("event", "timestamp", "level", "logger")}
                lines.append(f"{item.get('timestamp', '')} {item.get('level', '')} {item.get('event', '')} {extra}")
            else:
                lines.append(str(item))
        return "\n".join(lines)

    def explain(self, dag_id: str, run_id: str) -> str:
        """Why a DAG run did not succeed: its task states, the end of each failed task's log, and the
        scheduler's state-mismatch lines (Airflow's stale-executor-event race)."""
        tis = self.task_instances(dag_id, run_id)
        lines = [f"{dag_id} {run_id}: " + ", ".join(f"{t}={ti['state']}" for t, ti in tis.items())]
        for ti in tis.values():
            if ti["state"] == "failed":
                log = self.task_log(dag_id, run_id, ti["task_id"], max(1, ti["try_number"]), ti["map_index"])
                lines.append(f"--- {ti['task_id']}[{ti['map_index']}]\n{log[-2500:]}")
        lines += [line for line in self.logs("scheduler").splitlines() if "but the task instance's state" in line]
        return "\n".join(lines)

    def tail(self, n: int = 3000) -> str:
        return "\n".join(f"--- {name}\n{self.logs(name)[-n:]}" for name in self.procs)

    # -- the emulator, as the vendor sees it ------------------------------------------------------------------
    def starts_of(self, kind: str, run_id: str, emulator: EmulatorServer | None = None) -> list[dict[str, Any]]:
        """The start calls the emulator (``emulator``: another one than the deployment's) received for this run
        (a second one would be a duplicate run)."""
        return [
            r
            for r in (emulator or self.emulator).requests(method="POST", run_id=run_id)
            if r["path"].startswith(START_PATHS[kind]) and not r["path"].endswith("/cancel")
        ]

    def vendor_answer(self, kind: str, run_id: str, emulator: EmulatorServer | None = None) -> Any:
        """The final answer of a finished run read straight from the emulator's vendor API (not through the
        provider): what the task's return value must equal. ``emulator``: another one than the deployment's
        (an https one is read with the CA its ``client_context`` trusts)."""
        emu = emulator or self.emulator
        verify: ssl.SSLContext | bool = emu.client_context or True
        headers = {"Authorization": f"Bearer {SECRET_KEY}", "x-auth-key": EMULATOR_USER}
        user = {"user_id": EMULATOR_USER}
        readers: dict[str, tuple[str, dict[str, str], Callable[[Any], Any]]] = {
            "puffle": (f"{emu.puffle_url}/api/agent/chat/{run_id}", {}, lambda b: b["text"]),
            "gumloop_agent": (f"{emu.gumloop_url}/agent_status/{run_id}", user, lambda b: b["response"]),
            "gumloop_session": (f"{emu.gumloop_url}/sessions/{run_id}", {}, _last_assistant_text),
            "gumloop_flow": (f"{emu.gumloop_url}/get_pl_run", {"run_id": run_id, **user}, lambda b: b["outputs"]),
            "gloriamundo": (f"{emu.gloriamundo_url}/runs/{run_id}/status", {}, lambda b: b["result"]),
        }
        url, params, pick = readers[kind]
        deadline = time.monotonic() + 60
        while True:
            r = httpx.get(url, params=params, headers=headers, timeout=30, verify=verify)
            if r.status_code == 429 and time.monotonic() < deadline:  # GloriaMundo's per-key poll budget
                time.sleep(float(r.headers.get("Retry-After") or 2))
                continue
            r.raise_for_status()
            return pick(r.json())


def _last_assistant_text(body: dict[str, Any]) -> str:
    """A Gumloop session's answer: the text of its last assistant message (``content``, else its text parts)."""
    message = [m for m in body["session"]["messages"] if m["role"] == "assistant"][-1]
    if message.get("content"):
        return str(message["content"])
    return "".join(p["text"] for p in message["parts"] if p.get("type") == "text")


#: The components ``/api/v2/monitor/health`` reports, all of which a whole deployment has.
COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def wait_healthy(dep: Deployment, timeout: float = 120, components: tuple[str, ...] = COMPONENTS) -> None:
    """Until the API server reports each of ``components`` healthy (fails at once if a process has exited)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for name, proc in dep.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{dep.logs(name)[-4000:]}")
        try:
            r = httpx.get(f"{dep.api_url}/api/v2/monitor/health", timeout=5)
            last = r.json()
            if all(last.get(c, {}).get("status") == "healthy" for c in components):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    raise RuntimeError(f"deployment not healthy after {timeout}s: {last}\n{dep.tail()}")


def wait_dags(dep: Deployment, dag_ids: list[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    with dep.api() as c:
        while time.monotonic() < deadline:
            if all(c.get(f"/dags/{d}").status_code == 200 for d in dag_ids):
                return
            time.sleep(1)
        r = c.get("/importErrors")
    raise RuntimeError(f"DAGs {dag_ids} not parsed after {timeout}s; import errors: {r.text}\n{dep.tail()}")


def airflow_env(home: Path, port: int, emulator: EmulatorServer, dags: Path) -> dict[str, str]:
    """The environment every component of a test deployment shares (executor and database are the caller's):
    this process's environment without any ``AIRFLOW__*``/``AIRFLOW_CONN_*``, the emulator's connections, the
    API server on ``port``, fast heartbeats, a low triggerer health-check threshold, the REST API open to all."""
    api_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and not k.startswith("AIRFLOW_CONN_")}
    env.update(emulator.connection_env(api_key=SECRET_KEY))
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            # Only REST-triggered runs: the examples' cron schedules must not add runs of their own.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__API__BASE_URL": api_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": "runwatch-e2e-not-secret",
            "AIRFLOW__API_AUTH__JWT_SECRET": "runwatch-e2e-jwt-not-secret",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            # A dead triggerer's triggers are re-assigned once its heartbeat is this old.
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@contextlib.contextmanager
def running(dep: Deployment, artifacts: str) -> Iterator[Deployment]:
    """Stop every process of ``dep`` (and the emulator) on the way out, also on SIGTERM; keep the component logs
    under test-artifacts/``artifacts`` and drop AIRFLOW_HOME (unless RUNWATCH_E2E_KEEP_HOME is set)."""
    # A CI runner cancels a job with SIGTERM, which would end pytest without teardown or atexit: make it an
    # interrupt instead, so the fixtures stop every process group on the way out.
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield dep
    finally:
        _stop_together(list(dep.procs.values()))
        _stop_all()
        sweep(dep.home)
        for stop in reversed(dep.cleanups):
            stop()
        dep.emulator.stop()
        signal.signal(signal.SIGTERM, previous_sigterm)
        if os.environ.get("RUNWATCH_E2E_KEEP_HOME"):
            print(f"AIRFLOW_HOME kept at {dep.home}")
        else:
            ARTIFACTS.mkdir(exist_ok=True)
            dest = ARTIFACTS / artifacts
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            for log in dep.home.glob("*.log"):
                shutil.copy(log, dest / log.name)
            shutil.rmtree(dep.home, ignore_errors=True)


#: Debian's PostgreSQL 15 server binaries (./dev test installs postgresql-15 when they are missing).
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def as_unprivileged() -> list[str]:
    """The argv prefix that runs PostgreSQL as ``nobody`` when we are root (it refuses root); none otherwise."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


def owned_by_server(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "nobody", "nogroup")


def postgres_env(pg_port: int) -> dict[str, str]:
    """Airflow's metadata database on the cluster of :func:`start_postgres`.

    Airflow 3.3 builds an async engine on it too (the DAG run ``wait`` endpoint, async state-store reads):
    asyncpg, pinned with psycopg2 in the ``distributed`` extra. Small pools: a dozen components share one
    server on 2 cores."""
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://airflow@127.0.0.1:{pg_port}/airflow",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": f"postgresql+asyncpg://airflow@127.0.0.1:{pg_port}/airflow",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "5",
    }


def start_postgres(dep: Deployment) -> int:
    """A PostgreSQL cluster made by ``initdb`` under AIRFLOW_HOME, on a free port, durability off (a test
    database), with an ``airflow`` database; its port.

    As root it runs as the unprivileged ``nobody`` (PostgreSQL refuses to run as root) through ``setpriv``,
    which execs in place, so the server stays the leader of its process group and is stopped with the rest."""
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(f"PostgreSQL 15 is missing ({PG_BIN}): ./dev test installs Debian's postgresql-15")
    if os.geteuid() == 0:
        dep.home.chmod(0o711)  # the unprivileged server must reach its data directory inside
    pg = dep.home / "pg"
    pg.mkdir()
    owned_by_server(pg)
    data = pg / "data"
    initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "airflow", "-A", "trust", "--no-sync", "-E", "UTF8"]
    subprocess.run([*as_unprivileged(), *initdb], check=True, capture_output=True, timeout=120, cwd=pg)
    port = free_port()
    dep.spawn(
        "postgres",
        [
            *as_unprivileged(),
            str(PG_BIN / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(pg),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=32MB",
        ],
    )
    deadline = time.monotonic() + 60
    while True:
        ready = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True, check=False
        )
        if ready.returncode == 0:
            break
        if time.monotonic() > deadline or dep.procs["postgres"].poll() is not None:
            raise RuntimeError(f"PostgreSQL did not start:\n{dep.logs('postgres')[-3000:]}")
        time.sleep(0.3)
    subprocess.run(
        [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "airflow"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return port


def start_redis(dep: Deployment) -> int:
    """``redis-server`` on a free port, without persistence (a broker for one test session); its port."""
    port = free_port()
    redis_dir = dep.home / "redis"
    redis_dir.mkdir()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    dep.spawn("redis", [*argv, "--dir", str(redis_dir), "--daemonize", "no"])
    deadline = time.monotonic() + 30
    while True:
        try:
            import redis

            redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).ping()
            return port
        except Exception:
            if time.monotonic() > deadline or dep.procs["redis"].poll() is not None:
                raise RuntimeError(f"redis-server did not start:\n{dep.logs('redis')[-3000:]}") from None
            time.sleep(0.2)


def start_airflow_core(dep: Deployment, port: int) -> None:
    """Migrate the metadata database and start api-server (on ``port``), scheduler and dag-processor: every
    component but the triggerers and workers, which each caller starts (and restarts) its own way."""
    migrate = subprocess.run([*AIRFLOW, "db", "migrate"], env=dep.env, cwd=dep.home, capture_output=True, timeout=300)
    if migrate.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-3000:]!r}\n{migrate.stderr[-3000:]!r}")
    dep.start("api-server", "api-server", "--port", str(port), "--host", "127.0.0.1", "--workers", "1")
    dep.start("scheduler", "scheduler")
    dep.start("dag-processor", "dag-processor")
