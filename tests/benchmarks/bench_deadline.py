"""Deadline benchmark (issue 14): how far past its deadline a blocking wait ends when the vendor trickles the
head of every answer (status line and headers) one byte at a time, and what the blocking poll costs, for this
source and, in the same run, a baseline source (another checkout's ``src``).

Run it with ``python tests/benchmarks/bench_deadline.py --baseline-src /tmp/main-src`` in the newest venv, with
``PYTHONPATH`` at this checkout's ``src`` (the emulator always runs from this checkout: it has the
``trickle_head`` scenario). Prints per source: ``seconds_past_deadline`` of a ``deferrable=False`` Puffle wait
with ``timeout`` (default 8 s) against ``trickle_head`` (default 0.5 s), and the seconds for N (default 2000)
blocking polls of a running Puffle chat, measured ``--rounds`` times (3) per source, alternating; then the
ratio of poll time this source / baseline (best of each). Each measurement runs in a child process of its
own (the source is chosen by its ``PYTHONPATH``); the emulator is a child on a free loopback port. Every
process it starts is stopped on exit, on failure and on SIGTERM.

Not collected by pytest (the file name does not match ``test_*.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SECRET = "bench_deadline_key_0123456789"


def child(args: argparse.Namespace) -> None:
    """One measurement, against the emulator at ``--emulator``, with whatever source ``PYTHONPATH`` names."""
    os.environ["AIRFLOW_CONN_PUFFLE_DEFAULT"] = json.dumps(
        {"conn_type": "puffle", "host": args.emulator, "password": SECRET}
    )
    import logging

    logging.disable(logging.WARNING)  # the wait's info and warning lines are not what is measured
    import airflow_provider_runwatch
    from airflow_provider_runwatch.core.retry import NO_RETRY
    from airflow_provider_runwatch.hooks.puffle import PuffleHook
    from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator

    out: dict[str, Any] = {"source": str(Path(airflow_provider_runwatch.__file__).parents[1])}
    if args.child == "wait":
        run_id = PuffleHook().start_chat(f"bench [emulator: polls=never trickle_head={args.trickle:g}]").runId
        op = PuffleAgentChatOperator(task_id="bench", message="-", deferrable=False, poll_interval=1)
        began = time.time()
        deadline = began + args.timeout
        event = op.wait_blocking(run_id, deadline)
        out |= {"seconds_past_deadline": round(time.time() - deadline, 2), "status": event.status}
    else:
        hook = PuffleHook()
        run_id = hook.start_chat("bench [emulator: polls=never]").runId
        adapter = PuffleAgentChatOperator(task_id="bench", message="-").adapter
        call = adapter.status_call(hook.settings, run_id)
        for _ in range(50):  # warm up: connection, imports, caches
            hook.call(call, retry=NO_RETRY, within=60.0)
        started = time.perf_counter()
        for _ in range(args.polls):
            hook.call(call, retry=NO_RETRY, within=60.0)
        out |= {"polls": args.polls, "seconds": round(time.perf_counter() - started, 3)}
    print(json.dumps(out))


def measure(src: Path, emulator: str, what: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
    command = [sys.executable, __file__, "--child", what, "--emulator", emulator]
    command += ["--polls", str(args.polls), "--timeout", str(args.timeout), "--trickle", str(args.trickle)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measurement failed ({src}, {what}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src directory to compare with")
    parser.add_argument("--polls", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=8.0)
    parser.add_argument("--trickle", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3, help="poll measurements per source, alternating")
    parser.add_argument("--child", choices=("wait", "polls"), help=argparse.SUPPRESS)
    parser.add_argument("--emulator", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from airflow_provider_runwatch.emulator.server import EmulatorServer

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the emulator's cleanup on SIGTERM too
    sources = {"this": ROOT / "src"}
    if args.baseline_src is not None:
        sources = {"baseline": args.baseline_src.resolve(), **sources}
    with EmulatorServer(mode="process") as emulator:
        url = emulator.puffle_url
        for name, src in sources.items():
            waited = measure(src, url, "wait", args)
            print(f"{name}: blocking wait, timeout={args.timeout:g}, head trickled 1 byte/{args.trickle:g}s: {waited}")
        seconds: dict[str, list[float]] = {name: [] for name in sources}
        for _ in range(args.rounds):
            for name, src in sources.items():
                polled = measure(src, url, "polls", args)
                seconds[name].append(polled["seconds"])
                print(f"{name}: {args.polls} blocking polls in {polled['seconds']:.3f}s")
        if "baseline" in seconds:
            ratio = min(seconds["this"]) / min(seconds["baseline"])
            print(f"poll time this / baseline (best of {args.rounds} each): {ratio:.3f}")


if __name__ == "__main__":
    main()
