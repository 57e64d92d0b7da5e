"""The emulator's clock: one object through which every run duration and rate window reads time.

A benchmark wants 500 runs of "30 to 90 s" at a plan's limits without waiting hours, so the clock can run
``speed`` times faster than real time (``--speed``, ``RUNWATCH_EMULATOR_SPEED``, ``PUT /_emulator/clock``).
What scales, and what does not:

- scaled (emulated seconds): a run's ``seconds`` duration, GloriaMundo's per-minute windows, the elapsed time
  that drives GloriaMundo's step progress, Gumloop's Enterprise queue (it waits for runs that end on this clock);
- real: every timestamp a vendor reports (``created_at``, ``started_at``, ``completed_at``: they stay near the
  client's own clock, so a client comparing them with ``now`` sees nothing odd), every ``Retry-After`` the
  emulator computes (converted with :meth:`EmulatorClock.real_seconds`: it is what a client must wait), and the
  network faults ``slow``, ``trickle``, ``stall`` and ``trickle_head`` (they model a slow network or proxy, not a
  slow vendor, and a client's timeouts are in real seconds).

Changing the speed re-anchors the clock, so emulated time never jumps: a run keeps what it has elapsed.
"""

from __future__ import annotations

import math
import os
import time

__all__ = ["MAX_SPEED", "SPEED_ENV", "EmulatorClock", "parse_speed"]

SPEED_ENV = "RUNWATCH_EMULATOR_SPEED"
MAX_SPEED = 1000.0


def parse_speed(value: object) -> float:
    """A valid speed (a finite number in (0, 1000]) or ValueError saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"speed must be a number in (0, {MAX_SPEED:g}], got {value!r}")
    try:
        speed = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"speed must be a number in (0, {MAX_SPEED:g}], got {value!r}") from None
    if not math.isfinite(speed) or not 0 < speed <= MAX_SPEED:
        raise ValueError(f"speed must be a number in (0, {MAX_SPEED:g}], got {value!r}")
    return speed


def speed_from_env(default: float = 1.0) -> float:
    """The speed ``RUNWATCH_EMULATOR_SPEED`` asks for, else ``default`` (ValueError naming the variable)."""
    raw = os.environ.get(SPEED_ENV, "").strip()
    if not raw:
        return default
    try:
        return parse_speed(raw)
    except ValueError as exc:
        raise ValueError(f"{SPEED_ENV}: {exc}") from None


class EmulatorClock:
    """Monotonic emulated seconds running ``speed`` times faster than :func:`time.monotonic`."""

    __slots__ = ("_anchor_emulated", "_anchor_real", "speed")

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = parse_speed(speed)
        self._anchor_real = time.monotonic()
        self._anchor_emulated = self._anchor_real

    def now(self) -> float:
        """Emulated monotonic seconds (at speed 1, exactly :func:`time.monotonic`)."""
        if self.speed == 1.0 and self._anchor_emulated == self._anchor_real:
            return time.monotonic()
        return self._anchor_emulated + (time.monotonic() - self._anchor_real) * self.speed

    def set_speed(self, speed: float) -> None:
        """Run ``speed`` times faster from now on, continuing from the current emulated time."""
        speed = parse_speed(speed)
        emulated = self.now()
        self._anchor_real = time.monotonic()
        self._anchor_emulated = emulated
        self.speed = speed

    def real_seconds(self, emulated: float) -> float:
        """How long ``emulated`` seconds take in real time."""
        return emulated / self.speed

    def retry_after(self, emulated: float) -> int:
        """A ``Retry-After`` value (whole real seconds, at least 1) for a wait of ``emulated`` seconds."""
        return max(1, math.ceil(self.real_seconds(emulated) - 1e-9))
