"""Gumloop (vendor-apis.md section 1), sans-I/O: request builders, payload models, state maps, adapters.

Three kinds of runs share one connection:

- **agent interactions** (legacy ``POST /start_agent`` + ``GET /agent_status/{interaction_id}``): no cancel;
- **agent sessions** (``POST /agents/{agent_id}/sessions`` + ``GET /sessions/{session_id}``): client-chosen
  ``session_id`` (the only idempotency key Gumloop offers), cancel, approvals, cursor-paged listing;
- **flows** (legacy ``POST /start_pipeline`` + ``GET /get_pl_run``): cancel via ``kill_pipeline``.

Auth: ``Authorization: Bearer <key>`` always (added by the hook). A personal key also needs the user id as
``x-auth-key`` on the agents/sessions API (connection Login); a team key needs ``?team_id=`` on every request
(connection extra ``team_id``, added by the hook to every request). The legacy endpoints identify the account
with ``user_id`` (Login) and/or ``project_id`` (extra), in the body of a POST and the query of a GET.

Every builder takes the :class:`ConnectionSettings` first, so the same pure function serves the worker's
blocking client and the triggerer's asyncio client.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, TypedDict, Unpack
from urllib.parse import quote

from pydantic import BeforeValidator, Field

from airflow_provider_runwatch.core.adapter import RunAdapter, RunResult
from airflow_provider_runwatch.core.calls import ApiRequest, Call
from airflow_provider_runwatch.core.checks import whole_number
from airflow_provider_runwatch.core.connection import ConnectionSettings, VendorSpec
from airflow_provider_runwatch.core.errors import ConfigurationError, shorten
from airflow_provider_runwatch.core.models import (
    RunState,
    RunStatus,
    RunSummary,
    VendorModel,
    as_utc,
    parse_model,
)

GUMLOOP = VendorSpec(
    name="gumloop",
    display_name="Gumloop",
    conn_type="gumloop",
    default_conn_id="gumloop_default",
    default_base_url="https://api.gumloop.com/api/v1",
)

#: ``page_size`` bounds of ``GET /agents/{agent_id}/sessions``.
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
SORT_ORDERS = ("newest", "oldest")
#: Prefix of the session ids this provider derives (readable in Gumloop's UI and logs).
DERIVED_SESSION_PREFIX = "sess_airflow_"
#: What a client-chosen session id may contain; ours are ``sess_airflow_`` + 32 hex digits.
SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

IDLE_ERROR = "session is idle: it was created without input, so nothing ran"

# -- endpoints (templates, used in messages and logs) ------------------------------------------------------------
START_AGENT = "POST /start_agent"
AGENT_STATUS = "GET /agent_status/{interaction_id}"
CREATE_SESSION = "POST /agents/{agent_id}/sessions"
GET_SESSION = "GET /sessions/{session_id}"
CANCEL_SESSION = "POST /sessions/{session_id}/cancel"
SESSION_APPROVALS = "POST /sessions/{session_id}/approvals"
LIST_SESSIONS = "GET /agents/{agent_id}/sessions"
START_PIPELINE = "POST /start_pipeline"
GET_PL_RUN = "GET /get_pl_run"
KILL_PIPELINE = "POST /kill_pipeline"

# -- state maps ---------------------------------------------------------------------------------------------------
INTERACTION_STATES: dict[str, RunState] = {
    "ASYNC_PROCESSING": RunState.RUNNING,
    "COMPLETED": RunState.SUCCEEDED,
    "FAILED": RunState.FAILED,
}
SESSION_STATES: dict[str, RunState] = {
    "queued": RunState.QUEUED,
    "processing": RunState.RUNNING,
    "completed": RunState.SUCCEEDED,
    "failed": RunState.FAILED,
    "cancelled": RunState.CANCELLED,
    # Nothing ever ran (created without input): waiting would never end, so it is a failure.
    "idle": RunState.FAILED,
    # Paused for a human: the operator's ``on_approval_required`` decides what happens.
    "approval_required": RunState.PAUSED,
}
#: The docs disagree on flow states; the tolerant reading: only DONE succeeds, FAILED/TERMINATED fail,
#: everything else (TERMINATING on its way to TERMINATED included) keeps the wait going.
FLOW_STATES: dict[str, RunState] = {
    "DONE": RunState.SUCCEEDED,
    "FAILED": RunState.FAILED,
    "TERMINATED": RunState.FAILED,
    "TERMINATING": RunState.RUNNING,
    "QUEUED": RunState.RUNNING,
    "STARTED": RunState.RUNNING,
    "RUNNING": RunState.RUNNING,
}

#: Timestamps parsed as UTC even without an offset (Gumloop's message timestamps are naive).
UtcDatetime = Annotated[datetime | None, BeforeValidator(as_utc)]


# -- models ---------------------------------------------------------------------------------------------------------
class GumloopToolResult(VendorModel):
    """``result`` of a ``tool_invocation`` part: the call's ``args`` and the tool's ``result``."""

    args: Any = None
    result: Any = None


class GumloopPart(VendorModel):
    """One part of an assistant message. Documented types: ``text``, ``tool_invocation``, ``reasoning``,
    ``file``, ``error``; any other type, and any other field, is kept as it came."""

    id: str | None = None
    type: str | None = None
    text: str | None = None
    reasoning: Any = None
    toolCallId: str | None = None
    toolName: str | None = None
    toolCallState: str | None = None
    #: ``{args, result}`` for a tool invocation; any other shape is kept as it came.
    result: GumloopToolResult | Any = None
    error: Any = None
    file: Any = None


class GumloopMessage(VendorModel):
    """A conversation message: a user message has ``content`` and empty ``parts``; an assistant message has
    ``parts`` and usually a null ``content``."""

    id: str | None = None
    role: str | None = None
    timestamp: UtcDatetime = None
    content: Any = None
    parts: list[GumloopPart] = Field(default_factory=list)

    def text(self) -> str | None:
        """The message's text: ``content`` when it is a string, else its ``text`` parts joined."""
        if isinstance(self.content, str):
            return self.content
        texts = [part.text for part in self.parts if part.type == "text" and isinstance(part.text, str)]
        return "\n".join(texts) if texts else None

    def tool_names(self) -> list[str]:
        return [part.toolName or "?" for part in self.parts if part.type == "tool_invocation"]

    def error_texts(self) -> list[str]:
        return [str(part.error) for part in self.parts if part.type == "error" and part.error]


