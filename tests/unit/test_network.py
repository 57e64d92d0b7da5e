"""Network extras and environment -> NetworkSettings; NO_PROXY matching; TLS contexts; CONNECT pieces."""

from __future__ import annotations

import base64
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_runwatch.core import network, proxy
from airflow_provider_runwatch.core.connection import ConnectionSettings
from airflow_provider_runwatch.core.errors import ConfigurationError
from airflow_provider_runwatch.core.network import Proxy, TlsSettings, network_settings, no_proxy_matches
from airflow_provider_runwatch.vendors.puffle import PUFFLE
from tests.network.infra import NETWORK_ENV_VARS


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NETWORK_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def settings(**extras: Any) -> ConnectionSettings:
    return ConnectionSettings(PUFFLE, "puffle_prod", "https://app.puffle.ai", "k" * 20, extras=extras)


def test_defaults_no_proxy_certifi() -> None:
    net = network_settings(settings())
    assert net.proxy_for("https", "app.puffle.ai") is None
    assert net.tls == TlsSettings()
    assert network.ssl_context(net.tls) is network.ssl_context(TlsSettings())  # one shared context


def test_one_proxy_url_for_every_scheme_hides_password() -> None:
    net = network_settings(settings(proxies="http://alice:p%40ss@proxy.corp:3128"))
    chosen = net.proxy_for("https", "app.puffle.ai")
    assert chosen is not None
    assert (chosen.host, chosen.port, chosen.username, chosen.password) == ("proxy.corp", 3128, "alice", "p@ss")
    assert chosen.display == "http://alice:***@proxy.corp:3128"
    assert "p@ss" not in repr(chosen) and "p%40ss" not in repr(net)
    assert chosen.authorization == "Basic " + base64.b64encode(b"alice:p@ss").decode()
    assert net.proxy_for("http", "localhost") is chosen
    assert "p@ss" in net.secrets


