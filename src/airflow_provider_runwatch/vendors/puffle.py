"""Puffle agent chat runs (``POST /api/agent/chat`` + ``GET /api/agent/chat/{runId}``), sans-I/O.

Puffle documents no cancel and no run page, so the adapter offers neither.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from airflow_provider_runwatch.core.adapter import RunAdapter, RunResult
from airflow_provider_runwatch.core.calls import ApiRequest, Call
from airflow_provider_runwatch.core.connection import ConnectionSettings, VendorSpec
from airflow_provider_runwatch.core.errors import ConfigurationError
from airflow_provider_runwatch.core.models import RunState, RunStatus, RunSummary, VendorModel, parse_model

PUFFLE = VendorSpec(
    name="puffle",
    display_name="Puffle",
    conn_type="puffle",
    default_conn_id="puffle_default",
    default_base_url="https://app.puffle.ai",
)

STATES: dict[str, RunState] = {
    "queued": RunState.QUEUED,
    "running": RunState.RUNNING,
    "completed": RunState.SUCCEEDED,
    "failed": RunState.FAILED,
    "cancelled": RunState.CANCELLED,
}

START_ENDPOINT = "POST /api/agent/chat"
STATUS_ENDPOINT = "GET /api/agent/chat/{runId}"


class PuffleChatStarted(VendorModel):
    runId: str
    status: str = "queued"
    conversationId: str | None = None


class PuffleChatRun(VendorModel):
    """A chat run as ``GET /api/agent/chat/{runId}`` returns it; text/messages/toolCalls only when done."""

    runId: str
    status: str
    text: str | None = None
    messages: list[Any] | None = None
    toolCalls: list[Any] | None = None
    error: str | None = None
    conversationId: str | None = None

    @property
    def state(self) -> RunState:
        return STATES.get(self.status, RunState.RUNNING)

    def tool_names(self) -> list[str]:
        names = []
        for call in self.toolCalls or []:
            if isinstance(call, dict):
                names.append(str(call.get("toolName") or call.get("name") or "?"))
        return names


def validate_run_id(run_id: str) -> str:
    """Puffle answers 400 to ids without the ``run_`` prefix; say so before sending anything."""
    if not isinstance(run_id, str) or not run_id.strip().startswith("run_"):
        raise ConfigurationError(f"Puffle run ids start with 'run_'; got {run_id!r}")
    return run_id.strip()


def start_chat(
    message: str, history: Sequence[Any] | None = None, conversation_id: str | None = None
) -> Call[PuffleChatStarted]:
    """Build the start call after checking every input the API would refuse."""
    if not isinstance(message, str) or not message.strip():
        raise ConfigurationError("Puffle message must be a non-empty string")
    body: dict[str, Any] = {"message": message}
    if history:
        if not isinstance(history, (list, tuple)):
            raise ConfigurationError(
                f"Puffle history must be a list of {{role, content}} items, got {type(history).__name__}"
            )
        for index, item in enumerate(history):
            if not (
                isinstance(item, dict) and isinstance(item.get("role"), str) and isinstance(item.get("content"), str)
            ):
                raise ConfigurationError(
                    f"Puffle history item {index} must be {{'role': str, 'content': str}}, got {item!r}"
                )
        body["history"] = [{"role": item["role"], "content": item["content"]} for item in history]
    if conversation_id:
        try:
            body["conversationId"] = str(uuid.UUID(str(conversation_id)))
        except ValueError:
            raise ConfigurationError(f"Puffle conversation_id must be a UUID, got {conversation_id!r}") from None
    return Call(
        ApiRequest("POST", "/api/agent/chat", START_ENDPOINT, json=body),
        lambda payload: parse_model(PuffleChatStarted, payload, vendor=PUFFLE.display_name, endpoint=START_ENDPOINT),
    )


def get_chat_run(run_id: str) -> Call[PuffleChatRun]:
    run_id = validate_run_id(run_id)
    return Call(
        ApiRequest("GET", f"/api/agent/chat/{run_id}", STATUS_ENDPOINT),
        lambda payload: parse_model(PuffleChatRun, payload, vendor=PUFFLE.display_name, endpoint=STATUS_ENDPOINT),
    )


def to_status(run: PuffleChatRun) -> RunStatus:
    return RunStatus(
        vendor=PUFFLE.display_name,
        run_id=run.runId,
        state=run.state,
        vendor_state=run.status,
        error=run.error,
        unknown_state=run.status not in STATES,
    )


def to_result(run: PuffleChatRun) -> RunResult:
    status = to_status(run)
    summary = RunSummary(
        vendor=PUFFLE.display_name,
        run_id=run.runId,
        state=status.state,
        vendor_state=run.status,
        tool_calls=run.tool_names(),
        extra={"conversation_id": run.conversationId} if run.conversationId else {},
    )
    return RunResult(status=status, answer=run.text, messages=run.messages, summary=summary)


class PuffleChatRuns(RunAdapter):
    vendor = PUFFLE
    noun = "chat run"

    def validate_run_id(self, run_id: str) -> str:
        return validate_run_id(run_id)

    def status_call(self, settings: ConnectionSettings, run_id: str) -> Call[RunStatus]:
        return get_chat_run(run_id).map(to_status)

    def result_call(self, settings: ConnectionSettings, run_id: str) -> Call[RunResult]:
        return get_chat_run(run_id).map(to_result)


CHAT_RUNS = PuffleChatRuns()
