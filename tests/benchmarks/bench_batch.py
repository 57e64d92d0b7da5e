"""Batch benchmark (issue 17): N inputs per vendor at the emulator's plan limits, in a real Airflow deployment.

Run it with ``./dev bench --batch`` (flags after it are passed on; ``--help`` lists them). Not in CI, not collected
by pytest. It prints a table and writes JSON (default ``bench-results/batch.json``).

What runs: the bundled emulator (its own process, clock ``--speed`` times faster) and a real Airflow 3 deployment
started with the test suites' helpers (tests/deployment.py: ``airflow_env``, ``Deployment``, ``running``):
api-server, scheduler (LocalExecutor, ``--parallelism`` worker slots, default 4 for 2 cores), dag-processor and
triggerer, on a throwaway PostgreSQL cluster (``--database sqlite`` for the file database instead: a burst of
hundreds of task starts holds sqlite's write lock for tens of seconds), in a temporary AIRFLOW_HOME. Every
process is stopped on the way out, on failure and on SIGTERM (``running`` turns SIGTERM into an interrupt and
sweeps the home's processes); component logs are kept under test-artifacts/bench-batch-logs/.

Scenario (issue 17): Gumloop Pro, ``--gumloop-limit`` (25) unfinished sessions per key, sessions of 30-90
emulated seconds; GloriaMundo at ``--gm-executions`` (10) executions and ``--gm-polls`` (60) status polls per
minute per key, workflows of 30-90 s; Puffle with ``--puffle-concurrency`` (10) unfinished chats per key (429 with
Retry-After above it), chats of 10-60 s (its documented range). Durations are drawn per run id by the emulator
(``seconds=A-B``) and scaled by its clock. DAGs: tests/benchmarks/dags/bench_batch_dags.py, one per vendor and
mode, run one after the other on a freshly reset emulator:

- ``mapped``: one deferrable mapped task per input, with start admission (``start_timeout``) when this tree's
  operators have it (otherwise today's handling of a refused start: the table shows what that costs);
- ``batch``: the vendor's batch operator, one task for all inputs (``batch operator not available in this tree``
  when the package has none);
- ``blocking``: the same batch operator with ``deferrable=False``: it polls on the worker, holding one slot for
  the whole batch, and never pays a return from the triggerer (what the deferred batch's ratio costs).

Figures per vendor and mode: makespan (the DAG run's start to end), the lower bound the limits allow and the
ratio makespan / bound; task starts on workers (each execute and each resume, recorded by the DAG's operators as
spans), worker-slot seconds (from each task process's start to the end of its execute or resume, i.e. time on a
worker, not deferred), the 429s the emulator counted (by reason), runs the emulator saw started, failed items and
task retries. Lower bounds, in real seconds (emulated / speed), from the durations the emulator drew for the runs
that were started:

- concurrency limit C (Gumloop, Puffle): ``max(sum(durations) / C, max(durations))`` (the work actually done:
  when items failed before starting a run, the bound covers only the runs that were started);
- rate limit E executions per W-second window (GloriaMundo): ``(ceil(N / E) - 1) * W + mean(durations)``.

Speed: default 3, so that no run is shorter than about 7 real seconds. At ``--speed 10`` (runs of 3-9 s) Airflow
3.3.2 failed 15 of 60 mapped tasks (20 per vendor) without a provider error; the scheduler log showed its
stale-executor-event race for the Gumloop ones (a trigger that fires within seconds of the deferral,
apache/airflow#67287, #72716; the e2e suite avoids it with 20 s runs). The table's notes count such tasks from the
scheduler log, so they are not mistaken for provider failures.

Cost, measured on a 2-core box shared with other work (load average near 10): the deployment comes up in 70-85 s;
``--items 20 --speed 3 --gumloop-limit 5 --modes mapped,batch`` (batch skipped: not in this tree) took 5.5 minutes
in all. A task start on a worker cost 3.5-7.5 slot seconds there, so a mapped case of N items needs about
2N x 5 / ``--parallelism`` seconds of worker slots whatever its bound. At 500 items (docs/batches.md has the
table) one case took 8-30 minutes at speed 3 (Gumloop batch 10, GloriaMundo batch 30, Gumloop mapped 23) and
21-25 at speed 1 (Gumloop); the whole default run (three vendors, three modes) would take two hours or more on 2
cores; ``--items 100`` keeps it near half an hour.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from tests.deployment import (  # noqa: E402
    Deployment,
    airflow_env,
    free_port,
    postgres_env,
    running,
    start_airflow_core,
    start_postgres,
    wait_dags,
    wait_healthy,
)

from airflow_provider_runwatch.emulator.server import EmulatorServer  # noqa: E402

DAG_FILE = Path(__file__).parent / "dags" / "bench_batch_dags.py"
DEFAULT_JSON = ROOT / "bench-results" / "batch.json"
VENDORS = ("gumloop", "gloriamundo", "puffle")
MODES = ("mapped", "batch", "blocking")
#: One key per vendor; the Gumloop one is on the Pro plan (the emulator reads the plan from the prefix).
KEYS = {
    "gumloop": "gl_pro_runwatch_bench_key",
    "gloriamundo": "gm_live_runwatch_bench_key",
    "puffle": "pk_live_runwatch_bench_key",
}
CONN_VARS = {
    "gumloop": "AIRFLOW_CONN_GUMLOOP_DEFAULT",
    "gloriamundo": "AIRFLOW_CONN_GLORIAMUNDO_DEFAULT",
    "puffle": "AIRFLOW_CONN_PUFFLE_DEFAULT",
}
SUCCEEDED = frozenset({"succeeded", "success", "completed", "done"})


@dataclass
class Case:
    vendor: str
    mode: str
    items: int
    status: str = "not run"
    makespan: float | None = None
    bound: float | None = None
    bound_formula: str = ""
    task_starts: int | None = None
    slot_seconds: float | None = None
    rejections: dict[str, int] = field(default_factory=dict)
    runs_started: int | None = None
    failed_items: int | None = None
    retries: int | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.makespan is None or not self.bound:
            return None
        return self.makespan / self.bound


def _load_dag_module() -> Any:
    """The DAG file as a module (for its ``batch_class`` / ``has_start_admission``: what this tree has)."""
    spec = importlib.util.spec_from_file_location("bench_batch_dags", DAG_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="bench_batch.py")
    parser.add_argument("--items", type=int, default=500, help="inputs per vendor (default %(default)s)")
    parser.add_argument("--speed", type=float, default=3.0, help="emulator clock speed (default %(default)s)")
    parser.add_argument("--vendors", default=",".join(VENDORS), help="comma-separated (default %(default)s)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated (default %(default)s)")
    parser.add_argument("--gumloop-limit", type=int, default=25, help="Pro plan limit (default %(default)s)")
    parser.add_argument("--gm-executions", type=int, default=10, help="per minute (default %(default)s)")
    parser.add_argument("--gm-polls", type=int, default=60, help="per minute (default %(default)s)")
    parser.add_argument("--puffle-concurrency", type=int, default=10, help="per key (default %(default)s)")
    parser.add_argument(
        "--database", choices=("postgres", "sqlite"), default="postgres", help="metadata database (default %(default)s)"
    )
    parser.add_argument("--parallelism", type=int, default=4, help="LocalExecutor slots (default %(default)s)")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="real seconds (default %(default)s)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file (default %(default)s)")
    args = parser.parse_args(argv)
    args.vendors = [v.strip() for v in args.vendors.split(",") if v.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for name, given, allowed in (("--vendors", args.vendors, VENDORS), ("--modes", args.modes, MODES)):
        unknown = [x for x in given if x not in allowed]
        if unknown or not given:
            parser.error(f"{name}: choose from {', '.join(allowed)} (got {', '.join(given) or 'nothing'})")
    if args.items < 1 or args.speed <= 0 or args.parallelism < 1:
        parser.error("--items and --parallelism must be >= 1 and --speed > 0")
    return args


def _configure(emulator: EmulatorServer, args: argparse.Namespace) -> None:
    """A clean emulator at the benchmark's speed and limits (reset also zeroes the 429 counters)."""
    emulator.reset()
    emulator.set_speed(args.speed)
    emulator.set_limits("gumloop", pro=args.gumloop_limit)
    emulator.set_limits("gloriamundo", window_seconds=60, executions=args.gm_executions, polls=args.gm_polls)
    emulator.set_limits("puffle", concurrency=args.puffle_concurrency)


