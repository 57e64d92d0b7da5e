"""One trigger class for every vendor and run kind; subclasses only name the hook and the adapter.

Kwargs carry ids, the absolute deadline and wait options, never a secret. The trigger reads its
connection asynchronously, owns one HTTP client for its whole life (TLS context shared per process),
issues only GETs while waiting, and yields one event with ids, states and a short error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_runwatch.core.polling import Poller, WaitOptions, watch_async
from airflow_provider_runwatch.core.retry import NO_RETRY

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.adapter import RunAdapter
    from airflow_provider_runwatch.hooks.base import RunwatchHook


def _preload_async_http() -> None:
    """Import what httpx's async transport and Airflow's async connection lookup load lazily on first use.

    Left lazy, ~250 ms of imports run inside the triggerer's event loop at the first poll, stalling every
    other trigger; here they run when the trigger module is imported. Private module names, hence guarded.
    """
    import contextlib
    import importlib

    for module in ("httpcore._backends.anyio", "anyio._backends._asyncio", "anyio.to_thread", "asgiref.sync"):
        # A newer httpcore/anyio layout only costs the first poll again.
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


_preload_async_http()


class RunTrigger(BaseTrigger):
    """Polls one run until it ends, its deadline passes or the failure budget is spent."""

    hook_class: ClassVar[type[RunwatchHook]]
    adapter: ClassVar[RunAdapter]

    def __init__(
        self,
        *,
        conn_id: str,
        run_id: str,
        poll_interval: float,
        deadline: float | None = None,
        max_consecutive_failures: int = 5,
        stop_on_paused: bool = True,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.conn_id = conn_id
        self.run_id = run_id
        self.poll_interval = float(poll_interval)
        self.deadline = None if deadline is None else float(deadline)
        self.max_consecutive_failures = int(max_consecutive_failures)
        self.stop_on_paused = bool(stop_on_paused)
        self.cancel_on_kill = bool(cancel_on_kill)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "run_id": self.run_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "max_consecutive_failures": self.max_consecutive_failures,
                "stop_on_paused": self.stop_on_paused,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    def wait_options(self) -> WaitOptions:
        return WaitOptions(
            poll_interval=self.poll_interval,
            deadline=self.deadline,
            max_consecutive_failures=self.max_consecutive_failures,
            stop_on_paused=self.stop_on_paused,
        )

    async def run(self) -> AsyncGenerator[TriggerEvent, None]:
        vendor = self.adapter.vendor.display_name
        poller = Poller(
            vendor=vendor, run_id=self.run_id, options=self.wait_options(), log=self.log, noun=self.adapter.noun
        )
        try:
            hook = self.hook_class(self.conn_id)
            async with hook.async_client() as client:
                call = self.adapter.status_call(client.settings, self.adapter.validate_run_id(self.run_id))
                # Each poll is one attempt: the Poller owns retries (failure budget and backoff); it ends by the
                # deadline at the latest, however slowly the answer comes.
                # The client sends it with the hook's retry choice and the hook explains its errors, as
                # hook.asend does (the blocking path's very words), without an await hop per poll.
                retry = hook.retry_for(call, NO_RETRY)
                event = await watch_async(
                    poller,
                    lambda: client.call(call, retry=retry, within=poller.time_left()),
                    explain=lambda error: hook.explained(error, call.request),
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the task must hear about it as an event, not a triggerer traceback
            event = poller.finish_on_error(exc)
        yield TriggerEvent(event.model_dump(mode="json"))  # type: ignore[no-untyped-call]

    async def on_kill(self) -> None:
        """Airflow >= 3.3 calls this when a user marks the deferred task failed/success or clears it."""
        if not self.cancel_on_kill:
            self.log.info("cancel_on_kill is off: %s %s keeps running", self.adapter.noun, self.run_id)
            return
        await self.hook_class(self.conn_id).acancel(self.adapter, self.run_id)
