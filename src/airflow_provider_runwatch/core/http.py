"""The HTTP layer shared by every vendor: request descriptions, response interpretation, and one sync and
one async client that both use them, so the worker path and the triggerer path cannot drift apart.

Sans-I/O split: vendor modules build :class:`ApiRequest` objects and parse JSON into models with pure
functions (bundled as a :class:`Call`); only the two clients here touch the network.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

import httpx

from airflow_provider_runwatch import __version__
from airflow_provider_runwatch.core import transport as _lean
from airflow_provider_runwatch.core.errors import (
    AuthError,
    ClientError,
    ConflictError,
    MalformedResponseError,
    NotFoundError,
    ProxyError,
    RateLimitedError,
    ResponseTooLargeError,
    ServerError,
    TlsError,
    TransportError,
    VendorAPIError,
    shorten,
)
from airflow_provider_runwatch.core.network import TlsSettings, context_for, explain_failure, ssl_context
from airflow_provider_runwatch.core.redact import redact

if TYPE_CHECKING:
    from types import TracebackType

    from airflow_provider_runwatch.core.connection import ConnectionSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
U = TypeVar("U")

#: Default cap on a response body. Gumloop documents 10 MB request bodies and conversations can carry
#: files, so answers of tens of MB are plausible; beyond this something is wrong.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
USER_AGENT = f"airflow-provider-runwatch/{__version__}"


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One vendor request, described without doing it.

    ``endpoint`` is the path template used in messages and logs (``GET /api/agent/chat/{runId}``),
    so ids in errors come from our own words. ``idempotent`` requests (GETs) may be retried freely;
    the others only when the request provably never reached the server or was refused with 429.
    """

    method: Literal["GET", "POST", "DELETE"]
    path: str
    endpoint: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] | None = None
    #: Name of a vendor rate budget this request draws from ("poll", "execute"), or None for no budget.
    bucket: str | None = None

    @property
    def idempotent(self) -> bool:
        return self.method == "GET"


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """A request plus the pure function that turns its JSON answer into a typed value."""

    request: ApiRequest
    parse: Callable[[Any], T]

    def map(self, then: Callable[[T], U]) -> Call[U]:
        """The same request, its parsed answer passed on through ``then``."""
        parse = self.parse
        return Call(self.request, lambda payload: then(parse(payload)))


