"""The batch plan, written once for every vendor: which items to start next, when the task should come back
to the worker, and how the batch ends (answers in input order, one summary per item, the failure table).

Pure (no I/O, no clock of its own): the batch operator (on the worker) and the batch trigger (on the
triggerer) ask it, and do the starting, polling and waiting themselves, as :mod:`~.polling` does for one run.

A batch is a list of items, one per input. Each item is ``pending`` (not started in this try), ``running``
(its run id is known and the run has not been seen to end) or ended: ``succeeded``, ``failed``,
``cancelled``, ``paused``, ``timeout`` or ``error`` (could not be started or watched). Only its index, run
id, state, a short error, how many runs it took, a small usage/cost dict and where to poll it (the start
answer's ``poll_url``, GloriaMundo only) are kept: that is what travels between deferrals (about 100 bytes an
item), and answers never do.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_runwatch.core.admission import DEFAULT_BACKOFF, AdmissionBackoff, Refusal
from airflow_provider_runwatch.core.errors import ConfigurationError, shorten
from airflow_provider_runwatch.core.models import RunEvent
from airflow_provider_runwatch.core.polling import Poller, WaitOptions

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.adapter import RunAdapter
    from airflow_provider_runwatch.core.calls import Call
    from airflow_provider_runwatch.core.connection import ConnectionSettings
    from airflow_provider_runwatch.core.models import RunStatus

PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
#: An item the batch ended without starting: it stopped at a start refused for the key (401/403).
NOT_STARTED = "not_started"
#: The state an item ends in, by the outcome of its wait (:data:`~.models.EventStatus`).
ENDED_BY_OUTCOME: dict[str, str] = {
    "success": SUCCEEDED,
    "failed": "failed",
    "cancelled": "cancelled",
    "paused": "paused",
    "timeout": "timeout",
    "error": "error",
}
ENDED_STATES = frozenset(ENDED_BY_OUTCOME.values()) | {NOT_STARTED}
#: Errors kept per item (between deferrals, in events, in the ``runs`` XCom and the failure table).
ITEM_ERROR_CHARS = 200
#: The most runs one batch task may hold at once: the trigger's kwargs carry every running item's id.
MAX_CONCURRENCY = 1000
#: Rows of the failure table before "... and N more".
FAILURE_TABLE_ROWS = 50


def check_concurrency(value: Any, name: str = "max_concurrency") -> int:
    """``value`` as a whole number in 1..:data:`MAX_CONCURRENCY`, or a clear error."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigurationError(f"{name} must be a whole number from 1 to {MAX_CONCURRENCY}, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number from 1 to {MAX_CONCURRENCY}, got {value!r}") from None
    if number != int(number) or not 1 <= number <= MAX_CONCURRENCY:
        raise ConfigurationError(
            f"{name} must be a whole number from 1 to {MAX_CONCURRENCY}, got {value!r}: set it to the number of "
            "runs the vendor lets this key hold at once (a plan's concurrency limit)"
        )
    return int(number)


@dataclass
class BatchItem:
    """One input of the batch and what became of it."""

    index: int
    run_id: str | None = None
    state: str = PENDING
    error: str | None = None
    #: Runs started for this item so far, over every try (Gumloop derives each session id from it).
    attempts: int = 0
    #: Cost or usage of a succeeded run, as the vendor reported it (small: a few numbers).
    usage: dict[str, Any] | None = None
    #: Where the start answer said to poll this run (GloriaMundo's ``poll_url``), else ``None``: handed to
    #: :meth:`~.adapter.RunAdapter.with_poll_url`, which makes the choice for the single-run path too.
    poll_url: str | None = None

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    @property
    def failed(self) -> bool:
        return self.ended and self.state != SUCCEEDED

    def to_json(self) -> list[Any]:
        row = [self.index, self.run_id, self.state, self.error, self.attempts, self.usage]
        return [*row, self.poll_url] if self.poll_url else row

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> BatchItem:
        index, run_id, state, error, attempts, usage, poll_url = (list(data) + [None] * 7)[:7]
        return cls(int(index), run_id, str(state or PENDING), error, int(attempts or 0), usage, poll_url or None)

    def summary(self, vendor: str) -> dict[str, Any]:
        """The item's entry in the ``runs`` XCom."""
        value: dict[str, Any] = {"index": self.index, "vendor": vendor, "run_id": self.run_id, "state": self.state}
        value["error"] = self.error
        if self.usage:
            value.update(self.usage)
        return value


