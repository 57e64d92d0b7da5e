"""Each vendor through real Airflow behind an authenticating egress proxy, to the emulator over https with a
private CA made at test time: the worker starts the run, the trigger waits for it, both through the proxy.

One run of tests/dags/runwatch_test_network.py (a deferrable task per vendor); each test reads what Airflow
stored, what the emulator served and what tinyproxy logged. Neither the API key nor the proxy password may
appear in the output Airflow produced.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.conftest import SECRET_KEY, DagResult
from tests.network.fixtures import PROXY_PASSWORD, auth_proxy, pki, sigterm_interrupts, tls_emulator
from tests.network.infra import Pki, TinyProxy

__all__ = ["auth_proxy", "pki", "sigterm_interrupts", "tls_emulator"]  # the fixtures this module uses

pytestmark = [pytest.mark.dag, pytest.mark.timeout(600)]  # a whole DAG run, slow on a loaded box

#: task id -> the emulator's vendor name and the path its start call takes
VENDORS = {
    "puffle": ("puffle", "/api/agent/chat"),
    "gumloop": ("gumloop", "/api/v1/start_agent"),
    "gloriamundo": ("gloriamundo", "/api/v1/workflows/"),
}


@pytest.fixture(scope="module")
def proxied(
    dag_runner: Callable[..., DagResult], tls_emulator: EmulatorServer, auth_proxy: TinyProxy, pki: Pki
) -> tuple[DagResult, list[str]]:
    env: dict[str, str] = {}
    for name, value in tls_emulator.connection_env(api_key=SECRET_KEY).items():
        conn = json.loads(value)
        conn["extra"] = {"proxies": auth_proxy.url, "verify": str(pki.ca)}
        env[name] = json.dumps(conn)
    # The https emulator is only reachable through the proxy's tunnel in this test's terms: no CA variables, so
    # the connection's own `verify` must do it.
    env.update({"SSL_CERT_FILE": "", "SSL_CERT_DIR": "", "REQUESTS_CA_BUNDLE": "", "NO_PROXY": "", "no_proxy": ""})
    mark = auth_proxy.mark()
    result = dag_runner("runwatch_test_network", extra_env=env)
    return result, auth_proxy.requests_since(mark)


@pytest.mark.parametrize("task_id", sorted(VENDORS))
def test_vendor_run_through_the_proxy(
    task_id: str, proxied: tuple[DagResult, list[str]], tls_emulator: EmulatorServer
) -> None:
    result, proxy_log = proxied
    assert result.states[task_id] == "success", result.output[-3000:]
    run_id = result.xcom(task_id, "run_id")
    vendor, start_path = VENDORS[task_id]
    served = tls_emulator.requests(vendor=vendor, run_id=run_id)
    assert any(r["method"] == "POST" and r["path"].startswith(start_path) for r in served), served
    assert sum(r["method"] == "GET" for r in served) >= 2, "the trigger polled the https emulator"
    port = tls_emulator.url.rsplit(":", 1)[1]
    assert f"CONNECT 127.0.0.1:{port} HTTP/1.1" in proxy_log, "the proxy's own log shows the tunnels"
    assert result.xcom(task_id, "run")["state"] == "succeeded"


def test_no_secret_in_airflow_output(proxied: tuple[DagResult, list[str]]) -> None:
    result, proxy_log = proxied
    assert result.state == "success", result.output[-3000:]
    for secret in (SECRET_KEY, PROXY_PASSWORD):
        assert secret not in result.output
        assert secret not in repr(result.xcoms)
    assert len(proxy_log) >= 6, proxy_log  # three starts and their polls, all through the proxy
