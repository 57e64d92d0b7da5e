"""Opt-in pytest plugin: an emulator per test session and Airflow connections pointing at it.

Enable it in a ``conftest.py``::

    pytest_plugins = ["airflow_provider_runwatch.emulator.pytest_plugin"]

``runwatch_emulator`` (session scope) is an :class:`EmulatorServer` in process mode, so one child serves the
whole session and is stopped at its end. ``runwatch_connections`` (function scope) sets
``AIRFLOW_CONN_PUFFLE_DEFAULT``,
``AIRFLOW_CONN_GUMLOOP_DEFAULT`` and ``AIRFLOW_CONN_GLORIAMUNDO_DEFAULT`` for one test with ``monkeypatch``
(undone afterwards) and returns them. Runs and the request log are shared across the session: filter the log by
``run_id`` or call ``runwatch_emulator.reset()`` in your own fixture if a test needs a clean slate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["runwatch_connections", "runwatch_emulator"]


@pytest.fixture(scope="session")
def runwatch_emulator() -> Iterator[EmulatorServer]:
    """A running emulator (child process) for the whole test session."""
    with EmulatorServer(mode="process") as server:
        yield server


@pytest.fixture
def runwatch_connections(runwatch_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The three default connections as ``AIRFLOW_CONN_*`` env vars (JSON form), for one test."""
    env = runwatch_emulator.connection_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
