"""GloriaMundo workflow runs (``POST /workflows/{workflow_id}/execute`` + ``GET /runs/{run_id}/status``),
sans-I/O: request builders, payload models, state mapping, and the errors that tell a user what to do.

GloriaMundo documents no cancel, no list and no run page, so the adapter offers none of them. Every
request names the per-key rate budget it draws from: ``execute`` (10/min documented) or ``poll``
(60/min documented); see :mod:`airflow_provider_runwatch.core.ratelimit`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import field_validator

from airflow_provider_runwatch.core.adapter import RunAdapter, RunResult
from airflow_provider_runwatch.core.calls import ApiRequest, Call
from airflow_provider_runwatch.core.connection import ConnectionSettings, VendorSpec
from airflow_provider_runwatch.core.errors import (
    AuthError,
    ClientError,
    ConfigurationError,
    NotFoundError,
    RateLimitedError,
    VendorAPIError,
    shorten,
)
from airflow_provider_runwatch.core.models import (
    Progress,
    RunState,
    RunStatus,
    RunSummary,
    VendorModel,
    as_utc,
    parse_model,
)

GLORIAMUNDO = VendorSpec(
    name="gloriamundo",
    display_name="GloriaMundo",
    conn_type="gloriamundo",
    default_conn_id="gloriamundo_default",
    default_base_url="https://app.gloriamundo.com/api/v1",
)

STATES: dict[str, RunState] = {
    "queued": RunState.QUEUED,
    "running": RunState.RUNNING,
    "completed": RunState.SUCCEEDED,
    "failed": RunState.FAILED,
}

EXECUTE_ENDPOINT = "POST /workflows/{workflow_id}/execute"
STATUS_ENDPOINT = "GET /runs/{run_id}/status"

#: Rate-budget buckets (``ApiRequest.bucket``).
EXECUTE_BUCKET = "execute"
POLL_BUCKET = "poll"

#: Documented per-key limits, and the defaults this provider stays under (a safe margin for clock skew,
#: network jitter and the odd request from elsewhere).
DOCUMENTED_POLLS_PER_MINUTE = 60
DOCUMENTED_EXECUTIONS_PER_MINUTE = 10
DEFAULT_POLLS_PER_MINUTE = 50
DEFAULT_EXECUTIONS_PER_MINUTE = 9

SPEND_LIMIT = "spend_limit_exceeded"

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


# -- payloads -------------------------------------------------------------------------------------------


class GloriaMundoProgress(Progress):
    """``progress{current_step, total_steps, current_step_name, percentage}``; logs as
    ``step 2/5 Generate content, 40%``."""

    def describe(self) -> str:
        head = " ".join(
            part
            for part in (
                f"step {self.current_step}/{self.total_steps}"
                if self.current_step is not None and self.total_steps
                else "",
                self.current_step_name or "",
            )
            if part
        )
        if self.percentage is None:
            return head
        percent = f"{self.percentage:g}%"
        return f"{head}, {percent}" if head else percent


class GloriaMundoExecution(VendorModel):
    """The answer to ``POST /workflows/{workflow_id}/execute``."""

    run_id: str
    status: str = "queued"
    poll_url: str | None = None


class GloriaMundoRun(VendorModel):
    """A run as ``GET /runs/{run_id}/status`` returns it. Unknown fields are kept; a progress, timestamp
    or cost the model cannot read is dropped (``None``) rather than failing a long wait."""

    run_id: str
    status: str
    progress: GloriaMundoProgress | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    result: Any = None
    cost_cents: int | float | None = None
    error: str | None = None

    @field_validator("progress", mode="before")
    @classmethod
    def _tolerant_progress(cls, value: Any) -> Any:
        if value is None or isinstance(value, GloriaMundoProgress):
            return value
        if not isinstance(value, dict):
            return None
        try:
            return GloriaMundoProgress.model_validate(value)
        except ValueError:
            # One odd field (a percentage of "n/a") must not drop the rest.
            kept = {}
            for name, item in value.items():
                try:
                    GloriaMundoProgress.model_validate({name: item})
                except ValueError:
                    continue
                kept[name] = item
            return GloriaMundoProgress.model_validate(kept)

    @field_validator("started_at", "completed_at", mode="before")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        parsed = as_utc(value)
        return parsed if isinstance(parsed, datetime) else None

    @field_validator("cost_cents", mode="before")
    @classmethod
    def _cost(cls, value: Any) -> Any:
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if isinstance(value, (int, float)) else None

    @field_validator("error", mode="before")
    @classmethod
    def _error_text(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, dict) and isinstance(value.get("message"), str):
            return value["message"]
        return json.dumps(value, default=str)

    @property
    def state(self) -> RunState:
        return STATES.get(self.status, RunState.RUNNING)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return max(0.0, (self.completed_at - self.started_at).total_seconds())


# -- request builders -----------------------------------------------------------------------------------


def validate_run_id(run_id: str) -> str:
    """GloriaMundo run ids are UUIDs; refuse anything else before sending a request."""
    if not isinstance(run_id, str) or not _UUID.match(run_id.strip()):
        raise ConfigurationError(f"GloriaMundo run ids are UUIDs (8-4-4-4-12 hex digits); got {run_id!r}")
    return run_id.strip()


def validate_workflow_id(workflow_id: str) -> str:
    if not isinstance(workflow_id, str) or not workflow_id.strip():
        raise ConfigurationError(f"GloriaMundo workflow_id must be a non-empty string, got {workflow_id!r}")
    return workflow_id.strip()


def validate_input(value: Any) -> dict[str, Any] | None:
    """``input`` is optional and must be a JSON object: refuse lists, strings, numbers before sending."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigurationError(
            f"GloriaMundo workflow input must be a JSON object (a dict), got {type(value).__name__}: "
            f"{shorten(repr(value), 120)}. Wrap it in an object, e.g. {{'items': [...]}}; a templated value "
            "renders as a string unless the DAG sets render_template_as_native_obj=True"
        )
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"GloriaMundo workflow input must be JSON-serializable: {exc}") from None
    return value


