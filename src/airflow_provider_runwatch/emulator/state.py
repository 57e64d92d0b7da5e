"""In-memory state of the emulator: runs, the request log, the default scenario.

Everything lives in one :class:`EmulatorState` owned by the app, and is only touched from the server's event
loop (the control API is HTTP too), so no locks are needed. The status-poll path is the hot path -- a
benchmark drives thousands of polls per second at one core -- so lookups are dict hits, the log is an append
to a bounded deque, and nothing is copied or scanned per request. Only reading the log (control API) is O(n).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

from airflow_provider_runwatch.emulator.clock import EmulatorClock
from airflow_provider_runwatch.emulator.scenario import DEFAULT_SCENARIO, Outcome, Scenario

__all__ = [
    "LOG_MAXLEN",
    "EmulatedRun",
    "EmulatorState",
    "LogEntry",
    "PollDecision",
    "PollKind",
    "RequestContext",
    "StateReporter",
    "fingerprint",
    "run_duration",
]

LOG_MAXLEN = 200_000
"""Request-log bound: at ~300 bytes an entry the log stays near 60 MB, whatever a benchmark sends."""

PollKind = Literal["http5xx", "rate_limit", "malformed", "queued", "running", "terminal"]

# Query parameters holding a credential (Gumloop's legacy ``?api_key=``): their values never reach the log.
_SECRET_PARAMS = frozenset({"api_key", "apikey", "key", "token", "access_token", "password", "secret"})
_SECRET_MARKERS = (b"key", b"token", b"password", b"secret")
REDACTED = "[redacted]"


def fingerprint(api_key: str) -> str:
    """Owner identity of a run: a sha256 of the key, so the key itself is never kept."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()


def run_duration(scenario: Scenario, run_id: str) -> float | None:
    """Emulated seconds a run takes: ``seconds``, or for ``seconds=A-B`` a value in [A, B] fixed by the run id
    (deterministic, spread evenly over many runs), or None for a run that ends by polls."""
    low = scenario.seconds
    if low is None:
        return None
    high = scenario.seconds_max
    if high is None or high <= low:
        return low
    fraction = int(hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return low + (high - low) * fraction


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class PollDecision:
    """What one status poll of a run answers, in vendor-neutral terms; each vendor renders it.

    ``kind`` is a fault (``http5xx``, ``rate_limit``, ``malformed``), a non-terminal state (``queued``,
    ``running``) or ``terminal`` with ``outcome``. ``delay`` is the ``slow`` delay to await before answering.
    """

    kind: PollKind
    poll_index: int
    outcome: Outcome | None = None
    queue_position: int | None = None
    delay: float = 0.0

    @property
    def is_fault(self) -> bool:
        return self.kind in ("http5xx", "rate_limit", "malformed")

    @property
    def is_terminal(self) -> bool:
        return self.kind == "terminal"


@dataclass(slots=True, eq=False)
class EmulatedRun:
    """One run of any vendor. Vendor-specific, JSON-friendly facts go in ``data`` (shown by the control API);
    derived or large things (pre-encoded responses) go in ``cache`` (never shown)."""

    id: str
    vendor: str
    owner: str
    """sha256 fingerprint of the API key that started the run (never the key)."""
    scenario: Scenario
    created_monotonic: float
    """Emulated clock time (:class:`~airflow_provider_runwatch.emulator.clock.EmulatorClock`) of the start call."""
    created_wall: float
    """Real wall time of the start call (what the vendor reports as ``created_at``)."""
    started_monotonic: float = 0.0
    """Emulated clock time the run began running: its start call, or when a plan queue let it in."""
    duration: float | None = None
    """Emulated seconds the run takes once running (``seconds``, or drawn from ``seconds=A-B``); None: polls."""
    held_position: int | None = None
    """Set while a plan queue (Gumloop Enterprise) holds the run: its 1-based place in that queue."""
    polls_answered: int = 0
    """Status requests answered for this run, faults included."""
    cancel_requested_at: float | None = None
    """Wall time of a vendor cancel call, if any."""
    cancel_settles_at_poll: int | None = None
    """Poll index from which a requested cancel shows as terminal ``cancelled``."""
    forced_outcome: Outcome | None = None
    """Set by ``POST /_emulator/runs/{id}/complete``: the next poll answers terminal with it."""
    data: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)


