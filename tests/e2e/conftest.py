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
- an egress (:class:`Egress`, the ``egress`` fixture): a second emulator served over https with a CA made at
  test time, and a tinyproxy with BasicAuth whose outgoing connections leave from :data:`PROXY_SOURCE`; every
  Airflow component (not the browser) gets HTTPS_PROXY (with the proxy's password), NO_PROXY=127.0.0.1 (the
  execution API and the plain-http default connections stay direct) and SSL_CERT_FILE (that CA);
  ``<vendor>_proxied`` connections point at ``https://localhost:<port>``, so their traffic can only take the
  proxy's CONNECT tunnel (e2e_proxied).

Why PostgreSQL and not sqlite (``airflow standalone``'s choice): on sqlite a burst of task starts held the
write lock for ~31 s in CI and a REST call failed with HTTP 500 (stop 13); PostgreSQL costs ~3 s of start-up.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.emulator.serving import TlsFiles
from tests.deployment import (
    DEFAULT_SCENARIO,
    ROOT,
    SECRET_KEY,
    Deployment,
    airflow_env,
    free_port,
    postgres_env,
    running,
    start_airflow_core,
    start_postgres,
    wait_dags,
    wait_healthy,
)
from tests.network.fixtures import PROXY_PASSWORD, PROXY_USER
from tests.network.infra import NETWORK_ENV_VARS, Pki, TinyProxy, make_pki

E2E_DAGS = Path(__file__).parent / "dags"
EXAMPLE_DAGS = ROOT / "example_dags"

E2E_DAG_IDS = sorted(p.stem for p in E2E_DAGS.glob("e2e_*.py"))
#: The shipped examples (each file defines one DAG named like the file).
EXAMPLE_DAG_IDS = sorted(p.stem for p in EXAMPLE_DAGS.glob("example_*.py"))
#: DAGs whose runs only need to succeed: triggered together, waited for together (see ``happy_runs``).
HAPPY_DAG_IDS = [*EXAMPLE_DAG_IDS, "e2e_puffle_chat"]
#: The loopback address the proxy's outgoing connections leave from: a request the https emulator logged with
#: this peer came through the proxy, one from 127.0.0.1 did not.
PROXY_SOURCE = "127.0.0.2"


def _dags_folder(home: Path) -> Path:
    """The e2e DAGs and the shipped examples side by side, as copies (a test never edits the source tree)."""
    folder = home / "dags"
    folder.mkdir()
    for source in [*E2E_DAGS.glob("e2e_*.py"), *EXAMPLE_DAGS.glob("example_*.py")]:
        shutil.copy(source, folder / source.name)
    return folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Where the approvals drills' tests run (test_e2e_approvals.py, collected first): its first test triggers the
    run at the start of the session, and the drills then go on in background threads; the browser round
    (fixture ``approvals_page``) comes right after the browser module (whose chromium is gone by then); the tests
    that read the outcomes (fixture ``approvals_done``) run after every other e2e test. So the drills' minutes of
    waiting overlap the rest of the suite."""

    def uses(item: pytest.Item, name: str) -> bool:
        return name in getattr(item, "fixturenames", ())

    last = [item for item in items if uses(item, "approvals_done")]
    ui = [item for item in items if uses(item, "approvals_page") and item not in last]
    rest = [item for item in items if item not in last and item not in ui]
    cut = max((n + 1 for n, item in enumerate(rest) if "test_e2e_browser.py" in item.nodeid), default=len(rest))
    items[:] = [*rest[:cut], *ui, *rest[cut:], *last]


@dataclass(frozen=True)
class Egress:
    """The https vendor (a second emulator, ``pki.ca`` signs its certificate) and the proxy in front of it."""

    emulator: EmulatorServer
    proxy: TinyProxy
    pki: Pki

    @property
    def origin(self) -> str:
        """The ``*_proxied`` connections' origin: a name, not 127.0.0.1, which NO_PROXY exempts."""
        return f"https://localhost:{self.emulator.url.rsplit(':', 1)[1]}"

    def env(self) -> dict[str, str]:
        """The ``<vendor>_proxied`` connections and the proxy and CA variables (either case, the host's dropped)."""
        env = dict.fromkeys(NETWORK_ENV_VARS, "")
        for name, value in self.emulator.connection_env(api_key=SECRET_KEY).items():
            conn = json.loads(value)
            conn["host"] = conn["host"].replace(self.emulator.url, self.origin)
            env[name.replace("_DEFAULT", "_PROXIED")] = json.dumps(conn)
        for name, value in {"HTTPS_PROXY": self.proxy.url, "NO_PROXY": "127.0.0.1"}.items():
            env[name] = env[name.lower()] = value
        env["SSL_CERT_FILE"] = str(self.pki.ca)
        return env


def _start_egress(dep: Deployment) -> Egress:
    """The https emulator and the authenticating proxy, on loopback, files in AIRFLOW_HOME (the proxy's log is
    kept with the component logs), stopped with the deployment."""
    pki = make_pki(dep.home / "pki")
    emulator = EmulatorServer(
        mode="process",
        scenario=DEFAULT_SCENARIO,
        tls=TlsFiles(str(pki.server_cert), str(pki.server_key)),
        client_context=ssl.create_default_context(cafile=str(pki.ca)),
    )
    dep.on_teardown(emulator.stop)
    emulator.start()
    proxy = TinyProxy(dep.home, auth=(PROXY_USER, PROXY_PASSWORD), bind=PROXY_SOURCE)
    dep.on_teardown(proxy.stop)
    proxy.start()
    return Egress(emulator, proxy, pki)


@dataclass(frozen=True)
class _E2E:
    deployment: Deployment
    egress: Egress


@pytest.fixture(scope="session")
def deployment(_e2e: _E2E) -> Deployment:
    return _e2e.deployment


@pytest.fixture(scope="session")
def egress(_e2e: _E2E) -> Egress:
    return _e2e.egress


@pytest.fixture(scope="session")
def _e2e() -> Iterator[_E2E]:
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
        egress = _start_egress(dep)
        dep.component_env.update(egress.env())  # not chromium's: it would send its own https calls to the proxy
        env.update(postgres_env(start_postgres(dep)))
        start_airflow_core(dep, port)
        dep.start_triggerer()
        wait_healthy(dep)
        wait_dags(dep, [*E2E_DAG_IDS, *EXAMPLE_DAG_IDS])
        if marker := os.environ.get("RUNWATCH_E2E_UP_MARKER"):
            # ./dev test starts the distributed suite beside this one when the file appears: not before, so the
            # two deployments' start-up bursts do not meet on 2 cores.
            Path(marker).touch()
        yield _E2E(dep, egress)


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
