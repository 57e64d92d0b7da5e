"""GloriaMundo workflow endpoints (vendor-apis.md section 2), served under ``/api/v1``.

A GloriaMundo connection's host is ``http://127.0.0.1:N/api/v1``, exactly like
``https://app.gloriamundo.com/api/v1``.

- ``POST /api/v1/workflows/{workflow_id}/execute`` body ``{input?: {...}}`` -> 200
  ``{run_id, status: "queued", poll_url: "/api/v1/runs/{run_id}/status"}`` (relative to the origin);
- ``GET /api/v1/runs/{run_id}/status`` -> ``{run_id, status, progress{...}, started_at, completed_at, result,
  cost_cents, error}``.

Every workflow has five named steps; each running answer advances one step (or, with ``seconds``, the steps
follow the elapsed time). Auth: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; keys starting with
``gm_invalid`` are refused (401). Workflow ids starting with ``wf_missing`` do not exist (404); runs belong to
the key that started them (404 for any other key).

Per-key budgets are enforced like the real service: by default 10 executions and 60 status requests per key
in any sliding 60-second window of the emulator's clock (so 6 real seconds at ``--speed 10``; 429 with
``Retry-After`` in real seconds beyond that; refused requests do not count). Tests
scale them with the control API: ``GET``/``PUT /_emulator/gloriamundo/limits`` with
``{"window_seconds": 6, "executions": 10, "polls": 60}`` (``null`` = not enforced). ``POST /_emulator/reset``
restores the defaults.

Scenario mapping: the directive may sit in any string value of ``input`` (or the ``X-Emulator-Scenario``
header). ``start_status`` renders GloriaMundo's documented start errors: 400 input not an object, 401, 402 out
of credits, 404 workflow not found, 429 rate limit; with ``error=spend_limit_exceeded`` a 402 or 429 is the
spend limit instead, with a ``resets_at`` time. ``outcome=cancelled`` (GloriaMundo has no cancelled state)
reports ``failed``; ``outcome=paused`` stays ``running``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from airflow_provider_runwatch.emulator.common import (
    bearer_token,
    context,
    error_response,
    gateway_error_response,
    json_bytes,
    json_response,
    malformed_response,
    rate_limit_response,
    settings_routes,
    start_scenario,
)
from airflow_provider_runwatch.emulator.scenario import ScenarioError, strip_directive
from airflow_provider_runwatch.emulator.state import fingerprint

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.requests import Request

    from airflow_provider_runwatch.emulator.scenario import Scenario
    from airflow_provider_runwatch.emulator.state import EmulatedRun, EmulatorState, PollDecision

__all__ = ["DEFAULT_LIMITS", "STEPS", "VENDOR", "Limits", "gloriamundo_state", "routes"]

VENDOR = "gloriamundo"
PREFIX = "/api/v1"
LIMITS_PATH = "/_emulator/gloriamundo/limits"

STEPS = ("Fetch input", "Generate content", "Review draft", "Format output", "Deliver results")

UNAUTHORIZED = "Invalid or missing API key"
BODY_NOT_OBJECT = "Request body must be a JSON object"
INPUT_NOT_OBJECT = "input must be an object"
WORKFLOW_NOT_FOUND = "Workflow not found"
RUN_NOT_FOUND = "Run not found"
NO_CREDITS = "Insufficient credits"
SPEND_LIMIT = "spend_limit_exceeded"
SPEND_LIMIT_MESSAGE = "Monthly spend limit reached for this account"
CANCELLED_ERROR = "Run was cancelled"
DEFAULT_START_RETRY_AFTER = 6


@dataclass(frozen=True)
class Limits:
    """Per-key budgets: at most ``executions`` / ``polls`` accepted requests in any ``window_seconds``."""

    window_seconds: float = 60.0
    executions: int | None = 10
    polls: int | None = 60


DEFAULT_LIMITS = Limits()


class _Window:
    """Sliding-window log of one key's accepted requests of one kind."""

    __slots__ = ("times",)

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def take(self, now: float, limit: int, window: float) -> float | None:
        """Count the request and return None, or return the seconds until one would be accepted."""
        times = self.times
        cutoff = now - window
        while times and times[0] <= cutoff:
            times.popleft()
        if len(times) >= limit:
            return times[-limit] + window - now
        times.append(now)
        return None


