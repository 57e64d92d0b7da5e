"""The per-key rate budget: schedule arithmetic on a fake clock, then real waiting on loops and threads."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Sequence

import pytest

from airflow_provider_runwatch.core.ratelimit import (
    BudgetSpec,
    KeyBudget,
    SlidingWindowBudget,
    budget_for,
    clear_budgets,
    key_fingerprint,
)

KEY = "gm_live_RATELIMIT_SECRET_0123456789"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def max_in_window(times: Sequence[float], window: float) -> int:
    """Most slots in any half-open interval (t - window, t] (the emulator's and the vendor's count),
    with a nanosecond of slack for float rounding at the exact boundary."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window + 1e-9:
            start += 1
        best = max(best, end - start + 1)
    return best


# -- the schedule, on a fake clock -----------------------------------------------------------------------


def test_smooth_bucket_spaces_slots_evenly() -> None:
    clock = FakeClock()
    budget = SlidingWindowBudget(BudgetSpec(limit=5, window=60.0), clock)
    assert [budget.reserve() - clock.now for _ in range(6)] == [0, 12, 24, 36, 48, 60]


def test_bursty_bucket_allows_the_limit_at_once_then_waits_for_the_window() -> None:
    clock = FakeClock()
    budget = SlidingWindowBudget(BudgetSpec(limit=3, window=60.0, smooth=False), clock)
    assert [budget.reserve() - clock.now for _ in range(7)] == [0, 0, 0, 60, 60, 60, 120]


def test_idle_time_is_not_banked_as_a_burst() -> None:
    """A token bucket would let an idle key burst its capacity and then refill: more than the limit in
    a sliding minute. Here a slot is due only when the limit-th most recent one is a window old."""
    clock = FakeClock()
    budget = SlidingWindowBudget(BudgetSpec(limit=10, window=60.0, smooth=False), clock)
    slots = [budget.reserve() for _ in range(10)]
    clock.now += 59.0
    slots += [budget.reserve() for _ in range(10)]
    assert max_in_window(slots, 60.0) == 10
    assert min(slots[10:]) == pytest.approx(slots[0] + 60.0)


