"""The hooks' blocking operations and their asyncio twins come from one definition each (``twins``), and a
cancel is bounded the same way on both paths."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from airflow_provider_runwatch.core.connection import ConnectionSettings
from airflow_provider_runwatch.core.retry import NO_RETRY
from airflow_provider_runwatch.hooks import base
from airflow_provider_runwatch.hooks.base import CANCEL_HTTP_TIMEOUT, CANCEL_RETRY, RunwatchHook
from airflow_provider_runwatch.hooks.gloriamundo import GloriaMundoHook
from airflow_provider_runwatch.hooks.gumloop import GumloopHook
from airflow_provider_runwatch.hooks.puffle import PuffleHook
from airflow_provider_runwatch.vendors.gumloop import SESSIONS

HOOKS = [PuffleHook, GumloopHook, GloriaMundoHook]
#: Every operation with an asyncio twin, per hook (the documented pairs).
PAIRS = {
    PuffleHook: ["start_chat", "get_chat_run"],
    GumloopHook: [
        "start_agent",
        "agent_status",
        "create_session",
        "get_session",
        "cancel_session",
        "submit_approvals",
        "list_sessions",
        "start_pipeline",
        "get_pl_run",
        "kill_pipeline",
    ],
    GloriaMundoHook: ["execute_workflow", "get_run_status"],
}


@pytest.mark.parametrize("hook_class", HOOKS, ids=lambda c: c.__name__)
def test_each_operation_and_its_twin_share_one_signature_and_docstring(hook_class: type[RunwatchHook]) -> None:
    for name in PAIRS[hook_class]:
        blocking, twin = getattr(hook_class, name), getattr(hook_class, f"a{name}")
        assert not inspect.iscoroutinefunction(blocking) and inspect.iscoroutinefunction(twin), name
        assert inspect.signature(blocking) == inspect.signature(twin), name
        assert "settings" not in inspect.signature(blocking).parameters, name
        assert blocking.__doc__ and blocking.__doc__ == twin.__doc__, name
        assert (blocking.__name__, twin.__name__) == (name, f"a{name}")


class _Recorder:
    """Stands in for a client class: records the options a cancel builds its client with, answers ``{}``."""

    seen: list[tuple[str, Any, Any]] = []

    def __init__(self, settings: ConnectionSettings, options: Any) -> None:
        self.options = options

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> _Recorder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def call(self, call: Any, *, retry: Any = None) -> Any:
        self.seen.append(("sync", self.options.timeout, retry))
        return {}


class _AsyncRecorder(_Recorder):
    async def call(self, call: Any, *, retry: Any = None) -> Any:  # type: ignore[override]
        self.seen.append(("async", self.options.timeout, retry))
        return {}


def test_cancel_and_acancel_apply_the_same_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ConnectionSettings(
        vendor=GumloopHook.vendor, conn_id="g", base_url="http://127.0.0.1:1", api_key="k", login="u"
    )
    monkeypatch.setattr(base, "ApiClient", _Recorder)
    monkeypatch.setattr(base, "AsyncApiClient", _AsyncRecorder)
    _Recorder.seen = []
    hook = GumloopHook("g")
    hook._settings = settings
    assert hook.cancel(SESSIONS, "sess_1") is True
    assert asyncio.run(hook.acancel(SESSIONS, "sess_1")) is True
    # The triggers' path reads the run once first (a twin trigger may have cancelled it), on the same bounds.
    assert _Recorder.seen == [
        ("sync", CANCEL_HTTP_TIMEOUT, CANCEL_RETRY),
        ("async", CANCEL_HTTP_TIMEOUT, NO_RETRY),
        ("async", CANCEL_HTTP_TIMEOUT, CANCEL_RETRY),
    ]
