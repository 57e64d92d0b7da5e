"""Local emulator of the Gumloop, GloriaMundo and Puffle agent-run APIs (no network, no Airflow import).

Start it with ``runwatch-emulator`` (or ``python -m airflow_provider_runwatch.emulator``), with
:class:`EmulatorServer` from Python, or with the opt-in pytest plugin
``airflow_provider_runwatch.emulator.pytest_plugin``. See docs/emulator.md.

Names are imported lazily so that ``python -m airflow_provider_runwatch.emulator --help`` and the scenario
parser stay cheap to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_runwatch.emulator.app import create_app
    from airflow_provider_runwatch.emulator.scenario import Scenario, ScenarioError, parse_scenario
    from airflow_provider_runwatch.emulator.server import EmulatorServer
    from airflow_provider_runwatch.emulator.state import EmulatedRun, EmulatorState, PollDecision

__all__ = [
    "EmulatedRun",
    "EmulatorServer",
    "EmulatorState",
    "PollDecision",
    "Scenario",
    "ScenarioError",
    "create_app",
    "parse_scenario",
]

_WHERE = {
    "create_app": "app",
    "Scenario": "scenario",
    "ScenarioError": "scenario",
    "parse_scenario": "scenario",
    "EmulatorServer": "server",
    "EmulatedRun": "state",
    "EmulatorState": "state",
    "PollDecision": "state",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