@dataclass(frozen=True)
class RetryPolicy:
    """Retry and backoff for single calls, and the backoff shared by the polling core.

    Exponential backoff with "equal jitter" (half fixed, half random) so retries of many triggers that
    failed together spread out without ever dropping to zero. A vendor's ``Retry-After`` wins over the
    computed delay, capped so a hostile or buggy header cannot park a task for hours.
    """

    max_attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 300.0

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based)."""
        ceiling: float = min(self.max_delay, self.base_delay * 2.0 ** max(0, attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def delay_for(self, error: VendorAPIError, attempt: int) -> float:
        if error.retry_after is not None:
            return min(self.max_retry_after, max(0.0, error.retry_after)) + random.uniform(0, 0.25)
        return self.backoff(attempt)

    def should_retry(self, request: ApiRequest, error: VendorAPIError, attempt: int) -> bool:
        """Retry transient failures, but never a non-idempotent call that may have reached the server."""
        if attempt >= self.max_attempts or not error.transient:
            return False
        if request.idempotent:
            return True
        if isinstance(error, TransportError):
            return not error.reached_server
        return isinstance(error, RateLimitedError)


NO_RETRY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date; ``None`` when absent or junk."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = datetime.now(timezone.utc).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


def error_text(body: bytes, content_type: str | None) -> str:
    """The vendor's error message from any of the body shapes they use.

    ``{"error": "text"}``, ``{"error": {"message": ..., "type": ..., "code": ...}}``, ``{"message": ...}``,
    ``{"detail": ...}``, or plain text / HTML.
    """
    text = body[:4096].decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(body) if (body and (content_type or "").find("json") != -1) or text[:1] in "{[" else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            parts = [str(err.get(k)) for k in ("message", "type", "code") if err.get(k)]
            if parts:
                return parts[0] + (f" [{', '.join(parts[1:])}]" if len(parts) > 1 else "")
        for key in ("error", "message", "detail", "error_message"):
            if isinstance(data.get(key), str) and data[key]:
                return str(data[key])
    return shorten(text, 300) if text else ""


def _retry_after_from(headers: Mapping[str, str], body: bytes) -> float | None:
    hint = parse_retry_after(headers.get("retry-after"))
    if hint is None and body[:1] == b"{":
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if isinstance(data, dict):
            for key in ("retryAfter", "retry_after"):
                if isinstance(data.get(key), (int, float)):
                    return float(data[key])
    return hint


def interpret(
    settings: ConnectionSettings, request: ApiRequest, status: int, headers: Mapping[str, str], body: bytes
) -> Any:
    """Map an HTTP answer to decoded JSON or to the typed error that describes it."""
    vendor = settings.vendor.display_name
    if 200 <= status < 300:
        if not body.strip():
            return {}
        try:
            return json.loads(body)
        except ValueError:
            raise MalformedResponseError(
                vendor=vendor,
                endpoint=request.endpoint,
                status_code=status,
                detail=f"body is not JSON ({len(body)} bytes)",
            ) from None
    detail = redact(error_text(body, headers.get("content-type")), (settings.api_key,))
    kwargs: dict[str, Any] = {
        "vendor": vendor,
        "endpoint": request.endpoint,
        "status_code": status,
        "detail": detail,
    }
    if status in (401, 403):
        raise AuthError(**kwargs)
    if status == 404:
        raise NotFoundError(**kwargs)
    if status == 409:
        raise ConflictError(**kwargs)
    if status == 429:
        raise RateLimitedError(retry_after=_retry_after_from(headers, body), **kwargs)
    if status >= 500:
        raise ServerError(retry_after=parse_retry_after(headers.get("retry-after")), **kwargs)
    if 300 <= status < 400:
        kwargs["detail"] = f"unexpected redirect to {headers.get('location', '?')} (redirects are not followed)"
    raise ClientError(**kwargs)


def _transport_error(settings: ConnectionSettings, request: ApiRequest, exc: httpx.HTTPError) -> TransportError:
    where = {"vendor": settings.vendor.display_name, "endpoint": request.endpoint}
    failure = explain_failure(settings.network, exc, settings.base_url)
    if failure is not None and failure.kind == "tls":
        return TlsError(detail=redact(failure.detail, settings.secrets), **where)
    if failure is not None and failure.kind == "proxy":
        return ProxyError(transient=failure.transient, detail=redact(failure.detail, settings.secrets), **where)
    reached = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    detail = redact(failure.detail if failure is not None else f"{type(exc).__name__}: {exc}", settings.secrets)
    return TransportError(reached_server=reached, detail=detail, **where)


def _httpx_proxy(settings: ConnectionSettings) -> httpx.Proxy | None:
    """The connection's proxy for its base URL, for httpx's own transports (``Proxy-Authorization`` from
    the URL's credentials, CONNECT for https)."""
    chosen = settings.network.proxy_for_url(settings.base_url)
    return httpx.Proxy(chosen.url) if chosen is not None else None


class _CappedBody:
    """Collects a streamed body and stops at the size cap, before memory is spent on it."""

    def __init__(self, settings: ConnectionSettings, request: ApiRequest, response: httpx.Response, cap: int) -> None:
        self.settings, self.request, self.response, self.cap = settings, request, response, cap
        self.chunks: list[bytes] = []
        self.size = 0
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise self._too_large()

    def _too_large(self) -> ResponseTooLargeError:
        return self.too_large(self.settings, self.request, self.response.status_code, self.cap)

    @staticmethod
    def too_large(settings: ConnectionSettings, request: ApiRequest, status: int, cap: int) -> ResponseTooLargeError:
        return ResponseTooLargeError(
            vendor=settings.vendor.display_name,
            endpoint=request.endpoint,
            status_code=status,
            detail=f"body larger than {cap} bytes; raise max_response_bytes on the connection if expected",
        )

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.cap:
            raise self._too_large()
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


def shared_ssl_context() -> ssl.SSLContext:
    """The default TLS context (certifi's CAs), one per process: see :func:`~.network.ssl_context`."""
    return ssl_context(TlsSettings())


class Limiter(Protocol):
    """A per-key request budget shared by every client of one process (see GloriaMundo's 60 polls/min).

    Clients call it before each attempt of a request whose ``bucket`` is set; it returns when the request
    may be sent. The async variant must never block the event loop.
    """

    async def acquire(self, bucket: str) -> None: ...

    def acquire_blocking(self, bucket: str) -> None: ...


@dataclass
class ClientOptions:
    """Per-connection client settings, derived once from the connection by the hook."""

    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    timeout: httpx.Timeout = field(default_factory=lambda: DEFAULT_TIMEOUT)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limiter: Limiter | None = None

    def client_kwargs(self, settings: ConnectionSettings) -> dict[str, Any]:
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
        params = {**self.params, **{k: v for k, v in (request.params or {}).items() if v is not None}}
        kwargs: dict[str, Any] = {"params": params or None, "headers": request.headers}
        if request.json is not None:
            kwargs["json"] = request.json
        return kwargs


class _ClientBase:
    def __init__(self, settings: ConnectionSettings, options: ClientOptions) -> None:
        self.settings = settings
        self.options = options

    def _log_retry(self, request: ApiRequest, error: VendorAPIError, delay: float, attempt: int) -> None:
        log.warning("%s; retry %d/%d in %.1fs", error.describe(), attempt, self.options.retry.max_attempts - 1, delay)


class ApiClient(_ClientBase):
    """Blocking client for the worker: operators, sensors' poke, hooks used directly in tasks."""

    def __init__(self, settings: ConnectionSettings, options: ClientOptions) -> None:
        super().__init__(settings, options)
        self._http = httpx.Client(**options.client_kwargs(settings), proxy=_httpx_proxy(settings))

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, call: Call[T], *, retry: RetryPolicy | None = None) -> T:
        return call.parse(self.send(call.request, retry=retry))

    def send(self, request: ApiRequest, *, retry: RetryPolicy | None = None) -> Any:
        policy = retry or self.options.retry
        attempt = 1
        while True:
            try:
                return self._send_once(request)
            except VendorAPIError as error:
                if not policy.should_retry(request, error, attempt):
                    raise
                delay = policy.delay_for(error, attempt)
                self._log_retry(request, error, delay, attempt)
                time.sleep(delay)
                attempt += 1

    def _send_once(self, request: ApiRequest) -> Any:
        if request.bucket is not None and self.options.limiter is not None:
            self.options.limiter.acquire_blocking(request.bucket)
        try:
            with self._http.stream(request.method, request.path, **self.options.request_kwargs(request)) as resp:
                body = _CappedBody(self.settings, request, resp, self.options.max_response_bytes)
                for chunk in resp.iter_bytes():
                    body.add(chunk)
                return body.interpret()
        except httpx.HTTPError as exc:
            raise _transport_error(self.settings, request, exc) from None