def test_mapping_by_scheme_and_json_text() -> None:
    net = network_settings(settings(proxies='{"https": "proxy.corp:8080", "http": null}'))
    chosen = net.proxy_for("https", "x.example")
    assert chosen is not None and chosen.display == "http://proxy.corp:8080"
    assert net.proxy_for("http", "x.example") is None
    assert network_settings(settings(proxies={"all://": "http://p:1"})).proxy_for("http", "h") is not None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("https://proxy.corp:3128", "TLS to the proxy is not supported"),
        ("socks5://proxy.corp:1080", "must be an http:// proxy URL"),
        ("http://proxy.corp:3128/path", "scheme, host and port only"),
        ("http://:3128", "has no host"),
        ("http://proxy.corp:99999", "not a valid proxy URL"),
        ({"ftp": "http://p:1"}, "use 'http', 'https' or 'all'"),
        ({"https": 3128}, "must be a URL string"),
        (42, "must be a proxy URL or a mapping"),
    ],
)
def test_bad_proxies_name_connection_and_extra(value: Any, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as info:
        network_settings(settings(proxies=value))
    assert "Puffle connection 'puffle_prod'" in str(info.value)
    assert "proxies" in str(info.value)


def test_bad_proxy_error_hides_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        network_settings(settings(proxies="https://bob:hunter22@proxy.corp:3128"))
    assert "hunter22" not in str(info.value) and "bob:***@" in str(info.value)


def test_environment_proxies_as_httpx_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    monkeypatch.setenv("http_proxy", "env-plain:8080")
    net = network_settings(settings())
    assert net.proxy_source == "environment"
    https = net.proxy_for("https", "app.puffle.ai")
    plain = net.proxy_for("http", "example.test")
    assert https is not None and https.display == "http://env-proxy:3128"
    assert plain is not None and plain.display == "http://env-plain:8080"
    # trust_env=false ignores the environment; an extra wins over it
    assert network_settings(settings(trust_env="false")).proxy_for("https", "app.puffle.ai") is None
    extra = network_settings(settings(proxies="http://extra:1")).proxy_for("https", "app.puffle.ai")
    assert extra is not None and extra.host == "extra"


def test_environment_read_again_after_every_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy variables are remembered per distinct set of them (a trigger start no longer walks the whole
    environment twice): every change is still seen by the next resolution, with getproxies' own rules."""
    import urllib.request

    def env_proxy(scheme: str) -> str | None:
        chosen = network_settings(settings()).proxy_for(scheme, "app.puffle.ai")
        assert network._proxy_variables() == urllib.request.getproxies()
        return None if chosen is None else chosen.host

    assert env_proxy("https") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://first:1")
    assert env_proxy("https") == "first"
    monkeypatch.setenv("HTTPS_PROXY", "http://second:1")
    assert env_proxy("https") == "second"
    monkeypatch.setenv("https_proxy", "http://lower:1")  # the lowercase one wins, as in getproxies
    assert env_proxy("https") == "lower"
    monkeypatch.setenv("https_proxy", "")  # an empty lowercase one removes it
    assert env_proxy("https") is None
    monkeypatch.delenv("https_proxy")
    assert env_proxy("https") == "second"
    monkeypatch.setenv("HTTP_PROXY", "http://plain:1")
    assert env_proxy("http") == "plain"
    monkeypatch.setenv("REQUEST_METHOD", "GET")  # a CGI environment: HTTP_PROXY may come from a client header
    assert env_proxy("http") is None
    monkeypatch.delenv("REQUEST_METHOD")
    assert env_proxy("http") == "plain"
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.delenv("HTTPS_PROXY")
    assert env_proxy("https") is None and env_proxy("http") is None


def test_resolution_shared_until_an_input_changes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every trigger of a connection shares one resolved NetworkSettings (a trigger start no longer parses
    and holds its own); a change to the connection label, a network extra, a proxy or a CA variable is
    resolved and checked again, and a failed resolution is not remembered."""
    first = network_settings(settings())
    assert network_settings(settings()) is first
    other = ConnectionSettings(PUFFLE, "other", "https://app.puffle.ai", "k" * 20)
    assert network_settings(other).conn_label == "Puffle connection 'other'"
    assert network_settings(settings(trust_env="false")) is not first
    monkeypatch.setenv("Https_Proxy", "http://mixed-case:1")  # getproxies lower-cases names
    proxied = network_settings(settings()).proxy_for("https", "app.puffle.ai")
    assert proxied is not None and proxied.host == "mixed-case"
    monkeypatch.delenv("Https_Proxy")
    assert network_settings(settings()) is first
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert network_settings(settings()).tls.cafile == str(bundle)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "gone.pem"))
    for _ in range(2):  # not remembered: the same error every time
        with pytest.raises(ConfigurationError, match=r"SSL_CERT_FILE points at .*does not exist"):
            network_settings(settings())


def test_all_proxy_and_bad_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "http://all:1")
    chosen = network_settings(settings()).proxy_for("https", "h.example")
    assert chosen is not None and chosen.host == "all"
    monkeypatch.setenv("HTTPS_PROXY", "socks5://x:1")
    with pytest.raises(ConfigurationError, match="HTTPS_PROXY must be an http:// proxy URL"):
        network_settings(settings())


@pytest.mark.parametrize(
    ("entries", "host", "port", "bypass"),
    [
        ("*", "anything.example", 443, True),
        ("puffle.ai", "app.puffle.ai", 443, True),
        ("puffle.ai", "puffle.ai", 443, True),
        ("puffle.ai", "notpuffle.ai", 443, False),
        (".puffle.ai", "app.puffle.ai", 443, True),
        (".puffle.ai", "puffle.ai", 443, False),
        ("*.puffle.ai", "app.puffle.ai", 443, True),
        ("10.0.0.0/8", "10.20.30.40", 443, True),
        ("10.0.0.0/8", "11.0.0.1", 443, False),
        ("192.168.1.7", "192.168.1.7", 443, True),
        ("::1", "::1", 443, True),
        ("[::1]", "[::1]", 443, True),
        ("fd00::/8", "fd12::5", 443, True),
        ("localhost", "localhost", 443, True),
        ("app.puffle.ai:8443", "app.puffle.ai", 443, False),
        ("app.puffle.ai:443", "app.puffle.ai", 443, True),
        ("http://app.puffle.ai", "app.puffle.ai", 443, False),
        ("https://app.puffle.ai", "app.puffle.ai", 443, True),
        ("other.example, .puffle.ai", "eu.puffle.ai", 443, True),
    ],
)
def test_no_proxy_rules(entries: str, host: str, port: int, bypass: bool) -> None:
    parts = tuple(e.strip() for e in entries.split(","))
    assert no_proxy_matches(parts, "https", host, port) is bypass


def test_no_proxy_from_environment_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.0/8,.internal")
    net = network_settings(settings())
    assert net.proxy_for("https", "127.0.0.1", 8443) is None
    assert net.proxy_for("https", "api.internal") is None
    assert net.proxy_for("https", "app.puffle.ai") is not None
    monkeypatch.setenv("NO_PROXY", "*")
    assert network_settings(settings()).proxy_for("https", "app.puffle.ai") is None


def test_verify_values(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    assert network_settings(settings(verify=str(bundle))).tls == TlsSettings(
        cafile=str(bundle), ca_source="the 'verify' extra"
    )
    assert network_settings(settings(verify=str(tmp_path))).tls.capath == str(tmp_path)
    assert network_settings(settings(verify="true")).tls.verify is True
    with pytest.raises(ConfigurationError, match=r"extra 'verify' points at .*does not exist"):
        network_settings(settings(verify=str(tmp_path / "missing.pem")))
    with pytest.raises(ConfigurationError, match="extra 'trust_env' must be true or false"):
        network_settings(settings(trust_env="maybe"))


def test_verify_false_warns_once_per_connection(caplog: pytest.LogCaptureFixture) -> None:
    network._warned.clear()
    with caplog.at_level(logging.WARNING, logger=network.__name__):
        for _ in range(3):
            tls = network_settings(settings(verify=False)).tls
        other = ConnectionSettings(PUFFLE, "other", "https://app.puffle.ai", "k" * 20, extras={"verify": "false"})
        network_settings(other)
    warnings = [r.getMessage() for r in caplog.records if "NOT checked" in r.getMessage()]
    assert len(warnings) == 2 and "'puffle_prod'" in warnings[0] and "'other'" in warnings[1]
    context = network.ssl_context(tls)
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


def test_ca_from_environment_in_httpx_order_then_requests(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.pem").write_text("x")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "b.pem"))
    assert network_settings(settings()).tls.ca_source == "REQUESTS_CA_BUNDLE"
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    assert network_settings(settings()).tls.capath == str(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "a.pem"))
    tls = network_settings(settings()).tls
    assert (tls.cafile, tls.ca_source) == (str(tmp_path / "a.pem"), "SSL_CERT_FILE")
    assert network_settings(settings(trust_env=False)).tls == TlsSettings()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigurationError, match="SSL_CERT_FILE points at"):
        network_settings(settings())


def test_cert_values(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    assert network_settings(settings(cert=str(cert))).tls.certfile == str(cert)
    tls = network_settings(settings(cert=[str(cert), str(key)])).tls
    assert (tls.certfile, tls.keyfile) == (str(cert), str(key))
    tls = network_settings(settings(cert=f'["{cert}", "{key}"]')).tls
    assert tls.keyfile == str(key)
    with pytest.raises(ConfigurationError, match="extra 'cert' must be a path or a"):
        network_settings(settings(cert=[1, 2, 3]))
    with pytest.raises(ConfigurationError, match=r"extra 'cert' \(key\) points at"):
        network_settings(settings(cert=[str(cert), str(tmp_path / "missing")]))


def test_unloadable_cert_names_the_setting(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("not a certificate")
    net = network_settings(settings(cert=str(cert)))
    with pytest.raises(ConfigurationError, match=r"'puffle_prod': cannot load extra 'cert'"):
        network.context_for(net)


def test_tls_failure_descriptions() -> None:
    net = network_settings(settings())
    untrusted = "ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer"
    text = network.describe_tls_failure(untrusted, net, "app.puffle.ai")
    assert text is not None and "app.puffle.ai is not trusted" in text and "'verify'" in text
    assert "SSL_CERT_FILE" in text
    refused = "ReadError: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:2580)"
    text = network.describe_tls_failure(refused, net, "gw.corp")
    assert text is not None and "requires a TLS client certificate" in text and "'cert'" in text
    assert network.describe_tls_failure("ConnectError: [Errno 111] Connection refused", net, "h") is None


# -- CONNECT ------------------------------------------------------------------------------------------------

AUTH_PROXY = network.parse_proxy_url("http://alice:s3cr3t!@proxy.corp:3128", where="w", source="s")


def test_connect_request_with_and_without_credentials() -> None:
    assert proxy.connect_request(AUTH_PROXY, "api.gumloop.com", 443) == (
        b"CONNECT api.gumloop.com:443 HTTP/1.1\r\nHost: api.gumloop.com:443\r\n"
        b"Proxy-Authorization: Basic " + base64.b64encode(b"alice:s3cr3t!") + b"\r\n\r\n"
    )
    bare = Proxy(url="http://p:1", host="p", port=1)
    assert proxy.connect_request(bare, "::1", 8443) == b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"


def test_connect_answer_opened() -> None:
    head = b"HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy/1.11.1\r\n\r\n"
    assert proxy.answer_complete(head + b"extra") == len(head)
    assert proxy.answer_complete(head[:-2]) == 0
    proxy.parse_connect_answer(head, AUTH_PROXY, "api.gumloop.com", 443)


@pytest.mark.parametrize(
    ("status", "transient", "words"),
    [
        (407, False, "rejected the credentials"),
        (403, False, "policy forbids"),
        (502, True, "could not reach the vendor"),
        (503, True, "overloaded"),
        (504, True, "could not reach"),
        (500, True, "500"),
        (400, False, "400"),
    ],
)
def test_connect_answer_refused(status: int, transient: bool, words: str) -> None:
    with pytest.raises(proxy.ProxyRefused) as info:
        proxy.parse_connect_answer(f"HTTP/1.1 {status} Whatever\r\n\r\n".encode(), AUTH_PROXY, "api.gumloop.com", 443)
    message = str(info.value)
    assert info.value.transient is transient and info.value.status == status
    assert words in message
    assert "proxy http://alice:***@proxy.corp:3128" in message and "api.gumloop.com:443" in message
    assert "s3cr3t" not in message


def test_connect_answer_not_http_and_407_without_credentials() -> None:
    with pytest.raises(proxy.ProxyRefused, match="not an HTTP answer"):
        proxy.parse_connect_answer(b"SSH-2.0-OpenSSH\r\n\r\n", AUTH_PROXY, "h", 443)
    bare = Proxy(url="http://p:1", host="p", port=1)
    with pytest.raises(proxy.ProxyRefused, match="requires credentials"):
        proxy.parse_connect_answer(b"HTTP/1.1 407 Auth\r\n\r\n", bare, "h", 443)
    assert proxy.unreachable(bare, "h", 443, ConnectionRefusedError("refused")).transient
    assert proxy.dropped(bare, "h", 443).transient
