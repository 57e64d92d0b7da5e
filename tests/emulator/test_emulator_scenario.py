"""Scenario directive parsing and the poll-counting rules (no server needed)."""

from __future__ import annotations

import time

import pytest

from airflow_provider_runwatch.emulator.scenario import (
    DEFAULT_ERROR,
    Scenario,
    ScenarioError,
    find_directive,
    parse_scenario,
    parse_spec,
    strip_directive,
)
from airflow_provider_runwatch.emulator.state import EmulatorState, RequestContext


def test_no_directive_means_none() -> None:
    assert parse_scenario(None) is None
    assert parse_scenario("") is None
    assert parse_scenario("   ") is None
    assert parse_scenario("Summarise Acme Corp") is None
    assert parse_scenario("x=1 please", allow_bare=True) is None  # free text is not a bare spec
    assert parse_scenario("polls=3", allow_bare=False) is None  # bodies only honour the bracketed form


def test_directive_anywhere_in_text() -> None:
    sc = parse_scenario("Summarise [emulator: polls=3 outcome=failed] Acme Corp please")
    assert sc == Scenario(polls=3, outcome="failed")


def test_bare_spec_and_bracketed_spec() -> None:
    assert parse_scenario("polls=1 queued=1") == Scenario(polls=1, queued=1)
    assert parse_spec("polls=1, queued=1; outcome=cancelled") == Scenario(polls=1, queued=1, outcome="cancelled")
    assert parse_spec("[emulator: polls=0]") == Scenario(polls=0)
    assert parse_spec("") is None
    assert parse_spec(None) is None


def test_quoted_values_case_and_dashes() -> None:
    sc = parse_scenario(
        """go [Emulator: OUTCOME=failed error="tool 'x' broke: disk full]" Unknown-State='thinking hard'] now"""
    )
    assert sc is not None
    assert sc.outcome == "failed"
    assert sc.error == "tool 'x' broke: disk full]"
    assert sc.unknown_state == "thinking hard"


def test_all_keys_parse() -> None:
    sc = parse_spec(
        "polls=never seconds=1.5 queued=2 outcome=paused error=boom unknown_state=thinking http5xx=1 "
        "status5xx=502 rate_limit=2 retry_after=3 malformed=1 slow=0.25 big_messages=1.5 start_status=429"
    )
    assert sc == Scenario(
        polls=None,
        seconds=1.5,
        queued=2,
        outcome="paused",
        error="boom",
        unknown_state="thinking",
        http5xx=1,
        status5xx=502,
        rate_limit=2,
        retry_after=3,
        malformed=1,
        slow=0.25,
        big_messages=1.5,
        start_status=429,
    )
    assert parse_spec("retry_after_date=4").retry_after_date == 4.0  # type: ignore[union-attr]
    assert parse_spec("trickle=0.5 stall=3 trickle_head=0.25") == Scenario(trickle=0.5, stall=3.0, trickle_head=0.25)
    assert Scenario().error == DEFAULT_ERROR


def test_unknown_key_message_is_exact() -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario("hi [emulator: polls=1 x=1]")
    assert str(exc.value) == "emulator: unknown scenario key 'x'"


@pytest.mark.parametrize(
    "spec",
    [
        "polls=abc",
        "polls=-1",
        "seconds=soon",
        "seconds=nan",
        "outcome=done",
        "status5xx=404",
        "start_status=200",
        "slow=-1",
        "big_messages=100000",
        "retry_after=2 retry_after_date=2",
        "unknown_state=''",
        "polls",
        "polls=",
        "=3",
    ],
)
def test_bad_values_are_loud(spec: str) -> None:
    with pytest.raises(ScenarioError, match=r"^emulator: "):
        parse_spec(spec)


@pytest.mark.parametrize("text", ["hi [emulator: polls=1", "hi [emulator: error='unterminated]", "[emulator: !]"])
def test_malformed_directive_is_loud(text: str) -> None:
    with pytest.raises(ScenarioError, match=r"^emulator: "):
        parse_scenario(text)


def test_strip_directive_and_find() -> None:
    text = "Summarise  [emulator: polls=3 error='a ] b']  Acme Corp"
    found = find_directive(text)
    assert found is not None
    start, end, pairs = found
    assert text[start:end] == "[emulator: polls=3 error='a ] b']"
    assert pairs == [("polls", "3"), ("error", "a ] b")]
    assert strip_directive(text) == "Summarise Acme Corp"
    assert strip_directive("no directive here") == "no directive here"


def test_to_spec_round_trips() -> None:
    sc = Scenario(polls=None, outcome="failed", error="it's broken, badly", unknown_state="x y", slow=0.5)
    assert parse_spec(sc.to_spec()) == sc
    assert Scenario().to_spec() == ""
    assert Scenario(polls=None).to_dict()["polls"] == "never"


def _kinds(state: EmulatorState, scenario: Scenario, count: int) -> list[str]:
    run = state.new_run("test", "owner", scenario)
    out = []
    for _ in range(count):
        d = state.next_poll(run)
        out.append(d.kind if d.kind != "terminal" else f"terminal:{d.outcome}")
    return out


def test_poll_counting_rules() -> None:
    state = EmulatorState()
    assert _kinds(state, Scenario(), 4) == ["running", "running", "terminal:succeeded", "terminal:succeeded"]
    assert _kinds(state, Scenario(polls=0), 2) == ["terminal:succeeded"] * 2
    assert _kinds(state, Scenario(polls=3, queued=2), 4) == ["queued", "queued", "running", "terminal:succeeded"]
    assert _kinds(state, Scenario(polls=None), 5) == ["running"] * 5
    assert _kinds(state, Scenario(http5xx=1, rate_limit=2, malformed=1, polls=1, outcome="failed"), 6) == [
        "http5xx",
        "rate_limit",
        "rate_limit",
        "malformed",
        "running",
        "terminal:failed",
    ]


def test_queue_position_counts_down_and_cancel_settles() -> None:
    state = EmulatorState()
    run = state.new_run("test", "owner", Scenario(polls=None, queued=3))
    assert [state.next_poll(run).queue_position for _ in range(4)] == [3, 2, 1, None]
    state.request_cancel(run, settle_polls=1)
    assert state.next_poll(run).kind == "running"
    d = state.next_poll(run)
    assert (d.kind, d.outcome) == ("terminal", "cancelled")


def test_seconds_and_forced_outcome() -> None:
    state = EmulatorState()
    run = state.new_run("test", "owner", Scenario(seconds=0.15, polls=0))
    assert state.next_poll(run).kind == "running"
    time.sleep(0.16)
    assert state.next_poll(run).is_terminal
    forced = state.new_run("test", "owner", Scenario(polls=None, http5xx=5))
    state.force_outcome(forced, "cancelled")
    d = state.next_poll(forced)
    assert (d.kind, d.outcome) == ("terminal", "cancelled")


def test_default_scenario_and_log_bound() -> None:
    state = EmulatorState(default_scenario=Scenario(polls=7), log_maxlen=3)
    assert state.new_run("test", "owner", None).scenario.polls == 7
    assert state.new_run("test", "owner", Scenario(polls=1)).scenario.polls == 1
    for i in range(5):
        ctx = RequestContext()
        ctx.status = 200 + i
        state.record("GET", "/x", b"api_key=secret-value&a=1", ctx)
    entries = [e.to_dict() for e in state.requests()]
    assert [e["status"] for e in entries] == [202, 203, 204]
    assert entries[0]["query"] == {"api_key": "[redacted]", "a": "1"}
    state.reset()
    assert state.default_scenario is None
    assert not state.runs
    assert not state.log
