"""Puffle payload parsing and input validation (sans-I/O: no network)."""

from __future__ import annotations

import pytest

from airflow_provider_runwatch.core.connection import ConnectionSettings
from airflow_provider_runwatch.core.errors import ConfigurationError, MalformedResponseError
from airflow_provider_runwatch.core.models import RunState
from airflow_provider_runwatch.vendors import puffle

SETTINGS = ConnectionSettings(vendor=puffle.PUFFLE, conn_id="p", base_url="https://app.puffle.ai", api_key="k1234")

COMPLETED = {
    "runId": "run_abc",
    "status": "completed",
    "text": "Done.",
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Done.", "parts": [1]}],
    "toolCalls": [{"toolCallId": "c1", "toolName": "web_search", "args": {}, "result": {}}],
    "somethingNew": {"kept": True},
}


def test_completed_payload_to_result() -> None:
    result = puffle.CHAT_RUNS.result_call(SETTINGS, "run_abc").parse(COMPLETED)
    assert result.answer == "Done."
    assert result.messages == COMPLETED["messages"]
    assert result.status.state is RunState.SUCCEEDED
    assert result.summary.tool_calls == ["web_search"]


@pytest.mark.parametrize(
    ("status", "state", "unknown"),
    [
        ("queued", RunState.QUEUED, False),
        ("running", RunState.RUNNING, False),
        ("failed", RunState.FAILED, False),
        ("cancelled", RunState.CANCELLED, False),
        ("reticulating", RunState.RUNNING, True),
    ],
)
def test_states(status: str, state: RunState, unknown: bool) -> None:
    parsed = puffle.CHAT_RUNS.status_call(SETTINGS, "run_abc").parse(
        {"runId": "run_abc", "status": status, "error": "e"}
    )
    assert parsed.state is state
    assert parsed.vendor_state == status
    assert parsed.unknown_state is unknown


@pytest.mark.parametrize("junk", [[], "text", {"status": "running"}, {"runId": 5, "status": None}])
def test_junk_payload_is_malformed_not_a_crash(junk: object) -> None:
    with pytest.raises(MalformedResponseError, match="unexpected payload shape"):
        puffle.CHAT_RUNS.status_call(SETTINGS, "run_abc").parse(junk)


@pytest.mark.parametrize("bad", ["abc", "", "  ", "RUN_1", None])
def test_run_id_validated_before_any_request(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="Puffle run ids start with 'run_'"):
        puffle.get_chat_run(bad)  # type: ignore[arg-type]


def test_start_inputs_validated() -> None:
    with pytest.raises(ConfigurationError, match="message must be a non-empty string"):
        puffle.start_chat("  ")
    with pytest.raises(ConfigurationError, match="history item 1 must be"):
        puffle.start_chat("hi", history=[{"role": "user", "content": "a"}, {"role": "user"}])
    with pytest.raises(ConfigurationError, match="conversation_id must be a UUID"):
        puffle.start_chat("hi", conversation_id="conv-1")
    call = puffle.start_chat("hi", history=[{"role": "user", "content": "a", "x": 1}])
    assert call.request.json == {"message": "hi", "history": [{"role": "user", "content": "a"}]}
    assert call.request.method == "POST" and not call.request.idempotent
