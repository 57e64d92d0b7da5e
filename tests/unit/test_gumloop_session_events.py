"""GumloopSessionEventTrigger's bookkeeping against an in-memory Gumloop (a fake client and a fake clock):
no duplicates, no misses, paging only as deep as needed, filters, restarts, shared polls, backoff, stops."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from airflow_provider_runwatch.core.connection import ConnectionSettings
from airflow_provider_runwatch.core.errors import AuthError, NotFoundError, RateLimitedError, ServerError
from airflow_provider_runwatch.core.http import Call
from airflow_provider_runwatch.hooks.gumloop import GumloopHook
from airflow_provider_runwatch.triggers.gumloop import GumloopSessionEventTrigger, SessionListing, SessionWatch
from airflow_provider_runwatch.vendors.gumloop import GUMLOOP
from tests.conftest import SECRET_KEY
from tests.helpers import rehydrate

pytestmark = pytest.mark.anyio
#: The fixture below replaces asyncio.sleep (the trigger's waits); the tests themselves wait for real.
REAL_SLEEP = asyncio.sleep
T0 = 1_800_000_000.0
PAYLOAD_KEYS = {"session_id", "agent_id", "state", "type", "name", "created_at"}


class FakeGumloop:
    """Sessions of one agent, listed newest first in pages with offset cursors, like the real list."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[Exception] = []
        self.settings = ConnectionSettings(GUMLOOP, "gumloop_default", "http://127.0.0.1:9/api/v1", SECRET_KEY, "u1")

    def add(self, sid: str, at: float, state: str = "processing", **extra: Any) -> None:
        self.sessions[sid] = {"id": sid, "agent_id": "agt", "state": state, "created_at": at, "type": "api", **extra}

    def finish(self, *sids: str, state: str = "completed") -> None:
        for sid in sids:
            self.sessions[sid]["state"] = state

    async def call(self, call: Call[Any], retry: Any = None) -> Any:
        request = call.request
        params = dict(request.params or {})
        self.requests.append((request.path, params))
        if self.errors:
            raise self.errors.pop(0)
        if request.path.startswith("/sessions/"):
            sid = request.path.rsplit("/", 1)[1]
            if sid not in self.sessions:
                raise NotFoundError(vendor="Gumloop", endpoint=request.endpoint, status_code=404)
            return call.parse({"session": {**self.sessions[sid], "messages": []}, "queue_position": None})
        items = sorted(self.sessions.values(), key=lambda s: (s["created_at"], s["id"]), reverse=True)
        for name in ("type", "trigger_id", "creator_user_id"):
            if name in params:
                items = [s for s in items if s.get(name) == params[name]]
        offset = int(params.get("cursor", 0))
        size = params["page_size"]
        page = items[offset : offset + size]
        more = offset + size < len(items)
        return call.parse({"sessions": page, "next_cursor": str(offset + size) if more else None})

    def list_requests(self) -> int:
        return sum(1 for path, _ in self.requests if path.endswith("/sessions"))


def listing(**kw: Any) -> SessionListing:
    return SessionListing("gumloop_default", "agt", kw.pop("filters", {}), 1.0, kw.pop("max_pages", 5))


async def poll(
    fake: FakeGumloop, view: SessionWatch, watch: SessionWatch, states: tuple[str, ...] = ("completed",), **kw: Any
) -> list[str]:
    listed = await listing(**kw).poll(fake, view, logging.getLogger("test"), lambda: T0)  # type: ignore[arg-type]
    return [seen.id for seen in watch.apply(listed, states)]


