"""Test helpers: replay what Airflow itself does without a database, the five run kinds, and what the emulator
saw of a run."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast

import httpx

from airflow_provider_runwatch.core.retry import NO_RETRY as NO_RETRY  # one place for the tests too
from airflow_provider_runwatch.core.retry import RetryPolicy
from tests.replay import rehydrate as rehydrate  # the benchmarks import it without this module

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_runwatch.emulator.server import EmulatorServer
    from airflow_provider_runwatch.triggers.base import RunTrigger
    from tests.conftest import DagResult


#: Retries that take milliseconds, not seconds: what the hook tests use so a retried call stays quick.
FAST = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.1)


async def first_event(trigger: Any) -> dict[str, Any]:
    """Drive ``run()`` like the triggerer: take the first event's payload."""
    events = trigger.run()
    try:
        event = await anext(events)
    finally:
        await events.aclose()
    payload: dict[str, Any] = event.payload
    return payload


def task_context(**fields: object) -> Context:
    """A task context holding only ``fields`` (a fake ``ti``, a ``task_state_store``...): what an operator's own
    logic reads, without a metadata database. The fakes implement only what the code under test calls, so this one
    cast is where a partial dict stands in for Airflow's ``Context``."""
    return cast("Context", fields)


# -- the five run kinds, for tests that say the same thing about each of them ----------------------------------
@dataclass(frozen=True)
class RunKind:
    """One kind of run: its trigger class and how to start one against the emulator (``text`` carries the
    scenario directive). What it is called, and whether it can be cancelled, come from the trigger's adapter."""

    name: str
    trigger_class: type[RunTrigger]
    conn_id: str
    start: Callable[[str], str]

    @property
    def what(self) -> str:
        """``Puffle chat run``: how every message names a run of this kind (before its id)."""
        return f"{self.trigger_class.adapter.vendor.display_name} {self.trigger_class.adapter.noun}"

    @property
    def can_cancel(self) -> bool:
        return self.trigger_class.adapter.cancel_supported

    def __str__(self) -> str:  # pytest ids
        return self.name


def _kinds() -> list[RunKind]:
    from airflow_provider_runwatch.hooks.gloriamundo import GloriaMundoHook
    from airflow_provider_runwatch.hooks.gumloop import GumloopHook
    from airflow_provider_runwatch.hooks.puffle import PuffleHook
    from airflow_provider_runwatch.triggers.gloriamundo import GloriaMundoRunTrigger
    from airflow_provider_runwatch.triggers.gumloop import (
        GumloopAgentTrigger,
        GumloopFlowTrigger,
        GumloopSessionTrigger,
    )
    from airflow_provider_runwatch.triggers.puffle import PuffleChatRunTrigger

    return [
        RunKind("puffle", PuffleChatRunTrigger, "puffle_default", lambda t: PuffleHook().start_chat(t).runId),
        RunKind(
            "gumloop_agent",
            GumloopAgentTrigger,
            "gumloop_default",
            lambda t: GumloopHook().start_agent("gummie_kinds", t).interaction_id,
        ),
        RunKind(
            "gumloop_session",
            GumloopSessionTrigger,
            "gumloop_default",
            lambda t: GumloopHook().create_session("agent_kinds", t).session.id,
        ),
        RunKind(
            "gumloop_flow",
            GumloopFlowTrigger,
            "gumloop_default",
            lambda t: GumloopHook().start_pipeline("flow_kinds", {"q": t}).run_id,
        ),
        RunKind(
            "gloriamundo",
            GloriaMundoRunTrigger,
            "gloriamundo_default",
            lambda t: GloriaMundoHook().execute_workflow("wf_kinds", {"q": t}).run_id,
        ),
    ]


KINDS = _kinds()


# -- what the emulator saw ------------------------------------------------------------------------------------
def _is_cancel(entry: dict[str, Any]) -> bool:
    path = str(entry["path"])
    return path.endswith("/cancel") or path.endswith("/kill_pipeline")


def start_requests(emulator: EmulatorServer, run_id: str) -> list[dict[str, Any]]:
    """Accepted start calls for ``run_id`` (a 409 ``session_already_exists`` is a refused start, not one)."""
    return [e for e in emulator.requests(method="POST", run_id=run_id) if e["status"] < 300 and not _is_cancel(e)]


def cancel_requests(emulator: EmulatorServer, run_id: str) -> list[dict[str, Any]]:
    """Cancel calls (Gumloop ``/sessions/{id}/cancel``, ``/kill_pipeline``) about ``run_id``."""
    return [e for e in emulator.requests(method="POST", run_id=run_id) if _is_cancel(e)]


def runs_started_by(emulator: EmulatorServer, marker: str) -> list[str]:
    """Ids of every run the emulator created for ``marker``, whatever the vendor: the first word of the
    message/input (Puffle, Gumloop agents and sessions), or the flow/workflow id ``flow_<marker>`` /
    ``wf_<marker>``. The DAGs in tests/dag_files/runwatch_test_lifecycle.py mark each task's runs so."""
    with httpx.Client(base_url=emulator.url, timeout=10, trust_env=False) as http:
        response = http.get("/_emulator/runs")
        response.raise_for_status()
        runs = response.json()["runs"]
    found = []
    for run in runs:
        data = run["data"]
        words = str(data.get("prompt") or "").split()
        if (
            (words and words[0] == marker)
            or data.get("saved_item_id") == f"flow_{marker}"
            or data.get("workflow_id") == f"wf_{marker}"
        ):
            found.append(str(run["id"]))
    return found


def plain(text: str) -> str:
    """Log output without terminal colours (some Airflow versions add them)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def gloriamundo_key_env(emulator: EmulatorServer, owner: str) -> dict[str, str]:
    """``gloriamundo_default`` with a key of its own (still containing SECRET_KEY, so leak checks see it).

    GloriaMundo limits executions (10/min) and polls per key: a DAG test with its own key neither trips
    another test's limits nor is tripped by them.
    """
    from tests.conftest import SECRET_KEY

    conn = {"conn_type": "gloriamundo", "host": emulator.gloriamundo_url, "password": f"{SECRET_KEY}_{owner}"}
    return {"AIRFLOW_CONN_GLORIAMUNDO_DEFAULT": json.dumps(conn)}


@contextmanager
def web_page_server(status: int = 404, body: bytes = b"<!DOCTYPE html><title>Not found</title>") -> Iterator[str]:
    """A loopback HTTP server answering every GET with ``status`` and an HTML ``body``, like a website or a
    proxy would at a wrong host or base path. Yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # keep pytest's output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_lifecycle_dag(dag_runner: Callable[..., DagResult], emulator: EmulatorServer, dag_id: str) -> DagResult:
    """Run one of the lifecycle DAGs (tests/dag_files/runwatch_test_lifecycle.py) once, GloriaMundo on a key of its
    own (its limits are per key), with the log's colour codes stripped for the assertions."""
    result = dag_runner(dag_id, extra_env=gloriamundo_key_env(emulator, dag_id), timeout=540)
    result.output = plain(result.output)
    return result
