"""The two HTTP clients: a blocking one for the worker and an asyncio one for the triggerer.

Both send an :class:`~airflow_provider_runwatch.core.calls.ApiRequest`, read the body under the same size
cap, and hand status, headers and body to the same pure
:func:`~airflow_provider_runwatch.core.calls.interpret`; retries follow the same
:class:`~airflow_provider_runwatch.core.retry.RetryPolicy`. Only the waiting differs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx

from airflow_provider_runwatch.core import transport as lean
from airflow_provider_runwatch.core.calls import (
    DEFAULT_MAX_RESPONSE_BYTES,
    USER_AGENT,
    ApiRequest,
    Call,
    interpret,
    too_large,
    transport_error,
)
from airflow_provider_runwatch.core.errors import (
    ConfigurationError,
    RateLimitedError,
    TransportError,
    VendorAPIError,
)
from airflow_provider_runwatch.core.network import context_for
from airflow_provider_runwatch.core.retry import RetryPolicy
from airflow_provider_runwatch.core.shared_transport import TransportHandle, httpx_proxy
from airflow_provider_runwatch.core.sync_transport import TOTAL_EXCEEDED as _TOTAL_EXCEEDED
from airflow_provider_runwatch.core.sync_transport import bounded, bounded_transport

if TYPE_CHECKING:
    from types import TracebackType

    from airflow_provider_runwatch.core.connection import ConnectionSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: Seconds one request may take as a whole (connect, send, head and body), whatever the gaps between bytes:
#: a vendor or proxy that trickles an answer cannot hold a call open longer than this.
DEFAULT_TOTAL_TIMEOUT = 120.0
#: A client's ``verify``: a TLS context, or ``True`` (the shared default) / ``False`` (no verification).
Verify = ssl.SSLContext | bool


class Limiter(Protocol):
    """A per-key request budget shared by every client of one process (see GloriaMundo's 60 polls/min).

    Clients call it before each attempt of a request whose ``bucket`` is set; it returns ``True`` when the
    request may be sent, or ``False`` after ``within`` seconds (the attempt's time left) when no slot comes that
    soon: the budget wait is part of the request's total, so it cannot hold a wait past its deadline. The
    async variant must never block the event loop. After an attempt the vendor refused with
    429 the clients call :meth:`throttled` with the vendor's ``Retry-After``, so a budget that adapts (other
    processes share the key) slows down and holds its slots until then.
    """

    async def acquire(self, bucket: str, within: float | None = None) -> bool: ...

    def acquire_blocking(self, bucket: str, within: float | None = None) -> bool: ...

    def throttled(self, bucket: str, retry_after: float | None = None) -> None: ...


@dataclass
class ClientOptions:
    """Per-connection client settings, derived once from the connection by the hook."""

    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    timeout: httpx.Timeout = field(default_factory=lambda: DEFAULT_TIMEOUT)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limiter: Limiter | None = None
    #: Which 429s count against the key's budget (None: every one); GloriaMundo's spend limit does not.
    throttles_key: Callable[[VendorAPIError], bool] | None = None
    #: Seconds for one attempt of a request as a whole (see :data:`DEFAULT_TOTAL_TIMEOUT`).
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT

    def total_for(self, within: float | None) -> float:
        """One attempt's total limit: :attr:`total_timeout`, or less when the caller has less time left
        (the wait's deadline)."""
        return self.total_timeout if within is None else max(0.0, min(self.total_timeout, within))

    def client_kwargs(self, settings: ConnectionSettings) -> dict[str, Any]:
        """``httpx.Client`` / ``httpx.AsyncClient`` arguments: base URL, headers, timeouts, TLS, no redirects."""
        return {
            "base_url": settings.base_url,
            "headers": {"User-Agent": USER_AGENT, "Accept": "application/json", **self.headers},
            "timeout": self.timeout,
            "follow_redirects": False,
            # TLS trust and client certificate from the connection (core/network.py), one context per setting;
            # the environment is read there, so httpx must not read it again.
            "verify": context_for(settings.network),
            "trust_env": False,
        }

    def request_kwargs(self, request: ApiRequest) -> dict[str, Any]:
        """``build_request`` arguments of one request: the connection's params under the request's own."""
        params = {**self.params, **{k: v for k, v in (request.params or {}).items() if v is not None}}
        kwargs: dict[str, Any] = {"params": params or None, "headers": request.headers}
        if request.json is not None:
            kwargs["json"] = request.json
        return kwargs


#: Connection extras every connection type reads (see docs/connections.md).
MAX_RESPONSE_BYTES_EXTRA = "max_response_bytes"
HTTP_TIMEOUT_EXTRA = "http_timeout"
_TIMEOUT_KEYS = ("connect", "read", "total")


def limits_from_extras(settings: ConnectionSettings) -> dict[str, Any]:
    """``ClientOptions`` arguments from the connection's ``max_response_bytes`` and ``http_timeout`` extras.

    ``http_timeout`` is a number (the read timeout) or a mapping of ``connect``, ``read`` and ``total``
    seconds (absent keys keep today's values: 10, 30 and :data:`DEFAULT_TOTAL_TIMEOUT`). Not the operators'
    ``timeout``, which bounds a whole wait. Bad values are a :class:`ConfigurationError` naming the extra.
    """
    where = f"{settings.vendor.display_name} connection '{settings.conn_id}'"
    options: dict[str, Any] = {}
    raw_cap = settings.extras.get(MAX_RESPONSE_BYTES_EXTRA)
    if raw_cap not in (None, ""):
        options["max_response_bytes"] = _positive(raw_cap, f"{where}: extra '{MAX_RESPONSE_BYTES_EXTRA}'", whole=True)
    raw = settings.extras.get(HTTP_TIMEOUT_EXTRA)
    if raw in (None, ""):
        return options
    name = f"{where}: extra '{HTTP_TIMEOUT_EXTRA}'"
    if isinstance(raw, str) and raw.strip().startswith("{"):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ConfigurationError(f"{name} is not valid JSON: {raw!r}") from None
    given = dict(raw) if isinstance(raw, Mapping) else {"read": raw}
    unknown = sorted(set(given) - set(_TIMEOUT_KEYS))
    if unknown:
        raise ConfigurationError(f"{name} takes {', '.join(_TIMEOUT_KEYS)} (seconds), not {', '.join(unknown)}")
    seconds = {key: _positive(value, f"{name} '{key}'") for key, value in given.items()}
    options["timeout"] = httpx.Timeout(
        seconds.get("read", DEFAULT_TIMEOUT.read), connect=seconds.get("connect", DEFAULT_TIMEOUT.connect)
    )
    if "total" in seconds:
        options["total_timeout"] = seconds["total"]
    return options


def _positive(value: object, name: str, *, whole: bool = False) -> Any:
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0 or (whole and number != int(number)) or number == float("inf"):
        kind = "a positive whole number of bytes" if whole else "a positive number of seconds"
        raise ConfigurationError(f"{name} must be {kind}, got {value!r}")
    return int(number) if whole else number


class _CappedBody:
    """Collects a streamed body and stops at the size cap, before memory is spent on it."""

    def __init__(self, settings: ConnectionSettings, request: ApiRequest, response: httpx.Response, cap: int) -> None:
        self.settings, self.request, self.response, self.cap = settings, request, response, cap
        self.chunks: list[bytes] = []
        self.size = 0
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise too_large(settings, request, response.status_code, cap)

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.cap:
            raise too_large(self.settings, self.request, self.response.status_code, self.cap)
        self.chunks.append(chunk)

    def interpret(self) -> Any:
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        return interpret(self.settings, self.request, self.response.status_code, self.response.headers, body)


class _LazyHeaders(Mapping[str, str]):
    """Raw response headers as the mapping :func:`interpret` reads; an ``httpx.Headers`` is built only when
    read (error answers), not for every successful poll."""

    __slots__ = ("_headers", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._headers: httpx.Headers | None = None

    def _get(self) -> httpx.Headers:
        if self._headers is None:
            self._headers = httpx.Headers(self._raw)
        return self._headers

    def __getitem__(self, key: str) -> str:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._raw)


class _ClientBase:
    def __init__(self, settings: ConnectionSettings, options: ClientOptions) -> None:
        self.settings = settings
        self.options = options

    def _no_slot(self, request: ApiRequest, total: float) -> VendorAPIError:
        """The error of an attempt that found no slot of the key's rate budget within its total limit: transient,
        and nothing was sent (a start is safe to try again)."""
        return TransportError(
            reached_server=False,
            vendor=self.settings.vendor.display_name,
            endpoint=request.endpoint,
            detail=f"no slot of this key's '{request.bucket}' rate budget within the request's time limit ({total:g}s)",
        )

    def _retry_delay(self, request: ApiRequest, error: VendorAPIError, policy: RetryPolicy, attempt: int) -> float:
        """What follows a failed attempt, the same for both clients: its 429 reaches the key's budget (an adaptive
        one slows down), then either the error is raised (no retry left, or not transient) or the retry is logged
        and its delay returned, for the caller to sleep its own way."""
        options = self.options
        if (
            isinstance(error, RateLimitedError)
            and request.bucket is not None
            and options.limiter is not None
            and (options.throttles_key is None or options.throttles_key(error))
        ):
            options.limiter.throttled(request.bucket, error.retry_after)
        if not policy.should_retry(request, error, attempt):
            raise error
        delay = policy.delay_for(error, attempt)
        log.warning("%s; retry %d/%d in %.1fs", error.describe(), attempt, policy.max_attempts - 1, delay)
        return delay


class ApiClient(_ClientBase):
    """Blocking client for the worker: operators, sensors' poke, hooks used directly in tasks."""

    def __init__(self, settings: ConnectionSettings, options: ClientOptions) -> None:
        super().__init__(settings, options)
        kwargs = options.client_kwargs(settings)
        transport = bounded_transport(kwargs.pop("verify"), httpx_proxy(settings))
        self._http = httpx.Client(**kwargs, transport=transport)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, call: Call[T], *, retry: RetryPolicy | None = None, within: float | None = None) -> T:
        """Send ``call`` and parse its answer; each attempt bounded as a whole by ``within`` seconds (at most
        the connection's total limit)."""
        return call.parse(self.send(call.request, retry=retry, within=within))

    def send(self, request: ApiRequest, *, retry: RetryPolicy | None = None, within: float | None = None) -> Any:
        policy = retry or self.options.retry
        attempt = 1
        while True:
            try:
                return self._send_once(request, self.options.total_for(within))
            except VendorAPIError as error:
                time.sleep(self._retry_delay(request, error, policy, attempt))
            attempt += 1

    def _send_once(self, request: ApiRequest, total: float) -> Any:
        ends = time.monotonic() + total
        limiter = self.options.limiter
        # The budget wait is part of the attempt: it never goes past the attempt's total (or deadline).
        if request.bucket is not None and limiter is not None and not limiter.acquire_blocking(request.bucket, total):
            raise self._no_slot(request, total)
        # httpx's timeouts are per step (a read is the gap between two arrivals of bytes): the transport's
        # streams cut each step to the time left (core/sync_transport.py), head and body alike, so an answer
        # trickled byte by byte ends at the total too.
        left = ends - time.monotonic()
        limits = self.options.timeout.as_dict()
        timeout = httpx.Timeout(**{k: left if v is None else min(v, left) for k, v in limits.items()})
        try:
            if left <= 0:
                raise httpx.ReadTimeout(_TOTAL_EXCEEDED % total)
            kwargs = self.options.request_kwargs(request)
            with (
                bounded(ends, total),
                self._http.stream(request.method, request.path, timeout=timeout, **kwargs) as resp,
            ):
                body = _CappedBody(self.settings, request, resp, self.options.max_response_bytes)
                for chunk in resp.iter_bytes():
                    body.add(chunk)
                return body.interpret()
        except httpx.HTTPError as exc:
            raise transport_error(self.settings, request, exc) from None


class _NoTransport(httpx.AsyncBaseTransport):
    """The transport of a request builder, which never sends."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:  # pragma: no cover
        raise RuntimeError("a request builder does not send")


_builders: weakref.WeakValueDictionary[tuple[str, ...], httpx.AsyncClient] = weakref.WeakValueDictionary()


def _builder_for(kwargs: Mapping[str, Any]) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` used only for ``build_request`` (httpx's own URL merge, headers, params and
    timeouts), shared by the clients of one connection so thousands of triggers hold one, not thousands."""
    headers = kwargs.get("headers") or {}
    key = (
        str(kwargs["base_url"]),
        *sorted(f"{str(k).lower()}: {v}" for k, v in headers.items()),
        repr(kwargs.get("timeout")),
    )
    builder = _builders.get(key)
    if builder is None:
        builder = _builders[key] = httpx.AsyncClient(**kwargs, transport=_NoTransport())
    return builder


class AsyncApiClient(_ClientBase):
    """Non-blocking client for the triggerer. One per trigger, for the trigger's whole life.

    Cheap to hold in thousands: it owns no connection of its own. Requests are built by httpx (one shared
    builder per connection) and go straight to the transport, by default one
    :class:`~airflow_provider_runwatch.core.transport.LeanTransport` per event loop shared by every client of
    that loop (:mod:`~airflow_provider_runwatch.core.shared_transport`). A poll's request is prepared for the
    wire once and re-sent. Timeouts, no redirects, the size cap and the error mapping are those of
    :class:`ApiClient`.
    """

    def __init__(self, settings: ConnectionSettings, options: ClientOptions) -> None:
        super().__init__(settings, options)
        kwargs = options.client_kwargs(settings)
        self._verify: Verify = kwargs.get("verify", True)
        self._builder = _builder_for(kwargs)
        self._handle: TransportHandle | None = None
        self._transport: httpx.AsyncBaseTransport | None = None
        # The last GET, ready for the wire again (a trigger polls with the same request all its life).
        self._last: tuple[ApiRequest, lean.Prepared] | None = None

    async def __aenter__(self) -> AsyncApiClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        handle, self._handle = self._handle, None
        self._transport = None
        self._last = None
        if handle is not None:
            await handle.release()

    def _get_transport(self) -> httpx.AsyncBaseTransport:
        """The transport, acquired on first use (inside the running loop it will belong to)."""
        if self._transport is None:
            self._handle = TransportHandle(self._verify, self.settings.network.proxy_for_url(self.settings.base_url))
            self._transport = self._handle.transport
        return self._transport

    def _build(self, request: ApiRequest) -> httpx.Request:
        return self._builder.build_request(request.method, request.path, **self.options.request_kwargs(request))

    async def _prepare(self, request: ApiRequest) -> lean.Prepared:
        """``request`` ready for the wire, kept when it is a GET (see :meth:`_exchange` for the reuse)."""
        prepared = await lean.prepare(self._build(request), self._handle.proxy if self._handle else None)
        if request.method == "GET" and request.json is None:
            self._last = (request, prepared)
        return prepared

    # -- requests ------------------------------------------------------------------------------------
    async def call(self, call: Call[T], *, retry: RetryPolicy | None = None, within: float | None = None) -> T:
        """Send ``call`` and parse its answer; each attempt bounded as a whole by ``within`` seconds (at most
        the connection's total limit)."""
        return call.parse(await self.send(call.request, retry=retry, within=within))

    async def send(self, request: ApiRequest, *, retry: RetryPolicy | None = None, within: float | None = None) -> Any:
        policy = retry or self.options.retry
        attempt = 1
        while True:
            try:
                return await self._send_once(request, self.options.total_for(within))
            except VendorAPIError as error:
                await asyncio.sleep(self._retry_delay(request, error, policy, attempt))
            attempt += 1

    async def _send_once(self, request: ApiRequest, total: float) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total
        limiter = self.options.limiter
        # The budget wait is part of the attempt: it never goes past the attempt's total (or deadline).
        if request.bucket is not None and limiter is not None and not await limiter.acquire(request.bucket, total):
            raise self._no_slot(request, total)
        try:
            transport = self._get_transport()
            if isinstance(transport, lean.LeanTransport):
                # The total limit is a deadline the transport's watchdog checks: no timer per request.
                return await self._exchange(request, transport, deadline)
            try:
                return await asyncio.wait_for(self._send_httpx(request, transport), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise httpx.ReadTimeout(_TOTAL_EXCEEDED % total) from None
        except httpx.HTTPError as exc:
            raise transport_error(self.settings, request, exc) from None

    async def _send_httpx(self, request: ApiRequest, transport: httpx.AsyncBaseTransport) -> Any:
        """httpx's own transport (the fallback when the lean one is off)."""
        return await self._read(request, await transport.handle_async_request(self._build(request)))

    async def _exchange(self, request: ApiRequest, transport: lean.LeanTransport, deadline: float) -> Any:
        # The same poll's request again is the kept one, without a coroutine of its own per poll.
        last = self._last
        prepared = last[1] if last is not None and last[0] is request else await self._prepare(request)
        answer = await transport.exchange_prepared(prepared, deadline=deadline)
        if isinstance(answer, lean.WholeAnswer):
            # A small answer that came whole with its head: no response object, no streaming.
            cap = self.options.max_response_bytes
            if len(answer.body) > cap:
                raise too_large(self.settings, request, answer.status, cap)
            return interpret(self.settings, request, answer.status, _LazyHeaders(answer.headers), answer.body)
        return await self._read(request, answer)

    async def _read(self, request: ApiRequest, response: httpx.Response) -> Any:
        """A streamed answer, read under the size cap, then interpreted."""
        try:
            body = _CappedBody(self.settings, request, response, self.options.max_response_bytes)
            async for chunk in response.aiter_bytes():
                body.add(chunk)
        finally:
            await response.aclose()
        return body.interpret()
