"""Transports shared by the async clients of one event loop, and the TLS context shared by every client.

Why shared: a triggerer holds thousands of clients (one per trigger), each polling every few seconds. One
:class:`~airflow_provider_runwatch.core.transport.LeanTransport` per event loop, its connections opened on
demand and reused by whichever trigger polls next, keeps the sockets to a handful instead of one per trigger
(docs/performance.md measures it). The lease is counted: idle connections close with the last client.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from airflow_provider_runwatch.core import transport as lean
from airflow_provider_runwatch.core.network import TlsSettings, ssl_context

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.clients import Verify
    from airflow_provider_runwatch.core.connection import ConnectionSettings
    from airflow_provider_runwatch.core.network import Proxy

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


def shared_ssl_context() -> ssl.SSLContext:
    """The default TLS context (certifi's CAs), one per process: see :func:`~.network.ssl_context`."""
    return ssl_context(TlsSettings())


def httpx_proxy(settings: ConnectionSettings) -> httpx.Proxy | None:
    """The connection's proxy for its base URL, for httpx's own transports (``Proxy-Authorization`` from the
    URL's credentials, CONNECT for https)."""
    chosen = settings.network.proxy_for_url(settings.base_url)
    return httpx.Proxy(chosen.url) if chosen is not None else None


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


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[ssl.SSLContext, Proxy | None], _Lease]] = (
    weakref.WeakKeyDictionary()
)


class TransportHandle:
    """What one async client holds: a shared lean transport (counted), a lean one of its own, or httpx's
    transport (one per client: httpcore's pool does not scale when shared)."""

    def __init__(self, verify: Verify, proxy: Proxy | None = None) -> None:
        context = ssl_context_for(verify)
        #: The proxy every request of this handle goes through (None: direct); shared per (context, proxy).
        self.proxy = proxy
        self._lease: _Lease | None = None
        self.lean: lean.LeanTransport | None = None
        self.httpx: httpx.AsyncHTTPTransport | None = None
        if LEAN_TRANSPORT and lean.AVAILABLE and SHARE_CONNECTIONS:
            by_context = _shared.setdefault(asyncio.get_running_loop(), {})
            lease = by_context.get((context, proxy))
            if lease is None:
                lease = by_context[(context, proxy)] = _Lease(
                    lean.LeanTransport(
                        ssl_context=context,
                        max_connections=SHARED_MAX_CONNECTIONS,
                        keepalive_expiry=KEEPALIVE_EXPIRY,
                        proxy=proxy,
                    )
                )
            lease.users += 1
            self._lease = lease
            self.lean = lease.transport
        elif LEAN_TRANSPORT and lean.AVAILABLE:
            self.lean = lean.LeanTransport(ssl_context=context, keepalive_expiry=KEEPALIVE_EXPIRY, proxy=proxy)
        else:
            self.httpx = httpx.AsyncHTTPTransport(
                verify=context, trust_env=False, proxy=httpx.Proxy(proxy.url) if proxy is not None else None
            )

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
