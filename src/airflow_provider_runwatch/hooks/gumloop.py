"""Gumloop hook: agent interactions, agent sessions (and their listing) and flows, blocking and asyncio.

Every operation is a one-liner over a pure builder in :mod:`airflow_provider_runwatch.vendors.gumloop`, so the
worker's blocking path and the triggerer's asyncio path send the same requests and read them the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_runwatch.core.errors import ConfigurationError, NotFoundError
from airflow_provider_runwatch.hooks.base import RunwatchHook
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
)

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.adapter import RunAdapter
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

    # -- agent interactions -------------------------------------------------------------------------------------
    def start_agent(
        self,
        gummie_id: str,
        message: str,
        *,
        user_id: str | None = None,
        project_id: str | None = None,
        interaction_id: str | None = None,
    ) -> GumloopInteractionStarted:
        """Start (or, with ``interaction_id``, continue) an agent interaction. Not retried once it may have
        reached Gumloop: the legacy API has no idempotency key."""
        call = gumloop.start_agent(
            self.settings, gummie_id, message, user_id=user_id, project_id=project_id, interaction_id=interaction_id
        )
        return self.call(call)

    async def astart_agent(
        self,
        gummie_id: str,
        message: str,
        *,
        user_id: str | None = None,
        project_id: str | None = None,
        interaction_id: str | None = None,
    ) -> GumloopInteractionStarted:
        call = gumloop.start_agent(
            await self.aget_settings(),
            gummie_id,
            message,
            user_id=user_id,
            project_id=project_id,
            interaction_id=interaction_id,
        )
        return await self.acall(call)

    def agent_status(
        self, interaction_id: str, *, user_id: str | None = None, project_id: str | None = None
    ) -> GumloopInteraction:
        return self.call(gumloop.agent_status(self.settings, interaction_id, user_id=user_id, project_id=project_id))

    async def aagent_status(
        self, interaction_id: str, *, user_id: str | None = None, project_id: str | None = None
    ) -> GumloopInteraction:
        settings = await self.aget_settings()
        return await self.acall(gumloop.agent_status(settings, interaction_id, user_id=user_id, project_id=project_id))

    # -- agent sessions -----------------------------------------------------------------------------------------
    def create_session(
        self,
        agent_id: str,
        input: str,
        *,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> GumloopSessionEnvelope:
        """Start a session. With a ``session_id`` a repeated call answers 409 ``session_already_exists``
        (:class:`~airflow_provider_runwatch.core.errors.ConflictError`) instead of starting a second one."""
        return self.call(
            gumloop.create_session(self.settings, agent_id, input, session_id=session_id, metadata=metadata)
        )

    async def acreate_session(
        self,
        agent_id: str,
        input: str,
        *,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> GumloopSessionEnvelope:
        settings = await self.aget_settings()
        return await self.acall(
            gumloop.create_session(settings, agent_id, input, session_id=session_id, metadata=metadata)
        )

    def get_session(self, session_id: str) -> GumloopSessionEnvelope:
        return self.call(gumloop.get_session(self.settings, session_id))

    async def aget_session(self, session_id: str) -> GumloopSessionEnvelope:
        return await self.acall(gumloop.get_session(await self.aget_settings(), session_id))

    def cancel_session(self, session_id: str) -> Any:
        """Ask Gumloop to cancel; a GET right after may still show the old state until it settles."""
        return self.call(gumloop.cancel_session(self.settings, session_id))

    async def acancel_session(self, session_id: str) -> Any:
        return await self.acall(gumloop.cancel_session(await self.aget_settings(), session_id))

    def submit_approvals(self, session_id: str, approval_responses: Sequence[Mapping[str, Any]]) -> Any:
        """Answer a session's pending approvals: ``[{"action_request_id": ..., "action": "accept"|"reject"}]``."""
        return self.call(gumloop.submit_approvals(self.settings, session_id, approval_responses))

    async def asubmit_approvals(self, session_id: str, approval_responses: Sequence[Mapping[str, Any]]) -> Any:
        settings = await self.aget_settings()
        return await self.acall(gumloop.submit_approvals(settings, session_id, approval_responses))

    def list_sessions(
        self,
        agent_id: str,
        *,
        page_size: int | None = None,
        cursor: str | None = None,
        search: str | None = None,
        sort_order: str | None = None,
        type: str | None = None,
        state: str | None = None,
        creator_user_id: str | None = None,
        trigger_id: str | None = None,
    ) -> GumloopSessionPage:
        """One page of an agent's sessions; pass the page's ``next_cursor`` back for the next one."""
        call = gumloop.list_sessions(
            self.settings,
            agent_id,
            page_size=page_size,
            cursor=cursor,
            search=search,
            sort_order=sort_order,
            type=type,
            state=state,
            creator_user_id=creator_user_id,
            trigger_id=trigger_id,
        )
        return self.call(call)

    async def alist_sessions(
        self,
        agent_id: str,
        *,
        page_size: int | None = None,
        cursor: str | None = None,
        search: str | None = None,
        sort_order: str | None = None,
        type: str | None = None,
        state: str | None = None,
        creator_user_id: str | None = None,
        trigger_id: str | None = None,
    ) -> GumloopSessionPage:
        call = gumloop.list_sessions(
            await self.aget_settings(),
            agent_id,
            page_size=page_size,
            cursor=cursor,
            search=search,
            sort_order=sort_order,
            type=type,
            state=state,
            creator_user_id=creator_user_id,
            trigger_id=trigger_id,
        )
        return await self.acall(call)

    def iter_sessions(
        self,
        agent_id: str,
        *,
        page_size: int | None = None,
        search: str | None = None,
        sort_order: str | None = None,
        type: str | None = None,
        state: str | None = None,
        creator_user_id: str | None = None,
        trigger_id: str | None = None,
        max_sessions: int | None = None,
    ) -> Iterator[GumloopSession]:
        """Every session matching the filters, lazily: a page is fetched only when the previous one is used
        up, and paging stops at ``max_sessions`` (or when Gumloop returns no ``next_cursor``)."""
        limit = _limit(max_sessions)
        filters: dict[str, Any] = {
            "page_size": page_size,
            "search": search,
            "sort_order": sort_order,
            "type": type,
            "state": state,
            "creator_user_id": creator_user_id,
            "trigger_id": trigger_id,
        }
        # Build the first call now, so bad filters fail before iteration starts.
        gumloop.list_sessions(self.settings, agent_id, **filters)
        return self._iter_sessions(agent_id, filters, limit)

    def _iter_sessions(self, agent_id: str, filters: dict[str, Any], limit: int | None) -> Iterator[GumloopSession]:
        yielded = 0
        cursor: str | None = None
        seen: set[str] = set()
        while limit is None or yielded < limit:
            page = self.call(gumloop.list_sessions(self.settings, agent_id, cursor=cursor, **filters))
            for session in page.sessions:
                yield session
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
            cursor = page.next_cursor
            if not cursor or not page.sessions or cursor in seen:
                return
            seen.add(cursor)

    async def aiter_sessions(
        self,
        agent_id: str,
        *,
        page_size: int | None = None,
        search: str | None = None,
        sort_order: str | None = None,
        type: str | None = None,
        state: str | None = None,
        creator_user_id: str | None = None,
        trigger_id: str | None = None,
        max_sessions: int | None = None,
    ) -> AsyncIterator[GumloopSession]:
        """Asyncio twin of :meth:`iter_sessions`, on one client for the whole iteration."""
        limit = _limit(max_sessions)
        filters: dict[str, Any] = {
            "page_size": page_size,
            "search": search,
            "sort_order": sort_order,
            "type": type,
            "state": state,
            "creator_user_id": creator_user_id,
            "trigger_id": trigger_id,
        }
        settings = await self.aget_settings()
        gumloop.list_sessions(settings, agent_id, **filters)
        yielded = 0
        cursor: str | None = None
        seen: set[str] = set()
        async with self.async_client() as client:
            while limit is None or yielded < limit:
                page = await client.call(gumloop.list_sessions(settings, agent_id, cursor=cursor, **filters))
                for session in page.sessions:
                    yield session
                    yielded += 1
                    if limit is not None and yielded >= limit:
                        return
                cursor = page.next_cursor
                if not cursor or not page.sessions or cursor in seen:
                    return
                seen.add(cursor)

    # -- flows ----------------------------------------------------------------------------------------------------
    def start_pipeline(
        self,
        saved_item_id: str,
        inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        user_id: str | None = None,
        project_id: str | None = None,
    ) -> GumloopFlowStarted:
        """Start a flow run; ``inputs`` maps input names to values (sent as ``pipeline_inputs``)."""
        call = gumloop.start_pipeline(self.settings, saved_item_id, inputs, user_id=user_id, project_id=project_id)
        return self.call(call)

    async def astart_pipeline(
        self,
        saved_item_id: str,
        inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        user_id: str | None = None,
        project_id: str | None = None,
    ) -> GumloopFlowStarted:
        settings = await self.aget_settings()
        call = gumloop.start_pipeline(settings, saved_item_id, inputs, user_id=user_id, project_id=project_id)
        return await self.acall(call)

    def get_pl_run(self, run_id: str, *, user_id: str | None = None, project_id: str | None = None) -> GumloopFlowRun:
        return self.call(gumloop.get_pl_run(self.settings, run_id, user_id=user_id, project_id=project_id))

    async def aget_pl_run(
        self, run_id: str, *, user_id: str | None = None, project_id: str | None = None
    ) -> GumloopFlowRun:
        settings = await self.aget_settings()
        return await self.acall(gumloop.get_pl_run(settings, run_id, user_id=user_id, project_id=project_id))

    def kill_pipeline(
        self, run_id: str, *, user_id: str | None = None, project_id: str | None = None
    ) -> GumloopKillResult:
        return self.call(gumloop.kill_pipeline(self.settings, run_id, user_id=user_id, project_id=project_id))

    async def akill_pipeline(
        self, run_id: str, *, user_id: str | None = None, project_id: str | None = None
    ) -> GumloopKillResult:
        settings = await self.aget_settings()
        return await self.acall(gumloop.kill_pipeline(settings, run_id, user_id=user_id, project_id=project_id))

    # -- connection test ------------------------------------------------------------------------------------------
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


def _limit(max_sessions: int | None) -> int | None:
    if max_sessions is None:
        return None
    if isinstance(max_sessions, bool) or int(max_sessions) < 1:
        raise ConfigurationError(f"max_sessions must be a positive integer or None, got {max_sessions!r}")
    return int(max_sessions)
