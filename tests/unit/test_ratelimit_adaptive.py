"""Adaptive per-key budgets: uncoordinated processes sharing one vendor limit converge on it.

A discrete-event simulation on a fake clock: three clients (three triggerer/worker processes), each with its own
budget of the connection's 50 polls per window, poll as fast as their budget lets them against one simulated
vendor that allows 60 per sliding window per key (the emulator's own window log) and answers the rest with 429
and the seconds until a slot frees (``Retry-After``). Each client runs ``queue`` runs at once, each holding a
reservation of its process's budget, as a triggerer with many runs of one key does: after a 429 the refused run
waits ``Retry-After`` (the polling core honours it), the process's adaptive budget cuts its rate and holds every
slot until then, and a run whose reservation falls inside that hold takes a new one after it.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import threading
import time

import pytest

from airflow_provider_runwatch.core.ratelimit import BACKOFF, BudgetSpec, KeyBudget, SlidingWindowBudget
from airflow_provider_runwatch.emulator.gloriamundo import _Window

VENDOR_LIMIT = 60
WINDOW = 60.0
CLIENT_LIMIT = 50  # the connection's polls_per_minute default, in each process


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def simulate(
    adaptive: bool, clients: int = 3, windows: int = 40, start: float = 1000.0, queue: int = 1
) -> tuple[list[int], list[int], list[SlidingWindowBudget]]:
    """(accepted, refused) per client over ``windows`` windows, and the clients' budgets."""
    clock = FakeClock(start)
    vendor = _Window()
    budgets = [
        SlidingWindowBudget(BudgetSpec(CLIENT_LIMIT, WINDOW, smooth=True, adaptive=adaptive, holds=adaptive), clock)
        for _ in range(clients)
    ]
    accepted, refused = [0] * clients, [0] * clients
    # (slot, client, the bucket's hold count when the slot was reserved)
    events = [(budgets[i].reserve(), i, budgets[i].holds) for i in range(clients) for _ in range(queue)]
    heapq.heapify(events)
    end = start + windows * WINDOW
    while events:
        when, i, holds = heapq.heappop(events)
        if when >= end:
            break
        clock.now = when
        budget = budgets[i]
        if budget.held_over(when, holds):  # a hold began after this slot was reserved: take one after it
            budget.release(when)
            heapq.heappush(events, (budget.reserve(), i, budget.holds))
            continue
        wait = vendor.take(when, VENDOR_LIMIT, WINDOW)
        if wait is None:
            accepted[i] += 1
            heapq.heappush(events, (budget.reserve(), i, budget.holds))
            continue
        refused[i] += 1
        retry_after = max(1, math.ceil(wait))
        budget.throttled(retry_after)
        clock.now = when + retry_after  # this run waits Retry-After, then takes the next slot of the budget
        heapq.heappush(events, (budget.reserve(), i, budget.holds))
        clock.now = when
    return accepted, refused, budgets


def refused_share(accepted: list[int], refused: list[int]) -> float:
    return sum(refused) / (sum(accepted) + sum(refused))


def test_fixed_budgets_of_three_processes_overrun_the_key() -> None:
    """The baseline: 3 x 50 per window against 60. Honouring Retry-After keeps the accepted rate at the limit,
    but every process keeps probing at its own 50: about 8 % of the polls are refused."""
    accepted, refused, _ = simulate(adaptive=False, windows=60)
    assert refused_share(accepted, refused) > 0.05


def test_adaptive_budgets_converge_on_the_key_limit() -> None:
    accepted, refused, budgets = simulate(adaptive=True, windows=60)
    baseline = refused_share(*simulate(adaptive=False, windows=60)[:2])
    assert refused_share(accepted, refused) <= min(0.02, baseline / 4), (accepted, refused)
    # The key's limit is used, not wasted: at least 80 % of 60 per window over the run.
    assert sum(accepted) >= 0.8 * VENDOR_LIMIT * 60
    # And shared fairly: no process gets less than half of another's share.
    assert min(accepted) >= 0.5 * max(accepted), accepted
    # Converged: the sum of the rates sits around the vendor's limit.
    total_rate = sum(b.rate() for b in budgets)
    assert 0.5 * VENDOR_LIMIT <= total_rate <= 1.3 * VENDOR_LIMIT, total_rate


@pytest.mark.parametrize("clients", [2, 3])
def test_many_runs_per_process_converge_without_a_burst_of_429s(clients: int) -> None:
    """A triggerer holds one reservation per run of the key (here 20): without the hold on a 429 those all go
    out into the vendor's full window (6.7 % of polls refused with two processes; 40 in the first window)."""
    accepted, refused, _ = simulate(adaptive=True, clients=clients, windows=15, queue=20)
    baseline = refused_share(*simulate(adaptive=False, clients=clients, windows=15, queue=20)[:2])
    assert refused_share(accepted, refused) <= min(0.02, baseline / 4), (accepted, refused, baseline)
    assert sum(accepted) >= 0.8 * VENDOR_LIMIT * 15