def last_assistant_text(messages: Sequence[GumloopMessage] | None) -> str | None:
    """The text of the last assistant message that has any (content, or its text parts when null)."""
    for message in reversed(messages or []):
        if message.role == "assistant":
            text = message.text()
            if text is not None:
                return text
    return None


def tool_names(messages: Sequence[GumloopMessage] | None) -> list[str]:
    names: list[str] = []
    for message in messages or []:
        names.extend(message.tool_names())
    return names


class GumloopInteractionStarted(VendorModel):
    interaction_id: str
    status: str | None = None


class GumloopInteraction(VendorModel):
    """``GET /agent_status/{interaction_id}``: 200 for every state, failed runs included."""

    interaction_id: str
    gummie_id: str | None = None
    state: str
    created_ts: UtcDatetime = None
    messages: list[GumloopMessage] | None = None
    response: str | None = None
    error_message: str | None = None

    def final_text(self) -> str | None:
        """``response`` (the final assistant text), else the last assistant message's text."""
        return self.response if self.response is not None else last_assistant_text(self.messages)


class GumloopUsage(VendorModel):
    credit_cost: float | None = None
    tool_credit_cost: float | None = None
    flow_credit_cost: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


class GumloopSession(VendorModel):
    """A session as ``GET /sessions/{id}`` returns it (list items carry no ``messages``)."""

    id: str
    agent_id: str | None = None
    name: str | None = None
    type: str | None = None
    state: str
    messages: list[GumloopMessage] | None = None
    created_at: UtcDatetime = None
    agent_name: str | None = None
    creator: dict[str, Any] | None = None
    usage: GumloopUsage | None = None
    pending_approvals: list[Any] | None = None

    def final_text(self) -> str | None:
        """The last assistant message's ``content``, or its text parts joined when ``content`` is null."""
        return last_assistant_text(self.messages)

    def error_text(self) -> str | None:
        """Why a session failed: an ``error`` field if the vendor sends one, else the error parts."""
        extra = self.model_extra or {}
        err = extra.get("error")
        if isinstance(err, dict):
            err = err.get("message") or err
        if err:
            return str(err)
        for message in reversed(self.messages or []):
            errors = message.error_texts()
            if errors:
                return "; ".join(errors)
        return None


