"""The pure Gumloop approvals <-> Airflow request mapping (vendors/gumloop_approvals.py), both ways."""

from __future__ import annotations

import pytest

from airflow_provider_runwatch.core.errors import ConfigurationError
from airflow_provider_runwatch.vendors.gumloop_approvals import (
    ApprovalError,
    PendingApproval,
    answer_actions,
    approval_responses,
    build_request,
    check_default,
    parse_pending,
    rejected_calls,
    responder_name,
    round_record,
)

PENDING = [
    {"action_request_id": "act_1", "tool_name": "send_email", "args": {"to": "a@example.com"}, "description": "Mail"},
    {"id": "act_2", "toolName": "update_crm", "arguments": {"stage": "won"}, "reason": "Deal closed"},
    {"action_request_id": "act_3", "name": "post_slack"},
]


def test_pending_approvals_are_read_in_every_spelling_gumloop_uses() -> None:
    items = parse_pending(PENDING)
    assert items == [
        PendingApproval("act_1", "send_email", {"to": "a@example.com"}, "Mail"),
        PendingApproval("act_2", "update_crm", {"stage": "won"}, "Deal closed"),
        PendingApproval("act_3", "post_slack", None, None),
    ]
    with pytest.raises(ApprovalError, match="pending approval 0 has no action_request_id"):
        parse_pending([{"tool_name": "send_email"}])
    with pytest.raises(ApprovalError, match="pending approval 0 is not an object"):
        parse_pending(["act_1"])


def test_the_request_lists_each_tool_call_with_its_arguments_and_reason() -> None:
    request = build_request("sess_1", parse_pending(PENDING), "reject", 2)
    assert request.subject == "Gumloop agent asks to run send_email, update_crm, post_slack"
    assert (request.options, request.defaults) == (["Accept", "Reject"], ["Reject"])
    body = request.body
    assert "Gumloop session `sess_1` paused for approval (round 2): the agent wants to run 3 tool calls" in body
    assert '1. **send_email** (`act_1`)\n   - reason: Mail\n   - arguments: `{"to": "a@example.com"}`' in body
    assert "3. **post_slack** (`act_3`)\n" in body and "Without an answer before the timeout: **reject**" in body
    assert build_request("sess_1", parse_pending(PENDING[:1]), "accept", 1).defaults == ["Accept"]
    with pytest.raises(ApprovalError, match="lists no pending approvals"):
        build_request("sess_1", [], "reject", 1)


def test_long_arguments_are_cut_in_the_request_only() -> None:
    item = PendingApproval("act_1", "write", {"text": "x" * 5000}, None)
    body = build_request("sess_1", [item], "reject", 1).body
    assert len(body) < 3000 and "...[truncated]`" in body
    assert round_record(
        round_number=1, session_id="s", items=[item], actions=["accept"], asked_at=None, answered_at=None,
        answered_by=None, timed_out=True, gumloop_state=None,
    )["asked"][0]["arguments"] == {"text": "x" * 5000}  # fmt: skip


def test_the_answer_becomes_the_approvals_body() -> None:
    items = parse_pending(PENDING[:2])
    assert answer_actions(["Accept"], items) == ["accept", "accept"]
    assert approval_responses(items, answer_actions(["Reject"], items)) == [
        {"action_request_id": "act_1", "action": "reject"},
        {"action_request_id": "act_2", "action": "reject"},
    ]
    for bad in ([], ["Accept", "Reject"], ["Maybe"]):
        with pytest.raises(ApprovalError, match="exactly one of"):
            answer_actions(bad, items)
    with pytest.raises(ApprovalError, match="2 pending approvals but 1 answers"):
        approval_responses(items, ["accept"])


def test_the_round_record_and_what_names_a_rejection() -> None:
    items = parse_pending(PENDING[:2])
    record = round_record(
        round_number=1,
        session_id="sess_1",
        items=items,
        actions=["accept", "reject"],
        asked_at="2026-12-01T16:00:00+00:00",
        answered_at="2026-12-01T16:01:00+00:00",
        answered_by={"id": "alice", "name": "Alice"},
        timed_out=False,
        gumloop_state="processing",
    )
    assert record["answer"][1] == {"action_request_id": "act_2", "tool": "update_crm", "action": "reject"}
    assert rejected_calls([record]) == ["update_crm (act_2)"]
    assert responder_name(record["answered_by"], False) == "Alice (id alice)"
    assert responder_name({"id": "admin", "name": "admin"}, False) == "admin"
    assert responder_name(None, True) == "the timeout default"


def test_the_default_is_reject_unless_set_and_checked() -> None:
    assert check_default("reject") == "reject" and check_default(" Accept ") == "accept"
    with pytest.raises(ConfigurationError, match="approval_default must be 'accept' or 'reject', got 'yes'"):
        check_default("yes")
