"""Gumloop approvals <-> an Airflow human-in-the-loop request, both ways, without I/O.

A Gumloop session that wants to run a tool needing approval pauses in ``approval_required`` with
``pending_approvals``. This module turns those into what Airflow's Required Actions view shows (subject, a
Markdown body listing each tool call with its arguments and the agent's reason, the options, the default taken
on timeout), turns the human's answer back into the body of ``POST /sessions/{id}/approvals``, and writes the
audit record kept in the ``approvals`` XCom. The Airflow side (opening the request, waiting, resuming) lives in
:mod:`airflow_provider_runwatch.operators.gumloop_approvals`.

Options are ``Accept`` and ``Reject`` and apply to every tool call of the round. They are the same in every
round on purpose: Airflow keeps one request per task instance and, when a later round opens it again, keeps the
options, subject and body it was first given (its execution API only clears the previous answer). Round-specific
options would then offer choices that no longer exist.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from airflow_provider_runwatch.core.errors import ConfigurationError, shorten

Action = Literal["accept", "reject"]
ACTIONS: tuple[Action, ...] = ("accept", "reject")
ACCEPT = "Accept"
REJECT = "Reject"
OPTIONS = [ACCEPT, REJECT]
#: Cap on the JSON of one tool call's arguments in the request body (the XCom record keeps them whole).
MAX_ARGUMENT_CHARS = 2000


class ApprovalError(ValueError):
    """Pending approvals or an answer that cannot be mapped; the text says what is wrong."""


@dataclass(frozen=True)
class PendingApproval:
    """One tool call waiting for a human, in the fields the request shows."""

    action_request_id: str
    tool: str
    arguments: Any
    reason: str | None

    def to_xcom(self) -> dict[str, Any]:
        return {
            "action_request_id": self.action_request_id,
            "tool": self.tool,
            "arguments": self.arguments,
            "reason": self.reason,
        }

    @property
    def label(self) -> str:
        """``send_email (act_1)``: how logs and failure lines name the tool call."""
        return f"{self.tool} ({self.action_request_id})"


def check_default(value: str) -> Action:
    """``approval_default``: what a timeout answers. Reject unless set, so silence never approves a tool."""
    text = str(value).strip().lower()
    if text not in ACTIONS:
        raise ConfigurationError(f"approval_default must be 'accept' or 'reject', got {value!r}")
    return text  # type: ignore[return-value]


def _first(item: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = item.get(key)
        if value not in (None, ""):
            return value
    return None


def parse_pending(pending: Sequence[Any] | None) -> list[PendingApproval]:
    """Gumloop's ``pending_approvals`` as :class:`PendingApproval` s. Field names vary between Gumloop's
    examples (``tool_name``/``toolName``, ``args``/``arguments``/``input``, ``reason``/``description``), so
    the known spellings are tried in order; an item without ``action_request_id`` cannot be answered."""
    items: list[PendingApproval] = []
    for index, raw in enumerate(pending or []):
        if not isinstance(raw, Mapping):
            raise ApprovalError(f"pending approval {index} is not an object: {shorten(repr(raw), 120)}")
        action_id = _first(raw, "action_request_id", "id")
        if not isinstance(action_id, str):
            raise ApprovalError(
                f"pending approval {index} has no action_request_id, so it cannot be answered: "
                f"{shorten(json.dumps(raw, default=str), 200)}"
            )
        tool = _first(raw, "tool_name", "toolName", "name", "tool") or "tool"
        arguments = _first(raw, "args", "arguments", "input", "parameters")
        reason = _first(raw, "reason", "description", "message")
        items.append(PendingApproval(action_id, str(tool), arguments, None if reason is None else str(reason)))
    return items


@dataclass(frozen=True)
class ApprovalRequest:
    """What :func:`airflow.sdk.execution_time.hitl.upsert_hitl_detail` is given."""

    subject: str
    body: str
    options: list[str]
    defaults: list[str]


def build_request(
    session_id: str, items: Sequence[PendingApproval], default: Action, round_number: int
) -> ApprovalRequest:
    """The Required Actions entry for one round of ``items`` (not empty)."""
    if not items:
        raise ApprovalError(f"Gumloop session {session_id} is waiting for an approval but lists no pending approvals")
    noun = "a tool call" if len(items) == 1 else f"{len(items)} tool calls"
    tools = ", ".join(dict.fromkeys(item.tool for item in items))
    subject = f"Gumloop agent asks to run {tools}"
    lines = [
        f"Gumloop session `{session_id}` paused for approval (round {round_number}): the agent wants to run "
        f"{noun}. **{ACCEPT}** lets it run {'it' if len(items) == 1 else 'them all'}, **{REJECT}** refuses "
        f"{'it' if len(items) == 1 else 'them all'}. Without an answer before the timeout: "
        f"**{default}**.",
        "",
    ]
    for number, item in enumerate(items, 1):
        lines.append(f"{number}. **{item.tool}** (`{item.action_request_id}`)")
        if item.reason:
            lines.append(f"   - reason: {shorten(item.reason, 500)}")
        if item.arguments is not None:
            text = shorten(json.dumps(item.arguments, sort_keys=True, default=str), MAX_ARGUMENT_CHARS)
            lines.append(f"   - arguments: `{text}`")
    lines += [
        "",
        "If the agent asks again later in this task, Airflow keeps this text (one request per task instance); "
        "the new tool calls are in the task log and the task's `approvals` XCom.",
    ]
    return ApprovalRequest(subject, "\n".join(lines), list(OPTIONS), [ACCEPT if default == "accept" else REJECT])


def answer_actions(chosen_options: Sequence[str], items: Sequence[PendingApproval]) -> list[Action]:
    """One action per pending approval from the options the human (or the timeout) chose."""
    chosen = list(chosen_options or [])
    if len(chosen) != 1 or chosen[0] not in OPTIONS:
        raise ApprovalError(f"the approval answer must be exactly one of {OPTIONS}, got {chosen!r}")
    action: Action = "accept" if chosen[0] == ACCEPT else "reject"
    return [action for _ in items]


def approval_responses(items: Sequence[PendingApproval], actions: Sequence[Action]) -> list[dict[str, Any]]:
    """The ``approval_responses`` list of ``POST /sessions/{id}/approvals``."""
    if len(items) != len(actions):
        raise ApprovalError(f"{len(items)} pending approvals but {len(actions)} answers")
    return [
        {"action_request_id": item.action_request_id, "action": action}
        for item, action in zip(items, actions, strict=True)
    ]


def round_record(
    *,
    round_number: int,
    session_id: str,
    items: Sequence[PendingApproval],
    actions: Sequence[Action],
    asked_at: str | None,
    answered_at: str | None,
    answered_by: Mapping[str, Any] | None,
    timed_out: bool,
    gumloop_state: str | None,
) -> dict[str, Any]:
    """One entry of the ``approvals`` XCom: what was asked, who answered and when, the answer, and what
    Gumloop made of it (the session state its approvals endpoint answered with)."""
    return {
        "round": round_number,
        "session_id": session_id,
        "asked": [item.to_xcom() for item in items],
        "asked_at": asked_at,
        "answered_by": dict(answered_by) if answered_by else None,
        "answered_at": answered_at,
        "timed_out": timed_out,
        "answer": [
            {"action_request_id": item.action_request_id, "tool": item.tool, "action": action}
            for item, action in zip(items, actions, strict=True)
        ],
        "gumloop_state": gumloop_state,
    }


def rejected_calls(rounds: Sequence[Mapping[str, Any]]) -> list[str]:
    """``send_email (act_1)`` for every tool call answered ``reject`` in ``rounds``, oldest first."""
    return [
        f"{entry.get('tool')} ({entry.get('action_request_id')})"
        for record in rounds
        for entry in record.get("answer", [])
        if entry.get("action") == "reject"
    ]


def responder_name(answered_by: Mapping[str, Any] | None, timed_out: bool) -> str:
    if timed_out or not answered_by:
        return "the timeout default"
    name, ident = answered_by.get("name"), answered_by.get("id")
    return f"{name} (id {ident})" if name and ident and str(name) != str(ident) else str(name or ident)