class GumloopSessionEnvelope(VendorModel):
    """``{session, queue_position}``: the answer of create and get."""

    session: GumloopSession
    queue_position: int | None = None


class GumloopSessionPage(VendorModel):
    sessions: list[GumloopSession] = Field(default_factory=list)
    next_cursor: str | None = None


class GumloopFlowStarted(VendorModel):
    run_id: str
    saved_item_id: str | None = None
    url: str | None = None


class GumloopFlowRun(VendorModel):
    """``GET /get_pl_run``: ``{state, outputs, log, created_ts, finished_ts}``."""

    run_id: str | None = None
    state: str
    outputs: dict[str, Any] | None = None
    log: list[Any] | None = None
    created_ts: UtcDatetime = None
    finished_ts: UtcDatetime = None

    def error_text(self) -> str | None:
        extra = self.model_extra or {}
        for key in ("error", "error_message"):
            if extra.get(key):
                return str(extra[key])
        lines = [str(line) for line in self.log or [] if line]
        flagged = [line for line in lines if "error" in line.lower() or "fail" in line.lower()]
        if flagged:
            return flagged[-1]
        return lines[-1] if lines else None


class GumloopKillResult(VendorModel):
    success: bool | None = None
    run_id: str | None = None


# -- identity and validation -------------------------------------------------------------------------------------
def _where(settings: ConnectionSettings) -> str:
    return f"Gumloop connection '{settings.conn_id}'"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def legacy_identity(
    settings: ConnectionSettings, user_id: str | None = None, project_id: str | None = None, *, endpoint: str
) -> dict[str, str]:
    """``user_id`` and/or ``project_id`` for a legacy endpoint: the overrides, else the connection's."""
    identity = {
        "user_id": _text(user_id) or settings.login,
        "project_id": _text(project_id) or settings.extra_str("project_id"),
    }
    found = {key: value for key, value in identity.items() if value}
    if not found:
        raise ConfigurationError(
            f"{_where(settings)}: {endpoint} needs a user_id or a project_id; put your Gumloop user id in the "
            "Login field or a project_id in the extra (or pass user_id/project_id to the task)"
        )
    return found


def session_headers(settings: ConnectionSettings) -> dict[str, str]:
    """``x-auth-key: <user id>`` for the agents/sessions API. A team key (extra ``team_id``) is identified by
    ``?team_id=`` instead (added by the hook to every request), so the header is then optional."""
    if settings.login:
        return {"x-auth-key": settings.login}
    if settings.extra_str("team_id"):
        return {}
    raise ConfigurationError(
        f"{_where(settings)}: the agents/sessions API needs your Gumloop user id in the Login field (sent as "
        "x-auth-key) for a personal API key, or extra team_id for a team API key"
    )


def _required(value: Any, name: str) -> str:
    text = _text(value)
    if text is None:
        raise ConfigurationError(f"Gumloop {name} must be a non-empty string, got {value!r}")
    return text


def _path_id(value: Any, name: str) -> str:
    """An id that goes into a URL path: non-empty, no slash, percent-encoded."""
    text = _required(value, name)
    if "/" in text:
        raise ConfigurationError(f"Gumloop {name} must not contain '/', got {value!r}")
    return quote(text, safe="")


def validate_session_id(session_id: Any) -> str:
    text = _required(session_id, "session_id")
    if not SESSION_ID_PATTERN.match(text):
        raise ConfigurationError(
            f"Gumloop session_id may contain only letters, digits, '_' and '-' (1-128 characters), got {session_id!r}"
        )
    return text


