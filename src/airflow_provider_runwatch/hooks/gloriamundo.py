"""GloriaMundo hook: workflow executions and run status, blocking and asyncio, under a per-key budget.

Connection: host = API base URL (``https://app.gloriamundo.com/api/v1`` when empty), password = API key.
Extras: ``key_header`` (``bearer``, the default, or ``x-api-key``; ``auth_header`` is read as a legacy name,
which Airflow >= 3.3 masks as a secret in the UI), ``polls_per_minute`` (default 50 of
the documented 60), ``executions_per_minute`` (default 9 of the documented 10), and
``rate_window_seconds`` (default 60; only for emulators that scale the window down in tests), and
``adaptive_rate`` (default true: the budget slows down on the key's 429s and recovers slowly, so several
processes sharing one key converge on its limit; false keeps the fixed per-process rate).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import threading
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from airflow_provider_runwatch.core.calls import ApiRequest, Call
from airflow_provider_runwatch.core.clients import ClientOptions, limits_from_extras
from airflow_provider_runwatch.core.errors import ConfigurationError, VendorAPIError
from airflow_provider_runwatch.core.ratelimit import DEFAULT_WINDOW_SECONDS, BudgetSpec, KeyBudget, budget_for
from airflow_provider_runwatch.core.retry import RetryPolicy
from airflow_provider_runwatch.hooks.base import RunwatchHook, twins
from airflow_provider_runwatch.vendors import gloriamundo
from airflow_provider_runwatch.vendors.gloriamundo import (
    DEFAULT_EXECUTIONS_PER_MINUTE,
    DEFAULT_POLLS_PER_MINUTE,
    DOCUMENTED_POLLS_PER_MINUTE,
    EXECUTE_BUCKET,
    GLORIAMUNDO,
    POLL_BUCKET,
    GloriaMundoExecution,
    GloriaMundoRun,
    explain_error,
    is_spend_limit,
)

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.connection import ConnectionSettings

T = TypeVar("T")
log = logging.getLogger(__name__)

#: The extra naming the header that carries the key (``bearer`` or ``x-api-key``).
KEY_HEADER_EXTRA = "key_header"
#: Its first name, still read: Airflow >= 3.3 counts ``auth_header`` among secret names and masks its value.
LEGACY_KEY_HEADER_EXTRA = "auth_header"

_RUN_IN_PATH = re.compile(r"/runs/([^/]+)/")
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class ExecuteRetryPolicy(RetryPolicy):
    """Retries of the execute call: a 429 for the rate limit is retried (nothing was started), a 429 for
    the spend limit is not (it lasts until the limit resets)."""

    def should_retry(self, request: ApiRequest, error: VendorAPIError, attempt: int) -> bool:
        if is_spend_limit(error):
            return False
        return super().should_retry(request, error, attempt)


def _warn_once(conn_id: str, what: str, message: str, *args: Any) -> None:
    with _warned_lock:
        if (conn_id, what) in _warned:
            return
        _warned.add((conn_id, what))
    log.warning(message, *args)


class GloriaMundoHook(RunwatchHook):
    """Talks to GloriaMundo's workflow API. Every request of one API key in this process shares one
    rate budget (``polls_per_minute`` status polls, ``executions_per_minute`` executions)."""

    vendor = GLORIAMUNDO
    default_conn_name = "gloriamundo_default"
    conn_type = "gloriamundo"
    hook_name = "GloriaMundo"
    adapter = gloriamundo.WORKFLOW_RUNS

    # -- connection -> client -------------------------------------------------------------------------
    def client_options(self, settings: ConnectionSettings) -> ClientOptions:
        name = KEY_HEADER_EXTRA if settings.extra_str(KEY_HEADER_EXTRA) else LEGACY_KEY_HEADER_EXTRA
        mode = (settings.extra_str(name) or "bearer").lower().replace("_", "-")
        if mode in ("bearer", "authorization"):
            headers = {"Authorization": f"Bearer {settings.api_key}"}
        elif mode == "x-api-key":
            headers = {"X-API-Key": settings.api_key}
        else:
            raise ConfigurationError(
                f"GloriaMundo connection '{settings.conn_id}': extra '{name}' must be 'bearer' or "
                f"'x-api-key', got {settings.extras.get(name)!r}"
            )
        return ClientOptions(
            headers=headers,
            retry=self.retry,
            limiter=self.budget(settings),
            # A spend-limit 429 is about money, not rate: it must not slow the key's budget down.
            throttles_key=lambda error: not is_spend_limit(error),
            **limits_from_extras(settings),
        )

    @staticmethod
    def budget_specs(settings: ConnectionSettings) -> dict[str, BudgetSpec]:
        """The per-key budget from the connection's extras (validated, with the safe defaults)."""
        window = settings.extra_float("rate_window_seconds", DEFAULT_WINDOW_SECONDS)
        polls = settings.extra_float("polls_per_minute", DEFAULT_POLLS_PER_MINUTE)
        executions = settings.extra_float("executions_per_minute", DEFAULT_EXECUTIONS_PER_MINUTE)
        where = f"GloriaMundo connection '{settings.conn_id}'"
        for name, value in (("polls_per_minute", polls), ("executions_per_minute", executions)):
            if value < 1:
                raise ConfigurationError(f"{where}: extra '{name}' must be at least 1, got {value:g}")
        if window <= 0:
            raise ConfigurationError(f"{where}: extra 'rate_window_seconds' must be positive, got {window:g}")
        if polls > DOCUMENTED_POLLS_PER_MINUTE:
            _warn_once(
                settings.conn_id,
                "polls",
                "%s: polls_per_minute=%g is above the %d status polls per minute GloriaMundo allows per key; "
                "expect 429s",
                where,
                polls,
                DOCUMENTED_POLLS_PER_MINUTE,
            )
        adaptive = settings.extras.get("adaptive_rate", True)
        if isinstance(adaptive, str) and adaptive.strip().lower() in ("true", "false"):
            adaptive = adaptive.strip().lower() == "true"  # a connection form sends strings
        if not isinstance(adaptive, bool):
            raise ConfigurationError(f"{where}: extra 'adaptive_rate' must be true or false, got {adaptive!r}")
        return {
            POLL_BUCKET: BudgetSpec(int(polls), window, smooth=True, adaptive=adaptive, holds=adaptive),
            EXECUTE_BUCKET: BudgetSpec(int(executions), window, smooth=False, adaptive=adaptive),
        }

    def budget(self, settings: ConnectionSettings) -> KeyBudget:
        """The process-wide budget of this connection's key (shared with every other user of the key)."""
        return budget_for(GLORIAMUNDO.name, settings.base_url, settings.api_key, self.budget_specs(settings))

    # -- errors with hints ----------------------------------------------------------------------------
    def explain(self, error: VendorAPIError, request: ApiRequest) -> VendorAPIError:
        """GloriaMundo's documented errors, each with what to do (:func:`explain_error`)."""
        workflow_id = None
        run_id = None
        if request.endpoint == gloriamundo.EXECUTE_ENDPOINT:
            parts = request.path.split("/")
            workflow_id = unquote(parts[2]) if len(parts) > 2 else "?"
        elif match := _RUN_IN_PATH.search(request.path):
            run_id = match.group(1)
        pace = float(DEFAULT_EXECUTIONS_PER_MINUTE)
        if self._settings is not None:
            with contextlib.suppress(ConfigurationError):
                spec = self.budget_specs(self._settings)[EXECUTE_BUCKET]
                pace = spec.limit * 60.0 / spec.window
        explained = explain_error(
            error, conn_id=self.conn_id, workflow_id=workflow_id, run_id=run_id, executions_per_minute=pace
        )
        return super().explain(explained, request)  # a status GloriaMundo does not document: the common hint

    def retry_for(self, call: Call[Any], retry: RetryPolicy | None) -> RetryPolicy | None:
        """The execute call is retried only when GloriaMundo provably did not start the run (connection
        refused, 429 for the rate limit), never on a spend-limit 429, whoever sends it."""
        if call.request.endpoint != gloriamundo.EXECUTE_ENDPOINT or isinstance(retry, ExecuteRetryPolicy):
            return retry
        return ExecuteRetryPolicy(**dataclasses.asdict(retry or self.retry))

    # -- operations (each defined once; ``twins`` makes the blocking method and its asyncio twin) -------------
    def _execute_workflow(
        self, settings: ConnectionSettings, workflow_id: str, input: dict[str, Any] | None = None
    ) -> Call[GloriaMundoExecution]:
        """Start a workflow run. ``input`` must be a dict (refused before sending otherwise). Retried only
        when GloriaMundo provably did not start it (connection refused, 429 for the rate limit)."""
        return gloriamundo.execute_workflow(workflow_id, input)

    execute_workflow, aexecute_workflow = twins(_execute_workflow)

    def _get_run_status(
        self, settings: ConnectionSettings, run_id: str, poll_url: str | None = None
    ) -> Call[GloriaMundoRun]:
        """The run's status, progress, result and cost; ``poll_url`` is the one the execute call returned."""
        return gloriamundo.get_run_status(run_id, poll_url, settings.base_url)

    get_run_status, aget_run_status = twins(_get_run_status)

    def probe(self) -> str:
        """No "whoami" exists: ask for the status of a run id that cannot exist. A 404 proves the key is
        accepted (401 says it is not), nothing is started, and it costs one poll of the budget."""
        import uuid

        return self.probe_missing_run(lambda: self.get_run_status(str(uuid.uuid4())))