def _bound(vendor: str, durations: list[float], items: int, args: argparse.Namespace) -> tuple[float, str]:
    """The lower bound (real seconds) the vendor's limit allows for these durations, and how it was computed."""
    if not durations:
        return 0.0, "no runs"
    mean = sum(durations) / len(durations)
    if vendor == "gloriamundo":
        windows = math.ceil(items / args.gm_executions) - 1
        emulated = windows * 60.0 + mean
        return emulated / args.speed, f"({math.ceil(items / args.gm_executions)}-1) x 60 s + mean {mean:.0f} s"
    limit = args.gumloop_limit if vendor == "gumloop" else args.puffle_concurrency
    emulated = max(sum(durations) / limit, max(durations))
    return emulated / args.speed, f"{len(durations)} x mean {mean:.0f} s / {limit}"


def _task_instances(dep: Deployment, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with dep.api() as client:
        while True:
            r = client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100, "offset": len(out)})
            r.raise_for_status()
            page = r.json()["task_instances"]
            out += page
            if len(page) < 100:
                return out


def _spans(spans_dir: Path, dag_id: str) -> list[dict[str, Any]]:
    found = []
    for path in spans_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("dag_id") == dag_id:
                    found.append(record)
    return found


def _failed_batch_items(dep: Deployment, dag_id: str, run_id: str) -> int | None:
    try:
        runs = dep.xcom(dag_id, run_id, "batch", key="runs")
    except httpx.HTTPError:
        return None
    if not isinstance(runs, list):
        return None
    return sum(1 for item in runs if not (isinstance(item, dict) and str(item.get("state", "")).lower() in SUCCEEDED))


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _run_case(dep: Deployment, case: Case, args: argparse.Namespace, spans_dir: Path) -> None:
    emulator = dep.emulator
    dag_id = f"bench_batch_{case.vendor}_{case.mode}"
    _configure(emulator, args)
    run_id = dep.trigger(dag_id)
    print(f"[bench] {dag_id}: triggered {run_id}", flush=True)
    # Generous: ten times the worst bound plus a task start per item per slot.
    timeout = 10 * max(case.items * 90 / args.speed / 5, 600 / args.speed) + 4 * case.items + 600
    try:
        run = dep.wait_for(dag_id, run_id, timeout=timeout)
    except AssertionError:
        case.status = f"timeout after {timeout:.0f} s"
        run = None
    if run is not None:
        case.status = str(run["state"])
        case.makespan = _seconds_between(run.get("start_date"), run.get("end_date"))
    records = emulator.runs(case.vendor)
    durations = [float(r["duration_seconds"]) for r in records if r.get("duration_seconds") is not None]
    case.runs_started = len(records)
    case.bound, case.bound_formula = _bound(case.vendor, durations, case.items, args)
    case.rejections = emulator.rejections().get(case.vendor, {})
    spans = _spans(spans_dir, dag_id)
    case.task_starts = len(spans)
    case.slot_seconds = round(sum(s["end"] - min(s["process_start"], s["start"]) for s in spans), 1)
    tis = _task_instances(dep, dag_id, run_id)
    case.retries = sum(max(0, int(ti.get("try_number") or 1) - 1) for ti in tis)
    if case.mode == "mapped":
        case.failed_items = sum(1 for ti in tis if ti["state"] != "success")
    else:
        case.failed_items = _failed_batch_items(dep, dag_id, run_id)
    # Airflow 3.3.2's scheduler fails a task whose trigger fired before it read the deferral's executor event
    # (apache/airflow#67287, #72716); counted so a failed item can be told apart from a provider failure.
    raced = sum(
        1
        for line in dep.logs("scheduler").splitlines()
        if dag_id in line and run_id in line and "but the task instance's state" in line
    )
    if raced:
        case.note = (case.note + "; " if case.note else "") + (
            f"{raced} task(s) failed by Airflow's stale-executor-event race (apache/airflow#67287)"
        )


