"""The proof of the per-key poll budget: 20 concurrent runs of one key on one event loop, against the
emulator's enforced limit, finish with zero 429s; the same runs polled naively (no shared budget, every
2 s) get many. Counted in the emulator's request log.

Time is scaled by 10 on both sides to keep the test fast: the emulator enforces 60 polls per 6-second
sliding window (instead of per minute) and the client budgets 50 per 6 s (``rate_window_seconds=6``), so
every ratio (budget vs limit, poll interval vs window) is the production one. The same measurement at the
real scale is tests/benchmarks/gloriamundo_budget.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_runwatch.core.connection import ConnectionSettings
from airflow_provider_runwatch.core.errors import TransportError
from airflow_provider_runwatch.core.http import ClientOptions
from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks.gloriamundo import GloriaMundoHook
from airflow_provider_runwatch.triggers.gloriamundo import GloriaMundoRunTrigger
from tests.conftest import SECRET_KEY
from tests.helpers import NO_RETRY, first_event

LIMITS = "/_emulator/gloriamundo/limits"
SCALE = 10.0
WINDOW = 60.0 / SCALE
RUNS = 20


class NaiveHook(GloriaMundoHook):
    """Per-run polling with no shared budget: what a provider without one does."""

    def client_options(self, settings: ConnectionSettings) -> ClientOptions:
        options = super().client_options(settings)
        options.limiter = None
        return options


class NaiveTrigger(GloriaMundoRunTrigger):
    hook_class = NaiveHook


@pytest.fixture
def emulator(runwatch_emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    """Executions unlimited (this is about polls), 60 polls per scaled window."""
    with httpx.Client(base_url=runwatch_emulator.url, trust_env=False) as http:
        http.put(LIMITS, json={"window_seconds": WINDOW, "executions": None, "polls": 60}).raise_for_status()
        yield runwatch_emulator
        http.put(LIMITS, json={"window_seconds": 60, "executions": 10, "polls": 60}).raise_for_status()


def connect(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer, conn_id: str, **extra: Any) -> str:
    key = f"{SECRET_KEY}_{uuid.uuid4().hex[:8]}"
    conn = {
        "conn_type": "gloriamundo",
        "host": emulator.gloriamundo_url,
        "password": key,
        "extra": {"rate_window_seconds": WINDOW, "executions_per_minute": 60, **extra},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return key


def start_runs(conn_id: str, count: int, directive: str) -> list[str]:
    hook = GloriaMundoHook(conn_id)
    return [hook.execute_workflow("wf_batch", {"n": f"{i} [emulator: {directive}]"}).run_id for i in range(count)]


def polls_of(emulator: EmulatorServer, run_ids: list[str]) -> list[dict[str, Any]]:
    wanted = set(run_ids)
    return [e for e in emulator.requests(vendor="gloriamundo", method="GET") if e["run_id"] in wanted]


def max_in_window(times: list[float], window: float) -> int:
    ordered, best, start = sorted(times), 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.anyio
async def test_twenty_runs_on_one_key_share_the_budget_with_zero_429s(
    monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer
) -> None:
    connect(monkeypatch, emulator, "gm_budget")
    connect(monkeypatch, emulator, "gm_other_key")
    run_ids = start_runs("gm_budget", RUNS, "polls=3")
    other = start_runs("gm_other_key", 1, "polls=1")[0]

    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.02)
            lags.append(time.perf_counter() - before - 0.02)

    async def timed(coro: Any) -> tuple[dict[str, Any], float]:
        event = await coro
        return event, time.monotonic() - began

    interval = 5.0 / SCALE  # the operator's default 5 s, scaled
    probe_task = asyncio.ensure_future(probe())
    began = time.monotonic()
    batch = asyncio.gather(
        *(
            timed(first_event(GloriaMundoRunTrigger(conn_id="gm_budget", run_id=r, poll_interval=interval)))
            for r in run_ids
        )
    )
    other_event, other_took = await timed(
        first_event(GloriaMundoRunTrigger(conn_id="gm_other_key", run_id=other, poll_interval=interval))
    )
    results = await batch
    elapsed = time.monotonic() - began
    done.set()
    await probe_task

    assert [event["status"] for event, _ in results] == ["success"] * RUNS
    assert other_event["status"] == "success"
    assert other_took < 2.0, f"another key waited {other_took:.1f}s behind this key's queue"

    polls = polls_of(emulator, run_ids)
    statuses = [p["status"] for p in polls]
    assert statuses.count(429) == 0, "the budget kept every poll under the enforced limit"
    assert len(polls) == RUNS * 4, "3 running answers + the completed one per run: no poll wasted"
    busiest = max_in_window([p["ts"] for p in polls], WINDOW)
    # Slots are 50 per window at the client; arrival jitter at the server may add one or two.
    assert busiest <= 52, f"{busiest} polls in one {WINDOW:g}s window; the budget is 50"
    # Fair: every run finished, none starved: the last run finished within ~2 polls' time of the average.
    finish = sorted(took for _, took in results)
    assert finish[-1] - finish[0] < elapsed
    lags.sort()
    assert lags[int(len(lags) * 0.95)] < 0.1, "the event loop was never blocked"
    rate = len(polls) / (max(p["ts"] for p in polls) - min(p["ts"] for p in polls))
    print(
        f"\nbudgeted: {RUNS} runs, {len(polls)} polls in {elapsed:.1f}s, {statuses.count(429)} x 429, "
        f"busiest {WINDOW:g}s window {busiest} polls (= {busiest} per minute unscaled), "
        f"mean {rate * WINDOW:.1f} per window"
    )


@pytest.mark.anyio
async def test_naive_per_run_polling_gets_many_429s(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer) -> None:
    """Two naive clients side by side, each on its own key: the same triggers without the shared budget
    (they still honour Retry-After, so each run takes about one 429 per window), and plain polling of
    each run every 2 s that ignores 429s."""
    key = connect(monkeypatch, emulator, "gm_naive")
    plain_key = connect(monkeypatch, emulator, "gm_plain")
    run_ids = start_runs("gm_naive", RUNS, "polls=3")
    plain_ids = start_runs("gm_plain", RUNS, "polls=3")
    interval = 2.0 / SCALE  # polling each run every 2 s, scaled
    assert key != plain_key

    async def plain(http: httpx.AsyncClient, run_id: str) -> None:
        for _ in range(1000):
            if (await http.get(f"runs/{run_id}/status")).json().get("status") in ("completed", "failed"):
                return
            await asyncio.sleep(interval)

    async with httpx.AsyncClient(
        base_url=emulator.gloriamundo_url + "/", headers={"Authorization": f"Bearer {plain_key}"}, trust_env=False
    ) as http:
        tasks: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(
                first_event(
                    NaiveTrigger(conn_id="gm_naive", run_id=r, poll_interval=interval, max_consecutive_failures=100)
                )
            )
            for r in run_ids
        ]
        tasks += [asyncio.ensure_future(plain(http, r)) for r in plain_ids]
        _, pending = await asyncio.wait(tasks, timeout=WINDOW * 1.5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    triggers = [p["status"] for p in polls_of(emulator, run_ids)]
    plain_polls = [p["status"] for p in polls_of(emulator, plain_ids)]
    print(
        f"\nnaive triggers (no shared budget, poll every 2 s unscaled): {len(triggers)} polls, "
        f"{triggers.count(429)} x 429; plain 2 s polling: {len(plain_polls)} polls, {plain_polls.count(429)} x 429"
    )
    assert triggers.count(429) >= RUNS, "every run hit the limit at least once"
    assert plain_polls.count(429) >= 5 * RUNS


def test_blocking_waits_in_worker_threads_share_the_budget_too(
    monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer
) -> None:
    """Sensors poking and deferrable=False operators in threads of one worker: the same budget."""
    connect(monkeypatch, emulator, "gm_threads", rate_window_seconds=1.0)
    with httpx.Client(base_url=emulator.url, trust_env=False) as http:
        http.put(LIMITS, json={"window_seconds": 1.0}).raise_for_status()
    run_ids = start_runs("gm_threads", 6, "polls=never")
    errors: list[BaseException] = []

    def worker(run_id: str) -> None:
        hook = GloriaMundoHook("gm_threads")
        try:
            for _ in range(12):
                hook.get_run_status(run_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(r,)) for r in run_ids]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    polls = polls_of(emulator, run_ids)
    assert len(polls) == 72 and [p["status"] for p in polls].count(429) == 0
    assert time.monotonic() - began >= 71 / 50 - 0.05, "72 polls at 50 per second take at least 1.4 s"


# -- a budget wait never goes past the wait's deadline, nor a request's total limit (issue 14) ---------------
def spent_poll_budget(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer, conn_id: str) -> str:
    """A run of a key whose poll budget (1 per minute) this process has just spent on it: the next slot is 60 s
    away."""
    connect(monkeypatch, emulator, conn_id, polls_per_minute=1, rate_window_seconds=60)
    hook = GloriaMundoHook(conn_id)
    run_id = hook.execute_workflow("wf_spent", {"n": "[emulator: polls=never]"}).run_id
    hook.get_run_status(run_id)
    return run_id


def assert_ends_at_the_deadline(event: dict[str, Any], run_id: str, deadline: float, ended: float) -> None:
    assert (event["status"], event["run_id"]) == ("timeout", run_id), event
    assert event["message"].startswith("deadline passed while the run was still going"), event
    assert deadline - 0.1 <= ended < deadline + 1.0, f"ended {ended - deadline:+.1f} s from the deadline"


@pytest.mark.anyio
async def test_a_spent_poll_budget_ends_a_deferred_wait_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer
) -> None:
    """The trigger's poll waits for a slot only as long as the wait has left, then the wait times out as if the
    poll had said "still running" (before: it waited the slot out, a minute past the deadline)."""
    run_id = spent_poll_budget(monkeypatch, runwatch_emulator, "gm_spent_deferred")
    deadline = time.time() + 2.0
    event = await first_event(
        GloriaMundoRunTrigger(conn_id="gm_spent_deferred", run_id=run_id, poll_interval=0.2, deadline=deadline)
    )
    assert_ends_at_the_deadline(event, run_id, deadline, time.time())
    assert len(polls_of(runwatch_emulator, [run_id])) == 1, "no poll was sent over the budget"


def test_a_spent_poll_budget_ends_a_blocking_wait_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer
) -> None:
    """The same on the worker (``deferrable=False``): the operator's blocking wait."""
    from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator

    run_id = spent_poll_budget(monkeypatch, runwatch_emulator, "gm_spent_blocking")
    op = GloriaMundoWorkflowOperator(
        task_id="spent", conn_id="gm_spent_blocking", workflow_id="wf_spent", poll_interval=0.2, deferrable=False
    )
    deadline = time.time() + 2.0
    event = op.wait_blocking(run_id, deadline)
    assert_ends_at_the_deadline(event.model_dump(mode="json"), run_id, deadline, time.time())
    assert len(polls_of(runwatch_emulator, [run_id])) == 1, "no poll was sent over the budget"


