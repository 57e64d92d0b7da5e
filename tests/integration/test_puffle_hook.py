"""PuffleHook against the emulator over loopback: every endpoint and documented error, sync and async."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import pytest

from airflow_provider_runwatch.core.errors import (
    AuthError,
    ClientError,
    ConfigurationError,
    NotFoundError,
    RateLimitedError,
    ResponseTooLargeError,
    ServerError,
)
from airflow_provider_runwatch.core.http import ClientOptions, RetryPolicy
from airflow_provider_runwatch.core.models import RunState
from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks.puffle import PuffleHook
from tests import helpers
from tests.helpers import web_page_server

#: Four attempts: the scenarios here fail three times before they answer.
FAST = replace(helpers.FAST, max_attempts=4)


def _conn(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer, key: str, conn_id: str = "puffle_x") -> str:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        f'{{"conn_type": "puffle", "host": "{emulator.puffle_url}", "password": "{key}"}}',
    )
    return conn_id


def test_start_poll_complete(secret_connections: dict[str, str], runwatch_emulator: EmulatorServer) -> None:
    hook = PuffleHook(retry=FAST)
    started = hook.start_chat("Summarise Acme [emulator: polls=1]", history=[{"role": "user", "content": "hi"}])
    assert started.runId.startswith("run_")
    assert uuid.UUID(started.conversationId or "")
    first = hook.get_status(hook.adapter, started.runId)
    assert first.state in (RunState.QUEUED, RunState.RUNNING)
    result = hook.get_result(hook.adapter, started.runId)
    assert result.status.state is RunState.SUCCEEDED
    assert "Summarise Acme" in result.answer
    assert result.messages is not None
    assert result.messages[0] == {"role": "user", "content": "hi"}
    starts = runwatch_emulator.requests(method="POST", run_id=started.runId)
    assert len(starts) == 1 and starts[0]["authorized"] is True


@pytest.mark.anyio
async def test_async_twins(secret_connections: dict[str, str]) -> None:
    hook = PuffleHook(retry=FAST)
    started = await hook.astart_chat("Async [emulator: polls=0]")
    run = await hook.aget_chat_run(started.runId)
    assert run.status == "completed"
    assert run.text and "Async" in run.text


def test_continue_conversation(secret_connections: dict[str, str]) -> None:
    hook = PuffleHook(retry=FAST)
    first = hook.start_chat("First [emulator: polls=0]")
    second = hook.start_chat("Second [emulator: polls=0]", conversation_id=first.conversationId)
    assert second.conversationId == first.conversationId
    with pytest.raises(NotFoundError, match="HTTP 404"):
        hook.start_chat("Third", conversation_id=str(uuid.uuid4()))


@pytest.mark.parametrize(
    ("key", "kind", "status"), [("pk_invalid_abcd", AuthError, 401), ("pk_user_abcd", AuthError, 403)]
)
def test_auth_errors(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer, key: str, kind: type, status: int
) -> None:
    hook = PuffleHook(_conn(monkeypatch, runwatch_emulator, key))
    with pytest.raises(kind, match=f"HTTP {status}") as info:
        hook.start_chat("hi")
    assert key not in str(info.value)
    ok, message = hook.test_connection()
    assert ok is False and f"HTTP {status}" in message


def test_connection_test_starts_nothing(secret_connections: dict[str, str], runwatch_emulator: EmulatorServer) -> None:
    runwatch_emulator.clear_requests()
    # The vendor's own not-found words are quoted, so a user can tell them from a router's bare "Not Found".
    assert PuffleHook().test_connection() == (
        True,
        'Puffle accepted the API key (a run id that cannot exist got 404 "Run not found")',
    )
    assert [r["method"] for r in runwatch_emulator.requests(vendor="puffle")] == ["GET"]


def test_connection_test_fails_on_a_web_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that is a website (or a proxy), not the API: its HTML 404 is not taken as "key accepted"."""
    with web_page_server() as url:
        monkeypatch.setenv("AIRFLOW_CONN_PUFFLE_WEB", json.dumps({"conn_type": "puffle", "host": url, "password": "k"}))
        ok, message = PuffleHook("puffle_web").test_connection()
    assert ok is False
    assert message == (
        "Puffle connection 'puffle_web': GET /api/agent/chat/{runId} answered 404 with an HTML page, not an API "
        "error; check the host (and its path) point at the Puffle API"
    )


