"""The CLI, EmulatorServer in both modes, connection_env() and the pytest plugin (real processes)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

import airflow_provider_runwatch.emulator as emulator_pkg
from airflow_provider_runwatch.emulator.cli import main
from airflow_provider_runwatch.emulator.scenario import ScenarioError
from airflow_provider_runwatch.emulator.server import EmulatorServer, EmulatorStartError
from airflow_provider_runwatch.emulator.serving import is_loopback_host

if TYPE_CHECKING:
    from collections.abc import Iterator

SRC = str(Path(emulator_pkg.__file__).resolve().parents[2])
LISTENING = re.compile(r"^runwatch-emulator listening on http://127\.0\.0\.1:(\d+)$")
KEY = {"Authorization": "Bearer pk_live_server_test"}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie left for a non-reaping init counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def cli_process() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_runwatch.emulator", "--port", "0", "--scenario", "polls=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_cli_prints_one_listening_line_and_serves(cli_process: subprocess.Popen[str]) -> None:
    assert cli_process.stdout is not None
    line = cli_process.stdout.readline().rstrip("\n")
    match = LISTENING.match(line)
    assert match, line
    port = int(match.group(1))
    assert port not in (0, 8765)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, trust_env=False) as client:
        assert client.get("/_emulator/health").json() == {"ok": True}
        run_id = client.post("/api/agent/chat", json={"message": "hi"}, headers=KEY).json()["runId"]
        assert client.get(f"/api/agent/chat/{run_id}", headers=KEY).json()["status"] == "completed"  # --scenario
    cli_process.send_signal(signal.SIGTERM)
    out, err = cli_process.communicate(timeout=10)
    assert out == ""  # exactly one line on stdout
    assert cli_process.returncode == 0, err


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_cli_refuses_non_loopback_hosts(host: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_runwatch.emulator", "--host", host, "--port", "0"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"refusing to listen on {host!r}" in lines[0]
    assert "loopback" in lines[0]


def test_cli_main_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", "10.1.2.3"]) == 2
    assert "refusing to listen" in capsys.readouterr().err
    assert main(["--scenario", "bogus=1"]) == 2
    assert "emulator: unknown scenario key 'bogus'" in capsys.readouterr().err
    assert main(["--port", "70000"]) == 2
    assert main(["--log-level", "loud"]) == 2


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, ok: bool) -> None:
    assert is_loopback_host(host) is ok


def test_emulator_server_process_mode() -> None:
    server = EmulatorServer(scenario="polls=1")
    with server as emu:
        pid = emu.pid
        assert pid is not None
        assert not _gone(pid)
        assert emu.state is None
        assert re.match(r"^http://127\.0\.0\.1:\d+$", emu.url)
        assert emu.puffle_url == emu.url
        assert emu.gumloop_url == emu.gloriamundo_url == emu.url + "/api/v1"
        assert emu.health()
        with httpx.Client(base_url=emu.puffle_url, trust_env=False) as client:
            run_id = client.post("/api/agent/chat", json={"message": "hi"}, headers=KEY).json()["runId"]
            assert emu.run(run_id)["scenario"]["polls"] == 1  # default from the constructor
            assert emu.complete(run_id, "failed")["forced_outcome"] == "failed"
            assert client.get(f"/api/agent/chat/{run_id}", headers=KEY).json()["status"] == "failed"
            assert [e["method"] for e in emu.requests(run_id=run_id)] == ["POST", "GET"]
            assert emu.requests(vendor="puffle", method="GET", path_prefix="/api/agent/chat/") != []
            emu.set_scenario("polls=0 outcome=cancelled")
            other = client.post("/api/agent/chat", json={"message": "hi"}, headers=KEY).json()["runId"]
            assert client.get(f"/api/agent/chat/{other}", headers=KEY).json()["status"] == "cancelled"
            with pytest.raises(ValueError, match="unknown scenario key"):
                emu.set_scenario("nope=1")
            emu.clear_requests()
            assert emu.requests() == []
            child = os.fork()  # a fork (as Airflow makes) must not stop its parent's emulator
            if child == 0:
                try:
                    emu.stop()
                finally:
                    os._exit(0)
            os.waitpid(child, 0)
            assert emu.health()
            emu.reset()
            with pytest.raises(KeyError):
                emu.run(run_id)
    assert _wait_gone(pid)
    assert not server.running
    server.stop()  # idempotent


def test_emulator_server_thread_mode() -> None:
    with EmulatorServer(mode="thread", scenario="polls=0") as emu:
        assert emu.pid is None
        assert emu.state is not None
        with httpx.Client(base_url=emu.url, trust_env=False) as client:
            run_id = client.post("/api/agent/chat", json={"message": "hi"}, headers=KEY).json()["runId"]
            assert client.get(f"/api/agent/chat/{run_id}", headers=KEY).json()["status"] == "completed"
        assert emu.state.runs[run_id].polls_answered == 1
        assert emu.run(run_id)["state"] == "completed"
        url = emu.url
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/_emulator/health", timeout=2, trust_env=False)
    with pytest.raises(RuntimeError):
        _ = emu.url


def test_emulator_server_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="refusing to listen"):
        EmulatorServer(host="0.0.0.0")
    with pytest.raises(ScenarioError):
        EmulatorServer(scenario="pols=1")
    with pytest.raises(ValueError, match="mode"):
        EmulatorServer(mode="fork")  # type: ignore[arg-type]


def test_emulator_server_reports_child_stderr_when_it_dies() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = EmulatorServer(port=port)
        with pytest.raises(EmulatorStartError, match="cannot listen"):
            server.start()
        assert not server.running


def test_connection_env() -> None:
    with EmulatorServer(mode="thread") as emu:
        env = emu.connection_env()
        custom = emu.connection_env(api_key="pk_live_custom")
        origin = emu.url
    assert set(env) == {
        "AIRFLOW_CONN_PUFFLE_DEFAULT",
        "AIRFLOW_CONN_GUMLOOP_DEFAULT",
        "AIRFLOW_CONN_GLORIAMUNDO_DEFAULT",
    }
    puffle = json.loads(env["AIRFLOW_CONN_PUFFLE_DEFAULT"])
    gumloop = json.loads(env["AIRFLOW_CONN_GUMLOOP_DEFAULT"])
    gloria = json.loads(env["AIRFLOW_CONN_GLORIAMUNDO_DEFAULT"])
    assert puffle == {"conn_type": "puffle", "host": origin, "password": "rw-emulator-key"}
    assert gumloop == {
        "conn_type": "gumloop",
        "host": origin + "/api/v1",
        "login": "emulator-user",
        "password": "rw-emulator-key",
    }
    assert gloria == {"conn_type": "gloriamundo", "host": origin + "/api/v1", "password": "rw-emulator-key"}
    assert json.loads(custom["AIRFLOW_CONN_PUFFLE_DEFAULT"])["password"] == "pk_live_custom"


_ORPHAN_SCRIPT = """
import os, sys
from airflow_provider_runwatch.emulator.server import EmulatorServer
emu = EmulatorServer().start()
print(emu.pid, flush=True)
if sys.argv[1] == "crash":
    os._exit(3)  # no atexit: the child must notice its stdin closing
