"""Apache Airflow provider for hosted AI agent runs: Gumloop, GloriaMundo and Puffle.

Start a run on the worker, wait for it cheaply on the triggerer, hand the answer to the next task.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata read by Airflow's provider manager (entry point ``apache_airflow_provider``)."""
    from airflow_provider_runwatch.provider_info import provider_info

    return provider_info()