def _limits(state: EmulatorState) -> Limits:
    limits = state.store(VENDOR).get("limits")
    return limits if isinstance(limits, Limits) else DEFAULT_LIMITS


def _over_budget(state: EmulatorState, request: Request, owner: str, kind: str) -> Response | None:
    """A 429 when ``owner`` spent its ``kind`` budget ("executions" or "polls"), else None (and count it).

    The window runs on the emulator's clock (60 s are 6 real seconds at ``--speed 10``); ``Retry-After`` is in
    real seconds, at least 1.
    """
    limits = _limits(state)
    limit: int | None = getattr(limits, kind)
    if limit is None:
        return None
    windows: dict[tuple[str, str], _Window] = state.store(VENDOR).setdefault("windows", {})
    window = windows.get((owner, kind))
    if window is None:
        window = windows[(owner, kind)] = _Window()
    wait = window.take(state.clock.now(), limit, limits.window_seconds)
    if wait is None:
        return None
    context(request).reason = "rate"
    what = "workflow executions" if kind == "executions" else "status requests"
    per = "minute" if limits.window_seconds == 60 else f"{limits.window_seconds:g} seconds"
    seconds = state.clock.retry_after(wait)
    return json_response(
        {"error": f"Rate limit exceeded: {limit} {what} per {per}", "retry_after": seconds},
        status=429,
        headers={"Retry-After": str(seconds)},
    )


