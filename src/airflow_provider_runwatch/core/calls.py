"""The pure half of the HTTP layer: what a request is, and what an answer means.

Sans-I/O: vendor modules build :class:`ApiRequest` objects and parse JSON into models with pure functions
(bundled as a :class:`Call`); :func:`interpret` turns a status, headers and body into decoded JSON or the
typed error that describes them. Nothing here opens a socket or sleeps; the clients
(:mod:`~airflow_provider_runwatch.core.clients`) do, and both use these same functions, so the worker
path and the triggerer path cannot drift apart.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import httpx

from airflow_provider_runwatch import __version__
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
    shorten,
)
from airflow_provider_runwatch.core.network import explain_failure
from airflow_provider_runwatch.core.proxy import refusal
from airflow_provider_runwatch.core.redact import redact

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.connection import ConnectionSettings

T = TypeVar("T")
U = TypeVar("U")

#: Default cap on a response body. Gumloop documents 10 MB request bodies and conversations can carry
#: files, so answers of tens of MB are plausible; beyond this something is wrong.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
USER_AGENT = f"airflow-provider-runwatch/{__version__}"
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
#: Error bodies up to this size are kept, decoded, on the error (``VendorAPIError.body``) for vendor hints
#: that need more than the message (GloriaMundo's spend-limit reset time).
MAX_KEPT_ERROR_BODY = 64 * 1024


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
    ``{"detail": ...}``; an HTML page as ``HTML page: <its title>``; other text by its first line, cut short.
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
    if (content_type or "").find("html") != -1 or text[:1] == "<":
        # A gateway's or a web server's page: its title says what happened; its markup says nothing.
        match = _TITLE.search(text)
        title = " ".join(html.unescape(match.group(1)).split()) if match else ""
        return f"HTML page: {shorten(title, 120)}" if title else "HTML page (no title)"
    first = text.splitlines()[0] if text else ""
    return shorten(first, 300)


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
        "body": _kept_body(body),
    }
    chosen = settings.network.proxy_for_url(settings.base_url) if status == 407 else None
    if chosen is not None:  # an http origin's request went to the proxy in absolute form, and it wants credentials
        parts = urlsplit(settings.base_url)
        refused = refusal(407, "Proxy Authentication Required", chosen, parts.hostname or "", parts.port or 80)
        raise ProxyError(transient=False, vendor=vendor, endpoint=request.endpoint, detail=str(refused))
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


def _kept_body(body: bytes) -> Any:
    """A small JSON error body, decoded, or ``None``."""
    if not body or len(body) > MAX_KEPT_ERROR_BODY or body.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def too_large(settings: ConnectionSettings, request: ApiRequest, status: int, cap: int) -> ResponseTooLargeError:
    """The error for a body over the connection's size cap (read no further)."""
    return ResponseTooLargeError(
        vendor=settings.vendor.display_name,
        endpoint=request.endpoint,
        status_code=status,
        detail=f"body larger than {cap} bytes; raise max_response_bytes on the connection if expected",
    )


def transport_error(settings: ConnectionSettings, request: ApiRequest, exc: httpx.HTTPError) -> TransportError:
    """The typed error for a request that got no HTTP answer; proxy and TLS failures explained
    (:func:`~airflow_provider_runwatch.core.network.explain_failure`), every secret of the connection redacted."""
    where = {"vendor": settings.vendor.display_name, "endpoint": request.endpoint}
    failure = explain_failure(settings.network, exc, settings.base_url)
    if failure is not None and failure.kind == "tls":
        return TlsError(detail=redact(failure.detail, settings.secrets), **where)
    if failure is not None and failure.kind == "proxy":
        return ProxyError(transient=failure.transient, detail=redact(failure.detail, settings.secrets), **where)
    reached = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    detail = redact(failure.detail if failure is not None else f"{type(exc).__name__}: {exc}", settings.secrets)
    return TransportError(reached_server=reached, detail=detail, **where)
