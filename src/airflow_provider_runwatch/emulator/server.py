"""Run the emulator from Python: in a child process (default) or in a daemon thread of this process.

Process mode is what tests and the demo should use: the emulator gets its own event loop and GIL, so it
neither slows the code under test nor is slowed by it, and a hung test cannot wedge it. Thread mode starts
faster and exposes the live :class:`EmulatorState` (``server.state``), handy for quick in-process checks.

``with EmulatorServer() as emu:`` starts it, gives ``emu.url`` and friends, and stops it on exit; the child is
also stopped at interpreter exit (atexit) and exits by itself when this process dies (it watches its stdin).
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import httpx

from airflow_provider_runwatch.emulator.clock import parse_speed
from airflow_provider_runwatch.emulator.scenario import parse_spec
from airflow_provider_runwatch.emulator.serving import LISTENING_PREFIX, TlsFiles, check_loopback

if TYPE_CHECKING:
    import ssl
    from types import TracebackType

    import uvicorn

    from airflow_provider_runwatch.emulator.state import EmulatorState

__all__ = ["DEFAULT_API_KEY", "EmulatorServer", "EmulatorStartError"]

DEFAULT_API_KEY = "rw-emulator-key"
START_TIMEOUT = 20.0
STOP_GRACE = 5.0

# The directory holding the ``airflow_provider_runwatch`` package, so the child imports the same code even
# when this process found it through sys.path tweaks rather than an installed distribution.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class EmulatorStartError(RuntimeError):
    """The emulator did not come up (the message carries the child's stderr when it died)."""


class EmulatorServer:
    """A running emulator and a small client for its control API.

    ``mode="process"`` runs ``python -m airflow_provider_runwatch.emulator`` as a child; ``mode="thread"``
    serves from a daemon thread. ``port=0`` picks a free port. ``scenario`` is the default scenario text.
    """

    def __init__(
        self,
        mode: Literal["process", "thread"] = "process",
        host: str = "127.0.0.1",
        port: int = 0,
        scenario: str | None = None,
        *,
        log_level: str = "warning",
        tls: TlsFiles | None = None,
        client_context: ssl.SSLContext | None = None,
        speed: float | None = None,
        puffle_concurrency: int | None = None,
    ) -> None:
        if mode not in ("process", "thread"):
            raise ValueError(f"mode must be 'process' or 'thread', not {mode!r}")
        check_loopback(host)
        parse_spec(scenario)  # fail here, not in the child, on a bad scenario
        self.mode = mode
        self.host = host
        self.port = port
        self.scenario = scenario
        #: Clock speed to launch with (None: the child reads ``RUNWATCH_EMULATOR_SPEED``, a thread runs at 1).
        self.speed = None if speed is None else parse_speed(speed)
        #: Unfinished Puffle chat runs per key before a start gets 429 (None: unlimited).
        self.puffle_concurrency = puffle_concurrency
        self.log_level = log_level
        #: Serve https with these files; ``client_context`` is what the control-API client trusts (and presents).
        self.tls = tls
        self.client_context = client_context
        self._url: str | None = None
        self._client: httpx.Client | None = None
        # process mode
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        # thread mode
        self._thread: threading.Thread | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._state: EmulatorState | None = None
        self._thread_error: BaseException | None = None
        self._owner_pid = os.getpid()

    # -- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._url is not None

    def start(self) -> EmulatorServer:
        """Start and wait until the emulator serves requests; returns self. Starting twice is an error."""
        if self._url is not None:
            raise RuntimeError("emulator already started")
        self._owner_pid = os.getpid()
        atexit.register(self.stop)
        try:
            if self.mode == "process":
                self._start_process()
            else:
                self._start_thread()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the emulator (idempotent): SIGTERM, then SIGKILL after 5 s, then wait; or end the thread.

        In a forked copy of the starting process (Airflow forks task processes, and forks inherit atexit
        handlers) this does nothing: only the process that started the emulator may stop it.
        """
        atexit.unregister(self.stop)
        if self._owner_pid != os.getpid():
            return
        self._url = None
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        server, self._uvicorn = self._uvicorn, None
        thread, self._thread = self._thread, None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(STOP_GRACE + 5)
        self._state = None

    def _start_process(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "airflow_provider_runwatch.emulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--log-level",
            self.log_level,
            "--exit-with-stdin",
        ]
        if self.scenario:
            cmd += ["--scenario", self.scenario]
        if self.speed is not None:
            cmd += ["--speed", repr(self.speed)]
        if self.puffle_concurrency is not None:
            cmd += ["--puffle-concurrency", str(self.puffle_concurrency)]
        if self.tls is not None:
            cmd += self.tls.args()
        env = dict(os.environ)
        existing = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _PACKAGE_ROOT if not existing else _PACKAGE_ROOT + os.pathsep + existing
        # A file, not a pipe: a long-lived child logging to an unread pipe would block once it filled.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the child)
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env, bufsize=0
        )
        line = self._read_listening_line(self._proc)
        self._url = line[len(LISTENING_PREFIX) :].strip()

    def _child_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace").strip()[-4000:]

    def _read_listening_line(self, proc: subprocess.Popen[bytes]) -> str:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + START_TIMEOUT
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise EmulatorStartError(
                        f"emulator did not report listening within {START_TIMEOUT:g} s; stderr:\n{self._child_stderr()}"
                    )
                if selector.select(min(remaining, 0.5)):
                    chunk = os.read(fd, 4096)
                    if chunk:
                        buffer += chunk
                        continue
                    # EOF on stdout: the child is exiting
                    try:
                        code: int | None = proc.wait(STOP_GRACE)
                    except subprocess.TimeoutExpired:
                        code = None
                    raise EmulatorStartError(f"emulator exited with code {code}; stderr:\n{self._child_stderr()}")
                if proc.poll() is not None:
                    raise EmulatorStartError(
                        f"emulator exited with code {proc.returncode}; stderr:\n{self._child_stderr()}"
                    )
        line = buffer.split(b"\n", 1)[0].decode("utf-8", "replace")
        if not line.startswith(LISTENING_PREFIX):
            raise EmulatorStartError(f"unexpected first line from the emulator: {line!r}")
        return line

    def _start_thread(self) -> None:
        import uvicorn

        from airflow_provider_runwatch.emulator.app import create_app
        from airflow_provider_runwatch.emulator.serving import bind_socket, make_config, origin
        from airflow_provider_runwatch.emulator.state import EmulatorState

        state = EmulatorState(
            default_scenario=parse_spec(self.scenario),
            speed=self.speed or 1.0,
            puffle_concurrency=self.puffle_concurrency,
        )
        sock = bind_socket(self.host, self.port)
        server = uvicorn.Server(make_config(create_app(state), self.log_level, self.tls))

        def serve() -> None:
            try:
                server.run(sockets=[sock])  # no signal handlers outside the main thread
            except BaseException as exc:  # reported by start()
                self._thread_error = exc
            finally:
                sock.close()

        self._state = state
        self._uvicorn = server
        self._thread = threading.Thread(target=serve, name="runwatch-emulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive():
                raise EmulatorStartError(f"emulator thread stopped during startup: {self._thread_error!r}")
            if time.monotonic() > deadline:
                raise EmulatorStartError(f"emulator thread did not start within {START_TIMEOUT:g} s")
            time.sleep(0.005)
        self._url = origin(sock, tls=self.tls is not None)
        while True:
            try:
                if self._http().get("/_emulator/health").json() == {"ok": True}:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise EmulatorStartError("emulator thread does not answer /_emulator/health")
            time.sleep(0.01)

    # -- addresses -------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The origin, e.g. ``http://127.0.0.1:41234``."""
        if self._url is None:
            raise RuntimeError("emulator is not running")
        return self._url

    @property
    def puffle_url(self) -> str:
        """Puffle connection host (the vendor's paths start at the origin)."""
        return self.url

    @property
    def gumloop_url(self) -> str:
        """Gumloop connection host (``/api/v1`` like ``https://api.gumloop.com/api/v1``)."""
        return self.url + "/api/v1"

    @property
    def gloriamundo_url(self) -> str:
        """GloriaMundo connection host (``/api/v1`` like ``https://app.gloriamundo.com/api/v1``)."""
        return self.url + "/api/v1"

    @property
    def pid(self) -> int | None:
        """The child's pid in process mode (None in thread mode or when stopped)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def state(self) -> EmulatorState | None:
        """The live state in thread mode (None in process mode: use the control-API methods)."""
        return self._state

    def connection_env(self, api_key: str = DEFAULT_API_KEY) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables (Airflow's JSON form) pointing the default connections here."""
        conns: dict[str, dict[str, str]] = {
            "AIRFLOW_CONN_PUFFLE_DEFAULT": {
                "conn_type": "puffle",
                "host": self.puffle_url,
                "password": api_key,
            },
            "AIRFLOW_CONN_GUMLOOP_DEFAULT": {
                "conn_type": "gumloop",
                "host": self.gumloop_url,
                "login": "emulator-user",
                "password": api_key,
            },
            "AIRFLOW_CONN_GLORIAMUNDO_DEFAULT": {
                "conn_type": "gloriamundo",
                "host": self.gloriamundo_url,
                "password": api_key,
            },
        }
        return {name: json.dumps(conn) for name, conn in conns.items()}

    # -- control API -----------------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None:
            # trust_env=False: an HTTP(S)_PROXY in the environment must not capture loopback control calls.
            verify: ssl.SSLContext | bool = self.client_context if self.client_context is not None else True
            self._client = httpx.Client(base_url=self.url, timeout=30.0, trust_env=False, verify=verify)
        return self._client

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http().request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    def health(self) -> bool:
        try:
            return bool(self._call("GET", "/_emulator/health").get("ok"))
        except httpx.HTTPError:
            return False

    def requests(
        self,
        vendor: str | None = None,
        method: str | None = None,
        path_prefix: str | None = None,
        run_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Logged vendor requests matching every given filter, oldest first."""
        params = {
            k: v
            for k, v in {
                "vendor": vendor,
                "method": method,
                "path_prefix": path_prefix,
                "run_id": run_id,
            }.items()
            if v is not None
        }
        result: list[dict[str, Any]] = self._call("GET", "/_emulator/requests", params=params)["requests"]
        return result

    def runs(self, vendor: str | None = None) -> list[dict[str, Any]]:
        """The emulator's records of every run (of ``vendor``, when given)."""
        params = {"vendor": vendor} if vendor else {}
        result: list[dict[str, Any]] = self._call("GET", "/_emulator/runs", params=params)["runs"]
        return result

    def run(self, run_id: str) -> dict[str, Any]:
        """The emulator's record of a run; KeyError if it does not know the run."""
        response = self._http().get(f"/_emulator/runs/{run_id}")
        if response.status_code == 404:
            raise KeyError(run_id)
        response.raise_for_status()
        record: dict[str, Any] = response.json()
        return record

    def complete(self, run_id: str, outcome: str = "succeeded") -> dict[str, Any]:
        """Make the run's next status poll terminal with ``outcome``; KeyError if the run is unknown."""
        response = self._http().post(f"/_emulator/runs/{run_id}/complete", json={"outcome": outcome})
        if response.status_code == 404:
            raise KeyError(run_id)
        response.raise_for_status()
        record: dict[str, Any] = response.json()
        return record

    def schedule_sessions(self, agent_id: str, count: int = 1, every: float = 0.0, **options: Any) -> list[str]:
        """Plan Gumloop sessions that appear and finish on their own (``POST
        /_emulator/gumloop/agents/{agent_id}/sessions``); returns their ids. ``options``: ``start_in``,
        ``scenario`` (default ``seconds=5``), ``type``, ``name``, ``trigger_id``, ``creator_user_id``, ``api_key``."""
        body = {"count": count, "every": every, **options}
        response = self._http().post(f"/_emulator/gumloop/agents/{agent_id}/sessions", json=body)
        if response.status_code == 400:
            raise ValueError(response.json().get("error", response.text))
        response.raise_for_status()
        return [item["id"] for item in response.json()["sessions"]]

    def set_scenario(self, text: str | None) -> None:
        """Default scenario for runs started from now on without their own (None or "" clears it)."""
        response = self._http().put("/_emulator/scenario", json={"scenario": text})
        if response.status_code == 400:
            raise ValueError(response.json().get("error", response.text))
        response.raise_for_status()

    def set_speed(self, speed: float) -> None:
        """Run the emulator's clock ``speed`` times faster from now on (``reset`` restores the launch speed)."""
        response = self._http().put("/_emulator/clock", json={"speed": speed})
        if response.status_code == 400:
            raise ValueError(response.json().get("error", response.text))
        response.raise_for_status()

    def set_limits(self, vendor: str, **limits: Any) -> dict[str, Any]:
        """``PUT /_emulator/{vendor}/limits`` (gumloop: ``pro=3``...; gloriamundo: ``executions=10``...;
        puffle: ``concurrency=N``); returns the limits now in force."""
        response = self._http().put(f"/_emulator/{vendor}/limits", json=limits)
        if response.status_code == 400:
            raise ValueError(response.json().get("error", response.text))
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def rejections(self) -> dict[str, dict[str, int]]:
        """429s sent so far, ``{vendor: {reason: n, "total": n}}`` (reasons: concurrency, rate, scenario)."""
        result: dict[str, dict[str, int]] = self._call("GET", "/_emulator/rejections")["rejections"]
        return result

    def reset(self) -> None:
        """Forget runs, the request log and the default scenario."""
        self._call("POST", "/_emulator/reset")

    def clear_requests(self) -> None:
        self._call("DELETE", "/_emulator/requests")
