"""Opening the lean transport's connections, directly or through an HTTP proxy (asyncio I/O).

- no proxy: TCP (and TLS) to the origin;
- an ``http`` origin through a proxy: TCP to the proxy; the caller sends absolute-form requests
  (``GET http://host:port/path``) with ``Proxy-Authorization`` (:func:`forward_headers`);
- an ``https`` origin through a proxy: TCP to the proxy, ``CONNECT host:port`` (:mod:`.proxy` builds and judges
  it), then TLS to the origin inside the tunnel with ``loop.start_tls``, the certificate checked against the
  origin's host name (not the proxy's).

Every failure is an httpx exception, so callers map errors in one place: :class:`~.proxy.ProxyRefused` (an
``httpx.ProxyError``) for a proxy that refused, dropped the tunnel or cannot be reached; ``httpx.ConnectTimeout``
and ``httpx.ConnectError`` (TLS) as for direct connections.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import httpx

from airflow_provider_runwatch.core import proxy as _proxy

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.network import Proxy

__all__ = ["forward_headers", "open_connection"]

P = TypeVar("P", bound=asyncio.Protocol)
R = TypeVar("R")


def forward_headers(proxy: Proxy) -> bytes:
    """Header lines an absolute-form request to ``proxy`` carries (``Proxy-Authorization``, or nothing)."""
    authorization = proxy.authorization
    return b"" if authorization is None else b"Proxy-Authorization: " + authorization.encode("ascii") + b"\r\n"


class _TunnelOpener(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT; nothing else ever arrives on it before TLS starts."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.buffer = b""
        self.done: asyncio.Future[bytes] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = _proxy.answer_complete(self.buffer)
        if end and not self.done.done():
            self.done.set_result(self.buffer[:end])
        elif len(self.buffer) > _proxy.MAX_ANSWER_BYTES and not self.done.done():
            self.done.set_exception(httpx.ProxyError("proxy answer to CONNECT is too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionResetError("closed"))


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], P],
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None,
    proxy: Proxy | None,
    timeout: float | None,
) -> P:
    """A connected protocol from ``factory`` for the origin ``host:port`` (TLS when ``tls`` is given)."""
    if proxy is None:
        try:
            _, protocol = await _within(
                loop.create_connection(
                    factory,
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                    ssl_handshake_timeout=timeout if tls is not None else None,
                ),
                timeout,
                f"connecting to {host}:{port} timed out",
            )
        except OSError as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from None
        return protocol
    try:
        if tls is None:
            _, protocol = await _within(
                loop.create_connection(factory, proxy.host, proxy.port),
                timeout,
                f"connecting to proxy {proxy.display} timed out",
            )
            return protocol
        return await _within(
            _tunnel(loop, factory, host, port, tls, proxy, timeout),
            timeout,
            f"opening a tunnel through proxy {proxy.display} to {_proxy.origin_label(host, port)} timed out",
        )
    except OSError as exc:  # refused, reset, no route: the proxy, not the origin (TLS errors are ConnectError)
        raise _proxy.unreachable(proxy, host, port, exc) from None


async def _tunnel(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], P],
    host: str,
    port: int,
    tls: ssl.SSLContext,
    proxy: Proxy,
    timeout: float | None,
) -> P:
    raw, opener = await loop.create_connection(lambda: _TunnelOpener(loop), proxy.host, proxy.port)
    try:
        raw.write(_proxy.connect_request(proxy, host, port))
        try:
            head = await opener.done
        except ConnectionResetError:
            raise _proxy.dropped(proxy, host, port) from None
        _proxy.parse_connect_answer(head, proxy, host, port)
        protocol = factory()
        secure = await loop.start_tls(raw, protocol, tls, server_hostname=host, ssl_handshake_timeout=timeout)
        if secure is None:  # pragma: no cover - only when the transport closed during the handshake
            raise _proxy.dropped(proxy, host, port)
    except BaseException:
        raw.abort()
        raise
    protocol.connection_made(secure)
    return protocol


async def _within(awaitable: Awaitable[R], timeout: float | None, what: str) -> R:
    """``awaitable`` bounded by ``timeout``; a timeout as ``httpx.ConnectTimeout``, a TLS error as ``ConnectError``."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise httpx.ConnectTimeout(what) from None
    except ssl.SSLError as exc:
        raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from None
