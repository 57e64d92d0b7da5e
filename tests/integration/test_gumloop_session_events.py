"""GumloopSessionEventTrigger over real HTTP against the emulator: sessions started "from outside" (planned
through the emulator's control API) appear and finish on their own; each finished one fires exactly once."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.triggers.gumloop import GumloopSessionEventTrigger
from tests.conftest import SECRET_KEY
from tests.helpers import rehydrate

pytestmark = pytest.mark.anyio


async def first_poll(emulator: EmulatorServer, agent_id: str) -> None:
    """Wait (up to 10 s) until the watcher's baseline listing reached the emulator."""
    for _ in range(200):
        if emulator.requests(path_prefix=f"/api/v1/agents/{agent_id}/sessions"):
            return
        await asyncio.sleep(0.05)


async def collect(
    trigger: GumloopSessionEventTrigger, seconds: float, emulator: EmulatorServer | None = None
) -> list[dict[str, Any]]:
    """Drive ``run()`` like the triggerer for ``seconds`` after its baseline poll (seen in the emulator's
    request log when ``emulator`` is given): every event's payload."""
    fired: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in trigger.run():
            fired.append(event.payload)

    task = asyncio.ensure_future(consume())
    if emulator is not None:
        await first_poll(emulator, trigger.agent_id)
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return fired


async def test_each_finished_session_fires_once_with_its_ids(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    agent = f"agt_events_{time.time_ns()}"
    # Running before the watcher starts, finishing after: it counts.
    early = runwatch_emulator.schedule_sessions(agent, 1, scenario="polls=never", type="slack")
    trigger = rehydrate(GumloopSessionEventTrigger(agent_id=agent, poll_interval=1, type="slack"))
    emu = runwatch_emulator
    task = asyncio.ensure_future(collect(trigger, 5, emu))
    await first_poll(emu, agent)
    emu.complete(early[0])
    later = emu.schedule_sessions(agent, 4, every=0.3, scenario="seconds=1", type="slack")
    failed = emu.schedule_sessions(agent, 2, every=0.3, scenario="seconds=1 outcome=failed", type="slack")
    web = emu.schedule_sessions(agent, 1, scenario="seconds=1", type="web")
    fired = await task
    assert sorted(p["session_id"] for p in fired) == sorted(early + later), fired
    assert len(fired) == len(early + later)  # each once; no failed one, no web one
    assert all(p["state"] == "completed" and p["type"] == "slack" and p["agent_id"] == agent for p in fired)
    assert SECRET_KEY not in json.dumps(fired)
    assert not set(failed + web) & {p["session_id"] for p in fired}
    lists = runwatch_emulator.requests(vendor="gumloop", method="GET", path_prefix=f"/api/v1/agents/{agent}/sessions")
    assert lists and all(r["query"]["type"] == "slack" and r["query"]["sort_order"] == "newest" for r in lists)
    assert len(lists) <= 7  # one request per poll: ~6 polls in 6 s, no paging for a short list


async def test_several_states_fire_and_a_missing_agent_stops_quietly(
    secret_connections: dict[str, str], runwatch_emulator: EmulatorServer
) -> None:
    agent = f"agt_events_{time.time_ns()}"
    failed = runwatch_emulator.schedule_sessions(agent, 2, start_in=1.5, scenario="seconds=0.5 outcome=failed")
    trigger = GumloopSessionEventTrigger(agent_id=agent, poll_interval=1, states=["failed", "completed"])
    fired = await collect(trigger, 3, runwatch_emulator)
    assert sorted(p["session_id"] for p in fired) == sorted(failed)
    missing = GumloopSessionEventTrigger(agent_id="missing_agent", poll_interval=1)
    assert await collect(missing, 2, runwatch_emulator) == []
    polls = runwatch_emulator.requests(path_prefix="/api/v1/agents/missing_agent/sessions")
    assert len(polls) == 1 and polls[0]["status"] == 404
