"""Gumloop hook: agent interactions, agent sessions (and their listing) and flows, blocking and asyncio.

Every operation is a one-liner over a pure builder in :mod:`airflow_provider_runwatch.vendors.gumloop`, so the
worker's blocking path and the triggerer's asyncio path send the same requests and read them the same way.

Connection extras: ``project_id``, ``team_id``, the network extras, and ``max_concurrent_runs`` (the plan's limit
of unfinished agent runs: Free 5, Pro 25, Enterprise 100), which only the session batch operator reads, as its
default ``max_concurrency``. The connection form shows each of them (``provider_info.CONNECTION_TYPES``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Unpack

from airflow_provider_runwatch.core.checks import optional_whole_number
from airflow_provider_runwatch.core.errors import ConfigurationError, NotFoundError
from airflow_provider_runwatch.hooks.base import RunwatchHook, twins
from airflow_provider_runwatch.vendors import gumloop
from airflow_provider_runwatch.vendors.gumloop import (
    GUMLOOP,
    GumloopFlowRun,
    GumloopFlowStarted,
    GumloopInteraction,
    GumloopInteractionStarted,
    GumloopKillResult,
    GumloopSession,
    GumloopSessionEnvelope,
    GumloopSessionPage,
    SessionFilters,
)

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.adapter import RunAdapter
    from airflow_provider_runwatch.core.calls import Call
    from airflow_provider_runwatch.core.clients import ClientOptions
    from airflow_provider_runwatch.core.connection import ConnectionSettings

#: Ids that cannot exist, read by :meth:`GumloopHook.probe`: a vendor 404 proves the key was accepted.
PROBE_INTERACTION_ID = "runwatch_connection_test"
PROBE_SESSION_ID = "sess_runwatch_connection_test"


class GumloopHook(RunwatchHook):
    """Talks to Gumloop. Connection: host = API base URL (default ``https://api.gumloop.com/api/v1``),
    password = API key, login = your user id, extras ``project_id`` and ``team_id`` (team keys)."""

    vendor = GUMLOOP
    default_conn_name = "gumloop_default"
    conn_type = "gumloop"
    hook_name = "Gumloop"
    interactions = gumloop.INTERACTIONS
    sessions = gumloop.SESSIONS
    flows = gumloop.FLOWS

    def client_options(self, settings: ConnectionSettings) -> ClientOptions:
        """Bearer auth for every request, plus ``?team_id=`` on every request for a team key."""
        options = super().client_options(settings)
        team_id = settings.extra_str("team_id")
        if team_id:
            options.params["team_id"] = team_id
        return options

    def auth_hint(self) -> str:
        """Gumloop checks the key with an identity: the user id in Login (personal keys) or ``team_id``."""
        return (
            f"Check the API key in the Password field of connection '{self.conn_id}', the Gumloop user id in its "
            "Login field (personal keys), and its 'team_id' extra (team keys)"
        )

    # Each single-call operation is defined once, as the call it sends; ``twins`` makes the blocking method
    # and its asyncio twin (``start_agent`` and ``astart_agent``, ...).

    # -- agent interactions -------------------------------------------------------------------------------------
    def _start_agent(
        self,
        settings: ConnectionSettings,
        gummie_id: str,
        message: str,
        *,
        user_id: str | None = None,
        project_id: str | None = None,
        interaction_id: str | None = None,
    ) -> Call[GumloopInteractionStarted]:
        """Start (or, with ``interaction_id``, continue) an agent interaction. Not retried once it may have
        reached Gumloop: the legacy API has no idempotency key."""
        return gumloop.start_agent(
            settings, gummie_id, message, user_id=user_id, project_id=project_id, interaction_id=interaction_id
        )

    start_agent, astart_agent = twins(_start_agent)

    def _agent_status(
        self,
        settings: ConnectionSettings,
        interaction_id: str,
        *,
        user_id: str | None = None,
        project_id: str | None = None,
    ) -> Call[GumloopInteraction]:
        """The interaction's state and, once it is over, its response."""
        return gumloop.agent_status(settings, interaction_id, user_id=user_id, project_id=project_id)

    agent_status, aagent_status = twins(_agent_status)

    # -- agent sessions -----------------------------------------------------------------------------------------
    def _create_session(
        self,
        settings: ConnectionSettings,
        agent_id: str,
        input: str,
        *,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Call[GumloopSessionEnvelope]:
        """Start a session. With a ``session_id`` a repeated call answers 409 ``session_already_exists``
        (:class:`~airflow_provider_runwatch.core.errors.ConflictError`) instead of starting a second one."""
        return gumloop.create_session(settings, agent_id, input, session_id=session_id, metadata=metadata)

    create_session, acreate_session = twins(_create_session)

    def _get_session(self, settings: ConnectionSettings, session_id: str) -> Call[GumloopSessionEnvelope]:
        """The whole session: state, messages, usage."""
        return gumloop.get_session(settings, session_id)

    get_session, aget_session = twins(_get_session)

    def _cancel_session(self, settings: ConnectionSettings, session_id: str) -> Call[Any]:
        """Ask Gumloop to cancel; a GET right after may still show the old state until it settles."""
        return gumloop.cancel_session(settings, session_id)

    cancel_session, acancel_session = twins(_cancel_session)

    def _submit_approvals(
        self, settings: ConnectionSettings, session_id: str, approval_responses: Sequence[Mapping[str, Any]]
    ) -> Call[Any]:
        """Answer a session's pending approvals: ``[{"action_request_id": ..., "action": "accept"|"reject"}]``."""
        return gumloop.submit_approvals(settings, session_id, approval_responses)

    submit_approvals, asubmit_approvals = twins(_submit_approvals)

    def _list_sessions(
        self,
        settings: ConnectionSettings,
        agent_id: str,
        *,
        cursor: str | None = None,
        **filters: Unpack[SessionFilters],
    ) -> Call[GumloopSessionPage]:
        """One page of an agent's sessions; pass the page's ``next_cursor`` back for the next one. The filters
        (``page_size``, ``search``, ``sort_order``, ``type``, ``state``, ``creator_user_id``, ``trigger_id``)
        are :class:`~airflow_provider_runwatch.vendors.gumloop.SessionFilters`."""
        return gumloop.list_sessions(settings, agent_id, cursor=cursor, **filters)

    list_sessions, alist_sessions = twins(_list_sessions)

    def iter_sessions(
        self, agent_id: str, *, max_sessions: int | None = None, **filters: Unpack[SessionFilters]
    ) -> Iterator[GumloopSession]:
        """Every session matching the filters (those of :meth:`list_sessions`), lazily: a page is fetched only
        when the previous one is used up, and paging stops at ``max_sessions`` (or when Gumloop returns no
        ``next_cursor``)."""
        limit = _limit(max_sessions)
        # Build the first call now, so bad filters fail before iteration starts.
        gumloop.list_sessions(self.settings, agent_id, **filters)
        return self._iter_sessions(agent_id, filters, limit)

    def _iter_sessions(self, agent_id: str, filters: SessionFilters, limit: int | None) -> Iterator[GumloopSession]:
        paging = _Paging(limit)
        while paging.cursor is not _Paging.DONE:
            page = self.call(gumloop.list_sessions(self.settings, agent_id, cursor=paging.cursor, **filters))
            yield from paging.take(page)

    async def aiter_sessions(
        self, agent_id: str, *, max_sessions: int | None = None, **filters: Unpack[SessionFilters]
    ) -> AsyncIterator[GumloopSession]:
        """Asyncio twin of :meth:`iter_sessions`, on one client for the whole iteration."""
        limit = _limit(max_sessions)
        settings = await self.aget_settings()
        gumloop.list_sessions(settings, agent_id, **filters)
        paging = _Paging(limit)
        async with self.async_client() as client:
            while paging.cursor is not _Paging.DONE:
                page = await client.call(gumloop.list_sessions(settings, agent_id, cursor=paging.cursor, **filters))
                for session in paging.take(page):
                    yield session

    # -- flows ----------------------------------------------------------------------------------------------------
    def _start_pipeline(
        self,
        settings: ConnectionSettings,
        saved_item_id: str,
        inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        user_id: str | None = None,
        project_id: str | None = None,
    ) -> Call[GumloopFlowStarted]:
        """Start a flow run; ``inputs`` maps input names to values (sent as ``pipeline_inputs``)."""
        return gumloop.start_pipeline(settings, saved_item_id, inputs, user_id=user_id, project_id=project_id)

    start_pipeline, astart_pipeline = twins(_start_pipeline)

    def _get_pl_run(
        self, settings: ConnectionSettings, run_id: str, *, user_id: str | None = None, project_id: str | None = None
    ) -> Call[GumloopFlowRun]:
        """The flow run: its state, logs and, once it is over, its outputs."""
        return gumloop.get_pl_run(settings, run_id, user_id=user_id, project_id=project_id)

    get_pl_run, aget_pl_run = twins(_get_pl_run)

    def _kill_pipeline(
        self, settings: ConnectionSettings, run_id: str, *, user_id: str | None = None, project_id: str | None = None
    ) -> Call[GumloopKillResult]:
        """Ask Gumloop to stop a flow run."""
        return gumloop.kill_pipeline(settings, run_id, user_id=user_id, project_id=project_id)

    kill_pipeline, akill_pipeline = twins(_kill_pipeline)

    def probe(self) -> str:
        """Prove the key without starting anything: read an interaction and a session that cannot exist.

        Gumloop has no "whoami". A 404 that carries Gumloop's own not-found code proves the key (and the user
        id / team id sent with it) was accepted, since 401/403 come first; a bare 404 would mean a wrong base
        URL, so the code is checked. Each API is probed only when the connection has what it needs: the
        legacy endpoints a user_id or project_id, the agents/sessions API a Login (x-auth-key) or a team_id.
        Both reads are GETs of ids that cannot exist: nothing is started, nothing is billed.
        """
        settings = self.settings
        has_legacy = bool(settings.login or settings.extra_str("project_id"))
        has_sessions = bool(settings.login or settings.extra_str("team_id"))
        if not (has_legacy or has_sessions):
            raise ConfigurationError(
                f"Gumloop connection '{settings.conn_id}': set your Gumloop user id in Login (or extra project_id "
                "or team_id): every Gumloop API needs one of them beside the key"
            )
        proven = []
        if has_legacy:
            self._expect_not_found(
                lambda: self.call(gumloop.agent_status(settings, PROBE_INTERACTION_ID)), "interaction_not_found"
            )
            proven.append("agent interactions and flows")
        if has_sessions:
            self._expect_not_found(
                lambda: self.call(gumloop.get_session(settings, PROBE_SESSION_ID)), "session_not_found"
            )
            proven.append("agents/sessions API")
        return f"Gumloop accepted the API key ({', '.join(proven)})"

    def _expect_not_found(self, read: Any, code: str) -> None:
        try:
            read()
        except NotFoundError as exc:
            # "interaction_not_found" / "Interaction not found": Gumloop's words, not a gateway's bare 404.
            if code in exc.detail.lower().replace(" ", "_"):
                return
            raise ConfigurationError(
                f"Gumloop connection '{self.settings.conn_id}': {exc.endpoint} answered a 404 that is not "
                f"Gumloop's ({exc.detail or 'no body'}); check the host: it should end in /api/v1"
            ) from None
        raise ConfigurationError(
            f"Gumloop connection '{self.settings.conn_id}': a read of an id that cannot exist did not answer "
            "404; check the host points at the Gumloop API"
        )

    def _warn_no_cancel(self, adapter: RunAdapter, run_id: str) -> None:
        self.log.warning(
            "Gumloop has no API to cancel an %s: %s %s keeps running on Gumloop's side until it ends",
            adapter.noun,
            adapter.noun,
            run_id,
        )


class _Paging:
    """Where a session listing stands, for both iterators: the cursor of the next page (``None`` for the
    first, :attr:`DONE` when there is none), and how many sessions are left to hand out."""

    DONE = "\0done"

    def __init__(self, limit: int | None) -> None:
        self.left = limit
        self.cursor: str | None = None
        self.seen: set[str] = set()

    def take(self, page: GumloopSessionPage) -> list[GumloopSession]:
        """The page's sessions to hand out; moves the cursor on (or to :attr:`DONE`)."""
        sessions = list(page.sessions)
        if self.left is not None:
            sessions = sessions[: self.left]
            self.left -= len(sessions)
        cursor = page.next_cursor
        if (self.left is not None and self.left <= 0) or not cursor or not page.sessions or cursor in self.seen:
            self.cursor = self.DONE
        else:
            self.seen.add(cursor)
            self.cursor = cursor
        return sessions


def _limit(max_sessions: int | None) -> int | None:
    return optional_whole_number(max_sessions, "max_sessions")
