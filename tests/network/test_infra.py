"""The test parts themselves: the https emulators and the proxies work, and their logs show traffic."""

from __future__ import annotations

import ssl

import httpx
import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from tests.network.fixtures import PROXY_PASSWORD
from tests.network.infra import Pki, TinyProxy


def test_tls_emulator_serves_https_with_the_test_ca(tls_emulator: EmulatorServer, pki: Pki) -> None:
    assert tls_emulator.url.startswith("https://127.0.0.1:")
    assert tls_emulator.health()
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(tls_emulator.url + "/_emulator/health", trust_env=False)


def test_mtls_emulator_needs_a_client_certificate(mtls_emulator: EmulatorServer, pki: Pki) -> None:
    assert mtls_emulator.health()  # the control client presents pki.client_combined
    context = ssl.create_default_context(cafile=str(pki.ca))
    with pytest.raises(httpx.HTTPError):
        httpx.get(mtls_emulator.url + "/_emulator/health", verify=context, trust_env=False)


def test_auth_proxy_refuses_without_credentials_and_logs_requests(
    auth_proxy: TinyProxy, tls_emulator: EmulatorServer, pki: Pki
) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca))
    mark = auth_proxy.mark()
    with pytest.raises(httpx.ProxyError, match="407"):
        httpx.get(tls_emulator.url + "/_emulator/health", proxy=auth_proxy.bare_url, verify=context, trust_env=False)
    answer = httpx.get(tls_emulator.url + "/_emulator/health", proxy=auth_proxy.url, verify=context, trust_env=False)
    assert answer.json() == {"ok": True}
    port = tls_emulator.url.rsplit(":", 1)[1]
    assert auth_proxy.requests_since(mark) == [f"CONNECT 127.0.0.1:{port} HTTP/1.1"] * 2
    assert PROXY_PASSWORD not in auth_proxy.log()