def execute_workflow(workflow_id: str, input: dict[str, Any] | None = None) -> Call[GloriaMundoExecution]:
    """``POST /workflows/{workflow_id}/execute`` with ``{input}``; checks every input the API would refuse."""
    workflow_id = validate_workflow_id(workflow_id)
    checked = validate_input(input)
    body: dict[str, Any] = {} if checked is None else {"input": checked}
    return Call(
        ApiRequest(
            "POST",
            f"/workflows/{quote(workflow_id, safe='')}/execute",
            EXECUTE_ENDPOINT,
            json=body,
            bucket=EXECUTE_BUCKET,
        ),
        lambda payload: parse_model(
            GloriaMundoExecution, payload, vendor=GLORIAMUNDO.display_name, endpoint=EXECUTE_ENDPOINT
        ),
    )


def status_path(run_id: str, poll_url: str | None = None, base_url: str | None = None) -> str:
    """The status path relative to the connection's base URL.

    GloriaMundo returns ``poll_url`` relative to its *origin* (``/api/v1/runs/{id}/status``) while the
    base URL already ends in ``/api/v1``; joined naively that would ask for ``/api/v1/api/v1/...``. The
    base URL's path is therefore stripped from it. A ``poll_url`` on another origin, outside the base path,
    or not naming this run is ignored in favour of the documented path (the API key is never sent
    anywhere but the configured base URL).
    """
    documented = f"/runs/{run_id}/status"
    if not poll_url or not isinstance(poll_url, str):
        return documented
    target = urlsplit(poll_url.strip())
    base = urlsplit(base_url or GLORIAMUNDO.default_base_url)
    if (target.scheme or target.netloc) and (target.scheme, target.netloc) != (base.scheme, base.netloc):
        return documented
    path = target.path
    base_path = base.path.rstrip("/")
    if not path.startswith("/"):
        path = "/" + path  # relative to the base URL
    elif base_path:
        if not path.startswith(base_path + "/"):
            return documented
        path = path[len(base_path) :]
    if run_id not in path.split("/") or ".." in path.split("/"):
        return documented
    return path


