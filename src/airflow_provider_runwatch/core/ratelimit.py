"""Per-key request budgets shared by every client of one process (GloriaMundo: 60 status polls and 10
executions per minute per user, shared by every run of that key).

One :class:`KeyBudget` exists per (API base URL, API key) in a process; every hook, trigger and sensor
using that key draws from it, so a triggerer running 500 deferred tasks of one key polls at the key's
budget, not 500 times the advised interval. It implements
:class:`~airflow_provider_runwatch.core.http.Limiter`: the HTTP clients call it before every attempt of a
request whose ``bucket`` is set.

How it works: each bucket is a *reservation schedule*. ``acquire`` takes the next free slot under a
``threading.Lock`` held for a few arithmetic operations (never across an ``await`` or any I/O), then
waits for that slot on its own: ``asyncio.sleep`` in a coroutine, ``time.sleep`` in a thread. Hence:

- FIFO fairness: slots are handed out in call order, so every run waiting to poll gets the next one in
  turn; a run that just polled queues behind the others.
- No asyncio primitive is shared, so nothing is bound to one event loop: the triggerer's loop, the
  loop ``dag.test()`` creates per inline trigger, several loops in tests, and worker threads all draw from
  the same schedule (the vendor counts per key, whatever the loop). Other keys have other schedules and
  never wait on this one.
- A slot is granted only when (a) it is at least ``window / limit`` after the previous slot (``smooth``
  buckets: polls are spread evenly) and (b) the ``limit``-th most recent slot is at least ``window`` ago.
  (b) alone is an exact sliding-window log: no interval of ``window`` seconds ever holds more than
  ``limit`` slots, unlike a token bucket, whose burst capacity plus refill can exceed the limit within
  a sliding minute. (a) keeps polls from bunching; non-smooth buckets (executions) may burst up to the
  limit.
- A waiter cancelled before its slot gives the slot back when it is the newest one.
- A wait is bounded: ``acquire(bucket, within)`` takes a slot only if it comes within ``within`` seconds (the
  time the request has left: its total limit, or less when a wait's deadline is nearer). When the next free
  slot comes later, the caller takes none (nobody queues behind a slot that is never used), waits out its
  ``within`` seconds and hears ``False``: the request failed for want of time, as if the vendor had not
  answered in time, and a wait then ends at its deadline with the timeout outcome.

Across processes (two triggerers, several workers on one key) each process keeps its own schedule, so their
sum can exceed the vendor's limit. An ``adaptive`` bucket closes that gap without any shared service, as the AWS
SDKs' "adaptive" retry mode does: the HTTP path reports each 429 (:meth:`KeyBudget.throttled`), the bucket cuts
its own rate multiplicatively (x ``BACKOFF``, at most once per ``window / 10`` so one burst of 429s counts
once), then recovers linearly by ``RECOVERY`` of the limit per window up to the configured limit (additive
increase, multiplicative decrease: uncoordinated clients converge on a fair share of the key's limit, with
a few 429s each time their sum probes above it). On a bucket that ``holds`` (polls), a 429 that says when to
come back (``Retry-After``) also holds the whole bucket until then: the vendor's window is full for the key,
not for one run, and a triggerer with many runs of the key has many slots already reserved for the next
seconds. Without the hold those all go out into the full window and come back 429 (simulated, two processes
with 20 reservations each: 6.7 % of all polls refused, 40 of them in the first window; 0.8 % with the hold).
With it, a reservation that falls inside a hold begun after it was made is given back and taken again after
the hold.

Keys are identified by a short SHA-256 fingerprint; the key itself is never stored here, so it cannot
reach a ``repr`` or a log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import overload

log = logging.getLogger(__name__)

Clock = Callable[[], float]

#: The window every documented per-minute limit is counted over.
DEFAULT_WINDOW_SECONDS = 60.0
#: Adaptive buckets: the rate after a 429 is this fraction of the rate before it.
BACKOFF = 0.7
#: Adaptive buckets: after a cut, the rate grows back by this fraction of the limit per window. The mean rate of
#: an additive-increase/multiplicative-decrease sawtooth does not depend on it, only how often the processes'
#: sum probes above the key's limit (a burst of 429s each time) and how fast a process takes over a share another
#: one left. 0.02 probed every ~8 windows: the distributed drill's two triggerers then refused 1.2-2.1 % of
#: their polls, over the 2 % target once in CI. 0.01 probes every ~17 windows (simulated, three processes: 0.77 %
#: of polls refused against 1.18 %, 86 % of the limit used against 84 %); a share left free (a triggerer gone) is
#: taken over in about 50 windows instead of 25.
RECOVERY = 0.01
#: Adaptive buckets: the rate never drops below this fraction of the limit (nor below 1 per window).
FLOOR = 0.05
#: Adaptive buckets: 429s within this fraction of a window after a cut are the same overshoot (no second cut).
HOLD = 0.1


def key_fingerprint(api_key: str) -> str:
    """A short, stable, non-reversible name for an API key (16 hex digits of its SHA-256)."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True)
