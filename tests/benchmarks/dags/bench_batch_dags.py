"""DAGs of the batch benchmark (``tests/benchmarks/bench_batch.py``): N inputs per vendor, two ways.

- ``bench_batch_<vendor>_mapped``: one mapped task per input (``Operator.partial(...).expand(...)``), deferrable,
  with start admission (``start_timeout``) when this tree's operators have it;
- ``bench_batch_<vendor>_batch``: one batch operator task for every input (defined only when this tree has the
  batch operators: ``GumloopSessionBatchOperator``, ``GloriaMundoWorkflowBatchOperator``,
  ``PuffleAgentChatBatchOperator``);
- ``bench_batch_<vendor>_blocking``: the same with ``deferrable=False`` (it waits on the worker).

Configured by the harness through the environment every Airflow component shares (``BENCH_BATCH_*``). Every
operator is wrapped so that each start of the task on a worker (``execute``, and each resume) appends one span to
``$BENCH_BATCH_SPANS/<pid>.jsonl``: the task process's start time and when the call returned, deferred or
raised. That gives task starts on workers and worker-slot seconds without reading Airflow's logs.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import DAG

from airflow_provider_runwatch.operators.gloriamundo import GloriaMundoWorkflowOperator
from airflow_provider_runwatch.operators.gumloop import GumloopSessionOperator
from airflow_provider_runwatch.operators.puffle import PuffleAgentChatOperator

ITEMS = int(os.environ.get("BENCH_BATCH_ITEMS", "20"))
POLL = float(os.environ.get("BENCH_BATCH_POLL", "1"))
SPANS = Path(os.environ.get("BENCH_BATCH_SPANS", "/tmp/bench-batch-spans"))
GUMLOOP_LIMIT = int(os.environ.get("BENCH_BATCH_GUMLOOP_LIMIT", "25"))
PUFFLE_CONCURRENCY = int(os.environ.get("BENCH_BATCH_PUFFLE_CONCURRENCY", "10"))
START_TIMEOUT = 6 * 3600.0

#: Emulated run durations (the emulator's clock scales them): Gumloop sessions 30-90 s as in issue 17,
#: GloriaMundo workflows likewise, Puffle chats 20-60 s (within its documented 10-60 s; see bench_batch.py on why
#: none is shorter).
DURATIONS = {"gumloop": "30-90", "gloriamundo": "30-90", "puffle": "20-60"}

BATCH_CLASSES = {
    "gumloop": "GumloopSessionBatchOperator",
    "gloriamundo": "GloriaMundoWorkflowBatchOperator",
    "puffle": "PuffleAgentChatBatchOperator",
}


def batch_class(vendor: str) -> type[Any] | None:
    """This tree's batch operator for ``vendor``, wherever the package put it, or None."""
    name = BATCH_CLASSES[vendor]
    for module in (
        "airflow_provider_runwatch.operators",
        f"airflow_provider_runwatch.operators.{vendor}",
        f"airflow_provider_runwatch.operators.{vendor}_batch",
        "airflow_provider_runwatch.operators.batch",
    ):
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(found, type):
            return found
    return None


def has_start_admission(operator: type[Any]) -> bool:
    """Whether the operator (or a base) takes ``start_timeout``: start admission is in this tree."""
    return any(
        "start_timeout" in inspect.signature(vars(klass)["__init__"]).parameters
        for klass in operator.__mro__
        if "__init__" in vars(klass)
    )


def _span(context: Any, kind: str, began: float, outcome: str) -> None:
    try:
        import psutil

        process_start = psutil.Process().create_time()
    except Exception:
        process_start = began
    ti = context["ti"]
    record = {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "kind": kind,
        "process_start": process_start,
        "start": began,
        "end": time.time(),
        "outcome": outcome,
    }
    SPANS.mkdir(parents=True, exist_ok=True)
    with (SPANS / f"{os.getpid()}.jsonl").open("a") as out:
        out.write(json.dumps(record) + "\n")


def _timed(call: Any, context: Any, kind: str) -> Any:
    began = time.time()
    try:
        result = call()
    except BaseException as exc:
        _span(context, kind, began, "deferred" if type(exc).__name__ == "TaskDeferred" else "raised")
        raise
    _span(context, kind, began, "returned")
    return result


def instrumented(operator: type[Any]) -> type[Any]:
    """``operator`` recording a span per start on a worker (execute, and each resume)."""

    class Timed(operator):  # type: ignore[misc, valid-type]
        def execute(self, context: Any) -> Any:
            return _timed(lambda: super(Timed, self).execute(context), context, "execute")

        def resume_execution(self, next_method: str, next_kwargs: Any, context: Any) -> Any:
            call = super().resume_execution
            return _timed(lambda: call(next_method, next_kwargs, context), context, "resume")

    Timed.__name__ = Timed.__qualname__ = operator.__name__
    return Timed


def _text(vendor: str, index: int) -> str:
    return f"Account {index:05d}: summarise last night's activity [emulator: seconds={DURATIONS[vendor]}]"


def _dag(dag_id: str) -> DAG:
    return DAG(
        dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
        catchup=False,
        max_active_tasks=max(16, ITEMS),
        tags=["runwatch-benchmark"],
    )


def _common(operator: type[Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"deferrable": True, "poll_interval": POLL, "retries": 0}
    if has_start_admission(operator):
        kwargs["start_timeout"] = START_TIMEOUT
    return kwargs


with _dag("bench_batch_gumloop_mapped"):
    op = instrumented(GumloopSessionOperator)
    op.partial(task_id="item", agent_id="agent_bench", **_common(GumloopSessionOperator)).expand(
        input=[_text("gumloop", i) for i in range(ITEMS)]
    )

with _dag("bench_batch_gloriamundo_mapped"):
    op = instrumented(GloriaMundoWorkflowOperator)
    op.partial(task_id="item", workflow_id="wf_bench", **_common(GloriaMundoWorkflowOperator)).expand(
        input=[{"account": _text("gloriamundo", i)} for i in range(ITEMS)]
    )

with _dag("bench_batch_puffle_mapped"):
    op = instrumented(PuffleAgentChatOperator)
    op.partial(task_id="item", **_common(PuffleAgentChatOperator)).expand(
        message=[_text("puffle", i) for i in range(ITEMS)]
    )

_BATCH_ARGS: dict[str, dict[str, Any]] = {
    "gumloop": {
        "agent_id": "agent_bench",
        "inputs": [_text("gumloop", i) for i in range(ITEMS)],
        "max_concurrency": GUMLOOP_LIMIT,
    },
    "gloriamundo": {"workflow_id": "wf_bench", "inputs": [{"account": _text("gloriamundo", i)} for i in range(ITEMS)]},
    "puffle": {"messages": [_text("puffle", i) for i in range(ITEMS)], "max_concurrency": PUFFLE_CONCURRENCY},
}

for _vendor, _args in _BATCH_ARGS.items():
    _batch = batch_class(_vendor)
    if _batch is None:
        continue  # this tree has no batch operator for the vendor: the harness says so
    with _dag(f"bench_batch_{_vendor}_batch"):
        instrumented(_batch)(task_id="batch", poll_interval=POLL, retries=0, max_failed=0, **_args)
    with _dag(f"bench_batch_{_vendor}_blocking"):
        instrumented(_batch)(task_id="batch", deferrable=False, poll_interval=POLL, retries=0, max_failed=0, **_args)
