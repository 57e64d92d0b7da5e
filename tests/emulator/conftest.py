"""Fixtures for the emulator's own tests: one thread-mode emulator per module, real HTTP over loopback."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer

if TYPE_CHECKING:
    from collections.abc import Iterator

ADMIN_KEY = "pk_live_emulator_test_admin_key_0123456789"


class PuffleClient:
    """Thin Puffle client for tests: raw httpx responses, so every status code and header can be asserted."""

    def __init__(self, http: httpx.Client, key: str = ADMIN_KEY) -> None:
        self.http = http
        self.key = key

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def start(
        self,
        message: str = "Acme Corp",
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        sync: bool = False,
        **body: Any,
    ) -> httpx.Response:
        path = "/api/agent/chat/sync" if sync else "/api/agent/chat"
        return self.http.post(path, json={"message": message, **body}, headers={**self.auth(key), **(headers or {})})

    def start_run(self, message: str = "Acme Corp", **kwargs: Any) -> str:
        response = self.start(message, **kwargs)
        assert response.status_code == 202, response.text
        run_id: str = response.json()["runId"]
        return run_id

    def poll(self, run_id: str, key: str | None = None) -> httpx.Response:
        return self.http.get(f"/api/agent/chat/{run_id}", headers=self.auth(key))

    def statuses(self, run_id: str, count: int) -> list[str]:
        """The ``status`` of ``count`` consecutive polls (all must be 200 JSON)."""
        out = []
        for _ in range(count):
            response = self.poll(run_id)
            assert response.status_code == 200, response.text
            out.append(response.json()["status"])
        return out


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(mode="thread") as server:
        yield server


@pytest.fixture(scope="module")
def http(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, timeout=30.0, trust_env=False) as client:
        yield client


@pytest.fixture
def puffle(http: httpx.Client, emulator: EmulatorServer) -> PuffleClient:
    """A Puffle client on a clean emulator (reset before each test)."""
    emulator.reset()
    return PuffleClient(http)