class LogEntry:
    """One logged vendor request; the (already redacted) query string is parsed only when read."""

    __slots__ = ("authorized", "method", "path", "peer", "query_string", "run_id", "seq", "status", "ts", "vendor")

    def __init__(
        self,
        seq: int,
        ts: float,
        method: str,
        path: str,
        query_string: bytes,
        status: int,
        vendor: str | None,
        run_id: str | None,
        authorized: bool,
        peer: str | None = None,
    ) -> None:
        self.seq = seq
        self.ts = ts
        self.method = method
        self.path = path
        self.query_string = query_string
        self.status = status
        self.vendor = vendor
        self.run_id = run_id
        self.authorized = authorized
        #: The TCP peer's address: which hop the request came from (a proxy's, or the client's own).
        self.peer = peer

    def to_dict(self) -> dict[str, Any]:
        query = dict(parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True))
        return {
            "seq": self.seq,
            "ts": self.ts,
            "method": self.method,
            "path": self.path,
            "query": query,
            "status": self.status,
            "vendor": self.vendor,
            "run_id": self.run_id,
            "authorized": self.authorized,
            "peer": self.peer,
        }


class RequestContext:
    """Per-request facts a vendor handler annotates for the log (the middleware fills in the rest)."""

    __slots__ = ("authorized", "peer", "reason", "run_id", "status", "vendor")

    def __init__(self, peer: str | None = None) -> None:
        self.peer = peer
        self.vendor: str | None = None
        self.run_id: str | None = None
        self.authorized = False
        self.status = 500
        self.reason: str | None = None
        """Why a 429 was sent: ``concurrency`` or ``rate`` (a limit the emulator enforces); None: a scenario."""


StateReporter = Callable[[EmulatedRun, PollDecision], str]
"""Maps a decision to the vendor state string the run would report (for the control API's run record)."""


def _redact_query(query_string: bytes) -> bytes:
    lowered = query_string.lower()
    if not any(marker in lowered for marker in _SECRET_MARKERS):
        return query_string
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    cleaned = [(k, REDACTED if k.lower() in _SECRET_PARAMS else v) for k, v in pairs]
    return urlencode(cleaned).encode("latin-1", "replace")


