"""Transports shared by the async clients of one event loop, and the TLS context shared by every client.

Why shared: a triggerer holds thousands of clients (one per trigger), each polling every few seconds. One
:class:`~airflow_provider_runwatch.core.transport.LeanTransport` per event loop, its connections opened on
demand and reused by whichever trigger polls next, keeps the sockets to a handful instead of one per trigger
(docs/performance.md measures it). The lease is counted: idle connections close with the last client.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from airflow_provider_runwatch.core import transport as lean

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.clients import Verify

#: Send through :class:`~airflow_provider_runwatch.core.transport.LeanTransport` (when httptools is
#: importable) instead of httpx's default transport. Escape hatch for deployments:
#: ``RUNWATCH_HTTP_TRANSPORT=httpx`` in the triggerer's environment falls back to httpx's own transport
#: (slower, see docs/performance.md) without a code change.
LEAN_TRANSPORT = os.environ.get("RUNWATCH_HTTP_TRANSPORT", "lean").strip().lower() != "httpx"
#: One transport per event loop for every async client instead of one per client (a lever the benchmark
#: can switch off: ``--set airflow_provider_runwatch.core.shared_transport.SHARE_CONNECTIONS=false``).
SHARE_CONNECTIONS = True
#: Connections per origin of one shared transport: requests beyond it wait (``pool`` timeout).
SHARED_MAX_CONNECTIONS = 256
#: Idle connections are reused for this long; longer than any poll interval, so a poll every few seconds
#: keeps its connection (a server that closes idle connections sooner is noticed when it closes).
KEEPALIVE_EXPIRY = 75.0


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context per process: building one costs ~20 ms of CPU and ~1 MiB, per client otherwise."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def ssl_context_for(verify: Verify) -> ssl.SSLContext:
    """The TLS context for a client's ``verify`` option (a context, ``False``, or ``True`` for the shared one)."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return shared_ssl_context()


@dataclass(eq=False)
class _Lease:
    """A transport shared by several clients of one event loop, and how many hold it."""

    transport: lean.LeanTransport
    users: int = 0


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[ssl.SSLContext, _Lease]] = (
    weakref.WeakKeyDictionary()
)


class TransportHandle:
    """What one async client holds: a shared lean transport (counted), a lean one of its own, or httpx's
    transport (one per client: httpcore's pool does not scale when shared)."""

    def __init__(self, verify: Verify) -> None:
        context = ssl_context_for(verify)
        self._lease: _Lease | None = None
        self.lean: lean.LeanTransport | None = None
        self.httpx: httpx.AsyncHTTPTransport | None = None
        if LEAN_TRANSPORT and lean.AVAILABLE and SHARE_CONNECTIONS:
            by_context = _shared.setdefault(asyncio.get_running_loop(), {})
            lease = by_context.get(context)
            if lease is None:
                lease = by_context[context] = _Lease(
                    lean.LeanTransport(
                        ssl_context=context, max_connections=SHARED_MAX_CONNECTIONS, keepalive_expiry=KEEPALIVE_EXPIRY
                    )
                )
            lease.users += 1
            self._lease = lease
            self.lean = lease.transport
        elif LEAN_TRANSPORT and lean.AVAILABLE:
            self.lean = lean.LeanTransport(ssl_context=context, keepalive_expiry=KEEPALIVE_EXPIRY)
        else:
            self.httpx = httpx.AsyncHTTPTransport(verify=context, trust_env=False)

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        transport = self.lean or self.httpx
        assert transport is not None
        return transport

    async def release(self) -> None:
        """Give the transport back; the last user of a shared one closes its idle connections."""
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.users -= 1
            if lease.users == 0:
                by_context = _shared.get(asyncio.get_running_loop(), {})
                for key, value in list(by_context.items()):
                    if value is lease:
                        del by_context[key]
                await lease.transport.aclose()
            return
        await self.transport.aclose()
