"""Scenario directives: how a test tells the emulator what a run should do.

A scenario is chosen per run, when the run is started, so that one emulator process can serve many tests at
once without shared mutable "mode" switches. It comes from (highest priority first):

1. the ``X-Emulator-Scenario`` header of the start request (``key=value ...``);
2. a directive written into the start request's text, e.g. inside a Puffle ``message``:
   ``"Summarise Acme Corp [emulator: polls=3 outcome=failed error='tool broke']"``;
3. the emulator's default scenario (CLI ``--scenario``, ``PUT /_emulator/scenario``);
4. :class:`Scenario` defaults (two non-terminal polls, then success).

Parsing is strict on purpose: an unknown key or a bad value raises :class:`ScenarioError`, which the vendors
turn into a 400 on the start call, so a typo in a test is loud instead of silently running the defaults.

Grammar: ``[emulator: key=value key=value ...]``. The word ``emulator`` is case-insensitive. Pairs are
separated by whitespace (commas and semicolons are accepted too). A value is either bare (no whitespace,
``]``, ``,``, ``;`` or quotes) or quoted with ``'...'`` or ``"..."`` (no escapes; use the other quote to
embed one). Keys are case-insensitive and ``-`` equals ``_``. A repeated key: the last one wins. Only the
first directive in a text counts.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, cast, get_args

__all__ = [
    "DEFAULT_ERROR",
    "DEFAULT_SCENARIO",
    "SCENARIO_KEYS",
    "Outcome",
    "Scenario",
    "ScenarioError",
    "find_directive",
    "parse_scenario",
    "parse_spec",
    "strip_directive",
]

Outcome = Literal["succeeded", "failed", "cancelled", "paused"]
"""The generic end states every vendor maps to its own state strings."""

OUTCOMES: tuple[str, ...] = get_args(Outcome)

DEFAULT_ERROR = "Agent run failed: tool 'web_search' timed out after 30s"

_OPEN = re.compile(r"\[\s*emulator\s*:", re.IGNORECASE)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_BARE_VALUE = re.compile(r"[^\s\],;'\"]+")
_SEPARATORS = " \t\r\n\f\v,;"

# Upper bounds keep a typo (``slow=300`` for ``0.3``) from wedging a test run for minutes or eating memory.
_MAX_SECONDS = 3600.0
_MAX_BIG_MB = 512.0


class ScenarioError(ValueError):
    """A scenario directive that cannot be honoured; ``str(exc)`` is the 400 error text sent to the client."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """What one emulated run does, in vendor-neutral terms (see the module docstring and docs/emulator.md).

    Frozen so a run's scenario can be shared and read on the hot path without copying.
    """

    polls: int | None = 2
    """Non-terminal status answers before the terminal one; ``None`` means never terminal
    (``polls=never``).
    """
    seconds: float | None = None
    """If set, terminal once this many seconds (on the emulator's clock, see ``--speed``) have passed since the
    run began running, instead of counting polls. ``seconds=A-B`` gives each run a duration in [A, B] drawn
    from its run id (deterministic), for benchmarks; it sets ``seconds=A`` and ``seconds_max=B``."""
    seconds_max: float | None = None
    """Upper end of ``seconds=A-B`` (each run's duration is fixed by its id; needs ``seconds``)."""
    queued: int = 0
    """The first ``queued`` non-terminal answers say queued (``queue_position`` counts down), then running."""
    outcome: Outcome = "succeeded"
    error: str = DEFAULT_ERROR
    """Failure text reported with ``outcome=failed``."""
    unknown_state: str | None = None
    """Report this vendor state string instead of the running state (tests tolerance of unknown states)."""
    http5xx: int = 0
    """The first N status polls answer ``status5xx`` with a non-JSON body."""
    status5xx: int = 503
    rate_limit: int = 0
    """After the 5xx burst, the next N status polls answer 429."""
    retry_after: int | None = None
    """Seconds for ``Retry-After`` on 429 answers (and Puffle's ``retryAfter`` body field)."""
    retry_after_date: float | None = None
    """Like ``retry_after`` but sent as an HTTP-date this many seconds ahead (header only)."""
    malformed: int = 0
    """After the 429s, the next N status polls answer 200 with truncated, invalid JSON."""
    slow: float = 0.0
    """Delay, in seconds, before every status response (and the sync endpoint)."""
    trickle: float = 0.0
    """Seconds between bytes of every status answer, sent one byte at a time (head at once, then the body):
    a vendor or proxy that keeps an answer alive without ever finishing it in a useful time."""
    stall: float = 0.0
    """Seconds every status answer stops for after its head and the first half of its body (a stalled answer)."""
    trickle_head: float = 0.0
    """Seconds between bytes of every status answer's head (status line and headers), sent one byte at a time
    before the body goes out at once: a proxy that keeps an answer alive before its first header ends."""
    big_messages: float = 0.0
    """Megabytes (10**6 bytes) of extra message content in the completed payload."""
    start_status: int | None = None
    """The start call itself fails with this HTTP status and the vendor's body for it; no run is created."""
    approvals: str | None = None
    """Gumloop sessions: the tools the agent asks approval for, round by round (rounds separated by ``/``, tools
    of one round by ``+``: ``send_email/update_crm+post_slack`` pauses twice). Implies ``outcome=paused``."""
    on_reject: Literal["continue", "fail"] = "continue"
    """Gumloop sessions: after a rejected tool call the agent goes on without it, or the session fails."""

    @property
    def fault_polls(self) -> int:
        """How many status polls the fault bursts consume before the normal answers begin."""
        return self.http5xx + self.rate_limit + self.malformed

    @property
    def never_terminal(self) -> bool:
        """True when no number of polls ends the run on its own (only the control API can)."""
        return self.seconds is None and self.polls is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for the control API (``polls=never`` shows as ``"never"``)."""
        data = asdict(self)
        if self.polls is None:
            data["polls"] = "never"
        return data

    def to_spec(self) -> str:
        """The shortest ``key=value ...`` text that parses back to this scenario (only non-default keys)."""
        parts: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            text = "never" if f.name == "polls" and value is None else str(value)
            if not text or any(c in text for c in " \t\r\n],;'\""):
                text = f'"{text}"' if "'" in text else f"'{text}'"
            parts.append(f"{f.name}={text}")
        return " ".join(parts)


DEFAULT_SCENARIO = Scenario()

SCENARIO_KEYS: frozenset[str] = frozenset(f.name for f in fields(Scenario))


def _skip_separators(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _SEPARATORS:
        i += 1
    return i


def _scan_pairs(text: str, start: int, bracketed: bool) -> tuple[list[tuple[str, str]], int]:
    """Tokenize ``key=value`` pairs from ``start``; return them and the index just past the directive.

    With ``bracketed`` the pairs end at a ``]`` (required); otherwise at the end of the text, where a ``]``
    is an error.
    """
    pairs: list[tuple[str, str]] = []
    n = len(text)
    i = start
    while True:
        i = _skip_separators(text, i)
        if i >= n:
            if bracketed:
                raise ScenarioError("emulator: unterminated scenario directive (missing ']')")
            return pairs, i
        if text[i] == "]":
            if bracketed:
                return pairs, i + 1
            raise ScenarioError("emulator: unexpected ']' in scenario")
        m = _KEY.match(text, i)
        if m is None:
            raise ScenarioError(f"emulator: malformed scenario near {text[i : i + 20]!r}")
        key = m.group().lower().replace("-", "_")
        i = m.end()
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != "=":
            raise ScenarioError(f"emulator: scenario key {key!r} needs a value (key=value)")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] in "'\"":
            quote = text[i]
            end = text.find(quote, i + 1)
            if end < 0:
                raise ScenarioError(f"emulator: unterminated quote in the value of {key!r}")
            value = text[i + 1 : end]
            i = end + 1
        else:
            vm = _BARE_VALUE.match(text, i)
            if vm is None:
                raise ScenarioError(f"emulator: scenario key {key!r} needs a value (key=value)")
            value = vm.group()
            i = vm.end()
        pairs.append((key, value))


def find_directive(text: str) -> tuple[int, int, list[tuple[str, str]]] | None:
    """Locate the first ``[emulator: ...]`` directive: ``(start, end, pairs)`` or None if there is none.

    Raises :class:`ScenarioError` when a directive starts but is malformed (so a broken one is never ignored).
    """
    m = _OPEN.search(text)
    if m is None:
        return None
    pairs, end = _scan_pairs(text, m.end(), bracketed=True)
    return m.start(), end, pairs


def strip_directive(text: str) -> str:
    """The text without its first directive and with whitespace tidied (what the "agent" sees and quotes)."""
    try:
        found = find_directive(text)
    except ScenarioError:
        return " ".join(text.split())
    if found is None:
        return " ".join(text.split())
    start, end, _ = found
    return " ".join((text[:start] + " " + text[end:]).split())


def _as_int(key: str, value: str, lo: int, hi: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ScenarioError(f"emulator: scenario key {key!r} needs an integer, got {value!r}") from None
    if number < lo or (hi is not None and number > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ScenarioError(f"emulator: scenario key {key!r} must be {bound}, got {value!r}")
    return number


def _as_float(key: str, value: str, hi: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ScenarioError(f"emulator: scenario key {key!r} needs a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0 or number > hi:
        raise ScenarioError(f"emulator: scenario key {key!r} must be between 0 and {hi:g}, got {value!r}")
    return number


def _build(pairs: list[tuple[str, str]]) -> Scenario:
    values: dict[str, Any] = {}
    for key, value in pairs:
        if key not in SCENARIO_KEYS:
            raise ScenarioError(f"emulator: unknown scenario key '{key}'")
        values[key] = value
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key == "polls":
            kwargs[key] = None if value.lower() == "never" else _as_int(key, value, 0)
        elif key == "seconds" and "-" in value.strip("-"):
            low, _, high = value.partition("-")
            kwargs["seconds"] = _as_float(key, low, _MAX_SECONDS)
            kwargs["seconds_max"] = _as_float(key, high, _MAX_SECONDS)
            if kwargs["seconds_max"] < kwargs["seconds"]:
                raise ScenarioError(f"emulator: scenario key 'seconds' range must be low-high, got {value!r}")
        elif key in ("seconds", "seconds_max", "retry_after_date", "slow", "trickle", "stall", "trickle_head"):
            kwargs[key] = _as_float(key, value, _MAX_SECONDS)
        elif key == "big_messages":
            kwargs[key] = _as_float(key, value, _MAX_BIG_MB)
        elif key in ("queued", "http5xx", "rate_limit", "malformed", "retry_after"):
            kwargs[key] = _as_int(key, value, 0)
        elif key == "status5xx":
            kwargs[key] = _as_int(key, value, 500, 599)
        elif key == "start_status":
            kwargs[key] = _as_int(key, value, 400, 599)
        elif key == "outcome":
            outcome = value.lower()
            if outcome not in OUTCOMES:
                raise ScenarioError(
                    f"emulator: scenario key 'outcome' must be one of {', '.join(OUTCOMES)}, got {value!r}"
                )
            kwargs[key] = cast("Outcome", outcome)
        elif key == "approvals":
            if not re.fullmatch(r"[A-Za-z0-9_.-]+(\+[A-Za-z0-9_.-]+)*(/[A-Za-z0-9_.-]+(\+[A-Za-z0-9_.-]+)*)*", value):
                raise ScenarioError(
                    "emulator: scenario key 'approvals' takes tool names, '+' between the tools of a round and "
                    f"'/' between rounds (e.g. send_email/update_crm+post_slack), got {value!r}"
                )
            kwargs[key] = value
            kwargs.setdefault("outcome", "paused")
        elif key == "on_reject":
            if value.lower() not in ("continue", "fail"):
                raise ScenarioError(f"emulator: scenario key 'on_reject' must be continue or fail, got {value!r}")
            kwargs[key] = value.lower()
        elif key == "unknown_state":
            if not value:
                raise ScenarioError("emulator: scenario key 'unknown_state' needs a non-empty value")
            kwargs[key] = value
        else:  # error: free text
            kwargs[key] = value
    if kwargs.get("seconds_max") is not None and kwargs.get("seconds") is None:
        raise ScenarioError("emulator: seconds_max needs seconds (write seconds=A-B)")
    if kwargs.get("retry_after") is not None and kwargs.get("retry_after_date") is not None:
        raise ScenarioError("emulator: use either retry_after or retry_after_date, not both")
    return Scenario(**kwargs)


def parse_scenario(text: str | None, *, allow_bare: bool = True) -> Scenario | None:
    """Parse the scenario carried by ``text``, or return None when it carries none.

    ``text`` may contain an ``[emulator: ...]`` directive anywhere (the start body's text). With
    ``allow_bare`` (the default) a text that has no bracketed directive but is *entirely* ``key=value`` pairs
    (the header and CLI form, e.g. ``"polls=3 outcome=failed"``) is parsed too; free text such as a plain
    message returns None. Vendors pass ``allow_bare=False`` for request bodies, so a message like ``"x=1"``
    is never a directive.
    """
    if text is None or not text.strip():
        return None
    found = find_directive(text)
    if found is not None:
        return _build(found[2])
    if not allow_bare:
        return None
    try:
        pairs, _ = _scan_pairs(text, 0, bracketed=False)
    except ScenarioError:
        return None
    return _build(pairs)


def parse_spec(text: str | None) -> Scenario | None:
    """Strictly parse a scenario given on purpose (header, CLI, control API): bare pairs or one directive.

    Unlike :func:`parse_scenario`, text that is neither raises :class:`ScenarioError`; empty text means None.
    """
    if text is None or not text.strip():
        return None
    found = find_directive(text)
    if found is not None:
        return _build(found[2])
    pairs, _ = _scan_pairs(text, 0, bracketed=False)
    return _build(pairs)
