"""Normalized run models shared by every vendor.

Each vendor reports its own state strings; the provider keeps them (``vendor_state``) and maps them to
one small :class:`RunState` so that operators, sensors and the polling core reason about every vendor
the same way. Unknown vendor states map to RUNNING: a new state string must never crash a six-hour
wait (the poller logs it once).
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

M = TypeVar("M", bound=BaseModel)


class RunState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"

    @property
    def terminal(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class VendorModel(BaseModel):
    """Base for vendor payload models: unknown fields are kept, never rejected."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


def parse_model(model: type[M], payload: Any, *, vendor: str, endpoint: str) -> M:
    """Validate a vendor payload, turning a shape error into a MalformedResponseError that names it."""
    from airflow_provider_runwatch.core.errors import MalformedResponseError

    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise MalformedResponseError(
            vendor=vendor, endpoint=endpoint, detail=f"unexpected payload shape at {where}: {first['msg']}"
        ) from None


def as_utc(value: Any) -> Any:
    """Parse timestamps as UTC even without an offset (Gumloop's are naive); pass junk through as None."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        # Epoch seconds, or milliseconds when implausibly large.
        return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, tz=timezone.utc)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class Progress(BaseModel):
    """Step progress of a run, when the vendor reports it (GloriaMundo)."""

    model_config = ConfigDict(extra="ignore")

    current_step: int | None = None
    total_steps: int | None = None
    current_step_name: str | None = None
    percentage: float | None = None

    def describe(self) -> str:
        parts = []
        if self.current_step is not None and self.total_steps:
            parts.append(f"step {self.current_step}/{self.total_steps}")
        if self.current_step_name:
            parts.append(self.current_step_name)
        if self.percentage is not None:
            parts.append(f"{self.percentage:g}%")
        return " ".join(parts)


class RunStatus(BaseModel):
    """What one poll learned, the same shape for every vendor."""

    vendor: str
    run_id: str
    state: RunState
    vendor_state: str
    error: str | None = None
    progress: Progress | None = None
    queue_position: int | None = None
    #: The vendor state string was not one we know; treated as running.
    unknown_state: bool = False


EventStatus = Literal["success", "failed", "cancelled", "paused", "timeout", "error"]


class RunEvent(BaseModel):
    """The payload of a trigger event, validated again when the operator resumes.

    It carries ids, states and a short error only: never a secret, never the conversation (the operator
    fetches the final result on the worker).
    """

    model_config = ConfigDict(extra="forbid")

    status: EventStatus
    vendor: str
    run_id: str
    state: RunState | None = None
    vendor_state: str | None = None
    message: str = ""
    #: The wait's absolute deadline (epoch seconds), handed back so a task that resumes to ask a human
    #: (Gumloop approvals) can defer again against the same deadline.
    deadline: float | None = None
    #: ``True`` when the wait ended because the failure budget was spent on transient errors: nobody saw
    #: the run end, so it may still be going (the one ``error`` after which the failure line says so).
    gave_up: bool = False

    @field_validator("message")
    @classmethod
    def _short(cls, value: str) -> str:
        from airflow_provider_runwatch.core.errors import shorten

        return shorten(value, 1000)


class RunSummary(BaseModel):
    """The compact ``run`` XCom: enough to audit a run without pulling the whole conversation."""

    vendor: str
    run_id: str
    state: RunState
    vendor_state: str
    created_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    cost: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    tool_calls: list[str] = Field(default_factory=list)
    progress: Progress | None = None
    url: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def to_xcom(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)