class EmulatorState:
    """Runs, request log and default scenario of one emulator app, plus the helpers every vendor uses."""

    def __init__(
        self,
        default_scenario: Scenario | None = None,
        log_maxlen: int = LOG_MAXLEN,
        *,
        speed: float = 1.0,
        puffle_concurrency: int | None = None,
    ) -> None:
        self.runs: dict[str, EmulatedRun] = {}
        self.log: deque[LogEntry] = deque(maxlen=log_maxlen)
        self.default_scenario: Scenario | None = default_scenario
        self.clock = EmulatorClock(speed)
        """Where run durations and rate windows read time (see :mod:`~airflow_provider_runwatch.emulator.clock`)."""
        self.puffle_concurrency: int | None = puffle_concurrency
        """Unfinished Puffle chat runs one key may have (None: unlimited); over it, a start gets 429."""
        self.rejections: Counter[tuple[str, str]] = Counter()
        """429s sent, by (vendor, reason): ``concurrency``, ``rate`` (enforced limits) or ``scenario``."""
        self._launch = (speed, puffle_concurrency)
        self._seq = itertools.count(1)
        self._stores: dict[str, dict[str, Any]] = {}
        self._reporters: dict[str, StateReporter] = {}

    # -- runs ------------------------------------------------------------------------------------------------

    def scenario_or_default(self, scenario: Scenario | None) -> Scenario:
        """The scenario a new run gets: the explicit one, else the default, else the built-in defaults."""
        if scenario is not None:
            return scenario
        return self.default_scenario if self.default_scenario is not None else DEFAULT_SCENARIO

    def new_run(
        self,
        vendor: str,
        owner: str,
        scenario: Scenario | None,
        run_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> EmulatedRun:
        """Create and store a run; ``run_id`` defaults to 24 random hex digits (vendors pass their own)."""
        rid = run_id if run_id is not None else os.urandom(12).hex()
        sc = self.scenario_or_default(scenario)
        now = self.clock.now()
        run = EmulatedRun(
            id=rid,
            vendor=vendor,
            owner=owner,
            scenario=sc,
            created_monotonic=now,
            created_wall=time.time(),
            started_monotonic=now,
            duration=run_duration(sc, rid),
            data=data if data is not None else {},
        )
        self.runs[rid] = run
        return run

    def elapsed(self, run: EmulatedRun) -> float:
        """Emulated seconds the run has been running (0 while a plan queue holds it)."""
        if run.held_position is not None:
            return 0.0
        return self.clock.now() - run.started_monotonic

    def remaining(self, run: EmulatedRun) -> float | None:
        """Emulated seconds until a running, time-based run ends (None: it ends by polls, or is held)."""
        if run.duration is None or run.held_position is not None:
            return None
        return max(0.0, run.duration - self.elapsed(run))

    def get_run(self, run_id: str, vendor: str | None = None, owner: str | None = None) -> EmulatedRun | None:
        """The run, or None if it is unknown, of another vendor, or not owned by ``owner`` (when given).

        Returning None for "not yours" lets vendors answer 404 rather than 403, which is what they document.
        """
        run = self.runs.get(run_id)
        if run is None:
            return None
        if vendor is not None and run.vendor != vendor:
            return None
        if owner is not None and run.owner != owner:
            return None
        return run

    def next_poll(self, run: EmulatedRun) -> PollDecision:
        """Decide, and count, one status poll of ``run`` (see :meth:`decide` for the rules)."""
        index = run.polls_answered
        run.polls_answered = index + 1
        return self.decide(run, index)

    def peek(self, run: EmulatedRun) -> PollDecision:
        """The run's state right now, without counting a poll or faults (for the control API)."""
        return self.decide(run, run.polls_answered, faults=False)

    def decide(self, run: EmulatedRun, index: int, faults: bool = True) -> PollDecision:
        """The answer to status poll number ``index`` (0-based, faults included) of ``run``.

        Order: a forced outcome (control API) wins at once; then the fault bursts, each consuming one poll
        (``http5xx``, then ``rate_limit``, then ``malformed``); then the normal answers, numbered ``n = index
        - faults``: terminal when the run's duration (``seconds``, on the emulator's clock) has passed since it
        began running (if set), else when ``n >= polls`` (never with ``polls=never``); before that ``queued``
        for ``n < queued`` (``queue_position = queued - n``), else ``running``. A requested cancel turns
        terminal ``cancelled`` from its settle poll on. A run a plan queue holds answers ``queued`` with its
        place in that queue.
        """
        sc = run.scenario
        delay = sc.slow
        if run.forced_outcome is not None:
            return PollDecision("terminal", index, outcome=run.forced_outcome, delay=delay)
        if faults:
            bound = sc.http5xx
            if index < bound:
                return PollDecision("http5xx", index, delay=delay)
            bound += sc.rate_limit
            if index < bound:
                return PollDecision("rate_limit", index, delay=delay)
            bound += sc.malformed
            if index < bound:
                return PollDecision("malformed", index, delay=delay)
        n = index - sc.fault_polls
        if n < 0:
            n = 0
        if run.cancel_settles_at_poll is not None and index >= run.cancel_settles_at_poll:
            return PollDecision("terminal", index, outcome="cancelled", delay=delay)
        if run.held_position is not None:
            return PollDecision("queued", index, queue_position=run.held_position, delay=delay)
        if run.duration is not None:
            terminal = self.clock.now() - run.started_monotonic >= run.duration
        elif sc.polls is None:
            terminal = False
        else:
            terminal = n >= sc.polls
        if terminal:
            return PollDecision("terminal", index, outcome=sc.outcome, delay=delay)
        if n < sc.queued:
            return PollDecision("queued", index, queue_position=sc.queued - n, delay=delay)
        return PollDecision("running", index, delay=delay)

    def force_outcome(self, run: EmulatedRun, outcome: Outcome = "succeeded") -> None:
        """Make the run's next status poll answer terminal with ``outcome`` (takes effect immediately)."""
        run.forced_outcome = outcome

    def request_cancel(self, run: EmulatedRun, settle_polls: int = 0) -> None:
        """Record a vendor cancel call; the run shows ``cancelled`` after ``settle_polls`` more polls.

        ``settle_polls`` models vendors whose cancel "settles eventually" (a GET right after still shows the
        old state). A second cancel call does not move the settle point.
        """
        if run.cancel_requested_at is None:
            run.cancel_requested_at = time.time()
            run.cancel_settles_at_poll = run.polls_answered + settle_polls

    def register_state_reporter(self, vendor: str, reporter: StateReporter) -> None:
        """Let the control API show the vendor's own state string for a run of ``vendor``."""
        self._reporters[vendor] = reporter

    def run_record(self, run: EmulatedRun) -> dict[str, Any]:
        """The control API's view of a run: JSON-friendly, no cache, no key."""
        decision = self.peek(run)
        reporter = self._reporters.get(run.vendor)
        if reporter is not None:
            state = reporter(run, decision)
        else:
            state = decision.outcome if decision.outcome is not None else decision.kind
        return {
            "id": run.id,
            "vendor": run.vendor,
            "owner": run.owner,
            "state": state,
            "terminal": decision.is_terminal and decision.outcome != "paused",
            "polls_answered": run.polls_answered,
            "scenario": run.scenario.to_dict(),
            "created_at": _iso(run.created_wall),
            "age_seconds": round(self.clock.now() - run.created_monotonic, 6),
            "elapsed_seconds": round(self.elapsed(run), 6),
            "duration_seconds": run.duration,
            "queue_position": run.held_position,
            "cancel_requested_at": None if run.cancel_requested_at is None else _iso(run.cancel_requested_at),
            "forced_outcome": run.forced_outcome,
            "data": run.data,
        }

    # -- per-vendor stores -----------------------------------------------------------------------------------

    def store(self, vendor: str) -> dict[str, Any]:
        """A vendor's own mutable namespace (conversations, sessions, ...), cleared by :meth:`reset`."""
        ns = self._stores.get(vendor)
        if ns is None:
            ns = self._stores[vendor] = {}
        return ns

    # -- request log -----------------------------------------------------------------------------------------

    def record(self, method: str, path: str, query_string: bytes, ctx: RequestContext) -> None:
        """Append one vendor request to the bounded log (O(1); the oldest entries fall off)."""
        if query_string:
            query_string = _redact_query(query_string)
        self.log.append(
            LogEntry(
                next(self._seq),
                time.time(),
                method,
                path,
                query_string,
                ctx.status,
                ctx.vendor,
                ctx.run_id,
                ctx.authorized,
                ctx.peer,
            )
        )

    def requests(
        self,
        vendor: str | None = None,
        method: str | None = None,
        path_prefix: str | None = None,
        run_id: str | None = None,
        after: int | None = None,
    ) -> Iterator[LogEntry]:
        """Logged requests matching every given filter, oldest first (``after`` = only ``seq > after``)."""
        wanted_method = method.upper() if method else None
        for entry in self.log:
            if after is not None and entry.seq <= after:
                continue
            if vendor and entry.vendor != vendor:
                continue
            if wanted_method and entry.method != wanted_method:
                continue
            if path_prefix and not entry.path.startswith(path_prefix):
                continue
            if run_id and entry.run_id != run_id:
                continue
            yield entry

    def clear_requests(self) -> None:
        self.log.clear()

    # -- 429 counters ----------------------------------------------------------------------------------------

    def count_rejection(self, vendor: str | None, reason: str | None) -> None:
        """Count one 429 sent by ``vendor`` for ``reason`` (None: a scenario asked for it)."""
        self.rejections[(vendor or "unknown", reason or "scenario")] += 1

    def rejection_counts(self) -> dict[str, dict[str, int]]:
        """``{vendor: {reason: n, ..., "total": n}}`` for every vendor that sent a 429 (control API)."""
        out: dict[str, dict[str, int]] = {}
        for (vendor, reason), count in sorted(self.rejections.items()):
            per = out.setdefault(vendor, {"total": 0})
            per[reason] = count
            per["total"] += count
        return out

    def reset(self) -> None:
        """Forget runs, vendor stores (limits), the log, the 429 counters and the default scenario, and put the
        clock speed and Puffle's concurrency back to what the emulator was launched with (state reporters stay
        registered)."""
        self.runs.clear()
        self._stores.clear()
        self.log.clear()
        self.rejections.clear()
        self.default_scenario = None
        speed, self.puffle_concurrency = self._launch
        if self.clock.speed != speed:
            self.clock.set_speed(speed)
