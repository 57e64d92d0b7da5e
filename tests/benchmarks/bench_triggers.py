"""Triggerer benchmark (issue 7): N of the provider's real triggers on ONE asyncio loop, against the bundled
emulator in its own process, compared with two baselines on the same emulator in the same run.

Run it with ``./dev bench`` (the full run, about 12 minutes) or ``./dev bench --quick`` (under 2 minutes);
``--help`` lists the flags. It prints a table and writes JSON (default ``bench-results/triggers.json``).

What runs where:

- the emulator: ``EmulatorServer(mode="process")`` with the default scenario ``polls=never`` (runs stay running),
  pinned to one core when the machine has two or more (``--no-pin`` to leave scheduling to the kernel);
- every measured phase: a fresh worker process (this file with ``--worker``), pinned to another core, one asyncio
  loop. A fresh process per phase keeps the RSS and CPU figures of one phase free of the others.

Variants (one row each per N):

- ``ours``: the provider's triggers (``PuffleChatRunTrigger``; Gumloop's session trigger too when that module
  exists), built from their serialized, encrypted kwargs exactly as the triggerer rebuilds them
  (``Trigger.encrypt_kwargs`` / ``_decrypt_kwargs`` / ``smart_decode_trigger_kwargs``), driven with ``anext``;
- ``anchor`` (baseline a): what several well-known providers do, a new ``httpx.AsyncClient`` (default
  ``verify``) per poll;
- ``floor`` (baseline b): no provider code at all, the cheapest GET + ``json.loads`` this machine can do: one
  keep-alive HTTP/1.1 connection per watcher on an ``asyncio.Protocol`` with the ``httptools`` C parser (raw
  ``asyncio`` streams when ``httptools`` is missing; ``floor-streams`` forces those).

Every watcher polls once per interval after a random first phase, like :class:`Poller`. Measured in a window
after a warm-up: polls/s achieved vs offered, p50/p99 poll latency, event-loop lag p99 (a probe coroutine that
sleeps 20 ms), client CPU per poll (process CPU time in the window / polls in the window), RSS per trigger
(RSS at the window start minus RSS before the triggers were created, / N), errors, and the emulator's CPU.
Also: completion latency at N=1000 (the emulator flips runs to completed through its control API; time until
the trigger yields), the emulator's capacity (back-to-back polls on 64 connections), and the import time the
provider's operator modules add over ``import airflow.sdk`` (fresh interpreters).

Not collected by pytest (the file name does not match ``test_*.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make ``tests.helpers`` importable (after any --src tree)
    sys.path.append(str(ROOT))
DEFAULT_JSON = ROOT / "bench-results" / "triggers.json"
API_KEY = "rw-emulator-key"
NEVER = "polls=never"
perf = time.perf_counter

# Issue 7 targets (this 2-core machine, emulator included).
TARGET_ACHIEVED_PCT = 95.0
TARGET_P99_MS = 250.0
TARGET_LAG_P99_MS = 100.0
TARGET_CPU_X_FLOOR = 1.5
TARGET_RSS_KIB = 30.0
TARGET_COMPLETION_MARGIN_MS = 100.0
TARGET_IMPORT_MS = 50.0


# -- small helpers ---------------------------------------------------------------------------------------------


def pct(values: Any, q: float) -> float | None:
    """The q-quantile (0..1) by the nearest-rank method; None for no values."""
    data = sorted(values)
    if not data:
        return None
    return float(data[min(len(data) - 1, max(0, math.ceil(q * len(data)) - 1))])


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (psutil when installed, else /proc/<pid>/stat)."""
    try:
        import psutil
    except ImportError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def proc_rss_bytes(pid: int) -> int:
    try:
        import psutil
    except ImportError:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.Process(pid).memory_info().rss)


def raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def host_port(url: str) -> tuple[str, int]:
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = netloc.rpartition(":")
    return host, int(port)


# -- vendors ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vendor:
    """How the benchmark starts a run that never ends, and which trigger watches it."""

    name: str
    trigger_path: str
    conn_id: str
    conn_env: str
    #: path prefix of the vendor's API on the emulator origin
    prefix: str
    start_path: str
    start_body: Callable[[int], dict[str, Any]]
    run_id_of: Callable[[Any], str]
    status_path: Callable[[str], str]
    trigger_kwargs: Callable[[str], dict[str, Any]] = lambda run_id: {}
    #: headers the vendor's API wants besides the key, on starts and polls alike
    headers: tuple[tuple[str, str], ...] = ()


def _gumloop_session_id(payload: Any) -> str:
    if isinstance(payload, dict):
        session = payload.get("session")
        if isinstance(session, dict) and session.get("id"):
            return str(session["id"])
        for key in ("session_id", "id"):
            if payload.get(key):
                return str(payload[key])
    raise ValueError(f"no session id in {payload!r:.200}")


VENDORS: dict[str, Vendor] = {
    "puffle": Vendor(
        name="puffle",
        trigger_path="airflow_provider_runwatch.triggers.puffle.PuffleChatRunTrigger",
        conn_id="puffle_default",
        conn_env="AIRFLOW_CONN_PUFFLE_DEFAULT",
        prefix="",
        start_path="/api/agent/chat",
        start_body=lambda i: {"message": f"benchmark run {i}"},
        run_id_of=lambda payload: str(payload["runId"]),
        status_path=lambda run_id: f"/api/agent/chat/{run_id}",
    ),
    # The session trigger: a bigger, nested answer per poll than Puffle's.
    "gumloop": Vendor(
        name="gumloop",
        trigger_path="airflow_provider_runwatch.triggers.gumloop.GumloopSessionTrigger",
        conn_id="gumloop_default",
        conn_env="AIRFLOW_CONN_GUMLOOP_DEFAULT",
        prefix="/api/v1",
        start_path="/api/v1/agents/agent_benchmark/sessions",
        start_body=lambda i: {"input": f"benchmark session {i}"},
        run_id_of=_gumloop_session_id,
        status_path=lambda run_id: f"/api/v1/sessions/{run_id}",
        # the connection's login (EmulatorServer.connection_env), which the sessions API wants as x-auth-key
        headers=(("x-auth-key", "emulator-user"),),
    ),
}
# GloriaMundo is left out on purpose: its API allows 60 polls/min per key and the provider enforces that budget
# per key, so N triggers on one key poll at 1/s in total by design, which is not a throughput figure.


