"""Gumloop endpoints of the emulator (vendor-apis.md section 1), served under ``/api/v1``.

A Gumloop connection's host is ``http://127.0.0.1:N/api/v1``, exactly like ``https://api.gumloop.com/api/v1``.

- agent interactions (legacy): ``POST /start_agent``, ``GET /agent_status/{interaction_id}``;
- agent sessions: ``POST``/``GET /agents/{agent_id}/sessions`` (start; cursor-paged list over a seeded set of 45
  sessions per agent plus the ones you started), ``GET /sessions/{id}``, ``POST /sessions/{id}/cancel``,
  ``POST /sessions/{id}/approvals``, ``POST /sessions/{id}/messages``;
- flows (legacy): ``POST /start_pipeline``, ``GET /get_pl_run``, ``POST /kill_pipeline``.

Auth. Every endpoint takes ``Authorization: Bearer <key>`` (the legacy ones also ``?api_key=``). Keys starting
with ``gl_invalid`` get 401, ``gl_noaccess`` 403; a key starting with ``gl_team_`` is a team key and needs
``?team_id=`` on every request (403 without); any other key is a personal key, which the agents/sessions API
accepts only with an ``x-auth-key`` header (the user id; 401 without).

Plans, by key prefix: ``gl_free_`` Free (5 unfinished agent runs), ``gl_pro_`` Pro (25), ``gl_ent_`` Enterprise
(100); any other key has no plan limit. An agent run is an interaction or a non-idle session of that key, counted
while unfinished. Over the limit a Free or Pro start (``start_agent`` or a session) answers 429 without
``Retry-After``; an Enterprise start is accepted and the run stays ``queued`` with its ``queue_position`` (FIFO
per key) until a slot frees, then runs its whole duration. Flows are not agent runs (vendor-apis.md section 1
puts the plan limit on "agent runs", and flows are the separate legacy automation API), so they neither count nor
are refused. Tests lower or raise a plan's limit with ``GET``/``PUT /_emulator/gumloop/limits`` (``{"pro": 3}``);
``POST /_emulator/reset`` restores the defaults.

The legacy endpoints need ``user_id`` and/or ``project_id`` (body of a POST, query of a GET); a
run read or killed with an identity that matches neither of those it was started with is refused (403). Runs
belong to the key that started them (404 for any other key). Legacy errors are ``{"error": "<text>"}``, the
agents/sessions API answers ``{"error": {"message", "type", "code"}}``.

Ids: agents or gummies starting with ``missing`` do not exist (404), ones starting with ``private`` belong to
someone else (403); flows (``saved_item_id``) likewise.

Scenario mapping (the directive sits in ``message``, ``input``, or any string value of ``pipeline_inputs``):

=============  ============================  ==================================  ==========================
outcome        interaction ``state``         session ``state``                   flow ``state``
=============  ============================  ==================================  ==========================
(queued)       ``ASYNC_PROCESSING``          ``queued`` + ``queue_position``     ``QUEUED``
(running)      ``ASYNC_PROCESSING``          ``processing``                      ``RUNNING``
succeeded      ``COMPLETED`` + response      ``completed`` + messages, usage     ``DONE`` + outputs
failed         ``FAILED`` + error_message    ``failed`` (error part)             ``FAILED`` (error log line)
cancelled      ``FAILED`` (cancelled)        ``cancelled``                       ``TERMINATED``
paused         ``ASYNC_PROCESSING`` forever  ``approval_required`` until the     ``RUNNING`` forever
                                             approvals are answered
=============  ============================  ==================================  ==========================

A session cancel (``POST /sessions/{id}/cancel``) and a flow kill settle two polls later: until then a read shows
the old state (``processing``; ``TERMINATING`` for a flow), never a success; then ``failed`` (session) or
``TERMINATED`` (flow). Answered approvals resume the session: one more ``processing`` read, then ``completed``.
A session started without ``input`` is an ``idle`` stub (201) that never runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
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
    retry_after,
    settings_routes,
    sleep_for,
    start_scenario,
)
from airflow_provider_runwatch.emulator.scenario import ScenarioError, parse_spec, strip_directive
from airflow_provider_runwatch.emulator.state import fingerprint

if TYPE_CHECKING:
    from starlette.requests import Request

    from airflow_provider_runwatch.emulator.scenario import Scenario
    from airflow_provider_runwatch.emulator.state import EmulatedRun, EmulatorState, PollDecision

__all__ = ["SEEDED_SESSIONS_PER_AGENT", "VENDOR", "gumloop_state", "routes"]

VENDOR = "gumloop"
PREFIX = "/api/v1"

INTERACTION = "interaction"
SESSION = "session"
FLOW = "flow"

SEEDED_SESSIONS_PER_AGENT = 45
#: Hours between two seeded sessions, newest first: 45 of them span about four and a half days.
SEED_SPACING_HOURS = 2.5
FREE_PLAN_CONCURRENCY = 5
PLAN_PREFIXES = (("gl_free_", "free"), ("gl_pro_", "pro"), ("gl_ent_", "enterprise"))
"""Key prefix -> plan; a key with none of these has no plan limit."""
DEFAULT_PLAN_LIMITS: dict[str, int] = {"free": FREE_PLAN_CONCURRENCY, "pro": 25, "enterprise": 100}
QUEUEING_PLANS = frozenset({"enterprise"})
"""Plans whose starts over the limit are queued instead of refused."""
LIMITS_PATH = "/_emulator/gumloop/limits"
CANCEL_SETTLE_POLLS = 2
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_ERROR_MESSAGE = 4096
DEFAULT_PAGE_SIZE = 20
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

# legacy error texts
UNAUTHORIZED = "Unauthorized"
TEAM_ID_REQUIRED = "team_id is required for team API keys"
GUMMIE_REQUIRED = "gummie_id is required"
MESSAGE_REQUIRED = "message is required"
IDENTITY_REQUIRED = "project_id or user_id is required"
GUMMIE_MISMATCH = "interaction_gummie_mismatch"
GUMMIE_NOT_FOUND = "gummie_not_found"
GUMMIE_FORBIDDEN = "unauthorized_gummie_access"
INTERACTION_NOT_FOUND = "interaction_not_found"
INTERACTION_FORBIDDEN = "unauthorized_interaction_access"
INTERACTION_BUSY = "interaction_not_in_terminal_state"
STATUS_FORBIDDEN = "unauthorized"
SAVED_ITEM_REQUIRED = "saved_item_id is required"
RUN_ID_REQUIRED = "run_id is required"
PIPELINE_INPUTS_INVALID = "pipeline_inputs must be a list of {input_name, value}"
SAVED_ITEM_NOT_FOUND = "Saved item not found"
RUN_NOT_FOUND = "Run not found"
CANCELLED_TEXT = "Agent run was cancelled"

_TYPES = ("api", "web", "slack", "api", "scheduled", "web", "webhook", "api", "email")
_TRIGGERED = frozenset({"slack", "scheduled", "webhook", "email"})
_CREATORS = (
    {"user_id": "usr_alice", "email": "alice@example.com", "name": "Alice Martin"},
    {"user_id": "usr_bob", "email": "bob@example.com", "name": "Bob Okafor"},
    {"user_id": "usr_carol", "email": "carol@example.com", "name": "Carol Nguyen"},
)
_TOPICS = (
    "Quarterly revenue review",
    "Churn risk triage",
    "Lead enrichment",
    "Support ticket digest",
    "Invoice reconciliation",
)


# -- small helpers ------------------------------------------------------------------------------------------------
def _naive(wall: float) -> str:
    """Gumloop's naive timestamps (UTC without an offset)."""
    return datetime.fromtimestamp(wall, tz=timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _hex(text: str, length: int = 24) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def new_error(status: int, message: str, type_: str, code: str, headers: Mapping[str, str] | None = None) -> Response:
    """The agents/sessions API's error shape."""
    return json_response({"error": {"message": message, "type": type_, "code": code}}, status=status, headers=headers)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _subject(prompt: str) -> str:
    return prompt if len(prompt) <= 200 else prompt[:199] + "\u2026"


def _big_document(subject: str, megabytes: float) -> str:
    line = f"{subject[:40]} | metric reconciled against the ledger | status ok\n"
    return line * max(1, int(megabytes * 1_000_000 / (len(line) + 1)))


# -- auth ---------------------------------------------------------------------------------------------------------
def _legacy_auth(request: Request) -> str | Response:
    key = bearer_token(request) or _text(request.query_params.get("api_key"))
    if key is None or key.startswith("gl_invalid"):
        return error_response(401, UNAUTHORIZED)
    if key.startswith("gl_noaccess"):
        return error_response(403, UNAUTHORIZED)
    if key.startswith("gl_team_") and not _text(request.query_params.get("team_id")):
        return error_response(403, TEAM_ID_REQUIRED)
    context(request).authorized = True
    return fingerprint(key)


def _session_auth(request: Request) -> tuple[str, str | None] | Response:
    """(owner, user id) for the agents/sessions API, or its 401/403."""
    key = bearer_token(request)
    if key is None or key.startswith("gl_invalid"):
        return new_error(401, "Invalid or missing API key", "authentication_error", "invalid_api_key")
    if key.startswith("gl_noaccess"):
        return new_error(403, "This API key cannot use the agents API", "permission_error", "forbidden")
    user = _text(request.headers.get("x-auth-key"))
    if key.startswith("gl_team_"):
        if not _text(request.query_params.get("team_id")):
            return new_error(403, TEAM_ID_REQUIRED, "permission_error", "team_id_required")
    elif user is None:
        return new_error(
            401,
            "x-auth-key header (your user id) is required with a personal API key",
            "authentication_error",
            "missing_user_id",
        )
    context(request).authorized = True
    return fingerprint(key), user


def _identity(source: Mapping[str, Any]) -> tuple[str | None, str | None]:
    return _text(source.get("user_id")), _text(source.get("project_id"))


def _identity_matches(run: EmulatedRun, user_id: str | None, project_id: str | None) -> bool:
    return bool(
        (user_id and user_id == run.data.get("user_id")) or (project_id and project_id == run.data.get("project_id"))
    )


class _Store:
    """Gumloop's namespace in the emulator state: seeded sessions and per-agent indexes."""

    def __init__(self, state: EmulatorState) -> None:
        self.ns = state.store(VENDOR)

    @property
    def agents(self) -> dict[tuple[str, str], dict[str, Any]]:
        agents: dict[tuple[str, str], dict[str, Any]] = self.ns.setdefault("agents", {})
        return agents

    @property
    def seeded(self) -> dict[str, dict[str, Any]]:
        seeded: dict[str, dict[str, Any]] = self.ns.setdefault("seeded", {})
        return seeded

    def agent(self, owner: str, agent_id: str) -> dict[str, Any]:
        entry = self.agents.get((owner, agent_id))
        if entry is None:
            entry = self.agents[(owner, agent_id)] = {"live": [], "seeded": _seed(owner, agent_id, time.time())}
            for item in entry["seeded"]:
                self.seeded[item["id"]] = {**item, "owner": owner}
        return entry


def _seed(owner: str, agent_id: str, anchor: float) -> list[dict[str, Any]]:
    """45 finished sessions with varied type, state, creator and age (newest about an hour old)."""
    items = []
    for i in range(SEEDED_SESSIONS_PER_AGENT):
        created = anchor - 3600 * (1 + i * SEED_SPACING_HOURS)
        kind = _TYPES[i % len(_TYPES)]
        if i % 9 == 4:
            state = "idle"
        elif i % 7 == 3:
            state = "failed"
        elif i % 11 == 6:
            state = "approval_required"
        elif i % 13 == 8:
            state = "cancelled"
        else:
            state = "completed"
        creator = _CREATORS[i % len(_CREATORS)]
        credit = 0 if state == "idle" else 4 + (i * 7) % 19
        item: dict[str, Any] = {
            "id": f"sess_{_hex(f'{owner}:{agent_id}:{i}')}",
            "agent_id": agent_id,
            "agent_name": f"Agent {agent_id}",
            "name": f"{_TOPICS[i % len(_TOPICS)]} #{SEEDED_SESSIONS_PER_AGENT - i}",
            "type": kind,
            "state": state,
            "created_at": _iso(created),
            "creator": dict(creator),
            "usage": {
                "credit_cost": credit,
                "tool_credit_cost": credit // 3,
                "flow_credit_cost": 0,
                "input_tokens": 0 if state == "idle" else 900 + 37 * i,
                "output_tokens": 0 if state == "idle" else 150 + 11 * i,
            },
            "pending_approvals": [],
        }
        if kind in _TRIGGERED:
            item["trigger_id"] = f"trg_{kind}_{i % 2 + 1}"
        items.append(item)
    return items


# -- payloads -----------------------------------------------------------------------------------------------------
def _answer(subject: str) -> str:
    return (
        f"Summary for '{subject}': I reviewed 3 sources (company overview, latest news, analyst notes). Revenue "
        "grew slightly quarter over quarter, no material risks were flagged, and the account looks healthy. "
        "Suggested next step: check in again after the next quarterly report."
    )


def _turn_messages(run: EmulatedRun, *, final: bool) -> list[dict[str, Any]]:
    """This turn's user message and, when ``final``, the assistant's answer with its parts."""
    prompt: str = run.data["prompt"]
    subject = _subject(prompt)
    digest = _hex(f"{run.id}:{prompt}:{run.created_wall}", 32)
    user = {
        "id": f"msg_{digest[:16]}",
        "role": "user",
        "timestamp": _naive(run.created_wall),
        "content": run.cache.get("message", prompt),
        "parts": [],
    }
    if not final:
        return [user]
    call_id = f"call_{digest[16:32]}"
    results = [
        {"title": f"{subject[:60]} - company overview", "url": f"https://example.com/{digest[:10]}/overview"},
        {"title": f"{subject[:60]} - latest news", "url": f"https://example.com/{digest[:10]}/news"},
        {"title": f"{subject[:60]} - analyst notes", "url": f"https://example.com/{digest[:10]}/analysts"},
    ]
    parts: list[dict[str, Any]] = [
        {"id": "part_1", "type": "step-start"},
        {"id": "part_2", "type": "reasoning", "reasoning": "Look the account up before answering."},
        {
            "id": "part_3",
            "type": "tool_invocation",
            "toolCallId": call_id,
            "toolName": "web_search",
            "toolCallState": "result",
            "result": {"args": {"query": subject}, "result": {"results": results}},
        },
    ]
    if run.scenario.big_messages > 0:
        parts.append(
            {
                "id": "part_4",
                "type": "tool_invocation",
                "toolCallId": f"call_{digest[:16]}",
                "toolName": "read_document",
                "toolCallState": "result",
                "result": {
                    "args": {"url": results[0]["url"]},
                    "result": {"content": _big_document(subject, run.scenario.big_messages)},
                },
            }
        )
    parts.append({"id": "part_9", "type": "text", "text": _answer(subject)})
    assistant = {
        "id": f"msg_{digest[16:32]}",
        "role": "assistant",
        "timestamp": _naive(run.created_wall + 2.5),
        "content": None,
        "parts": parts,
    }
    return [user, assistant]


def _failed_messages(run: EmulatedRun, error: str) -> list[dict[str, Any]]:
    user = _turn_messages(run, final=False)
    assistant = {
        "id": f"msg_{_hex(run.id + ':error', 16)}",
        "role": "assistant",
        "timestamp": _naive(run.created_wall + 1.5),
        "content": None,
        "parts": [{"id": "part_1", "type": "error", "error": error}],
    }
    return [*user, assistant]


def _approval_messages(run: EmulatedRun) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Messages so far and the pending approvals of a session paused for a human (its current round)."""
    prompt: str = run.data["prompt"]
    number = len(_approval_rounds(run))
    pending = _pending_approvals(run, number)
    assistant = {
        "id": f"msg_{_hex(run.id + ':paused' + (f':{number}' if number else ''), 16)}",
        "role": "assistant",
        "timestamp": _naive(run.created_wall + 1.5 + number),
        "content": None,
        "parts": [
            {"id": "part_1", "type": "text", "text": "I drafted the summary email and need your approval to send it."}
            if [item["tool_name"] for item in pending] == ["send_email"]
            else {"id": "part_1", "type": "text", "text": f"I need your approval to run {_tool_list(pending)}."},
            *(
                {
                    "id": f"part_{index + 2}",
                    "type": "tool_invocation",
                    "toolCallId": item["toolCallId"],
                    "toolName": item["tool_name"],
                    "toolCallState": "approval-requested",
                    "result": {"args": _tool_args(item["tool_name"], prompt, brief=True), "result": None},
                }
                for index, item in enumerate(pending)
            ),
        ],
    }
    return [*_turn_messages(run, final=False), assistant], pending


# -- approvals: sessions that pause K times for given tools (scenario ``approvals=`` and ``on_reject=``) --------
def _approval_plan(run: EmulatedRun) -> list[list[str]]:
    """The tools asked for, round by round; a plain ``outcome=paused`` asks once, for ``send_email``."""
    spec = run.scenario.approvals
    if not spec:
        return [["send_email"]]
    return [round_.split("+") for round_ in spec.split("/")]


def _approval_rounds(run: EmulatedRun) -> list[dict[str, Any]]:
    """The rounds answered so far: ``{"responses": [...], "at_poll": N}`` each, oldest first."""
    rounds: list[dict[str, Any]] = run.data.setdefault("approval_rounds", [])
    return rounds


def _tool_args(tool: str, prompt: str, *, brief: bool = False) -> dict[str, Any]:
    subject = _subject(prompt)
    if tool == "send_email":
        args = {"to": "owner@example.com", "subject": "Account summary"}
        if not brief:
            args["body"] = f"Draft summary for '{subject}' is ready to send to the account owner."
        return args
    return {"account": subject[:60], "tool": tool}


def _tool_list(pending: list[dict[str, Any]]) -> str:
    return ", ".join(item["tool_name"] for item in pending)


def _pending_approvals(run: EmulatedRun, number: int) -> list[dict[str, Any]]:
    """Round ``number``'s pending approvals (round 0's first keeps the id older emulator versions gave)."""
    plan = _approval_plan(run)
    tools = plan[min(number, len(plan) - 1)]
    pending = []
    for index, tool in enumerate(tools):
        key = ":approval" if (number, index) == (0, 0) else f":approval:{number}:{index}"
        call_key = ":send" if (number, index) == (0, 0) else f":call:{number}:{index}"
        pending.append(
            {
                "action_request_id": f"act_{_hex(run.id + key, 20)}",
                "tool_name": tool,
                "toolCallId": f"call_{_hex(run.id + call_key, 16)}",
                "args": _tool_args(tool, run.data["prompt"]),
                "description": "Send the account summary email" if tool == "send_email" else f"Run {tool}",
                "requested_at": _naive(run.created_wall + 1.5 + number),
            }
        )
    return pending


def _paused_session_state(run: EmulatedRun, decision: PollDecision) -> str:
    """A paused session: waiting for round k's answer, resuming (``processing`` reads after an answer), then
    the next round, or the end (``completed``; ``failed`` after a rejection with ``on_reject=fail``)."""
    rounds = _approval_rounds(run)
    if not rounds:
        return "approval_required"
    # Resuming after an answer takes as many reads as the start did (``polls``, at least one).
    resume_reads = max(1, run.scenario.polls or 0) if run.scenario.approvals else 1
    if _cancel_pending(run, decision) or decision.poll_index - rounds[-1]["at_poll"] < resume_reads:
        return "processing"
    if _rejection_error(run):
        return "failed"
    if len(rounds) < len(_approval_plan(run)):
        return "approval_required"
    return "completed"


def _rejected(run: EmulatedRun) -> list[dict[str, Any]]:
    """The pending approvals that were answered ``reject``, in every round so far."""
    found = []
    for number, answered in enumerate(_approval_rounds(run)):
        actions = {r["action_request_id"]: r["action"] for r in answered["responses"]}
        found += [p for p in _pending_approvals(run, number) if actions.get(p["action_request_id"]) == "reject"]
    return found


def _rejection_error(run: EmulatedRun) -> str | None:
    """With ``on_reject=fail``: why the session failed, naming the rejected tool call."""
    rejected = _rejected(run) if run.scenario.on_reject == "fail" else []
    if not rejected:
        return None
    first = rejected[0]
    return f"Tool call {first['tool_name']} ({first['action_request_id']}) was rejected; the agent cannot go on"


def _approvals_problem(run: EmulatedRun, responses: Any) -> tuple[str, str] | None:
    """What is wrong with an ``approval_responses`` body for the current round: (message, code), or None."""
    if not isinstance(responses, list) or not responses:
        return "approval_responses must be a non-empty list", "invalid_approvals"
    pending = {item["action_request_id"] for item in _approval_messages(run)[1]}
    seen: set[str] = set()
    for item in responses:
        if not isinstance(item, dict) or item.get("action") not in ("accept", "reject"):
            return "each approval response needs action_request_id and action accept|reject", "invalid_approvals"
        ident = item.get("action_request_id")
        if ident not in pending:
            return f"unknown action_request_id {ident!r}", "unknown_action_request"
        if ident in seen:
            return f"action_request_id {ident!r} answered twice", "invalid_approvals"
        seen.add(str(ident))
    missing = sorted(pending - seen)
    if missing:
        return f"every pending approval needs an answer; missing {', '.join(missing)}", "invalid_approvals"
    return None


def _record_approvals(run: EmulatedRun, responses: list[dict[str, Any]]) -> None:
    _approval_rounds(run).append({"responses": responses, "at_poll": run.polls_answered})


def _usage(run: EmulatedRun, final: bool) -> dict[str, Any]:
    size = len(run.data.get("prompt", ""))
    return {
        "credit_cost": 12 if final else 2,
        "tool_credit_cost": 4 if final else 0,
        "flow_credit_cost": 0,
        "input_tokens": 1800 + size,
        "output_tokens": 420 if final else 35,
    }


def _reject_note(run: EmulatedRun) -> list[dict[str, Any]]:
    rejected = _rejected(run)
    if not rejected:
        return []
    return [
        {
            "id": f"msg_{_hex(run.id + ':rejected', 16)}",
            "role": "assistant",
            "timestamp": _naive(run.created_wall + 3),
            "content": "Understood: I did not send the email."
            if [item["tool_name"] for item in rejected] == ["send_email"]
            else f"Understood: I did not run {_tool_list(rejected)}.",
            "parts": [],
        }
    ]


# -- life cycle -------------------------------------------------------------------------------------------------
def _cancel_pending(run: EmulatedRun, decision: PollDecision) -> bool:
    """A cancel (or kill) was asked for and has not settled yet: the run shows its old state."""
    return run.cancel_requested_at is not None and not (decision.is_terminal and decision.outcome == "cancelled")


def interaction_state(run: EmulatedRun, decision: PollDecision) -> str:
    if decision.kind == "terminal" and decision.outcome in ("succeeded", "failed", "cancelled"):
        return "COMPLETED" if decision.outcome == "succeeded" else "FAILED"
    return run.scenario.unknown_state or "ASYNC_PROCESSING"


def session_state(run: EmulatedRun, decision: PollDecision) -> tuple[str, int | None]:
    """(state, queue_position) of a session for a (non-fault) decision."""
    if run.data.get("idle"):
        return "idle", None
    if decision.kind == "queued":
        return "queued", decision.queue_position
    if decision.kind == "running":
        return run.scenario.unknown_state or "processing", None
    outcome = decision.outcome
    if outcome == "cancelled":
        # Cancelled through the API: Gumloop ends the session as failed; the generic outcome: cancelled.
        return ("failed" if run.data.get("cancelled_via_api") else "cancelled"), None
    if outcome == "paused":
        return _paused_session_state(run, decision), None
    if _cancel_pending(run, decision):
        return "processing", None
    return ("completed" if outcome == "succeeded" else "failed"), None


def flow_state(run: EmulatedRun, decision: PollDecision) -> str:
    if decision.kind == "terminal" and decision.outcome == "cancelled":
        return "TERMINATED"
    if _cancel_pending(run, decision):
        return "TERMINATING"
    if decision.kind == "queued":
        return "QUEUED"
    if decision.kind == "terminal" and decision.outcome == "succeeded":
        return "DONE"
    if decision.kind == "terminal" and decision.outcome == "failed":
        return "FAILED"
    return run.scenario.unknown_state or "RUNNING"


def gumloop_state(run: EmulatedRun, decision: PollDecision) -> str:
    """The Gumloop state string of a run (control API's run records)."""
    kind = run.data.get("kind")
    if kind == SESSION:
        return session_state(run, decision)[0]
    if kind == FLOW:
        return flow_state(run, decision)
    return interaction_state(run, decision)


def _terminal_state(run: EmulatedRun, state: EmulatorState) -> bool:
    kind = run.data.get("kind")
    decision = state.peek(run)
    if kind == SESSION:
        return session_state(run, decision)[0] in ("completed", "failed", "cancelled", "idle")
    if kind == FLOW:
        return flow_state(run, decision) in ("DONE", "FAILED", "TERMINATED")
    return interaction_state(run, decision) in ("COMPLETED", "FAILED")


def _session_body(run: EmulatedRun, state: str, queue_position: int | None, *, with_messages: bool = True) -> bytes:
    key = f"session:{state}:{with_messages}"
    cacheable = state in ("completed", "failed", "cancelled") and queue_position is None
    if cacheable and key in run.cache:
        body: bytes = run.cache[key]
        return body
    history: list[dict[str, Any]] = run.cache.get("history", [])
    session: dict[str, Any] = {
        "id": run.id,
        "agent_id": run.data["agent_id"],
        "agent_name": f"Agent {run.data['agent_id']}",
        "name": _subject(run.data.get("prompt") or "New session")[:80],
        "type": run.data.get("type") or "api",
        "state": state,
        "created_at": _iso(run.created_wall),
        "creator": {"user_id": run.data.get("user") or "team", "email": None, "name": None},
        "metadata": run.data.get("metadata") or {},
        "pending_approvals": [],
    }
    if run.data.get("trigger_id"):
        session["trigger_id"] = run.data["trigger_id"]
    if state == "idle":
        messages: list[dict[str, Any]] = []
        session["usage"] = {"credit_cost": 0, "tool_credit_cost": 0, "flow_credit_cost": 0}
    elif state == "completed":
        messages = [*history, *_turn_messages(run, final=True), *_reject_note(run)]
        session["usage"] = _usage(run, final=True)
    elif state == "failed":
        error = CANCELLED_TEXT if run.data.get("cancelled_via_api") else _rejection_error(run) or run.scenario.error
        messages = [*history, *_failed_messages(run, error)]
        session["usage"] = _usage(run, final=False)
    elif state == "approval_required":
        so_far, pending = _approval_messages(run)
        messages = [*history, *so_far]
        session["pending_approvals"] = pending
        session["usage"] = _usage(run, final=False)
    else:
        messages = [*history, *_turn_messages(run, final=False)]
        session["usage"] = _usage(run, final=False)
    if with_messages:
        session["messages"] = messages
    body = json_bytes({"session": session, "queue_position": queue_position})
    if cacheable:
        run.cache[key] = body
    return body


def _interaction_body(run: EmulatedRun, state: str) -> bytes:
    key = f"interaction:{state}"
    if key in run.cache:
        body: bytes = run.cache[key]
        return body
    payload: dict[str, Any] = {
        "interaction_id": run.id,
        "gummie_id": run.data["gummie_id"],
        "state": state,
        "created_ts": _naive(run.created_wall),
    }
    history: list[dict[str, Any]] = run.cache.get("history", [])
    if state == "COMPLETED":
        messages = [*history, *_turn_messages(run, final=True)]
        payload["messages"] = messages
        payload["response"] = _answer(_subject(run.data["prompt"]))
    elif state == "FAILED":
        outcome = run.forced_outcome or run.scenario.outcome
        text = CANCELLED_TEXT if outcome == "cancelled" else run.scenario.error
        payload["error_message"] = text[:MAX_ERROR_MESSAGE]
    body = json_bytes(payload)
    if state in ("COMPLETED", "FAILED"):
        run.cache[key] = body
    return body


def _flow_outputs(run: EmulatedRun) -> dict[str, Any]:
    inputs: dict[str, Any] = {item["input_name"]: item["value"] for item in run.cache.get("inputs", [])}
    cleaned = {name: strip_directive(value) if isinstance(value, str) else value for name, value in inputs.items()}
    described = ", ".join(f"{k}={v}" for k, v in cleaned.items()) or "no inputs"
    return {
        "summary": f"Flow {run.data['saved_item_id']} processed {described}",
        "rows_processed": 40 + len(described) % 17,
        "inputs": cleaned,
    }


def _flow_body(run: EmulatedRun, state: str) -> bytes:
    key = f"flow:{state}"
    if key in run.cache:
        body: bytes = run.cache[key]
        return body
    log = [f"{_naive(run.created_wall)} Flow started", f"{_naive(run.created_wall + 0.5)} Node 'Input' finished"]
    payload: dict[str, Any] = {
        "run_id": run.id,
        "saved_item_id": run.data["saved_item_id"],
        "state": state,
        "outputs": {},
        "log": log,
        "created_ts": _naive(run.created_wall),
        "finished_ts": None,
    }
    final = state in ("DONE", "FAILED", "TERMINATED")
    if state == "DONE":
        payload["outputs"] = _flow_outputs(run)
        log += [f"{_naive(run.created_wall + 1.5)} Node 'Ask AI' finished", "Flow finished successfully"]
    elif state == "FAILED":
        log += [f"{_naive(run.created_wall + 1.5)} Error in node 'Ask AI': {run.scenario.error}"]
    elif state in ("TERMINATING", "TERMINATED"):
        log += ["Termination requested by the user"] + (["Flow terminated"] if state == "TERMINATED" else [])
    if final:
        payload["finished_ts"] = _naive(run.created_wall + 2.0)
    body = json_bytes(payload)
    if final:
        run.cache[key] = body
    return body


# -- start failures (start_status) ------------------------------------------------------------------------------
_LEGACY_START_ERRORS = {
    400: MESSAGE_REQUIRED,
    401: UNAUTHORIZED,
    402: "Insufficient credits",
    403: UNAUTHORIZED,
    404: GUMMIE_NOT_FOUND,
    409: INTERACTION_BUSY,
    413: "Request body too large (limit 10 MB)",
    500: "Internal server error",
}
_SESSION_START_ERRORS = {
    400: ("input must be a string", "invalid_request_error", "invalid_input"),
    401: ("Invalid or missing API key", "authentication_error", "invalid_api_key"),
    402: ("Insufficient credits", "billing_error", "insufficient_credits"),
    403: ("This API key cannot use this agent", "permission_error", "forbidden"),
    404: ("Agent not found", "not_found_error", "agent_not_found"),
    409: ("A session with this id already exists", "conflict_error", "session_already_exists"),
    413: ("Request body too large (limit 10 MB)", "invalid_request_error", "request_too_large"),
    429: ("Agent concurrency limit reached", "rate_limit_error", "concurrency_limit_exceeded"),
    500: ("Internal server error", "api_error", "internal_error"),
}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _legacy_start_failure(scenario: Scenario, not_found: str = GUMMIE_NOT_FOUND) -> Response:
    status = scenario.start_status
    assert status is not None
    if status == 429:
        return rate_limit_response(scenario, message="Concurrency limit reached for your plan")
    if status in (502, 503, 504):
        return gateway_error_response(status)
    text = not_found if status == 404 else _LEGACY_START_ERRORS.get(status, _phrase(status))
    return error_response(status, text)


def _session_start_failure(scenario: Scenario) -> Response:
    status = scenario.start_status
    assert status is not None
    if status in (502, 503, 504):
        return gateway_error_response(status)
    message, type_, code = _SESSION_START_ERRORS.get(status, (_phrase(status), "api_error", "error"))
    headers = retry_after(scenario)[0] if status == 429 else None
    return new_error(status, message, type_, code, headers=headers)


async def _legacy_start(request: Request, not_an_object: str) -> tuple[str, dict[str, Any]] | Response:
    """What both legacy starts check first, in the vendor's order: the key, the declared size, a JSON object
    (``not_an_object`` is the start's own 400 text). The key's owner and the body, or the error answer."""
    owner = _legacy_auth(request)
    if isinstance(owner, Response):
        return owner
    if _too_large(request):
        return error_response(413, _LEGACY_START_ERRORS[413])
    body = await read_json(request)
    if not isinstance(body, dict):
        return error_response(400, not_an_object)
    return owner, body


def _too_large(request: Request) -> bool:
    declared = request.headers.get("content-length")
    return bool(declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES)


def _plan_limits(state: EmulatorState) -> dict[str, int]:
    limits: dict[str, int] | None = state.store(VENDOR).get("plan_limits")
    return limits if limits is not None else DEFAULT_PLAN_LIMITS


def _plan(request: Request) -> str | None:
    key = bearer_token(request) or _text(request.query_params.get("api_key")) or ""
    return next((plan for prefix, plan in PLAN_PREFIXES if key.startswith(prefix)), None)


def _active_agent_runs(state: EmulatorState, owner: str) -> int:
    """Unfinished agent runs (interactions, non-idle sessions) of ``owner`` that hold a slot (not queued)."""
    active = 0
    for run in state.runs.values():
        mine = run.vendor == VENDOR and run.owner == owner and run.data.get("kind") in (INTERACTION, SESSION)
        if mine and run.held_position is None and not run.data.get("idle") and not _terminal_state(run, state):
            active += 1
    return active


def _queue(state: EmulatorState, owner: str) -> list[str]:
    """The run ids a plan queue holds for ``owner``, oldest first."""
    queues: dict[str, list[str]] = state.store(VENDOR).setdefault("plan_queues", {})
    return queues.setdefault(owner, [])


def _release(state: EmulatorState, owner: str) -> None:
    """Let queued runs of ``owner`` in while slots are free (they start running now); renumber the rest.

    Called on every agent-run request of the key, so a slot is taken up at the next request after it freed.
    """
    queues: dict[str, list[str]] | None = state.store(VENDOR).get("plan_queues")
    queue = queues.get(owner) if queues else None
    if not queue:
        return
    limit = _plan_limits(state)[_queue_plan(state, owner)]
    free = limit - _active_agent_runs(state, owner)
    waiting: list[str] = []
    for run_id in queue:
        run = state.runs.get(run_id)
        if run is None or run.held_position is None:
            continue
        if run.cancel_requested_at is not None:  # cancelled while queued: it never takes a slot
            run.held_position = None
            continue
        if free > 0:
            run.held_position = None
            run.started_monotonic = state.clock.now()
            free -= 1
            continue
        waiting.append(run_id)
        run.held_position = len(waiting)
    queue[:] = waiting


def _queue_plan(state: EmulatorState, owner: str) -> str:
    plans: dict[str, str] = state.store(VENDOR).setdefault("queue_plans", {})
    return plans.get(owner, "enterprise")


def _admission(state: EmulatorState, request: Request, owner: str) -> tuple[str, str, int]:
    """``(verdict, plan, limit)`` for a new agent run: verdict ``run``, ``queue`` or ``refuse`` (429)."""
    plan = _plan(request)
    if plan is None:
        return "run", "", 0
    _release(state, owner)
    limit = _plan_limits(state)[plan]
    if plan in QUEUEING_PLANS:
        if _queue(state, owner) or _active_agent_runs(state, owner) >= limit:
            state.store(VENDOR).setdefault("queue_plans", {})[owner] = plan
            return "queue", plan, limit
        return "run", plan, limit
    if _active_agent_runs(state, owner) >= limit:
        context(request).reason = "concurrency"
        return "refuse", plan, limit
    return "run", plan, limit


def _hold(state: EmulatorState, run: EmulatedRun) -> None:
    """Put a just-started run at the end of its key's plan queue."""
    queue = _queue(state, run.owner)
    queue.append(run.id)
    run.held_position = len(queue)


def _parse_plan_limits(current: Mapping[str, int], body: Any) -> dict[str, int] | str:
    if not isinstance(body, dict):
        return 'emulator: body must be {"free": 5, "pro": 25, "enterprise": 100} (any subset)'
    unknown = set(body) - set(DEFAULT_PLAN_LIMITS)
    if unknown:
        return f"emulator: unknown plan {sorted(unknown)[0]!r} (plans: free, pro, enterprise)"
    for name, value in body.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"emulator: the {name} limit must be a positive integer"
    return {**current, **body}


def _limits_routes(state: EmulatorState) -> list[BaseRoute]:
    """``GET``/``PUT /_emulator/gumloop/limits``: each plan's limit of unfinished agent runs per key."""

    def update(body: Any) -> dict[str, int] | str:
        updated = _parse_plan_limits(_plan_limits(state), body)
        if not isinstance(updated, str):
            state.store(VENDOR)["plan_limits"] = updated
        return updated

    return settings_routes(LIMITS_PATH, lambda: dict(_plan_limits(state)), update)


def _poll_fault(run: EmulatedRun, decision: PollDecision, body: bytes, *, new_shape: bool) -> Response | None:
    if decision.kind == "http5xx":
        return gateway_error_response(run.scenario.status5xx)
    if decision.kind == "rate_limit":
        if new_shape:
            headers = retry_after(run.scenario)[0]
            return new_error(429, "Too many requests", "rate_limit_error", "rate_limited", headers=headers)
        return rate_limit_response(run.scenario)
    if decision.kind == "malformed":
        return malformed_response(body)
    return None


# -- cursor paging ------------------------------------------------------------------------------------------------
def _signature(filters: Mapping[str, Any]) -> str:
    return _hex(json.dumps(filters, sort_keys=True), 10)


def _cursor(offset: int, signature: str) -> str:
    raw = json.dumps({"o": offset, "s": signature}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _offset(cursor: str, signature: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        offset = data["o"]
    except (ValueError, KeyError, TypeError):
        return None
    if data.get("s") != signature or not isinstance(offset, int) or offset < 0:
        return None
    return offset


def _find(state: EmulatorState, run_id: str, owner: str, kind: str) -> EmulatedRun | None:
    """``owner``'s run ``run_id`` if it is a ``kind`` (an interaction, a session or a flow), else None."""
    run = state.get_run(run_id, VENDOR, owner)
    return run if run is not None and run.data.get("kind") == kind else None


def _session_of(state: EmulatorState, request: Request) -> EmulatedRun | Response:
    """The session a ``/sessions/{session_id}/...`` call acts on, or the answer refusing it (auth, then 404)."""
    auth = _session_auth(request)
    if isinstance(auth, Response):
        return auth
    session_id: str = request.path_params["session_id"]
    context(request).run_id = session_id
    run = _find(state, session_id, auth[0], SESSION)
    if run is None:
        return new_error(404, "Session not found", "not_found_error", "session_not_found")
    return run


def _agent_refusal(agent_id: str) -> Response | None:
    """404 for an agent that does not exist, 403 for someone else's; None for one the key may use."""
    if agent_id.startswith("missing"):
        return new_error(404, "Agent not found", "not_found_error", "agent_not_found")
    if agent_id.startswith("private"):
        return new_error(403, "This API key cannot use this agent", "permission_error", "agent_access_denied")
    return None


def routes(state: EmulatorState) -> list[BaseRoute]:
    """Gumloop's routes bound to ``state``, one resource after the other (see the module docstring)."""
    state.register_state_reporter(VENDOR, gumloop_state)
    return [
        *_interaction_routes(state),
        *_session_routes(state),
        *_approval_routes(state),
        *_follow_up_routes(state),
        *_flow_routes(state),
        *_limits_routes(state),
    ]


def _interaction_routes(state: EmulatorState) -> list[BaseRoute]:
    """Agent interactions (legacy): ``POST /start_agent`` (a new one, or a follow-up turn), ``GET /agent_status``."""

    async def start_agent(request: Request) -> Response:
        checked = await _legacy_start(request, GUMMIE_REQUIRED)
        if isinstance(checked, Response):
            return checked
        owner, body = checked
        gummie_id = _text(body.get("gummie_id"))
        if gummie_id is None:
            return error_response(400, GUMMIE_REQUIRED)
        message = body.get("message")
        if not isinstance(message, str) or not message.strip():
            return error_response(400, MESSAGE_REQUIRED)
        user_id, project_id = _identity(body)
        if not (user_id or project_id):
            return error_response(400, IDENTITY_REQUIRED)
        if gummie_id.startswith("missing"):
            return error_response(404, GUMMIE_NOT_FOUND)
        if gummie_id.startswith("private"):
            return error_response(403, GUMMIE_FORBIDDEN)
        try:
            scenario = start_scenario(state, request, (message,))
        except ScenarioError as exc:
            return error_response(400, str(exc))
        history: list[dict[str, Any]] = []
        interaction_id = _text(body.get("interaction_id"))
        if interaction_id is not None:
            context(request).run_id = interaction_id
            earlier = state.get_run(interaction_id, VENDOR)
            if earlier is None or earlier.data.get("kind") != INTERACTION:
                return error_response(404, INTERACTION_NOT_FOUND)
            if earlier.owner != owner or not _identity_matches(earlier, user_id, project_id):
                return error_response(403, INTERACTION_FORBIDDEN)
            if earlier.data["gummie_id"] != gummie_id:
                return error_response(400, GUMMIE_MISMATCH)
            if not _terminal_state(earlier, state):
                return error_response(409, INTERACTION_BUSY)
            payload = json.loads(_interaction_body(earlier, interaction_state(earlier, state.peek(earlier))))
            history = payload.get("messages") or [
                *earlier.cache.get("history", []),
                *_turn_messages(earlier, final=False),
            ]
        if scenario.start_status is not None:
            return _legacy_start_failure(scenario)
        verdict, _plan_name, limit = _admission(state, request, owner)
        if verdict == "refuse":
            return error_response(429, f"Concurrency limit reached for your plan ({limit} concurrent agent runs)")
        run = state.new_run(
            VENDOR,
            owner,
            scenario,
            run_id=interaction_id or _hex(f"{time.time_ns()}:{os.urandom(8).hex()}", 22),
            data={
                "kind": INTERACTION,
                "gummie_id": gummie_id,
                "prompt": strip_directive(message),
                "user_id": user_id,
                "project_id": project_id,
                "turn": 1 + len([m for m in history if m.get("role") == "user"]),
            },
        )
        run.cache["message"] = message
        run.cache["history"] = history
        if verdict == "queue":
            _hold(state, run)
        context(request).run_id = run.id
        return json_response({"interaction_id": run.id, "status": "processing"}, status=202)

    async def agent_status(request: Request) -> Response:
        owner = _legacy_auth(request)
        if isinstance(owner, Response):
            return owner
        interaction_id: str = request.path_params["interaction_id"]
        context(request).run_id = interaction_id
        user_id, project_id = _identity(request.query_params)
        if not (user_id or project_id):
            return error_response(400, IDENTITY_REQUIRED)
        run = _find(state, interaction_id, owner, INTERACTION)
        if run is None:
            return error_response(404, INTERACTION_NOT_FOUND)
        if not _identity_matches(run, user_id, project_id):
            return error_response(403, STATUS_FORBIDDEN)
        _release(state, owner)
        decision = state.next_poll(run)
        await sleep_for(decision)
        running = _interaction_body(run, run.scenario.unknown_state or "ASYNC_PROCESSING")
        fault = _poll_fault(run, decision, running, new_shape=False)
        if fault is not None:
            return fault
        return Response(_interaction_body(run, interaction_state(run, decision)), media_type="application/json")

    return [
        Route(f"{PREFIX}/start_agent", start_agent, methods=["POST"]),
        Route(f"{PREFIX}/agent_status/{{interaction_id}}", agent_status, methods=["GET"]),
    ]


def _session_routes(state: EmulatorState) -> list[BaseRoute]:
    """Agent sessions: start, list (seeded, started and autonomous ones), read and cancel."""

    async def create_session(request: Request) -> Response:
        auth = _session_auth(request)
        if isinstance(auth, Response):
            return auth
        owner, user = auth
        if _too_large(request):
            return new_error(413, *_SESSION_START_ERRORS[413])
        agent_id: str = request.path_params["agent_id"]
        raw = await request.body()
        body: Any = {} if not raw.strip() else await read_json(request)
        if not isinstance(body, dict):
            return new_error(400, "Request body must be a JSON object", "invalid_request_error", "invalid_json")
        if body.get("stream") is True:
            return new_error(
                400,
                "stream: true is not supported on this host; poll GET /sessions/{session_id}",
                "invalid_request_error",
                "streaming_not_supported",
            )
        refused = _agent_refusal(agent_id)
        if refused is not None:
            return refused
        text = body.get("input")
        if text is not None and not isinstance(text, str):
            return new_error(400, "input must be a string", "invalid_request_error", "invalid_input")
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            return new_error(400, "metadata must be an object", "invalid_request_error", "invalid_metadata")
        session_id = body.get("session_id")
        if session_id is not None:
            if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
                return new_error(
                    400,
                    "session_id may contain only letters, digits, '_' and '-' (1-128 characters)",
                    "invalid_request_error",
                    "invalid_session_id",
                )
            context(request).run_id = session_id
            existing = state.runs.get(session_id)
            if (existing is not None and existing.vendor == VENDOR) or session_id in _Store(state).seeded:
                return new_error(409, *_SESSION_START_ERRORS[409])
        idle = text is None or not text.strip()
        try:
            scenario = start_scenario(state, request, [text] if isinstance(text, str) and not idle else [])
        except ScenarioError as exc:
            return new_error(400, str(exc), "invalid_request_error", "invalid_scenario")
        if scenario.start_status is not None:
            return _session_start_failure(scenario)
        verdict, plan, limit = _admission(state, request, owner) if not idle else ("run", "", 0)
        if verdict == "refuse":
            return new_error(
                429,
                f"Agent concurrency limit reached ({limit} concurrent runs on the {plan.capitalize()} plan)",
                "rate_limit_error",
                "concurrency_limit_exceeded",
            )
        run = state.new_run(
            VENDOR,
            owner,
            scenario,
            run_id=session_id or f"sess_{_hex(f'{time.time_ns()}:{os.urandom(8).hex()}')}",
            data={
                "kind": SESSION,
                "agent_id": agent_id,
                "prompt": strip_directive(text) if text else "",
                "metadata": metadata or {},
                "user": user,
                "idle": idle,
            },
        )
        if text:
            run.cache["message"] = text
        if verdict == "queue":
            _hold(state, run)
        _Store(state).agent(owner, agent_id)["live"].append(run.id)
        context(request).run_id = run.id
        if idle:
            return Response(_session_body(run, "idle", None), status_code=201, media_type="application/json")
        position = run.held_position if run.held_position is not None else scenario.queued or None
        return Response(
            _session_body(run, "queued" if position else "processing", position),
            status_code=202,
            media_type="application/json",
        )

    async def get_session(request: Request) -> Response:
        auth = _session_auth(request)
        if isinstance(auth, Response):
            return auth
        owner = auth[0]
        session_id: str = request.path_params["session_id"]
        context(request).run_id = session_id
        run = _find(state, session_id, owner, SESSION)
        if run is None and session_id.startswith("sess_auto_"):
            _materialize_planned(state, owner, session_id)
            run = _find(state, session_id, owner, SESSION)
        if run is None:
            seeded = _Store(state).seeded.get(session_id)
            if seeded is not None and seeded["owner"] == owner:
                item = {k: v for k, v in seeded.items() if k != "owner"}
                return json_response({"session": {**item, "messages": []}, "queue_position": None})
            return new_error(404, "Session not found", "not_found_error", "session_not_found")
        if run.data.get("idle"):
            return Response(_session_body(run, "idle", None), media_type="application/json")
        _release(state, owner)
        decision = state.next_poll(run)
        await sleep_for(decision)
        fault = _poll_fault(run, decision, _session_body(run, "processing", None), new_shape=True)
        if fault is not None:
            return fault
        current, queue_position = session_state(run, decision)
        return Response(_session_body(run, current, queue_position), media_type="application/json")

    async def cancel_session(request: Request) -> Response:
        run = _session_of(state, request)
        if isinstance(run, Response):
            return run
        body = await read_json(request)
        if body is not NotImplemented and not isinstance(body, dict):
            return new_error(400, "Request body must be a JSON object", "invalid_request_error", "invalid_json")
        current = session_state(run, state.peek(run))[0]
        if current not in ("completed", "failed", "cancelled", "idle"):
            run.data["cancelled_via_api"] = True
            state.request_cancel(run, settle_polls=CANCEL_SETTLE_POLLS)
        return Response(_session_body(run, current, None, with_messages=False), media_type="application/json")

    async def list_sessions(request: Request) -> Response:
        auth = _session_auth(request)
        if isinstance(auth, Response):
            return auth
        owner = auth[0]
        agent_id: str = request.path_params["agent_id"]
        refused = _agent_refusal(agent_id)
        if refused is not None:
            return refused
        materialize_autonomous(state, owner, agent_id)
        q = request.query_params
        raw_size = q.get("page_size")
        page_size = DEFAULT_PAGE_SIZE
        if raw_size is not None:
            if not raw_size.isdigit() or not 1 <= int(raw_size) <= 100:
                return new_error(
                    400, "page_size must be an integer between 1 and 100", "invalid_request_error", "invalid_page_size"
                )
            page_size = int(raw_size)
        sort_order = q.get("sort_order", "newest")
        if sort_order not in ("newest", "oldest"):
            return new_error(400, "sort_order must be newest or oldest", "invalid_request_error", "invalid_sort_order")
        filters = {name: q.get(name) for name in ("search", "type", "state", "creator_user_id", "trigger_id")}
        signature = _signature({**filters, "sort_order": sort_order, "page_size": page_size})
        offset = 0
        if q.get("cursor") is not None:
            found = _offset(q["cursor"], signature)
            if found is None:
                return new_error(400, "invalid cursor", "invalid_request_error", "invalid_cursor")
            offset = found
        entry = _Store(state).agent(owner, agent_id)
        items: list[dict[str, Any]] = [dict(item) for item in entry["seeded"]]
        for run_id in entry["live"]:
            run = state.get_run(run_id, VENDOR, owner)
            if run is not None:
                current, _ = session_state(run, state.peek(run))
                items.append(json.loads(_session_body(run, current, None, with_messages=False))["session"])
        if filters["search"]:
            needle = filters["search"].lower()
            items = [item for item in items if needle in (item.get("name") or "").lower()]
        for name in ("type", "state", "trigger_id"):
            if filters[name] is not None:
                items = [item for item in items if item.get(name) == filters[name]]
        if filters["creator_user_id"] is not None:
            items = [item for item in items if (item.get("creator") or {}).get("user_id") == filters["creator_user_id"]]
        items.sort(key=lambda item: (item["created_at"], item["id"]), reverse=sort_order == "newest")
        page = items[offset : offset + page_size]
        more = offset + page_size < len(items)
        return json_response(
            {"sessions": page, "next_cursor": _cursor(offset + page_size, signature) if more else None}
        )

    return [
        Route(f"{PREFIX}/agents/{{agent_id}}/sessions", create_session, methods=["POST"]),
        Route(f"{PREFIX}/agents/{{agent_id}}/sessions", list_sessions, methods=["GET"]),
        Route(f"{PREFIX}/sessions/{{session_id}}", get_session, methods=["GET"]),
        Route(f"{PREFIX}/sessions/{{session_id}}/cancel", cancel_session, methods=["POST"]),
    ]


def _approval_routes(state: EmulatorState) -> list[BaseRoute]:
    """``POST /sessions/{id}/approvals``: answer the tool calls a paused (``approval_required``) session waits on."""

    async def approvals(request: Request) -> Response:
        run = _session_of(state, request)
        if isinstance(run, Response):
            return run
        body = await read_json(request)
        responses = body.get("approval_responses") if isinstance(body, dict) else None
        if not isinstance(responses, list) or not responses:
            return new_error(
                400, "approval_responses must be a non-empty list", "invalid_request_error", "invalid_approvals"
            )
        if session_state(run, state.peek(run))[0] != "approval_required":
            return new_error(409, "Session is not waiting for an approval", "conflict_error", "no_pending_approvals")
        problem = _approvals_problem(run, responses)
        if problem is not None:
            return new_error(400, problem[0], "invalid_request_error", problem[1])
        _record_approvals(run, responses)
        return Response(_session_body(run, "processing", None, with_messages=False), media_type="application/json")

    return [Route(f"{PREFIX}/sessions/{{session_id}}/approvals", approvals, methods=["POST"])]


def _follow_up_routes(state: EmulatorState) -> list[BaseRoute]:
    """``POST /sessions/{id}/messages``: a new turn of a finished (or idle) session, under the same id."""

    async def follow_up(request: Request) -> Response:
        run = _session_of(state, request)
        if isinstance(run, Response):
            return run
        body = await read_json(request)
        text = body.get("input") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            return new_error(400, "input is required", "invalid_request_error", "invalid_input")
        if not (run.data.get("idle") or _terminal_state(run, state)):
            return new_error(409, "Session is still running", "conflict_error", "session_busy")
        try:
            scenario = start_scenario(state, request, (text,))
        except ScenarioError as exc:
            return new_error(400, str(exc), "invalid_request_error", "invalid_scenario")
        previous: dict[str, Any] = {}
        if not run.data.get("idle"):
            previous = json.loads(_session_body(run, session_state(run, state.peek(run))[0], None))["session"]
        history = previous.get("messages", [])
        turn = state.new_run(
            VENDOR,
            run.owner,
            scenario,
            run_id=run.id,
            data={**run.data, "prompt": strip_directive(text), "idle": False},
        )
        turn.data.pop("approval_rounds", None)
        turn.data.pop("cancelled_via_api", None)
        turn.created_wall = run.created_wall if run.data.get("idle") else time.time()
        turn.cache["message"] = text
        turn.cache["history"] = history
        return Response(_session_body(turn, "processing", None), status_code=202, media_type="application/json")

    return [Route(f"{PREFIX}/sessions/{{session_id}}/messages", follow_up, methods=["POST"])]


def _flow_routes(state: EmulatorState) -> list[BaseRoute]:
    """Flows (legacy): ``POST /start_pipeline``, ``GET /get_pl_run``, ``POST /kill_pipeline``."""

    async def start_pipeline(request: Request) -> Response:
        checked = await _legacy_start(request, SAVED_ITEM_REQUIRED)
        if isinstance(checked, Response):
            return checked
        owner, body = checked
        user_id, project_id = _identity(body)
        if not (user_id or project_id):
            return error_response(400, IDENTITY_REQUIRED)
        saved_item_id = _text(body.get("saved_item_id"))
        if saved_item_id is None:
            return error_response(400, SAVED_ITEM_REQUIRED)
        inputs = body.get("pipeline_inputs", [])
        if not isinstance(inputs, list) or not all(
            isinstance(item, dict) and isinstance(item.get("input_name"), str) and "value" in item for item in inputs
        ):
            return error_response(400, PIPELINE_INPUTS_INVALID)
        if saved_item_id.startswith("missing"):
            return error_response(404, SAVED_ITEM_NOT_FOUND)
        if saved_item_id.startswith("private"):
            return error_response(403, UNAUTHORIZED)
        try:
            scenario = start_scenario(state, request, _strings([item["value"] for item in inputs]))
        except ScenarioError as exc:
            return error_response(400, str(exc))
        if scenario.start_status is not None:
            return _legacy_start_failure(scenario, not_found=SAVED_ITEM_NOT_FOUND)
        run = state.new_run(
            VENDOR,
            owner,
            scenario,
            run_id=_hex(f"{time.time_ns()}:{os.urandom(8).hex()}", 22),
            data={"kind": FLOW, "saved_item_id": saved_item_id, "user_id": user_id, "project_id": project_id},
        )
        run.cache["inputs"] = inputs
        context(request).run_id = run.id
        url = f"https://www.gumloop.com/pipeline?run_id={run.id}&workbook_id={saved_item_id}"
        run.data["url"] = url
        return json_response({"run_id": run.id, "saved_item_id": saved_item_id, "url": url})

    def flow_lookup(owner: str, source: Mapping[str, Any], request: Request) -> EmulatedRun | Response:
        run_id = _text(source.get("run_id"))
        if run_id is None:
            return error_response(400, RUN_ID_REQUIRED)
        context(request).run_id = run_id
        user_id, project_id = _identity(source)
        if not (user_id or project_id):
            return error_response(400, IDENTITY_REQUIRED)
        run = _find(state, run_id, owner, FLOW)
        if run is None:
            return error_response(404, RUN_NOT_FOUND)
        if not _identity_matches(run, user_id, project_id):
            return error_response(403, UNAUTHORIZED)
        return run

    async def get_pl_run(request: Request) -> Response:
        owner = _legacy_auth(request)
        if isinstance(owner, Response):
            return owner
        run = flow_lookup(owner, request.query_params, request)
        if isinstance(run, Response):
            return run
        decision = state.next_poll(run)
        await sleep_for(decision)
        fault = _poll_fault(run, decision, _flow_body(run, "RUNNING"), new_shape=False)
        if fault is not None:
            return fault
        return Response(_flow_body(run, flow_state(run, decision)), media_type="application/json")

    async def kill_pipeline(request: Request) -> Response:
        owner = _legacy_auth(request)
        if isinstance(owner, Response):
            return owner
        body = await read_json(request)
        if not isinstance(body, dict):
            return error_response(400, RUN_ID_REQUIRED)
        run = flow_lookup(owner, body, request)
        if isinstance(run, Response):
            return run
        if _terminal_state(run, state):
            return json_response({"success": False, "run_id": run.id, "error": "Run already finished"})
        state.request_cancel(run, settle_polls=CANCEL_SETTLE_POLLS)
        return json_response({"success": True, "run_id": run.id})

    return [
        Route(f"{PREFIX}/start_pipeline", start_pipeline, methods=["POST"]),
        Route(f"{PREFIX}/get_pl_run", get_pl_run, methods=["GET"]),
        Route(f"{PREFIX}/kill_pipeline", kill_pipeline, methods=["POST"]),
    ]


# -- autonomous sessions: started "from outside" (Slack, the web app, Gumloop's triggers), over time -------------
#: The per-session scenario of an autonomous session when the control call names none: done 5 s after it appears.
AUTONOMOUS_SCENARIO = "seconds=5"
MAX_AUTONOMOUS = 1000


def schedule_autonomous(
    state: EmulatorState,
    agent_id: str,
    *,
    count: int,
    every: float,
    start_in: float = 0.0,
    scenario: Scenario,
    type_: str = "slack",
    name: str = "Support triage",
    trigger_id: str | None = None,
    creator_user_id: str | None = None,
    owner: str | None = None,
) -> list[dict[str, Any]]:
    """Plan ``count`` sessions of ``agent_id`` that appear one every ``every`` seconds from ``start_in`` on,
    each then behaving as ``scenario`` (``seconds=T`` makes them finish on their own). They come into being
    when the agent's sessions are next listed or read (lazily, so no background task is needed), with the
    ``created_at`` they were planned for. ``owner`` (a key fingerprint) None: whoever reads the agent first."""
    now = time.time()
    plans: list[dict[str, Any]] = [
        {
            "id": f"sess_auto_{_hex(f'{now}:{agent_id}:{i}:{os.urandom(4).hex()}')}",
            "agent_id": agent_id,
            "due": now + start_in + i * every,
            "scenario": scenario,
            "type": type_,
            "name": f"{name} #{i + 1}",
            "trigger_id": trigger_id,
            "user": creator_user_id,
            "owner": owner,
        }
        for i in range(count)
    ]
    state.store(VENDOR).setdefault("autonomous", []).extend(plans)
    return [{"id": p["id"], "appears_at": _iso(p["due"])} for p in plans]


def materialize_autonomous(state: EmulatorState, owner: str, agent_id: str) -> None:
    """Create the planned sessions of ``agent_id`` whose time has come, as if someone had started them then."""
    plans: list[dict[str, Any]] = state.store(VENDOR).get("autonomous", [])
    if not plans:
        return
    now_wall, now_mono = time.time(), state.clock.now()
    waiting = []
    for plan in plans:
        if plan["agent_id"] != agent_id or plan["due"] > now_wall or plan["owner"] not in (None, owner):
            waiting.append(plan)
            continue
        run = state.new_run(
            VENDOR,
            owner,
            plan["scenario"],
            run_id=plan["id"],
            data={
                "kind": SESSION,
                "agent_id": agent_id,
                "prompt": plan["name"],
                "metadata": {},
                "user": plan["user"],
                "idle": False,
                "type": plan["type"],
                "trigger_id": plan["trigger_id"],
                "autonomous": True,
            },
        )
        run.created_wall = plan["due"]
        # Planned in real seconds; it has been running since then on the emulator's clock.
        run.created_monotonic = run.started_monotonic = now_mono - (now_wall - plan["due"]) * state.clock.speed
        _Store(state).agent(owner, agent_id)["live"].append(run.id)
    plans[:] = waiting


def _materialize_planned(state: EmulatorState, owner: str, session_id: str) -> None:
    """A read of a planned session by id brings its agent's due sessions into being (as a listing does)."""
    for plan in list(state.store(VENDOR).get("autonomous", [])):
        if plan["id"] == session_id:
            materialize_autonomous(state, owner, plan["agent_id"])
            return


def autonomous_routes(state: EmulatorState, prefix: str) -> list[BaseRoute]:
    """``POST {prefix}/gumloop/agents/{agent_id}/sessions`` (prefix: the control API's): plan autonomous sessions (see
    :func:`schedule_autonomous`). Body: ``count`` (1-1000), ``every`` (s), ``start_in`` (s), ``scenario``
    (each session's, default ``seconds=5``), ``type``, ``name``, ``trigger_id``, ``creator_user_id``,
    ``api_key`` (whose sessions they are; default: whoever reads the agent first)."""

    async def plan(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return error_response(400, 'emulator: body must be a JSON object like {"count": 3, "every": 2}')
        count, every, start_in = body.get("count", 1), body.get("every", 0), body.get("start_in", 0)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_AUTONOMOUS:
            return error_response(400, f"emulator: count must be an integer from 1 to {MAX_AUTONOMOUS}")
        for key, value in (("every", every), ("start_in", start_in)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                return error_response(400, f"emulator: {key} must be a number of seconds >= 0")
        texts = {k: body.get(k) for k in ("type", "name", "trigger_id", "creator_user_id", "api_key", "scenario")}
        if any(value is not None and not isinstance(value, str) for value in texts.values()):
            return error_response(
                400, "emulator: type, name, trigger_id, creator_user_id, api_key and scenario must be strings"
            )
        try:
            scenario = parse_spec(texts["scenario"] or AUTONOMOUS_SCENARIO)
        except ScenarioError as exc:
            return error_response(400, str(exc))
        assert scenario is not None
        planned = schedule_autonomous(
            state,
            request.path_params["agent_id"],
            count=count,
            every=float(every),
            start_in=float(start_in),
            scenario=scenario,
            type_=texts["type"] or "slack",
            name=texts["name"] or "Support triage",
            trigger_id=texts["trigger_id"],
            creator_user_id=texts["creator_user_id"],
            owner=fingerprint(texts["api_key"]) if texts["api_key"] else None,
        )
        return json_response({"sessions": planned})

    return [Route(f"{prefix}/gumloop/agents/{{agent_id}}/sessions", plan, methods=["POST"])]