def _table(cases: list[Case]) -> str:
    head = (
        "vendor", "mode", "items", "state", "makespan s", "bound s", "ratio", "task starts", "slot s",
        "429 conc", "429 rate", "429 other", "runs", "failed", "retries",
    )  # fmt: skip
    rows = [head]
    for c in cases:
        other = c.rejections.get("total", 0) - c.rejections.get("concurrency", 0) - c.rejections.get("rate", 0)
        rows.append(
            (
                c.vendor,
                c.mode,
                str(c.items),
                c.status,
                "-" if c.makespan is None else f"{c.makespan:.1f}",
                "-" if c.bound is None else f"{c.bound:.1f}",
                "-" if c.ratio is None else f"{c.ratio:.2f}",
                "-" if c.task_starts is None else str(c.task_starts),
                "-" if c.slot_seconds is None else f"{c.slot_seconds:.1f}",
                str(c.rejections.get("concurrency", 0)),
                str(c.rejections.get("rate", 0)),
                str(other),
                "-" if c.runs_started is None else str(c.runs_started),
                "-" if c.failed_items is None else str(c.failed_items),
                "-" if c.retries is None else str(c.retries),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    notes = [f"- {c.vendor}/{c.mode}: {c.note}" for c in cases if c.note]
    bounds = [f"- {c.vendor}/{c.mode} bound: {c.bound_formula} (emulated), / speed" for c in cases if c.bound_formula]
    return "\n".join([*lines, *bounds, *notes])


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # SIGTERM becomes an interrupt, so every ``finally`` below stops what it started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    dags = _load_dag_module()
    cases: list[Case] = []
    for vendor in args.vendors:
        for mode in args.modes:
            case = Case(vendor, mode, args.items)
            if mode in ("batch", "blocking") and dags.batch_class(vendor) is None:
                case.status = "skipped"
                case.note = f"batch operator not available in this tree ({dags.BATCH_CLASSES[vendor]})"
            elif mode == "mapped":
                single = {
                    "gumloop": dags.GumloopSessionOperator,
                    "gloriamundo": dags.GloriaMundoWorkflowOperator,
                    "puffle": dags.PuffleAgentChatOperator,
                }[vendor]
                if not dags.has_start_admission(single):
                    case.note = "start admission (start_timeout) not in this tree: today's refused-start handling"
            cases.append(case)
    runnable = [c for c in cases if c.status != "skipped"]
    if runnable:
        home = Path(tempfile.mkdtemp(prefix="runwatch-bench-batch-"))
        spans_dir = home / "spans"
        folder = home / "dags"
        folder.mkdir()
        shutil.copy(DAG_FILE, folder / DAG_FILE.name)
        emulator = EmulatorServer(mode="process", speed=args.speed)
        emulator.start()
        try:
            port = free_port()
            env = airflow_env(home, port, emulator, dags=folder)
            for vendor, var in CONN_VARS.items():
                env[var] = emulator.connection_env(api_key=KEYS[vendor])[var]
            # GloriaMundo's per-minute limits run on the emulator's clock: the client's budget window follows it,
            # as a user's would follow the vendor's real minute (without it the client paces 9 starts a *real*
            # minute, and the batch's makespan measures that pacing, not the limits).
            gloriamundo = json.loads(env[CONN_VARS["gloriamundo"]])
            gloriamundo["extra"] = json.dumps({"rate_window_seconds": 60.0 / args.speed})
            env[CONN_VARS["gloriamundo"]] = json.dumps(gloriamundo)
            env.update(
                {
                    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                    "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
                    "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, args.items)),
                    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
                    "BENCH_BATCH_ITEMS": str(args.items),
                    "BENCH_BATCH_POLL": str(args.poll_interval),
                    "BENCH_BATCH_SPANS": str(spans_dir),
                    "BENCH_BATCH_GUMLOOP_LIMIT": str(args.gumloop_limit),
                    "BENCH_BATCH_PUFFLE_CONCURRENCY": str(args.puffle_concurrency),
                }
            )
            dep = Deployment(home=home, env=env, api_url=f"http://127.0.0.1:{port}", emulator=emulator)
        except BaseException:
            emulator.stop()
            shutil.rmtree(home, ignore_errors=True)
            raise
        began = time.monotonic()
        with running(dep, "bench-batch-logs"):
            if args.database == "postgres":
                env.update(postgres_env(start_postgres(dep)))
            else:
                env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home}/airflow.db?timeout=30"
            start_airflow_core(dep, port)
            dep.start("triggerer", "triggerer", "--capacity", str(max(1000, 2 * args.items)))
            wait_healthy(dep, timeout=240)
            wait_dags(dep, [f"bench_batch_{c.vendor}_{c.mode}" for c in runnable], timeout=240)
            print(f"[bench] deployment up in {time.monotonic() - began:.0f} s", flush=True)
            for case in runnable:
                _run_case(dep, case, args, spans_dir)
                print(_table([case]).splitlines()[1], flush=True)
    print()
    print(_table(cases))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = [{**asdict(c), "ratio": c.ratio} for c in cases]
    results = {"args": {k: v for k, v in vars(args).items() if k != "json"}, "cases": rows}
    args.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {args.json}")
    return 0 if all(c.status in ("success", "skipped") for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