def derive_session_id(dag_id: str, task_id: str, run_id: str, map_index: int = -1, generation: int = 0) -> str:
    """The deterministic session id of one task instance: ``sess_airflow_`` + 32 hex digits of a sha256.

    Every try of a task instance derives the same id, so a retry's create call answers 409
    ``session_already_exists`` and reattaches instead of starting a second session. ``generation`` moves
    to a fresh id once the session of an earlier try is over (failed, cancelled, or a clear after success).
    """
    material = "\x1f".join([dag_id, task_id, run_id, str(int(map_index))])
    if generation:
        material += f"\x1f{int(generation)}"
    return DERIVED_SESSION_PREFIX + hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def derive_batch_session_id(
    dag_id: str, task_id: str, run_id: str, map_index: int, item: int, generation: int = 0, attempt: int = 0
) -> str:
    """The deterministic session id of item ``item`` of a batch task instance (``sess_airflow_`` + 32 hex).

    Every try derives the same id for the same item, so a retry's create call answers 409 and reattaches, on
    any Airflow version. ``generation`` moves to fresh ids once the whole batch succeeded (a later clear);
    ``attempt`` once the item's earlier session is over (failed or cancelled) and the item starts again.
    """
    parts = [
        dag_id,
        task_id,
        run_id,
        str(int(map_index)),
        "batch",
        str(int(item)),
        str(int(generation)),
        str(int(attempt)),
    ]
    material = "\x1f".join(parts)
    return DERIVED_SESSION_PREFIX + hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _model(model: type[Any], endpoint: str) -> Any:
    return lambda payload: parse_model(model, payload, vendor=GUMLOOP.display_name, endpoint=endpoint)


# -- agent interactions (legacy) -----------------------------------------------------------------------------------
def start_agent(
    settings: ConnectionSettings,
    gummie_id: str,
    message: str,
    *,
    user_id: str | None = None,
    project_id: str | None = None,
    interaction_id: str | None = None,
) -> Call[GumloopInteractionStarted]:
    """``POST /start_agent``: ``interaction_id`` continues an earlier, terminal conversation."""
    body: dict[str, Any] = {
        "gummie_id": _required(gummie_id, "agent_id (gummie_id)"),
        "message": _required(message, "message"),
        **legacy_identity(settings, user_id, project_id, endpoint=START_AGENT),
    }
    if _text(interaction_id):
        body["interaction_id"] = _text(interaction_id)
    return Call(
        ApiRequest("POST", "/start_agent", START_AGENT, json=body), _model(GumloopInteractionStarted, START_AGENT)
    )


def agent_status(
    settings: ConnectionSettings, interaction_id: str, *, user_id: str | None = None, project_id: str | None = None
) -> Call[GumloopInteraction]:
    path = f"/agent_status/{_path_id(interaction_id, 'interaction_id')}"
    params = legacy_identity(settings, user_id, project_id, endpoint=AGENT_STATUS)
    return Call(ApiRequest("GET", path, AGENT_STATUS, params=params), _model(GumloopInteraction, AGENT_STATUS))


