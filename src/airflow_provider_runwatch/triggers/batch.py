"""One trigger per batch task: watches every run of the batch still going, with one HTTP client, and hands
the task back to the worker once (coalesced) when :class:`~airflow_provider_runwatch.core.batch.ResumeRule`
says enough runs ended to start more, or all of them did.

Each run is polled through its own :class:`~airflow_provider_runwatch.core.polling.Poller` (the deadline,
backoff, ``Retry-After`` and failure budget of the single-run trigger); the polls of all runs go through the
hook's client, so a per-key budget (GloriaMundo's 60 polls a minute) spreads them evenly instead of letting
them burst. Each run is polled where its start said (GloriaMundo's ``poll_url``), the same choice the
single-run trigger makes (:func:`~airflow_provider_runwatch.core.batch.status_calls`). Kwargs carry the running
items' index, run id and that ``poll_url`` only (at most ``max_concurrency``, never the inputs or a secret);
the event carries ids, states and short errors of the runs that ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_runwatch.core.batch import BatchWatch, ResumeRule, pollers_for, ref_rows, run_refs, status_calls
from airflow_provider_runwatch.core.polling import WaitOptions
from airflow_provider_runwatch.core.retry import NO_RETRY

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.adapter import RunAdapter
    from airflow_provider_runwatch.hooks.base import RunwatchHook

#: Polls sent at once by one batch trigger (the client's pool and the vendor's patience both have limits).
MAX_POLLS_IN_FLIGHT = 16
#: Ids named in one "cannot cancel" log line before "... and N more".
IDS_PER_LINE = 20
#: The batch event's ``kind``: tells a batch event from a single run's.
BATCH_EVENT = "batch"


def name_ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:IDS_PER_LINE])
    return shown + (f" ... and {len(ids) - IDS_PER_LINE} more" if len(ids) > IDS_PER_LINE else "")


def warn_cannot_cancel(log: Any, adapter: RunAdapter, ids: Sequence[str]) -> None:
    """One line, for the trigger's and the operator's kill paths alike, naming the runs that go on."""
    log.warning(
        "%s has no API to cancel a %s: %d keep running on the vendor's side: %s",
        adapter.vendor.display_name,
        adapter.noun,
        len(ids),
        name_ids(ids),
    )


class RunBatchTrigger(BaseTrigger):
    """Watches the running items of one batch until the resume rule holds; subclasses name hook and adapter."""

    hook_class: ClassVar[type[RunwatchHook]]
    adapter: ClassVar[RunAdapter]

    def __init__(
        self,
        *,
        conn_id: str,
        runs: Sequence[Sequence[Any]],
        poll_interval: float,
        concurrency: int,
        waiting: int = 0,
        free: int = 0,
        not_before: float | None = None,
        deadline: float | None = None,
        max_consecutive_failures: int = 5,
        cancel_on_kill: bool = True,
        earliest: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.conn_id = conn_id
        #: ``(index, run_id, poll_url)`` of the items still going when the task deferred (kwargs: ``[[index,
        #: run_id, poll_url], ...]``, ``poll_url`` left out where there is none, as in triggers of 0.1).
        self.runs = run_refs(runs)
        self.poll_interval = float(poll_interval)
        self.concurrency = int(concurrency)
        self.waiting = int(waiting)
        self.free = int(free)
        self.not_before = None if not_before is None else float(not_before)
        self.deadline = None if deadline is None else float(deadline)
        self.max_consecutive_failures = int(max_consecutive_failures)
        self.cancel_on_kill = bool(cancel_on_kill)
        #: No event before this time (epoch seconds): set by the operator a floor after its deferral, since on
        #: Airflow 3.3.2 a trigger firing within seconds of the deferral can lose the scheduler's race with the
        #: deferring try's stale executor event, which fails the task (apache/airflow#67287).
        self.earliest = None if earliest is None else float(earliest)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "runs": ref_rows(self.runs),
                "poll_interval": self.poll_interval,
                "concurrency": self.concurrency,
                "waiting": self.waiting,
                "free": self.free,
                "not_before": self.not_before,
                "deadline": self.deadline,
                "max_consecutive_failures": self.max_consecutive_failures,
                "cancel_on_kill": self.cancel_on_kill,
                "earliest": self.earliest,
            },
        )

    def rule(self) -> ResumeRule:
        return ResumeRule(self.concurrency, self.waiting, self.free, self.not_before, self.earliest)

    async def run(self) -> AsyncGenerator[TriggerEvent, None]:
        options = WaitOptions(self.poll_interval, self.deadline, self.max_consecutive_failures)
        vendor, noun = self.adapter.vendor.display_name, self.adapter.noun
        watch = BatchWatch(pollers_for(self.runs, vendor, noun, options, self.log), self.rule(), time.time)
        message = ""
        try:
            hook = self.hook_class(self.conn_id)
            async with hook.async_client() as client:
                calls = status_calls(self.adapter, client.settings, self.runs)

                async def poll(index: int) -> None:
                    poller = watch.pollers[index]
                    if (timed_out := poller.expired()) is not None:
                        watch.polled(index, timed_out)
                        return
                    try:
                        status = await hook.asend(client, calls[index], retry=NO_RETRY, within=poller.time_left())
                        outcome = poller.after_status(status)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        outcome = poller.after_error(exc)
                    watch.polled(index, outcome)

                await drive(watch, poll)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the task must hear about it as an event, not a triggerer traceback
            message = f"batch trigger stopped: {type(exc).__name__}: {exc}"[:500]
        if self.earliest is not None and (hold := self.earliest - time.time()) > 0:
            await asyncio.sleep(hold)  # a failure too waits out the floor: the race would hide its message
        self.log.info("%d of %d runs ended; handing the batch back to the worker", len(watch.ended), len(self.runs))
        payload = {"kind": BATCH_EVENT, "ended": watch.ended, "message": message}
        yield TriggerEvent(payload)  # type: ignore[no-untyped-call]

    async def on_kill(self) -> None:
        """Airflow >= 3.3, on a user's mark-failed/success or clear: cancel every run still going where the
        vendor can, else say once which runs go on."""
        ids = [run_id for _, run_id, _ in self.runs]
        if not ids:
            return
        vendor, noun = self.adapter.vendor.display_name, self.adapter.noun
        if not self.cancel_on_kill:
            self.log.info("cancel_on_kill is off: %d %s runs keep running: %s", len(ids), vendor, name_ids(ids))
            return
        if not self.adapter.cancel_supported:
            warn_cannot_cancel(self.log, self.adapter, ids)
            return
        hook = self.hook_class(self.conn_id)
        limit = asyncio.Semaphore(MAX_POLLS_IN_FLIGHT)

        async def cancel(run_id: str) -> bool:
            async with limit:
                return await hook.acancel(self.adapter, run_id)

        done = await asyncio.gather(*(cancel(run_id) for run_id in ids))
        self.log.warning("Batch killed: asked %s to cancel %d of %d %ss", vendor, sum(done), len(ids), noun)


async def drive(watch: BatchWatch, poll: Any, in_flight: int = MAX_POLLS_IN_FLIGHT) -> None:
    """Run ``poll(index)`` for each poll as it falls due, at most ``in_flight`` at once, until the rule holds."""
    tasks: set[asyncio.Task[None]] = set()
    try:
        while not watch.due():
            now = time.time()
            while len(tasks) < in_flight and (nxt := watch.next_due()) is not None and nxt[0] <= now:
                tasks.add(asyncio.create_task(poll(watch.take())))
            # With every poll slot taken, only a refusal's wake-up time (or a poll ending) moves things on.
            wake = watch.wake_at() if len(tasks) < in_flight else watch.rule.wake_at(now)
            timeout = None if wake is None else max(0.0, wake - time.time())
            if not tasks:
                await asyncio.sleep(timeout if timeout is not None else 1.0)
                continue
            done, tasks = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a bug in poll() must surface, not vanish
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
