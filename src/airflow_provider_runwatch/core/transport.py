"""A lean HTTP/1.1 transport for httpx on asyncio: what the triggerer's polls ride on.

Why it exists: on the triggerer one event loop polls thousands of runs, and every poll is one small GET. httpx's
default transport (httpcore over anyio, h11 in pure Python) costs about 0.8 ms of CPU per request on the
benchmark machine, several times the request itself; its connection pool does O(connections x waiting requests)
bookkeeping per request, so one pool shared by many triggers collapses. This transport keeps httpx as the API
(it is an :class:`httpx.AsyncBaseTransport`: it takes an :class:`httpx.Request` and returns an
:class:`httpx.Response` whose body streams, raising httpx's exceptions) and does the wire work with an
:class:`asyncio.Protocol` and the ``httptools`` C parser (which ships with uvicorn, hence with Airflow).
When ``httptools`` is missing, :data:`AVAILABLE` is False and the clients use httpx's own transport.

Behaviour:

- HTTP/1.1 keep-alive, one request per connection at a time, ``http`` and ``https`` (a given
  :class:`ssl.SSLContext`, SNI and hostname checks by :mod:`ssl`); no HTTP/2, no redirects (the caller sees
  3xx answers as they are);
- an optional HTTP proxy (:mod:`~airflow_provider_runwatch.core.tunnel`): ``CONNECT`` tunnels for ``https``
  origins, pooled and kept alive like direct connections, absolute-form requests for ``http`` ones;
- the pool per origin (:mod:`~airflow_provider_runwatch.core.pool`) is O(1) per request: a LIFO of idle
  connections, a FIFO of waiters, at most ``max_connections``; connections are opened on demand, so a pool
  shared by every trigger of a loop holds as many connections as there are requests in flight;
- a connection's exchange is an explicit state (:class:`Exchange`: idle, awaiting, head, body, complete) that
  moves only along :data:`_TRANSITIONS`, beside whether its socket is closed;
- httpx's timeouts from ``request.extensions["timeout"]``: ``connect`` (TCP + TLS), ``read`` (between two
  arrivals of bytes), ``write`` (a blocked send), ``pool`` (waiting for a free connection); each raises the
  httpx exception of that name and discards the connection. Two mechanisms on purpose: the read timeout, paid
  on every poll, is a deadline one watchdog per transport checks (see :meth:`_Connection.wait`); the others
  (a new connection, a blocked send, a full pool) are rare and use a timer each;
- a reused connection the server closed while idle is detected when it closes (``connection_lost``), and a GET
  that finds its reused connection closed before any byte of answer is re-sent once on a new connection
  (the usual keep-alive race); any other request sees :class:`httpx.RemoteProtocolError`;
- the body streams: reading pauses above 256 KiB buffered, so a caller that enforces a size cap stops a large
  body before memory is spent on it; a body not read to its end closes the connection;
- idle connections older than ``keepalive_expiry`` are closed instead of reused.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from airflow_provider_runwatch.core import tunnel as _tunnel
from airflow_provider_runwatch.core.pool import Pool, within

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator

    from airflow_provider_runwatch.core.network import Proxy

try:
    import httptools  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard], i.e. with Airflow
    httptools = None  # type: ignore[assignment]

#: Whether the lean transport can be used (``httptools`` importable).
AVAILABLE = httptools is not None

_READ_HIGH_WATER = 256 * 1024
_MAX_HEAD_BYTES = 256 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_EXTENSIONS = {"http_version": b"HTTP/1.1"}
#: An answer whose Content-Length is at most this is read whole before it is returned, even when its head came
#: alone (see :meth:`LeanTransport.exchange_prepared`): a poll's JSON is a few hundred bytes.
SMALL_BODY_BYTES = 64 * 1024
#: How often pending read deadlines are checked: a read timeout fires up to this late.
WATCHDOG_PERIOD = 0.1


def _closed() -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError("Server disconnected without sending a complete response.")


class _Stale(Exception):
    """A reused connection turned out closed before any byte of the answer arrived."""


class Exchange(enum.Enum):
    """Where a connection's current request/answer exchange stands (as h11's per-side states, for the one
    side this client reads). Whether the socket is still open is separate (``closed``): a body delimited by
    the close is COMPLETE on a closed connection."""

    IDLE = "idle"  # no request: in the pool, or just opened
    AWAITING = "awaiting"  # request (being) sent, no byte of the answer yet
    HEAD = "head"  # bytes of the answer's head arrived (or of a 1xx, whose real answer follows)
    BODY = "body"  # the head is complete; the body is arriving
    COMPLETE = "complete"  # the whole answer arrived

    #: Set below from :data:`_TRANSITIONS`: this state's bit, and the bits of the states it may move to. The
    #: move check (:meth:`_Connection._to`, four per poll) and the head-done test are then an AND of two ints:
    #: looking a pair of members up in the set hashed them through a Python-level ``__hash__`` (two calls per
    #: check, about a tenth of what a poll does beyond the base commit's).
    bit: int
    moves: int


#: The only moves an exchange makes; anything else is a bug in this module, not the server's fault.
_TRANSITIONS = frozenset(
    {
        (Exchange.IDLE, Exchange.AWAITING),
        (Exchange.COMPLETE, Exchange.AWAITING),  # the next request on a kept-alive connection
        (Exchange.AWAITING, Exchange.HEAD),
        (Exchange.AWAITING, Exchange.BODY),  # the head is parsed without a separate arrival
        (Exchange.HEAD, Exchange.BODY),
        (Exchange.BODY, Exchange.COMPLETE),
        *((state, Exchange.IDLE) for state in Exchange),  # released to the pool, or discarded
    }
)
for _index, _state in enumerate(Exchange):
    _state.bit = 1 << _index
for _state in Exchange:
    _state.moves = sum(after.bit for before, after in _TRANSITIONS if before is _state)
del _index, _state
#: The states in which the answer's head is complete, as bits.
_HEAD_DONE = Exchange.BODY.bit | Exchange.COMPLETE.bit


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection. Parser callbacks fill the current response; one waiter wakes the reader."""

    def __init__(self, loop: asyncio.AbstractEventLoop, watchdog: _Watchdog) -> None:
        self.loop = loop
        self.watchdog = watchdog
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        # current exchange
        self.state = Exchange.IDLE
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.head_bytes = 0
        self.keep_alive = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        #: Whether the watched bound of the current wait is the request's total limit (else the read timeout).
        self.total_bound = False
        self.paused_reading = False
        self.write_waiter: asyncio.Future[None] | None = None
        self.write_paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is Exchange.IDLE or state is Exchange.COMPLETE:
            # bytes nobody asked for (a 408 before an idle close, garbage): unusable
            self.close()
            return
        if state is Exchange.AWAITING:
            self._to(Exchange.HEAD)
        if state is not Exchange.BODY:
            self.head_bytes += len(data)
            if self.head_bytes > _MAX_HEAD_BYTES:
                self._fail(httpx.RemoteProtocolError(f"response head larger than {_MAX_HEAD_BYTES} bytes"))
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP response: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        state = self.state
        if state is not Exchange.IDLE and state is not Exchange.COMPLETE and self.error is None:
            if state is Exchange.BODY and self._close_delimited():
                self._to(Exchange.COMPLETE)  # a body delimited by the close itself
                self.keep_alive = False
            elif state is Exchange.AWAITING and self.reused:
                self.error = _Stale()
            else:
                self.error = _closed() if exc is None else httpx.ReadError(f"{type(exc).__name__}: {exc}")
        self._wake()
        writer, self.write_waiter = self.write_waiter, None
        if writer is not None and not writer.done():
            writer.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        writer, self.write_waiter = self.write_waiter, None
        if writer is not None and not writer.done():
            writer.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status >= 200:
            self._to(Exchange.BODY)
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _READ_HIGH_WATER and not self.paused_reading and self.transport is not None:
            self.paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status < 200:  # 1xx informational: the real answer follows
            self.headers = []
            self.head_bytes = 0
            return
        self._to(Exchange.COMPLETE)
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # -- used by the transport -------------------------------------------------------------------------------
    def _to(self, state: Exchange) -> None:
        if not self.state.moves & state.bit:
            raise RuntimeError(f"connection state {self.state.value} -> {state.value}: not a valid move")
        self.state = state

    @property
    def head_done(self) -> bool:
        return bool(self.state.bit & _HEAD_DONE)

    @property
    def complete(self) -> bool:
        return self.state is Exchange.COMPLETE

    def _close_delimited(self) -> bool:
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self._wake()
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def reset(self) -> None:
        """A new exchange on this connection: forget the last answer."""
        self._to(Exchange.AWAITING)
        self.status = 0
        self.headers = []
        self.chunks.clear()
        self.buffered = self.head_bytes = 0
        self.keep_alive = False
        self.error = None

    def release(self) -> None:
        """The exchange is over for the caller: the connection goes back to the pool or is discarded.

        Set without :meth:`_to`'s check: every state may move to IDLE (:data:`_TRANSITIONS`), and this runs
        once per poll."""
        self.state = Exchange.IDLE

    async def write(self, data: bytes, timeout: float | None, deadline: float | None = None) -> None:
        """Send ``data``; wait while the socket's buffer is full, at most ``timeout`` seconds and never past
        ``deadline`` (loop time). A poll's request fits the buffer, so the bound is worked out only then."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise _Stale() if self.reused else _closed()
        self.transport.write(data)
        if self.write_paused:
            self.write_waiter = self.loop.create_future()
            await self._wait(self.write_waiter, within(timeout, deadline, self.loop), httpx.WriteTimeout)
            if self.closed and not self.complete:
                raise self.error or httpx.WriteError("connection closed while sending the request")

    async def wait(self, timeout: float | None, deadline: float | None = None) -> None:
        """Wait for the next parser event (head, body bytes, end, error), at most ``timeout`` seconds and never
        past ``deadline`` (loop time: the request's total limit, which a trickle of bytes cannot stretch).

        The read timeout is a deadline the transport's watchdog checks, not a timer per wait: a cancelled
        timer stays in the loop's heap until cleaned up, and one per poll, living as long as the sleeping
        triggers' timers, is garbage the collector's oldest generation keeps having to walk.
        """
        waiter = self.waiter = self.loop.create_future()
        if timeout is not None:
            when = self.loop.time() + timeout
            total = deadline is not None and deadline <= when
            if total:
                when = deadline  # type: ignore[assignment]
        elif deadline is not None:
            when, total = deadline, True
        else:
            await waiter
            return
        self.total_bound = total
        self.watchdog.watch(self, when)
        try:
            await waiter
        finally:
            self.watchdog.unwatch(self)

    def read_timed_out(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            total = self.total_bound
            text = "the answer did not arrive within the request's total time limit" if total else "timed out"
            waiter.set_exception(httpx.ReadTimeout(text))

    async def _wait(
        self, future: asyncio.Future[None], timeout: float | None, kind: type[httpx.TimeoutException]
    ) -> None:
        if timeout is None:
            await future
            return
        timer = self.loop.call_later(timeout, _expire, future, kind)
        try:
            await future
        finally:
            timer.cancel()

    def take(self) -> bytes:
        if not self.chunks:
            return b""
        data = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.paused_reading and self.transport is not None and not self.closed:
            self.paused_reading = False
            self.transport.resume_reading()
        return data


class _Watchdog:
    """Read deadlines of the connections of one transport, checked by one timer every :data:`WATCHDOG_PERIOD`
    seconds while any is pending (so a read timeout fires up to that much late)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.deadlines: dict[_Connection, float] = {}
        self.handle: asyncio.TimerHandle | None = None

    def watch(self, conn: _Connection, deadline: float) -> None:
        self.deadlines[conn] = deadline
        if self.handle is None:
            self.handle = self.loop.call_later(WATCHDOG_PERIOD, self.check)

    def unwatch(self, conn: _Connection) -> None:
        self.deadlines.pop(conn, None)

    def check(self) -> None:
        self.handle = None
        now = self.loop.time()
        for conn in [c for c, deadline in self.deadlines.items() if deadline <= now]:
            del self.deadlines[conn]
            conn.read_timed_out()
        if self.deadlines:
            self.handle = self.loop.call_later(WATCHDOG_PERIOD, self.check)


def _expire(future: asyncio.Future[None], kind: type[httpx.TimeoutException]) -> None:
    if not future.done():
        future.set_exception(kind("timed out"))


class _ResponseBody(httpx.AsyncByteStream):
    def __init__(self, pool: Pool, conn: _Connection, read_timeout: float | None, deadline: float | None) -> None:
        self.pool, self.conn, self.read_timeout, self.deadline = pool, conn, read_timeout, deadline
        self.released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self.conn
        while True:
            data = conn.take()
            if data:
                yield data
                continue
            if conn.complete:
                return
            if conn.error is not None:
                raise conn.error if not isinstance(conn.error, _Stale) else _closed()
            try:
                await conn.wait(self.read_timeout, self.deadline)
            except BaseException:
                conn.abort()
                raise

    async def aclose(self) -> None:
        if not self.released:
            self.released = True
            conn = self.conn
            clean = conn.complete and conn.keep_alive and not conn.chunks and conn.error is None
            self.pool.release(conn, reusable=clean)


class LeanTransport(httpx.AsyncBaseTransport):
    """An :class:`httpx.AsyncBaseTransport` over asyncio + httptools (see the module docstring).

    ``max_connections`` bounds the connections per origin (requests beyond it wait, up to the pool timeout).
    Use one instance per event loop: connections belong to the loop that opened them.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 256,
        keepalive_expiry: float = 60.0,
        proxy: Proxy | None = None,
    ) -> None:
        if not AVAILABLE:  # pragma: no cover
            raise RuntimeError("LeanTransport needs httptools")
        self.ssl_context = ssl_context
        #: Every connection goes through this HTTP proxy (core/tunnel.py): pools are then per (proxy, origin).
        self.proxy = proxy
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._pools: dict[tuple[str, str, int], Pool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: _Watchdog | None = None

    def new_connection(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        """A connection (protocol) for the pool to open."""
        return _Connection(loop, self.watchdog(loop))

    def watchdog(self, loop: asyncio.AbstractEventLoop) -> _Watchdog:
        if self._watchdog is None:
            self._watchdog = _Watchdog(loop)
        return self._watchdog

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer = await self.exchange_prepared(await prepare(request, self.proxy), request)
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=httpx.ByteStream(answer.body),
            extensions=_EXTENSIONS,
            request=request,
        )

    async def exchange_prepared(
        self, prepared: Prepared, request: httpx.Request | None = None, *, deadline: float | None = None
    ) -> httpx.Response | WholeAnswer:
        """Send a :func:`prepare`-d request (a poll re-sends the same bytes), the whole exchange (pool wait,
        connect, send, head and body) ending by ``deadline`` (loop time) if one is given.

        The answer is a :class:`WholeAnswer` when it arrived whole with its head and without a content-encoding
        (a poll's small JSON: nothing to stream, nothing to decompress before the caller's size cap sees it,
        and the connection is back in the pool already), else a streaming :class:`httpx.Response`.
        :meth:`handle_async_request` is the httpx interface over this.
        """
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a LeanTransport is bound to the event loop that first used it")
        key = prepared.origin
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool(self, *key)
        timeouts = prepared.timeouts
        read_timeout = timeouts.get("read")
        for attempt in (1, 2):
            conn = await pool.acquire(loop, timeouts, deadline)
            conn.reset()
            try:
                await conn.write(prepared.wire, timeouts.get("write"), deadline)
                while not conn.state.bit & _HEAD_DONE:  # (conn.head_done, without a call per check)
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(read_timeout, deadline)
                if conn.state is Exchange.BODY and _small_body(conn.headers):
                    # The head came alone (uvicorn writes head and body apart: 8-24 % of loopback polls read the
                    # head first). A body this small is waited for here, under the same read timeout and deadline
                    # the streamed read would have, so the poll still gets a WholeAnswer, not a streaming Response.
                    while conn.state is Exchange.BODY:
                        if conn.error is not None:
                            raise conn.error
                        await conn.wait(read_timeout, deadline)
            except _Stale:
                pool.release(conn, reusable=False)
                if attempt == 1 and prepared.resendable:
                    continue  # the keep-alive race: the server closed the idle connection as we reused it
                raise _closed() from None
            except BaseException:
                conn.abort()
                pool.release(conn, reusable=False)
                raise
            break
        if conn.state is Exchange.COMPLETE and not _encoded(conn.headers):
            body = conn.take()
            pool.release(conn, reusable=conn.keep_alive)
            return WholeAnswer(conn.status, conn.headers, body)
        return httpx.Response(
            status_code=conn.status,
            headers=conn.headers,
            stream=_ResponseBody(pool, conn, read_timeout, deadline),
            extensions=_EXTENSIONS,
            request=request,
        )

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close_idle()


def _small_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the answer announces (Content-Length) a body of at most :data:`SMALL_BODY_BYTES`. An encoded one
    is waited for too, then streamed for decoding like any encoded answer (:func:`_encoded`)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            return value.strip().isdigit() and int(value) <= SMALL_BODY_BYTES
    return False


def _encoded(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request ready for the wire: its bytes, its origin (scheme, host, port), httpx's timeouts, and whether
    it may be sent again when a reused connection turns out closed before any answer (GETs only)."""

    wire: bytes
    origin: tuple[str, str, int]
    timeouts: Mapping[str, float | None]
    resendable: bool


@dataclass(slots=True)
class WholeAnswer:
    """An answer that arrived whole with its head and needs no decoding: status, raw headers, body.

    Not frozen on purpose: one is made per poll, and a frozen dataclass sets each field through
    ``object.__setattr__`` (three times the cost). Nothing changes it after the transport made it."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


async def prepare(request: httpx.Request, proxy: Proxy | None = None) -> Prepared:
    """``request`` as bytes for the wire, with its origin and timeouts. The caller keeps it to send again.
    Through a ``proxy``, an ``http`` request is in absolute form with ``Proxy-Authorization`` (an ``https`` one
    goes through a tunnel as it is)."""
    url = request.url
    scheme = url.scheme
    if scheme not in _DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
    origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
    forward = proxy is not None and scheme == "http"
    target = b"http://" + url.netloc + url.raw_path if forward else url.raw_path
    parts = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    if proxy is not None and forward:
        parts.append(_tunnel.forward_headers(proxy))
    for name, value in request.headers.raw:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    body = request.content if isinstance(request.stream, httpx.ByteStream) else await request.aread()
    timeouts = request.extensions.get("timeout") or {}
    return Prepared(b"".join(parts) + body, origin, timeouts, request.method == "GET")