def vendor_available(name: str) -> str | None:
    """None when the vendor's trigger can be imported, else the reason it cannot."""
    module, _, attribute = VENDORS[name].trigger_path.rpartition(".")
    try:
        getattr(importlib.import_module(module), attribute)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# -- worker side: recording ------------------------------------------------------------------------------------


class Recorder:
    """Counts polls that complete inside the measurement window, with their latencies, and the garbage
    collector's passes in the window (their count and time per generation: with thousands of live triggers a
    full collection is what the loop-lag probe sees first)."""

    def __init__(self) -> None:
        self.t0 = math.inf
        self.t1 = math.inf
        self.polls = 0
        self.errors = 0
        self.latencies = array("d")
        self.lags = array("d")
        self.error_samples: list[str] = []
        self.gc_count = [0, 0, 0]
        self.gc_seconds = [0.0, 0.0, 0.0]
        self.gc_max = 0.0
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = perf()
            return
        now = perf()
        if self.t0 <= now < self.t1:
            took = now - self._gc_started
            generation = info["generation"]
            self.gc_count[generation] += 1
            self.gc_seconds[generation] += took
            self.gc_max = max(self.gc_max, took)

    def gc_summary(self, polls: int) -> dict[str, Any]:
        return {
            "collections": self.gc_count,
            "ms": [round(s * 1000, 1) for s in self.gc_seconds],
            "max_ms": round(self.gc_max * 1000, 1),
            "us_per_poll": round(sum(self.gc_seconds) / polls * 1e6, 1) if polls else None,
        }

    def done(self, start: float, ok: bool, why: str = "") -> None:
        end = perf()
        if self.t0 <= end < self.t1:
            self.polls += 1
            self.latencies.append(end - start)
            if not ok:
                self.errors += 1
                if why and len(self.error_samples) < 5:
                    self.error_samples.append(why[:300])

    async def probe(self, period: float = 0.02) -> None:
        while True:
            before = perf()
            await asyncio.sleep(period)
            after = perf()
            if self.t0 <= after < self.t1:
                self.lags.append(after - before - period)


# -- worker side: the variants ---------------------------------------------------------------------------------


def first_delay(spec: dict[str, Any]) -> float:
    """A random phase within one interval, like :meth:`Poller.first_delay` (0 with ``--no-jitter``)."""
    return random.uniform(0, spec["interval"]) if spec.get("jitter", True) else 0.0


class RawConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, httptools-parsed, one request at a time: the floor client."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as exc:
            self._fail(exc)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), body))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("connection closed"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


def get_bytes(host: str, port: int, path: str, vendor: Vendor | None = None) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (vendor.headers if vendor else ()))
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Accept: application/json\r\n{extra}\r\n"
    ).encode()


async def floor_watcher(spec: dict[str, Any], rec: Recorder, run_id: str, vendor: Vendor) -> None:
    loop = asyncio.get_running_loop()
    host, port = host_port(spec["url"])
    request = get_bytes(host, port, vendor.status_path(run_id), vendor)
    interval = spec["interval"]
    conn: RawConnection | None = None
    await asyncio.sleep(first_delay(spec))
    while True:
        start = perf()
        try:
            if conn is None or not conn.usable:
                _, conn = await loop.create_connection(RawConnection, host, port)
            status, body = await conn.request(request)
            json.loads(body)
            rec.done(start, status == 200, f"HTTP {status}")
        except (OSError, ValueError) as exc:
            conn = None
            rec.done(start, False, repr(exc))
        await asyncio.sleep(interval)


async def floor_streams_watcher(spec: dict[str, Any], rec: Recorder, run_id: str, vendor: Vendor) -> None:
    host, port = host_port(spec["url"])
    request = get_bytes(host, port, vendor.status_path(run_id), vendor)
    interval = spec["interval"]
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    await asyncio.sleep(first_delay(spec))
    while True:
        start = perf()
        try:
            if streams is None:
                streams = await asyncio.open_connection(host, port)
            reader, writer = streams
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            json.loads(await reader.readexactly(length))
            rec.done(start, head.startswith(b"HTTP/1.1 200"), head[:40].decode(errors="replace"))
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            streams = None
            rec.done(start, False, repr(exc))
        await asyncio.sleep(interval)


async def anchor_watcher(spec: dict[str, Any], rec: Recorder, run_id: str, vendor: Vendor) -> None:
    import httpx

    interval = spec["interval"]
    path = vendor.status_path(run_id)
    headers = {"Authorization": f"Bearer {API_KEY}", "Accept": "application/json", **dict(vendor.headers)}
    await asyncio.sleep(first_delay(spec))
    while True:
        start = perf()
        try:
            # The anchor pattern: a new client (default verify: a fresh SSL context) for every poll.
            async with httpx.AsyncClient(base_url=spec["url"], headers=headers, timeout=30.0) as client:
                response = await client.get(path)
                response.json()
            rec.done(start, response.status_code == 200, f"HTTP {response.status_code}")
        except (httpx.HTTPError, ValueError) as exc:
            rec.done(start, False, repr(exc))
        await asyncio.sleep(interval)


