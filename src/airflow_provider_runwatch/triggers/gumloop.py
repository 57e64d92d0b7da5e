"""Gumloop triggers: poll an agent interaction, a session or a flow run on the triggerer (GETs only).

Cancel on kill comes from :meth:`RunTrigger.on_kill` through the adapter: sessions are cancelled with
``POST /sessions/{id}/cancel``, flows with ``kill_pipeline``; interactions cannot be cancelled, which is logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_provider_runwatch.core.errors import (
    ConfigurationError,
    NotFoundError,
    RunwatchError,
    VendorAPIError,
    shorten,
)
from airflow_provider_runwatch.core.http import NO_RETRY
from airflow_provider_runwatch.core.models import RunEvent
from airflow_provider_runwatch.core.polling import Clock, Poller, WaitOptions
from airflow_provider_runwatch.hooks.gumloop import GumloopHook
from airflow_provider_runwatch.triggers.base import RunTrigger
from airflow_provider_runwatch.triggers.batch import RunBatchTrigger
from airflow_provider_runwatch.vendors import gumloop
from airflow_provider_runwatch.vendors.gumloop import FLOWS, GUMLOOP, INTERACTIONS, SESSIONS, GumloopSession
from airflow_provider_runwatch.vendors.gumloop_limits import check_poll_interval

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.http import AsyncApiClient


class GumloopAgentTrigger(RunTrigger):
    """Waits for a Gumloop agent interaction (``GET /agent_status/{interaction_id}``).

    ``user_id`` / ``project_id`` (ids, not secrets) are the task's overrides of the connection's identity, so
    the polls identify the account the same way the start did.
    """

    hook_class = GumloopHook
    adapter = INTERACTIONS

    def __init__(self, *, user_id: str | None = None, project_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user_id = user_id
        self.project_id = project_id
        # An instance attribute shadows the class default only when the task overrides the identity.
        self.adapter = INTERACTIONS.with_identity(user_id, project_id)  # type: ignore[misc]

    def serialize(self) -> tuple[str, dict[str, Any]]:
        classpath, kwargs = super().serialize()
        return classpath, {**kwargs, "user_id": self.user_id, "project_id": self.project_id}


class GumloopSessionTrigger(RunTrigger):
    """Waits for a Gumloop agent session (``GET /sessions/{session_id}``).

    ``stop_on_paused=False`` keeps polling through ``approval_required`` until the session resumes or the
    deadline passes (the operator's ``on_approval_required="wait"``).
    """

    hook_class = GumloopHook
    adapter = SESSIONS


class GumloopSessionBatchTrigger(RunBatchTrigger):
    """Watches every running session of a Gumloop session batch; ``on_kill`` cancels them all."""

    hook_class = GumloopHook
    adapter = SESSIONS


class GumloopFlowTrigger(RunTrigger):
    """Waits for a Gumloop flow run (``GET /get_pl_run``); TERMINATING keeps waiting until it settles."""

    hook_class = GumloopHook
    adapter = FLOWS


# -- event-driven scheduling: one event per session that finishes, whoever started it ---------------------------
#: Session states after which nothing more happens; ``not_found`` is ours: a watched session that was deleted.
FINAL_SESSION_STATES = frozenset({"completed", "failed", "cancelled", "idle", "not_found"})
DEFAULT_EVENT_STATES = ("completed",)
DEFAULT_EVENT_POLL_INTERVAL = 60.0
#: Sessions per list request (Gumloop's maximum): the fewest requests per poll.
EVENT_PAGE_SIZE = gumloop.MAX_PAGE_SIZE
DEFAULT_MAX_PAGES = 5
#: A session that shows up in the list up to this long after a newer one was listed still counts as new.
TIE_WINDOW_SECONDS = 5.0
#: Transient failures (429, 5xx, network) never stop a watcher: it backs off and keeps going, and says so
#: again every this many consecutive failures.
FAILURES_PER_REPORT = 100
STATE_KEY_PREFIX = "runwatch.gumloop_session_events"


@dataclass(frozen=True)
class SessionSeen:
    """What one list item says about a session: ids and state, never the conversation."""

    id: str
    state: str
    created_at: float
    agent_id: str | None = None
    type: str | None = None
    name: str | None = None

    @classmethod
    def of(cls, session: GumloopSession, *, now: float) -> SessionSeen:
        created = session.created_at.timestamp() if session.created_at is not None else now
        return cls(session.id, session.state, created, session.agent_id, session.type, session.name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionSeen:
        return cls(
            str(data["id"]),
            str(data["state"]),
            float(data["created_at"]),
            data.get("agent_id"),
            data.get("type"),
            data.get("name"),
        )

    def payload(self, agent_id: str) -> dict[str, Any]:
        """The event payload (and so the asset event's ``extra["payload"]``)."""
        return {
            "session_id": self.id,
            "agent_id": self.agent_id or agent_id,
            "state": self.state,
            "type": self.type,
            "name": self.name,
            "created_at": datetime.fromtimestamp(self.created_at, tz=timezone.utc).isoformat(),
        }


@dataclass
class SessionWatch:
    """Sans-I/O bookkeeping of one watcher: which sessions are new, which are still being watched.

    Gumloop lists sessions by creation time, not by when they changed, so a session is followed from the
    first time it is listed: ``watermark`` is the newest ``created_at`` seen (``recent`` the ids seen near it,
    so sessions created in the same instant are told apart), ``watching`` the sessions seen before they
    finished. A listed session fires when it is new or watched and its state is one of ``states``. The first
    listing is the baseline: what already finished then never fires, what is still running is watched.
    Plain JSON in and out, so it lives in the asset state store across triggerer restarts.
    """

    watermark: float | None = None
    recent: dict[str, float] = field(default_factory=dict)
    watching: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "watermark": self.watermark, "recent": dict(self.recent), "watching": dict(self.watching)}

    @classmethod
    def from_json(cls, data: Any) -> SessionWatch:
        if not isinstance(data, dict) or data.get("version") != 1:
            return cls()
        return cls(data.get("watermark"), dict(data.get("recent") or {}), dict(data.get("watching") or {}))

    def copy(self) -> SessionWatch:
        return SessionWatch(self.watermark, dict(self.recent), dict(self.watching))

    def horizon(self) -> float | None:
        """How far back (``created_at``) the next listing must reach; ``None`` before the baseline."""
        if self.watermark is None:
            return None
        return min([self.watermark - TIE_WINDOW_SECONDS, *self.watching.values()])

    def _is_new(self, seen: SessionSeen) -> bool:
        assert self.watermark is not None
        if seen.created_at > self.watermark:
            return True
        return seen.created_at >= self.watermark - TIE_WINDOW_SECONDS and seen.id not in self.recent

    def apply(self, listed: Sequence[SessionSeen], states: Collection[str]) -> list[SessionSeen]:
        """Take one poll's listing; return the sessions that fire now, oldest first, each exactly once."""
        baseline = self.watermark is None
        newest = self.watermark if self.watermark is not None else max((s.created_at for s in listed), default=0.0)
        self.watermark = newest
        fired: list[SessionSeen] = []
        for seen in sorted(listed, key=lambda s: (s.created_at, s.id)):
            if not baseline and seen.id not in self.watching and not self._is_new(seen):
                continue
            self.recent[seen.id] = seen.created_at  # pruned to the tie window below
            newest = max(newest, seen.created_at)
            if seen.state in states and not baseline:
                fired.append(seen)
                self.watching.pop(seen.id, None)
            elif seen.state in FINAL_SESSION_STATES or seen.state in states:
                self.watching.pop(seen.id, None)
            else:
                self.watching[seen.id] = seen.created_at
        self.watermark = newest
        floor = newest - TIE_WINDOW_SECONDS
        self.recent = {sid: at for sid, at in self.recent.items() if at >= floor}
        return fired


@dataclass(frozen=True)
class SessionListing:
    """What one watcher lists: the agent, the server-side filters and how deep a poll may page."""

    conn_id: str
    agent_id: str
    filters: Mapping[str, str | None]
    poll_interval: float
    max_pages: int

    async def poll(self, client: AsyncApiClient, view: SessionWatch, log: Any, clock: Clock) -> list[SessionSeen]:
        """One poll: newest first, only as many pages as reach back to ``view``'s horizon (at most
        ``max_pages``); watched sessions the pages did not reach are read one by one. Updates ``view``."""
        horizon = view.horizon()
        now = clock()
        listed: list[SessionSeen] = []
        cursor: str | None = None
        reached = False
        for _ in range(self.max_pages):
            call = gumloop.list_sessions(
                client.settings,
                self.agent_id,
                page_size=EVENT_PAGE_SIZE,
                cursor=cursor,
                sort_order="newest",
                **self.filters,
            )
            # Each poll is one attempt: the caller's Poller owns backoff (429/5xx, Retry-After).
            page = await client.call(call, retry=NO_RETRY)
            listed.extend(SessionSeen.of(session, now=now) for session in page.sessions)
            cursor = page.next_cursor
            if not cursor or not page.sessions or (horizon is not None and listed[-1].created_at < horizon):
                reached = True
                break
        if not reached and horizon is not None:
            oldest = listed[-1].created_at if listed else now
            if view.watermark is not None and oldest > view.watermark:
                log.warning(
                    "Gumloop agent %s: more than %d sessions were created since the last poll; those created "
                    "before %s were not examined (raise max_pages or poll more often)",
                    self.agent_id,
                    len(listed),
                    datetime.fromtimestamp(oldest, tz=timezone.utc).isoformat(),
                )
            listed.extend(await self._read_unreached(client, view, {seen.id for seen in listed}, oldest))
        view.apply(listed, ())
        return listed

    async def _read_unreached(
        self, client: AsyncApiClient, view: SessionWatch, listed: set[str], oldest: float
    ) -> list[SessionSeen]:
        """Watched sessions older than the pages reached: one ``GET /sessions/{id}`` each."""
        found: list[SessionSeen] = []
        for session_id, created in view.watching.items():
            if session_id in listed or created >= oldest:
                continue
            try:
                envelope = await client.call(gumloop.get_session(client.settings, session_id), retry=NO_RETRY)
            except NotFoundError:
                found.append(SessionSeen(session_id, "not_found", created, self.agent_id))
                continue
            found.append(SessionSeen.of(envelope.session, now=created))
        return found

    async def stream(
        self, log: Any, seed: SessionWatch | None = None, clock: Clock = time.time
    ) -> AsyncIterator[list[SessionSeen]]:
        """Poll forever, yielding each poll's listing; back off on transient errors through the shared
        :class:`Poller`; on an error no retry can fix (auth, missing agent, bad filter) log one line and
        stop polling for good (park), so the triggerer neither restarts the watcher in a loop nor fills
        its log."""
        backoff = Poller(
            vendor=GUMLOOP.display_name,
            run_id=self.agent_id,
            options=WaitOptions(poll_interval=self.poll_interval, max_consecutive_failures=FAILURES_PER_REPORT),
            log=log,
            noun="agent",
        )
        view = seed.copy() if seed is not None else SessionWatch()
        try:
            hook = GumloopHook(self.conn_id)
            async with hook.async_client() as client:
                while True:
                    try:
                        listed = await self.poll(client, view, log, clock)
                    except VendorAPIError as exc:
                        outcome = backoff.after_error(exc)
                        if isinstance(outcome, RunEvent):
                            if not exc.transient:
                                raise
                            log.error("Gumloop agent %s: %s; still trying", self.agent_id, outcome.message)
                            backoff.failures = 0
                            outcome = backoff.retry.delay_for(exc, FAILURES_PER_REPORT)
                        await asyncio.sleep(max(self.poll_interval, outcome))
                        continue
                    backoff.failures = 0
                    yield listed
                    await asyncio.sleep(self.poll_interval)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            what = str(exc) if isinstance(exc, RunwatchError) else f"unexpected {type(exc).__name__}: {exc}"
            log.error(
                "Gumloop session events of agent %s stopped: %s. Fix connection '%s' or the watcher's "
                "arguments; it polls again when the triggerer restarts it",
                self.agent_id,
                shorten(what, 500),
                self.conn_id,
            )
            await asyncio.Event().wait()  # parked until the triggerer cancels it


class GumloopSessionEventTrigger(BaseEventTrigger):
    """Fires once per Gumloop agent session that reaches one of ``states``, whoever started it (Slack, the
    web app, email, Gumloop's own triggers, Airflow), for an :class:`~airflow.sdk.AssetWatcher`.

    It polls ``GET /agents/{agent_id}/sessions`` (newest first, paging only as far back as needed, at most
    ``max_pages`` pages of 100 per poll) every ``poll_interval`` seconds, with the list filters ``type``,
    ``trigger_id``, ``creator_user_id`` and ``search``. A session fires when it is seen in one of ``states``
    after the watcher started, sessions created earlier but finishing later included; a session fires once,
    at the first of ``states`` it is seen in. The payload carries ids and state only: ``session_id``,
    ``agent_id``, ``state``, ``type``, ``name``, ``created_at``.

    Exactly once: the watermark and the sessions still being watched live in Airflow 3.3's asset state
    store (``self.asset_state_store``, injected by the triggerer) under a key derived from the arguments,
    written after each poll's events; without a store (Airflow 3.1/3.2) they live in memory. On 3.3, sibling
    watchers with the same connection, agent and filters share one poll (``shared_stream_key``); each keeps
    its own state and its own ``states``. See the "Events" section of the Gumloop guide for what each Airflow
    version guarantees across restarts.
    """

    def __init__(
        self,
        *,
        agent_id: str,
        conn_id: str = GUMLOOP.default_conn_id,
        states: Sequence[str] | str = DEFAULT_EVENT_STATES,
        type: str | None = None,
        trigger_id: str | None = None,
        creator_user_id: str | None = None,
        search: str | None = None,
        poll_interval: float = DEFAULT_EVENT_POLL_INTERVAL,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if not isinstance(agent_id, str) or not agent_id.strip():
            raise ConfigurationError("GumloopSessionEventTrigger needs agent_id: the Gumloop agent to watch")
        chosen = [states] if isinstance(states, str) else list(states)
        if not chosen or not all(isinstance(state, str) and state.strip() for state in chosen):
            raise ConfigurationError(
                f"states must name at least one Gumloop session state (e.g. 'completed'), got {states!r}"
            )
        check_poll_interval(float(poll_interval))
        if isinstance(max_pages, bool) or int(max_pages) < 1:
            raise ConfigurationError(f"max_pages must be a positive integer, got {max_pages!r}")
        self.conn_id = conn_id
        self.agent_id = agent_id.strip()
        self.states = sorted({state.strip() for state in chosen})
        self.type = type
        # Not ``self.trigger_id``: the triggerer sets that attribute to the trigger's row id.
        self.gumloop_trigger_id = trigger_id
        self.creator_user_id = creator_user_id
        self.search = search
        self.poll_interval = float(poll_interval)
        self.max_pages = int(max_pages)
        for name, value in self._filters().items():
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"{name} must be a string (a Gumloop list filter), got {value!r}")
        if not hasattr(self, "asset_state_store"):  # Airflow < 3.3 injects none
            self.asset_state_store = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "agent_id": self.agent_id,
                "states": list(self.states),
                "type": self.type,
                "trigger_id": self.gumloop_trigger_id,
                "creator_user_id": self.creator_user_id,
                "search": self.search,
                "poll_interval": self.poll_interval,
                "max_pages": self.max_pages,
            },
        )

    def _filters(self) -> dict[str, str | None]:
        return {
            "type": self.type,
            "trigger_id": self.gumloop_trigger_id,
            "creator_user_id": self.creator_user_id,
            "search": self.search,
        }

    def listing(self) -> SessionListing:
        return SessionListing(self.conn_id, self.agent_id, self._filters(), self.poll_interval, self.max_pages)

    @property
    def state_key(self) -> str:
        """The asset state store key: one per watcher configuration, so watchers of one asset do not clash."""
        _, kwargs = self.serialize()
        digest = hashlib.sha256(json.dumps(kwargs, sort_keys=True).encode()).hexdigest()[:16]
        return f"{STATE_KEY_PREFIX}.{self.agent_id}.{digest}"

    # -- state ----------------------------------------------------------------------------------------------
    async def load_state(self) -> SessionWatch:
        store = self.asset_state_store
        if store is None:
            return SessionWatch()
        try:
            return SessionWatch.from_json(await store.aget(self.state_key))
        except ValueError as exc:  # one trigger watching several assets: no single accessor
            self.log.warning("Gumloop session events: asset state store unusable (%s); keeping state in memory", exc)
            self.asset_state_store = None
            return SessionWatch()

    async def save_state(self, watch: SessionWatch) -> None:
        if self.asset_state_store is not None:
            await self.asset_state_store.aset(self.state_key, watch.to_json())

    async def _fire(self, watch: SessionWatch, listed: Sequence[SessionSeen]) -> AsyncIterator[TriggerEvent]:
        before = watch.to_json()
        for seen in watch.apply(listed, self.states):
            self.log.info("Gumloop session %s of agent %s is %s: firing", seen.id, self.agent_id, seen.state)
            yield TriggerEvent(seen.payload(self.agent_id))  # type: ignore[no-untyped-call]
        # Written after the poll's events were handed over: see the Events section of the guide.
        if watch.to_json() != before:
            await self.save_state(watch)

    # -- one poll loop per watcher (every Airflow version) ----------------------------------------------------
    async def run(self) -> AsyncGenerator[TriggerEvent, None]:
        watch = await self.load_state()
        async for listed in self.listing().stream(self.log, seed=watch):
            async for event in self._fire(watch, listed):
                yield event

    # -- one poll loop per group of siblings (Airflow >= 3.3) -------------------------------------------------
    def shared_stream_key(self) -> Hashable | None:
        """Watchers of the same connection, agent and filters share one poll; ``states`` may differ."""
        return (
            STATE_KEY_PREFIX,
            self.conn_id,
            self.agent_id,
            self.type,
            self.gumloop_trigger_id,
            self.creator_user_id,
            self.search,
            self.poll_interval,
            self.max_pages,
        )

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        trigger = cls(**kwargs)
        async for listed in trigger.listing().stream(trigger.log):
            yield [seen.to_json() for seen in listed]

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        watch = await self.load_state()
        async for raw in shared_stream:
            async for event in self._fire(watch, [SessionSeen.from_json(item) for item in raw]):
                yield event
