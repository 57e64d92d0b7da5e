"""Triggerer capacity benchmark (issue 16, item 4): N deferred runwatch tasks on one real triggerer process.

Run it with ``./dev bench --triggerer`` (flags after it are passed on; ``--help`` lists them). Not in CI, not
collected by pytest. It prints a table and writes JSON (default ``bench-results/triggerer.json``).

What runs: a real Airflow 3.3 deployment from the test suites' helpers (tests/deployment.py) on a throwaway
PostgreSQL cluster with the LocalExecutor, in a temporary AIRFLOW_HOME, and the bundled emulator in a thread of
this process (so the harness can create runs with known ids and read poll counters without HTTP). Every process is
stopped on the way out, on failure and on SIGTERM (``running``); logs are kept under
test-artifacts/bench-triggerer-logs/.

For each N (``--sizes``), two phases, each on a freshly started triggerer (``--capacity`` above N) so that
neither inherits the other's memory; DAGs in tests/benchmarks/dags/bench_triggerer_dags.py:

- baseline: N tasks deferred on Airflow's ``DateTimeTrigger`` (target a day ahead);
- runwatch: N tasks deferred on the provider's ``PuffleChatRunTrigger``, each polling its own never-ending
  emulator run every ``--poll-interval`` (5) seconds.

Tasks start on the triggerer straight from the scheduler (``start_from_trigger``), so N tasks cost no worker
starts. Once all N triggers run (ours: every run polled once; baseline: every trigger's log file written) and
``--warmup`` seconds later, a ``--window``-second window measures:

- polls achieved: the poll interval / the mean interval between consecutive polls of a run in the window (from
  the emulator's request log), i.e. the share of 1 poll per interval per run that was sustained; the JSON also
  has the raw count of polls in the window against N x window / interval (which depends on where the window
  cuts the runs' poll rounds, so it can exceed 100 %);
- the triggerer's CPU (user + system of the ``airflow triggerer`` process and every process below it: the trigger
  runner subprocess, the log server) in % of one core, and the ratio to the baseline's;
- RSS of that process tree (the sum, sampled every 2 s; the peak), and the ratio to the baseline's.

Then event-to-resume latency on ``--early`` tasks, with the N triggers still loaded: ours, the harness completes
``--early`` runs and the latency runs from the poll that saw the run done (the event) to ``execute_complete``
starting on a worker; baseline, a second DAG run of ``--early`` DateTimeTriggers set to moments spread over one
poll interval (the event: its moment; the trigger wakes within 1 s after it, so the baseline figure is
pessimistic by up to 1 s). Both
include the worker's task start (LocalExecutor, ``--parallelism`` slots). The phase ends by marking the DAG run
failed and waiting for the trigger table to drain.

Figures on a shared 2-core machine are pessimistic for both sides alike; the ratios are what counts, and the
load average is printed at the start and end of each window. ``--profile`` adds, after each measured window, a
``--profile-window`` of cProfile in every triggerer process (a sitecustomize on the triggerer's own PYTHONPATH)
and prints where their time goes, by function (own time and cumulative), both sides alike.

Cost, on a 2-core machine shared with other work (load average 4-10): the deployment comes up in 25-65 s; one
phase takes 3-4 minutes at N = 1000 and 5-6 at N = 2000 (the triggerer needs 1-3 minutes to start 2000
triggers); ``--sizes 1000,2000`` took 19 minutes in all. ``--sizes 5000`` on an otherwise idle machine took 15
minutes: phases of 364 s (baseline) and 509 s (ours: 393 s until all 5000 triggers had polled once).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pstats
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import psycopg2  # noqa: E402
from tests.deployment import (  # noqa: E402
    SECRET_KEY,
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

from airflow_provider_runwatch.emulator.scenario import parse_spec  # noqa: E402
from airflow_provider_runwatch.emulator.server import EmulatorServer  # noqa: E402
from airflow_provider_runwatch.emulator.state import EmulatorState, fingerprint  # noqa: E402

DAG_FILE = Path(__file__).parent / "dags" / "bench_triggerer_dags.py"
DEFAULT_JSON = ROOT / "bench-results" / "triggerer.json"
DAGS = {"baseline": "bench_triggerer_baseline", "runwatch": "bench_triggerer_runwatch"}
SIDES = ("baseline", "runwatch")


@dataclass
class Phase:
    side: str
    n: int
    status: str = "not run"
    ramp_seconds: float | None = None
    window_seconds: float | None = None
    polls: int | None = None
    polls_expected: float | None = None
    mean_interval: float | None = None
    poll_interval: float = 5.0
    cpu_percent: float | None = None
    cpu_by_process: dict[str, float] = field(default_factory=dict)
    rss_mb: float | None = None
    emulator_cpu_percent: float | None = None
    latencies: list[float] = field(default_factory=list)
    load_start: str = ""
    load_end: str = ""
    note: str = ""

    @property
    def polls_achieved(self) -> float | None:
        """The poll rate achieved, as a share of 1 per ``poll_interval`` per run (from the mean interval)."""
        if not self.mean_interval:
            return None
        return self.poll_interval / self.mean_interval


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="bench_triggerer.py")
    parser.add_argument("--sizes", default="1000,2000,5000", help="comma-separated N (default %(default)s)")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated (default %(default)s)")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds (default %(default)s)")
    parser.add_argument("--window", type=float, default=60.0, help="measuring window, s (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=15.0, help="s after all triggers run (default %(default)s)")
    parser.add_argument("--early", type=int, default=10, help="tasks for the latency figure (default %(default)s)")
    parser.add_argument("--parallelism", type=int, default=4, help="LocalExecutor slots (default %(default)s)")
    parser.add_argument("--profile", action="store_true", help="cProfile the triggerer after each window")
    parser.add_argument("--profile-window", type=float, default=30.0, help="s (default %(default)s)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes: comma-separated whole numbers, got {args.sizes!r}")
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes: at least one N >= 1")
    if not args.sides or set(args.sides) - set(SIDES):
        parser.error(f"--sides: choose from {', '.join(SIDES)} (got {', '.join(args.sides) or 'nothing'})")
    if not 0 < args.early <= min(args.sizes):
        parser.error("--early must be between 1 and the smallest N")
    if args.window <= 0 or args.poll_interval <= 0:
        parser.error("--window and --poll-interval must be > 0")
    return args


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class _Db:
    """Reads the trigger table (the API has no endpoint for it)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def triggers(self) -> tuple[int, int]:
        """(trigger rows, rows assigned to a triggerer)."""
        with (
            contextlib.closing(
                psycopg2.connect(host="127.0.0.1", port=self.port, user="airflow", dbname="airflow", connect_timeout=10)
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT count(*), count(triggerer_id) FROM trigger")
            total, assigned = cur.fetchone()
            return int(total), int(assigned)


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _cpu_snapshot(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every process in the tree, by pid, with a short name."""
    out: dict[int, tuple[str, float]] = {}
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            # The trigger runner is a fork of the `airflow triggerer` process (same command line).
            title = "triggerer" if proc.pid == pid else (proc.name() + " " + " ".join(proc.cmdline()[1:4])).strip()
            out[proc.pid] = (title, times.user + times.system)
    return out


def _rss_mb(pid: int) -> float:
    total = 0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


def _make_runs(state: EmulatorState, n: int) -> None:
    """N Puffle runs that never end (``polls=never``), named as the runwatch DAG's template expects."""
    scenario = parse_spec("polls=never")
    owner = fingerprint(SECRET_KEY)
    for i in range(n):
        run_id = f"run_bench{i:06d}"
        data = {"conversationId": f"conv_{i}", "prompt": "bench", "history_length": 0, "sync": False}
        state.new_run("puffle", owner, scenario, run_id=run_id, data=data)


def _polls(state: EmulatorState, n: int) -> int:
    return sum(state.runs[f"run_bench{i:06d}"].polls_answered for i in range(n))


def _mean_interval(state: EmulatorState, n: int, since: float, until: float) -> float:
    """Mean seconds between consecutive status polls of one run, over the bench runs, from the request log
    (wall clock): unlike a count of polls in the window, it does not depend on where the window cuts the runs'
    poll rounds. A run polled less than twice counts as one interval of the whole window."""
    times: dict[str, list[float]] = {}
    for entry in list(state.log):  # a C-level copy: safe while the emulator thread appends
        if entry.method == "GET" and since <= entry.ts <= until and (entry.run_id or "").startswith("run_bench"):
            times.setdefault(entry.run_id or "", []).append(entry.ts)
    span = intervals = 0.0
    for i in range(n):
        polls = times.get(f"run_bench{i:06d}", [])
        if len(polls) < 2:
            span, intervals = span + (until - since), intervals + 1
        else:
            span, intervals = span + polls[-1] - polls[0], intervals + len(polls) - 1
    return span / intervals


def _spans(spans: Path, run_id: str) -> dict[int, float]:
    found: dict[int, float] = {}
    for path in spans.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError):
                record = json.loads(line)
                if record["run_id"] == run_id:
                    found[int(record["map_index"])] = float(record["resumed"])
    return found


def _trigger_logs(home: Path, dag_id: str) -> int:
    return sum(1 for _ in (home / "logs" / f"dag_id={dag_id}").glob("run_id=*/task_id=deferred/*/*.trigger.*"))


def _wait(what: str, check: Any, timeout: float, dep: Deployment, every: float = 2.0) -> float:
    """Wait until ``check()`` is true; seconds waited."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"{what}: not after {timeout:.0f} s\n{dep.tail(1500)}")
        if dep.procs["triggerer"].poll() is not None:
            raise RuntimeError(f"triggerer exited during {what}:\n{dep.logs('triggerer')[-3000:]}")
        time.sleep(every)
    return time.monotonic() - began


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _run_phase(dep: Deployment, db: _Db, state: EmulatorState, phase: Phase, args: argparse.Namespace) -> None:
    n, dag_id = phase.n, DAGS[phase.side]
    spans = dep.home / "spans"
    capacity = str(max(args.sizes) + args.early + 100)
    dep.start("triggerer", "triggerer", "--capacity", capacity, env=_profile_env(dep, args, phase))
    wait_healthy(dep, timeout=240)
    if phase.side == "runwatch":
        state.runs.clear()
        _make_runs(state, n)
    far = _iso(datetime.now(timezone.utc) + timedelta(days=1))
    conf = {"n": n, "early": 0, "soon": [], "far": far}
    began = time.monotonic()
    run_id = dep.trigger(dag_id, conf)
    print(f"[bench] {phase.side} N={n}: triggered {run_id}", flush=True)
    ramp_timeout = 300 + 0.5 * n
    _wait("triggers assigned", lambda: db.triggers()[1] >= n, ramp_timeout, dep)
    if phase.side == "runwatch":
        _wait("every run polled", lambda: all(state.runs[f"run_bench{i:06d}"].polls_answered for i in range(n)),
              ramp_timeout, dep)  # fmt: skip
    else:
        _wait("every trigger started", lambda: _trigger_logs(dep.home, dag_id) >= n, ramp_timeout, dep)
    phase.ramp_seconds = round(time.monotonic() - began, 1)
    print(f"[bench] {phase.side} N={n}: all triggers running after {phase.ramp_seconds:.0f} s", flush=True)
    time.sleep(args.warmup)

    # -- the window ---------------------------------------------------------------------------------------
    pid = dep.procs["triggerer"].pid
    me = psutil.Process()
    phase.load_start = _loadavg()
    polls0 = _polls(state, n) if phase.side == "runwatch" else 0
    wall0 = time.time()
    me0 = me.cpu_times()
    cpu0 = _cpu_snapshot(pid)
    t0 = time.monotonic()
    rss: list[float] = []
    while time.monotonic() - t0 < args.window:
        rss.append(_rss_mb(pid))
        time.sleep(min(2.0, max(0.0, args.window - (time.monotonic() - t0))))
    cpu1 = _cpu_snapshot(pid)
    t1 = time.monotonic()
    me1 = me.cpu_times()
    polls1 = _polls(state, n) if phase.side == "runwatch" else 0
    phase.load_end = _loadavg()
    elapsed = t1 - t0
    phase.window_seconds = round(elapsed, 1)
    used = {p: (name, c - cpu0.get(p, (name, 0.0))[1]) for p, (name, c) in cpu1.items()}
    phase.cpu_percent = round(100 * sum(c for _, c in used.values()) / elapsed, 1)
    phase.cpu_by_process = {f"{p} {name}": round(100 * c / elapsed, 1) for p, (name, c) in used.items()}
    phase.rss_mb = round(max(rss), 1)
    phase.emulator_cpu_percent = round(100 * ((me1.user + me1.system) - (me0.user + me0.system)) / elapsed, 1)
    if phase.side == "runwatch":
        phase.polls = polls1 - polls0
        phase.polls_expected = round(n * elapsed / args.poll_interval)
        phase.poll_interval = args.poll_interval
        phase.mean_interval = round(_mean_interval(state, n, wall0, time.time()), 3)
    print(f"[bench] {phase.side} N={n}: window done: {_row(phase, None)}", flush=True)
    if args.profile:
        _profile(dep, args, phase)

    # -- event-to-resume latency --------------------------------------------------------------------------
    k = args.early
    if phase.side == "runwatch":
        forced = time.time()
        for i in range(k):
            state.force_outcome(state.runs[f"run_bench{i:06d}"], "succeeded")
        _wait("early resumes", lambda: len(_spans(spans, run_id)) >= k, 300 + 10 * k, dep)
        entries = list(state.log)  # a C-level copy: safe while the emulator thread appends
        events: dict[int, float] = {}
        for entry in entries:
            if entry.method == "GET" and entry.ts >= forced and entry.run_id and entry.run_id.startswith("run_bench"):
                index = int(entry.run_id.removeprefix("run_bench"))
                if index < k:
                    events.setdefault(index, entry.ts)
        resumed = _spans(spans, run_id)
        phase.latencies = sorted(round(resumed[i] - events[i], 2) for i in range(k) if i in events and i in resumed)
        latency_run = None
    else:
        # Spread over one poll interval, as ours are (each run's next poll comes at its own time).
        first = datetime.now(timezone.utc) + timedelta(seconds=60)
        moments = [first + timedelta(seconds=args.poll_interval * i / k) for i in range(k)]
        conf = {"n": k, "early": k, "soon": [_iso(m) for m in moments], "far": far}
        latency_run = dep.trigger(dag_id, conf)
        _wait("latency triggers assigned", lambda: db.triggers()[1] >= n + k, 55, dep, every=1)
        _wait("early resumes", lambda: len(_spans(spans, latency_run)) >= k, 360 + 10 * k, dep)
        resumed = _spans(spans, latency_run)
        phase.latencies = sorted(round(resumed[i] - moments[i].timestamp(), 2) for i in resumed if i < k)
    print(f"[bench] {phase.side} N={n}: latency {phase.latencies}", flush=True)

    # -- drain ----------------------------------------------------------------------------------------------
    with dep.api() as client:
        for rid in (run_id, latency_run):
            if rid:
                client.patch(f"/dags/{dag_id}/dagRuns/{rid}", json={"state": "failed"}).raise_for_status()
    _wait("trigger table drained", lambda: db.triggers()[0] == 0, 300 + 0.2 * n, dep)
    dep.stop("triggerer")
    phase.status = "done"


# -- profile ------------------------------------------------------------------------------------------------

#: Installed as sitecustomize.py for a profiled triggerer: in the ``airflow triggerer`` process and, after each
#: fork, in its children (the trigger runner is a forked child), cProfile runs on the main thread while the
#: harness's marker file exists (a watcher thread signals the process; the handler runs on the main thread, where
#: ``sys.setprofile`` must be called on Python 3.11) and its stats go to ``$BENCH_TRIGGERER_PROFILE.<pid>``.
#: Not an in-process stack sampler: a sampling thread only gets the GIL where the main thread releases it (socket
#: writes, selects, database calls), so its samples show those, not where the CPU goes.
_PROFILER = """
import cProfile, os, signal, threading, time

_SIGNAL = signal.SIGRTMIN + 7

def _start():
    out = os.environ["BENCH_TRIGGERER_PROFILE"]
    marker = out + ".window"
    profile = cProfile.Profile()

    def toggle(signum, frame):
        if os.path.exists(marker):
            profile.enable()
        else:
            profile.disable()
            profile.dump_stats(f"{out}.{os.getpid()}")

    signal.signal(_SIGNAL, toggle)

    def watch():
        on = False
        while True:
            time.sleep(0.2)
            if os.path.exists(marker) != on:
                on = not on
                os.kill(os.getpid(), _SIGNAL)

    threading.Thread(target=watch, daemon=True, name="bench-profile-watch").start()

if os.environ.get("BENCH_TRIGGERER_PROFILE"):
    _start()
    os.register_at_fork(after_in_child=_start)
"""


def _profile_env(dep: Deployment, args: argparse.Namespace, phase: Phase) -> dict[str, str]:
    if not args.profile:
        return {}
    site = dep.home / "profile-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_PROFILER)
    path = os.pathsep.join(p for p in (str(site), dep.env.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "BENCH_TRIGGERER_PROFILE": str(_profile_prefix(dep, phase))}


def _profile_prefix(dep: Deployment, phase: Phase) -> Path:
    return dep.home / f"profile-{phase.side}-{phase.n}"


def _profile(dep: Deployment, args: argparse.Namespace, phase: Phase) -> None:
    """A second window, after the measured one (cProfile slows what it profiles): profile every triggerer
    process for ``--profile-window`` seconds, then print and keep where each one's time went."""
    marker = Path(f"{_profile_prefix(dep, phase)}.window")
    marker.touch()
    time.sleep(args.profile_window)
    marker.unlink()
    time.sleep(3)  # the watchers notice within 0.2 s and dump their stats
    files = sorted(p for p in dep.home.glob(f"{_profile_prefix(dep, phase).name}.*") if p.suffix[1:].isdigit())
    names = {int(key.split(" ", 1)[0]): key for key in phase.cpu_by_process}
    text = [
        f"profile {phase.side} N={phase.n}: cProfile of each triggerer process's main thread, {args.profile_window:g} s"
    ]
    for path in files:
        out = io.StringIO()
        stats = pstats.Stats(str(path), stream=out)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        text += [f"--- {names.get(int(path.suffix[1:]), path.suffix[1:])}", out.getvalue()]
    print("\n".join(text), flush=True)
    dest = ROOT / "bench-results" / f"triggerer-profile-{phase.side}-{phase.n}.txt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(text))


# -- output -------------------------------------------------------------------------------------------------


def _row(p: Phase, base: Phase | None) -> str:
    def ratio(ours: float | None, theirs: float | None) -> str:
        return "-" if ours is None or not theirs else f"{ours / theirs:.2f}x"

    lat = f"{statistics.median(p.latencies):.1f}/{max(p.latencies):.1f}" if p.latencies else "-"
    return "  ".join(
        (
            f"{p.n:>5}",
            f"{p.side:<8}",
            "-" if p.polls_achieved is None else f"{100 * p.polls_achieved:5.1f}%",
            "-" if p.cpu_percent is None else f"{p.cpu_percent:6.1f}%",
            ratio(p.cpu_percent, base.cpu_percent if base else None),
            "-" if p.rss_mb is None else f"{p.rss_mb:7.0f}",
            ratio(p.rss_mb, base.rss_mb if base else None),
            lat,
            "-" if p.emulator_cpu_percent is None else f"{p.emulator_cpu_percent:.0f}%",
            f"{p.load_start} -> {p.load_end}",
        )
    )


def _table(phases: list[Phase]) -> str:
    head = "    N  side      polls   CPU(1 core) ratio  RSS MB  ratio  latency med/max s  emulator CPU  load 1/5/15"
    lines = [head]
    for p in phases:
        base = next((b for b in phases if b.n == p.n and b.side == "baseline" and b.status == "done"), None)
        lines.append(
            _row(p, base if p.side != "baseline" else None) if p.status == "done" else f"{p.n:>5}  {p.side}: {p.status}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    phases = [Phase(side, n) for n in args.sizes for side in args.sides]
    run_load_start = _loadavg()
    home = Path(tempfile.mkdtemp(prefix="runwatch-bench-triggerer-"))
    folder = home / "dags"
    folder.mkdir()
    shutil.copy(DAG_FILE, folder / DAG_FILE.name)
    emulator = EmulatorServer(mode="thread")
    emulator.start()
    began = time.monotonic()
    try:
        port = free_port()
        env = airflow_env(home, port, emulator, dags=folder)
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
                "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, *args.sizes)),
                "AIRFLOW__TRIGGERER__CAPACITY": str(max(args.sizes) + args.early + 100),
                # Airflow's defaults, not the suites' 1 s: what a deployment pays per heartbeat.
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "5",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "30",
                "BENCH_TRIGGERER_SPANS": str(home / "spans"),
                "BENCH_TRIGGERER_POLL": str(args.poll_interval),
            }
        )
        dep = Deployment(home=home, env=env, api_url=f"http://127.0.0.1:{port}", emulator=emulator)
    except BaseException:
        emulator.stop()
        shutil.rmtree(home, ignore_errors=True)
        raise
    state = emulator.state
    assert state is not None
    failed = False
    with running(dep, "bench-triggerer-logs"):
        pg_port = start_postgres(dep)
        env.update(postgres_env(pg_port))
        start_airflow_core(dep, port)
        wait_healthy(dep, timeout=240, components=("metadatabase", "scheduler", "dag_processor"))  # no triggerer yet
        wait_dags(dep, list(DAGS.values()), timeout=240)
        print(f"[bench] deployment up in {time.monotonic() - began:.0f} s", flush=True)
        db = _Db(pg_port)
        for phase in phases:
            phase_began = time.monotonic()
            try:
                _run_phase(dep, db, state, phase, args)
            except RuntimeError as exc:
                phase.status = f"failed: {str(exc).splitlines()[0]}"
                print(f"[bench] {phase.side} N={phase.n}: {exc}", flush=True)
                failed = True
                break
            finally:
                print(
                    f"[bench] {phase.side} N={phase.n}: phase took {time.monotonic() - phase_began:.0f} s", flush=True
                )
    total = time.monotonic() - began
    print()
    print(_table(phases))
    print(f"\nload average at the start {run_load_start}, at the end {_loadavg()}; {os.cpu_count()} cores; "
          f"{total:.0f} s in all")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "cpu_count": os.cpu_count(),
        "seconds": round(total),
        "phases": [{**asdict(p), "polls_achieved": p.polls_achieved} for p in phases],
    }
    args.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
