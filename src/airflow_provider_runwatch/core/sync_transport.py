"""The worker's transport: httpx's own blocking transport, on a network backend that bounds each request as a
whole.

httpx's sync API has no total timeout: its limits are per step (connect, each write, each read, where a read is
the gap between two arrivals of bytes). A vendor or a proxy that trickles an answer's head one byte at a time
therefore holds a blocking request open as long as it likes. The streams here cut every step's timeout to the
time left to the request's deadline, which the client sets around one request (:func:`bounded`); a step that
has no time left fails as a timeout saying the total was exceeded. No thread and no timer per request: one clock
read per socket operation, the socket's own timeout doing the waiting (measured in
tests/benchmarks/bench_deadline.py).

The async client needs none of this: its lean transport checks the deadline itself (core/transport.py).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

log = logging.getLogger(__name__)

#: The message of a request cut at its total limit (both clients say it).
TOTAL_EXCEEDED = "the answer did not arrive within the request's total time limit (%gs)"

#: (monotonic deadline, total seconds) of the request this thread is sending, if any.
_BOUND: ContextVar[tuple[float, float] | None] = ContextVar("runwatch_request_bound", default=None)


@contextmanager
def bounded(ends: float, total: float) -> Iterator[None]:
    """Every socket operation of this thread, until the block ends, finishes by ``ends`` (``time.monotonic``);
    ``total`` is what the error says the limit was."""
    token = _BOUND.set((ends, total))
    try:
        yield
    finally:
        _BOUND.reset(token)


def _cut(timeout: float | None, error: type[httpcore.TimeoutException]) -> tuple[float | None, float | None]:
    """``timeout`` cut to the time left, and the total when the cut applies; raises ``error`` when none is left."""
    bound = _BOUND.get()
    if bound is None:
        return timeout, None
    left = bound[0] - time.monotonic()
    if left <= 0:
        raise error(TOTAL_EXCEEDED % bound[1])
    if timeout is None or left < timeout:
        return left, bound[1]
    return timeout, None


class _BoundedStream(httpcore.NetworkStream):
    """A connection's stream whose reads, writes and TLS handshake end by the request's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        cut, total = _cut(timeout, httpcore.ReadTimeout)
        try:
            return self._stream.read(max_bytes, cut)
        except httpcore.ReadTimeout:
            if total is None:
                raise
            raise httpcore.ReadTimeout(TOTAL_EXCEEDED % total) from None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        cut, total = _cut(timeout, httpcore.WriteTimeout)
        try:
            self._stream.write(buffer, cut)
        except httpcore.WriteTimeout:
            if total is None:
                raise
            raise httpcore.WriteTimeout(TOTAL_EXCEEDED % total) from None

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        cut, _ = _cut(timeout, httpcore.ConnectTimeout)
        return _BoundedStream(self._stream.start_tls(ssl_context, server_hostname, cut))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _BoundedBackend(httpcore.NetworkBackend):
    """httpcore's network backend whose connections are :class:`_BoundedStream`\\ s."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        cut, _ = _cut(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, cut, local_address, socket_options)
        return _BoundedStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:  # pragma: no cover - no unix sockets here
        cut, _ = _cut(timeout, httpcore.ConnectTimeout)
        return _BoundedStream(self._backend.connect_unix_socket(path, cut, socket_options))

    def sleep(self, seconds: float) -> None:  # pragma: no cover - httpcore sleeps only between retries
        self._backend.sleep(seconds)


def bounded_transport(verify: ssl.SSLContext | bool, proxy: httpx.Proxy | None) -> httpx.HTTPTransport:
    """httpx's transport (TLS, proxies, pooling as always) whose connections honour :func:`bounded`.

    httpx does not take a network backend, so it is set on the connection pool it builds (httpcore's
    ``ConnectionPool``, ``HTTPProxy`` and ``SOCKSProxy`` all keep it there). Should a new httpx build its pool
    otherwise, requests keep their per-step timeouts and a warning says the total is not enforced.
    """
    transport = httpx.HTTPTransport(verify=verify, proxy=proxy, trust_env=False)
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, httpcore.NetworkBackend):
        pool._network_backend = _BoundedBackend(backend)  # type: ignore[union-attr]
    else:  # pragma: no cover - depends on httpx's internals
        log.warning("httpx %s: cannot bound blocking requests as a whole; per-step timeouts only", httpx.__version__)
    return transport
