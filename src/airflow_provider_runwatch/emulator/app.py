"""The emulator's ASGI app: every vendor at its documented paths on one origin, plus a control API.

- Puffle: ``/api/agent/chat...`` (connection host ``http://127.0.0.1:N``);
- Gumloop and GloriaMundo: under ``/api/v1/...`` (connection host ``http://127.0.0.1:N/api/v1``);
- control API: ``/_emulator/...`` (health, request log, runs, forced completion, default scenario, clock speed,
  429 counters, per-vendor limits, reset).

Vendor requests are logged by a pure-ASGI middleware (cheaper than ``BaseHTTPMiddleware`` on the hot path);
control-API calls are not logged, so a test reading the log sees only what its client sent.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from airflow_provider_runwatch.emulator import gloriamundo, gumloop, puffle
from airflow_provider_runwatch.emulator.common import (
    CONTEXT_SCOPE_KEY,
    error_response,
    json_response,
    send_slowly,
    settings_routes,
)
from airflow_provider_runwatch.emulator.scenario import ScenarioError, parse_spec
from airflow_provider_runwatch.emulator.state import EmulatorState, RequestContext

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTROL_PREFIX", "FORCEABLE_OUTCOMES", "RequestLogMiddleware", "create_app"]

CONTROL_PREFIX = "/_emulator"
FORCEABLE_OUTCOMES = ("succeeded", "failed", "cancelled")


class RequestLogMiddleware:
    """Logs every vendor request (method, path, redacted query, status, vendor, run id, authorized, peer).

    Handlers annotate the :class:`RequestContext` found in the scope; this middleware captures the status and
    appends the entry when the response starts (or, if the app raised, with status 500).
    """

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        ctx = RequestContext(peer=client[0] if client else None)
        scope[CONTEXT_SCOPE_KEY] = ctx
        method: str = scope["method"]
        query: bytes = scope["query_string"]
        recorded = False

        async def send_and_record(message: Message) -> None:
            # Record when the response starts, before any byte reaches the client: a client that reads the
            # log right after its response always finds its request there.
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                ctx.status = message["status"]
                self.state.record(method, path, query, ctx)
                if ctx.status == 429:
                    self.state.count_rejection(ctx.vendor, ctx.reason)
                recorded = True
            run = self.state.runs.get(ctx.run_id) if ctx.run_id and method == "GET" else None
            if run is not None:  # a status answer: trickled or stalled when the run's scenario says so
                await send_slowly(send, message, run.scenario)
                return
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            if not recorded:  # the app raised before answering; the error middleware answers 500
                self.state.record(method, path, query, ctx)


class _VendorTag:
    """Wraps a vendor route's ASGI app so its requests are logged with that vendor's name."""

    def __init__(self, app: ASGIApp, vendor: str) -> None:
        self.app = app
        self.vendor = vendor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = scope.get(CONTEXT_SCOPE_KEY)
        if ctx is not None:
            ctx.vendor = self.vendor
        await self.app(scope, receive, send)


def _tagged(routes: list[BaseRoute], vendor: str) -> list[BaseRoute]:
    for route in routes:
        inner = getattr(route, "app", None)
        if inner is not None:
            route.app = _VendorTag(inner, vendor)  # type: ignore[attr-defined]
    return routes


def _optional_int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise HTTPException(400, f"emulator: {name} must be an integer") from None


def _control_routes(state: EmulatorState) -> list[BaseRoute]:
    async def health(request: Request) -> Response:
        return json_response({"ok": True})

    async def list_requests(request: Request) -> Response:
        q = request.query_params
        entries = state.requests(
            vendor=q.get("vendor") or None,
            method=q.get("method") or None,
            path_prefix=q.get("path_prefix") or None,
            run_id=q.get("run_id") or None,
            after=_optional_int(q.get("after"), "after"),
        )
        return json_response({"requests": [entry.to_dict() for entry in entries]})

    async def clear_requests(request: Request) -> Response:
        state.clear_requests()
        return json_response({"ok": True})

    async def list_runs(request: Request) -> Response:
        vendor = request.query_params.get("vendor") or None
        records = [state.run_record(run) for run in state.runs.values() if vendor is None or run.vendor == vendor]
        return json_response({"runs": records})

    async def get_run(request: Request) -> Response:
        run = state.runs.get(request.path_params["run_id"])
        if run is None:
            return error_response(404, "emulator: unknown run")
        return json_response(state.run_record(run))

    async def complete_run(request: Request) -> Response:
        run = state.runs.get(request.path_params["run_id"])
        if run is None:
            return error_response(404, "emulator: unknown run")
        raw = await request.body()
        outcome: Any = "succeeded"
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                return error_response(400, 'emulator: body must be JSON like {"outcome": "succeeded"}')
            if not isinstance(body, dict):
                return error_response(400, "emulator: body must be a JSON object")
            outcome = body.get("outcome", "succeeded")
        if outcome not in FORCEABLE_OUTCOMES:
            return error_response(400, f"emulator: outcome must be one of {', '.join(FORCEABLE_OUTCOMES)}")
        state.force_outcome(run, outcome)
        return json_response(state.run_record(run))

    def _scenario_body() -> dict[str, Any]:
        sc = state.default_scenario
        return {
            "scenario": None if sc is None else sc.to_spec(),
            "parsed": None if sc is None else sc.to_dict(),
        }

    def _set_scenario(body: Any) -> dict[str, Any] | str:
        if not isinstance(body, dict) or not isinstance(body.get("scenario", ""), (str, type(None))):
            return 'emulator: body must be {"scenario": "<directive text>"}'
        try:
            state.default_scenario = parse_spec(body.get("scenario"))
        except ScenarioError as exc:
            return str(exc)
        return _scenario_body()

    async def reset(request: Request) -> Response:
        state.reset()
        return json_response({"ok": True})

    def _clock_body() -> dict[str, Any]:
        return {"speed": state.clock.speed, "now": state.clock.now()}

    def _set_clock(body: Any) -> dict[str, Any] | str:
        if not isinstance(body, dict) or set(body) != {"speed"}:
            return 'emulator: body must be {"speed": N} (N in (0, 1000], 1 = real time)'
        try:
            state.clock.set_speed(body["speed"])
        except ValueError as exc:
            return f"emulator: {exc}"
        return _clock_body()

    async def get_rejections(request: Request) -> Response:
        return json_response({"rejections": state.rejection_counts()})

    async def clear_rejections(request: Request) -> Response:
        state.rejections.clear()
        return json_response({"ok": True})

    p = CONTROL_PREFIX
    return [
        Route(f"{p}/health", health, methods=["GET"]),
        Route(f"{p}/requests", list_requests, methods=["GET"]),
        Route(f"{p}/requests", clear_requests, methods=["DELETE"]),
        Route(f"{p}/runs", list_runs, methods=["GET"]),
        Route(f"{p}/runs/{{run_id}}", get_run, methods=["GET"]),
        Route(f"{p}/runs/{{run_id}}/complete", complete_run, methods=["POST"]),
        *settings_routes(f"{p}/scenario", _scenario_body, _set_scenario),
        Route(f"{p}/reset", reset, methods=["POST"]),
        *settings_routes(f"{p}/clock", _clock_body, _set_clock),
        Route(f"{p}/rejections", get_rejections, methods=["GET"]),
        Route(f"{p}/rejections", clear_rejections, methods=["DELETE"]),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    """Vendor-style JSON (not Starlette's plain text) for routing errors and control-API 400s."""
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, headers=exc.headers)


def create_app(state: EmulatorState | None = None) -> Starlette:
    """The emulator app serving every vendor and the control API from ``state`` (a fresh one if None).

    The state is also reachable as ``app.state.emulator``, for in-process use.
    """
    if state is None:
        state = EmulatorState()
    # Vendor routes first: Starlette matches routes in order, and status polls are the hot path.
    routes: list[BaseRoute] = [
        *_tagged(puffle.routes(state), puffle.VENDOR),
        *_tagged(gumloop.routes(state), gumloop.VENDOR),
        *_tagged(gloriamundo.routes(state), gloriamundo.VENDOR),
        *_control_routes(state),
        *gumloop.autonomous_routes(state, CONTROL_PREFIX),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestLogMiddleware, state=state)],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.emulator = state
    return app
