"""Benchmark: GloriaMundo status polls per minute per key under load, at the real limits.

Starts the bundled emulator (process mode) enforcing GloriaMundo's documented 60 status polls per key in
any sliding 60-second window, starts ``--runs`` workflow runs on one key that never finish, and drives one
``GloriaMundoRunTrigger`` per run on one asyncio loop (as a triggerer does) with the operator's default
5 s poll interval and the connection's default budget (50 polls/min), for ``--seconds``. Then it reads
the emulator's request log and prints: polls, 429s, the busiest 60-second window, the steady-state rate,
per-run fairness and event-loop lag. ``--naive`` repeats the run with the budget disabled and a 2 s
interval, for comparison.

    .venvs/airflow-3.3.2/bin/python tests/benchmarks/gloriamundo_budget.py            # about 70 s
    .venvs/airflow-3.3.2/bin/python tests/benchmarks/gloriamundo_budget.py --naive    # about 140 s

Not a test (pytest does not collect it): it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="runwatch-bench-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# The triggers' own progress and 429 lines would drown the figures.
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "ERROR")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))


def max_in_window(times: list[float], window: float) -> int:
    ordered, best, start = sorted(times), 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def drive(trigger_class: type, conn_id: str, run_ids: list[str], interval: float, seconds: float) -> list[float]:
    """Run one trigger per run on this loop for ``seconds``; return the loop's lag samples."""
    lags: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.05)
            lags.append(time.perf_counter() - before - 0.05)

    async def watch(run_id: str) -> None:
        trigger = trigger_class(conn_id=conn_id, run_id=run_id, poll_interval=interval, max_consecutive_failures=10_000)
        events = trigger.run()
        try:
            await anext(events)
        finally:
            await events.aclose()

    probe_task = asyncio.ensure_future(probe())
    tasks = [asyncio.ensure_future(watch(r)) for r in run_ids]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stop.set()
    await probe_task
    return lags


def measure(emulator: Any, label: str, run_ids: list[str], span: tuple[float, float], lags: list[float]) -> None:
    wanted = set(run_ids)
    polls = [e for e in emulator.requests(vendor="gloriamundo", method="GET") if e["run_id"] in wanted]
    accepted = [p for p in polls if p["status"] == 200]
    refused = [p for p in polls if p["status"] == 429]
    times = [p["ts"] for p in polls]
    per_run = [sum(1 for p in accepted if p["run_id"] == r) for r in run_ids]
    busiest = max_in_window(times, 60.0) if times else 0
    # Steady state: skip the first 10 s (the triggers' random first delay), up to the end of the run.
    began, ended = span
    seconds = ended - began
    steady_from = began + 10.0
    steady = [p for p in polls if p["ts"] >= steady_from]
    minutes = max(1e-9, (ended - steady_from) / 60.0)
    rate = len(steady) / minutes
    accepted_rate = sum(1 for p in steady if p["status"] == 200) / minutes
    lags.sort()
    p99 = lags[int(len(lags) * 0.99) - 1] * 1000 if lags else 0.0
    print(f"\n{label}")
    print(f"  runs on one key            {len(run_ids)}")
    print(f"  duration                   {seconds:.0f} s")
    print(f"  status polls sent          {len(polls)}  (accepted {len(accepted)}, 429: {len(refused)})")
    print(f"  busiest 60 s window        {busiest} polls  (GloriaMundo allows 60)")
    print(f"  steady-state rate          {rate:.1f} polls/min per key sent, {accepted_rate:.1f} accepted")
    spread = f"min {min(per_run)} / median {statistics.median(per_run):g} / max {max(per_run)}"
    print(f"  accepted polls per run     {spread}")
    print(f"  event-loop lag p99         {p99:.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="concurrent runs on one key (default 20)")
    parser.add_argument("--seconds", type=float, default=65.0, help="how long to poll (default 65)")
    parser.add_argument("--interval", type=float, default=5.0, help="poll_interval per run (default 5)")
    parser.add_argument("--naive", action="store_true", help="also run without the budget, polling every 2 s")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    import httpx

    from airflow_provider_runwatch.emulator.server import EmulatorServer
    from airflow_provider_runwatch.hooks.gloriamundo import GloriaMundoHook
    from airflow_provider_runwatch.triggers.gloriamundo import GloriaMundoRunTrigger

    class NaiveHook(GloriaMundoHook):
        def client_options(self, settings: Any) -> Any:
            options = super().client_options(settings)
            options.limiter = None
            return options

    class NaiveTrigger(GloriaMundoRunTrigger):
        hook_class = NaiveHook

    with EmulatorServer(mode="process") as emulator:
        # Real poll limit (60 per 60 s); executions unlimited so the runs can be started at once.
        httpx.put(
            f"{emulator.url}/_emulator/gloriamundo/limits",
            json={"window_seconds": 60, "executions": None, "polls": 60},
            trust_env=False,
        ).raise_for_status()
        print(f"emulator {emulator.url}: 60 status polls per key per sliding 60 s enforced")
        cases: list[tuple[str, type, float]] = [
            (f"shared budget (default 50/min), poll_interval {args.interval:g} s", GloriaMundoRunTrigger, args.interval)
        ]
        if args.naive:
            cases.append(("no shared budget, poll_interval 2 s (naive)", NaiveTrigger, 2.0))
        for label, trigger_class, interval in cases:
            key = f"gm_live_bench_{uuid.uuid4().hex}"
            os.environ["AIRFLOW_CONN_GM_BENCH"] = json.dumps(
                {
                    "conn_type": "gloriamundo",
                    "host": emulator.gloriamundo_url,
                    "password": key,
                    "extra": {"executions_per_minute": 60},
                }
            )
            hook = GloriaMundoHook("gm_bench")
            directive = "[emulator: polls=never]"
            run_ids = [hook.execute_workflow("wf_bench", {"n": f"{i} {directive}"}).run_id for i in range(args.runs)]
            began = time.time()
            lags = asyncio.run(drive(trigger_class, "gm_bench", run_ids, interval, args.seconds))
            measure(emulator, label, run_ids, (began, time.time()), lags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
