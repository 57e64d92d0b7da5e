"""A real Airflow 3 deployment on loopback for the end-to-end suite.

One session fixture, ``deployment``, starts in a throwaway AIRFLOW_HOME on sqlite:

- the bundled emulator (process mode), the three default connections as ``AIRFLOW_CONN_*`` env vars holding
  :data:`SECRET_KEY`;
- ``airflow api-server``, ``airflow scheduler`` (LocalExecutor, low parallelism), ``airflow dag-processor`` and
  ``airflow triggerer`` as separate processes, each in its own process group, logs under AIRFLOW_HOME;
- DAGS_FOLDER = a copy of tests/e2e/dags/ and example_dags/ (the shipped examples run as users get them);
  ``[scheduler] use_job_schedule = False``: only runs triggered through the REST API happen, even for the
  examples' cron schedules;
- ``[core] simple_auth_manager_all_admins = True``: the REST API and the UI (headless chromium) need no login,
  the auth manager adds an admin token to every request.

Why sqlite: Airflow 3 removed the SequentialExecutor and runs LocalExecutor on sqlite (``airflow standalone``
does exactly that); scheduler, dag-processor, triggerer and api-server share the file under sqlite's WAL-less
locking, which holds at the handful of concurrent tasks this suite runs. Postgres would add ~5 s of start-up and
a system dependency for no path the suite needs.

Every process the suite starts (Airflow components, the browser) goes through :meth:`Deployment.spawn`: its own
process group, registered for teardown, which stops every group (SIGTERM, then SIGKILL after 10 s), also from
``atexit`` if pytest dies.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer

#: Distinctive so a test can search every log line and API answer for it.
SECRET_KEY = "pk_live_RUNWATCH_E2E_SECRET_9c41d07a"
E2E_DAGS = Path(__file__).parent / "dags"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = ROOT / "example_dags"
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


def _free_port() -> int:
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
    """SIGKILL whatever still runs with this deployment's AIRFLOW_HOME (an orphan of a killed component)."""
    leftovers = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.pid != os.getpid() and process.environ().get("AIRFLOW_HOME") == str(home):
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

    # -- processes ----------------------------------------------------------------------------------------
    def log_path(self, name: str) -> Path:
        return self.home / f"{name}-{self.starts.get(name, 0)}.log"

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start an Airflow component (``airflow <args>``)."""
        return self.spawn(name, [*AIRFLOW, *args], env=env)

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
        # 120 s, not 30: on sqlite a burst of task starts can hold the database's write lock for ~31 s (seen in CI:
        # every component's heartbeat "recovered after 31 s"); a REST call waiting that out is not a failure.
        return httpx.Client(base_url=f"{self.api_url}/api/v2", timeout=120)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        with self.api() as c:
            r = c.patch(f"/dags/{dag_id}", json={"is_paused": False})
            if r.status_code >= 500:  # the database was locked past sqlite's busy timeout: an unpause is idempotent
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

        Retried on a 5xx: on sqlite a write can time out on the database lock under load, and a user would
        simply click again (setting a state twice is harmless)."""
        with self.api() as c:
            for attempt in range(3):
                r = c.patch(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", json={"new_state": state})
                if r.status_code < 500 or attempt == 2:
                    break
                time.sleep(2)
            assert r.status_code == 200, r.text

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """Task instances by task id; a mapped one as ``task_id[map_index]``."""
        with self.api() as c:
            r = c.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 500})
            r.raise_for_status()
            return {
                ti["task_id"] if ti.get("map_index", -1) < 0 else f"{ti['task_id']}[{ti['map_index']}]": ti
                for ti in r.json()["task_instances"]
            }

    def wait_for(
        self, dag_id: str, run_id: str, *, timeout: float = 120, states: tuple[str, ...] = ("success", "failed")
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.api() as c:
            while True:
                r = c.get(f"/dags/{dag_id}/dagRuns/{run_id}")
                r.raise_for_status()
                run = r.json()
                if run["state"] in states:
                    return dict(run)
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
        with self.api() as c:
            r = c.get(
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
                params={"deserialize": True, "map_index": map_index},
            )
            r.raise_for_status()
            return r.json()["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """The task's log as the UI shows it (worker and triggerer parts), one line per event."""
        with self.api() as c:
            r = c.get(
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                params={"full_content": True, "map_index": map_index},
                headers={"Accept": "application/json"},
            )
            r.raise_for_status()
            content = r.json()["content"]
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
    def starts_of(self, kind: str, run_id: str) -> list[dict[str, Any]]:
        """The start calls the emulator received for this run (a second one would be a duplicate run)."""
        return [
            r
            for r in self.emulator.requests(method="POST", run_id=run_id)
            if r["path"].startswith(START_PATHS[kind]) and not r["path"].endswith("/cancel")
        ]

    def vendor_answer(self, kind: str, run_id: str) -> Any:
        """The final answer of a finished run read straight from the emulator's vendor API (not through the
        provider): what the task's return value must equal."""
        emu = self.emulator
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
            r = httpx.get(url, params=params, headers=headers, timeout=30)
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


def _wait_healthy(dep: Deployment, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for name, proc in dep.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{dep.logs(name)[-4000:]}")
        try:
            r = httpx.get(f"{dep.api_url}/api/v2/monitor/health", timeout=5)
            last = r.json()
            if all(
                last.get(c, {}).get("status") == "healthy"
                for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")
            ):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    raise RuntimeError(f"deployment not healthy after {timeout}s: {last}\n{dep.tail()}")


def _wait_dags(dep: Deployment, dag_ids: list[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    with dep.api() as c:
        while time.monotonic() < deadline:
            if all(c.get(f"/dags/{d}").status_code == 200 for d in dag_ids):
                return
            time.sleep(1)
        r = c.get("/importErrors")
    raise RuntimeError(f"DAGs {dag_ids} not parsed after {timeout}s; import errors: {r.text}\n{dep.tail()}")


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


def airflow_env(home: Path, port: int, emulator: EmulatorServer, dags: Path | None = None) -> dict[str, str]:
    """The environment every component of a test deployment shares (executor and database are the caller's):
    this process's environment without any ``AIRFLOW__*``/``AIRFLOW_CONN_*``, the emulator's connections, the
    API server on ``port``, fast heartbeats, a low triggerer health-check threshold, the REST API open to all."""
    api_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and not k.startswith("AIRFLOW_CONN_")}
    env.update(emulator.connection_env(api_key=SECRET_KEY))
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags or _dags_folder(home)),
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
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
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
    port = _free_port()
    env = airflow_env(home, port, emulator)
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # sqlite waits up to 5 s for a write lock by default; on 2 busy cores a burst of task starts, resumes
            # and a user's PATCH can need longer (seen: "Database error" on a mark-failed).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db?timeout=30",
        }
    )
    dep = Deployment(home=home, env=env, api_url=f"http://127.0.0.1:{port}", emulator=emulator)
    with running(dep, "e2e-logs"):
        subprocess.run([*AIRFLOW, "db", "migrate"], env=env, cwd=home, check=True, capture_output=True, timeout=180)
        dep.start("api-server", "api-server", "--port", str(port), "--host", "127.0.0.1", "--workers", "1")
        dep.start("scheduler", "scheduler")
        dep.start("dag-processor", "dag-processor")
        dep.start_triggerer()
        _wait_healthy(dep)
        _wait_dags(dep, [*E2E_DAG_IDS, *EXAMPLE_DAG_IDS])
        yield dep


@pytest.fixture(scope="session")
def happy_started(deployment: Deployment) -> dict[str, str]:
    """One REST-triggered run of every DAG in :data:`HAPPY_DAG_IDS`, all at once: ``{dag_id: dag_run_id}``.

    The browser checks request this first, so these runs overlap with them (nothing in them is timed)."""
    started = {}
    for dag_id in HAPPY_DAG_IDS:
        started[dag_id] = deployment.trigger(dag_id)
        time.sleep(1)  # not all at once: on sqlite a burst of simultaneous task starts can stall every writer
    return started


@pytest.fixture(scope="session")
def happy_runs(deployment: Deployment, happy_started: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The runs of ``happy_started``, waited for to the end: ``{dag_id: dag_run}`` (the REST API's DAG run,
    with its final ``state``)."""
    return {dag_id: deployment.wait_for(dag_id, run_id, timeout=180) for dag_id, run_id in happy_started.items()}