class Ours:
    """The provider's triggers, rebuilt from serialized kwargs, every poll timed at ``AsyncApiClient.call``."""

    def __init__(self, spec: dict[str, Any], rec: Recorder, vendor: Vendor) -> None:
        self.spec, self.rec, self.vendor = spec, rec, vendor
        self.events: dict[str, tuple[float, str]] = {}
        self.unexpected: list[str] = []
        module, _, name = vendor.trigger_path.rpartition(".")
        self.trigger_class = getattr(importlib.import_module(module), name)
        self._instrument()

    def _instrument(self) -> None:
        from airflow_provider_runwatch.core import http as rw_http

        client_class = rw_http.AsyncApiClient
        original = client_class.call
        rec = self.rec
        if getattr(original, "_benchmark_timed", False):
            return

        async def timed_call(self: Any, call: Any, **kwargs: Any) -> Any:
            start = perf()
            try:
                result = await original(self, call, **kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                rec.done(start, False, repr(exc))
                raise
            rec.done(start, True)
            return result

        timed_call._benchmark_timed = True  # type: ignore[attr-defined]
        client_class.call = timed_call  # type: ignore[method-assign]

    def build(self, run_id: str) -> Any:
        kwargs = {
            "conn_id": self.vendor.conn_id,
            "run_id": run_id,
            "poll_interval": self.spec["interval"],
            "deadline": time.time() + 3600,
            **self.vendor.trigger_kwargs(run_id),
        }
        from tests.replay import rehydrate  # exactly what the triggerer does after a restart

        return rehydrate(self.trigger_class(**kwargs))

    async def drive(self, trigger: Any, run_id: str) -> None:
        events = trigger.run()
        try:
            event = await anext(events)
        finally:
            await events.aclose()
        status = str(event.payload.get("status"))
        self.events[run_id] = (perf(), status)
        if not self.spec.get("completion"):
            self.unexpected.append(f"{run_id}: {status}: {event.payload.get('message', '')[:200]}")


async def prime(ours: Ours, run_id: str) -> None:
    """Rebuild one trigger from its kwargs and run it for a few polls, then drop it, so the one-off costs of a
    process's first trigger (the triggerer's own modules that rebuilding loads, such as its ORM models; lazy
    imports, validators, the shared transport) are not counted as per-trigger memory. A triggerer has paid
    them before its first trigger runs."""
    from tests.replay import rehydrate

    trigger = rehydrate(ours.trigger_class(conn_id=ours.vendor.conn_id, run_id=run_id, poll_interval=0.05))
    task = asyncio.ensure_future(anext(trigger.run()))
    await asyncio.sleep(0.5)
    task.cancel()
    await asyncio.wait([task], timeout=10)
    gc.collect()


def prewarm_ours() -> None:
    """Import and build what every trigger shares once per process, so RSS per trigger counts triggers only."""
    import airflow.triggers.base  # noqa: F401

    from airflow_provider_runwatch.core import http as rw_http

    shared = getattr(rw_http, "shared_ssl_context", None)
    if shared is not None:
        shared()


# -- worker side: phases ---------------------------------------------------------------------------------------


async def phase(spec: dict[str, Any]) -> dict[str, Any]:
    variant = spec["variant"]
    vendor = VENDORS[spec["vendor"]]
    n, interval = spec["n"], spec["interval"]
    run_ids: list[str] = spec["run_ids"][:n]
    rec = Recorder()
    me = os.getpid()
    ours: Ours | None = None
    if variant == "ours":
        prewarm_ours()
        ours = Ours(spec, rec, vendor)
        await prime(ours, spec["prime_run_id"])
    elif variant == "anchor":
        import httpx  # noqa: F401
    gc.collect()
    rss_before = proc_rss_bytes(me)
    setup_started = perf()
    probe = asyncio.ensure_future(rec.probe())
    tasks: list[asyncio.Task[Any]] = []
    if ours is not None:
        for run_id in run_ids:
            tasks.append(asyncio.ensure_future(ours.drive(ours.build(run_id), run_id)))
    else:
        watcher: Callable[..., Awaitable[None]] = {
            "floor": floor_watcher,
            "floor-streams": floor_streams_watcher,
            "anchor": anchor_watcher,
        }[variant]
        for run_id in run_ids:
            tasks.append(asyncio.ensure_future(watcher(spec, rec, run_id, vendor)))
    setup_seconds = perf() - setup_started
    await asyncio.sleep(spec["warmup"])

    result: dict[str, Any] = {}
    emu_pid = spec["emulator_pid"]
    rss_window = proc_rss_bytes(me)
    cpu0, emu0, rec.t0 = time.process_time(), proc_cpu_seconds(emu_pid), perf()
    if spec.get("completion") and ours is not None:
        result["completion"] = await complete_runs(spec, ours, run_ids, tasks)
    else:
        await asyncio.sleep(spec["window"])
    rec.t1 = perf()
    cpu1, emu1 = time.process_time(), proc_cpu_seconds(emu_pid)
    rss_end = proc_rss_bytes(me)
    load = os.getloadavg()[0]
    window = rec.t1 - rec.t0

    probe.cancel()
    for task in tasks:
        task.cancel()
    started = perf()
    await asyncio.wait([*tasks, probe], timeout=60)
    teardown = perf() - started

    offered = n / interval
    achieved = rec.polls / window
    result.update(
        {
            "variant": variant,
            "vendor": vendor.name,
            "n": n,
            "interval": interval,
            "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
            "window_s": round(window, 2),
            "setup_s": round(setup_seconds, 2),
            "teardown_s": round(teardown, 2),
            "offered_per_s": round(offered, 1),
            "achieved_per_s": round(achieved, 1),
            "achieved_pct": round(100 * achieved / offered, 1) if offered else None,
            "polls": rec.polls,
            "p50_ms": ms(pct(rec.latencies, 0.50)),
            "p99_ms": ms(pct(rec.latencies, 0.99)),
            "max_ms": ms(max(rec.latencies, default=None)),
            "lag_p99_ms": ms(pct(rec.lags, 0.99)),
            "lag_max_ms": ms(max(rec.lags, default=None)),
            "cpu_us_per_poll": round((cpu1 - cpu0) / rec.polls * 1e6, 1) if rec.polls else None,
            "client_cpu_pct": round(100 * (cpu1 - cpu0) / window, 1),
            "emulator_cpu_pct": round(100 * (emu1 - emu0) / window, 1),
            "loadavg_1m": round(load, 2),
            "rss_before_mib": round(rss_before / 2**20, 1),
            "rss_window_mib": round(rss_window / 2**20, 1),
            "rss_end_mib": round(rss_end / 2**20, 1),
            "rss_kib_per_trigger": round((rss_window - rss_before) / 1024 / n, 1),
            "gc": rec.gc_summary(rec.polls),
            "errors": rec.errors + (len(ours.unexpected) if ours is not None and not spec.get("completion") else 0),
            "error_samples": rec.error_samples + (ours.unexpected[:5] if ours is not None else []),
        }
    )
    return result


async def complete_runs(
    spec: dict[str, Any], ours: Ours, run_ids: list[str], tasks: list[asyncio.Task[Any]]
) -> dict[str, Any]:
    """Flip the runs to completed one by one, spread over ``flip_span``; time each until its trigger yields."""
    loop = asyncio.get_running_loop()
    host, port = host_port(spec["url"])
    _, control = await loop.create_connection(RawConnection, host, port)
    body = b'{"outcome":"succeeded"}'
    flips: dict[str, float] = {}
    span = spec["flip_span"]
    start = perf()
    order = list(run_ids)
    random.shuffle(order)
    for index, run_id in enumerate(order):
        delay = start + index * span / len(order) - perf()
        if delay > 0:
            await asyncio.sleep(delay)
        flips[run_id] = perf()
        request = (
            f"POST /_emulator/runs/{run_id}/complete HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        status, _ = await control.request(request)
        if status != 200:
            raise RuntimeError(f"complete {run_id}: HTTP {status}")
    await asyncio.wait(tasks, timeout=3 * spec["interval"] + 10)  # each trigger's task ends with its event
    latencies = [ours.events[r][0] - flips[r] for r in order if r in ours.events]
    statuses: dict[str, int] = {}
    for _, event_status in ours.events.values():
        statuses[event_status] = statuses.get(event_status, 0) + 1
    assert control.transport is not None
    control.transport.close()
    return {
        "n": len(order),
        "interval": spec["interval"],
        "flip_span_s": span,
        "events": len(latencies),
        "statuses": statuses,
        "p50_ms": ms(pct(latencies, 0.50)),
        "p99_ms": ms(pct(latencies, 0.99)),
        "max_ms": ms(max(latencies, default=None)),
    }


async def capacity(spec: dict[str, Any]) -> dict[str, Any]:
    """Back-to-back polls on ``connections`` floor connections: the emulator's ceiling on this machine."""
    loop = asyncio.get_running_loop()
    host, port = host_port(spec["url"])
    vendor = VENDORS[spec["vendor"]]
    rec = Recorder()

    async def hammer(run_id: str) -> None:
        _, conn = await loop.create_connection(RawConnection, host, port)
        request = get_bytes(host, port, vendor.status_path(run_id))
        while True:
            start = perf()
            status, body = await conn.request(request)
            json.loads(body)
            rec.done(start, status == 200)

    ids = spec["run_ids"][: spec["connections"]]
    tasks = [asyncio.ensure_future(hammer(r)) for r in ids]
    await asyncio.sleep(spec["warmup"])
    cpu0, emu0, rec.t0 = time.process_time(), proc_cpu_seconds(spec["emulator_pid"]), perf()
    await asyncio.sleep(spec["window"])
    rec.t1 = perf()
    cpu1, emu1 = time.process_time(), proc_cpu_seconds(spec["emulator_pid"])
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=10)
    window = rec.t1 - rec.t0
    return {
        "variant": "capacity",
        "connections": len(ids),
        "window_s": round(window, 2),
        "polls_per_s": round(rec.polls / window, 1),
        "p50_ms": ms(pct(rec.latencies, 0.5)),
        "p99_ms": ms(pct(rec.latencies, 0.99)),
        "client_cpu_pct": round(100 * (cpu1 - cpu0) / window, 1),
        "client_cpu_us_per_poll": round((cpu1 - cpu0) / max(1, rec.polls) * 1e6, 1),
        "emulator_cpu_pct": round(100 * (emu1 - emu0) / window, 1),
        "emulator_cpu_us_per_poll": round((emu1 - emu0) / max(1, rec.polls) * 1e6, 1),
    }


def apply_settings(settings: list[str]) -> None:
    """``module.attribute=value`` overrides (a lever switched off or on for one phase); value is JSON."""
    for item in settings:
        target, _, raw = item.partition("=")
        module, _, attribute = target.rpartition(".")
        value = json.loads(raw)
        mod = importlib.import_module(module)
        if not hasattr(mod, attribute):
            raise SystemExit(f"--set {item}: {module} has no attribute {attribute!r}")
        setattr(mod, attribute, value)


def use_aiohttp_transport() -> None:
    """Lever measurement: every client of a loop sends through one shared ``httpx_aiohttp.AiohttpTransport``."""
    import httpx
    import httpx_aiohttp

    from airflow_provider_runwatch.core import http as rw_http

    shared: dict[asyncio.AbstractEventLoop, Any] = {}

    def get_transport(self: Any) -> Any:
        if self._transport is None:
            loop = asyncio.get_running_loop()
            if loop not in shared:
                limits = httpx.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=75)
                shared[loop] = httpx_aiohttp.AiohttpTransport(
                    verify=rw_http.shared_ssl_context(), trust_env=False, limits=limits
                )
            self._transport = shared[loop]
        return self._transport

    original_aclose = rw_http.AsyncApiClient.aclose

    async def aclose(self: Any) -> None:
        self._transport = None  # the shared transport outlives each client
        await original_aclose(self)

    rw_http.AsyncApiClient._get_transport = get_transport  # type: ignore[method-assign]
    rw_http.AsyncApiClient.aclose = aclose  # type: ignore[method-assign]