# -- agent sessions ---------------------------------------------------------------------------------------------
def create_session(
    settings: ConnectionSettings,
    agent_id: str,
    input: str,
    *,
    session_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Call[GumloopSessionEnvelope]:
    """``POST /agents/{agent_id}/sessions``. An empty ``input`` would only create an idle stub, so it is
    refused here; ``stream`` is never sent (this host refuses it)."""
    body: dict[str, Any] = {"input": _required(input, "input")}
    if session_id is not None:
        body["session_id"] = validate_session_id(session_id)
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise ConfigurationError(f"Gumloop metadata must be a JSON object, got {type(metadata).__name__}")
        body["metadata"] = dict(metadata)
    path = f"/agents/{_path_id(agent_id, 'agent_id')}/sessions"
    return Call(
        ApiRequest("POST", path, CREATE_SESSION, json=body, headers=session_headers(settings)),
        _model(GumloopSessionEnvelope, CREATE_SESSION),
    )


def get_session(settings: ConnectionSettings, session_id: str) -> Call[GumloopSessionEnvelope]:
    path = f"/sessions/{_path_id(session_id, 'session_id')}"
    return Call(
        ApiRequest("GET", path, GET_SESSION, headers=session_headers(settings)),
        _model(GumloopSessionEnvelope, GET_SESSION),
    )


def cancel_session(settings: ConnectionSettings, session_id: str) -> Call[Any]:
    """``POST /sessions/{id}/cancel`` with ``{}``; the session settles as failed (or cancelled) eventually."""
    path = f"/sessions/{_path_id(session_id, 'session_id')}/cancel"
    return Call(
        ApiRequest("POST", path, CANCEL_SESSION, json={}, headers=session_headers(settings)),
        lambda payload: payload,
    )


def submit_approvals(
    settings: ConnectionSettings, session_id: str, approval_responses: Sequence[Mapping[str, Any]]
) -> Call[Any]:
    """``POST /sessions/{id}/approvals`` with ``[{action_request_id, action: accept|reject, ...}]``."""
    responses = [dict(item) for item in approval_responses]
    for index, item in enumerate(responses):
        if not _text(item.get("action_request_id")) or item.get("action") not in ("accept", "reject"):
            raise ConfigurationError(
                f"Gumloop approval response {index} needs action_request_id and action 'accept' or 'reject', "
                f"got {item!r}"
            )
    path = f"/sessions/{_path_id(session_id, 'session_id')}/approvals"
    return Call(
        ApiRequest(
            "POST", path, SESSION_APPROVALS, json={"approval_responses": responses}, headers=session_headers(settings)
        ),
        lambda payload: payload,
    )


class SessionFilters(TypedDict, total=False):
    """The filters of ``GET /agents/{agent_id}/sessions``, as keyword arguments of the hook's ``list_sessions``,
    ``iter_sessions`` and ``aiter_sessions``: one definition, so the three cannot drift apart. ``None`` (and
    blank) filters are left out of the request."""

    #: Sessions per page, 1-100.
    page_size: int | None
    #: Free-text search over the sessions.
    search: str | None
    #: ``"newest"`` or ``"oldest"``.
    sort_order: str | None
    type: str | None
    state: str | None
    creator_user_id: str | None
    trigger_id: str | None


#: The filters sent as text (all but ``page_size``), read off :class:`SessionFilters`, in its order.
_TEXT_FILTERS = tuple(name for name in SessionFilters.__annotations__ if name != "page_size")


def list_sessions(
    settings: ConnectionSettings, agent_id: str, *, cursor: str | None = None, **filters: Unpack[SessionFilters]
) -> Call[GumloopSessionPage]:
    """One page of ``GET /agents/{agent_id}/sessions``. ``None`` (and blank) filters are dropped entirely:
    the backend treats ``?x=`` differently from no ``x``."""
    unknown = sorted(set(filters) - SessionFilters.__optional_keys__)
    if unknown:
        raise ConfigurationError(
            f"Gumloop session listing got unknown filter(s) {', '.join(unknown)}; "
            f"the filters are {', '.join(SessionFilters.__annotations__)}"
        )
    page_size = filters.get("page_size")
    if page_size is not None:
        page_size = whole_number(page_size, "Gumloop page_size", maximum=MAX_PAGE_SIZE)
    sort_order = _text(filters.get("sort_order"))
    if sort_order is not None and sort_order not in SORT_ORDERS:
        raise ConfigurationError(f"Gumloop sort_order must be 'newest' or 'oldest', got {filters.get('sort_order')!r}")
    params: dict[str, Any] = {"page_size": page_size, "cursor": _text(cursor)}
    params.update((name, _text(filters.get(name))) for name in _TEXT_FILTERS)
    path = f"/agents/{_path_id(agent_id, 'agent_id')}/sessions"
    return Call(
        ApiRequest(
            "GET",
            path,
            LIST_SESSIONS,
            params={key: value for key, value in params.items() if value is not None},
            headers=session_headers(settings),
        ),
        _model(GumloopSessionPage, LIST_SESSIONS),
    )


# -- flows (legacy) ---------------------------------------------------------------------------------------------
def pipeline_inputs(inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """``{"name": value}`` (or an already built ``[{input_name, value}]``) as ``pipeline_inputs``."""
    if inputs is None:
        return []
    if isinstance(inputs, Mapping):
        return [{"input_name": str(name), "value": value} for name, value in inputs.items()]
    if isinstance(inputs, (list, tuple)):
        items = []
        for index, item in enumerate(inputs):
            if not (isinstance(item, Mapping) and _text(item.get("input_name")) and "value" in item):
                raise ConfigurationError(f"Gumloop pipeline input {index} must be {{input_name, value}}, got {item!r}")
            items.append({"input_name": str(item["input_name"]), "value": item["value"]})
        return items
    raise ConfigurationError(f"Gumloop flow inputs must be a dict of input name -> value, got {type(inputs).__name__}")


def start_pipeline(
    settings: ConnectionSettings,
    saved_item_id: str,
    inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    *,
    user_id: str | None = None,
    project_id: str | None = None,
) -> Call[GumloopFlowStarted]:
    body: dict[str, Any] = {
        **legacy_identity(settings, user_id, project_id, endpoint=START_PIPELINE),
        "saved_item_id": _required(saved_item_id, "flow_id (saved_item_id)"),
        "pipeline_inputs": pipeline_inputs(inputs),
    }
    return Call(
        ApiRequest("POST", "/start_pipeline", START_PIPELINE, json=body), _model(GumloopFlowStarted, START_PIPELINE)
    )


def get_pl_run(
    settings: ConnectionSettings, run_id: str, *, user_id: str | None = None, project_id: str | None = None
) -> Call[GumloopFlowRun]:
    params = {
        "run_id": _required(run_id, "flow run_id"),
        **legacy_identity(settings, user_id, project_id, endpoint=GET_PL_RUN),
    }
    return Call(ApiRequest("GET", "/get_pl_run", GET_PL_RUN, params=params), _model(GumloopFlowRun, GET_PL_RUN))


def kill_pipeline(
    settings: ConnectionSettings, run_id: str, *, user_id: str | None = None, project_id: str | None = None
) -> Call[GumloopKillResult]:
    body = {
        "run_id": _required(run_id, "flow run_id"),
        **legacy_identity(settings, user_id, project_id, endpoint=KILL_PIPELINE),
    }
    return Call(
        ApiRequest("POST", "/kill_pipeline", KILL_PIPELINE, json=body), _model(GumloopKillResult, KILL_PIPELINE)
    )


# -- payload -> normalized ----------------------------------------------------------------------------------------
def _duration(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _raw_messages(payload: Any, *path: str) -> Any:
    """The conversation exactly as the vendor sent it (unknown parts and fields untouched)."""
    node = payload
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def interaction_status(run: GumloopInteraction) -> RunStatus:
    return RunStatus(
        vendor=GUMLOOP.display_name,
        run_id=run.interaction_id,
        state=INTERACTION_STATES.get(run.state, RunState.RUNNING),
        vendor_state=run.state,
        error=run.error_message,
        unknown_state=run.state not in INTERACTION_STATES,
    )


def interaction_result(run: GumloopInteraction, payload: Any = None) -> RunResult:
    status = interaction_status(run)
    last = next((m.timestamp for m in reversed(run.messages or []) if m.timestamp is not None), None)
    summary = RunSummary(
        vendor=GUMLOOP.display_name,
        run_id=run.interaction_id,
        state=status.state,
        vendor_state=run.state,
        created_at=run.created_ts,
        finished_at=last if status.state.terminal else None,
        duration_seconds=_duration(run.created_ts, last) if status.state.terminal else None,
        tool_calls=tool_names(run.messages),
        extra={"gummie_id": run.gummie_id} if run.gummie_id else {},
    )
    messages = _raw_messages(payload, "messages") if payload is not None else None
    return RunResult(status=status, answer=run.final_text(), messages=messages, summary=summary)


def session_status(envelope: GumloopSessionEnvelope) -> RunStatus:
    session = envelope.session
    state = SESSION_STATES.get(session.state, RunState.RUNNING)
    error: str | None = None
    if session.state == "idle":
        error = IDLE_ERROR
    elif state in (RunState.FAILED, RunState.CANCELLED):
        error = session.error_text()
    elif state is RunState.PAUSED:
        error = describe_approvals(session.pending_approvals)
    return RunStatus(
        vendor=GUMLOOP.display_name,
        run_id=session.id,
        state=state,
        vendor_state=session.state,
        error=error,
        queue_position=envelope.queue_position,
        unknown_state=session.state not in SESSION_STATES,
    )


_SESSION_RUNNING_STATES = frozenset({"queued", "processing"})


def session_poll_status(payload: Any) -> RunStatus:
    """The trigger's per-poll parse. A session still queued or processing needs only its id, state and queue
    position, so those are read without validating the whole session (messages, usage) with pydantic, the
    bulk of the CPU of a poll; anything else (terminal, paused, odd shapes) goes through the full model."""
    session = payload.get("session") if isinstance(payload, dict) else None
    if isinstance(session, dict):
        state, session_id = session.get("state"), session.get("id")
        if state in _SESSION_RUNNING_STATES and isinstance(session_id, str):
            position = payload.get("queue_position")
            return RunStatus(
                vendor=GUMLOOP.display_name,
                run_id=session_id,
                state=SESSION_STATES[state],
                vendor_state=state,
                queue_position=position if isinstance(position, int) else None,
            )
    return session_status(_model(GumloopSessionEnvelope, GET_SESSION)(payload))


def session_summary(envelope: GumloopSessionEnvelope) -> RunSummary:
    session = envelope.session
    status = session_status(envelope)
    last = next((m.timestamp for m in reversed(session.messages or []) if m.timestamp is not None), None)
    usage = session.usage
    cost = None
    tokens = None
    if usage is not None:
        cost = {
            key: value
            for key, value in usage.model_dump(include={"credit_cost", "tool_credit_cost", "flow_credit_cost"}).items()
            if value is not None
        } or None
        tokens = {
            key: value
            for key, value in usage.model_dump(include={"input_tokens", "output_tokens"}).items()
            if value is not None
        } or None
    extra: dict[str, Any] = {
        key: value
        for key, value in {
            "agent_id": session.agent_id,
            "agent_name": session.agent_name,
            "session_name": session.name,
            "type": session.type,
        }.items()
        if value
    }
    if session.pending_approvals:
        extra["pending_approvals"] = len(session.pending_approvals)
    return RunSummary(
        vendor=GUMLOOP.display_name,
        run_id=session.id,
        state=status.state,
        vendor_state=session.state,
        created_at=session.created_at,
        finished_at=last if status.state.terminal else None,
        duration_seconds=_duration(session.created_at, last) if status.state.terminal else None,
        cost=cost,
        usage=tokens,
        tool_calls=tool_names(session.messages),
        extra=extra,
    )


def session_result(envelope: GumloopSessionEnvelope, payload: Any = None) -> RunResult:
    messages = _raw_messages(payload, "session", "messages") if payload is not None else None
    return RunResult(
        status=session_status(envelope),
        answer=envelope.session.final_text(),
        messages=messages,
        summary=session_summary(envelope),
    )


def paused_session(settings: ConnectionSettings, session_id: str) -> Call[tuple[RunResult, list[Any]]]:
    """A paused session's result so far and its ``pending_approvals`` exactly as Gumloop sent them."""
    call = get_session(settings, session_id)

    def parse(payload: Any) -> tuple[RunResult, list[Any]]:
        result = session_result(call.parse(payload), payload)
        pending = _raw_messages(payload, "session", "pending_approvals")
        return result, list(pending) if isinstance(pending, list) else []

    return Call(call.request, parse)


def describe_approvals(pending: Sequence[Any] | None, limit: int = 5) -> str:
    """``2 pending approvals: send_email (act_1), update_crm (act_2)`` - for logs and failure lines."""
    items = list(pending or [])
    if not items:
        return "waiting for an approval"
    described = []
    for item in items[:limit]:
        if isinstance(item, Mapping):
            name = item.get("tool_name") or item.get("toolName") or item.get("name") or item.get("action") or "action"
            ident = item.get("action_request_id") or item.get("id")
            described.append(f"{name} ({ident})" if ident else str(name))
        else:
            described.append(shorten(str(item), 80))
    more = f", and {len(items) - limit} more" if len(items) > limit else ""
    noun = "approval" if len(items) == 1 else "approvals"
    return f"{len(items)} pending {noun}: {', '.join(described)}{more}"


def flow_status(run: GumloopFlowRun, run_id: str) -> RunStatus:
    state = FLOW_STATES.get(run.state, RunState.RUNNING)
    return RunStatus(
        vendor=GUMLOOP.display_name,
        run_id=run.run_id or run_id,
        state=state,
        vendor_state=run.state,
        error=run.error_text() if state is RunState.FAILED else None,
        unknown_state=run.state not in FLOW_STATES,
    )


def flow_result(run: GumloopFlowRun, run_id: str) -> RunResult:
    status = flow_status(run, run_id)
    extra: dict[str, Any] = {}
    if run.log:
        extra["log_lines"] = len(run.log)
        extra["log_tail"] = [shorten(str(line), 200) for line in run.log[-3:]]
    saved_item = (run.model_extra or {}).get("saved_item_id")
    if saved_item:
        extra["saved_item_id"] = saved_item
    summary = RunSummary(
        vendor=GUMLOOP.display_name,
        run_id=status.run_id,
        state=status.state,
        vendor_state=run.state,
        created_at=run.created_ts,
        finished_at=run.finished_ts,
        duration_seconds=_duration(run.created_ts, run.finished_ts),
        url=_text((run.model_extra or {}).get("url")),
        extra=extra,
    )
    return RunResult(status=status, answer=run.outputs, messages=None, summary=summary)


# -- adapters -------------------------------------------------------------------------------------------------------
class GumloopInteractions(RunAdapter):
    """Agent interactions. Gumloop has no cancel for them. Bound to an identity when the task overrides the
    connection's user_id/project_id, so polls identify the account the same way the start did."""

    vendor = GUMLOOP
    noun = "agent interaction"

    def __init__(self, user_id: str | None = None, project_id: str | None = None) -> None:
        self.user_id = _text(user_id)
        self.project_id = _text(project_id)

    def with_identity(self, user_id: str | None = None, project_id: str | None = None) -> GumloopInteractions:
        if not (_text(user_id) or _text(project_id)):
            return self
        return GumloopInteractions(user_id, project_id)

    def _status(self, settings: ConnectionSettings, run_id: str) -> Call[GumloopInteraction]:
        return agent_status(settings, run_id, user_id=self.user_id, project_id=self.project_id)

    def status_call(self, settings: ConnectionSettings, run_id: str) -> Call[RunStatus]:
        return self._status(settings, run_id).map(interaction_status)

    def result_call(self, settings: ConnectionSettings, run_id: str) -> Call[RunResult]:
        call = self._status(settings, run_id)
        return Call(call.request, lambda payload: interaction_result(call.parse(payload), payload))


class GumloopSessions(RunAdapter):
    vendor = GUMLOOP
    noun = "session"
    cancel_supported = True

    def status_call(self, settings: ConnectionSettings, run_id: str) -> Call[RunStatus]:
        return Call(get_session(settings, run_id).request, session_poll_status)

    def result_call(self, settings: ConnectionSettings, run_id: str) -> Call[RunResult]:
        call = get_session(settings, run_id)
        return Call(call.request, lambda payload: session_result(call.parse(payload), payload))

    def cancel_call(self, settings: ConnectionSettings, run_id: str) -> Call[Any] | None:
        return cancel_session(settings, run_id)


class GumloopFlows(RunAdapter):
    vendor = GUMLOOP
    noun = "flow run"
    cancel_supported = True

    def status_call(self, settings: ConnectionSettings, run_id: str) -> Call[RunStatus]:
        return get_pl_run(settings, run_id).map(lambda run: flow_status(run, run_id))

    def result_call(self, settings: ConnectionSettings, run_id: str) -> Call[RunResult]:
        return get_pl_run(settings, run_id).map(lambda run: flow_result(run, run_id))

    def cancel_call(self, settings: ConnectionSettings, run_id: str) -> Call[Any] | None:
        return kill_pipeline(settings, run_id)


INTERACTIONS = GumloopInteractions()
SESSIONS = GumloopSessions()
FLOWS = GumloopFlows()