@dataclass(frozen=True)
class ResumeRule:
    """When the batch trigger hands the task back to the worker: coalesced, never once per run.

    - every run it watches has ended (the worker starts the rest, or the batch is over);
    - or enough runs have ended that a worthwhile number of slots is free for the items still waiting
      (``min(waiting, max(1, concurrency // 4))``), and no refusal asked to wait longer;
    - or a refusal's wake-up time (``not_before``) has come and at least one slot is free;
    - and never before ``earliest``: the task deferred at most that long ago (see
      :attr:`~airflow_provider_runwatch.operators.batch.RunBatchOperator.admission_sleep_below`).

    ``coalesce=False`` is the blocking path's rule: there a hand-back costs no task start, so one free slot is
    worth starting at once (``./dev bench --batch --modes blocking``, 500 Gumloop items: waiting for a quarter
    of the slots to free made the batch 1.20x its bound).
    """

    concurrency: int
    #: Items not started yet.
    waiting: int
    #: Slots free when the trigger was created (after a refusal the worker left some free on purpose).
    free: int = 0
    not_before: float | None = None
    #: No hand-back before this time (epoch seconds), whatever ended: runs that end meanwhile are collected.
    earliest: float | None = None
    #: Wait for a worthwhile number of free slots (a hand-back from the triggerer costs a task start).
    coalesce: bool = True

    @property
    def worthwhile(self) -> int:
        return min(self.waiting, max(1, self.concurrency // 4) if self.coalesce else 1)

    def due(self, ended: int, still_running: int, now: float) -> bool:
        if self.earliest is not None and now < self.earliest:
            return False
        if self.waiting == 0:
            return still_running == 0
        if self.not_before is not None and now < self.not_before:
            return False  # nothing may start before then, whatever ends
        if still_running == 0:
            return True
        if self.not_before is not None:
            return self.free + ended >= 1
        return self.free + ended >= self.worthwhile

    def wake_at(self, now: float) -> float | None:
        """When the rule may become true with no run ending (a refusal's wake-up time, ``earliest``), else
        ``None``."""
        times = [t for t in (self.not_before if self.waiting else None, self.earliest) if t is not None and t > now]
        return min(times) if times else None


@dataclass
class BatchPlan:
    """Every item of a batch, the concurrency limit and the refusal backoff."""

    items: list[BatchItem]
    max_concurrency: int
    max_failed: int = 0
    #: After a refused start: no start before this time (epoch seconds).
    not_before: float | None = None
    #: Refused starts in a row (the backoff grows with them; an accepted start resets it).
    refusals: int = 0
    backoff: AdmissionBackoff = field(default=DEFAULT_BACKOFF, compare=False)

    @classmethod
    def new(cls, count: int, max_concurrency: int, max_failed: int = 0) -> BatchPlan:
        return cls([BatchItem(i) for i in range(count)], max_concurrency, max_failed)

    # -- reading ------------------------------------------------------------------------------------
    def running(self) -> list[BatchItem]:
        return [item for item in self.items if item.state == RUNNING]

    def running_refs(self) -> list[RunRef]:
        """``(index, run id, poll_url)`` of every running item: what the watch needs, and nothing else."""
        return [(item.index, str(item.run_id), item.poll_url) for item in self.running()]

    def waiting(self) -> list[BatchItem]:
        return [item for item in self.items if item.state == PENDING]

    def failures(self) -> list[BatchItem]:
        return [item for item in self.items if item.failed]

    @property
    def done(self) -> bool:
        return all(item.ended for item in self.items)

    @property
    def too_many_failed(self) -> bool:
        return len(self.failures()) > self.max_failed

    def free_slots(self) -> int:
        return max(0, self.max_concurrency - len(self.running()))

    def to_start(self, now: float) -> list[BatchItem]:
        """The items to start now, in input order: as many as free slots, none while a refusal holds."""
        if self.not_before is not None and now < self.not_before:
            return []
        return self.waiting()[: self.free_slots()]

    def resume_rule(self, coalesce: bool = True) -> ResumeRule:
        return ResumeRule(
            self.max_concurrency, len(self.waiting()), self.free_slots(), self.not_before, coalesce=coalesce
        )

    # -- changes ------------------------------------------------------------------------------------
    def started(self, item: BatchItem, run_id: str, poll_url: str | None = None) -> None:
        item.run_id, item.state, item.error, item.poll_url = run_id, RUNNING, None, poll_url
        item.attempts += 1
        self.refusals, self.not_before = 0, None

    def refused(self, refusal: Refusal, now: float) -> float:
        """A start was refused for capacity or rate: hold every start back; returns the delay."""
        self.refusals += 1
        delay = self.backoff.delay(refusal, self.refusals)
        self.not_before = now + delay
        return delay

    def hold(self, until: float) -> None:
        """No start before ``until`` (the key's start budget has no slot sooner): not a refusal, so the
        refusal backoff does not grow."""
        self.not_before = until if self.not_before is None else max(self.not_before, until)

    def start_failed(self, item: BatchItem, error: str) -> None:
        """A start failed for another reason: the item fails (it is never started again blindly)."""
        item.state, item.error = "error", shorten(f"start failed: {error}", ITEM_ERROR_CHARS)

    def ended(self, index: int, state: str, error: str | None = None, usage: dict[str, Any] | None = None) -> None:
        item = self.items[index]
        item.state = state
        item.error = shorten(error, ITEM_ERROR_CHARS) if error else None
        if usage is not None:
            item.usage = usage

    def apply_events(self, events: Iterable[Mapping[str, Any]]) -> list[BatchItem]:
        """Record the ended runs a batch event reports (:func:`event_item`); returns those items.

        An entry about a run the item no longer holds (a stale event) is ignored."""
        changed = []
        for entry in events:
            index = int(entry["index"])
            if not 0 <= index < len(self.items):
                continue
            item = self.items[index]
            if item.run_id != entry.get("run_id") or item.state != RUNNING:
                continue
            self.ended(index, str(entry["state"]), entry.get("error"))
            changed.append(item)
        return changed

    def restart_failed(self) -> list[BatchItem]:
        """A new try takes over this plan: items that did not succeed start again (their run count kept)."""
        again = [item for item in self.items if item.failed]
        for item in again:
            item.state, item.error = PENDING, None
        self.refusals, self.not_before = 0, None
        return again

    def not_started(self, why: str, state: str = "timeout") -> None:
        """The batch ends with items never started: they end as ``timeout`` (the deadline passed) or
        :data:`NOT_STARTED` (it stopped at a start refused for the key)."""
        for item in self.waiting():
            item.state, item.error = state, shorten(why, ITEM_ERROR_CHARS)

    # -- reporting ----------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.items:
            counts[item.state] = counts.get(item.state, 0) + 1
        return counts

    def describe(self) -> str:
        """``12 items: 7 succeeded, 3 running, 2 pending``."""
        parts = ", ".join(f"{n} {state}" for state, n in sorted(self.counts().items(), key=lambda kv: -kv[1]))
        return f"{len(self.items)} items: {parts}"

    def failure_table(self, rows: int = FAILURE_TABLE_ROWS) -> str:
        """The failed items, one line each (index, run id, state, error cut short)."""
        failed = self.failures()
        lines = [f"  {'index':>5}  {'run id':<40}  {'state':<9}  error"]
        for item in failed[:rows]:
            error = shorten(item.error or "", 120).replace("\n", " ")
            lines.append(f"  {item.index:>5}  {item.run_id or '-':<40}  {item.state:<9}  {error}")
        if len(failed) > rows:
            lines.append(f"  ... and {len(failed) - rows} more (see the 'runs' XCom)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "max_concurrency": self.max_concurrency,
            "max_failed": self.max_failed,
            "not_before": self.not_before,
            "refusals": self.refusals,
            "items": [item.to_json() for item in self.items],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchPlan:
        return cls(
            [BatchItem.from_json(row) for row in data["items"]],
            int(data["max_concurrency"]),
            int(data.get("max_failed") or 0),
            data.get("not_before"),
            int(data.get("refusals") or 0),
        )


def event_item(index: int, event: RunEvent) -> dict[str, Any]:
    """One ended run as the batch trigger reports it: ids, states and a short error, nothing else."""
    return {
        "index": index,
        "run_id": event.run_id,
        "state": ENDED_BY_OUTCOME[event.status],
        "vendor_state": shorten(event.vendor_state or "", 40) or None,
        "error": shorten(event.message, ITEM_ERROR_CHARS) or None,
    }


# -- watching many runs at once (sans-I/O; drivers in triggers/batch.py and operators/batch.py) -------------
Outcome = float | RunEvent
#: A running item as the watch knows it: index, run id, and the start answer's ``poll_url`` (or ``None``).
RunRef = tuple[int, str, str | None]


def run_refs(rows: Iterable[Sequence[Any]]) -> list[RunRef]:
    """``[[index, run_id], [index, run_id, poll_url], ...]`` (trigger kwargs, older ones without poll_url)."""
    return [(int(row[0]), str(row[1]), str(row[2]) if len(row) > 2 and row[2] else None) for row in rows]


def ref_rows(refs: Iterable[RunRef]) -> list[list[Any]]:
    """The kwargs form of :func:`run_refs`: ``poll_url`` only where there is one (other vendors' stay short)."""
    return [[index, run_id, poll_url] if poll_url else [index, run_id] for index, run_id, poll_url in refs]


def status_calls(
    adapter: RunAdapter, settings: ConnectionSettings, refs: Iterable[RunRef]
) -> dict[int, Call[RunStatus]]:
    """Index -> the status call of each running item (the trigger's and the blocking path's polls), each to
    where its start said, as the single-run path polls: :meth:`~.adapter.RunAdapter.with_poll_url` chooses."""
    return {
        index: adapter.with_poll_url(poll_url).status_call(settings, adapter.validate_run_id(run_id))
        for index, run_id, poll_url in refs
    }


@dataclass
class BatchWatch:
    """Schedules the polls of every running item (each through its own :class:`~.polling.Poller`) and
    collects the ones that ended, until :class:`ResumeRule` says the worker should take over.

    ``pollers`` maps item index -> a Poller; the drivers ask :meth:`next_due` what to poll next, send the
    poll, and report what it returned with :meth:`polled`. The blocking path keeps one watch for the whole
    batch: :meth:`add` schedules the runs it starts, :meth:`drain` hands over the ones that ended, so a run's
    poll schedule and its logged state survive the worker's rounds of starting more.
    """

    pollers: dict[int, Poller]
    rule: ResumeRule
    clock: Callable[[], float]
    ended: list[dict[str, Any]] = field(default_factory=list)
    _queue: list[tuple[float, int]] = field(default_factory=list)
    _in_flight: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        now = self.clock()
        for index, poller in self.pollers.items():
            self._queue.append((now + poller.first_delay(), index))
        heapq.heapify(self._queue)

    def add(self, pollers: Mapping[int, Poller]) -> None:
        """Watch more runs (each first polled at a random phase within its interval)."""
        now = self.clock()
        for index, poller in pollers.items():
            self.pollers[index] = poller
            heapq.heappush(self._queue, (now + poller.first_delay(), index))

    def drain(self) -> list[dict[str, Any]]:
        """The runs that ended since the last drain (:func:`event_item` form); they are watched no more."""
        ended, self.ended = self.ended, []
        for item in ended:
            self.pollers.pop(int(item["index"]), None)
        return ended

    @property
    def still_running(self) -> int:
        return len(self.pollers) - len(self.ended)

    def due(self) -> bool:
        return self.rule.due(len(self.ended), self.still_running, self.clock())

    def next_due(self) -> tuple[float, int] | None:
        """``(when, index)`` of the next poll, or ``None`` when nothing is scheduled."""
        return self._queue[0] if self._queue else None

    def take(self) -> int:
        """Take the next poll off the schedule (it is in flight until :meth:`polled`)."""
        _, index = heapq.heappop(self._queue)
        self._in_flight.add(index)
        return index

    def polled(self, index: int, outcome: Outcome) -> None:
        self._in_flight.discard(index)
        if isinstance(outcome, RunEvent):
            self.ended.append(event_item(index, outcome))
        else:
            heapq.heappush(self._queue, (self.clock() + outcome, index))

    def wake_at(self) -> float | None:
        """The earliest moment something is to be done: the next poll, or a refusal's wake-up time."""
        candidates = [t for t in (self._queue[0][0] if self._queue else None, self.rule.wake_at(self.clock())) if t]
        return min(candidates) if candidates else None


def pollers_for(
    runs: Iterable[Sequence[Any]], vendor: str, noun: str, options: WaitOptions, log: Any
) -> dict[int, Poller]:
    """One :class:`~.polling.Poller` per running item (``(index, run_id, ...)``), for :class:`BatchWatch`
    (trigger and blocking path)."""
    return {int(run[0]): Poller(vendor=vendor, run_id=str(run[1]), options=options, log=log, noun=noun) for run in runs}
