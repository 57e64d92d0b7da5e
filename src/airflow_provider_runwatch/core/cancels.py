"""Which runs this process asked to cancel a moment ago: so one kill reaches the vendor once.

Why: Airflow may briefly run one trigger in two triggerers (AIP-40; apache/airflow#27057), and a user's
mark-failed then reaches ``on_kill`` of both instances. Within one process the second instance finds the run
claimed here and sends nothing. Across processes nothing is shared (no extra service is required): the second
one reads the run first and finds it already cancelled, unless both read before either cancel lands, in which
case the vendor gets a second cancel of a run that is already stopping (a no-op at the vendors we wrap).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: How long a claim holds: far longer than a kill path takes, short enough to stay a handful of entries.
CLAIM_SECONDS = 60.0


class CancelClaims:
    """Claims on ``(vendor, run id)`` that expire after :data:`CLAIM_SECONDS`. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._claimed: dict[tuple[str, str], float] = {}

    def claim(self, vendor: str, run_id: str) -> bool:
        """``True`` for the first caller for this run within :data:`CLAIM_SECONDS`, ``False`` after it."""
        now = self._clock()
        with self._lock:
            for key in [k for k, at in self._claimed.items() if now - at > CLAIM_SECONDS]:
                del self._claimed[key]
            if (vendor, run_id) in self._claimed:
                return False
            self._claimed[(vendor, run_id)] = now
            return True

    def clear(self) -> None:
        """Forget every claim (tests: each starts as a fresh process would)."""
        with self._lock:
            self._claimed.clear()

    def release(self, vendor: str, run_id: str) -> None:
        """Forget a claim whose cancel did not go out, so the next kill path may try again."""
        with self._lock:
            self._claimed.pop((vendor, run_id), None)


#: The process's claims (a triggerer's trigger instances share them).
CLAIMS = CancelClaims()
