"""Typed errors for vendor API calls and run outcomes.

Every error names the vendor, the endpoint (as a template, e.g. ``GET /runs/{run_id}/status``) and the
HTTP status, so a failed task says what failed without a traceback from inside httpx. No error ever
carries the API key: messages are built from parts we choose, and vendor text is passed through
:func:`airflow_provider_runwatch.core.redact.redact` before it is stored.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException

#: Longest vendor error text kept in an exception or a trigger event.
MAX_DETAIL_CHARS = 500


def shorten(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut so nobody mistakes it for the whole text."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 15].rstrip() + " ...[truncated]"


class RunwatchError(AirflowException):
    """Base class of everything this provider raises on purpose."""


class ConfigurationError(RunwatchError):
    """The connection or operator arguments are unusable (bad URL, missing key, invalid option)."""


class VendorAPIError(RunwatchError):
    """A vendor call failed. ``transient`` errors are worth retrying; the others are not."""

    transient: bool = False
    kind: str = "request failed"
    #: One sentence on what the user can do, added by the hook that knows the connection (:func:`with_hint`).
    hint: str = ""

    def __init__(
        self,
        *,
        vendor: str,
        endpoint: str,
        status_code: int | None = None,
        detail: str = "",
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        self.vendor = vendor
        self.endpoint = endpoint
        self.http_status = status_code
        self.detail = shorten(detail) if detail else ""
        self.retry_after = retry_after
        #: The decoded JSON error body when it was small (for vendor hints); never shown as it is.
        self.body = body
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line: vendor, endpoint, status and the vendor's own words."""
        status = f"HTTP {self.http_status}" if self.http_status is not None else "no HTTP response"
        text = f"{self.vendor} {self.endpoint}: {self.kind} ({status})"
        if self.detail:
            text += f": {self.detail}"
        return f"{text.rstrip('.')}. {self.hint}" if self.hint else text


def with_hint(error: VendorAPIError, hint: str) -> VendorAPIError:
    """A copy of ``error`` (same class, same fields) whose message ends with ``hint``; an error that already
    has a hint keeps it (the vendor's own explanation is the more precise one)."""
    if error.hint or not hint:
        return error
    hinted = type(error).__new__(type(error))  # the class's __init__ takes keywords only; copy its fields
    hinted.__dict__.update(error.__dict__)
    hinted.hint = hint
    hinted.args = (hinted.describe(),)
    return hinted


class AuthError(VendorAPIError):
    """401/403: the key is wrong, revoked or lacks a permission. Retrying cannot help."""

    kind = "authentication or permission refused"


class NotFoundError(VendorAPIError):
    """404: the run, agent or workflow does not exist or belongs to another account."""

    kind = "not found"


class ConflictError(VendorAPIError):
    """409: the request clashes with the resource's state (e.g. a session id that already exists)."""

    kind = "conflict"


class ClientError(VendorAPIError):
    """Any other 4xx: the request itself is wrong (validation, credits, size)."""

    kind = "request rejected"


class RateLimitedError(VendorAPIError):
    """429: slow down. ``retry_after`` holds the vendor's hint in seconds when it sent one."""

    kind = "rate limited"
    transient = True


class ServerError(VendorAPIError):
    """5xx: the vendor failed; usually passes."""

    kind = "server error"
    transient = True


class TransportError(VendorAPIError):
    """No usable HTTP response: connection refused, reset, timed out.

    ``reached_server`` is False only when the request provably never left (connect failures), which is
    what makes a retry of a non-idempotent start call safe.
    """

    kind = "network error"
    transient = True

    def __init__(self, *, reached_server: bool, **kwargs: object) -> None:
        self.reached_server = reached_server
        super().__init__(**kwargs)  # type: ignore[arg-type]


class ProxyError(TransportError):
    """The egress proxy refused, dropped the tunnel or could not be reached. Never reached the vendor;
    ``transient`` depends on the refusal (a 407 or 403 stays, a 502 or an unreachable proxy may pass)."""

    kind = "proxy failure"

    def __init__(self, *, transient: bool, **kwargs: object) -> None:
        self.transient = transient
        super().__init__(reached_server=False, **kwargs)


class TlsError(TransportError):
    """The TLS handshake failed: an untrusted or mismatched certificate, or a refused client certificate.
    Retrying cannot help until the connection's ``verify`` / ``cert`` (or the environment) changes."""

    kind = "TLS failure"
    transient = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(reached_server=False, **kwargs)


class MalformedResponseError(VendorAPIError):
    """The vendor answered 2xx with a body we cannot read (not JSON, wrong shape, too large)."""

    kind = "malformed response"
    transient = True


class ResponseTooLargeError(MalformedResponseError):
    """The body exceeded the configured size cap; we stopped reading instead of exhausting memory."""

    kind = "response too large"
    transient = False
