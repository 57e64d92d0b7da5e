"""Proxied benchmark (issue 15): N pollers at one poll per interval on ONE asyncio loop, each an
``AsyncApiClient`` of a Puffle connection as a trigger holds one, against the emulator over https (a CA made
at run time), first directly, then through a real tinyproxy with BasicAuth, in the same run.

Run it with ``./dev bench --proxy`` (flags after it are passed on, e.g. ``--n 1000 --window 20``).
Prints, per variant: polls achieved vs offered, the provider process's CPU per poll, the emulator's and the
proxy's CPU; then the ratio of CPU per poll proxied / direct (target at most 1.3) and the share of polls
achieved (target at least 95 %). Every process it starts is on loopback, in a temporary directory, and is
stopped on exit, on failure and on SIGTERM.

Not collected by pytest (the file name does not match ``test_*.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.network.infra import TinyProxy, make_pki

from airflow_provider_runwatch.core.clients import AsyncApiClient, ClientOptions
from airflow_provider_runwatch.core.connection import ConnectionSettings
from airflow_provider_runwatch.emulator.server import EmulatorServer
from airflow_provider_runwatch.emulator.serving import TlsFiles
from airflow_provider_runwatch.vendors import puffle
from airflow_provider_runwatch.vendors.puffle import PUFFLE

API_KEY = "pk_bench_proxy_key"


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def settings(url: str, extras: dict[str, Any]) -> ConnectionSettings:
    return ConnectionSettings(PUFFLE, "bench", url, API_KEY, extras={"trust_env": False, **extras})


async def create_runs(conn: ConnectionSettings, count: int) -> list[str]:
    options = ClientOptions(headers={"Authorization": f"Bearer {API_KEY}"})
    async with AsyncApiClient(conn, options) as client:
        ids: list[str] = []
        for start in range(0, count, 100):
            batch = [client.call(puffle.start_chat(f"bench {i}")) for i in range(start, min(count, start + 100))]
            ids += [started.runId for started in await asyncio.gather(*batch)]
    return ids


async def measure(
    conn: ConnectionSettings,
    run_ids: list[str],
    interval: float,
    warmup: float,
    window: float,
    pids: dict[str, int | None],
    proxy: TinyProxy | None = None,
) -> dict[str, Any]:
    options = ClientOptions(headers={"Authorization": f"Bearer {API_KEY}"})
    clients = [AsyncApiClient(conn, options) for _ in run_ids]
    counting = False
    polls = errors = 0

    async def poll(client: AsyncApiClient, run_id: str) -> None:
        nonlocal polls, errors
        call = puffle.get_chat_run(run_id)
        await asyncio.sleep(random.uniform(0, interval))
        next_at = time.perf_counter()
        while True:
            try:
                await client.call(call)
                if counting:
                    polls += 1
            except Exception:
                if counting:
                    errors += 1
            # Like a trigger: the next poll one interval after the last was due, never a burst to catch up.
            next_at = max(next_at + interval, time.perf_counter())
            await asyncio.sleep(next_at - time.perf_counter())

    tasks = [asyncio.ensure_future(poll(c, r)) for c, r in zip(clients, run_ids, strict=False)]
    await asyncio.sleep(interval + warmup)
    others0 = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
    mark = proxy.mark() if proxy is not None else 0
    counting, cpu0, t0 = True, time.process_time(), time.perf_counter()
    await asyncio.sleep(window)
    counting, cpu1, t1 = False, time.process_time(), time.perf_counter()
    tunnels_in_window = len(proxy.requests_since(mark)) if proxy is not None else None
    others1 = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        await client.aclose()
    elapsed = t1 - t0
    offered = len(run_ids) / interval * elapsed
    result: dict[str, Any] = {
        "polls": polls,
        "errors": errors,
        "achieved_pct": round(100 * polls / offered, 1),
        "cpu_us_per_poll": round((cpu1 - cpu0) / max(1, polls) * 1e6, 1),
        "client_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed, 1),
        "tunnels_opened_in_window": tunnels_in_window,
    }
    for name in others1:
        result[f"{name}_cpu_pct"] = round(100 * (others1[name] - others0[name]) / elapsed, 1)
        result[f"{name}_cpu_us_per_poll"] = round((others1[name] - others0[name]) / max(1, polls) * 1e6, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="pollers (default %(default)s)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a poller's polls")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=20.0, help="measurement window per variant (s)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the children on SIGTERM too
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-proxy-") as tmp:
        pki = make_pki(Path(tmp) / "pki")
        proxy = TinyProxy(Path(tmp) / "proxy", ("bench", "bench-proxy-pw"))
        tls = TlsFiles(str(pki.server_cert), str(pki.server_key))
        import ssl

        control = ssl.create_default_context(cafile=str(pki.ca))
        try:
            proxy.start()
            with EmulatorServer(mode="process", scenario="polls=never", tls=tls, client_context=control) as emu:
                direct = settings(emu.puffle_url, {"verify": str(pki.ca)})
                proxied = settings(emu.puffle_url, {"verify": str(pki.ca), "proxies": proxy.url})
                run_ids = asyncio.run(create_runs(direct, args.n))
                results: dict[str, Any] = {"n": args.n, "interval": args.interval, "window": args.window}
                for name, conn in (("direct_tls", direct), ("proxied_tls", proxied)):
                    pids = {"emulator": emu.pid, "proxy": proxy.pid if name == "proxied_tls" else None}
                    via = proxy if name == "proxied_tls" else None
                    results[name] = asyncio.run(
                        measure(conn, run_ids, args.interval, args.warmup, args.window, pids, via)
                    )
                    print(name, json.dumps(results[name]), flush=True)
                ratio = results["proxied_tls"]["cpu_us_per_poll"] / results["direct_tls"]["cpu_us_per_poll"]
                results["cpu_ratio_proxied_over_direct"] = round(ratio, 2)
                tunnels = sum(1 for line in proxy.requests_since(0) if line.startswith("CONNECT "))
                results["proxy_tunnels_opened"] = tunnels
        finally:
            proxy.stop()
    print(
        f"N={args.n} at {1 / args.interval:g} poll/s: achieved {results['proxied_tls']['achieved_pct']} % through the "
        f"proxy (direct {results['direct_tls']['achieved_pct']} %); provider CPU per poll proxied/direct "
        f"{results['cpu_ratio_proxied_over_direct']}x (target <= 1.3); proxy CPU "
        f"{results['proxied_tls'].get('proxy_cpu_pct')} % of a core; tunnels opened {results['proxy_tunnels_opened']}"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
