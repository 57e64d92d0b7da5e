"""Retry and backoff policy: which failed call is worth another attempt, and after how long.

Pure (no I/O, no clock): the clients and the polling core ask it, and do the waiting themselves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_runwatch.core.errors import RateLimitedError, TransportError, VendorAPIError

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.calls import ApiRequest


def equal_jitter(base: float, ceiling: float, attempt: int) -> float:
    """Exponential backoff with "equal jitter": ``base`` doubling per ``attempt`` (1-based) up to ``ceiling``,
    half of it fixed and half random, so waiters that failed together spread out but never wait zero."""
    top: float = min(ceiling, base * 2.0 ** max(0, attempt - 1))
    return top / 2 + random.uniform(0, top / 2)


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
    #: Retry a start (any non-idempotent call) the vendor refused with 429. ``False`` when the caller admits
    #: such a start itself (:mod:`~airflow_provider_runwatch.core.admission`): the operators wait for capacity
    #: on the triggerer or start later in the batch, instead of sleeping on the worker here.
    refused_starts: bool = True

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based)."""
        return equal_jitter(self.base_delay, self.max_delay, attempt)

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
        return self.refused_starts and isinstance(error, RateLimitedError)


#: One attempt: the caller (the polling core, a cancel) owns what happens after a failure.
NO_RETRY = RetryPolicy(max_attempts=1)
#: The operators' policy: transient failures retried as usual, a refused start left to admission.
ADMITTED_STARTS = RetryPolicy(refused_starts=False)
