"""The polling core, written once: deadline, interval, backoff, ``Retry-After``, failure budget and state
logging for every vendor, on the triggerer (:func:`watch_async`) and on the worker (:func:`watch_sync`).

:class:`Poller` is sans-I/O: it is told what a poll returned (a status or an error) and answers with the
next delay or the final :class:`RunEvent`. The two drivers only add the waiting and the fetching, so the
deferrable and the blocking path make the same decisions.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_runwatch.core.errors import RunwatchError, VendorAPIError, shorten
from airflow_provider_runwatch.core.models import EventStatus, RunEvent, RunState, RunStatus
from airflow_provider_runwatch.core.retry import RetryPolicy

Clock = Callable[[], float]

#: The outcome a run state ends a wait with; states not listed keep the wait going (paused: see
#: :func:`outcome_of`).
_OUTCOMES: dict[RunState, EventStatus] = {
    RunState.SUCCEEDED: "success",
    RunState.FAILED: "failed",
    RunState.CANCELLED: "cancelled",
    RunState.PAUSED: "paused",
}


def outcome_of(status: RunStatus, *, stop_on_paused: bool = True) -> EventStatus | None:
    """How a status ends the wait (``success``, ``failed``, ...), or ``None`` while the run goes on.

    The one decision from a status to an outcome: the pollers, the sensors' poke and the operators'
    reattachment all ask it.
    """
    if status.state is RunState.PAUSED and not stop_on_paused:
        return None
    return _OUTCOMES.get(status.state)


def event_for(status: RunStatus, outcome: EventStatus, message: str | None = None) -> RunEvent:
    """The event that reports ``status`` ended with ``outcome`` (the run's own error text by default)."""
    return RunEvent(
        status=outcome,
        vendor=status.vendor,
        run_id=status.run_id,
        state=status.state,
        vendor_state=status.vendor_state,
        message=shorten((status.error or "") if message is None else message, 1000),
    )


@dataclass(frozen=True)
class WaitOptions:
    """How to wait. Everything here is plain data so it can travel in trigger kwargs.

    ``deadline`` is absolute (epoch seconds), computed once when the wait starts, so a trigger re-created
    after a triggerer restart keeps the original deadline instead of starting its timeout again.
    """

    poll_interval: float
    deadline: float | None = None
    max_consecutive_failures: int = 5
    #: ``True``: a paused run (waiting for a human) ends the wait with a ``paused`` event.
    #: ``False``: keep polling until it resumes or the deadline passes.
    stop_on_paused: bool = True


@dataclass
class Poller:
    """Decides, poll by poll, whether to wait more and how long, or to finish and with which event."""

    vendor: str
    run_id: str
    options: WaitOptions
    log: Any
    #: What is being watched, for log lines: "chat run", "session", "flow run".
    noun: str = "run"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Clock = time.time
    failures: int = 0
    last: RunStatus | None = None
    _seen_unknown: set[str] = field(default_factory=set)
    _last_line: str | None = None
    #: What the last state line was made of: a poll that reports the same is not formatted again.
    _last_seen: tuple[Any, ...] | None = None

    # -- timing ---------------------------------------------------------------------------------------
    def first_delay(self) -> float:
        """A random phase within one interval, so triggers deferred together do not poll in lock-step."""
        return self._bounded(random.uniform(0, self.options.poll_interval))

    def _bounded(self, delay: float) -> float:
        if self.options.deadline is None:
            return delay
        return max(0.0, min(delay, self.options.deadline - self.clock()))

    def time_left(self) -> float | None:
        """Seconds until the deadline (``None`` without one): the most one poll may take as a whole, so a
        vendor that trickles or stalls an answer cannot hold the wait past its deadline. A poll cut short
        counts as a transient failure; the deadline then ends the wait with the timeout outcome."""
        if self.options.deadline is None:
            return None
        return max(0.0, self.options.deadline - self.clock())

    def expired(self) -> RunEvent | None:
        """The timeout event once the deadline has passed, else ``None``."""
        if self.options.deadline is None or self.clock() < self.options.deadline:
            return None
        last = self.last
        seen = f"last seen {last.state.value} (vendor state '{last.vendor_state}')" if last else "never seen"
        return self._event("timeout", f"deadline passed while the run was still going; {seen}")

    # -- outcomes of one poll -------------------------------------------------------------------------
    def after_status(self, status: RunStatus) -> float | RunEvent:
        self.failures = 0
        self.last = status
        self._log_change(status)
        outcome = outcome_of(status, stop_on_paused=self.options.stop_on_paused)
        if outcome is not None:
            return self._event(outcome, "" if outcome == "success" else status.error or "")
        return self._bounded(self.options.poll_interval)

    def finish_on_error(self, error: BaseException) -> RunEvent:
        """The event for an error that ends the wait at once (bad config, auth, 404, a bug). Its message is the
        error's own line, with the hint the hook added (what to fix, on which connection)."""
        if isinstance(error, RunwatchError):
            return self._event("error", str(error))
        # A bug or an unexpected library error: end cleanly with its name rather than loop on it.
        return self._event("error", f"unexpected {type(error).__name__}: {error}")

    def after_error(self, error: BaseException) -> float | RunEvent:
        if not (isinstance(error, VendorAPIError) and error.transient):
            return self.finish_on_error(error)
        if (timed_out := self.expired()) is not None:
            # Cut at the deadline (the answer, or a slot of the key's rate budget, did not come in the time
            # left): the deadline decides, exactly as if the poll had said "still running".
            return timed_out
        self.failures += 1
        budget = self.options.max_consecutive_failures
        if self.failures >= budget:
            event = self._event(
                "error", f"gave up after {self.failures} consecutive failed polls; last: {error.describe()}"
            )
            return event.model_copy(update={"gave_up": True})
        delay = max(self.options.poll_interval, self.retry.delay_for(error, self.failures))
        self.log.warning(
            "%s %s %s: %s; failure %d/%d, next poll in %.1fs",
            self.vendor,
            self.noun,
            self.run_id,
            error.describe(),
            self.failures,
            budget,
            delay,
        )
        return self._bounded(delay)

    # -- helpers --------------------------------------------------------------------------------------
    def _event(self, status: EventStatus, message: str = "") -> RunEvent:
        return RunEvent(
            status=status,
            vendor=self.vendor,
            run_id=self.run_id,
            state=self.last.state if self.last else None,
            vendor_state=self.last.vendor_state if self.last else None,
            message=shorten(message, 1000),
            deadline=self.options.deadline,
        )

    def _log_change(self, status: RunStatus) -> None:
        if status.unknown_state and status.vendor_state not in self._seen_unknown:
            self._seen_unknown.add(status.vendor_state)
            self.log.warning(
                "%s %s %s reports unknown state '%s'; treating it as still running",
                self.vendor,
                self.noun,
                self.run_id,
                status.vendor_state,
            )
        seen = (status.state, status.vendor_state, status.queue_position, status.progress)
        if seen == self._last_seen:
            return  # nothing new to say: most polls of a long run (the line is built only on a change)
        self._last_seen = seen
        line = f"{status.state.value} (vendor state '{status.vendor_state}')"
        if status.queue_position is not None and status.state is RunState.QUEUED:
            line += f", queue position {status.queue_position}"
        if status.progress is not None and (described := status.progress.describe()):
            line += f", {described}"
        if line != self._last_line:
            self._last_line = line
            self.log.info("%s %s %s: %s", self.vendor, self.noun, self.run_id, line)


async def watch_async(
    poller: Poller,
    fetch: Callable[[], Awaitable[RunStatus]],
    explain: Callable[[Exception], Exception] | None = None,
) -> RunEvent:
    """Poll until the run ends, the deadline passes or the failure budget is spent. Never blocks the loop.

    ``explain`` maps a failed poll's error before the :class:`Poller` judges it (the hook's hint for the
    user, see :meth:`~airflow_provider_runwatch.hooks.base.RunwatchHook.explained`)."""
    delay = poller.first_delay()
    while True:
        if delay > 0:
            await asyncio.sleep(delay)
        if (timed_out := poller.expired()) is not None:
            return timed_out
        try:
            outcome = poller.after_status(await fetch())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            outcome = poller.after_error(exc if explain is None else explain(exc))
        if isinstance(outcome, RunEvent):
            return outcome
        delay = outcome


def watch_sync(poller: Poller, fetch: Callable[[], RunStatus], sleep: Callable[[float], None] = time.sleep) -> RunEvent:
    """The blocking twin of :func:`watch_async`, for ``deferrable=False``."""
    delay = poller.first_delay()
    while True:
        if delay > 0:
            sleep(delay)
        if (timed_out := poller.expired()) is not None:
            return timed_out
        try:
            outcome = poller.after_status(fetch())
        except Exception as exc:
            outcome = poller.after_error(exc)
        if isinstance(outcome, RunEvent):
            return outcome
        delay = outcome