# -- payloads ------------------------------------------------------------------------------------------------


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _strings(value: Any) -> Iterator[str]:
    """Every string value in ``value``, depth first, in order (where a scenario directive may sit)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _clean(value: Any) -> Any:
    """``value`` with scenario directives removed from its strings (what the "workflow" sees)."""
    if isinstance(value, str):
        return strip_directive(value) if "[" in value else value
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def _cost(workflow_id: str, cleaned: Any) -> int:
    """Deterministic cost of a whole run: 5 cents a step plus 0-19 cents depending on the input."""
    digest = hashlib.sha256(json_bytes([workflow_id, cleaned])).hexdigest()
    return 5 * len(STEPS) + int(digest[:4], 16) % 20


def build_result(run: EmulatedRun) -> dict[str, Any]:
    """The ``result`` object of a completed run (deterministic for a workflow id and input)."""
    cleaned = run.cache.get("input", {})
    subject = next((s for s in _strings(cleaned) if s.strip()), run.data["workflow_id"])
    digest = hashlib.sha256(json_bytes([run.data["workflow_id"], cleaned])).hexdigest()
    return {
        "workflow_id": run.data["workflow_id"],
        "summary": f"Processed '{subject[:120]}' through {len(STEPS)} steps",
        "input": cleaned,
        "steps": list(STEPS),
        "score": int(digest[4:8], 16) % 100,
    }


def _step(run: EmulatedRun, decision: PollDecision, elapsed: float) -> int:
    """1-based step of a running answer: one per running poll, or following the elapsed (emulated) time."""
    sc = run.scenario
    total = len(STEPS)
    if run.duration is not None and run.duration > 0:
        return min(total, 1 + int(elapsed / run.duration * total))
    running_index = decision.poll_index - sc.fault_polls - sc.queued
    return max(1, min(total, running_index + 1))


def _progress(step: int, running: bool) -> dict[str, Any]:
    total = len(STEPS)
    percentage = round(100 * step / total)
    if running:
        percentage = min(percentage, 99)
    return {
        "current_step": step,
        "total_steps": total,
        "current_step_name": STEPS[step - 1] if step else None,
        "percentage": percentage,
    }


def gloriamundo_state(run: EmulatedRun, decision: PollDecision) -> str:
    """The GloriaMundo ``status`` string for a normal (non-fault) decision."""
    if decision.kind == "queued":
        return "queued"
    if decision.kind == "terminal":
        if decision.outcome == "succeeded":
            return "completed"
        if decision.outcome in ("failed", "cancelled"):
            return "failed"
    return run.scenario.unknown_state or "running"


def _status_payload(run: EmulatedRun, decision: PollDecision, elapsed: float) -> dict[str, Any]:
    data = run.data
    status = gloriamundo_state(run, decision)
    body: dict[str, Any] = {
        "run_id": run.id,
        "status": status,
        "progress": _progress(0, running=True),
        "started_at": data.get("started_at"),
        "completed_at": None,
        "result": None,
        "cost_cents": None,
        "error": None,
    }
    if decision.kind == "queued":
        return body
    if data.get("started_at") is None:
        data["started_at"] = body["started_at"] = _iso(time.time())
    if decision.kind != "terminal" or decision.outcome == "paused":
        step = _step(run, decision, elapsed)
        data["last_step"] = step
        body["progress"] = _progress(step, running=True)
        return body
    if data.get("completed_at") is None:
        data["completed_at"] = _iso(time.time())
    body["completed_at"] = data["completed_at"]
    if decision.outcome == "succeeded":
        body["progress"] = _progress(len(STEPS), running=False)
        body["result"] = build_result(run)
        body["cost_cents"] = data["cost_cents"]
    else:
        step = max(1, int(data.get("last_step", 1)))
        body["progress"] = _progress(step, running=False)
        body["cost_cents"] = data["cost_cents"] * step // len(STEPS)
        body["error"] = CANCELLED_ERROR if decision.outcome == "cancelled" else run.scenario.error
    return body


# -- request handling ----------------------------------------------------------------------------------------


def _authorize(request: Request) -> str | Response:
    """The caller's owner fingerprint, or the 401 GloriaMundo answers."""
    key = bearer_token(request)
    if key is None:
        key = (request.headers.get("x-api-key") or "").strip() or None
    if key is None or key.startswith("gm_invalid"):
        return error_response(401, UNAUTHORIZED)
    context(request).authorized = True
    return fingerprint(key)


def _next_reset() -> str:
    """Start of next month, UTC: when a monthly spend limit resets."""
    now = datetime.now(timezone.utc)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=timezone.utc).isoformat().replace("+00:00", "Z")


def _start_failure(scenario: Scenario) -> Response:
    """``start_status``: the execute call fails the way GloriaMundo documents that status."""
    status = scenario.start_status
    assert status is not None
    if status in (402, 429) and scenario.error == SPEND_LIMIT:
        return json_response(
            {"error": SPEND_LIMIT, "message": SPEND_LIMIT_MESSAGE, "resets_at": _next_reset()}, status=status
        )
    if status == 429:
        return rate_limit_response(
            scenario,
            message="Rate limit exceeded: 10 workflow executions per minute",
            body_field="retry_after",
            default_seconds=DEFAULT_START_RETRY_AFTER,
        )
    if status in (502, 503, 504):
        return gateway_error_response(status)
    known = {400: INPUT_NOT_OBJECT, 401: UNAUTHORIZED, 402: NO_CREDITS, 404: WORKFLOW_NOT_FOUND}
    if status in known:
        return error_response(status, known[status])
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return error_response(status, phrase)