def test_run_of_another_key_is_404(
    monkeypatch: pytest.MonkeyPatch, secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    started = PuffleHook().start_chat("mine [emulator: polls=0]")
    other = PuffleHook(_conn(monkeypatch, runwatch_emulator, "pk_live_someone_else"))
    with pytest.raises(NotFoundError):
        other.get_chat_run(started.runId)


def test_bad_run_id_never_sent(secret_connections: dict[str, str], runwatch_emulator: EmulatorServer) -> None:
    runwatch_emulator.clear_requests()
    with pytest.raises(ConfigurationError, match="start with 'run_'"):
        PuffleHook().get_chat_run("abc")
    assert runwatch_emulator.requests(vendor="puffle") == []


def test_get_retries_a_5xx_burst(secret_connections: dict[str, str], runwatch_emulator: EmulatorServer) -> None:
    hook = PuffleHook(retry=FAST)
    started = hook.start_chat("flaky [emulator: http5xx=2 polls=0]")
    assert hook.get_chat_run(started.runId).status == "completed"
    assert [r["status"] for r in runwatch_emulator.requests(method="GET", run_id=started.runId)] == [503, 503, 200]


def test_get_gives_up_after_its_attempts(secret_connections: dict[str, str]) -> None:
    hook = PuffleHook(retry=FAST)
    started = hook.start_chat("down [emulator: http5xx=9 status5xx=502]")
    with pytest.raises(ServerError, match="HTTP 502"):
        hook.get_chat_run(started.runId)


def test_start_post_is_not_retried_on_5xx(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    runwatch_emulator.clear_requests()
    with pytest.raises(ServerError, match="HTTP 500"):
        PuffleHook(retry=FAST).start_chat("x [emulator: start_status=500]")
    assert len(runwatch_emulator.requests(method="POST", vendor="puffle")) == 1


def test_start_429_honours_retry_after_then_gives_up(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    runwatch_emulator.clear_requests()
    with pytest.raises(RateLimitedError) as info:
        PuffleHook(retry=RetryPolicy(max_attempts=2)).start_chat("x [emulator: start_status=429 retry_after=1]")
    assert info.value.retry_after == 1.0
    posts = runwatch_emulator.requests(method="POST", vendor="puffle")
    assert len(posts) == 2
    assert posts[1]["ts"] - posts[0]["ts"] >= 1.0


def test_empty_message_is_refused_locally_and_by_server(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    with pytest.raises(ConfigurationError):
        PuffleHook().start_chat("")
    # The emulator enforces the same rule for clients that skip validation.
    hook = PuffleHook()
    from airflow_provider_runwatch.core.http import ApiRequest

    with pytest.raises(ClientError, match="message is required"):
        hook.client.send(ApiRequest("POST", "/api/agent/chat", "POST /api/agent/chat", json={"message": ""}))


def test_multi_megabyte_answer_and_the_size_cap(secret_connections: dict[str, str]) -> None:
    hook = PuffleHook(retry=FAST)
    started = hook.start_chat("big [emulator: polls=0 big_messages=3]")
    run = hook.get_chat_run(started.runId)
    assert len(str(run.messages)) > 3_000_000
    capped = PuffleHook(retry=FAST)
    capped.client_options = lambda settings: ClientOptions(  # type: ignore[method-assign]
        headers={"Authorization": f"Bearer {settings.api_key}"}, max_response_bytes=1_000_000, retry=FAST
    )
    with pytest.raises(ResponseTooLargeError, match="larger than 1000000 bytes"):
        capped.get_chat_run(started.runId)
