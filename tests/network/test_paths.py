"""Every networking case on the worker's (sync) and the triggerer's (async) path, against real parts:
tinyproxy on loopback, the emulator over https with a CA made at test time, and one that requires a client
certificate. What went through the proxy is read from the proxy's own log.

Async paths: the lean transport (default) and httpx's own (``RUNWATCH_HTTP_TRANSPORT=httpx``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_runwatch.core import shared_transport
from airflow_provider_runwatch.core.errors import RunwatchError, TransportError, VendorAPIError
from airflow_provider_runwatch.core.http import RetryPolicy
from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks.gumloop import GumloopHook
from airflow_provider_runwatch.hooks.puffle import PuffleHook
from airflow_provider_runwatch.vendors import puffle
from tests.conftest import SECRET_KEY
from tests.network.fixtures import PROXY_PASSWORD
from tests.network.infra import NETWORK_ENV_VARS, Pki, TinyProxy, free_port

PATHS = ("sync", "async", "async-httpx")
ONE_TRY = RetryPolicy(max_attempts=1)
FAST = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.1)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NETWORK_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "async-httpx":
        monkeypatch.setattr(shared_transport, "LEAN_TRANSPORT", False)
    return str(request.param)


def connect(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer, conn_id: str, **extra: Any) -> str:
    conn = {"conn_type": "puffle", "host": emulator.puffle_url, "password": SECRET_KEY, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


def roundtrip(path: str, conn_id: str, retry: RetryPolicy = FAST) -> str:
    """Start a Puffle chat run and read it back on ``path``; returns the run id."""
    hook = PuffleHook(conn_id, retry=retry)
    if path == "sync":
        try:
            started = hook.start_chat("through the network [emulator: polls=0]")
            assert hook.get_chat_run(started.runId).status == "completed"
            return started.runId
        finally:
            hook.close()

    async def run() -> str:
        started = await hook.astart_chat("through the network [emulator: polls=0]")
        assert (await hook.aget_chat_run(started.runId)).status == "completed"
        return started.runId

    return asyncio.run(run())


def failure(path: str, conn_id: str) -> RunwatchError:
    with pytest.raises(RunwatchError) as info:
        roundtrip(path, conn_id, retry=ONE_TRY)
    text = str(info.value)
    assert SECRET_KEY not in text and PROXY_PASSWORD not in text
    return info.value


def transient(error: RunwatchError) -> bool:
    """Whether a vendor call's failure is worth retrying (only a failed call, a VendorAPIError, says)."""
    assert isinstance(error, VendorAPIError), repr(error)
    return error.transient


def tunnels(proxy: TinyProxy, mark: int, emulator: EmulatorServer) -> list[str]:
    port = emulator.url.rsplit(":", 1)[1]
    return [line for line in proxy.requests_since(mark) if line == f"CONNECT 127.0.0.1:{port} HTTP/1.1"]


# -- proxies ------------------------------------------------------------------------------------------------