sys.exit(0)  # normal exit without stop(): atexit stops the child
"""


@pytest.mark.parametrize("how", ["atexit", "crash"])
def test_child_does_not_outlive_its_parent(how: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _ORPHAN_SCRIPT, how], capture_output=True, text=True, env=_env(), timeout=60
    )
    pid = int(result.stdout.strip())
    assert _wait_gone(pid), f"emulator child {pid} outlived its parent ({how})"


def test_emulator_does_not_import_airflow() -> None:
    code = (
        "import sys\n"
        "import airflow_provider_runwatch.emulator.app, airflow_provider_runwatch.emulator.server\n"
        "import airflow_provider_runwatch.emulator.cli, airflow_provider_runwatch.emulator.pytest_plugin\n"
        "bad = [m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(), timeout=60)


def test_pytest_plugin(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["airflow_provider_runwatch.emulator.pytest_plugin"]\n')
    (tmp_path / "test_uses_plugin.py").write_text(
        textwrap.dedent(
            """
            import json, os
            import httpx

            def test_fixtures(runwatch_emulator, runwatch_connections):
                assert runwatch_emulator.pid is not None
                assert set(runwatch_connections) == {
                    "AIRFLOW_CONN_PUFFLE_DEFAULT", "AIRFLOW_CONN_GUMLOOP_DEFAULT", "AIRFLOW_CONN_GLORIAMUNDO_DEFAULT"
                }
                conn = json.loads(os.environ["AIRFLOW_CONN_PUFFLE_DEFAULT"])
                assert conn["host"] == runwatch_emulator.puffle_url
                r = httpx.post(conn["host"] + "/api/agent/chat", json={"message": "hi"},
                               headers={"Authorization": "Bearer " + conn["password"]}, trust_env=False)
                assert r.status_code == 202

            def test_env_is_restored(runwatch_emulator):
                assert "AIRFLOW_CONN_PUFFLE_DEFAULT" not in os.environ
            """
        )
    )
    env = _env()
    env.pop("AIRFLOW_CONN_PUFFLE_DEFAULT", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
