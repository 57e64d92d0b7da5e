"""(b) One trigger running in two triggerers at once (AIP-40 allows it briefly: apache/airflow#27057), for every
run kind, at trigger level against the emulator: two instances rebuilt from the same serialized kwargs, as two
triggerers would, run side by side on one run.

What must hold, from the emulator's request log and the events: neither instance starts anything (only GETs),
both yield the same single success event with the run's answer (Airflow keeps the first event and drops the
second, so a second one must not say anything else), and a user's mark-failed, which reaches ``on_kill`` of
both instances, leaves the run cancelled without an error from either.

Not on the deployment: making Airflow's triggerers double-run a trigger needs a race this suite cannot force
without patching Airflow; the trigger's side of it is what the provider controls, and it is all here.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from airflow_provider_runwatch.core.cancels import CancelClaims
from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks import base as base_hooks
from airflow_provider_runwatch.triggers.base import RunTrigger
from tests.helpers import KINDS, RunKind, cancel_requests, first_event, gloriamundo_key_env, rehydrate

pytestmark = pytest.mark.distributed

CANCELLABLE = [kind for kind in KINDS if kind.can_cancel]


@pytest.fixture(autouse=True)
def connections(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in gloriamundo_key_env(runwatch_emulator, f"duplicate_{uuid.uuid4().hex[:8]}").items():
        monkeypatch.setenv(name, value)


def twins(kind: RunKind, run_id: str) -> tuple[RunTrigger, RunTrigger]:
    """The same trigger as two triggerers build it from the database row."""
    original = kind.trigger_class(conn_id=kind.conn_id, run_id=run_id, poll_interval=0.2, deadline=None)
    return rehydrate(original), rehydrate(original)


def sent(emulator: EmulatorServer, run_id: str) -> list[str]:
    return [e["method"] for e in emulator.requests(run_id=run_id)]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_two_instances_of_one_trigger_yield_the_same_single_answer(
    runwatch_emulator: EmulatorServer, kind: RunKind
) -> None:
    run_id = kind.start("Twice watched [emulator: polls=3]")
    started = sent(runwatch_emulator, run_id)
    first, second = twins(kind, run_id)
    events: list[dict[str, Any]] = list(await asyncio.gather(first_event(first), first_event(second)))
    assert events[0]["status"] == "success", events[0]
    assert events[0] == events[1]
    assert events[0]["run_id"] == run_id
    # Both only read: no second start, no cancel.
    assert sent(runwatch_emulator, run_id)[len(started) :] == ["GET"] * (
        len(sent(runwatch_emulator, run_id)) - len(started)
    )


@pytest.mark.anyio
@pytest.mark.parametrize("kind", CANCELLABLE, ids=str)
async def test_mark_failed_reaching_both_instances_cancels_without_error(
    runwatch_emulator: EmulatorServer, kind: RunKind, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = kind.start("Never ends, watched twice [emulator: polls=never]")
    first, second = twins(kind, run_id)
    runs = [asyncio.ensure_future(first_event(t)) for t in (first, second)]
    for _ in range(200):  # until both instances have polled the run
        if len(runwatch_emulator.requests(method="GET", run_id=run_id)) >= 2:
            break
        await asyncio.sleep(0.05)
    # What Airflow does on a user's mark-failed in each triggerer that holds the trigger: cancel, then on_kill.
    for task in runs:
        task.cancel()
    await asyncio.gather(first.on_kill(), second.on_kill())
    assert cancel_requests(runwatch_emulator, run_id), "the vendor was asked to cancel"
    assert not [r for r in caplog.records if r.levelname == "ERROR"], [r.getMessage() for r in caplog.records]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", CANCELLABLE, ids=str)
async def test_mark_failed_reaching_both_instances_cancels_once(
    runwatch_emulator: EmulatorServer, kind: RunKind
) -> None:
    """Both instances in one triggerer: the second finds the cancel claimed in this process."""
    run_id = kind.start("Never ends, cancelled twice [emulator: polls=never]")
    first, second = twins(kind, run_id)
    await asyncio.gather(first.on_kill(), second.on_kill())
    assert len(cancel_requests(runwatch_emulator, run_id)) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("kind", CANCELLABLE, ids=str)
async def test_the_instance_in_another_triggerer_finds_the_run_cancelled(
    runwatch_emulator: EmulatorServer, kind: RunKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instances in two triggerers share nothing: a kill that comes once the first one's cancel has settled
    reads the run, finds it over, and sends no second cancel (only a GET). Two kills before it settles both
    send one (the vendor says a read right after a cancel may show the old state): a no-op at the vendor."""
    run_id = kind.start("Never ends, cancelled from two processes [emulator: polls=never]")
    first, second = twins(kind, run_id)
    await first.on_kill()
    assert len(cancel_requests(runwatch_emulator, run_id)) == 1
    hook = kind.trigger_class.hook_class(kind.conn_id)
    for _ in range(10):  # the cancel settles a few reads later
        if hook.get_status(kind.trigger_class.adapter, run_id).state.terminal:
            break
    before = len(runwatch_emulator.requests(run_id=run_id))
    monkeypatch.setattr(base_hooks, "CLAIMS", CancelClaims())  # the second triggerer's own (empty) claims
    await second.on_kill()
    assert len(cancel_requests(runwatch_emulator, run_id)) == 1
    assert [r["method"] for r in runwatch_emulator.requests(run_id=run_id)[before:]] == ["GET"]