@pytest.mark.parametrize("smooth", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_no_window_ever_holds_more_than_the_limit(smooth: bool, seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    spec = BudgetSpec(limit=rng.randint(1, 60), window=rng.choice([6.0, 60.0]), smooth=smooth)
    budget = SlidingWindowBudget(spec, clock)
    slots: list[float] = []
    for _ in range(2000):
        clock.now += rng.expovariate(1.0) * spec.window / spec.limit * rng.choice([0.1, 0.5, 2.0])
        slot = budget.reserve()
        assert slot >= clock.now
        assert not slots or slot >= slots[-1], "FIFO: a later caller never gets an earlier slot"
        slots.append(slot)
    assert max_in_window(slots, spec.window) <= spec.limit
    if smooth:
        gaps = [b - a for a, b in itertools.pairwise(slots)]
        assert min(gaps) >= spec.window / spec.limit - 1e-9


def test_a_cancelled_newest_waiter_gives_its_slot_back() -> None:
    clock = FakeClock()
    budget = SlidingWindowBudget(BudgetSpec(limit=60, window=60.0), clock)
    first, second = budget.reserve(), budget.reserve()
    assert second - first == 1.0
    budget.release(second)
    assert budget.reserve() == second
    budget.release(first)  # not the newest: kept, the schedule stays valid
    assert budget.reserve() == second + 1.0


def test_reconfiguring_keeps_past_reservations() -> None:
    clock = FakeClock()
    budget = SlidingWindowBudget(BudgetSpec(limit=60, window=60.0, smooth=False), clock)
    for _ in range(5):
        budget.reserve()
    budget.configure(BudgetSpec(limit=5, window=60.0, smooth=False))
    assert budget.reserve() == clock.now + 60.0


def test_key_budget_buckets_are_independent_and_unknown_buckets_pass() -> None:
    clock = FakeClock()
    budget = KeyBudget(
        "gloriamundo",
        "https://x/api/v1",
        key_fingerprint(KEY),
        {"poll": BudgetSpec(2, 60.0), "execute": BudgetSpec(1, 60.0, smooth=False)},
        clock,
    )
    assert budget._reserve("poll")[2] == 0
    assert budget._reserve("poll")[2] == 30.0
    assert budget._reserve("execute")[2] == 0, "executions do not wait behind polls"
    assert budget._reserve("whatever") == (None, None, 0.0)


def test_registry_shares_per_key_and_never_holds_the_key() -> None:
    clear_budgets()
    specs = {"poll": BudgetSpec(50)}
    one = budget_for("gloriamundo", "https://app.gloriamundo.com/api/v1/", KEY, specs)
    assert budget_for("gloriamundo", "https://app.gloriamundo.com/api/v1", KEY, specs) is one
    assert budget_for("gloriamundo", "https://app.gloriamundo.com/api/v1", KEY + "x", specs) is not one
    assert budget_for("gloriamundo", "http://127.0.0.1:1/api/v1", KEY, specs) is not one
    assert budget_for("gloriamundo", "https://app.gloriamundo.com/api/v1", KEY, {"poll": BudgetSpec(10)}) is one
    assert one.buckets["poll"].spec.limit == 10, "the newest connection settings apply"
    assert KEY not in repr(one) and KEY not in repr(vars(one))
    assert key_fingerprint(KEY) in repr(one)
    clear_budgets()


# -- real waiting ---------------------------------------------------------------------------------------


def _budget(limit: int, window: float, smooth: bool = True) -> KeyBudget:
    return KeyBudget("test", "http://127.0.0.1:1", "f" * 16, {"poll": BudgetSpec(limit, window, smooth)})


@pytest.mark.anyio
async def test_async_waiters_are_spaced_fifo_and_never_block_the_loop() -> None:
    budget = _budget(limit=20, window=1.0)  # one slot per 50 ms
    granted: list[tuple[int, float]] = []
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)

    async def waiter(index: int) -> None:
        await asyncio.sleep(index * 0.001)  # arrive in index order
        await budget.acquire("poll")
        granted.append((index, time.monotonic()))

    probe_task = asyncio.ensure_future(probe())
    started = time.monotonic()
    await asyncio.gather(*(waiter(i) for i in range(30)))
    done.set()
    await probe_task
    assert [index for index, _ in granted] == list(range(30)), "first come, first served"
    times = [t for _, t in granted]
    assert times[-1] - started >= 29 * 0.05 - 0.01
    assert max_in_window(times, 1.0) <= 20 + 1  # +1: wake-up jitter at the window edge
    # A waiter that blocked the loop would add its whole wait (50 ms and more) to every sample.
    lags.sort()
    assert lags[len(lags) // 2] < 0.01 and lags[int(len(lags) * 0.9)] < 0.05, f"loop lag up to {lags[-1] * 1000:.0f} ms"


@pytest.mark.anyio
async def test_another_key_is_not_held_up() -> None:
    busy, idle = _budget(limit=1, window=5.0), _budget(limit=1, window=5.0)
    await busy.acquire("poll")
    queued = asyncio.ensure_future(busy.acquire("poll"))  # waits 5 s
    started = time.monotonic()
    await idle.acquire("poll")
    assert time.monotonic() - started < 0.05
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert busy.buckets["poll"].granted == 1, "the cancelled waiter gave its slot back"


def test_one_schedule_across_event_loops_and_threads() -> None:
    """asyncio.run per trigger (dag.test), a triggerer loop in another thread, worker threads: one budget."""
    budget = _budget(limit=40, window=1.0)  # 25 ms apart
    granted: list[float] = []
    lock = threading.Lock()

    def note() -> None:
        with lock:
            granted.append(time.monotonic())

    async def poller(count: int) -> None:
        for _ in range(count):
            await budget.acquire("poll")
            note()

    def loop_thread() -> None:
        asyncio.run(poller(10))

    def worker_thread() -> None:
        for _ in range(10):
            budget.acquire_blocking("poll")
            note()

    threads = [threading.Thread(target=loop_thread) for _ in range(2)]
    threads += [threading.Thread(target=worker_thread) for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    asyncio.run(poller(10))  # and this thread's own fresh loop
    for thread in threads:
        thread.join()
    assert len(granted) == 50
    granted.sort()
    assert granted[-1] - started >= 49 * 0.025 - 0.01
    gaps = [b - a for a, b in itertools.pairwise(granted)]
    assert sum(gaps) / len(gaps) >= 0.024
    assert max_in_window(granted, 1.0) <= 40 + 1


# -- a budget wait is bounded by the time the request has left (issue 14) ------------------------------------
def test_a_slot_after_not_after_is_not_taken() -> None:
    clock = FakeClock()
    bucket = SlidingWindowBudget(BudgetSpec(limit=2, window=60.0), clock)
    assert bucket.reserve() == 1000.0
    assert bucket.reserve(not_after=1029.0) is None, "the next slot is at 1030 (spacing 30 s)"
    assert bucket.granted == 1 and bucket.queued() == 0, "a refused caller queues nobody behind it"
    assert bucket.reserve(not_after=1030.0) == 1030.0, "a slot exactly at the bound is taken"


@pytest.mark.anyio
async def test_acquire_waits_at_most_within_and_takes_no_slot() -> None:
    budget = _budget(limit=1, window=60.0)
    assert await budget.acquire("poll", within=5.0), "the first slot is now"
    started = time.monotonic()
    assert not await budget.acquire("poll", within=0.3), "the next slot is 60 s away"
    waited = time.monotonic() - started
    assert 0.25 <= waited < 0.6, f"waited {waited:.2f}s: the caller's whole time left, no more"
    assert budget.buckets["poll"].granted == 1
    assert await budget.acquire("other", within=0.0), "an unknown bucket is not limited"


def test_acquire_blocking_waits_at_most_within_and_takes_no_slot() -> None:
    budget = _budget(limit=1, window=60.0)
    assert budget.acquire_blocking("poll", within=5.0)
    started = time.monotonic()
    assert not budget.acquire_blocking("poll", within=0.3)
    waited = time.monotonic() - started
    assert 0.25 <= waited < 0.6, f"waited {waited:.2f}s: the caller's whole time left, no more"
    assert budget.buckets["poll"].granted == 1
    smooth = _budget(limit=20, window=1.0)  # 50 ms apart: a slot within the bound is waited for and taken
    assert smooth.acquire_blocking("poll", within=1.0) and smooth.acquire_blocking("poll", within=1.0)
    assert smooth.buckets["poll"].granted == 2


def test_wait_before_reads_the_next_slot_without_taking_it() -> None:
    now = [100.0]
    budget = KeyBudget("gloriamundo", "https://x", "f", {"execute": BudgetSpec(2, 60.0, smooth=False)}, lambda: now[0])
    assert budget.wait_before("execute") == 0.0
    budget.buckets["execute"].reserve()
    budget.buckets["execute"].reserve()
    assert budget.wait_before("execute") == 60.0, "two in the window: the third waits for the first to leave it"
    assert budget.wait_before("execute") == 60.0, "asking took no slot"
    now[0] = 130.0
    assert budget.wait_before("execute") == 30.0
    assert budget.buckets["execute"].reserve() == 160.0, "the next start still gets the slot that was read"
    assert budget.wait_before("polls") == 0.0, "a bucket the key does not limit"
