"""What every trigger class does about its run's lifecycle, driven like the triggerer drives it against the
emulator (no Airflow database): the deadline survives a re-creation from serialized kwargs, ``on_kill``
cancels where the vendor can or says once, with the run id, that it cannot, ``cancel_on_kill=False`` does
nothing, and ``on_kill`` never raises and is bounded in time.

The same test for each of the five run kinds (tests.helpers.KINDS); vendor-specific behaviour (sessions
that settle after a cancel, flows ending TERMINATED) stays in the per-vendor trigger tests.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks import base as hooks_base
from airflow_provider_runwatch.triggers.base import RunTrigger
from tests.conftest import SECRET_KEY
from tests.helpers import KINDS, RunKind, cancel_requests, first_event, gloriamundo_key_env, plain, rehydrate

pytestmark = pytest.mark.anyio

CANCELLABLE = [kind for kind in KINDS if kind.can_cancel]


@pytest.fixture(autouse=True)
def connections(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default connections; GloriaMundo with a key of its own (its limits are per key)."""
    for name, value in gloriamundo_key_env(runwatch_emulator, f"lifecycle_{uuid.uuid4().hex[:8]}").items():
        monkeypatch.setenv(name, value)


def trigger(kind: RunKind, run_id: str, **kw: Any) -> RunTrigger:
    return kind.trigger_class(conn_id=kw.pop("conn_id", kind.conn_id), run_id=run_id, poll_interval=0.2, **kw)


#: Non-default values of every base kwarg, so a kwarg lost in serialize() or rebuilt wrong shows.
ROUND_TRIP_KWARGS: dict[str, Any] = {
    "deadline": 1_900_000_000.5,
    "max_consecutive_failures": 7,
    "stop_on_paused": False,
    "cancel_on_kill": False,
}


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_round_trip_keeps_every_kwarg_and_no_secret(kind: RunKind, secret_connections: dict[str, str]) -> None:
    """What the triggerer stores (serialize, encrypted) rebuilds the same trigger, and holds no key."""
    original = trigger(kind, "run_round_trip", **ROUND_TRIP_KWARGS)
    classpath, kwargs = original.serialize()
    assert {key: kwargs[key] for key in ROUND_TRIP_KWARGS} == ROUND_TRIP_KWARGS
    again = rehydrate(original)
    assert type(again) is kind.trigger_class
    assert again.serialize() == (classpath, kwargs)
    stored = json.dumps(kwargs)
    assert SECRET_KEY not in stored and all(key not in stored for key in secret_connections.values())


def everything_sent_about(emulator: EmulatorServer, run_id: str) -> list[tuple[str, str]]:
    return [(e["method"], e["path"]) for e in emulator.requests(run_id=run_id)]


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_deadline_survives_recreation_from_serialized_kwargs(
    kind: RunKind, runwatch_emulator: EmulatorServer
) -> None:
    rehydrate(trigger(kind, run_id="warm_up"))  # the first round trip imports Airflow's crypto: not timed here
    run_id = kind.start("never ends [emulator: polls=never]")
    deadline = time.time() + 2.5
    first = trigger(kind, run_id, deadline=deadline)
    waiting = asyncio.ensure_future(anext(first.run()))
    await asyncio.sleep(1.5)
    assert not waiting.done()
    assert runwatch_emulator.requests(method="GET", run_id=run_id), "the first trigger was polling"
    waiting.cancel()  # the triggerer dies ...
    with pytest.raises(asyncio.CancelledError):
        await waiting
    second = rehydrate(first)  # ... and a new one rebuilds the trigger from its kwargs
    assert second.deadline == pytest.approx(deadline)
    event = await first_event(second)
    fired = time.time()
    assert (event["status"], event["run_id"]) == ("timeout", run_id)
    assert str(event["message"]).startswith("deadline passed while the run was still going")
    # A fresh timeout counted from the re-creation would fire 1.5 s after the original deadline.
    assert deadline <= fired < deadline + 1.0


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_on_kill_cancels_where_the_vendor_can_else_says_so_once(
    kind: RunKind, runwatch_emulator: EmulatorServer, capfd: pytest.CaptureFixture[str]
) -> None:
    run_id = kind.start("keep going [emulator: polls=never]")
    capfd.readouterr()
    await trigger(kind, run_id).on_kill()
    out = plain(capfd.readouterr().out)
    noun = kind.trigger_class.adapter.noun
    if kind.can_cancel:
        assert [c["status"] for c in cancel_requests(runwatch_emulator, run_id)] == [200]
        assert runwatch_emulator.run(run_id)["cancel_requested_at"] is not None
        assert f"Asked Gumloop to cancel {noun} {run_id}" in out
    else:
        assert [m for m, _ in everything_sent_about(runwatch_emulator, run_id)] == ["POST"], "only the start"
        assert out.count(f"{noun} {run_id} keeps running") == 1
        assert "has no API to cancel" in out


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_cancel_on_kill_false_leaves_the_run_alone(
    kind: RunKind, runwatch_emulator: EmulatorServer, capfd: pytest.CaptureFixture[str]
) -> None:
    run_id = kind.start("keep going [emulator: polls=never]")
    sent = everything_sent_about(runwatch_emulator, run_id)
    capfd.readouterr()
    killed = rehydrate(trigger(kind, run_id, cancel_on_kill=False))  # the option travels in the kwargs
    await killed.on_kill()
    out = plain(capfd.readouterr().out)
    assert everything_sent_about(runwatch_emulator, run_id) == sent, "nothing sent"
    assert runwatch_emulator.run(run_id)["cancel_requested_at"] is None
    assert f"cancel_on_kill is off: {kind.trigger_class.adapter.noun} {run_id} keeps running" in out
    assert "has no API to cancel" not in out


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_on_kill_never_raises(kind: RunKind, capfd: pytest.CaptureFixture[str]) -> None:
    """A connection that cannot be read (deleted since the task deferred): a log line, not a traceback."""
    await trigger(kind, "run_gone_0123456789", conn_id="no_such_connection").on_kill()
    out = plain(capfd.readouterr().out)
    if kind.can_cancel:
        assert f"Could not cancel Gumloop {kind.trigger_class.adapter.noun} run_gone_0123456789" in out
        assert "no_such_connection" in out
    else:  # nothing to ask the vendor: the usual warning, connection or not
        assert "has no API to cancel" in out and "run_gone_0123456789 keeps running" in out