def worker_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    raise_nofile_limit()
    random.seed(spec.get("seed", 7))
    apply_settings(spec.get("settings", []))
    if spec.get("transport") == "aiohttp" and spec["variant"] == "ours":
        use_aiohttp_transport()
    if not spec.get("jitter", True) and spec["variant"] == "ours":
        from airflow_provider_runwatch.core.polling import Poller

        Poller.first_delay = lambda self: 0.0  # type: ignore[method-assign]
    if spec.get("loop") == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    result = asyncio.run(capacity(spec) if spec["variant"] == "capacity" else phase(spec))
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


# -- orchestrator ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small N, short windows: a smoke run in under 2 minutes")
    p.add_argument("--sizes", help="comma-separated N (default 100,1000,2000,5000; quick: 100,500)")
    p.add_argument("--interval", type=float, default=1.0, help="poll interval for N below --large-from (s)")
    p.add_argument("--large-interval", type=float, default=5.0, help="poll interval for N >= --large-from (s)")
    p.add_argument("--large-from", type=int, default=5000, help="N from which --large-interval applies")
    p.add_argument("--window", type=float, help="measurement window (s; default 20, quick 5; >= 6 intervals)")
    p.add_argument("--warmup", type=float, help="warm-up after the first interval (s; default 2, quick 1)")
    p.add_argument("--variants", default="floor,ours,anchor", help="floor, floor-streams, ours, anchor")
    p.add_argument(
        "--anchor-max-n",
        type=int,
        help="largest N for the anchor (default 1000, quick 100): it saturates the loop long before, and the\n"
        "measurement window then only measures how long the loop's backlog takes to drain",
    )
    p.add_argument(
        "--streams-floor-n",
        default=None,
        help="N at which the raw-asyncio-streams floor runs too, as a second reference (default 1000; quick none)",
    )
    p.add_argument(
        "--vendors", help="vendors of 'ours' (default: every importable one, puffle and gumloop; quick: puffle)"
    )
    p.add_argument("--completion-n", type=int, help="N of the completion-latency phase (default 1000, quick 200)")
    p.add_argument("--flip-span", type=float, help="seconds over which runs are flipped to completed (default 10)")
    p.add_argument("--capacity-connections", type=int, default=64, help="connections of the emulator-capacity phase")
    p.add_argument("--import-reps", type=int, help="fresh interpreters for the import figure (default 7, quick 3)")
    p.add_argument("--skip", default="", help="comma-separated: capacity, matrix, completion, imports")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop of the workers")
    p.add_argument("--no-pin", action="store_true", help="do not pin the emulator and the workers to separate cores")
    p.add_argument("--src", help="put this source tree first on the workers' sys.path (A/B against another tree)")
    p.add_argument(
        "--set", dest="settings", action="append", default=[], help="module.attr=JSON in the workers (a lever)"
    )
    p.add_argument(
        "--transport",
        choices=("default", "aiohttp"),
        default="default",
        help="'aiohttp': the provider's clients share one httpx_aiohttp.AiohttpTransport per loop\n"
        "(measurement only: needs aiohttp and httpx-aiohttp installed, which the provider does not depend on)",
    )
    p.add_argument(
        "--no-jitter", action="store_true", help="every watcher polls first at once (lever: the random first phase)"
    )
    p.add_argument("--label", default="", help="free text stored in the JSON")
    p.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the results (default %(default)s)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    args.sizes = [int(s) for s in (args.sizes or ("100,500" if quick else "100,1000,2000,5000")).split(",")]
    args.window = args.window or (5.0 if quick else 20.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    streams = args.streams_floor_n if args.streams_floor_n is not None else ("" if quick else "1000")
    args.streams_floor_n = [int(x) for x in streams.split(",") if x]
    args.anchor_max_n = args.anchor_max_n or (100 if quick else 1000)
    args.completion_n = args.completion_n or (200 if quick else 1000)
    args.flip_span = args.flip_span or (3.0 if quick else 10.0)
    args.import_reps = args.import_reps or (3 if quick else 7)
    args.variants = [v for v in args.variants.split(",") if v]
    args.skip = {s for s in args.skip.split(",") if s}
    return args


class Orchestrator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="runwatch-bench-"))
        self.home = self.tmp / "airflow-home"
        self.home.mkdir()
        self.cpus = sorted(os.sched_getaffinity(0))
        self.pin = not args.no_pin and len(self.cpus) >= 2
        self.phases: list[dict[str, Any]] = []
        self.started = perf()

    def log(self, message: str) -> None:
        print(f"[{perf() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)

    def worker_env(self, emulator_env: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        env.update(emulator_env)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        if self.args.src:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (self.args.src, env.get("PYTHONPATH")) if p)
        return env

    def run_worker(self, spec: dict[str, Any], env: dict[str, str], timeout: float) -> dict[str, Any]:
        name = f"{spec['variant']}-{spec.get('vendor', '')}-{spec.get('n', '')}-{len(self.phases)}"
        spec_path, out, log = self.tmp / f"{name}.json", self.tmp / f"{name}.out.json", self.tmp / f"{name}.log"
        spec = {**spec, "out": str(out), "loop": self.args.loop, "settings": self.args.settings}
        spec["jitter"] = not self.args.no_jitter
        spec["transport"] = self.args.transport
        spec_path.write_text(json.dumps(spec))

        def pin_worker() -> None:
            if self.pin:
                os.sched_setaffinity(0, {self.cpus[0]})

        with log.open("wb") as sink:
            try:
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", str(spec_path)],
                    env=env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    preexec_fn=pin_worker,
                    check=False,
                )
                code: int | str = proc.returncode
            except subprocess.TimeoutExpired:
                code = f"timeout after {timeout:.0f}s"
        if code == 0 and out.exists():
            result: dict[str, Any] = json.loads(out.read_text())
            return result
        tail = log.read_text(errors="replace")[-1500:]
        return {"variant": spec["variant"], "n": spec.get("n"), "failed": f"worker exit {code}", "log_tail": tail}

    def run(self) -> dict[str, Any]:
        from airflow_provider_runwatch.emulator.server import EmulatorServer

        args = self.args
        raise_nofile_limit()
        vendors = self.pick_vendors()
        report: dict[str, Any] = {
            "label": args.label,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(args.loop),
            "config": {
                k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items() if k not in ("worker",)
            },
            "vendors": {name: (reason or "used") for name, reason in vendors.items()},
        }
        used = [name for name, reason in vendors.items() if reason is None]
        with EmulatorServer(mode="process", scenario=NEVER) as emu:
            assert emu.pid is not None
            if self.pin:
                os.sched_setaffinity(emu.pid, {self.cpus[1]})
                os.sched_setaffinity(0, {self.cpus[0]})
            report["emulator"] = {"pid": emu.pid, "pinned_cpu": self.cpus[1] if self.pin else None}
            env = self.worker_env(emu.connection_env(api_key=API_KEY))
            need = max(args.sizes) if "matrix" not in args.skip else args.capacity_connections
            runs: dict[str, list[str]] = {}
            for name in list(used):
                try:
                    count = max(need, args.capacity_connections) + 1  # + 1: the priming trigger's run
                    runs[name] = asyncio.run(create_runs(emu.url, VENDORS[name], count))
                except Exception as exc:  # a vendor the emulator refuses: report it, measure the others
                    used.remove(name)
                    report["vendors"][name] = f"cannot start runs on the emulator: {type(exc).__name__}: {exc}"[:300]
                    self.log(f"skipping {name}: {report['vendors'][name]}")
            self.log(f"emulator {emu.url} (pid {emu.pid}); {sum(map(len, runs.values()))} runs started")
            base = {"url": emu.url, "emulator_pid": emu.pid}
            if "capacity" not in args.skip:
                spec = {**base, "variant": "capacity", "vendor": "puffle", "run_ids": runs["puffle"]}
                spec.update(connections=args.capacity_connections, warmup=1.0, window=5.0 if not args.quick else 3.0)
                self.log("emulator capacity")
                report["capacity"] = self.run_worker(spec, env, timeout=120)
                self.log(f"  -> {summarize(report['capacity'])}")
            if "matrix" not in args.skip:
                for n in args.sizes:
                    interval = args.large_interval if n >= args.large_from else args.interval
                    window = max(args.window, 6 * interval)
                    variants = list(args.variants)
                    if n in args.streams_floor_n and "floor" in variants and "floor-streams" not in variants:
                        variants.insert(1, "floor-streams")
                    for variant in variants:
                        if variant == "anchor" and n > args.anchor_max_n:
                            self.log(f"N={n} anchor skipped (--anchor-max-n {args.anchor_max_n})")
                            continue
                        for vendor in used if variant in ("ours", "floor") else ["puffle"]:
                            spec = {**base, "variant": variant, "vendor": vendor, "n": n, "interval": interval}
                            spec.update(run_ids=runs[vendor][:-1], prime_run_id=runs[vendor][-1])
                            spec.update(warmup=interval + args.warmup, window=window)
                            self.log(f"N={n} interval={interval:g}s {variant} {vendor}")
                            result = self.run_worker(spec, env, timeout=window + interval + 300)
                            self.phases.append(result)
                            self.log(f"  -> {summarize(result)}")
            if "completion" not in args.skip:
                n = args.completion_n
                fresh = asyncio.run(create_runs(emu.url, VENDORS["puffle"], n))
                spec = {**base, "variant": "ours", "vendor": "puffle", "n": n, "interval": args.interval}
                spec.update(run_ids=fresh, warmup=args.interval + args.warmup, window=0, completion=True)
                spec["prime_run_id"] = runs["puffle"][-1]
                spec["flip_span"] = args.flip_span
                self.log(f"completion latency, N={n}")
                result = self.run_worker(spec, env, timeout=args.flip_span + 300)
                report["completion"] = result.get("completion", result)
                self.log(f"  -> {summarize(report['completion'])}")
        if "imports" not in args.skip:
            self.log("import time (fresh interpreters)")
            report["imports"] = self.import_times(env)
            self.log(f"  -> {summarize(report['imports'])}")
        report["phases"] = self.phases
        add_ratios(report)
        report["marginal_rss"] = marginal_rss(report)
        report["targets"] = evaluate_targets(report, args)
        report["elapsed_s"] = round(perf() - self.started, 1)
        return report

    def pick_vendors(self) -> dict[str, str | None]:
        default = ["puffle"] if self.args.quick else list(VENDORS)
        wanted = self.args.vendors.split(",") if self.args.vendors else default
        return {name: vendor_available(name) for name in wanted}

    def import_times(self, env: dict[str, str]) -> dict[str, Any]:
        package = ROOT / "src" / "airflow_provider_runwatch" / "operators"
        if self.args.src:
            package = Path(self.args.src) / "airflow_provider_runwatch" / "operators"
        # What a DAG file imports: every operator module but base (imported by them) and lineage, which only
        # OpenLineage's extractor imports, when a task ends with the OpenLineage provider installed (638 ms of
        # OpenLineage's own imports, which counted here made the figure ~1 s).
        modules = [
            f"airflow_provider_runwatch.operators.{p.stem}"
            for p in sorted(package.glob("*.py"))
            if p.stem not in ("__init__", "base", "lineage")
        ]
        # What the dag-processor would also pay if the operators imported their hooks and triggers eagerly
        # (they import them when a task runs): the "lazy imports" lever. Only the hook and trigger modules that
        # exist: some operator modules (batch, lineage, gumloop_shared, ...) have no twin of that name.
        eager = [
            f"airflow_provider_runwatch.{kind}.{m.rsplit('.', 1)[1]}"
            for kind in ("hooks", "triggers")
            for m in modules
            if (package.parent / kind / f"{m.rsplit('.', 1)[1]}.py").exists()
        ]
        code = (
            "import json, sys, time\n"
            "t0 = time.perf_counter()\n"
            "import airflow.sdk\n"
            "airflow.sdk.DAG, airflow.sdk.BaseOperator\n"
            "t1 = time.perf_counter()\n"
            "steps, flags = {}, {}\n"
            "count = int(sys.argv[1])\n"
            "for index, name in enumerate(sys.argv[2:]):\n"
            "    s = time.perf_counter(); __import__(name); steps[name] = time.perf_counter() - s\n"
            "    if index == count - 1:  # after the operator modules, before the eager extras\n"
            "        flags['httpx'] = 'httpx' in sys.modules\n"
            "        flags['triggers'] = any(m.startswith('airflow_provider_runwatch.triggers') for m in sys.modules)\n"
            "print(json.dumps({'sdk': t1 - t0, 'steps': steps, **flags}))\n"
        )
        samples = []
        for _ in range(self.args.import_reps):
            out = subprocess.run(
                [sys.executable, "-c", code, str(len(modules)), *modules, *eager],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                check=True,
            )
            samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
        sdk = statistics.median(s["sdk"] for s in samples)
        added = statistics.median(sum(s["steps"][m] for m in modules) for s in samples)
        eager_added = statistics.median(sum(s["steps"][m] for m in eager) for s in samples)
        per_module = {m: ms(statistics.median(s["steps"][m] for s in samples)) for m in modules}
        return {
            "modules": modules,
            "reps": len(samples),
            "airflow_sdk_ms": ms(sdk),
            "provider_added_ms": ms(added),
            "ratio": round(added / sdk, 4) if sdk else None,
            "per_module_ms": per_module,
            "eager_hooks_triggers_would_add_ms": ms(eager_added),
            "imports_httpx": any(s["httpx"] for s in samples),
            "imports_triggers": any(s["triggers"] for s in samples),
        }


