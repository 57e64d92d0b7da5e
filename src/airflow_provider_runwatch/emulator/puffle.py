"""Puffle agent-chat endpoints (vendor-apis.md section 3), served at the vendor's own paths.

A Puffle connection's host is the emulator origin (``http://127.0.0.1:N``), exactly like
``https://app.puffle.ai``.

Mapping of the generic scenario to Puffle:

- non-terminal: ``queued`` (no ``queue_position``: Puffle has none), then ``running`` (or ``unknown_state``);
- terminal: ``succeeded`` -> ``completed`` with ``text``/``messages``/``toolCalls``; ``failed`` -> ``failed``
  with ``error``; ``cancelled`` -> ``cancelled``; ``paused`` -> Puffle has no paused state, so the run stays
  ``running`` forever (only ``POST /_emulator/runs/{id}/complete`` ends it);
- faults: 5xx as an HTML gateway page, 429 with ``Retry-After`` and a ``retryAfter`` body field, truncated JSON.

Concurrency: with a limit set (``--puffle-concurrency N``, ``PUT /_emulator/puffle/limits {"concurrency": N}``;
default none), a start (``/api/agent/chat`` or ``/sync``) of a key that already has N unfinished chat runs answers
429 with ``Retry-After`` and ``retryAfter``: the real seconds until the earliest of that key's runs is expected
to end (from its ``seconds`` on the emulator's clock; 1 for runs that end by polls), at least 1.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from airflow_provider_runwatch.emulator.common import (
    bearer_token,
    context,
    error_response,
    gateway_error_response,
    json_bytes,
    json_response,
    malformed_response,
    rate_limit_response,
    read_json,
    settings_routes,
    start_scenario,
)
from airflow_provider_runwatch.emulator.scenario import ScenarioError, strip_directive
from airflow_provider_runwatch.emulator.state import fingerprint

if TYPE_CHECKING:
    from starlette.requests import Request

    from airflow_provider_runwatch.emulator.scenario import Outcome, Scenario
    from airflow_provider_runwatch.emulator.state import EmulatedRun, EmulatorState, PollDecision

__all__ = ["VENDOR", "build_completed_payload", "puffle_state", "routes"]

VENDOR = "puffle"
LIMITS_PATH = "/_emulator/puffle/limits"

UNAUTHORIZED = "Unauthorized"
FORBIDDEN = "Forbidden: agent chat requires an admin API key"
MESSAGE_REQUIRED = "message is required"
HISTORY_INVALID = "history must be an array of {role, content} messages"
CONVERSATION_ID_INVALID = "conversationId must be a valid UUID"
CONVERSATION_NOT_FOUND = "Conversation not found"
RUN_NOT_FOUND = "Run not found"
INVALID_RUN_ID = "Invalid runId"
CANCELLED_ERROR = "Agent run was cancelled"
DEFAULT_START_RETRY_AFTER = 7

_ROLES = frozenset({"user", "assistant", "system", "tool"})
_STATE_BY_OUTCOME: dict[str, str] = {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}


def puffle_state(run: EmulatedRun, decision: PollDecision) -> str:
    """The Puffle ``status`` string for a normal (non-fault) decision."""
    if decision.kind == "queued":
        return "queued"
    if decision.kind == "terminal" and decision.outcome in _STATE_BY_OUTCOME:
        return _STATE_BY_OUTCOME[decision.outcome]
    # running, or paused (which Puffle cannot express: it stays running)
    return run.scenario.unknown_state or "running"


# -- payloads ------------------------------------------------------------------------------------------------


def _subject(prompt: str) -> str:
    return prompt if len(prompt) <= 200 else prompt[:199] + "\u2026"


def _big_document(subject: str, megabytes: float) -> str:
    """About ``megabytes`` * 10**6 bytes of realistic-looking tool output, built cheaply and
    deterministically.
    """
    target = int(megabytes * 1_000_000)
    label = subject[:40]
    lines = [
        f"{i:06d} | {label} | metric={(i * 37) % 1000:03d} | note: figures reconciled against the ledger"
        for i in range(2000)
    ]
    block = "\n".join(lines) + "\n"
    # Each "\n" becomes two bytes ("\\n") once JSON-encoded; size the text on its encoded length.
    encoded_per_block = len(block) + block.count("\n")
    repeats, rest = divmod(target, encoded_per_block)
    text = block * repeats
    tail = block[: max(0, rest - rest // 100)]
    return text + tail


def build_completed_payload(run: EmulatedRun) -> dict[str, Any]:
    """``text``, ``messages`` and ``toolCalls`` of a completed run (deterministic for a given message).

    Messages follow the Vercel AI SDK core message shape: the given history, the user message, an assistant
    message calling ``web_search`` (and ``read_document`` with ``big_messages``), the tool results and the
    final answer, which is also ``text``.
    """
    prompt: str = run.data["prompt"]
    message: str = run.cache.get("message", prompt)
    history: list[Any] = run.cache.get("history", [])
    subject = _subject(prompt)
    digest = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()
    search_id = f"call_{digest[:24]}"
    search_args = {"query": subject}
    search_result = {
        "results": [
            {
                "title": f"{subject[:60]} - company overview",
                "url": f"https://example.com/search/{digest[:12]}/overview",
                "snippet": f"Background, products and recent filings for {subject[:60]}.",
            },
            {
                "title": f"{subject[:60]} - latest news",
                "url": f"https://example.com/search/{digest[:12]}/news",
                "snippet": "Quarterly results came in slightly above expectations.",
            },
            {
                "title": f"{subject[:60]} - analyst notes",
                "url": f"https://example.com/search/{digest[:12]}/analysts",
                "snippet": "Analysts keep a neutral-to-positive outlook.",
            },
        ]
    }
    text = (
        f"Summary for '{subject}': I reviewed 3 sources (company overview, latest news, analyst notes). "
        "Quarterly results came in slightly above expectations, no material risks were flagged, and analysts "
        "keep a neutral-to-positive outlook. Suggested next step: review again after the next quarterly report."
    )
    calls: list[dict[str, Any]] = [
        {"type": "tool-call", "toolCallId": search_id, "toolName": "web_search", "args": search_args}
    ]
    results: list[dict[str, Any]] = [
        {"type": "tool-result", "toolCallId": search_id, "toolName": "web_search", "result": search_result}
    ]
    tool_calls: list[dict[str, Any]] = [
        {"toolCallId": search_id, "toolName": "web_search", "args": search_args, "result": search_result}
    ]
    megabytes = run.scenario.big_messages
    if megabytes > 0:
        doc_id = f"call_{digest[24:48]}"
        doc_args = {"url": f"https://example.com/search/{digest[:12]}/overview"}
        document = _big_document(subject, megabytes)
        calls.append({"type": "tool-call", "toolCallId": doc_id, "toolName": "read_document", "args": doc_args})
        results.append(
            {
                "type": "tool-result",
                "toolCallId": doc_id,
                "toolName": "read_document",
                "result": {"url": doc_args["url"], "content": document},
            }
        )
        # The full document is in ``messages`` once; repeating it here would double the payload.
        tool_calls.append(
            {
                "toolCallId": doc_id,
                "toolName": "read_document",
                "args": doc_args,
                "result": {"url": doc_args["url"], "contentLength": len(document), "truncated": True},
            }
        )
    messages: list[Any] = [
        *history,
        {"role": "user", "content": message},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Let me look that up."}, *calls],
        },
        {"role": "tool", "content": results},
        {"role": "assistant", "content": text},
    ]
    return {"text": text, "messages": messages, "toolCalls": tool_calls}


def _status_body(run: EmulatedRun, status: str) -> bytes:
    return json_bytes({"runId": run.id, "status": status})


def _terminal_body(run: EmulatedRun, outcome: Outcome) -> bytes:
    """The terminal answer, encoded once per run and outcome: a multi-MB payload is not re-encoded per poll."""
    key = f"terminal:{outcome}"
    body: bytes | None = run.cache.get(key)
    if body is None:
        if outcome == "succeeded":
            body = json_bytes({"runId": run.id, "status": "completed", **build_completed_payload(run)})
        elif outcome == "failed":
            body = json_bytes({"runId": run.id, "status": "failed", "error": run.scenario.error})
        else:
            body = _status_body(run, "cancelled")
        run.cache[key] = body
    return body


# -- request handling ----------------------------------------------------------------------------------------


def _authorize(request: Request) -> str | Response:
    """The caller's owner fingerprint, or the 401/403 Puffle answers."""
    key = bearer_token(request)
    if key is None or key.startswith("pk_invalid"):
        return error_response(401, UNAUTHORIZED)
    if key.startswith("pk_user_"):
        return error_response(403, FORBIDDEN)
    context(request).authorized = True
    return fingerprint(key)