class BudgetSpec:
    """``limit`` requests in any ``window`` seconds; ``smooth`` spaces them ``window / limit`` apart;
    ``adaptive`` lowers the rate on 429s and recovers slowly (other processes share the key); ``holds`` (adaptive
    only) also holds every slot until a 429's ``Retry-After``.

    Polls hold; starts do not: a refused start is already waited out by start admission, on a timer within
    ``start_timeout``, and a hold would move that wait into a sleep of the worker, past ``start_timeout``."""

    limit: int
    window: float = DEFAULT_WINDOW_SECONDS
    smooth: bool = True
    adaptive: bool = False
    holds: bool = False

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"a rate budget needs a limit >= 1, got {self.limit}")
        if not self.window > 0:
            raise ValueError(f"a rate budget needs a positive window, got {self.window}")

    @property
    def spacing(self) -> float:
        """Minimum gap between two slots (0 for bursty buckets)."""
        return self.window / self.limit if self.smooth else 0.0


class SlidingWindowBudget:
    """One bucket's reservation schedule. Thread-safe; pure arithmetic under its lock.

    ``reserve()`` returns the monotonic time of the caller's slot; the caller waits until then. Slots
    are non-decreasing in call order (FIFO), at least ``spec.spacing`` apart, and no half-open interval
    of ``spec.window`` seconds contains more than ``spec.limit`` of them.
    """

    def __init__(self, spec: BudgetSpec, clock: Clock = time.monotonic) -> None:
        self.spec = spec
        self.clock = clock
        self._lock = threading.Lock()
        # Slots that may still matter: reserved in the last window, or still in the future.
        self._slots: deque[float] = deque()
        self.granted = 0
        # Adaptive state: the rate (per window) right after the last cut, and when that was.
        self._cut_rate = float(spec.limit)
        self._cut_at: float | None = None
        self.throttles = 0
        self.cuts = 0
        #: Adaptive: no slot before this (monotonic) time, a 429's ``Retry-After`` for the key.
        self.held_until = 0.0
        #: Holds begun so far: a reservation made before the latest one is checked again (:meth:`held_over`).
        self.holds = 0

    def __repr__(self) -> str:
        return (
            f"SlidingWindowBudget(limit={self.spec.limit}, window={self.spec.window:g}s, smooth={self.spec.smooth}"
            f"{', adaptive' if self.spec.adaptive else ''})"
        )

    def _rate_at(self, now: float) -> float:
        """Requests per window allowed at ``now`` (the limit, or less after a recent 429)."""
        spec = self.spec
        if not spec.adaptive or self._cut_at is None:
            return float(spec.limit)
        grown = self._cut_rate + RECOVERY * spec.limit * max(0.0, now - self._cut_at) / spec.window
        return min(float(spec.limit), grown)

    def rate(self) -> float:
        """The current allowed rate, requests per window."""
        with self._lock:
            return self._rate_at(self.clock())

    def throttled(self, retry_after: float | None = None) -> None:
        """The vendor refused a request of this bucket with 429: cut the rate and, when the vendor said when to
        come back, hold every slot until then (at most one window), adaptive buckets only."""
        with self._lock:
            self.throttles += 1
            spec = self.spec
            if not spec.adaptive:
                return
            now = self.clock()
            if spec.holds and retry_after is not None and retry_after > 0:
                until = now + min(retry_after, spec.window)
                if until > self.held_until:
                    self.held_until = until
                    self.holds += 1
            if self._cut_at is not None and now - self._cut_at < HOLD * spec.window:
                return  # the same overshoot: its other 429s were already in flight
            floor = max(1.0, FLOOR * spec.limit)
            self._cut_rate = max(floor, BACKOFF * self._rate_at(now))
            self._cut_at = now
            self.cuts += 1

    def configure(self, spec: BudgetSpec) -> None:
        """Change the limit or window in place; reservations already made keep counting."""
        with self._lock:
            self.spec = spec

    @overload
    def reserve(self, not_after: None = None) -> float: ...

    @overload
    def reserve(self, not_after: float) -> float | None: ...

    def reserve(self, not_after: float | None = None) -> float | None:
        """Take the next free slot and return its (monotonic) time; it may be now. ``None`` (no slot taken)
        when that slot would come after ``not_after``."""
        with self._lock:
            slot = self._next_slot(self.clock())
            if not_after is not None and slot > not_after:
                return None
            self._slots.append(slot)
            self.granted += 1
            return slot

    def next_slot(self) -> float:
        """The (monotonic) time the next :meth:`reserve` would get, without taking it: how long a caller that
        would rather not wait here (a batch that can defer) has to wait."""
        with self._lock:
            return self._next_slot(self.clock())

    def _next_slot(self, now: float) -> float:
        """The next free slot at ``now`` (under the lock); drops slots that no longer count."""
        spec, slots = self.spec, self._slots
        while slots and slots[0] <= now - spec.window:
            slots.popleft()  # can never share a window with a slot at or after ``now``
        limit, spacing = spec.limit, spec.spacing
        if spec.adaptive and self._cut_at is not None:
            rate = self._rate_at(now)
            limit = max(1, int(rate))
            spacing = spec.window / rate if spec.smooth else 0.0
        slot = max(now, self.held_until)
        if slots:
            slot = max(slot, slots[-1] + spacing)
            if len(slots) >= limit:
                slot = max(slot, slots[-limit] + spec.window)
        return slot

    def held_over(self, slot: float, holds: int) -> bool:
        """Whether ``slot``, reserved when :attr:`holds` was ``holds``, falls inside a hold begun since: its
        waiter gives it back and takes a new one instead of sending into the vendor's full window."""
        return self.holds != holds and slot < self.held_until

    def release(self, slot: float) -> None:
        """Give back a slot that was never used (its waiter was cancelled, or a hold fell over it).

        Removing any slot keeps the schedule valid (a subset of a valid schedule is valid); the newest one,
        the common case, also frees time for the next caller.
        """
        with self._lock:
            if self._slots and self._slots[-1] == slot:
                self._slots.pop()
            else:
                try:
                    self._slots.remove(slot)
                except ValueError:
                    return  # no longer counted (older than a window)
            self.granted -= 1

    def queued(self) -> int:
        """Slots reserved in the future (waiters not yet released)."""
        now = self.clock()
        with self._lock:
            return sum(1 for slot in self._slots if slot > now)