async def create_runs(url: str, vendor: Vendor, count: int) -> list[str]:
    """Start ``count`` runs that never end (the emulator's default scenario is ``polls=never``)."""
    import httpx

    limit = asyncio.Semaphore(16)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0, trust_env=False) as client:

        async def one(i: int) -> str:
            async with limit:
                response = await client.post(vendor.start_path, json=vendor.start_body(i), headers=dict(vendor.headers))
                response.raise_for_status()
                return vendor.run_id_of(response.json())

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def machine_info(loop: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loop": loop,
    }
    for name in ("airflow", "httpx", "httpcore", "httptools", "uvloop", "psutil", "aiohttp", "httpx_aiohttp"):
        try:
            from importlib.metadata import version

            info[name] = version({"airflow": "apache-airflow", "httpx_aiohttp": "httpx-aiohttp"}.get(name, name))
        except Exception:
            info[name] = None
    try:
        info["cpu_model"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        info["mem_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        info["loadavg_at_start"] = os.getloadavg()
    except (OSError, StopIteration, ValueError):
        pass
    return info


def add_ratios(report: dict[str, Any]) -> None:
    """CPU per poll as a multiple of the floor at the same N (the httptools floor; the streams floor when only
    that one ran), and of the streams floor where it ran."""
    floors: dict[tuple[int, str], float] = {}
    streams: dict[tuple[int, str], float] = {}
    for p in report["phases"]:
        key = (p.get("n"), p.get("vendor"))
        if p.get("cpu_us_per_poll") and p.get("variant") == "floor":
            floors[key] = p["cpu_us_per_poll"]
        if p.get("cpu_us_per_poll") and p.get("variant") == "floor-streams":
            streams[key] = p["cpu_us_per_poll"]
    for p in report["phases"]:
        key = (p.get("n"), p.get("vendor"))
        # the floor that polled the same vendor's answers (the anchor polls Puffle's)
        floor = floors.get(key) or streams.get(key)
        cpu = p.get("cpu_us_per_poll")
        p["x_floor"] = round(cpu / floor, 2) if cpu and floor else None
        stream = streams.get(key)
        p["x_streams_floor"] = round(cpu / stream, 2) if cpu and stream else None


def marginal_rss(report: dict[str, Any]) -> dict[str, Any]:
    """RSS per added trigger between the two largest N of each variant: what one more trigger costs, free of
    the process's one-off costs (imports, thread pools, arenas) that dominate the per-trigger figure at small N."""
    out: dict[str, Any] = {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in report["phases"]:
        if "failed" not in p:
            name = f"{p['variant']}:{p['vendor']}" if p["variant"] in ("ours", "floor") else p["variant"]
            groups.setdefault(name, []).append(p)
    for name, phases in groups.items():
        phases.sort(key=lambda p: p["n"])
        if len(phases) >= 2:
            a, b = phases[-2], phases[-1]
            grown = b["rss_kib_per_trigger"] * b["n"] - a["rss_kib_per_trigger"] * a["n"]
            out[name] = {"between": [a["n"], b["n"]], "kib_per_trigger": round(grown / (b["n"] - a["n"]), 1)}
    return out


def evaluate_targets(report: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def add(name: str, value: Any, ok: bool | None, bound: str) -> None:
        targets.append({"target": name, "value": value, "bound": bound, "met": ok})

    ours = [p for p in report["phases"] if p.get("variant") == "ours" and "failed" not in p]
    for p in ours:
        if p["n"] not in (1000, 5000) and not args.quick:
            continue
        where = f"N={p['n']} @{p['interval']:g}s {p['vendor']}"
        add(f"{where}: achieved", p["achieved_pct"], p["achieved_pct"] >= TARGET_ACHIEVED_PCT, ">= 95 %")
        add(f"{where}: p99 latency ms", p["p99_ms"], (p["p99_ms"] or 0) < TARGET_P99_MS, "< 250 ms")
        add(f"{where}: loop lag p99 ms", p["lag_p99_ms"], (p["lag_p99_ms"] or 0) < TARGET_LAG_P99_MS, "< 100 ms")
        x = p.get("x_floor")
        add(f"{where}: CPU/poll x floor", x, None if x is None else x <= TARGET_CPU_X_FLOOR, "<= 1.5x")
        add(f"{where}: RSS KiB/trigger", p["rss_kib_per_trigger"], p["rss_kib_per_trigger"] <= TARGET_RSS_KIB, "<= 30")
    completion = report.get("completion") or {}
    if completion.get("p99_ms") is not None:
        bound = completion["interval"] * 1000 + TARGET_COMPLETION_MARGIN_MS
        add(
            f"completion p99 ms (N={completion['n']})",
            completion["p99_ms"],
            completion["p99_ms"] <= bound and completion["events"] == completion["n"],
            f"<= {bound:g} ms",
        )
    imports = report.get("imports") or {}
    if imports.get("provider_added_ms") is not None:
        add("operator import adds ms", imports["provider_added_ms"], imports["provider_added_ms"] <= 50, "<= 50 ms")
    return targets


def summarize(result: dict[str, Any]) -> str:
    if "failed" in result:
        return f"FAILED ({result['failed']}): {result.get('log_tail', '')[-600:]}"
    keys = (
        "achieved_pct",
        "p50_ms",
        "p99_ms",
        "lag_p99_ms",
        "cpu_us_per_poll",
        "rss_kib_per_trigger",
        "errors",
        "emulator_cpu_pct",
        "polls_per_s",
        "events",
        "provider_added_ms",
        "airflow_sdk_ms",
    )
    return ", ".join(f"{k}={result[k]}" for k in keys if k in result)


def fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print()
    print(
        f"runwatch triggerer benchmark - {m.get('cpu_model', '?')}, {m['cpus']} CPUs, Python {m['python']}, "
        f"Airflow {m['airflow']}, httpx {m['httpx']}, loop {m['loop']}"
    )
    cap = report.get("capacity")
    if cap and "failed" not in cap:
        print(
            f"emulator capacity: {cap['polls_per_s']:.0f} polls/s on {cap['connections']} connections "
            f"(emulator CPU {cap['emulator_cpu_pct']:.0f} %, {cap['emulator_cpu_us_per_poll']:.0f} us/poll; "
            f"client CPU {cap['client_cpu_pct']:.0f} %)"
        )
    header = (
        f"{'N':>5} {'every':>5} {'variant':<14} {'offered/s':>9} {'achieved/s':>10} {'%':>6} {'p50 ms':>7} "
        f"{'p99 ms':>8} {'lag p99':>8} {'CPU us/poll':>11} {'x floor':>7} {'KiB/trig':>8} {'errors':>6} "
        f"{'emu CPU%':>8} {'load':>5}"
    )
    print(header)
    print("-" * len(header))
    for p in report["phases"]:
        name = f"{p.get('variant')}:{p.get('vendor')}" if p.get("variant") in ("ours", "floor") else p.get("variant")
        if "failed" in p:
            print(f"{fmt(p.get('n')):>5} {'':>5} {name:<14} FAILED: {p['failed']}")
            continue
        print(
            f"{p['n']:>5} {p['interval']:>4g}s {name:<14} {p['offered_per_s']:>9.0f} {p['achieved_per_s']:>10.0f} "
            f"{p['achieved_pct']:>6.1f} {fmt(p['p50_ms'], '.1f'):>7} {fmt(p['p99_ms'], '.1f'):>8} "
            f"{fmt(p['lag_p99_ms'], '.1f'):>8} {fmt(p['cpu_us_per_poll'], '.0f'):>11} {fmt(p['x_floor'], '.2f'):>7} "
            f"{p['rss_kib_per_trigger']:>8.1f} {p['errors']:>6} {p['emulator_cpu_pct']:>8.0f} "
            f"{fmt(p.get('loadavg_1m'), '.1f'):>5}"
        )
    print(
        "x floor: CPU per poll over that of the floor polling the same vendor's answers at the same N;\n"
        "load: the machine's 1-minute load average at the end of the window (this benchmark's two processes included)"
    )
    marginal = report.get("marginal_rss") or {}
    if marginal:
        print(
            "RSS per added trigger (between the two largest N): "
            + ", ".join(f"{k} {v['kib_per_trigger']} KiB" for k, v in marginal.items())
        )
    completion = report.get("completion")
    if completion:
        if "p99_ms" in completion:
            print(
                f"completion latency (N={completion['n']}, poll every {completion['interval']:g}s): "
                f"p50 {fmt(completion['p50_ms'])} ms, p99 {fmt(completion['p99_ms'])} ms, "
                f"max {fmt(completion['max_ms'])} ms, {completion['events']}/{completion['n']} events "
                f"{completion['statuses']}"
            )
        else:
            print(f"completion latency: FAILED {completion.get('failed')}")
    imports = report.get("imports")
    if imports:
        print(
            f"DAG-parse import: airflow.sdk (+DAG, BaseOperator) {imports['airflow_sdk_ms']} ms; "
            f"{', '.join(m.rsplit('.', 1)[1] for m in imports['modules'])} operators add "
            f"{imports['provider_added_ms']} ms (x{imports['ratio']}), median of {imports['reps']}; "
            f"(hooks + triggers too, if imported eagerly: +{imports['eager_hooks_triggers_would_add_ms']} ms); "
            f"triggers imported: {imports['imports_triggers']}"
        )
    print()
    for t in report.get("targets", []):
        mark = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        print(f"  [{mark:>6}] {t['target']}: {t['value']} (target {t['bound']})")
    print(f"\nelapsed {report['elapsed_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    report = Orchestrator(args).run()
    print_report(report)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