@pytest.fixture
def silent_vendor(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A loopback server that accepts connections and never answers; a Gumloop connection points at it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        conn = {"conn_type": "gumloop", "host": f"http://127.0.0.1:{port}/api/v1", "login": "u", "password": "k"}
        monkeypatch.setenv("AIRFLOW_CONN_GUMLOOP_SILENT", json.dumps(conn))
        yield "gumloop_silent"


def stuck_run_id(kind: RunKind) -> str:
    """An id the silent vendor is asked to cancel (session ids have their own prefix)."""
    return "sess_stuck" if kind.name == "gumloop_session" else "r_stuck"


@pytest.mark.parametrize("kind", CANCELLABLE, ids=str)
async def test_on_kill_is_bounded_in_time(
    kind: RunKind, silent_vendor: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The whole cancel (lookup, attempts, waits) is cut at CANCEL_TIMEOUT_SECONDS, here lowered to 0.5 s."""
    monkeypatch.setattr(hooks_base, "CANCEL_TIMEOUT_SECONDS", 0.5)
    started = time.monotonic()
    await trigger(kind, stuck_run_id(kind), conn_id=silent_vendor).on_kill()
    assert time.monotonic() - started < 5, "the HTTP read timeout (30 s) did not decide"
    assert "TimeoutError" in plain(capfd.readouterr().out)


@pytest.mark.parametrize("kind", CANCELLABLE, ids=str)
def test_blocking_cancel_is_bounded_in_time(
    kind: RunKind, silent_vendor: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The operator's on_kill path (a worker thread, no event loop): the cancel uses a client of its own with
    short timeouts and two attempts, so a vendor that never answers cannot hold up the kill. The read timeout
    is lowered to 0.3 s here; with the shipped 6 s the same arithmetic gives about 15 s."""
    monkeypatch.setattr(hooks_base, "CANCEL_HTTP_TIMEOUT", httpx.Timeout(0.3, connect=0.3))
    run_id = stuck_run_id(kind)
    hook = kind.trigger_class.hook_class(silent_vendor)
    started = time.monotonic()
    assert hook.cancel(kind.trigger_class.adapter, run_id) is False
    # two attempts of 0.3 s and one retry wait (at most CANCEL_RETRY.max_delay, 2 s)
    assert time.monotonic() - started < 0.3 * 2 + hooks_base.CANCEL_RETRY.max_delay + 1.5
    out = plain(capfd.readouterr().out)
    assert f"Could not cancel {kind.what} {run_id}" in out, out[-2000:]
    assert "it may still be running" in out


# -- a vendor that trickles or stalls its answers cannot hold a wait past its deadline (issue 14) --------------
HOSTILE = ["polls=never trickle=0.5", "polls=never stall=30", "polls=never trickle_head=0.5"]
HOSTILE_IDS = ["trickle", "stall", "trickle_head"]


@pytest.mark.parametrize("scenario", HOSTILE, ids=HOSTILE_IDS)
@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_a_trickled_or_stalled_poll_ends_at_the_deadline_deferred(kind: RunKind, scenario: str) -> None:
    """The read timeout is the gap between bytes; a poll is bounded as a whole by the time left, so the
    trigger ends with the timeout outcome at its deadline, not when the vendor finishes its answer."""
    run_id = kind.start(f"hostile [emulator: {scenario}]")
    deadline = time.time() + 2.0
    event = await first_event(trigger(kind, run_id, deadline=deadline))
    ended = time.time()
    assert (event["status"], event["run_id"]) == ("timeout", run_id), event
    assert ended < deadline + 2.0, f"ended {ended - deadline:.1f} s past the deadline"


@pytest.mark.parametrize("scenario", HOSTILE, ids=HOSTILE_IDS)
@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_a_trickled_or_stalled_poll_ends_at_the_deadline_blocking(kind: RunKind, scenario: str) -> None:
    """The same on the worker: the blocking wait's polls are bounded by the time left too."""
    from airflow_provider_runwatch.core.polling import Poller, WaitOptions, watch_sync
    from airflow_provider_runwatch.core.retry import NO_RETRY

    run_id = kind.start(f"hostile [emulator: {scenario}]")
    hook, adapter = kind.trigger_class.hook_class(kind.conn_id), kind.trigger_class.adapter
    call = adapter.status_call(hook.settings, run_id)
    deadline = time.time() + 2.0
    poller = Poller(
        adapter.vendor.display_name, run_id, WaitOptions(poll_interval=0.2, deadline=deadline), log=hook.log
    )
    event = watch_sync(poller, lambda: hook.call(call, retry=NO_RETRY, within=poller.time_left()))
    ended = time.time()
    assert (event.status, event.run_id) == ("timeout", run_id), event
    assert ended < deadline + 2.0, f"ended {ended - deadline:.1f} s past the deadline"
