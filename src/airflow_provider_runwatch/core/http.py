"""The HTTP layer's former single module, kept importable: everything it offered, re-exported from the
modules it was split into by concern.

- :mod:`~airflow_provider_runwatch.core.calls`: requests, :class:`Call`, interpreting an answer, error text
  (pure, sans-I/O);
- :mod:`~airflow_provider_runwatch.core.retry`: the retry and backoff policy (pure);
- :mod:`~airflow_provider_runwatch.core.clients`: the blocking and the asyncio client;
- :mod:`~airflow_provider_runwatch.core.shared_transport`: the transports shared per event loop, the TLS
  context shared per process.

New code imports from those modules.
"""

from __future__ import annotations

from airflow_provider_runwatch.core.calls import (
    DEFAULT_MAX_RESPONSE_BYTES,
    USER_AGENT,
    ApiRequest,
    Call,
    error_text,
    interpret,
    parse_retry_after,
)
from airflow_provider_runwatch.core.clients import (
    DEFAULT_TIMEOUT,
    ApiClient,
    AsyncApiClient,
    ClientOptions,
    Limiter,
)
from airflow_provider_runwatch.core.retry import NO_RETRY, RetryPolicy
from airflow_provider_runwatch.core.shared_transport import shared_ssl_context

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "NO_RETRY",
    "USER_AGENT",
    "ApiClient",
    "ApiRequest",
    "AsyncApiClient",
    "Call",
    "ClientOptions",
    "Limiter",
    "RetryPolicy",
    "error_text",
    "interpret",
    "parse_retry_after",
    "shared_ssl_context",
]
