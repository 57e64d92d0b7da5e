"""Shared hook machinery: connection -> settings -> sync/async API clients, plus run helpers that work
for every :class:`~airflow_provider_runwatch.core.adapter.RunAdapter`.

Vendor hooks define each operation once, as the :class:`~airflow_provider_runwatch.core.calls.Call` it sends,
and :func:`twins` generates its blocking method and its asyncio twin from that one definition, so the two
cannot differ in what they accept, send or parse.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, ParamSpec, TypeVar

import httpx
from airflow.sdk import BaseHook

from airflow_provider_runwatch.core.calls import ApiRequest, Call
from airflow_provider_runwatch.core.cancels import CLAIMS
from airflow_provider_runwatch.core.clients import ApiClient, AsyncApiClient, ClientOptions, limits_from_extras
from airflow_provider_runwatch.core.connection import ConnectionSettings, VendorSpec, settings_from_connection
from airflow_provider_runwatch.core.errors import (
    AuthError,
    ConfigurationError,
    NotFoundError,
    RunwatchError,
    VendorAPIError,
    with_hint,
)
from airflow_provider_runwatch.core.network import register_secrets
from airflow_provider_runwatch.core.retry import NO_RETRY, RetryPolicy
from airflow_provider_runwatch.provider_info import connection_form_widgets, ui_field_behaviour

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.adapter import RunAdapter, RunResult
    from airflow_provider_runwatch.core.models import RunStatus

T = TypeVar("T")
P = ParamSpec("P")
H = TypeVar("H", bound="RunwatchHook")

#: A cancel must not hold up a kill or a failing task for long: both :meth:`RunwatchHook.cancel` and
#: :meth:`RunwatchHook.acancel` send it on a client of their own with :data:`CANCEL_HTTP_TIMEOUT`, at most
#: :data:`CANCEL_RETRY`'s two attempts (so about 15 s at worst), and the asyncio one is also cut at this
#: bound as a whole (its connection lookup included).
CANCEL_TIMEOUT_SECONDS = 15.0
CANCEL_RETRY = RetryPolicy(max_attempts=2, max_delay=2.0)
CANCEL_HTTP_TIMEOUT = httpx.Timeout(6.0, connect=3.0)


class RunwatchHook(BaseHook):
    """Base of the vendor hooks. Subclasses set the class attributes and add vendor operations."""

    vendor: ClassVar[VendorSpec]
    conn_name_attr = "conn_id"
    default_conn_name: ClassVar[str]
    conn_type: ClassVar[str]
    hook_name: ClassVar[str]

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
            register_secrets(self._settings.network)
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
        return ClientOptions(
            headers={"Authorization": f"Bearer {settings.api_key}"}, retry=self.retry, **limits_from_extras(settings)
        )

    # -- blocking -----------------------------------------------------------------------------------
    @property
    def client(self) -> ApiClient:
        if self._client is None:
            settings = self.settings
            self._client = ApiClient(settings, self.client_options(settings))
        return self._client

    def call(self, call: Call[T], *, retry: RetryPolicy | None = None, within: float | None = None) -> T:
        """Send ``call`` on the hook's client; ``within``: seconds each attempt may take as a whole (the
        caller's deadline), at most the connection's total limit."""
        try:
            return self.client.call(call, retry=self.retry_for(call, retry), within=within)
        except VendorAPIError as exc:
            raise self.explain(exc, call.request) from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- asyncio ------------------------------------------------------------------------------------
    @asynccontextmanager
    async def async_client(self) -> AsyncIterator[AsyncApiClient]:
        """One client for a block of calls (a trigger holds one for its whole life)."""
        settings = await self.aget_settings()
        client = AsyncApiClient(settings, self.client_options(settings))
        try:
            yield client
        finally:
            await client.aclose()

    async def acall(self, call: Call[T], *, retry: RetryPolicy | None = None, within: float | None = None) -> T:
        async with self.async_client() as client:
            return await self.asend(client, call, retry=retry, within=within)

    async def asend(
        self, client: AsyncApiClient, call: Call[T], *, retry: RetryPolicy | None = None, within: float | None = None
    ) -> T:
        """Send ``call`` on a client the caller holds (a trigger holds one for its life), with the same retry
        choice and the same error explanation as :meth:`call`, so a deferred task fails with the very words
        of a blocking one."""
        try:
            return await client.call(call, retry=self.retry_for(call, retry), within=within)
        except VendorAPIError as exc:
            raise self.explained(exc, call.request) from None

    def explained(self, error: Exception, request: ApiRequest) -> Exception:
        """``error`` as :meth:`asend` raises it: a vendor error with its hint (:meth:`explain`), anything else
        as it is. For a loop that sends on the client itself and catches its errors, as the triggers' poll
        loop does (one await less per poll than :meth:`asend`, the same words)."""
        return self.explain(error, request) if isinstance(error, VendorAPIError) else error

    # -- what every call shares, on both paths --------------------------------------------------------
    def retry_for(self, call: Call[Any], retry: RetryPolicy | None) -> RetryPolicy | None:
        """The retry policy ``call`` is sent with (``None``: the client's); vendors refine it per endpoint."""
        return retry

    def explain(self, error: VendorAPIError, request: ApiRequest) -> VendorAPIError:
        """``error`` with one sentence on what the user can do: the only place a vendor error gets its hint,
        for the blocking path, the triggers and the sensors alike. Never quotes a secret: it names the
        connection and the field to fix, not what is in it."""
        if isinstance(error, AuthError):
            return with_hint(error, self.auth_hint())
        if isinstance(error, NotFoundError):
            return with_hint(
                error,
                f"It is gone, or it is not visible to the API key in connection '{self.conn_id}' "
                "(another account, team or key): check the id and that the connection holds the key that "
                "started it",
            )
        return error

    def auth_hint(self) -> str:
        """What to fix after a 401/403; vendors name their other identity fields."""
        return f"Check the API key in the Password field of connection '{self.conn_id}'"

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
            with ApiClient(settings, self._cancel_options(settings)) as client:
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
        """The triggers' kill paths, where one trigger may run in two triggerers at once: the cancel goes out
        once per process (:mod:`~airflow_provider_runwatch.core.cancels`), and not at all for a run that is
        already over (another triggerer's instance cancelled it first, or it ended)."""
        if not adapter.cancel_supported:  # say so even when the connection cannot be read
            self._warn_no_cancel(adapter, run_id)
            return False
        settings = await self.aget_settings()
        call = adapter.cancel_call(settings, run_id)
        if call is None:
            self._warn_no_cancel(adapter, run_id)
            return False
        vendor = self.vendor.display_name
        if not CLAIMS.claim(self.vendor.name, run_id):
            self.log.info("%s %s %s: this process already asked to cancel it", vendor, adapter.noun, run_id)
            return False
        try:
            async with AsyncApiClient(settings, self._cancel_options(settings)) as client:
                try:
                    status = await client.call(adapter.status_call(settings, run_id), retry=NO_RETRY)
                    over = status.state.terminal
                except Exception:  # cannot tell: cancel as asked
                    over = False
                if over:
                    self.log.info(
                        "%s %s %s is already %s: not cancelling", vendor, adapter.noun, run_id, status.vendor_state
                    )
                    return False
                await client.call(call, retry=CANCEL_RETRY)
        except BaseException:
            CLAIMS.release(self.vendor.name, run_id)
            raise
        self.log.info("Asked %s to cancel %s %s", vendor, adapter.noun, run_id)
        return True

    def _cancel_options(self, settings: ConnectionSettings) -> ClientOptions:
        """The connection's client options with the short timeouts of a cancel (both paths)."""
        return replace(self.client_options(settings), timeout=CANCEL_HTTP_TIMEOUT)

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
            if said.startswith("HTML page"):
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


def twins(
    build: Callable[Concatenate[H, ConnectionSettings, P], Call[T]],
) -> tuple[Callable[Concatenate[H, P], T], Callable[Concatenate[H, P], Coroutine[Any, Any, T]]]:
    """A hook operation's blocking method and its asyncio twin, generated from one definition.

    ``build(hook, settings, *args)`` returns the :class:`~airflow_provider_runwatch.core.calls.Call` the
    operation sends (pure: the vendor module builds it). The blocking method reads the settings from the
    connection and sends through :meth:`RunwatchHook.call`; the asyncio one reads them without blocking and
    sends through :meth:`RunwatchHook.acall`. Both show ``build``'s docstring and its signature without
    ``settings``, so the two can never differ in what they accept or send (the hand-written alternative is
    two copies of every signature).
    """
    signature = inspect.signature(build)
    params = list(signature.parameters.values())
    answer = signature.return_annotation
    if isinstance(answer, str) and answer.startswith("Call[") and answer.endswith("]"):
        answer = answer[5:-1]  # what the method returns: the call's parsed answer
    public = signature.replace(parameters=[params[0], *params[2:]], return_annotation=answer)

    def blocking(self: H, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.call(build(self, self.settings, *args, **kwargs))

    async def asyncio_twin(self: H, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.acall(build(self, await self.aget_settings(), *args, **kwargs))

    name = build.__name__.lstrip("_")
    for method, method_name in ((blocking, name), (asyncio_twin, f"a{name}")):
        functools.update_wrapper(method, build, assigned=("__module__", "__doc__"), updated=())
        method.__name__ = method_name
        method.__qualname__ = build.__qualname__.rsplit(".", 1)[0] + "." + method_name
        setattr(method, "__signature__", public)  # noqa: B010 - inspect.signature reads it
    return blocking, asyncio_twin


def _mask(secret: str) -> None:
    """Register the key with Airflow's log masker (worker side only; it is not safe inside the loop)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - very old SDKs
        return
    mask_secret(secret)
