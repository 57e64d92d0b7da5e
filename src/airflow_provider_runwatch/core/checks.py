"""Argument checks shared by operators (at DAG parse time) and hooks or request builders (at call time), so an
option is validated by one definition wherever it enters. Light to import: DAG files pay for it."""

from __future__ import annotations

from airflow_provider_runwatch.core.errors import ConfigurationError


def whole_number(value: object, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int within ``[minimum, maximum]`` (a numeric string is accepted: templates render to
    strings), else a :class:`ConfigurationError` that names the option and the allowed range."""
    allowed = f"between {minimum} and {maximum}" if maximum is not None else f"an integer >= {minimum}"
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        raise ConfigurationError(f"{name} must be {allowed}, got {value!r}")
    return number


def optional_whole_number(value: object, name: str, *, minimum: int = 1) -> int | None:
    """:func:`whole_number`, with ``None`` meaning no limit."""
    return None if value is None else whole_number(value, f"{name} (or None)", minimum=minimum)
