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
import json
import logging
import re
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

import httpx

from airflow_provider_runwatch.core.errors import ConfigurationError, RateLimitedError, VendorAPIError
from airflow_provider_runwatch.core.http import ApiClient, ApiRequest, AsyncApiClient, Call, ClientOptions, RetryPolicy
from airflow_provider_runwatch.core.ratelimit import DEFAULT_WINDOW_SECONDS, BudgetSpec, KeyBudget, budget_for
from airflow_provider_runwatch.hooks.base import RunwatchHook
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

#: Error bodies larger than this are not kept for the hint (they are still read and reported as usual).
_MAX_CAPTURED_BODY = 64 * 1024
_RUN_IN_PATH = re.compile(r"/runs/([^/]+)/")
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


class _BodySink:
    """Receives the decoded body of an error answer to the request in flight (see ``_capture``)."""

    __slots__ = ("body",)

    def __init__(self) -> None:
        self.body: Any = None

    def keep(self, raw: bytes) -> None:
        try:
            self.body = json.loads(raw)
        except ValueError:
            self.body = None


_SINK: ContextVar[_BodySink | None] = ContextVar("runwatch_gloriamundo_error_body", default=None)


def _wanted(response: httpx.Response, sink: _BodySink | None) -> bool:
    declared = response.headers.get("content-length", "")
    return (
        sink is not None and response.status_code >= 400 and declared.isdigit() and int(declared) <= _MAX_CAPTURED_BODY
    )


async def _acapture(response: httpx.Response, sink: _BodySink | None) -> None:
    if _wanted(response, sink):
        assert sink is not None
        sink.keep(await response.aread())


def _capture(response: httpx.Response) -> Any:
    """httpx response hook: keep a small error body for the execute call's hint (the spend limit's reset
    time lives in the body, which the shared client reduces to the error text). The body stays readable
    by the client afterwards: httpx serves a read response's content again to ``iter_bytes``.

    One callable serves both clients: the async client awaits what it returns, the sync one ignores it.
    """
    sink = _SINK.get()
    if isinstance(response.stream, httpx.AsyncByteStream):
        return _acapture(response, sink)
    if _wanted(response, sink):
        assert sink is not None
        sink.keep(response.read())
    return None


@dataclasses.dataclass
class GloriaMundoClientOptions(ClientOptions):
    """Client options plus the error-body hook."""

    def client_kwargs(self, settings: ConnectionSettings) -> dict[str, Any]:
        kwargs = super().client_kwargs(settings)
        kwargs["event_hooks"] = {"response": [_capture]}
        return kwargs


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


def _report_throttle(options: ClientOptions, request: ApiRequest, error: RateLimitedError) -> None:
    """A 429 of the key's rate limit (not the spend limit) tells the key's budget to slow this process down."""
    if request.bucket is not None and isinstance(options.limiter, KeyBudget) and not is_spend_limit(error):
        options.limiter.throttled(request.bucket)


class _ThrottleReportingClient(ApiClient):
    def _send_once(self, request: ApiRequest) -> Any:
        try:
            return super()._send_once(request)
        except RateLimitedError as exc:
            _report_throttle(self.options, request, exc)
            raise


class _ThrottleReportingAsyncClient(AsyncApiClient):
    async def _send_once(self, request: ApiRequest) -> Any:
        try:
            return await super()._send_once(request)
        except RateLimitedError as exc:
            _report_throttle(self.options, request, exc)
            raise