#: Performance levers of the triggerer path, module-level so the benchmark can switch each one off
#: (``tests/benchmarks/bench_triggers.py --set airflow_provider_runwatch.core.http.SHARE_CONNECTIONS=false``);
#: docs/performance.md gives what each one buys. Leave them on.
#: Send through :class:`~airflow_provider_runwatch.core.transport.LeanTransport` (when httptools is importable)
#: instead of httpx's default transport.
#: Escape hatch for deployments: ``RUNWATCH_HTTP_TRANSPORT=httpx`` in the triggerer's environment falls back
#: to httpx's own transport (slower, see docs/performance.md) without a code change.
LEAN_TRANSPORT = os.environ.get("RUNWATCH_HTTP_TRANSPORT", "lean").strip().lower() != "httpx"
#: One transport per event loop for every :class:`AsyncApiClient` (connections opened on demand, reused by
#: whichever trigger polls next) instead of one per client.
SHARE_CONNECTIONS = True
#: Hand requests straight to the transport, built once per request description, instead of through
#: ``httpx.AsyncClient.send`` (URL merging, cookies, auth and redirect machinery per call). Only used when
#: the client options ask for nothing beyond the defaults (no event hooks etc.); otherwise the client is used.
DIRECT_SEND = True

#: Connections per origin of one shared transport: requests beyond it wait (``pool`` timeout).
SHARED_MAX_CONNECTIONS = 256
#: Idle connections are reused for this long; longer than any poll interval, so a poll every few seconds
#: keeps its connection (a server that closes idle connections sooner is noticed when it closes).
KEEPALIVE_EXPIRY = 75.0

# client_kwargs keys the direct path reproduces exactly; anything else (event_hooks, auth, ...) needs the client.
_DIRECT_KEYS = frozenset({"base_url", "headers", "timeout", "follow_redirects", "verify", "trust_env"})
# httpx.AsyncClient's own default headers, which the direct path sends too (Accept-Encoding limited to what
# httpx can always decode).
_CLIENT_DEFAULT_HEADERS = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive"}