class KeyBudget:
    """All buckets of one API key at one base URL; implements the HTTP clients' ``Limiter`` protocol.

    An unknown bucket name is not limited (logged once at debug level).
    """

    def __init__(
        self,
        vendor: str,
        base_url: str,
        fingerprint: str,
        specs: Mapping[str, BudgetSpec],
        clock: Clock = time.monotonic,
    ) -> None:
        self.vendor = vendor
        self.base_url = base_url
        self.fingerprint = fingerprint
        self.clock = clock
        self._lock = threading.Lock()
        self.buckets: dict[str, SlidingWindowBudget] = {
            name: SlidingWindowBudget(spec, clock) for name, spec in specs.items()
        }

    def __repr__(self) -> str:
        specs = ", ".join(f"{name}={b.spec.limit}/{b.spec.window:g}s" for name, b in self.buckets.items())
        return f"KeyBudget({self.vendor} {self.base_url} key {self.fingerprint}: {specs})"

    def configure(self, specs: Mapping[str, BudgetSpec]) -> None:
        """Apply the newest connection settings; buckets keep their reservations."""
        with self._lock:
            for name, spec in specs.items():
                bucket = self.buckets.get(name)
                if bucket is None:
                    self.buckets[name] = SlidingWindowBudget(spec, self.clock)
                elif bucket.spec != spec:
                    log.info("%r: bucket %s now %s/%gs", self, name, spec.limit, spec.window)
                    bucket.configure(spec)

    def _reserve(
        self, bucket: str, within: float | None = None
    ) -> tuple[SlidingWindowBudget | None, _Ticket | None, float]:
        """The bucket, the caller's ticket (``None``: no slot within ``within`` seconds) and the delay until
        its slot."""
        budget = self.buckets.get(bucket)
        if budget is None:
            log.debug("%r: no bucket %r; not limited", self, bucket)
            return None, None, 0.0
        now = budget.clock()
        not_after = None if within is None else now + within
        ticket = _Ticket.take(budget, not_after)
        if ticket is None:
            log.debug("%r: no %s slot within %.2fs (%d queued)", self, bucket, within, budget.queued())
            return budget, None, within or 0.0
        delay = ticket.slot - now
        if delay > 0 and log.isEnabledFor(logging.DEBUG):
            log.debug("%r: %s slot in %.2fs (%d queued)", self, bucket, delay, budget.queued())
        return budget, ticket, delay

    def wait_before(self, bucket: str) -> float:
        """Seconds a request of ``bucket`` would wait now for its slot (0 for a bucket not limited); no slot
        is taken."""
        budget = self.buckets.get(bucket)
        if budget is None:
            return 0.0
        return max(0.0, budget.next_slot() - budget.clock())

    def throttled(self, bucket: str, retry_after: float | None = None) -> None:
        """The vendor answered a request of ``bucket`` with 429, ``retry_after`` its hint in seconds (an
        adaptive bucket slows down, and holds until then)."""
        budget = self.buckets.get(bucket)
        if budget is not None:
            budget.throttled(retry_after)
            log.debug("%r: %s throttled, rate now %.1f/%gs", self, bucket, budget.rate(), budget.spec.window)

    async def acquire(self, bucket: str, within: float | None = None) -> bool:
        """Wait (without blocking the event loop) until this caller's slot in ``bucket``: ``True``. ``False``
        after ``within`` seconds when no slot comes that soon (none is taken)."""
        budget, ticket, delay = self._reserve(bucket, within)
        if budget is None:
            return True
        while True:
            try:
                if delay > 0:
                    await asyncio.sleep(delay)
            except asyncio.CancelledError:
                if ticket is not None:
                    budget.release(ticket.slot)
                raise
            if ticket is None or not budget.held_over(ticket.slot, ticket.holds):
                return ticket is not None
            ticket, delay = ticket.again(budget)

    def acquire_blocking(self, bucket: str, within: float | None = None) -> bool:
        """Block this thread until its slot in ``bucket`` (workers, sensors' poke, sync hooks): ``True``.
        ``False`` after ``within`` seconds when no slot comes that soon (none is taken)."""
        budget, ticket, delay = self._reserve(bucket, within)
        if budget is None:
            return True
        while True:
            if delay > 0:
                time.sleep(delay)
            if ticket is None or not budget.held_over(ticket.slot, ticket.holds):
                return ticket is not None
            ticket, delay = ticket.again(budget)