class GloriaMundoHook(RunwatchHook):
    """Talks to GloriaMundo's workflow API. Every request of one API key in this process shares one
    rate budget (``polls_per_minute`` status polls, ``executions_per_minute`` executions)."""

    vendor = GLORIAMUNDO
    default_conn_name = "gloriamundo_default"
    conn_type = "gloriamundo"
    hook_name = "GloriaMundo"
    adapter = gloriamundo.WORKFLOW_RUNS
    # Every attempt's 429 reaches the key's budget (adaptive buckets slow down: other processes share the key).
    client_class = _ThrottleReportingClient
    async_client_class = _ThrottleReportingAsyncClient

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
        # The error-body hook only where a call waits for its error (inside call/acall): a trigger's
        # long-lived client stays a plain one, which the shared client can send through its fast path.
        options_class = ClientOptions if _SINK.get() is None else GloriaMundoClientOptions
        return options_class(headers=headers, retry=self.retry, limiter=self.budget(settings))

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
            POLL_BUCKET: BudgetSpec(int(polls), window, smooth=True, adaptive=adaptive),
            EXECUTE_BUCKET: BudgetSpec(int(executions), window, smooth=False, adaptive=adaptive),
        }

    def budget(self, settings: ConnectionSettings) -> KeyBudget:
        """The process-wide budget of this connection's key (shared with every other user of the key)."""
        return budget_for(GLORIAMUNDO.name, settings.base_url, settings.api_key, self.budget_specs(settings))

    # -- errors with hints ----------------------------------------------------------------------------
    def _explain(self, error: VendorAPIError, request: ApiRequest, body: Any = None) -> VendorAPIError:
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
        return explain_error(
            error, conn_id=self.conn_id, workflow_id=workflow_id, run_id=run_id, body=body, executions_per_minute=pace
        )

    def call(self, call: Call[T], *, retry: RetryPolicy | None = None) -> T:
        sink = _BodySink()
        token = _SINK.set(sink)
        try:
            return super().call(call, retry=retry)
        except VendorAPIError as exc:
            raise self._explain(exc, call.request, sink.body) from None
        finally:
            _SINK.reset(token)

    async def acall(self, call: Call[T], *, retry: RetryPolicy | None = None) -> T:
        sink = _BodySink()
        token = _SINK.set(sink)
        try:
            return await super().acall(call, retry=retry)
        except VendorAPIError as exc:
            raise self._explain(exc, call.request, sink.body) from None
        finally:
            _SINK.reset(token)

    def _execute_retry(self, retry: RetryPolicy | None) -> RetryPolicy:
        return ExecuteRetryPolicy(**dataclasses.asdict(retry or self.retry))

    # -- operations -----------------------------------------------------------------------------------
    def execute_workflow(
        self, workflow_id: str, input: dict[str, Any] | None = None, *, retry: RetryPolicy | None = None
    ) -> GloriaMundoExecution:
        """Start a workflow run. ``input`` must be a dict (refused before sending otherwise). Retried only
        when GloriaMundo provably did not start it (connection refused, 429 for the rate limit)."""
        return self.call(gloriamundo.execute_workflow(workflow_id, input), retry=self._execute_retry(retry))

    async def aexecute_workflow(
        self, workflow_id: str, input: dict[str, Any] | None = None, *, retry: RetryPolicy | None = None
    ) -> GloriaMundoExecution:
        return await self.acall(gloriamundo.execute_workflow(workflow_id, input), retry=self._execute_retry(retry))

    def get_run_status(self, run_id: str, poll_url: str | None = None) -> GloriaMundoRun:
        """The run's status, progress, result and cost; ``poll_url`` is the one the execute call returned."""
        return self.call(gloriamundo.get_run_status(run_id, poll_url, self.settings.base_url))

    async def aget_run_status(self, run_id: str, poll_url: str | None = None) -> GloriaMundoRun:
        settings = await self.aget_settings()
        return await self.acall(gloriamundo.get_run_status(run_id, poll_url, settings.base_url))

    def probe(self) -> str:
        """No "whoami" exists: ask for the status of a run id that cannot exist. A 404 proves the key is
        accepted (401 says it is not), nothing is started, and it costs one poll of the budget."""
        import uuid

        return self.probe_missing_run(lambda: self.get_run_status(str(uuid.uuid4())))
