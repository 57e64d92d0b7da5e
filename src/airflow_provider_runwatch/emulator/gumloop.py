"""Gumloop endpoints of the emulator (vendor-apis.md section 1): the extension point, empty for now.

Add the vendor's routes here, at its documented paths under ``/api/v1`` (a Gumloop connection's host is
``http://127.0.0.1:N/api/v1``). Build them like ``puffle.py``: ``state.new_run(...)``, ``state.get_run(...)``
and ``state.next_poll(run)`` for the run life cycle, the helpers in ``common.py`` for auth, faults and the
request log, and ``state.register_state_reporter("gumloop", ...)`` so run records show Gumloop's own states.
The app already registers whatever :func:`routes` returns and tags its requests in the log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from airflow_provider_runwatch.emulator.state import EmulatorState

__all__ = ["VENDOR", "routes"]

VENDOR = "gumloop"


def routes(state: EmulatorState) -> list[BaseRoute]:
    """Gumloop's routes bound to ``state`` (none yet)."""
    return []