@dataclass(frozen=True)
class _Ticket:
    """A reserved slot, the bucket's hold count when it was reserved, and the latest time a slot may come."""

    slot: float
    holds: int
    not_after: float | None

    @classmethod
    def take(cls, budget: SlidingWindowBudget, not_after: float | None) -> _Ticket | None:
        holds = budget.holds  # read first: a hold begun in between leaves this slot after it anyway
        slot = budget.reserve(not_after)
        return None if slot is None else cls(slot, holds, not_after)

    def again(self, budget: SlidingWindowBudget) -> tuple[_Ticket | None, float]:
        """A hold fell over this slot: give it back, take the next one after the hold (within the same
        bound); the delay until it, or until the bound when there is none that soon."""
        budget.release(self.slot)
        now = budget.clock()
        ticket = _Ticket.take(budget, self.not_after)
        if ticket is None:
            return None, max(0.0, (self.not_after or now) - now)
        return ticket, ticket.slot - now


_REGISTRY: dict[tuple[str, str, str], KeyBudget] = {}
_REGISTRY_LOCK = threading.Lock()


def budget_for(vendor: str, base_url: str, api_key: str, specs: Mapping[str, BudgetSpec]) -> KeyBudget:
    """The process-wide budget of ``api_key`` at ``base_url``, created on first use.

    Two connections holding the same key share one budget (the vendor counts per key); the most recent
    ``specs`` apply to it.
    """
    fingerprint = key_fingerprint(api_key)
    registry_key = (vendor, base_url.rstrip("/"), fingerprint)
    with _REGISTRY_LOCK:
        budget = _REGISTRY.get(registry_key)
        if budget is None:
            budget = _REGISTRY[registry_key] = KeyBudget(vendor, registry_key[1], fingerprint, specs)
            return budget
    budget.configure(specs)
    return budget


def clear_budgets() -> None:
    """Forget every budget of this process (tests)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()