async def test_baseline_ignores_finished_watches_running_and_fires_each_session_once() -> None:
    fake, view, watch = FakeGumloop(), SessionWatch(), SessionWatch()
    fake.add("done_before", T0 - 50, "completed")
    fake.add("running_before", T0 - 40)
    assert await poll(fake, view, watch) == []  # baseline
    fake.add("new_a", T0 + 1)
    fake.add("new_b", T0 + 2, "completed")
    fake.finish("running_before")
    assert await poll(fake, view, watch) == ["running_before", "new_b"]
    fake.finish("new_a")
    assert await poll(fake, view, watch) == ["new_a"]
    for _ in range(3):  # nothing changes: nothing fires again
        assert await poll(fake, view, watch) == []
    assert watch.watching == {}


async def test_no_misses_when_hundreds_finish_between_two_polls_and_paging_stops_at_the_horizon() -> None:
    fake, view, watch = FakeGumloop(), SessionWatch(), SessionWatch()
    for i in range(1000):  # a long history: one page of it is all a poll should read
        fake.add(f"old{i:04}", T0 - 10_000 - i, "completed")
    await poll(fake, view, watch)
    assert fake.list_requests() == 5  # the baseline looks max_pages deep for sessions still running
    before = fake.list_requests()
    await poll(fake, view, watch)
    assert fake.list_requests() - before == 1  # then only as far back as the watermark
    for i in range(250):
        fake.add(f"s{i:03}", T0 + i * 0.1)
    assert await poll(fake, view, watch) == []
    assert len(watch.watching) == 250
    before = fake.list_requests()
    fake.finish(*[f"s{i:03}" for i in range(250)])
    fired = await poll(fake, view, watch)
    assert sorted(fired) == [f"s{i:03}" for i in range(250)] and len(fired) == len(set(fired))
    # 250 watched sessions and the newest old ones: three pages of 100, not ten
    assert fake.list_requests() - before == 3
    before = fake.list_requests()
    assert await poll(fake, view, watch) == []
    assert fake.list_requests() - before == 1


async def test_same_instant_sessions_and_a_late_listed_one_both_fire() -> None:
    fake, view, watch = FakeGumloop(), SessionWatch(), SessionWatch()
    await poll(fake, view, watch)
    fake.add("a", T0, "completed")
    assert await poll(fake, view, watch) == ["a"]
    fake.add("b", T0, "completed")  # same created_at, listed only now
    fake.add("c", T0 - 2, "completed")  # created earlier but visible late (within the tie window)
    assert await poll(fake, view, watch) == ["c", "b"]
    assert await poll(fake, view, watch) == []


async def test_states_filters_and_approval_required_fires_once() -> None:
    fake, view, watch = FakeGumloop(), SessionWatch(), SessionWatch()
    await poll(fake, view, watch, states=("approval_required", "failed"), filters={"type": "slack"})
    fake.add("x", T0 + 1, "approval_required", type="slack")
    fake.add("y", T0 + 2, "completed", type="slack")
    fake.add("z", T0 + 3, "failed", type="slack")
    fake.add("web", T0 + 4, "failed", type="web")
    assert await poll(fake, view, watch, states=("approval_required", "failed"), filters={"type": "slack"}) == [
        "x",
        "z",
    ]
    fake.finish("x", state="failed")
    assert await poll(fake, view, watch, states=("approval_required", "failed"), filters={"type": "slack"}) == []
    assert all(params.get("type") == "slack" and params["sort_order"] == "newest" for _, params in fake.requests)


async def test_watched_sessions_beyond_the_page_bound_are_read_one_by_one() -> None:
    fake, view, watch = FakeGumloop(), SessionWatch(), SessionWatch()
    fake.add("deep", T0 - 100)
    fake.add("gone", T0 - 99)
    await poll(fake, view, watch, max_pages=1)
    for i in range(150):
        fake.add(f"n{i}", T0 + i, "failed")
    fake.finish("deep")
    del fake.sessions["gone"]
    assert await poll(fake, view, watch, max_pages=1) == ["deep"]
    assert [path for path, _ in fake.requests[-2:]] == ["/sessions/deep", "/sessions/gone"]
    assert watch.watching == {} and view.watching == {}


