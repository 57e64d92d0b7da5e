"""Gumloop's documented polling advice, in one light module.

Operators, sensors and triggers all check a poll interval against it; it imports nothing heavy, because DAG
files import the operators and sensors, and the event trigger validates its arguments in the DAG file too.
"""

from __future__ import annotations

from airflow_provider_runwatch.core.errors import ConfigurationError

#: Gumloop advises polling every 2-5 s and never faster than once a second.
DEFAULT_POLL_INTERVAL = 3.0
MIN_POLL_INTERVAL = 1.0


def check_poll_interval(seconds: float, name: str = "poll_interval") -> None:
    """Refuse an interval faster than Gumloop allows, naming the option."""
    if seconds < MIN_POLL_INTERVAL:
        raise ConfigurationError(
            f"{name} must be at least {MIN_POLL_INTERVAL:g} s for Gumloop (it advises polling every 2-5 s and "
            f"never faster than once a second), got {seconds:g}"
        )
