"""One failure line per vendor error, whichever path met it (issue 14, items 2 and 3).

For each run kind and each status its vendor documents for a status read (401 and 404 everywhere, 403 for
Puffle's non-admin keys and Gumloop's refused identities), the same run is watched three ways against the
emulator: deferred (the sensor's own trigger run as the triggerer runs it, its event fed to
``execute_complete``), blocking (``wait_blocking`` on the worker, as ``deferrable=False``), and a sensor's
poke. All three must fail with the very same line, and that line must fit the cause: the connection and the
field to fix after a 401/403, "gone, or not visible to this key" after a 404, never "may still be going",
never the key.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.operators.base import RunFailedError
from airflow_provider_runwatch.sensors.base import RunSensor
from airflow_provider_runwatch.sensors.gloriamundo import GloriaMundoRunSensor
from airflow_provider_runwatch.sensors.gumloop import GumloopAgentSensor, GumloopFlowSensor, GumloopSessionSensor
from airflow_provider_runwatch.sensors.puffle import PuffleChatRunSensor
from tests.conftest import SECRET_KEY
from tests.helpers import KINDS, RunKind, first_event, task_context

pytestmark = pytest.mark.anyio

SENSORS: dict[str, type[RunSensor]] = {
    "puffle": PuffleChatRunSensor,
    "gumloop_agent": GumloopAgentSensor,
    "gumloop_session": GumloopSessionSensor,
    "gumloop_flow": GumloopFlowSensor,
    "gloriamundo": GloriaMundoRunSensor,
}
VENDOR_PREFIX = {"puffle": "pk", "gumloop": "gl", "gloriamundo": "gm"}

#: (case, key prefix the emulator refuses with it, the status it answers, what the line must then say).
#: ``None`` as key: the default key, reading a run id nobody started.
AUTH = "Check the API key in the Password field of connection '{conn_id}'"
CASES: dict[str, list[tuple[str, str | None, int, str]]] = {
    "puffle": [
        ("401", "pk_invalid_", 401, AUTH),
        ("403", "pk_user_", 403, AUTH),
        ("404", "pk_live_other_", 404, "It is gone, or it is not visible to the API key in connection '{conn_id}'"),
    ],
    "gumloop": [
        ("401", "gl_invalid_", 401, AUTH + ", the Gumloop user id in its Login field"),
        ("403", "gl_noaccess_", 403, AUTH + ", the Gumloop user id in its Login field"),
        ("404", None, 404, "It is gone, or it is not visible to the API key in connection '{conn_id}'"),
    ],
    "gloriamundo": [
        ("401", "gm_invalid_", 401, AUTH + " (GloriaMundo keys look like gm_live_...)"),
        ("404", f"{SECRET_KEY}_other_", 404, "was started with another API key than the one in connection '{conn_id}'"),
    ],
}


class FakeTI:
    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)  # XCom values must serialize
        self.xcoms[key] = value


def _params() -> list[Any]:
    return [
        pytest.param(kind, *case, id=f"{kind}-{case[0]}")
        for kind in KINDS
        for case in CASES[kind.trigger_class.adapter.vendor.name]
    ]


def _connection(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer, kind: RunKind, key: str | None) -> str:
    """A connection like the kind's default one, holding ``key`` (plus SECRET_KEY, so leak checks see it)."""
    conn_id = f"{kind.name}_refused"
    conn = json.loads(emulator.connection_env(api_key=SECRET_KEY)[f"AIRFLOW_CONN_{kind.conn_id.upper()}"])
    if key is not None:
        conn["password"] = key if SECRET_KEY in key else f"{key}{SECRET_KEY}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


def _missing(run_id: str) -> str:
    """A run id of the same shape that nobody started."""
    tail = run_id[-4:]
    return run_id[:-4] + ("0000" if tail != "0000" else "1111")


def _line(call: Any) -> str:
    with pytest.raises(RunFailedError) as failed:
        call()
    return str(failed.value)


@pytest.mark.parametrize(("kind", "case", "key", "status", "says"), _params())
async def test_each_documented_error_fails_with_one_line_on_every_path(
    secret_connections: dict[str, str],
    runwatch_emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    kind: RunKind,
    case: str,
    key: str | None,
    status: int,
    says: str,
) -> None:
    started = kind.start("failure lines [emulator: polls=never]")
    run_id = _missing(started) if key is None else started
    conn_id = _connection(monkeypatch, runwatch_emulator, kind, key)
    sensor = SENSORS[kind.name](task_id=f"refused_{kind.name}", run_id=run_id, conn_id=conn_id, poke_interval=1)
    sensor.poll_interval = 0.05  # below Gumloop's advised minimum, only to keep the test short
    ti = FakeTI()
    ctx = task_context(ti=ti)

    event = await first_event(sensor.make_trigger(run_id, None))
    deferred = _line(lambda: sensor.execute_complete(ctx, event, run_id))
    blocking = _line(lambda: sensor.finish(ctx, sensor.wait_blocking(run_id, None), run_id))
    poked = _line(lambda: sensor.poke(ctx))

    assert deferred == blocking == poked, (deferred, blocking, poked)
    assert deferred.startswith(f"Stopped watching {kind.what} {run_id} (vendor state not seen): "), deferred
    assert f"(HTTP {status})" in deferred
    assert says.format(conn_id=conn_id) in deferred
    assert "may still be going" not in deferred
    assert SECRET_KEY not in deferred and SECRET_KEY not in json.dumps(event)
    assert ti.xcoms["run"]["error"] == event["message"], "the run XCom names the same cause"