def _parse_limits(current: Limits, body: Any) -> Limits | str:
    """``current`` updated from a ``PUT`` body, or the 400 text."""
    if not isinstance(body, dict):
        return 'emulator: body must be {"window_seconds": 60, "executions": 10, "polls": 60}'
    unknown = set(body) - {"window_seconds", "executions", "polls"}
    if unknown:
        return f"emulator: unknown limit {sorted(unknown)[0]!r}"
    values: dict[str, Any] = {}
    if "window_seconds" in body:
        window = body["window_seconds"]
        if isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 < window <= 3600:
            return "emulator: window_seconds must be a number in (0, 3600]"
        values["window_seconds"] = float(window)
    for name in ("executions", "polls"):
        if name in body:
            value = body[name]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                return f"emulator: {name} must be a positive integer or null (not enforced)"
            values[name] = value
    return replace(current, **values)


def routes(state: EmulatorState) -> list[BaseRoute]:
    """GloriaMundo's routes (and its limits control route) bound to ``state``."""
    state.register_state_reporter(VENDOR, gloriamundo_state)

    async def execute(request: Request) -> Response:
        owner = _authorize(request)
        if isinstance(owner, Response):
            return owner
        limited = _over_budget(state, request, owner, "executions")
        if limited is not None:
            return limited
        raw = await request.body()
        body: Any = {}
        if raw.strip():
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                return error_response(400, BODY_NOT_OBJECT)
        if not isinstance(body, dict):
            return error_response(400, BODY_NOT_OBJECT)
        given = body.get("input")
        if given is not None and not isinstance(given, dict):
            return error_response(400, INPUT_NOT_OBJECT)
        payload: dict[str, Any] = given or {}
        try:
            scenario = start_scenario(state, request, _strings(payload))
        except ScenarioError as exc:
            return error_response(400, str(exc))
        if scenario.start_status is not None:
            return _start_failure(scenario)
        workflow_id: str = request.path_params["workflow_id"]
        if workflow_id.startswith("wf_missing"):
            return error_response(404, WORKFLOW_NOT_FOUND)
        cleaned = _clean(payload)
        run_id = str(uuid.uuid4())
        run = state.new_run(
            VENDOR,
            owner,
            scenario,
            run_id=run_id,
            data={
                "workflow_id": workflow_id,
                "total_steps": len(STEPS),
                "cost_cents": _cost(workflow_id, cleaned),
                "input_keys": sorted(cleaned),
                "started_at": None,
                "completed_at": None,
            },
        )
        run.cache["input"] = cleaned
        context(request).run_id = run.id
        return json_response({"run_id": run.id, "status": "queued", "poll_url": f"{PREFIX}/runs/{run.id}/status"})

    async def status(request: Request) -> Response:
        owner = _authorize(request)
        if isinstance(owner, Response):
            return owner
        run_id: str = request.path_params["run_id"]
        context(request).run_id = run_id
        limited = _over_budget(state, request, owner, "polls")
        if limited is not None:
            return limited
        run = state.get_run(run_id, VENDOR, owner)
        if run is None:
            return error_response(404, RUN_NOT_FOUND)
        decision = state.next_poll(run)
        if decision.delay > 0:
            await asyncio.sleep(decision.delay)
        if decision.kind == "http5xx":
            return gateway_error_response(run.scenario.status5xx)
        if decision.kind == "rate_limit":
            return rate_limit_response(run.scenario, message="Too many requests", body_field="retry_after")
        if decision.kind == "malformed":
            return malformed_response(json_bytes({"run_id": run.id, "status": "running", "progress": None}))
        return Response(json_bytes(_status_payload(run, decision, state.elapsed(run))), media_type="application/json")

    def update_limits(body: Any) -> dict[str, Any] | str:
        updated = _parse_limits(_limits(state), body)
        if isinstance(updated, str):
            return updated
        state.store(VENDOR)["limits"] = updated
        return asdict(updated)

    return [
        Route(f"{PREFIX}/workflows/{{workflow_id}}/execute", execute, methods=["POST"]),
        Route(f"{PREFIX}/runs/{{run_id}}/status", status, methods=["GET"]),
        *settings_routes(LIMITS_PATH, lambda: asdict(_limits(state)), update_limits),
    ]