class _SharedTransport:
    """A transport used by several clients of one event loop; idle connections close with the last user."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport
        self.users = 0


_shared_transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, _SharedTransport]] = (
    weakref.WeakKeyDictionary()
)


class _Borrowed(httpx.AsyncBaseTransport):
    """A shared transport lent to an ``httpx.AsyncClient``, whose ``aclose`` must not close it."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        return None


def _ssl_context_for(verify: Any) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return shared_ssl_context()


@dataclass(frozen=True, eq=False)
class _Template:
    """The parts of a request that only depend on the connection: base URL, client headers, timeouts."""

    base_url: httpx.URL
    headers: httpx.Headers
    timeout: dict[str, Any]


_templates: weakref.WeakValueDictionary[tuple[Any, ...], _Template] = weakref.WeakValueDictionary()


def _template_for(kwargs: Mapping[str, Any]) -> _Template:
    headers = kwargs.get("headers") or {}
    timeout = httpx.Timeout(kwargs.get("timeout", DEFAULT_TIMEOUT))
    key = (str(kwargs["base_url"]), tuple(sorted((str(k).lower(), str(v)) for k, v in headers.items())), repr(timeout))
    template = _templates.get(key)
    if template is None:
        base = httpx.URL(kwargs["base_url"])
        if not base.raw_path.endswith(b"/"):
            base = base.copy_with(raw_path=base.raw_path + b"/")
        merged = httpx.Headers(_CLIENT_DEFAULT_HEADERS)
        merged.update(headers)
        template = _templates[key] = _Template(base, merged, timeout.as_dict())
    return template