class FakeStore:
    """The asset state store's async accessor (``aget``/``aset``) over a dict, JSON round-tripped."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(self.data[key]) if key in self.data else default

    async def aset(self, key: str, value: Any) -> None:
        self.data[key] = json.dumps(value)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeGumloop:
    """The trigger's hook hands out the fake client; sleeps are recorded and yield at once."""
    fake = FakeGumloop()
    fake.sleeps = []  # type: ignore[attr-defined]

    @asynccontextmanager
    async def client(self: Any) -> AsyncIterator[FakeGumloop]:
        yield fake

    async def sleep(delay: float) -> None:
        fake.sleeps.append(delay)  # type: ignore[attr-defined]
        await REAL_SLEEP(0.001)

    monkeypatch.setattr(GumloopHook, "async_client", client)  # the class the trigger module imports
    monkeypatch.setattr(asyncio, "sleep", sleep)  # the module the trigger module imports
    return fake


async def take(gen: AsyncIterator[Any], n: int, timeout: float = 5) -> list[Any]:
    out: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await anext(gen))
    return out


def make(**kw: Any) -> GumloopSessionEventTrigger:
    return GumloopSessionEventTrigger(agent_id="agt", poll_interval=1, **kw)


async def test_restart_from_serialized_kwargs_with_the_state_store_neither_repeats_nor_misses(
    fake: FakeGumloop,
) -> None:
    store = FakeStore()
    trigger = make(type="slack")
    trigger.asset_state_store = store  # type: ignore[assignment]
    fake.add("r1", T0 - 5, type="slack")
    fake.add("r2", T0 - 4, type="slack")
    fired: list[dict[str, Any]] = []

    async def triggerer(t: GumloopSessionEventTrigger) -> None:
        """Like the triggerer's run_trigger: take every event and ask for the next one at once."""
        async for event in t.run():
            fired.append(event.payload)

    task = asyncio.ensure_future(triggerer(trigger))
    await REAL_SLEEP(0.05)  # the baseline poll happened
    fake.finish("r1")
    await REAL_SLEEP(0.05)
    assert [p["session_id"] for p in fired] == ["r1"] and set(fired[0]) == PAYLOAD_KEYS
    task.cancel()  # the triggerer stops
    saved = json.loads(store.data[trigger.state_key])
    assert list(saved["watching"]) == ["r2"]
    # While it is down: r2 finishes, a new session starts and finishes.
    fake.finish("r2")
    fake.add("r3", T0 + 10, "completed", type="slack")
    again = rehydrate(trigger)
    assert again.state_key == trigger.state_key
    again.asset_state_store = store
    task = asyncio.ensure_future(triggerer(again))
    await REAL_SLEEP(0.1)
    assert [p["session_id"] for p in fired] == ["r1", "r2", "r3"]  # r1 not again
    task.cancel()
    # Without a store (Airflow 3.1/3.2) a restart starts from a fresh baseline: nothing repeats.
    fresh = rehydrate(trigger)
    assert fresh.asset_state_store is None
    gen = fresh.run()
    pending = asyncio.ensure_future(anext(gen))
    await REAL_SLEEP(0.05)
    assert not pending.done()
    pending.cancel()


async def test_kwargs_carry_no_secret_and_bad_arguments_fail_at_parse_time() -> None:
    trigger = make(states=["failed", "completed"], search="triage")
    _, kwargs = trigger.serialize()
    assert SECRET_KEY not in json.dumps(kwargs)
    assert kwargs["states"] == ["completed", "failed"]
    filtered = make(trigger_id="trg_42")
    key = filtered.shared_stream_key()
    filtered.trigger_id = 7  # the triggerer sets its row id here: the Gumloop filter must not change
    assert filtered.serialize()[1]["trigger_id"] == "trg_42" and filtered.shared_stream_key() == key
    assert filtered.listing().filters["trigger_id"] == "trg_42"
    with pytest.raises(Exception, match="poll_interval must be at least 1"):
        GumloopSessionEventTrigger(agent_id="agt", poll_interval=0.1)
    with pytest.raises(Exception, match="states must name"):
        GumloopSessionEventTrigger(agent_id="agt", states=[])
    with pytest.raises(Exception, match="needs agent_id"):
        GumloopSessionEventTrigger(agent_id=" ")


