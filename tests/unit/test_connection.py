"""Connection -> settings: base URL rules, key handling, URI-style connections, extras."""

from __future__ import annotations

import pytest
from airflow.sdk import Connection

from airflow_provider_runwatch.core.connection import normalize_base_url, settings_from_connection
from airflow_provider_runwatch.core.errors import ConfigurationError
from airflow_provider_runwatch.vendors.puffle import PUFFLE


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "https://app.puffle.ai"),
        ("", "https://app.puffle.ai"),
        ("https://app.puffle.ai/", "https://app.puffle.ai"),
        ("eu.puffle.example", "https://eu.puffle.example"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://localhost:9/api/v1/", "http://localhost:9/api/v1"),
        ("http://[::1]:8765", "http://[::1]:8765"),
    ],
)
def test_base_url(raw: str | None, expected: str) -> None:
    assert normalize_base_url(raw, PUFFLE, "c") == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("http://app.puffle.ai", "plain http is only allowed for loopback"),
        ("http://10.0.0.5:8765", "plain http is only allowed for loopback"),
        ("ftp://app.puffle.ai", "must be an http(s) URL"),
        ("https://app.puffle.ai?x=1", "query or fragment"),
    ],
)
def test_bad_base_url_names_the_connection_and_problem(raw: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match="Puffle connection 'my_conn'") as info:
        normalize_base_url(raw, PUFFLE, "my_conn")
    assert problem in str(info.value)


def test_settings_from_json_style_connection() -> None:
    conn = Connection(conn_id="p", conn_type="puffle", host="http://127.0.0.1:5000", password=" pk_live_x1234 ")
    settings = settings_from_connection(conn, PUFFLE)
    assert settings.base_url == "http://127.0.0.1:5000"
    assert settings.api_key == "pk_live_x1234"
    assert "pk_live_x1234" not in repr(settings)


def test_settings_from_uri_style_parts() -> None:
    conn = Connection.from_json('{"conn_type": "puffle", "host": "127.0.0.1", "port": 8765, "password": "k1234"}')
    conn.conn_id = "p"
    assert settings_from_connection(conn, PUFFLE).base_url == "http://127.0.0.1:8765"
    remote = Connection(conn_id="p", conn_type="puffle", host="api.example.com", schema="v2", password="k1234")
    assert settings_from_connection(remote, PUFFLE).base_url == "https://api.example.com/v2"


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="Puffle connection 'p' has no API key: put it in the Password field"):
        settings_from_connection(Connection(conn_id="p", conn_type="puffle"), PUFFLE)


def test_extras() -> None:
    conn = Connection(conn_id="p", conn_type="puffle", password="k1234", extra='{"polls_per_minute": "30"}')
    settings = settings_from_connection(conn, PUFFLE)
    assert settings.extra_float("polls_per_minute", 50.0) == 30.0
    assert settings.extra_float("absent", 50.0) == 50.0
    with pytest.raises(ConfigurationError, match="extra is not valid JSON"):
        settings_from_connection(Connection(conn_id="p", conn_type="puffle", password="k1234", extra="{nope"), PUFFLE)
    bad = Connection(conn_id="p", conn_type="puffle", password="k1234", extra='{"polls_per_minute": "lots"}')
    with pytest.raises(ConfigurationError, match="extra 'polls_per_minute' must be a number"):
        settings_from_connection(bad, PUFFLE).extra_float("polls_per_minute", 50.0)
