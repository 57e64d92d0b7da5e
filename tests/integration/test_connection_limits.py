"""The connection extras ``max_response_bytes`` and ``http_timeout`` (issue 14), on the blocking and the asyncio
client, against the emulator; and their validation."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_provider_runwatch.core.clients import DEFAULT_TOTAL_TIMEOUT, limits_from_extras
from airflow_provider_runwatch.core.connection import ConnectionSettings
from airflow_provider_runwatch.core.errors import ConfigurationError, ResponseTooLargeError, TransportError
from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks.puffle import PuffleHook
from airflow_provider_runwatch.vendors.puffle import PUFFLE
from tests.conftest import SECRET_KEY
from tests.helpers import NO_RETRY


def connect(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer, **extra: object) -> None:
    conn = {"conn_type": "puffle", "host": emulator.puffle_url, "password": SECRET_KEY, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_PUFFLE_LIMITS", json.dumps(conn))


def test_max_response_bytes_caps_both_clients(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer
) -> None:
    connect(monkeypatch, runwatch_emulator, max_response_bytes=4000)
    hook = PuffleHook("puffle_limits")
    run_id = hook.start_chat("big [emulator: polls=0 big_messages=0.01]").runId
    with pytest.raises(ResponseTooLargeError, match="larger than 4000 bytes; raise max_response_bytes"):
        hook.get_chat_run(run_id)
    with pytest.raises(ResponseTooLargeError, match="larger than 4000 bytes"):
        asyncio.run(PuffleHook("puffle_limits").aget_chat_run(run_id))


@pytest.mark.parametrize("trickled", ["trickle", "trickle_head"], ids=["body", "head"])
def test_http_timeout_total_bounds_a_trickled_answer_on_both_clients(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer, trickled: str
) -> None:
    """The body, or the head (status line and headers), one byte every 0.5 s: each read is quick, the answer
    never ends in time; the attempt is cut at its total on the blocking and on the asyncio client."""
    connect(monkeypatch, runwatch_emulator, http_timeout={"total": 1})
    hook = PuffleHook("puffle_limits", retry=NO_RETRY)
    run_id = hook.start_chat(f"slow [emulator: polls=never {trickled}=0.5]").runId
    for read in (
        hook.get_chat_run,
        lambda r: asyncio.run(PuffleHook("puffle_limits", retry=NO_RETRY).aget_chat_run(r)),
    ):
        started = time.monotonic()
        with pytest.raises(TransportError, match="total time limit") as info:
            read(run_id)
        assert info.value.transient
        assert time.monotonic() - started < 3, "the attempt is cut at 1 s, not when the answer ends (35 s)"


def settings(**extras: object) -> ConnectionSettings:
    return ConnectionSettings(vendor=PUFFLE, conn_id="p", base_url="https://app.puffle.ai", api_key="k", extras=extras)


def test_limits_default_to_todays_values_and_read_the_extras() -> None:
    assert limits_from_extras(settings()) == {}
    read_only = limits_from_extras(settings(http_timeout=12))
    assert (read_only["timeout"].read, read_only["timeout"].connect) == (
        12.0,
        10.0,
    ) and "total_timeout" not in read_only
    full = limits_from_extras(
        settings(http_timeout='{"connect": 2, "read": 5, "total": 40}', max_response_bytes="1000")
    )
    assert (full["timeout"].connect, full["timeout"].read, full["total_timeout"], full["max_response_bytes"]) == (
        2.0,
        5.0,
        40.0,
        1000,
    )
    assert DEFAULT_TOTAL_TIMEOUT == 120.0


@pytest.mark.parametrize(
    ("extras", "problem"),
    [
        ({"max_response_bytes": 0}, "extra 'max_response_bytes' must be a positive whole number of bytes, got 0"),
        ({"max_response_bytes": "lots"}, "must be a positive whole number of bytes, got 'lots'"),
        ({"max_response_bytes": 1.5}, "must be a positive whole number of bytes, got 1.5"),
        ({"http_timeout": -1}, "extra 'http_timeout' 'read' must be a positive number of seconds, got -1"),
        ({"http_timeout": {"total": "x"}}, "'total' must be a positive number of seconds, got 'x'"),
        ({"http_timeout": {"write": 3}}, "takes connect, read, total (seconds), not write"),
        ({"http_timeout": "{nope"}, "extra 'http_timeout' is not valid JSON"),
    ],
)
def test_bad_limits_are_clear_configuration_errors(extras: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        limits_from_extras(settings(**extras))
    assert "Puffle connection 'p': " in str(info.value) and problem in str(info.value)