async def test_shared_stream_one_poll_fans_out_to_siblings_with_their_own_states(fake: FakeGumloop) -> None:
    done, failed = make(states="completed"), make(states=["failed"])
    assert done.shared_stream_key() == failed.shared_stream_key()
    assert make(type="web").shared_stream_key() != done.shared_stream_key()
    _, kwargs = done.serialize()
    raw = GumloopSessionEventTrigger.open_shared_stream(kwargs)
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(), asyncio.Queue()]

    async def fan_out() -> None:
        async for item in raw:
            for queue in queues:
                queue.put_nowait(item)

    async def feed(queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
        while True:
            yield await queue.get()

    pump = asyncio.ensure_future(fan_out())
    fake.add("s1", T0 + 1)
    fake.add("s2", T0 + 2)
    a, b = done.filter_shared_stream(feed(queues[0])), failed.filter_shared_stream(feed(queues[1]))
    got_a, got_b = asyncio.ensure_future(anext(a)), asyncio.ensure_future(anext(b))
    await REAL_SLEEP(0.05)
    fake.finish("s1")
    fake.finish("s2", state="failed")
    assert (await got_a).payload["session_id"] == "s1"
    assert (await got_b).payload["session_id"] == "s2"
    pump.cancel()
    polls_per_round = fake.list_requests() / max(1, len(fake.sleeps))  # type: ignore[attr-defined]
    assert polls_per_round <= 1.0  # one list request per poll for both watchers


async def test_429_and_5xx_back_off_through_the_poller_then_polling_resumes(
    fake: FakeGumloop, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.errors = [
        RateLimitedError(vendor="Gumloop", endpoint="GET /agents/{agent_id}/sessions", status_code=429, retry_after=30),
        ServerError(vendor="Gumloop", endpoint="GET /agents/{agent_id}/sessions", status_code=503),
    ]
    trigger = make()
    gen = trigger.run()
    pending = asyncio.ensure_future(anext(gen))
    await REAL_SLEEP(0.05)
    fake.add("late", T0 + 100, "completed")
    assert (await pending).payload["session_id"] == "late"
    sleeps = fake.sleeps  # type: ignore[attr-defined]
    assert 30 <= sleeps[0] <= 30.3, sleeps  # Retry-After wins
    assert sleeps[1] >= 1.0  # at least the poll interval
    assert "Gumloop agent agt: Gumloop GET /agents/{agent_id}/sessions: rate limited (HTTP 429); failure 1/" in (
        capsys.readouterr().out
    )
    await gen.aclose()


@pytest.mark.parametrize(
    "error",
    [
        AuthError(vendor="Gumloop", endpoint="GET /agents/{agent_id}/sessions", status_code=401, detail="bad key"),
        NotFoundError(
            vendor="Gumloop", endpoint="GET /agents/{agent_id}/sessions", status_code=404, detail="Agent not found"
        ),
    ],
)
async def test_auth_error_or_missing_agent_stops_with_one_line(
    fake: FakeGumloop, capsys: pytest.CaptureFixture[str], error: Exception
) -> None:
    fake.errors = [error]
    gen = make().run()
    pending = asyncio.ensure_future(anext(gen))
    await REAL_SLEEP(0.1)
    assert not pending.done()  # parked: no event, no restart loop
    assert len(fake.requests) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "stopped" in line]
    assert len(lines) == 1 and "error" in lines[0], lines
    assert "agent agt stopped" in lines[0] and str(error) in lines[0] and "'gumloop_default'" in lines[0]
    pending.cancel()
