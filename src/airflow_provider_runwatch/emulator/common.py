"""Building blocks shared by the vendor modules: auth, JSON bodies, scenario resolution, fault responses.

Each vendor module (``puffle.py``, ``gumloop.py``, ``gloriamundo.py``) exposes ``routes(state)``; its handlers
use these helpers so that every vendor renders the generic faults (5xx bursts, 429s, malformed JSON, slow
answers) the same way and annotates the request log the same way.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import MutableMapping
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from airflow_provider_runwatch.emulator.scenario import Scenario, parse_scenario, parse_spec
from airflow_provider_runwatch.emulator.serving import TRICKLE_HEAD_HEADER
from airflow_provider_runwatch.emulator.state import RequestContext

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from starlette.requests import Request

    from airflow_provider_runwatch.emulator.state import EmulatorState, PollDecision

__all__ = [
    "CONTEXT_SCOPE_KEY",
    "SCENARIO_HEADER",
    "bearer_token",
    "context",
    "error_response",
    "gateway_error_response",
    "json_bytes",
    "json_response",
    "malformed_response",
    "rate_limit_response",
    "read_json",
    "retry_after",
    "settings_routes",
    "sleep_for",
    "start_scenario",
]

CONTEXT_SCOPE_KEY = "runwatch.emulator.request"
"""ASGI scope key under which the logging middleware puts the request's :class:`RequestContext`."""

SCENARIO_HEADER = "x-emulator-scenario"


def context(request: Request) -> RequestContext:
    """This request's log annotations (vendor, run id, authorized); a dummy without the middleware."""
    ctx = request.scope.get(CONTEXT_SCOPE_KEY)
    if ctx is None:
        ctx = request.scope[CONTEXT_SCOPE_KEY] = RequestContext()
    assert isinstance(ctx, RequestContext)
    return ctx


def json_bytes(data: Any) -> bytes:
    """Compact UTF-8 JSON, as the vendors send it."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json_bytes(data), status_code=status, headers=headers, media_type="application/json")


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """The ``{"error": "<text>"}`` body most vendor errors use."""
    return json_response({"error": message}, status=status, headers=headers)


def gateway_error_response(status: int) -> Response:
    """A 5xx as a load balancer sends it: an HTML page, so clients must cope with non-JSON errors."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Server Error"
    title = f"{status} {phrase}"
    body = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return Response(body.encode("ascii"), status_code=status, media_type="text/html")


def retry_after(scenario: Scenario, default: int | None = None) -> tuple[dict[str, str], int | None]:
    """``Retry-After`` headers for a 429 and the seconds to put in a body field (None: no body field).

    ``retry_after=S`` gives ``Retry-After: S`` and S for the body; ``retry_after_date=S`` gives an HTTP-date
    at least S seconds ahead and no body field (so clients are tested on parsing the header's date form);
    neither gives ``default`` if one is passed, else nothing.
    """
    if scenario.retry_after_date is not None:
        when = math.ceil(time.time() + scenario.retry_after_date)
        return {"Retry-After": formatdate(when, usegmt=True)}, None
    seconds = scenario.retry_after if scenario.retry_after is not None else default
    if seconds is None:
        return {}, None
    return {"Retry-After": str(seconds)}, seconds


def rate_limit_response(
    scenario: Scenario,
    message: str = "Too many requests",
    body_field: str | None = None,
    default_seconds: int | None = None,
) -> Response:
    """A 429 with the scenario's ``Retry-After`` (and the seconds in ``body_field``, if given)."""
    headers, seconds = retry_after(scenario, default_seconds)
    body: dict[str, Any] = {"error": message}
    if body_field is not None and seconds is not None:
        body[body_field] = seconds
    return json_response(body, status=429, headers=headers)


def malformed_response(valid_body: bytes) -> Response:
    """A 200 ``application/json`` whose body is a prefix of ``valid_body``: truncated, hence invalid, JSON."""
    cut = max(1, (len(valid_body) * 3) // 5)
    return Response(valid_body[:cut], status_code=200, media_type="application/json")


def settings_routes(path: str, current: Callable[[], Any], update: Callable[[Any], Any]) -> list[BaseRoute]:
    """``GET``/``PUT`` of one control-API setting at ``path`` (a vendor's limits, the clock), written once.

    ``current()`` is the JSON of the setting in force; ``update(body)`` applies a parsed ``PUT`` body and returns
    the new JSON, or a ``str``: the 400 text naming what is wrong.
    """

    async def get_limits(request: Request) -> Response:
        return json_response(current())

    async def put_limits(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            body = None
        updated = update(body)
        if isinstance(updated, str):
            return error_response(400, updated)
        return json_response(updated)

    return [Route(path, get_limits, methods=["GET"]), Route(path, put_limits, methods=["PUT"])]


async def sleep_for(decision: PollDecision) -> None:
    """Honour ``slow``: delay without blocking the event loop (other runs keep being served)."""
    if decision.delay > 0:
        await asyncio.sleep(decision.delay)


def bearer_token(request: Request) -> str | None:
    """The key from ``Authorization: Bearer <key>``; None if missing, empty or another scheme."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


async def read_json(request: Request) -> Any:
    """The parsed JSON body, or :data:`NotImplemented` if it is not JSON (vendors then answer 400)."""
    raw = await request.body()
    if not raw:
        return NotImplemented
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return NotImplemented


def start_scenario(state: EmulatorState, request: Request, texts: Iterable[str]) -> Scenario:
    """The scenario of a run being started: header, else the first directive in ``texts``, else the default.

    Raises :class:`~airflow_provider_runwatch.emulator.scenario.ScenarioError` (answer 400 with its text).
    """
    header = request.headers.get(SCENARIO_HEADER)
    if header is not None and header.strip():
        scenario = parse_spec(header)
    else:
        scenario = None
        for text in texts:
            scenario = parse_scenario(text, allow_bare=False)
            if scenario is not None:
                break
    return state.scenario_or_default(scenario)


async def send_slowly(send: Any, message: MutableMapping[str, Any], scenario: Scenario) -> None:
    """Send a response body as ``trickle`` (one byte every ``trickle`` seconds) or ``stall`` (half, a pause of
    ``stall`` seconds, the rest) ask, and mark a head for ``trickle_head`` (the server's connection sends a marked
    head one byte at a time: :class:`~airflow_provider_runwatch.emulator.serving.HeadTrickle`); other messages,
    and scenarios with none of them, go out as they are."""
    if message.get("type") == "http.response.start" and scenario.trickle_head:
        marker = (TRICKLE_HEAD_HEADER, f"{scenario.trickle_head:g}".encode())
        await send({**message, "headers": [*message.get("headers", ()), marker]})
        return
    body: bytes = message.get("body", b"")
    more = bool(message.get("more_body", False))
    if message.get("type") != "http.response.body" or not body or not (scenario.trickle or scenario.stall):
        await send(message)
        return
    if scenario.trickle:
        for index in range(len(body)):
            await send({"type": "http.response.body", "body": body[index : index + 1], "more_body": True})
            await asyncio.sleep(scenario.trickle)
        await send({"type": "http.response.body", "body": b"", "more_body": more})
        return
    half = len(body) // 2
    await send({"type": "http.response.body", "body": body[:half], "more_body": True})
    await asyncio.sleep(scenario.stall)
    await send({"type": "http.response.body", "body": body[half:], "more_body": more})