def _valid_history(history: Any) -> bool:
    if not isinstance(history, list):
        return False
    for item in history:
        if not isinstance(item, dict):
            return False
        if item.get("role") not in _ROLES:
            return False
        if not isinstance(item.get("content"), (str, list)):
            return False
    return True


def _start_failure(scenario: Scenario) -> Response:
    """``start_status``: the start call fails the way Puffle documents that status."""
    status = scenario.start_status
    assert status is not None
    if status == 429:
        return rate_limit_response(
            scenario,
            body_field="retryAfter",
            default_seconds=DEFAULT_START_RETRY_AFTER,
            message="Too many requests",
        )
    if status in (502, 503, 504):
        return gateway_error_response(status)
    known = {
        400: MESSAGE_REQUIRED,
        401: UNAUTHORIZED,
        403: FORBIDDEN,
        404: CONVERSATION_NOT_FOUND,
        500: "Internal server error",
    }
    if status in known:
        return error_response(status, known[status])
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return error_response(status, phrase)


def _over_concurrency(state: EmulatorState, request: Request, owner: str) -> Response | None:
    """The 429 for a start over the key's concurrency limit, else None."""
    limit = state.puffle_concurrency
    if limit is None:
        return None
    unfinished = [
        run
        for run in state.runs.values()
        if run.vendor == VENDOR and run.owner == owner and not state.peek(run).is_terminal
    ]
    if len(unfinished) < limit:
        return None
    ends = [left for left in map(state.remaining, unfinished) if left is not None]
    seconds = state.clock.retry_after(min(ends)) if ends else 1
    context(request).reason = "concurrency"
    return json_response(
        {"error": f"Too many concurrent agent runs (limit {limit})", "retryAfter": seconds},
        status=429,
        headers={"Retry-After": str(seconds)},
    )


