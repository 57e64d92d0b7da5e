"""The README demo: every DAG in example_dags/ through `airflow dags test`, against the bundled emulator.

It starts the emulator, makes a throwaway AIRFLOW_HOME on sqlite, points the three default connections
at the emulator with ``AIRFLOW_CONN_*`` variables, runs each example DAG with the real CLI (deferred
tasks run their triggers in line), then prints each agent's answer from the XComs Airflow stored.
Exit status is non-zero when any DAG run did not succeed.

The event-driven example is scheduled on an asset watcher, which only a triggerer runs (``dags test``
cannot): for it the demo starts sessions in the emulator from outside Airflow, runs the watcher's trigger
in this process until they have fired, and hands the events to ``dags test`` as the run's conf.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_runwatch.emulator.server import EmulatorServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "example_dags"
EVENTS_DAG = "example_gumloop_session_events"
#: Example DAGs run at once (each its own `airflow dags test` process).
PARALLEL_DAGS = 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dag_ids", nargs="*", help="run only these DAGs (default: every example DAG)")
    parser.add_argument("--keep-home", action="store_true", help="keep the throwaway AIRFLOW_HOME")
    parser.add_argument("--verbose", action="store_true", help="show the output of `airflow dags test`")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="runwatch-demo-")
    os.environ.update(
        {
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # Several `dags test` processes share this database (see PARALLEL_DAGS).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db?timeout=30",
        }
    )
    from airflow_provider_runwatch.emulator.server import EmulatorServer

    started = time.monotonic()
    # Runs in the emulator finish after one poll unless a DAG's message asks for another scenario.
    with EmulatorServer(mode="process", scenario="polls=1") as emulator:
        os.environ.update(emulator.connection_env(api_key="demo-key-not-a-secret"))
        print(f"emulator: {emulator.url}   AIRFLOW_HOME: {home}", flush=True)
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
        # Every `dags test` writes every parsed DAG (and its assets) to the database: the first few at once all
        # INSERTed the same rows and failed on sqlite's UNIQUE constraints (2 of 6 examples "did not run"). Written
        # once here, they only update them.
        subprocess.run([sys.executable, "-m", "airflow", "dags", "reserialize"], check=True, capture_output=True)

        dag_ids = args.dag_ids or discover_dag_ids()
        # The event-driven example's sessions are watched (in this process) before any DAG starts.
        confs = {dag_id: {"sessions": watch_sessions(emulator)} for dag_id in dag_ids if dag_id == EVENTS_DAG}

        def dags_test(dag_id: str) -> tuple[subprocess.CompletedProcess[str], float]:
            t0 = time.monotonic()
            extra = ["--conf", json.dumps(confs[dag_id])] if dag_id in confs else []
            proc = subprocess.run(
                [sys.executable, "-m", "airflow", "dags", "test", *extra, dag_id],
                capture_output=True,
                text=True,
                check=False,
            )
            return proc, time.monotonic() - t0

        # A few at once: each `dags test` spends most of its ~30 s starting Airflow up and waiting on polls, so
        # one after another the six examples took ~230 s on 2 cores; sqlite's 30 s busy timeout covers the overlap.
        with ThreadPoolExecutor(max_workers=PARALLEL_DAGS) as pool:
            done = list(pool.map(dags_test, dag_ids))
        failures = 0
        for dag_id, (proc, seconds) in zip(dag_ids, done, strict=True):
            if args.verbose:
                print(proc.stdout + proc.stderr)
            if not report(dag_id, seconds):
                failures += 1
                print(textwrap.indent((proc.stdout + proc.stderr)[-4000:], "    | "))
        print(f"\n{len(dag_ids) - failures}/{len(dag_ids)} example DAGs succeeded in {time.monotonic() - started:.0f}s")
    if not args.keep_home:
        subprocess.run(["rm", "-rf", home], check=False)
    return 1 if failures else 0


def watch_sessions(emulator: EmulatorServer, count: int = 3) -> list[dict[str, object]]:
    """Start sessions in the emulator as Slack would, and run the example's watcher trigger until they fire."""
    import importlib.util

    from airflow_provider_runwatch.triggers.gumloop import GumloopSessionEventTrigger

    spec = importlib.util.spec_from_file_location(EVENTS_DAG, EXAMPLES / f"{EVENTS_DAG}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    [watcher] = module.TRIAGE_SESSIONS.watchers
    _, kwargs = watcher.trigger.serialize()
    # The example polls every 60 s; here every second, to keep the demo short.
    trigger = GumloopSessionEventTrigger(**{**kwargs, "poll_interval": 1})
    print(
        f"\n{EVENTS_DAG}: `airflow dags test` cannot run an asset watcher, so the demo runs its trigger here:\n"
        f"  {count} sessions of {kwargs['agent_id']} start from outside Airflow (type slack, done 2 s later);"
    )

    async def watch() -> list[dict[str, object]]:
        fired: list[dict[str, object]] = []
        events = trigger.run()
        first = asyncio.ensure_future(anext(events))
        listing = f"/api/v1/agents/{kwargs['agent_id']}/sessions"
        for _ in range(100):  # the baseline poll first: sessions that had already finished never fire
            if emulator.requests(path_prefix=listing):
                break
            await asyncio.sleep(0.1)
        emulator.schedule_sessions(kwargs["agent_id"], count, every=0.5, scenario="seconds=2", type="slack")
        async with asyncio.timeout(30):
            fired.append((await first).payload)
            while len(fired) < count:
                fired.append((await anext(events)).payload)
        await events.aclose()
        return fired

    fired = asyncio.run(watch())
    for payload in fired:
        print(f"  event: session {payload['session_id']} {payload['state']} ({payload['type']})")
    print("  -> the DAG run gets these events as its conf (a triggerer would start it from the asset events)")
    return fired


def discover_dag_ids() -> list[str]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(EXAMPLES))
    if bag.import_errors:
        for path, error in bag.import_errors.items():
            print(f"import error in {path}:\n{error}", file=sys.stderr)
        raise SystemExit(1)
    return sorted(bag.dag_ids)


def report(dag_id: str, seconds: float) -> bool:
    """Print the run's outcome and every runwatch answer; True when the run succeeded."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).first()
        if run is None:
            print(f"\n{dag_id}: did not run")
            return False
        print(f"\n{dag_id}: {run.state} in {seconds:.0f}s")
        rows = (
            session.query(XComModel)
            .filter(XComModel.dag_id == dag_id, XComModel.run_id == run.run_id)
            .order_by(XComModel.task_id, XComModel.map_index)
            .all()
        )
        values = {(r.task_id, r.map_index, r.key): XComModel.deserialize_value(r) for r in rows}
        for (task_id, map_index, key), value in values.items():
            if key != "return_value":
                continue
            label = task_id if map_index < 0 else f"{task_id}[{map_index}]"
            run_id = values.get((task_id, map_index, "run_id"))
            prefix = f"  {label} ({run_id})" if run_id else f"  {label}"
            print(f"{prefix}: {shorten(value)}")
        failed = [
            ti.task_id
            for ti in session.query(TaskInstance).filter(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id
            )
            if str(ti.state) not in ("success", "skipped")
        ]
        if failed:
            print(f"  tasks not successful: {', '.join(sorted(set(failed)))}")
        return str(run.state) == "success" and not failed


def shorten(value: object, limit: int = 240) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
