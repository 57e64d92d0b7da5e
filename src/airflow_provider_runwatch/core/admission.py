"""Start admission: a start the vendor refused for capacity or rate is waited for, not failed.

Every vendor caps how many runs one key may start or hold: Gumloop's plan concurrency (429 without
``Retry-After``), GloriaMundo's executions per minute (429 with a ``retry_after`` body field), Puffle's 429
with ``Retry-After``. Such a refusal proves the run was *not* started, so starting again later is safe and is
what the user wants from a nightly batch; a refusal for money (GloriaMundo's spend limit) is not a refusal
for capacity and fails at once.

Pure (no I/O, no clock): the single-run operators (waiting on a timer trigger or sleeping) and the batch
operators (holding back the next starts) ask it, and do the waiting themselves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from airflow_provider_runwatch.core.errors import RateLimitedError, shorten
from airflow_provider_runwatch.core.retry import equal_jitter

#: Default for ``start_timeout``: how long a refused start keeps trying before the task fails.
DEFAULT_START_TIMEOUT = 6 * 3600.0


@dataclass(frozen=True)
class Refusal:
    """A start the vendor refused for capacity or rate; nothing was started."""

    vendor: str
    endpoint: str
    #: The vendor's own words when it gave any ("Agent concurrency limit reached"), else the HTTP reason.
    reason: str
    #: Seconds the vendor asked us to wait (``Retry-After`` or a body field), when it said.
    retry_after: float | None

    def describe(self) -> str:
        """``Puffle POST /api/agent/chat refused the start (HTTP 429: Too many runs; Retry-After 30 s)``."""
        after = f"; Retry-After {self.retry_after:g} s" if self.retry_after is not None else ""
        return f"{self.vendor} {self.endpoint} refused the start (HTTP 429: {self.reason}{after})"


def refusal_of(error: BaseException) -> Refusal | None:
    """The refusal ``error`` is, when it is one a later start can get past; ``None`` for anything else.

    Only a 429 (:class:`~airflow_provider_runwatch.core.errors.RateLimitedError`) qualifies: vendors send it
    before creating anything. GloriaMundo's spend-limit 429 is raised as a client error, so it never gets here.
    """
    if not isinstance(error, RateLimitedError):
        return None
    reason = shorten(error.detail, 200) if error.detail else "rate or concurrency limit"
    return Refusal(vendor=error.vendor, endpoint=error.endpoint, reason=reason, retry_after=error.retry_after)


@dataclass(frozen=True)
class AdmissionBackoff:
    """How long to wait before starting again after a refusal.

    ``Retry-After`` wins (plus up to 10 % jitter so a batch of refused tasks does not return in one burst),
    capped at ``max_retry_after``. Without it (Gumloop's concurrency refusal) an exponential backoff with
    "equal jitter" from ``base`` up to ``ceiling``: a slot frees when some run ends, which nobody announces.
    """

    base: float = 5.0
    ceiling: float = 60.0
    max_retry_after: float = 900.0

    def delay(self, refusal: Refusal, attempt: int) -> float:
        """Seconds before start attempt ``attempt + 1`` (``attempt``: refusals so far, 1-based)."""
        if refusal.retry_after is not None:
            wait = min(self.max_retry_after, max(1.0, refusal.retry_after))
            return wait + random.uniform(0, wait * 0.1)
        return equal_jitter(self.base, self.ceiling, attempt)


DEFAULT_BACKOFF = AdmissionBackoff()


def admission_wait(
    backoff: AdmissionBackoff,
    refusal: Refusal,
    attempts: int,
    *,
    now: float,
    first_refused: float,
    start_timeout: float | None,
    deadline: float | None,
) -> float | None:
    """Seconds to wait before starting again, or ``None`` when no time is left to try again.

    ``attempts``: refusals so far (1-based). ``start_timeout`` is counted from ``first_refused``
    (``None``: never wait); ``deadline`` is the task's own (``execution_timeout`` less its margin), which
    a wait never passes. The last wait is cut to what is left, so the final attempt lands on the limit.
    """
    if start_timeout is None:
        return None
    bound = first_refused + start_timeout
    if deadline is not None:
        bound = min(bound, deadline)
    left = bound - now
    if left <= 0:
        return None
    return min(backoff.delay(refusal, attempts), left)


def span(seconds: float) -> str:
    """``0.8 s``, ``42 s``, ``12 min 5 s``, ``6 h``, ``2 h 30 min``: a duration as people say it."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def give_up_line(
    refusal: Refusal, attempts: int, waited: float, start_timeout: float | None, *, by_deadline: bool
) -> str:
    """The one failure line of a start that stayed refused: the limit, how long and how often, what to do."""
    more = (
        "run fewer of these tasks at once (a pool, max_active_tis_per_dag or max_active_tasks), "
        "or use the vendor's batch operator for many items"
    )
    if start_timeout is None:
        return (
            f"{refusal.describe()}; start_timeout=None fails at the first refusal (nothing was started). "
            f"Set start_timeout to wait for capacity, or {more}."
        )
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    if by_deadline:
        return (
            f"{refusal.describe()}; still refused after {tries} over {span(waited)}, and execution_timeout "
            f"leaves no time to wait longer (nothing was started). Raise execution_timeout, or {more}."
        )
    return (
        f"{refusal.describe()}; still refused after {tries} over {span(waited)} "
        f"(start_timeout {span(start_timeout)}; nothing was started). Raise start_timeout, or {more}."
    )
