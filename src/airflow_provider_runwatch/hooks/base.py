"""Shared hook machinery: connection -> settings -> sync/async API clients, plus run helpers that work
for every :class:`~airflow_provider_runwatch.core.adapter.RunAdapter`.

Vendor hooks add their own operations as one-liners over :meth:`RunwatchHook.call` / :meth:`acall`, so
the blocking and the asyncio variants of an operation share the same request building and parsing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import httpx
from airflow.sdk import BaseHook

from airflow_provider_runwatch.core.connection import ConnectionSettings, VendorSpec, settings_from_connection
from airflow_provider_runwatch.core.errors import ConfigurationError, NotFoundError, RunwatchError
from airflow_provider_runwatch.core.http import ApiClient, AsyncApiClient, Call, ClientOptions, RetryPolicy
from airflow_provider_runwatch.provider_info import connection_form_widgets, ui_field_behaviour

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.adapter import RunAdapter, RunResult
    from airflow_provider_runwatch.core.models import RunStatus

T = TypeVar("T")

#: A cancel must not hold up a kill or a failing task for long.
CANCEL_TIMEOUT_SECONDS = 15.0
#: Two attempts at most; with :data:`CANCEL_HTTP_TIMEOUT` a blocking cancel also ends within about 15 s.
CANCEL_RETRY = RetryPolicy(max_attempts=2, max_delay=2.0)
CANCEL_HTTP_TIMEOUT = httpx.Timeout(6.0, connect=3.0)


class RunwatchHook(BaseHook):
    """Base of the vendor hooks. Subclasses set the class attributes and add vendor operations."""

    vendor: ClassVar[VendorSpec]
    conn_name_attr = "conn_id"
    default_conn_name: ClassVar[str]
    conn_type: ClassVar[str]
    hook_name: ClassVar[str]
    #: The HTTP clients this hook builds (a vendor may extend them, e.g. to report 429s to its budget).
    client_class: ClassVar[type[ApiClient]] = ApiClient
    async_client_class: ClassVar[type[AsyncApiClient]] = AsyncApiClient

    def __init__(self, conn_id: str | None = None, *, retry: RetryPolicy | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id or self.default_conn_name
        self.retry = retry or RetryPolicy()
        self._settings: ConnectionSettings | None = None
        self._client: ApiClient | None = None

    # -- connection ---------------------------------------------------------------------------------
    @property
    def settings(self) -> ConnectionSettings:
        """Settings from the Airflow connection (worker side; cached for the hook's life)."""
        if self._settings is None:
            conn = self.get_connection(self.conn_id)
            self._settings = settings_from_connection(conn, self.vendor)
            _mask(self._settings.api_key)
        return self._settings

    async def aget_settings(self) -> ConnectionSettings:
        """Settings read without blocking the event loop (triggerer side)."""
        if self._settings is None:
            try:
                conn = await self.aget_connection(self.conn_id)
            except ImportError:
                # Airflow 3.1's async lookup imports the supervisor channel before it checks the secrets
                # backends, so it fails outside a triggerer/task (tests, scripts). The sync lookup checks
                # the backends first; run it off the loop.
                try:
                    conn = await asyncio.to_thread(self.get_connection, self.conn_id)
                except ImportError:
                    raise ConfigurationError(
                        f"{self.vendor.display_name} connection '{self.conn_id}' is not defined in any secrets "
                        "backend (and no Airflow API server is reachable from here)"
                    ) from None
            self._settings = settings_from_connection(conn, self.vendor)
        return self._settings

    def client_options(self, settings: ConnectionSettings) -> ClientOptions:
        """Auth and per-connection client options. Default: ``Authorization: Bearer <key>``."""
        return ClientOptions(headers={"Authorization": f"Bearer {settings.api_key}"}, retry=self.retry)

    # -- blocking -----------------------------------------------------------------------------------
    @property
    def client(self) -> ApiClient:
        if self._client is None:
            settings = self.settings
            self._client = self.client_class(settings, self.client_options(settings))
        return self._client

    def call(self, call: Call[T], *, retry: RetryPolicy | None = None) -> T:
        return self.client.call(call, retry=retry)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- asyncio ------------------------------------------------------------------------------------
    @asynccontextmanager
    async def async_client(self) -> AsyncIterator[AsyncApiClient]:
        """One client for a block of calls (a trigger holds one for its whole life)."""
        settings = await self.aget_settings()
        client = self.async_client_class(settings, self.client_options(settings))
        try:
            yield client
        finally:
            await client.aclose()

    async def acall(self, call: Call[T], *, retry: RetryPolicy | None = None) -> T:
        async with self.async_client() as client:
            return await client.call(call, retry=retry)

    # -- runs (any adapter) -------------------------------------------------------------------------
    def get_status(self, adapter: RunAdapter, run_id: str) -> RunStatus:
        return self.call(adapter.status_call(self.settings, adapter.validate_run_id(run_id)))

    def get_result(self, adapter: RunAdapter, run_id: str) -> RunResult:
        return self.call(adapter.result_call(self.settings, adapter.validate_run_id(run_id)))

    def cancel(self, adapter: RunAdapter, run_id: str) -> bool:
        """Ask the vendor to cancel. Returns False (and logs why) when the vendor has no cancel.

        Never raises: it is called from kill paths and failure paths, where a second error would hide
        the first. Failures are logged with the run id. Bounded in time: a client of its own with short
        timeouts (the task's client may be stuck in the very poll the kill interrupted), two attempts.
        """
        if not adapter.cancel_supported:
            self._warn_no_cancel(adapter, run_id)
            return False
        try:
            settings = self.settings
            call = adapter.cancel_call(settings, run_id)
            if call is None:
                self._warn_no_cancel(adapter, run_id)
                return False
            with ApiClient(settings, replace(self.client_options(settings), timeout=CANCEL_HTTP_TIMEOUT)) as client:
                client.call(call, retry=CANCEL_RETRY)
        except Exception as exc:
            self._cancel_failed(adapter, run_id, exc)
            return False
        self.log.info("Asked %s to cancel %s %s", self.vendor.display_name, adapter.noun, run_id)
        return True

    async def acancel(self, adapter: RunAdapter, run_id: str) -> bool:
        """Asyncio twin of :meth:`cancel`: bounded to :data:`CANCEL_TIMEOUT_SECONDS` as a whole (connection
        lookup included), never raising."""
        try:
            return await asyncio.wait_for(self._acancel(adapter, run_id), CANCEL_TIMEOUT_SECONDS)
        except Exception as exc:  # TimeoutError included; CancelledError (a BaseException) goes through
            self._cancel_failed(adapter, run_id, exc)
            return False

    async def _acancel(self, adapter: RunAdapter, run_id: str) -> bool:
        if not adapter.cancel_supported:  # say so even when the connection cannot be read
            self._warn_no_cancel(adapter, run_id)
            return False
        settings = await self.aget_settings()
        call = adapter.cancel_call(settings, run_id)
        if call is None:
            self._warn_no_cancel(adapter, run_id)
            return False
        await self.acall(call, retry=CANCEL_RETRY)
        self.log.info("Asked %s to cancel %s %s", self.vendor.display_name, adapter.noun, run_id)
        return True

    def _cancel_failed(self, adapter: RunAdapter, run_id: str, exc: BaseException) -> None:
        what = str(exc) if isinstance(exc, RunwatchError) else f"{type(exc).__name__}: {exc}".rstrip(": ")
        vendor = self.vendor.display_name
        self.log.error("Could not cancel %s %s %s (%s); it may still be running", vendor, adapter.noun, run_id, what)

    def _warn_no_cancel(self, adapter: RunAdapter, run_id: str) -> None:
        self.log.warning(
            "%s has no API to cancel a %s: %s %s keeps running on the vendor's side",
            self.vendor.display_name,
            adapter.noun,
            adapter.noun,
            run_id,
        )

    # -- UI -----------------------------------------------------------------------------------------
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Pre-3.2 form customisation; 3.2+ reads the same data from the provider info."""
        return ui_field_behaviour(cls.conn_type)

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        return connection_form_widgets(cls.conn_type)

    def test_connection(self) -> tuple[bool, str]:
        """Prove the key works with one cheap read that starts nothing."""
        try:
            message = self.probe()
        except RunwatchError as exc:
            return False, str(exc)
        finally:
            self.close()
        return True, message

    def probe(self) -> str:
        """The cheap authenticated read behind :meth:`test_connection`; returns a success message."""
        raise NotImplementedError

    def probe_missing_run(self, read: Callable[[], object]) -> str:
        """Prove the key with a read of a run id that cannot exist, for vendors with no "whoami".

        The vendor checks the key before it looks the run up, so a 404 means the key was accepted (401/403
        raise). A 404 can also come from the wrong host or base path, though, and the vendors do not document
        their not-found body, so nothing can tell the two apart for sure: an HTML 404 (a web page, a proxy)
        fails the test, and a success quotes the vendor's own words so the user can judge.
        """
        vendor = self.vendor.display_name
        conn_id = self.settings.conn_id
        try:
            read()
        except NotFoundError as exc:
            said = exc.detail.strip()
            if said.startswith("<"):
                raise ConfigurationError(
                    f"{vendor} connection '{conn_id}': {exc.endpoint} answered 404 with an HTML page, not an API "
                    f"error; check the host (and its path) point at the {vendor} API"
                ) from None
            quoted = f'"{said[:80]}"' if said else "with an empty body"
            return f"{vendor} accepted the API key (a run id that cannot exist got 404 {quoted})"
        raise ConfigurationError(
            f"{vendor} connection '{conn_id}': a read of a run id that cannot exist did not answer 404; "
            f"check the host (and its path) point at the {vendor} API"
        )


def _mask(secret: str) -> None:
    """Register the key with Airflow's log masker (worker side only; it is not safe inside the loop)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - very old SDKs
        return
    mask_secret(secret)