class AsyncApiClient(_ClientBase):
    """Non-blocking client for the triggerer. One per trigger, for the trigger's whole life.

    Cheap to hold in thousands: it owns no connection of its own. With the default levers its requests go
    through one :class:`~airflow_provider_runwatch.core.transport.LeanTransport` per event loop, shared by
    every client of that loop, and a poll's request is built once and re-sent. Client options that need
    ``httpx.AsyncClient`` features (``event_hooks``, ...) get a real client on top of the same transport.
    Timeouts, no redirects, the size cap and the error mapping are the same on every path.
    """

    def __init__(self, settings: ConnectionSettings, options: ClientOptions) -> None:
        super().__init__(settings, options)
        kwargs = options.client_kwargs(settings)
        self._verify: Any = kwargs.get("verify", True)
        self._direct = DIRECT_SEND and kwargs.keys() <= _DIRECT_KEYS and kwargs.get("follow_redirects") is False
        # What every request of this connection shares, shared by the clients of the connection.
        self._template = _template_for(kwargs) if self._direct else None
        self._transport: httpx.AsyncBaseTransport | None = None
        self._shared: _SharedTransport | None = None
        self._client: httpx.AsyncClient | None = None
        # The last GET, ready to send again (a trigger polls with the same request all its life).
        self._last: tuple[ApiRequest, Any] | None = None

    async def __aenter__(self) -> AsyncApiClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        transport, self._transport = self._transport, None
        shared, self._shared = self._shared, None
        self._last = None
        if shared is not None:
            shared.users -= 1
            if shared.users == 0:
                loop = asyncio.get_running_loop()
                by_key = _shared_transports.get(loop, {})
                for key, value in list(by_key.items()):
                    if value is shared:
                        del by_key[key]
                await shared.transport.aclose()
        elif transport is not None:
            await transport.aclose()

    # -- transport and client ------------------------------------------------------------------------
    def _get_transport(self) -> httpx.AsyncBaseTransport:
        """The transport, acquired on first use (inside the running loop it will belong to)."""
        if self._transport is not None:
            return self._transport
        lean = _lean
        context = _ssl_context_for(self._verify)
        proxy = self.settings.network.proxy_for_url(self.settings.base_url)
        use_lean = LEAN_TRANSPORT and lean.AVAILABLE
        if use_lean and SHARE_CONNECTIONS:
            by_key = _shared_transports.setdefault(asyncio.get_running_loop(), {})
            key = (context, proxy, SHARED_MAX_CONNECTIONS, KEEPALIVE_EXPIRY)
            shared = by_key.get(key)
            if shared is None:
                shared = by_key[key] = _SharedTransport(
                    lean.LeanTransport(
                        ssl_context=context,
                        max_connections=SHARED_MAX_CONNECTIONS,
                        keepalive_expiry=KEEPALIVE_EXPIRY,
                        proxy=proxy,
                    )
                )
            shared.users += 1
            self._shared = shared
            self._transport = shared.transport
        elif use_lean:
            self._transport = lean.LeanTransport(ssl_context=context, keepalive_expiry=KEEPALIVE_EXPIRY, proxy=proxy)
        else:
            # httpx's own transport (httpcore): one per client, since its pool does not scale when shared.
            self._transport = httpx.AsyncHTTPTransport(
                verify=context, trust_env=False, proxy=_httpx_proxy(self.settings)
            )
        return self._transport

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            kwargs = self.options.client_kwargs(self.settings)
            self._client = httpx.AsyncClient(**kwargs, transport=_Borrowed(self._get_transport()))
        return self._client

    def _build(self, request: ApiRequest) -> httpx.Request:
        """``request`` as ``httpx.AsyncClient.build_request`` would build it (base URL merge, client headers,
        params, JSON body, timeouts)."""
        template = self._template
        assert template is not None
        url = httpx.URL(request.path)
        if url.is_relative_url:  # httpx's merge: the base path, then the request path
            base = template.base_url
            url = base.copy_with(raw_path=base.raw_path + url.raw_path.lstrip(b"/"))
        kwargs = self.options.request_kwargs(request)
        headers = template.headers
        if kwargs["headers"]:
            headers = httpx.Headers(headers)
            headers.update(kwargs["headers"])
        return httpx.Request(
            request.method,
            url,
            params=kwargs["params"],
            headers=headers,
            json=kwargs.get("json"),
            extensions={"timeout": template.timeout},
        )

    async def _send_direct(self, request: ApiRequest) -> Any:
        """Straight to the transport. Returns what :meth:`_send_once` reads: an ``httpx.Response``, or the lean
        transport's ``(status, raw headers, body)`` for a small answer that came whole."""
        transport = self._get_transport()
        reuse = request.method == "GET" and request.json is None
        last = self._last
        if isinstance(transport, _lean.LeanTransport):
            if last is not None and last[0] is request:
                prepared = last[1]
            else:
                prepared = await _lean.prepare(self._build(request), transport.proxy)
                if reuse:
                    self._last = (request, prepared)
            assert self._template is not None
            return await transport.exchange_prepared(prepared, self._template.timeout)
        if last is not None and last[0] is request:
            built = last[1]
        else:
            built = self._build(request)
            if reuse:
                self._last = (request, built)
        return await transport.handle_async_request(built)

    # -- requests ------------------------------------------------------------------------------------
    async def call(self, call: Call[T], *, retry: RetryPolicy | None = None) -> T:
        return call.parse(await self.send(call.request, retry=retry))

    async def send(self, request: ApiRequest, *, retry: RetryPolicy | None = None) -> Any:
        policy = retry or self.options.retry
        attempt = 1
        while True:
            try:
                return await self._send_once(request)
            except VendorAPIError as error:
                if not policy.should_retry(request, error, attempt):
                    raise
                delay = policy.delay_for(error, attempt)
                self._log_retry(request, error, delay, attempt)
                await asyncio.sleep(delay)
                attempt += 1

    async def _send_once(self, request: ApiRequest) -> Any:
        if request.bucket is not None and self.options.limiter is not None:
            await self.options.limiter.acquire(request.bucket)
        try:
            if self._direct:
                answer = await self._send_direct(request)
                if not isinstance(answer, httpx.Response):
                    # The lean transport's whole, un-encoded answer: no response object, no streaming.
                    status, raw_headers, data = answer
                    if len(data) > self.options.max_response_bytes:
                        raise _CappedBody.too_large(self.settings, request, status, self.options.max_response_bytes)
                    return interpret(self.settings, request, status, _LazyHeaders(raw_headers), data)
                response = answer
            else:
                client = self._get_client()
                response = await client.send(
                    client.build_request(request.method, request.path, **self.options.request_kwargs(request)),
                    stream=True,
                )
            try:
                body = _CappedBody(self.settings, request, response, self.options.max_response_bytes)
                async for chunk in response.aiter_bytes():
                    body.add(chunk)
            finally:
                await response.aclose()
            return body.interpret()
        except httpx.HTTPError as exc:
            raise _transport_error(self.settings, request, exc) from None
