"""The adaptive budget through the real path: the emulator's 429 for the key's poll limit reaches the budget of
the process (trigger and hook), which slows down; with ``adaptive_rate: false`` it is only counted.

Convergence of several processes is simulated in tests/unit/test_ratelimit_adaptive.py and measured on the
distributed deployment (tests/distributed/test_drill_3_budget.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_runwatch.core.ratelimit import clear_budgets
from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.hooks.gloriamundo import GloriaMundoHook
from airflow_provider_runwatch.triggers.gloriamundo import GloriaMundoRunTrigger
from airflow_provider_runwatch.vendors.gloriamundo import POLL_BUCKET
from tests.conftest import SECRET_KEY
from tests.helpers import first_event

LIMITS = "/_emulator/gloriamundo/limits"
WINDOW = 2.0


@pytest.fixture
def emulator(runwatch_emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    """Three polls per 2 s per key: the fourth poll of a run is refused."""
    clear_budgets()
    with httpx.Client(base_url=runwatch_emulator.url, trust_env=False) as http:
        http.put(LIMITS, json={"window_seconds": WINDOW, "executions": None, "polls": 3}).raise_for_status()
        yield runwatch_emulator
        http.put(LIMITS, json={"window_seconds": 60, "executions": 10, "polls": 60}).raise_for_status()
    clear_budgets()


def connect(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer, adaptive: bool | str) -> GloriaMundoHook:
    conn_id = f"gm_adaptive_{uuid.uuid4().hex[:6]}"
    # The process's own budget is above what the emulator allows (another process shares the key).
    extra = {"rate_window_seconds": WINDOW, "polls_per_minute": 50, "adaptive_rate": adaptive}
    conn = {"conn_type": "gloriamundo", "host": emulator.gloriamundo_url, "password": f"{SECRET_KEY}_{conn_id}"}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({**conn, "extra": extra}))
    return GloriaMundoHook(conn_id)


@pytest.mark.anyio
@pytest.mark.parametrize("adaptive", [True, "true"])
async def test_a_429_of_the_poll_limit_slows_the_process_down(
    monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer, adaptive: bool | str
) -> None:
    hook = connect(monkeypatch, emulator, adaptive)
    run_id = hook.execute_workflow("wf_adaptive", {"n": "x [emulator: polls=4]"}).run_id
    event = await first_event(GloriaMundoRunTrigger(conn_id=hook.conn_id, run_id=run_id, poll_interval=0.05))
    assert event["status"] == "success", event
    refused = [e for e in emulator.requests(vendor="gloriamundo", method="GET", run_id=run_id) if e["status"] == 429]
    assert refused, "the drill needs at least one 429 from the emulator"
    bucket = hook.budget(hook.settings).buckets[POLL_BUCKET]
    assert bucket.throttles == len(refused)
    assert 1 <= bucket.cuts <= len(refused)
    assert bucket.rate() < 50  # recovering: 2 % of the limit per window


@pytest.mark.anyio
async def test_a_fixed_budget_counts_429s_but_keeps_its_rate(
    monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer
) -> None:
    hook = connect(monkeypatch, emulator, False)
    run_id = hook.execute_workflow("wf_adaptive", {"n": "x [emulator: polls=4]"}).run_id
    event = await first_event(GloriaMundoRunTrigger(conn_id=hook.conn_id, run_id=run_id, poll_interval=0.05))
    assert event["status"] == "success", event
    bucket = hook.budget(hook.settings).buckets[POLL_BUCKET]
    assert bucket.throttles >= 1 and bucket.cuts == 0 and bucket.rate() == 50


def test_adaptive_rate_must_be_a_boolean(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer) -> None:
    from airflow_provider_runwatch.core.errors import ConfigurationError

    hook = connect(monkeypatch, emulator, "sometimes")
    with pytest.raises(ConfigurationError, match=r"adaptive_rate.*true or false"):
        hook.budget(hook.settings)
