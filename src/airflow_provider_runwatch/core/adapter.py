"""The per-vendor, per-run-kind contract that lets one polling core, one trigger, one operator and one
sensor base serve every vendor.

An adapter is pure (sans-I/O): it builds :class:`~airflow_provider_runwatch.core.calls.Call` objects and
parses answers; hooks execute them with the sync or the async client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.calls import Call
    from airflow_provider_runwatch.core.connection import ConnectionSettings, VendorSpec
    from airflow_provider_runwatch.core.models import RunStatus, RunSummary


@dataclass(frozen=True)
class RunResult:
    """A finished run as the operator hands it on: the answer (return value), the conversation (the
    ``messages`` XCom, as the vendor sent it) and the compact ``run`` summary."""

    status: RunStatus
    answer: Any
    messages: Any | None
    summary: RunSummary


class RunAdapter(ABC):
    """How to watch (and maybe cancel) one kind of run of one vendor."""

    vendor: VendorSpec
    #: Human noun used in logs and errors: "chat run", "session", "flow run".
    noun: str = "run"
    #: Whether the vendor documents a way to cancel this kind of run.
    cancel_supported: bool = False

    def validate_run_id(self, run_id: str) -> str:
        """Refuse an id the vendor would reject, before any request. Returns the cleaned id."""
        from airflow_provider_runwatch.core.errors import ConfigurationError

        if not isinstance(run_id, str) or not run_id.strip():
            raise ConfigurationError(
                f"{self.vendor.display_name} {self.noun} id must be a non-empty string, got {run_id!r}"
            )
        return run_id.strip()

    @abstractmethod
    def status_call(self, settings: ConnectionSettings, run_id: str) -> Call[RunStatus]:
        """The cheap GET a trigger issues on every poll."""

    @abstractmethod
    def result_call(self, settings: ConnectionSettings, run_id: str) -> Call[RunResult]:
        """The GET the operator issues once on the worker after the wait, for the full answer."""

    def cancel_call(self, settings: ConnectionSettings, run_id: str) -> Call[Any] | None:
        """The request that cancels the run, or ``None`` when the vendor has none."""
        return None

    def with_poll_url(self, poll_url: str | None) -> RunAdapter:
        """This adapter, polling where the start answer said (GloriaMundo's ``poll_url``); others ignore it."""
        return self

    def run_url(self, settings: ConnectionSettings, run_id: str) -> str | None:
        """A link to the run in the vendor's app, when one can be built."""
        template = self.vendor.run_url_template
        return template.format(run_id=run_id) if template else None
