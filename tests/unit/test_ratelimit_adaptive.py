"""Adaptive per-key budgets: uncoordinated processes sharing one vendor limit converge on it.

A discrete-event simulation on a fake clock: three clients (three triggerer/worker processes), each with its own
budget of the connection's 50 polls per window, poll as fast as their budget lets them against one simulated
vendor that allows 60 per sliding window per key (the emulator's own window log) and answers the rest with 429
and the seconds until a slot frees, which the client waits (as the polling core honours ``Retry-After``) before
drawing its next slot.
"""

from __future__ import annotations

import heapq
import math

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
    adaptive: bool, clients: int = 3, windows: int = 40, start: float = 1000.0
) -> tuple[list[int], list[int], list[SlidingWindowBudget]]:
    """(accepted, refused) per client over ``windows`` windows, and the clients' budgets."""
    clock = FakeClock(start)
    vendor = _Window()
    budgets = [
        SlidingWindowBudget(BudgetSpec(CLIENT_LIMIT, WINDOW, smooth=True, adaptive=adaptive), clock)
        for _ in range(clients)
    ]
    accepted, refused = [0] * clients, [0] * clients
    events = [(budgets[i].reserve(), i) for i in range(clients)]
    heapq.heapify(events)
    end = start + windows * WINDOW
    while events:
        when, i = heapq.heappop(events)
        if when >= end:
            break
        clock.now = when
        wait = vendor.take(when, VENDOR_LIMIT, WINDOW)
        if wait is None:
            accepted[i] += 1
            heapq.heappush(events, (budgets[i].reserve(), i))
            continue
        refused[i] += 1
        budgets[i].throttled()
        clock.now = when + max(1, math.ceil(wait))  # Retry-After, then the next slot of the budget
        heapq.heappush(events, (budgets[i].reserve(), i))
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