def test_a_spent_execution_budget_fails_a_start_at_its_total_limit_on_both_clients(
    monkeypatch: pytest.MonkeyPatch, runwatch_emulator: EmulatorServer
) -> None:
    """A start's wait for an execution slot is part of the request, bounded by its total (``http_timeout``):
    a transient failure that sent nothing, so trying again later is safe."""
    limits = {"executions_per_minute": 1, "rate_window_seconds": 60, "http_timeout": {"total": 1}}
    connect(monkeypatch, runwatch_emulator, "gm_spent_exec", **limits)
    hook = GloriaMundoHook("gm_spent_exec", retry=NO_RETRY)
    hook.execute_workflow("wf_spent", {"n": "[emulator: polls=never]"})
    sent = len(runwatch_emulator.requests(vendor="gloriamundo", method="POST"))

    async def start_async() -> object:
        return await GloriaMundoHook("gm_spent_exec", retry=NO_RETRY).aexecute_workflow("wf_spent", {})

    starts: list[Callable[[], object]] = [
        lambda: hook.execute_workflow("wf_spent", {"n": "second"}),
        lambda: asyncio.run(start_async()),
    ]
    for start in starts:
        began = time.monotonic()
        with pytest.raises(TransportError, match="no slot of this key's 'execute' rate budget") as info:
            start()
        took = time.monotonic() - began
        assert info.value.transient and not info.value.reached_server
        assert 0.9 <= took < 2.0, f"the attempt took {took:.1f}s; its total limit is 1 s (the slot is 60 s away)"
    assert len(runwatch_emulator.requests(vendor="gloriamundo", method="POST")) == sent, "nothing was sent"