def get_run_status(run_id: str, poll_url: str | None = None, base_url: str | None = None) -> Call[GloriaMundoRun]:
    """``GET /runs/{run_id}/status`` (or the run's ``poll_url``, resolved against ``base_url``)."""
    run_id = validate_run_id(run_id)
    return Call(
        ApiRequest("GET", status_path(run_id, poll_url, base_url), STATUS_ENDPOINT, bucket=POLL_BUCKET),
        lambda payload: parse_model(GloriaMundoRun, payload, vendor=GLORIAMUNDO.display_name, endpoint=STATUS_ENDPOINT),
    )


# -- normalization --------------------------------------------------------------------------------------


def to_status(run: GloriaMundoRun) -> RunStatus:
    return RunStatus(
        vendor=GLORIAMUNDO.display_name,
        run_id=run.run_id,
        state=run.state,
        vendor_state=run.status,
        error=run.error,
        progress=run.progress,
        unknown_state=run.status not in STATES,
    )


def to_result(run: GloriaMundoRun) -> RunResult:
    status = to_status(run)
    summary = RunSummary(
        vendor=GLORIAMUNDO.display_name,
        run_id=run.run_id,
        state=status.state,
        vendor_state=run.status,
        created_at=run.started_at,
        finished_at=run.completed_at,
        duration_seconds=run.duration_seconds,
        cost=None if run.cost_cents is None else {"cost_cents": run.cost_cents},
        progress=run.progress,
        extra={"error": run.error} if run.error else {},
    )
    return RunResult(status=status, answer=run.result, messages=None, summary=summary)


class GloriaMundoWorkflowRuns(RunAdapter):
    vendor = GLORIAMUNDO
    noun = "workflow run"

    def __init__(self, poll_url: str | None = None) -> None:
        #: The execute answer's ``poll_url`` (checked by :func:`status_path`), else the documented path.
        self.poll_url = poll_url

    def with_poll_url(self, poll_url: str | None) -> GloriaMundoWorkflowRuns:
        return GloriaMundoWorkflowRuns(poll_url) if poll_url else self

    def validate_run_id(self, run_id: str) -> str:
        return validate_run_id(run_id)

    def status_call(self, settings: ConnectionSettings, run_id: str) -> Call[RunStatus]:
        return get_run_status(run_id, self.poll_url, settings.base_url).map(to_status)

    def result_call(self, settings: ConnectionSettings, run_id: str) -> Call[RunResult]:
        return get_run_status(run_id, self.poll_url, settings.base_url).map(to_result)


WORKFLOW_RUNS = GloriaMundoWorkflowRuns()


# -- errors that say what to do -------------------------------------------------------------------------


class _Hinted(VendorAPIError):
    """A vendor error plus one sentence on what the user can do about it."""

    def __init__(self, *, hint: str, **kwargs: Any) -> None:
        self.hint = hint
        super().__init__(**kwargs)


class GloriaMundoAuthError(_Hinted, AuthError):
    """401: the key is missing, wrong or revoked."""


class GloriaMundoNotFoundError(_Hinted, NotFoundError):
    """404: the workflow or run does not exist, or belongs to another account."""


class GloriaMundoInputError(_Hinted, ClientError):
    """400: the workflow refused the input."""


class GloriaMundoCreditsError(_Hinted, ClientError):
    """402: the account has no credits left."""


class GloriaMundoSpendLimitError(_Hinted, ClientError):
    """402 or 429 ``spend_limit_exceeded``: the account's spend limit is reached until it resets."""

    kind = "spend limit exceeded"

    def __init__(self, *, resets_at: str | None = None, **kwargs: Any) -> None:
        self.resets_at = resets_at
        super().__init__(**kwargs)


class GloriaMundoRateLimitedError(_Hinted, RateLimitedError):
    """429 at start, still refused after the retries: too many executions per minute for this key."""


def _error_fields(body: Any) -> dict[str, Any]:
    """The error body's top-level fields, and those of a nested ``error`` object, flattened."""
    if not isinstance(body, dict):
        return {}
    fields = dict(body)
    nested = body.get("error")
    if isinstance(nested, dict):
        fields.update(nested)
        fields["error"] = nested.get("code") or nested.get("type") or nested.get("message")
    return fields


