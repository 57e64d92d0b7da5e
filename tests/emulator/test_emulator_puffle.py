"""Puffle endpoints over real HTTP: documented errors, every scenario key, the sync endpoint."""

from __future__ import annotations

import json
import re
import time
import uuid
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import pytest

from airflow_provider_runwatch.emulator.scenario import DEFAULT_ERROR

if TYPE_CHECKING:
    import httpx
    from tests.emulator.conftest import PuffleClient

    from airflow_provider_runwatch.emulator.server import EmulatorServer

RUN_ID = re.compile(r"^run_[0-9a-f]{24}$")


# -- start ------------------------------------------------------------------------------------------------------


def test_start_returns_202_with_run_and_conversation(puffle: PuffleClient) -> None:
    response = puffle.start("Acme Corp")
    assert response.status_code == 202
    body = response.json()
    assert RUN_ID.match(body["runId"])
    assert body["status"] == "queued"
    assert uuid.UUID(body["conversationId"])


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "Unauthorized"),
        ({"Authorization": ""}, 401, "Unauthorized"),
        ({"Authorization": "Bearer"}, 401, "Unauthorized"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "Unauthorized"),
        ({"Authorization": "Bearer pk_invalid_abc"}, 401, "Unauthorized"),
        ({"Authorization": "Bearer pk_user_abc"}, 403, "Forbidden: agent chat requires an admin API key"),
    ],
)
@pytest.mark.parametrize("endpoint", ["start", "status", "sync"])
def test_auth_errors(
    puffle: PuffleClient, http: httpx.Client, headers: dict[str, str], status: int, error: str, endpoint: str
) -> None:
    if endpoint == "status":
        run_id = puffle.start_run()
        response = http.get(f"/api/agent/chat/{run_id}", headers=headers)
    else:
        path = "/api/agent/chat/sync" if endpoint == "sync" else "/api/agent/chat"
        response = http.post(path, json={"message": "hi"}, headers=headers)
    assert response.status_code == status
    assert response.json() == {"error": error}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "message is required"),
        (b"[1, 2]", "message is required"),
        (b"{}", "message is required"),
        (b'{"message": ""}', "message is required"),
        (b'{"message": "   "}', "message is required"),
        (b'{"message": 42}', "message is required"),
        (b'{"message": "hi", "history": "nope"}', "history must be an array of {role, content} messages"),
        (b'{"message": "hi", "history": [{"role": "user"}]}', "history must be an array of {role, content} messages"),
        (
            b'{"message": "hi", "history": [{"role": "robot", "content": "x"}]}',
            "history must be an array of {role, content} messages",
        ),
        (b'{"message": "hi", "conversationId": "not-a-uuid"}', "conversationId must be a valid UUID"),
        (b'{"message": "hi", "conversationId": 7}', "conversationId must be a valid UUID"),
    ],
)
@pytest.mark.parametrize("path", ["/api/agent/chat", "/api/agent/chat/sync"])
def test_start_body_errors(puffle: PuffleClient, http: httpx.Client, body: bytes, error: str, path: str) -> None:
    response = http.post(path, content=body, headers={**puffle.auth(), "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"error": error}


def test_conversations_are_owned(puffle: PuffleClient, emulator: EmulatorServer) -> None:
    first = puffle.start("Acme Corp").json()
    conv = first["conversationId"]
    again = puffle.start("And Globex?", conversationId=conv, history=[{"role": "user", "content": "Acme Corp"}])
    assert again.status_code == 202
    assert again.json()["conversationId"] == conv
    for key in (None, "pk_live_someone_else"):
        unknown = str(uuid.uuid4()) if key is None else conv
        response = puffle.start("hi", key=key, conversationId=unknown)
        assert response.status_code == 404
        assert response.json() == {"error": "Conversation not found"}
    sync = puffle.start("sync follow-up", sync=True, conversationId=conv)
    assert sync.status_code == 200
    assert sync.json()["conversationId"] == conv


# -- status -----------------------------------------------------------------------------------------------------


def test_status_errors(puffle: PuffleClient) -> None:
    bad = puffle.poll("abc123")
    assert bad.status_code == 400
    assert bad.json() == {"error": "Invalid runId"}
    unknown = puffle.poll("run_" + "0" * 24)
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Run not found"}
    run_id = puffle.start_run()
    theirs = puffle.poll(run_id, key="pk_live_someone_else")
    assert theirs.status_code == 404
    assert theirs.json() == {"error": "Run not found"}


def test_default_scenario_and_completed_payload(puffle: PuffleClient) -> None:
    history = [{"role": "user", "content": "Earlier question"}, {"role": "assistant", "content": "Earlier answer"}]
    run_id = puffle.start_run("Acme Corp [emulator: polls=2]", history=history)
    first = puffle.poll(run_id).json()
    assert first == {"runId": run_id, "status": "running"}  # no text/messages/toolCalls/error before the end
    assert puffle.poll(run_id).json()["status"] == "running"
    done = puffle.poll(run_id).json()
    assert done["runId"] == run_id
    assert done["status"] == "completed"
    assert "error" not in done
    assert done["text"].startswith("Summary for 'Acme Corp': ")
    messages = done["messages"]
    assert messages[:2] == history
    assert messages[2] == {"role": "user", "content": "Acme Corp [emulator: polls=2]"}
    assert [m["role"] for m in messages[3:]] == ["assistant", "tool", "assistant"]
    call = next(part for part in messages[3]["content"] if part["type"] == "tool-call")
    result = messages[4]["content"][0]
    assert result["type"] == "tool-result"
    assert result["toolCallId"] == call["toolCallId"]
    assert messages[5]["content"] == done["text"]
    assert done["toolCalls"][0].keys() >= {"toolCallId", "toolName", "args", "result"}
    assert done["toolCalls"][0]["toolCallId"] == call["toolCallId"]
    assert puffle.poll(run_id).json() == done  # terminal stays terminal


@pytest.mark.parametrize(
    ("directive", "expected"),
    [
        ("polls=0", ["completed"]),
        ("polls=1", ["running", "completed"]),
        ("polls=3", ["running", "running", "running", "completed"]),
        ("polls=3 queued=2", ["queued", "queued", "running", "completed"]),
        ("polls=1 queued=5", ["queued", "completed"]),
        ("polls=2 unknown_state=thinking", ["thinking", "thinking", "completed"]),
        ("polls=2 queued=1 unknown_state=thinking", ["queued", "thinking", "completed"]),
        ("polls=1 outcome=cancelled", ["running", "cancelled"]),
        ("polls=1 outcome=failed", ["running", "failed"]),
        ("polls=never", ["running"] * 8),
        ("polls=1 outcome=paused", ["running"] * 8),
    ],
)
def test_poll_sequences(puffle: PuffleClient, directive: str, expected: list[str]) -> None:
    run_id = puffle.start_run(f"Acme [emulator: {directive}]")
    assert puffle.statuses(run_id, len(expected)) == expected


def test_queued_has_no_queue_position_for_puffle(puffle: PuffleClient) -> None:
    run_id = puffle.start_run("x [emulator: queued=1]")
    assert puffle.poll(run_id).json() == {"runId": run_id, "status": "queued"}


def test_failed_and_cancelled_payloads(puffle: PuffleClient) -> None:
    failed = puffle.start_run("x [emulator: polls=0 outcome=failed]")
    assert puffle.poll(failed).json() == {"runId": failed, "status": "failed", "error": DEFAULT_ERROR}
    custom = puffle.start_run("""x [emulator: polls=0 outcome=failed error="tool 'crm' said: quota, exceeded"]""")
    assert puffle.poll(custom).json()["error"] == "tool 'crm' said: quota, exceeded"
    cancelled = puffle.start_run("x [emulator: polls=0 outcome=cancelled]")
    assert puffle.poll(cancelled).json() == {"runId": cancelled, "status": "cancelled"}


def test_seconds(puffle: PuffleClient) -> None:
    run_id = puffle.start_run("x [emulator: seconds=0.4 polls=0]")
    started = time.monotonic()
    assert puffle.statuses(run_id, 3) == ["running"] * 3
    time.sleep(max(0.0, 0.42 - (time.monotonic() - started)))
    assert puffle.statuses(run_id, 1) == ["completed"]


def test_http5xx_burst(puffle: PuffleClient) -> None:
    run_id = puffle.start_run("x [emulator: http5xx=2 status5xx=502 polls=1]")
    for _ in range(2):
        response = puffle.poll(run_id)
        assert response.status_code == 502
        assert response.headers["content-type"].startswith("text/html")
        with pytest.raises(ValueError):  # noqa: PT011 (any JSON decode error)
            json.loads(response.text)
    assert puffle.statuses(run_id, 2) == ["running", "completed"]
    default = puffle.start_run("x [emulator: http5xx=1]")
    assert puffle.poll(default).status_code == 503


def test_rate_limit_with_retry_after_seconds(puffle: PuffleClient) -> None:
    run_id = puffle.start_run("x [emulator: rate_limit=2 retry_after=3 polls=0]")
    for _ in range(2):
        response = puffle.poll(run_id)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"
        assert response.json()["retryAfter"] == 3
    assert puffle.statuses(run_id, 1) == ["completed"]


def test_rate_limit_without_retry_after(puffle: PuffleClient) -> None:
    run_id = puffle.start_run("x [emulator: rate_limit=1 polls=0]")
    response = puffle.poll(run_id)
    assert response.status_code == 429
    assert "retry-after" not in response.headers
    assert "retryAfter" not in response.json()


def test_rate_limit_with_http_date(puffle: PuffleClient) -> None:
    run_id = puffle.start_run("x [emulator: rate_limit=1 retry_after_date=5]")
    before = time.time()
    response = puffle.poll(run_id)
    assert response.status_code == 429
    when = parsedate_to_datetime(response.headers["retry-after"]).timestamp()
    assert before + 4.5 <= when <= before + 7
    assert "retryAfter" not in response.json()


def test_malformed_json(puffle: PuffleClient) -> None:
    run_id = puffle.start_run("x [emulator: malformed=1 polls=0]")
    response = puffle.poll(run_id)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(ValueError):  # noqa: PT011 (any JSON decode error)
        json.loads(response.content)
    assert puffle.statuses(run_id, 1) == ["completed"]


def test_faults_come_in_order_before_normal_answers(puffle: PuffleClient) -> None:
    run_id = puffle.start_run("x [emulator: http5xx=1 rate_limit=1 malformed=1 polls=1 outcome=failed]")
    codes = [puffle.poll(run_id).status_code for _ in range(3)]
    assert codes == [503, 429, 200]
    assert puffle.statuses(run_id, 2) == ["running", "failed"]


def test_slow(puffle: PuffleClient) -> None:
    run_id = puffle.start_run("x [emulator: slow=0.3 polls=0]")
    started = time.monotonic()
    response = puffle.poll(run_id)
    assert time.monotonic() - started >= 0.3
    assert response.json()["status"] == "completed"


def test_slow_does_not_block_other_runs(puffle: PuffleClient, emulator: EmulatorServer) -> None:
    import httpx

    slow = puffle.start_run("x [emulator: slow=0.5]")
    fast = puffle.start_run("y")
    with httpx.Client(base_url=emulator.url, trust_env=False) as other:
        import threading

        thread = threading.Thread(target=puffle.poll, args=(slow,))
        thread.start()
        time.sleep(0.05)
        started = time.monotonic()
        assert other.get(f"/api/agent/chat/{fast}", headers=puffle.auth()).status_code == 200
        assert time.monotonic() - started < 0.3
        thread.join()


def test_big_messages(puffle: PuffleClient) -> None:
    run_id = puffle.start_run("x [emulator: big_messages=2 polls=0]")
    response = puffle.poll(run_id)
    size = len(response.content)
    assert 2_000_000 <= size <= 2_100_000
    body = response.json()
    assert body["status"] == "completed"
    assert any(call["toolName"] == "read_document" for call in body["toolCalls"])
    small = puffle.start_run("x [emulator: polls=0]")
    assert len(puffle.poll(small).content) < 10_000


def test_start_status_429(puffle: PuffleClient, emulator: EmulatorServer) -> None:
    response = puffle.start("x [emulator: start_status=429]")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json() == {"error": "Too many requests", "retryAfter": 7}
    custom = puffle.start("x [emulator: start_status=429 retry_after=2]")
    assert custom.headers["retry-after"] == "2"
    assert custom.json()["retryAfter"] == 2
    assert emulator.requests(method="POST")[0]["run_id"] is None
    assert not emulator.requests(method="GET")
    assert json.loads(json.dumps(emulator.requests()))  # nothing but JSON in the log
    assert puffle.http.get("/_emulator/runs").json() == {"runs": []}  # no run was created


@pytest.mark.parametrize(
    ("status", "json_error"),
    [(400, "message is required"), (403, "Forbidden: agent chat requires an admin API key"), (500, None), (503, None)],
)
def test_start_status_other_codes(puffle: PuffleClient, status: int, json_error: str | None) -> None:
    response = puffle.start(f"x [emulator: start_status={status}]")
    assert response.status_code == status
    if status == 503:
        assert response.headers["content-type"].startswith("text/html")
    elif json_error is not None:
        assert response.json() == {"error": json_error}
    else:
        assert "error" in response.json()


def test_scenario_errors_answer_400(puffle: PuffleClient) -> None:
    response = puffle.start("x [emulator: polls=1 x=1]")
    assert response.status_code == 400
    assert response.json() == {"error": "emulator: unknown scenario key 'x'"}
    bad_value = puffle.start("x [emulator: polls=soon]")
    assert bad_value.status_code == 400
    assert bad_value.json()["error"].startswith("emulator: ")
    header = puffle.start("x", headers={"X-Emulator-Scenario": "typo=1"})
    assert header.json() == {"error": "emulator: unknown scenario key 'typo'"}


def test_header_wins_over_body(puffle: PuffleClient) -> None:
    run_id = puffle.start_run(
        "x [emulator: polls=5]", headers={"X-Emulator-Scenario": "polls=0 outcome=failed error=header"}
    )
    assert puffle.poll(run_id).json() == {"runId": run_id, "status": "failed", "error": "header"}


# -- sync and stream --------------------------------------------------------------------------------------------


def test_sync_success(puffle: PuffleClient) -> None:
    response = puffle.start("Acme Corp [emulator: polls=5]", sync=True)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"text", "messages", "toolCalls", "conversationId"}
    assert body["text"].startswith("Summary for 'Acme Corp': ")
    assert uuid.UUID(body["conversationId"])


def test_sync_failure_slow_and_start_status(puffle: PuffleClient) -> None:
    failed = puffle.start("x [emulator: outcome=failed error='kaput']", sync=True)
    assert failed.status_code == 500
    assert failed.json() == {"error": "kaput"}
    cancelled = puffle.start("x [emulator: outcome=cancelled]", sync=True)
    assert cancelled.status_code == 500
    assert "error" in cancelled.json()
    started = time.monotonic()
    slow = puffle.start("x [emulator: slow=0.3]", sync=True)
    assert time.monotonic() - started >= 0.3
    assert slow.status_code == 200
    limited = puffle.start("x [emulator: start_status=429]", sync=True)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "7"
    never = puffle.start("x [emulator: polls=never]", sync=True)
    assert never.status_code == 504


def test_stream_is_not_emulated(puffle: PuffleClient, http: httpx.Client) -> None:
    response = http.post("/api/agent/chat/stream", json={"message": "hi"}, headers=puffle.auth())
    assert response.status_code == 501
    assert response.json()["error"].startswith("emulator: ")


def test_trickle_head_sends_the_head_a_byte_at_a_time_then_the_body(
    puffle: PuffleClient, emulator: EmulatorServer
) -> None:
    """``trickle_head``: the status line and headers leave one byte per interval (read off a raw socket), then the
    body at once; the answer is a whole, valid one, and the next request on the connection is served as usual."""
    import socket

    run_id = puffle.start_run("Acme [emulator: polls=never trickle_head=0.02]")
    host, port = emulator.url.split("//")[1].split(":")
    request = (
        f"GET /api/agent/chat/{run_id} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: {puffle.auth()['Authorization']}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        reads: list[bytes] = []
        data = b""
        while b"\r\n\r\n" not in data:
            reads.append(sock.recv(65536))
            data += reads[-1]
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert len(reads) > len(head) // 2, f"{len(reads)} reads for a {len(head)}-byte head: not trickled"
        length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += sock.recv(65536)
        assert json.loads(body)["runId"] == run_id
        sock.sendall(request.replace(b"/chat/", b"/chat/x"))
        assert sock.recv(65536).startswith(b"HTTP/1.1 4"), "the connection goes on serving"