def test_proxy_from_the_environment(
    path: str, monkeypatch: pytest.MonkeyPatch, proxy: TinyProxy, tls_emulator: EmulatorServer, pki: Pki
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    conn_id = connect(monkeypatch, tls_emulator, "net_env_proxy", verify=str(pki.ca))
    mark = proxy.mark()
    run_id = roundtrip(path, conn_id)
    assert tunnels(proxy, mark, tls_emulator), proxy.requests_since(mark)
    assert len(tls_emulator.requests(run_id=run_id)) == 2


def test_proxy_from_the_extra_tunnels_once_per_origin(
    path: str, monkeypatch: pytest.MonkeyPatch, proxy: TinyProxy, tls_emulator: EmulatorServer, pki: Pki
) -> None:
    """Tunnels are pooled and kept alive: one client's start and five reads ride one CONNECT."""
    conn_id = connect(monkeypatch, tls_emulator, "net_extra_proxy", proxies=proxy.url, verify=str(pki.ca))
    hook = PuffleHook(conn_id, retry=FAST)
    start = puffle.start_chat("pooled [emulator: polls=3]")
    mark = proxy.mark()
    if path == "sync":
        run_id = hook.call(start).runId
        states = [hook.call(puffle.get_chat_run(run_id)).status for _ in range(5)]
        hook.close()
    else:

        async def run() -> tuple[str, list[str]]:
            async with hook.async_client() as client:
                run_id = (await client.call(start)).runId
                read = puffle.get_chat_run(run_id)
                return run_id, [(await client.call(read)).status for _ in range(5)]

        run_id, states = asyncio.run(run())
    assert states[-1] == "completed"
    assert len(tls_emulator.requests(run_id=run_id)) == 6
    assert len(tunnels(proxy, mark, tls_emulator)) == 1, proxy.requests_since(mark)


def test_trust_env_false_ignores_the_environment(
    path: str, monkeypatch: pytest.MonkeyPatch, tls_emulator: EmulatorServer, pki: Pki
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    conn_id = connect(monkeypatch, tls_emulator, "net_no_env", verify=str(pki.ca), trust_env=False)
    roundtrip(path, conn_id)


def test_http_origin_through_the_proxy_uses_absolute_form(
    path: str, monkeypatch: pytest.MonkeyPatch, proxy: TinyProxy, runwatch_emulator: EmulatorServer
) -> None:
    conn_id = connect(monkeypatch, runwatch_emulator, "net_http_proxy", proxies={"http": proxy.url})
    mark = proxy.mark()
    run_id = roundtrip(path, conn_id)
    lines = proxy.requests_since(mark)
    assert f"POST {runwatch_emulator.url}/api/agent/chat HTTP/1.1" in lines, lines
    assert any(line.startswith(f"GET {runwatch_emulator.url}/api/agent/chat/{run_id}") for line in lines), lines


def test_http_origin_proxy_wants_credentials(
    path: str, monkeypatch: pytest.MonkeyPatch, auth_proxy: TinyProxy, runwatch_emulator: EmulatorServer
) -> None:
    if path != "async":
        pytest.skip("tinyproxy resets the connection after its 407, before httpx reads the answer to a POST")
    conn_id = connect(monkeypatch, runwatch_emulator, "net_http_407", proxies={"http": auth_proxy.bare_url})
    error = failure(path, conn_id)
    assert "407" in str(error) and "requires credentials" in str(error) and not transient(error), str(error)


def test_no_proxy_bypass(
    path: str, monkeypatch: pytest.MonkeyPatch, proxy: TinyProxy, tls_emulator: EmulatorServer, pki: Pki
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "example.invalid,127.0.0.0/8")  # CIDR
    conn_id = connect(monkeypatch, tls_emulator, "net_no_proxy", verify=str(pki.ca))
    mark = proxy.mark()
    roundtrip(path, conn_id)
    assert proxy.requests_since(mark) == []


def test_proxy_auth_accepted(
    path: str,
    monkeypatch: pytest.MonkeyPatch,
    auth_proxy: TinyProxy,
    tls_emulator: EmulatorServer,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn_id = connect(monkeypatch, tls_emulator, "net_auth_ok", proxies={"https": auth_proxy.url}, verify=str(pki.ca))
    mark = auth_proxy.mark()
    with caplog.at_level(logging.DEBUG):
        roundtrip(path, conn_id)
    assert tunnels(auth_proxy, mark, tls_emulator)
    assert PROXY_PASSWORD not in caplog.text and PROXY_PASSWORD not in auth_proxy.log()


@pytest.mark.parametrize("credentials", ["wrong", "none"])
def test_proxy_auth_refused(
    path: str,
    credentials: str,
    monkeypatch: pytest.MonkeyPatch,
    auth_proxy: TinyProxy,
    tls_emulator: EmulatorServer,
    pki: Pki,
) -> None:
    url = auth_proxy.bare_url if credentials == "none" else auth_proxy.bare_url.replace("//", "//runwatch-egress:nope@")
    conn_id = connect(monkeypatch, tls_emulator, "net_auth_bad", proxies=url, verify=str(pki.ca))
    error = failure(path, conn_id)
    text = str(error)
    assert ("407" in text or "401" in text) and f"127.0.0.1:{auth_proxy.port}" in text, text
    assert f"127.0.0.1:{tls_emulator.url.rsplit(':', 1)[1]}" in text, text  # the origin
    assert ("credentials" in text) and "nope" not in text
    assert not transient(error)


def test_proxy_down(path: str, monkeypatch: pytest.MonkeyPatch, tls_emulator: EmulatorServer, pki: Pki) -> None:
    port = free_port()
    conn_id = connect(monkeypatch, tls_emulator, "net_proxy_down", proxies=f"http://u:pw_down@127.0.0.1:{port}")
    error = failure(path, conn_id)
    assert isinstance(error, TransportError) and error.transient
    text = str(error)
    assert f"127.0.0.1:{port}" in text and "pw_down" not in text, text
    assert "proxy" in text.lower()


@pytest.fixture
def dropping_proxy() -> Iterator[int]:
    """A listener that accepts and closes at once: a proxy that drops the tunnel before answering."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.recv(4096)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(2)
        server.close()


def test_proxy_drops_the_tunnel(
    path: str, monkeypatch: pytest.MonkeyPatch, dropping_proxy: int, tls_emulator: EmulatorServer, pki: Pki
) -> None:
    conn_id = connect(monkeypatch, tls_emulator, "net_drop", proxies=f"http://127.0.0.1:{dropping_proxy}")
    error = failure(path, conn_id)
    assert isinstance(error, TransportError) and error.transient
    assert f"127.0.0.1:{dropping_proxy}" in str(error), str(error)


# -- TLS ----------------------------------------------------------------------------------------------------


def test_private_ca_from_the_extra(
    path: str, monkeypatch: pytest.MonkeyPatch, tls_emulator: EmulatorServer, pki: Pki
) -> None:
    roundtrip(path, connect(monkeypatch, tls_emulator, "net_ca_extra", verify=str(pki.ca)))


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
def test_private_ca_from_the_environment(
    path: str, variable: str, monkeypatch: pytest.MonkeyPatch, tls_emulator: EmulatorServer, pki: Pki
) -> None:
    monkeypatch.setenv(variable, str(pki.ca))
    roundtrip(path, connect(monkeypatch, tls_emulator, "net_ca_env"))


def test_untrusted_certificate_refused(
    path: str, monkeypatch: pytest.MonkeyPatch, tls_emulator: EmulatorServer, pki: Pki
) -> None:
    error = failure(path, connect(monkeypatch, tls_emulator, "net_untrusted", verify=str(pki.other_ca)))
    text = str(error)
    assert "TLS certificate of 127.0.0.1 is not trusted" in text and "'verify'" in text, text
    assert "SSL_CERT_FILE" in text and not transient(error)


def test_verify_false(
    path: str, monkeypatch: pytest.MonkeyPatch, tls_emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        roundtrip(path, connect(monkeypatch, tls_emulator, f"net_noverify_{path.replace('-', '_')}", verify=False))
    assert "TLS certificates are NOT checked" in caplog.text


def test_client_certificate_accepted(
    path: str, monkeypatch: pytest.MonkeyPatch, mtls_emulator: EmulatorServer, pki: Pki
) -> None:
    cert = [str(pki.client_cert), str(pki.client_key)]
    roundtrip(path, connect(monkeypatch, mtls_emulator, "net_mtls_ok", verify=str(pki.ca), cert=cert))


@pytest.mark.parametrize("presented", ["none", "stranger"])
def test_client_certificate_refused(
    path: str, presented: str, monkeypatch: pytest.MonkeyPatch, mtls_emulator: EmulatorServer, pki: Pki
) -> None:
    extra: dict[str, Any] = {"verify": str(pki.ca)}
    if presented == "stranger":
        extra["cert"] = str(pki.stranger_cert)
    error = failure(path, connect(monkeypatch, mtls_emulator, "net_mtls_bad", **extra))
    text = str(error)
    if presented == "none":
        assert "requires a TLS client certificate" in text and "'cert'" in text, text
    else:
        assert "refused the TLS client certificate" in text, text


def test_through_the_auth_proxy_with_private_ca_and_client_certificate(
    path: str, monkeypatch: pytest.MonkeyPatch, auth_proxy: TinyProxy, mtls_emulator: EmulatorServer, pki: Pki
) -> None:
    cert = str(pki.client_combined)
    conn_id = connect(monkeypatch, mtls_emulator, "net_all", proxies=auth_proxy.url, verify=str(pki.ca), cert=cert)
    mark = auth_proxy.mark()
    roundtrip(path, conn_id)
    assert tunnels(auth_proxy, mark, mtls_emulator)


# -- the other callers: test_connection, cancel --------------------------------------------------------------


def test_test_connection_and_cancel_use_the_proxy(
    monkeypatch: pytest.MonkeyPatch, auth_proxy: TinyProxy, tls_emulator: EmulatorServer, pki: Pki
) -> None:
    conn = {
        "conn_type": "gumloop",
        "host": tls_emulator.gumloop_url,
        "login": "emulator-user",
        "password": SECRET_KEY,
        "extra": {"proxies": auth_proxy.url, "verify": str(pki.ca)},
    }
    monkeypatch.setenv("AIRFLOW_CONN_NET_GUMLOOP", json.dumps(conn))
    mark = auth_proxy.mark()
    ok, message = GumloopHook("net_gumloop").test_connection()
    assert ok, message
    assert tunnels(auth_proxy, mark, tls_emulator)
    hook = GumloopHook("net_gumloop", retry=FAST)
    session_id = hook.create_session("agent_net", "cancel me [emulator: polls=never]").session.id
    mark = auth_proxy.mark()
    assert hook.cancel(hook.sessions, session_id) is True  # the on_kill path (a client of its own)
    assert asyncio.run(hook.acancel(hook.sessions, session_id)) is True  # the trigger's cancel
    assert len(tunnels(auth_proxy, mark, tls_emulator)) == 2
    cancels = tls_emulator.requests(method="POST", path_prefix="/api/v1/sessions/", run_id=session_id)
    assert [c["path"] for c in cancels] == [f"/api/v1/sessions/{session_id}/cancel"] * 2
