"""Session fixtures for the networking tests (imported by tests/network/conftest.py and the proxied DAG tests).

``pki``: a CA made at test time and certificates from it. ``tls_emulator``: the emulator over https with that CA.
``mtls_emulator``: the same, but the handshake requires a client certificate from ``pki.client_ca``.
``proxy`` / ``auth_proxy``: real tinyproxy instances (the second with BasicAuth ``PROXY_USER``/``PROXY_PASSWORD``).
"""

from __future__ import annotations

import signal
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.emulator.serving import TlsFiles
from tests.network.infra import Pki, TinyProxy, make_pki

PROXY_USER = "runwatch-egress"
#: Distinctive, so a test can search every log, error and payload for it.
PROXY_PASSWORD = "pxpw_RUNWATCH_PROXY_SECRET_83b1"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _client_context(pki: Pki, *, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if with_cert:
        context.load_cert_chain(str(pki.client_combined))
    return context


@pytest.fixture(scope="session")
def sigterm_interrupts() -> Iterator[None]:
    """A SIGTERM ends pytest without teardown: make it an interrupt so the fixtures stop their processes."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def tls_emulator(pki: Pki, sigterm_interrupts: None) -> Iterator[EmulatorServer]:
    tls = TlsFiles(str(pki.server_cert), str(pki.server_key))
    with EmulatorServer(mode="process", tls=tls, client_context=_client_context(pki, with_cert=False)) as server:
        yield server


@pytest.fixture(scope="session")
def mtls_emulator(pki: Pki, sigterm_interrupts: None) -> Iterator[EmulatorServer]:
    tls = TlsFiles(str(pki.server_cert), str(pki.server_key), ca_certs=str(pki.client_ca), require_client_cert=True)
    with EmulatorServer(mode="process", tls=tls, client_context=_client_context(pki, with_cert=True)) as server:
        yield server


def _proxy(directory: Path, auth: tuple[str, str] | None) -> Iterator[TinyProxy]:
    proxy = TinyProxy(directory, auth)
    try:
        yield proxy.start()
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def proxy(tmp_path_factory: pytest.TempPathFactory, sigterm_interrupts: None) -> Iterator[TinyProxy]:
    yield from _proxy(tmp_path_factory.mktemp("tinyproxy"), None)


@pytest.fixture(scope="session")
def auth_proxy(tmp_path_factory: pytest.TempPathFactory, sigterm_interrupts: None) -> Iterator[TinyProxy]:
    yield from _proxy(tmp_path_factory.mktemp("tinyproxy-auth"), (PROXY_USER, PROXY_PASSWORD))