def _parse_limits(body: Any) -> int | str | None:
    if not isinstance(body, dict) or set(body) != {"concurrency"}:
        return 'emulator: body must be {"concurrency": N} (N a positive integer, or null for no limit)'
    value = body["concurrency"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        return "emulator: concurrency must be a positive integer, or null for no limit"
    return value


def _limits_routes(state: EmulatorState) -> list[BaseRoute]:
    """``GET``/``PUT /_emulator/puffle/limits``: unfinished chat runs per key (null: unlimited)."""

    def update(body: Any) -> dict[str, Any] | str:
        parsed = _parse_limits(body)
        if isinstance(parsed, str):
            return parsed
        state.puffle_concurrency = parsed
        return {"concurrency": parsed}

    return settings_routes(LIMITS_PATH, lambda: {"concurrency": state.puffle_concurrency}, update)


class _Started:
    """A validated start request."""

    __slots__ = ("conversation_id", "history", "message", "owner", "scenario")

    def __init__(self, owner: str, message: str, history: list[Any], conversation_id: str, scenario: Scenario) -> None:
        self.owner = owner
        self.message = message
        self.history = history
        self.conversation_id = conversation_id
        self.scenario = scenario


async def _validate_start(state: EmulatorState, request: Request) -> _Started | Response:
    """Shared by ``POST /api/agent/chat`` and ``/sync``: auth, body, scenario, ``start_status``,
    conversation.
    """
    owner = _authorize(request)
    if isinstance(owner, Response):
        return owner
    body = await read_json(request)
    if not isinstance(body, dict):
        return error_response(400, MESSAGE_REQUIRED)
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        return error_response(400, MESSAGE_REQUIRED)
    history = body.get("history")
    if history is None:
        history = []
    elif not _valid_history(history):
        return error_response(400, HISTORY_INVALID)
    conversation_id = body.get("conversationId")
    if conversation_id is not None:
        if not isinstance(conversation_id, str):
            return error_response(400, CONVERSATION_ID_INVALID)
        try:
            conversation_id = str(uuid.UUID(conversation_id))
        except ValueError:
            return error_response(400, CONVERSATION_ID_INVALID)
    try:
        # Only ``message`` is scanned: history replayed from an earlier run must not replay its directive.
        scenario = start_scenario(state, request, (message,))
    except ScenarioError as exc:
        return error_response(400, str(exc))
    if scenario.start_status is not None:
        return _start_failure(scenario)
    refused = _over_concurrency(state, request, owner)
    if refused is not None:
        return refused
    conversations: dict[str, str] = state.store(VENDOR).setdefault("conversations", {})
    if conversation_id is not None:
        if conversations.get(conversation_id) != owner:
            return error_response(404, CONVERSATION_NOT_FOUND)
    else:
        conversation_id = str(uuid.uuid4())
        conversations[conversation_id] = owner
    return _Started(owner, message, history, conversation_id, scenario)


def _new_run(state: EmulatorState, started: _Started, sync: bool) -> EmulatedRun:
    run = state.new_run(
        VENDOR,
        started.owner,
        started.scenario,
        run_id=f"run_{os.urandom(12).hex()}",
        data={
            "conversationId": started.conversation_id,
            "prompt": strip_directive(started.message),
            "history_length": len(started.history),
            "sync": sync,
        },
    )
    run.cache["message"] = started.message
    run.cache["history"] = started.history
    return run


def routes(state: EmulatorState) -> list[BaseRoute]:
    """Puffle's routes bound to ``state``."""
    state.register_state_reporter(VENDOR, puffle_state)

    async def chat_start(request: Request) -> Response:
        started = await _validate_start(state, request)
        if isinstance(started, Response):
            return started
        run = _new_run(state, started, sync=False)
        context(request).run_id = run.id
        return json_response(
            {"runId": run.id, "status": "queued", "conversationId": started.conversation_id}, status=202
        )

    async def chat_status(request: Request) -> Response:
        owner = _authorize(request)
        if isinstance(owner, Response):
            return owner
        run_id: str = request.path_params["run_id"]
        context(request).run_id = run_id
        if not run_id.startswith("run_"):
            return error_response(400, INVALID_RUN_ID)
        run = state.get_run(run_id, VENDOR, owner)
        if run is None:
            return error_response(404, RUN_NOT_FOUND)
        decision = state.next_poll(run)
        if decision.delay > 0:
            await asyncio.sleep(decision.delay)
        kind = decision.kind
        if kind == "terminal" and decision.outcome != "paused":
            assert decision.outcome is not None
            body = _terminal_body(run, decision.outcome)
        elif kind == "http5xx":
            return gateway_error_response(run.scenario.status5xx)
        elif kind == "rate_limit":
            return rate_limit_response(run.scenario, body_field="retryAfter")
        elif kind == "malformed":
            return malformed_response(_status_body(run, run.scenario.unknown_state or "running"))
        else:
            body = _status_body(run, puffle_state(run, decision))
        return Response(body, media_type="application/json")

    async def chat_sync(request: Request) -> Response:
        started = await _validate_start(state, request)
        if isinstance(started, Response):
            return started
        run = _new_run(state, started, sync=True)
        context(request).run_id = run.id
        scenario = run.scenario
        if scenario.slow > 0:
            await asyncio.sleep(scenario.slow)
        outcome = scenario.outcome
        if scenario.never_terminal or outcome == "paused":
            # A run that never ends: the real endpoint is cut by its platform's function timeout.
            return Response(
                b"An error occurred with your deployment\n\nFUNCTION_INVOCATION_TIMEOUT\n",
                status_code=504,
                media_type="text/plain",
            )
        state.force_outcome(run, outcome)
        if outcome == "failed":
            return error_response(500, scenario.error)
        if outcome == "cancelled":
            return error_response(500, CANCELLED_ERROR)
        payload = build_completed_payload(run)
        payload["conversationId"] = started.conversation_id
        return json_response(payload)

    async def chat_stream(request: Request) -> Response:
        return error_response(
            501,
            "emulator: the streaming endpoint is not emulated; use POST /api/agent/chat or /api/agent/chat/sync",
        )

    return [
        Route("/api/agent/chat", chat_start, methods=["POST"]),
        Route("/api/agent/chat/sync", chat_sync, methods=["POST"]),
        Route("/api/agent/chat/stream", chat_stream, methods=["POST"]),
        Route("/api/agent/chat/{run_id}", chat_status, methods=["GET"]),
        *_limits_routes(state),
    ]
