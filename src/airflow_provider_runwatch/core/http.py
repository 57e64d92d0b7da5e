"""The HTTP layer shared by every vendor: request descriptions, response interpretation, and one sync and
one async client that both use them, so the worker path and the triggerer path cannot drift apart.

Sans-I/O split: vendor modules build :class:`ApiRequest` objects and parse JSON into models with pure
functions (bundled as a :class:`Call`); only the two clients here touch the network.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

import httpx

from airflow_provider_runwatch import __version__
from airflow_provider_runwatch.core.errors import (
    AuthError,
    ClientError,
    ConflictError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    ResponseTooLargeError,
    ServerError,
    TransportError,
    VendorAPIError,
    shorten,
)
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
    reached = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    detail = redact(f"{type(exc).__name__}: {exc}", (settings.api_key,))
    return TransportError(
        reached_server=reached, vendor=settings.vendor.display_name, endpoint=request.endpoint, detail=detail
    )


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
        return ResponseTooLargeError(
            vendor=self.settings.vendor.display_name,
            endpoint=self.request.endpoint,
            status_code=self.response.status_code,
            detail=f"body larger than {self.cap} bytes; raise max_response_bytes on the connection if expected",
        )

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.cap:
            raise self._too_large()
        self.chunks.append(chunk)

    def interpret(self) -> Any:
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        return interpret(self.settings, self.request, self.response.status_code, self.response.headers, body)


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context per process: building one costs ~20 ms of CPU and ~1 MiB, per client otherwise."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


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
            "verify": shared_ssl_context(),
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
        self._http = httpx.Client(**options.client_kwargs(settings))

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


class AsyncApiClient(_ClientBase):
    """Non-blocking client for the triggerer. One per trigger, for the trigger's whole life."""

    def __init__(self, settings: ConnectionSettings, options: ClientOptions) -> None:
        super().__init__(settings, options)
        self._http = httpx.AsyncClient(**options.client_kwargs(settings))

    async def __aenter__(self) -> AsyncApiClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

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
            async with self._http.stream(request.method, request.path, **self.options.request_kwargs(request)) as resp:
                body = _CappedBody(self.settings, request, resp, self.options.max_response_bytes)
                async for chunk in resp.aiter_bytes():
                    body.add(chunk)
                return body.interpret()
        except httpx.HTTPError as exc:
            raise _transport_error(self.settings, request, exc) from None