def test_a_429_with_retry_after_holds_the_bucket_until_then() -> None:
    clock = FakeClock()
    budget = SlidingWindowBudget(BudgetSpec(60, 60.0, adaptive=True, holds=True), clock)
    before = budget.holds
    reserved = budget.reserve(), budget.reserve()  # now and 1 s later
    budget.throttled(retry_after=5)
    assert budget.reserve() >= clock.now + 5
    assert budget.held_over(reserved[1], before), "reserved before the hold, inside it: taken again"
    assert not budget.held_over(clock.now + 6, before), "after the hold: kept"
    assert not budget.held_over(reserved[1], budget.holds), "reserved after the hold began: kept"
    budget.throttled(retry_after=3600)
    assert budget.held_until == clock.now + 60.0, "a hold lasts at most one window"


@pytest.mark.parametrize("spec", [BudgetSpec(60, 60.0, holds=True), BudgetSpec(10, 60.0, smooth=False, adaptive=True)])
def test_fixed_buckets_and_start_buckets_do_not_hold(spec: BudgetSpec) -> None:
    clock = FakeClock()
    budget = SlidingWindowBudget(spec, clock)
    budget.throttled(retry_after=5)
    assert budget.holds == 0 and budget.reserve() == clock.now


@pytest.mark.anyio
async def test_a_waiter_whose_slot_a_hold_falls_over_waits_for_the_hold() -> None:
    key = KeyBudget("gloriamundo", "http://x", "f" * 16, {"poll": BudgetSpec(10, 1.0, adaptive=True, holds=True)})
    assert await key.acquire("poll")  # now; the next slot is 0.1 s later
    waiter = asyncio.ensure_future(key.acquire("poll"))
    await asyncio.sleep(0)  # it has reserved its slot and sleeps
    held_at = time.monotonic()
    key.throttled("poll", retry_after=0.4)
    assert await waiter
    assert time.monotonic() - held_at >= 0.39
    assert key.buckets["poll"].granted == 2, "its first slot was given back"


@pytest.mark.anyio
async def test_a_hold_longer_than_the_wait_may_take_ends_it_without_a_slot() -> None:
    key = KeyBudget("gloriamundo", "http://x", "f" * 16, {"poll": BudgetSpec(10, 1.0, adaptive=True, holds=True)})
    assert await key.acquire("poll")
    waiter = asyncio.ensure_future(key.acquire("poll", within=0.3))
    await asyncio.sleep(0)
    key.throttled("poll", retry_after=0.8)
    assert await waiter is False, "no slot before its bound: it must not wait for the hold and send"
    assert key.buckets["poll"].granted == 1, "its first slot was given back, none taken after"


def test_a_blocking_waiter_honours_the_hold_too() -> None:
    key = KeyBudget("gloriamundo", "http://x", "f" * 16, {"poll": BudgetSpec(10, 1.0, adaptive=True, holds=True)})
    assert key.acquire_blocking("poll")
    timer = threading.Timer(0.05, key.throttled, args=("poll", 0.4))
    timer.start()
    began = time.monotonic()
    assert key.acquire_blocking("poll")  # reserved 0.1 s ahead; the hold begins while it sleeps
    timer.join()
    assert time.monotonic() - began >= 0.4


def test_one_adaptive_process_alone_recovers_to_its_limit() -> None:
    clock = FakeClock()
    budget = SlidingWindowBudget(BudgetSpec(50, 60.0, adaptive=True), clock)
    budget.throttled()
    assert budget.rate() == pytest.approx(50 * BACKOFF)
    budget.throttled()  # the same overshoot: no second cut
    assert budget.rate() == pytest.approx(50 * BACKOFF) and budget.cuts == 1
    clock.now += 60.0 * 100
    assert budget.rate() == 50.0


def test_a_cut_spaces_the_next_slots_wider() -> None:
    clock = FakeClock()
    budget = SlidingWindowBudget(BudgetSpec(60, 60.0, adaptive=True), clock)
    first = budget.reserve()
    assert budget.reserve() - first == pytest.approx(1.0)
    budget.throttled()
    gap = budget.reserve() - (first + 1.0)
    assert gap == pytest.approx(60.0 / (60 * BACKOFF), rel=1e-3)


def test_fixed_buckets_ignore_429s_but_count_them() -> None:
    clock = FakeClock()
    budget = SlidingWindowBudget(BudgetSpec(60, 60.0), clock)
    budget.throttled()
    assert budget.rate() == 60.0 and budget.throttles == 1 and budget.cuts == 0


def test_key_budget_routes_429s_to_their_bucket() -> None:
    key = KeyBudget(
        "gloriamundo",
        "http://x",
        "f" * 16,
        {"poll": BudgetSpec(60, adaptive=True), "execute": BudgetSpec(10, smooth=False, adaptive=True)},
    )
    key.throttled("poll")
    key.throttled("unknown")  # not limited, nothing to slow down
    assert key.buckets["poll"].cuts == 1 and key.buckets["execute"].cuts == 0