def reset_time(body: Any) -> str | None:
    """When a spend limit resets, from any ``*reset*`` field of the error body (``2026-12-01 00:00 UTC``,
    ``in 3600s``, or the text as given)."""
    fields = _error_fields(body)
    for name, value in fields.items():
        if "reset" not in name.lower() or value in (None, ""):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value < 10_000_000:  # seconds from now rather than an epoch
                return f"in {value:g}s"
            value = as_utc(value)
        elif isinstance(value, str):
            parsed = as_utc(value)
            value = parsed if isinstance(parsed, datetime) else value
        if isinstance(value, datetime):
            return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return shorten(str(value), 80)
    return None


def is_spend_limit(error: VendorAPIError, body: Any = None) -> bool:
    fields = _error_fields(error.body if body is None else body)
    texts = [error.detail, *(str(fields.get(k) or "") for k in ("error", "code", "type", "message"))]
    return any(SPEND_LIMIT in text.lower() or "spend limit" in text.lower() for text in texts)


def explain_error(
    error: VendorAPIError,
    *,
    conn_id: str,
    workflow_id: str | None = None,
    run_id: str | None = None,
    body: Any = None,
    executions_per_minute: float = DEFAULT_EXECUTIONS_PER_MINUTE,
) -> VendorAPIError:
    """The same error with a sentence on what to do, for the statuses GloriaMundo documents.

    ``body`` is the decoded error body (for the spend limit's reset time); by default the one the client
    kept on the error. Anything else is returned unchanged.
    """
    if error.hint:
        return error
    if body is None:
        body = error.body
    status = error.http_status
    base: dict[str, Any] = {
        "vendor": error.vendor,
        "endpoint": error.endpoint,
        "status_code": status,
        "detail": error.detail,
        "retry_after": error.retry_after,
        "body": error.body,
    }
    if status == 401 or (status == 403 and isinstance(error, AuthError)):
        return GloriaMundoAuthError(
            hint=(
                f"Check the API key in the Password field of connection '{conn_id}' (GloriaMundo keys look like "
                "gm_live_...), and its 'key_header' extra: 'bearer' (default) sends Authorization: Bearer, "
                "'x-api-key' sends X-API-Key"
            ),
            **base,
        )
    if status == 404:
        if workflow_id is not None:
            hint = (
                f"Workflow '{workflow_id}' does not exist or is not owned by the account of the key in "
                f"connection '{conn_id}': check workflow_id and that the key belongs to the workflow's owner"
            )
        else:
            what = f"Run {run_id}" if run_id else "The run"
            hint = f"{what} does not exist or was started with another API key than the one in connection '{conn_id}'"
        return GloriaMundoNotFoundError(hint=hint, **base)
    if status == 400 and workflow_id is not None:
        return GloriaMundoInputError(
            hint=f"Workflow '{workflow_id}' refused the input: pass `input` as a JSON object matching its inputs",
            **base,
        )
    if status in (402, 429) and is_spend_limit(error, body):
        resets = reset_time(body)
        when = f"it resets {resets}" if resets and resets.startswith("in ") else f"it resets at {resets}"
        return GloriaMundoSpendLimitError(
            resets_at=resets,
            hint=(
                "The account's spend limit is reached"
                + (f" ({when})" if resets else "")
                + ": raise the limit in GloriaMundo's billing settings or wait until it resets, then clear the task"
            ),
            **base,
        )
    if status == 402:
        return GloriaMundoCreditsError(
            hint="The GloriaMundo account is out of credits: add credits in its billing settings, then clear the task",
            **base,
        )
    if status == 429 and workflow_id is not None:
        return GloriaMundoRateLimitedError(
            hint=(
                f"Rate limit: GloriaMundo allows {DOCUMENTED_EXECUTIONS_PER_MINUTE} workflow executions per minute "
                f"per API key, and this process already paces starts at {executions_per_minute:g}/min, so "
                "other processes or clients are starting runs with the same key: spread the starts (a pool, "
                "max_active_tis_per_dag) or use a separate key; retrying the task later is safe (nothing was started)"
            ),
            **base,
        )
    return error
