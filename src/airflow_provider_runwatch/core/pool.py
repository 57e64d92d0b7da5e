"""The connection pool of one origin for the lean transport (:mod:`~airflow_provider_runwatch.core.transport`).

O(1) per request: a LIFO of idle connections (the most recently used is the most likely still open), a FIFO
of waiters served in turn, at most ``max_connections`` open; connections are opened on demand, so a pool
shared by every trigger of a loop holds as many connections as there are requests in flight. A connection
freed while requests wait is handed straight to the first waiter; a slot freed by a discarded connection
lets the first waiter open a new one.

Timeouts: ``connect`` (TCP + TLS, and the proxy's CONNECT when there is one; ``asyncio.wait_for``) and
``pool`` (waiting for a free connection, one timer per waiter) are timers because they are rare (a new
connection, a full pool); the read timeout, paid on every poll, is the transport's watchdog instead (see
:meth:`_Connection.wait <airflow_provider_runwatch.core.transport._Connection.wait>`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from airflow_provider_runwatch.core import tunnel as _tunnel

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.transport import LeanTransport, _Connection


class Pool:
    """Connections to one origin: idle ones reused last-in first-out, waiters served first-in first-out."""

    def __init__(self, transport: LeanTransport, scheme: str, host: str, port: int) -> None:
        self.owner = transport
        self.scheme, self.host, self.port = scheme, host, port
        self.idle: list[_Connection] = []
        self.count = 0
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()

    async def acquire(
        self, loop: asyncio.AbstractEventLoop, timeouts: Mapping[str, float | None], deadline: float | None = None
    ) -> _Connection:
        """An open connection: an idle one, a freed one handed over, or a new one; waiting and connecting end
        by ``deadline`` (loop time: the request's total limit) at the latest."""
        now = loop.time()
        expiry = self.owner.keepalive_expiry
        while self.idle:
            conn = self.idle.pop()
            if conn.closed or now - conn.idle_since > expiry:
                conn.close()
                self.count -= 1
                continue
            conn.reused = True
            return conn
        if self.count >= self.owner.max_connections:
            handed = await self._wait_turn(loop, within(timeouts.get("pool"), deadline, loop))
            if handed is not None:
                handed.reused = True
                return handed
        self.count += 1
        try:
            return await self._connect(loop, within(timeouts.get("connect"), deadline, loop))
        except BaseException:
            self.count -= 1
            self._wake_one(None)
            raise

    async def _wait_turn(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> _Connection | None:
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        self.waiters.append(waiter)
        timer = None if timeout is None else loop.call_later(timeout, _expire_pool, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                conn = waiter.result()  # handed over just as we were cancelled: pass it on
                if conn is not None:
                    self.release(conn, reusable=True)
                else:
                    self._wake_one(None)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def _connect(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> _Connection:
        """Directly or through the transport's proxy (core/tunnel.py: CONNECT, then TLS to the origin)."""
        tls = self.owner.ssl_context if self.scheme == "https" else None
        return await _tunnel.open_connection(
            loop,
            lambda: self.owner.new_connection(loop),
            self.host,
            self.port,
            tls=tls,
            proxy=self.owner.proxy,
            timeout=timeout,
        )

    def release(self, conn: _Connection, reusable: bool) -> None:
        conn.release()
        if reusable and not conn.closed:
            conn.idle_since = conn.loop.time()
            if self.waiters and self._wake_one(conn):  # (once per poll: no call when nobody waits)
                return
            self.idle.append(conn)
            return
        conn.close()
        self.count -= 1
        self._wake_one(None)

    def _wake_one(self, conn: _Connection | None) -> bool:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)  # a connection, or None: open one in the slot just freed
                return True
        return False

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()
            self.count -= 1


def _expire_pool(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.PoolTimeout("timed out waiting for a free connection"))


def within(timeout: float | None, deadline: float | None, loop: asyncio.AbstractEventLoop) -> float | None:
    """``timeout``, shortened to what is left until ``deadline`` (loop time)."""
    if deadline is None:
        return timeout
    left = max(0.0, deadline - loop.time())
    return left if timeout is None else min(timeout, left)
