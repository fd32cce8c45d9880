"""The ACD on the event loop: the pure :class:`~callcenter.routing.router.Router` driven by real time,
agents' registrations and live calls.

- Presence: an agent whose first softphone contact registers logs in (available, or not-ready when
  ``routing.available_on_register`` is false); when the last contact unregisters or expires they log
  out. Agents added while the server runs are read from the database on their first REGISTER.
- One timer task runs the router's timers (wrap-up ends, max-wait overflows, escalations) and its
  dispatch whenever something changed; offers and overflows are handed to the waiting caller's task.
- :meth:`Acd.serve` runs inside the caller's flow task (so inside the call's TaskGroup): hold music and
  position announcements, ringing the offered agents (:class:`AgentRing`), then the bridge until one
  side hangs up. Whatever ends it — caller hang-up, agent BYE, no answer, overflow — the call leaves
  the router exactly once (``finally``) and an agent is never left reserved.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import re
import socket
import time
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol
from zoneinfo import ZoneInfo

from callcenter.calls.agent_calls import AgentCalls
from callcenter.calls.agent_leg import AgentRing, RingResult, RingTarget, close_leg
from callcenter.calls.callback import CallbackRunner, ask_callback_number, confirm_and_hang_up
from callcenter.calls.outbound import TrunkRing, install_trunk, normalise_number, number_uri, outside_dest
from callcenter.calls.talk import LiveTalk
from callcenter.calls.transfer import HoldLog, names_dialog, parse_replaces
from callcenter.core.clock import local_day
from callcenter.core.config import QueueSettings, Settings
from callcenter.core.errors import CallcenterError
from callcenter.core.logging import log_event
from callcenter.ivr.control import CallerHangup, PromptItem, QueueRequest, QueueResult, TransferResult
from callcenter.media import tones
from callcenter.media.bridge import Bridge
from callcenter.media.engine import MediaEngine
from callcenter.media.pacer import encode_frames, looping
from callcenter.routing.agents import AgentEvent, AgentState, Transition
from callcenter.routing.queues import Escalation, QueueConfig
from callcenter.routing.router import Offer, OfferGone, Overflow, Router
from callcenter.sip.endpoint import SipEndpoint
from callcenter.sip.message import SipParseError
from callcenter.sip.registrar import Binding
from callcenter.sip.uri import format_host, parse_name_addr, parse_uri

if TYPE_CHECKING:
    from callcenter.calls.control import LiveCallControl
    from callcenter.sip.registration import RegistrationService
    from callcenter.speech.cache import PromptCache

log = logging.getLogger("callcenter.acd")

_HOLD_MUSIC_CACHE: dict[str, tuple[bytes, ...]] = {}


def default_hold_music(codec: str) -> tuple[bytes, ...]:
    """A soft generated arpeggio (no licensed audio in the package), encoded once per codec."""
    frames = _HOLD_MUSIC_CACHE.get(codec)
    if frames is None:
        frames = tuple(encode_frames(tones.hold_music(), codec))
        _HOLD_MUSIC_CACHE[codec] = frames
    return frames


DIRECT_QUEUE = "_agent"  # built-in queue of calls transferred to a named agent


def personal_skill(agent: str) -> str:
    return f"@{agent}"


@dataclass(frozen=True)
class TransferTarget:
    """Where a transfer goes: a queue, a named agent, an outside SIP URI, or a phone number (dialled
    through the SIP trunk, ``sip.trunk``)."""

    kind: Literal["queue", "agent", "uri", "number"]
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"

    @property
    def outside(self) -> bool:
        """Rung directly (no agent reserved through the router)."""
        return self.kind in ("uri", "number")


_DIGITS = re.compile(r"\+?[0-9*#][0-9*#\-. ()]{0,40}")


def queue_config(name: str, q: QueueSettings) -> QueueConfig:
    """The router's QueueConfig for ``routing.queues.NAME`` (or a queue made in the admin console)."""
    return QueueConfig(
        name=name,
        skills=dict(q.skills),
        strategy=q.strategy,
        max_wait_s=q.max_wait_s,
        max_length=q.max_length,
        overflow=q.overflow,
        escalations=tuple(Escalation(e.after_s, dict(e.skills)) for e in q.escalations),
        service_level_s=q.service_level_s,
        wrap_up_s=q.wrap_up_s,
        ring_timeout_s=q.ring_timeout_s,
        join_when_empty=q.join_when_empty,
    )


def queue_configs(settings: Settings) -> dict[str, QueueConfig]:
    configs = {name: queue_config(name, q) for name, q in settings.routing.queues.items()}
    ring = max((q.ring_timeout_s for q in settings.routing.queues.values()), default=15.0)
    configs[DIRECT_QUEUE] = QueueConfig(name=DIRECT_QUEUE, ring_timeout_s=ring, join_when_empty=False)
    return configs


class RecordSink(Protocol):
    def call_extra(self, sip_call_id: str, fields: dict[str, Any]) -> None: ...


class AgentDirectory(Protocol):
    """Where agent definitions come from (the Store)."""

    def list_agents(self) -> list[Any]: ...

    def get_agent(self, username: str) -> Any | None: ...


@dataclass
class _Waiter:
    call_id: str
    events: asyncio.Queue[Offer | Overflow] = field(default_factory=asyncio.Queue)
    hold: asyncio.Future[None] | None = None  # hold music and announcements while waiting


@dataclass
class QueueVisit:
    """What the call record gets about one stay in a queue."""

    queue: str
    enqueued_at: float
    offered: list[str] = field(default_factory=list)
    agent: str | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    disposition: str = "abandoned"
    hangup_by: str | None = None
    transferred_to: str | None = None

    def as_json(self) -> dict[str, Any]:
        wait_end = self.answered_at or self.ended_at or self.enqueued_at
        talk = (self.ended_at - self.answered_at) if self.answered_at and self.ended_at else 0.0
        return {
            "queue": self.queue,
            "agent": self.agent,
            "offered_agents": self.offered,
            "wait_s": round(wait_end - self.enqueued_at, 2),
            "talk_s": round(talk, 2),
            "disposition": self.disposition,
            **({"transferred_to": self.transferred_to} if self.transferred_to else {}),
        }


class Acd:
    def __init__(
        self,
        settings: Settings,
        endpoint: SipEndpoint,
        media: MediaEngine,
        registration: RegistrationService,
        directory: AgentDirectory | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        router: Router | None = None,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.media = media
        self.registration = registration
        self.directory = directory
        self.clock = clock
        # The router seam: one node's own Router, or (redis_url set) the cluster's ForwardingRouter,
        # which sends these calls to the elected leader and hands its offers back through deliver().
        self.router = router if router is not None else Router(
            queue_configs(settings),
            max_missed=settings.routing.max_missed_offers,
            auto_available=settings.routing.available_on_register,
        )
        self._waiters: dict[str, _Waiter] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loading: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Agents' phones get a Call-Info link to GET /api/calls/{id} on this port (None: no link).
        self.screen_pop_port: int | None = settings.http.port
        # Bridged calls by SIP Call-ID (API hold/transfer), and each call's hold time and transfers.
        self._live_talks: dict[str, LiveTalk] = {}
        self._hold_logs: weakref.WeakKeyDictionary[Any, HoldLog] = weakref.WeakKeyDictionary()
        self.writer: RecordSink | None = None  # where hold_s / holds / transfers go (the app's writer)
        self._wrap_up_since: dict[str, float] = {}  # agent → when their current wrap-up began
        # Router-driven state changes (reserved, on call, wrap-up, available) are logged as agent_state.
        self.router.agents.transitions = []
        self.router.agents.default_max_chats = settings.routing.default_max_chats
        self.callbacks = CallbackRunner(self)
        self.prompts: PromptCache | None = None  # the IVR's TTS cache (callback announcements to agents)
        # per-day counters end at midnight of routing.timezone: the day the reports count in
        self.local_day: Callable[[], float] = functools.partial(
            _seconds_to_midnight, settings.routing.timezone
        )
        install_trunk(endpoint, settings)
        # INVITEs from agents' registered phones: calls placed through us (CallManager routes them here)
        self.agent_calls = AgentCalls(self)
        # Scale-out: the cluster's router carries the shared registration view (cluster/bindings.py):
        # this node's REGISTERs go there, and agents registered through other nodes ring from here.
        shared = getattr(self.router, "bindings", None)
        if shared is not None:
            shared.attach(registration)

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.directory is not None:
            agents = await asyncio.to_thread(self.directory.list_agents)
            for agent in agents:
                self._define(agent)
        await self.callbacks.restore(getattr(self.directory, "engine", None))
        self.registration.listeners.append(self._on_binding)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.registration.listeners.remove(self._on_binding)
        tasks = [t for t in [self._task, *self._tasks] if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    def _define(self, agent: Any) -> None:
        # Every agent also has a personal skill, so a transfer to a named agent waits in DIRECT_QUEUE
        # for that agent alone, through the same reservation and ring-timeout rules as any offer.
        skills = {**dict(agent.skills or {}), personal_skill(agent.username): 1}
        languages = frozenset(getattr(agent, "languages", None) or ())  # none: any caller's language
        max_chats = getattr(agent, "max_chats", None)  # None: the board's default (from the config)
        self.router.agents.define(agent.username, skills, languages, now=self.clock(), max_chats=max_chats)

    def define_agent(self, agent: Any) -> None:
        """An account added or changed (admin API): the next routing decision uses its skills, languages
        and max chats; a call in progress is not affected. A changed password is re-read at once."""
        self._define(agent)
        self.registration.forget(agent.username)
        self._presence(agent.username, bool(self.registration.lookup(agent.username)))
        self._kick()

    def remove_agent(self, username: str) -> None:
        """An account deleted: out of routing and its phones unbound. Raises routing's InvalidTransition
        (nothing changed) while the agent rings, talks or is on a call of their own."""
        if username in self.router.agents:
            self.router.agents.remove(username)
        self.registration.forget(username, unbind=True)
        self._kick()

    def registered(self, username: str) -> bool:
        return bool(self.registration.lookup(username))

    # -- presence -----------------------------------------------------------------------------------

    def _on_binding(self, username: str, binding: Binding, registered: bool) -> None:
        if username not in self.router.agents:
            if registered and self.directory is not None and username not in self._loading:
                self._loading.add(username)
                self._spawn(self._load_then_login(username))
            return
        if getattr(self.registration, "shared", None) is not None:
            # A cluster: the shared view decided (atomically in Redis) that this is the agent's first
            # or last binding on any node; this node's board may not have seen the agent log in.
            self._event(username, AgentEvent.LOGIN if registered else AgentEvent.LOGOUT, self.clock())
            return
        self._presence(username, registered)

    async def _load_then_login(self, username: str) -> None:
        try:
            assert self.directory is not None
            agent = await asyncio.to_thread(self.directory.get_agent, username)
        finally:
            self._loading.discard(username)
        if agent is None:
            return
        self._define(agent)
        self._presence(username, bool(self.registration.lookup(username)))

    def _presence(self, username: str, registered: bool) -> None:
        now = self.clock()
        state = self.router.agents[username].state
        if registered and state == AgentState.OFFLINE:
            self._event(username, AgentEvent.LOGIN, now)
        elif not registered and not self.registration.lookup(username) and state != AgentState.OFFLINE:
            self._event(username, AgentEvent.LOGOUT, now)

    def _event(self, username: str, event: AgentEvent, now: float, **kwargs: Any) -> None:
        self.router.agent_event(username, event, now, **kwargs)
        self._kick()  # logs the agent_state changes

    def set_state(self, username: str, state: str, reason: str | None = None) -> dict[str, Any]:
        """An agent's (or supervisor's) request: available, not_ready or offline. Raises KeyError for an
        unknown agent and routing's InvalidTransition when the state machine forbids it now."""
        event = {
            "available": AgentEvent.SET_AVAILABLE,
            "not_ready": AgentEvent.SET_NOT_READY,
            "offline": AgentEvent.SET_OFFLINE,
        }[state.replace("-", "_")]
        self._event(username, event, self.clock(), reason=reason)
        return dict(self.snapshot()["agents"][username])

    def snapshot(self) -> dict[str, Any]:
        return self.router.snapshot(self.clock())

    # -- the timer / dispatch task ------------------------------------------------------------------

    def _kick(self) -> None:
        self._log_transitions()
        self._wake.set()

    def _log_transitions(self) -> None:
        """Every state change of every agent — presence and the router's own (offer, answer, hang-up,
        wrap-up end) — as one ``agent_state`` line."""
        changes: list[Transition] | None = self.router.agents.transitions
        if not changes:
            return
        self.router.agents.transitions = []
        for t in changes:
            log_event(log, "agent_state", agent=t.agent, state=str(t.after), was=str(t.before),
                      reason=t.reason, call_id=t.call_id)
            self._note_wrap_up(t)

    def _note_wrap_up(self, t: Transition) -> None:
        """How long the agent's wrap-up after a call lasted (the timer, or ended early) goes onto that
        call's record as ``wrap_up_s`` — written after the call's own end, when the wrap-up ends."""
        if t.after is AgentState.WRAP_UP:
            self._wrap_up_since[t.agent] = t.at
        elif t.before is AgentState.WRAP_UP:
            since = self._wrap_up_since.pop(t.agent, None)
            if since is not None and t.call_id and self.writer is not None:
                self.writer.call_extra(t.call_id, {"wrap_up_s": round(t.at - since, 2)})

    async def _run(self) -> None:
        while True:
            timer = self.router.get_timer()
            timeout = None if timer is None else max(0.0, timer - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            try:
                self._step(self.clock())
            except Exception as exc:  # noqa: BLE001 - one bad step must not stop routing for everyone
                log_event(log, "acd_error", level=logging.ERROR, error=repr(exc))

    def _step(self, now: float) -> None:
        if self.router.day_ends_at is None:  # per-day talk times (least_talk_time) end at local midnight
            self.router.day_ends_at = now + self.local_day()
        for overflow in self.router.handle_timer(now):
            self._deliver(overflow.call_id, overflow)
        for offer in self.router.dispatch(now):
            if not self._deliver(offer.call_id, offer):
                for agent in offer.agents:
                    self.router.offer_failed(offer.call_id, agent, now, missed=False)
        self._log_transitions()

    def deliver(self, call_id: str, item: Offer | Overflow) -> bool:
        """Hand an offer or overflow decided elsewhere (the cluster's leader) to the waiting caller;
        False when no caller of that id waits here (the glue frees the offer's agents)."""
        return self._deliver(call_id, item)

    def _deliver(self, call_id: str, item: Offer | Overflow) -> bool:
        waiter = self._waiters.get(call_id)
        if waiter is None:
            if isinstance(item, Offer) and item.callback:  # the caller left a number: call back
                self._spawn(self.callbacks.run(item))
                return True
            return False
        waiter.events.put_nowait(item)
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- a caller in a queue ------------------------------------------------------------------------

    async def serve(
        self, control: LiveCallControl, request: QueueRequest, visits: list[QueueVisit]
    ) -> QueueResult:
        """Queue the caller, ring agents, bridge the answer; returns when the bridged call ends (agent
        hung up, caller still there: the flow goes on) or the caller overflows."""
        queue = request.queue
        call_id = control.session.call_id
        started = self.clock()
        hops = 0
        while True:
            visit = QueueVisit(queue, self.clock())
            visits.append(visit)
            result, target = await self._serve_one(control, request, queue, visit, started)
            if target is None or hops >= 5:
                return result
            hops += 1
            if isinstance(target, str):  # overflow into another queue keeps the caller in line
                log_event(log, "queue_overflow_to", call_id=call_id, queue=queue, target=target)
                queue = target
                continue
            log_event(log, "call_transferred", call_id=call_id, by=visit.agent, target=str(target))
            if target.outside:
                outcome = await self.transfer_outside(control, target, timeout_s=30.0, visits=visits)
                if outcome.outcome == "answered":
                    return result
                queue = visit.queue  # nobody took the outside call: back to the queue it came from
                continue
            if target.kind == "agent":
                request = replace(request, skills={personal_skill(target.value): 1})
                queue = DIRECT_QUEUE
            else:
                request = replace(request, skills={})
                queue = target.value

    async def _serve_one(
        self, control: LiveCallControl, request: QueueRequest, queue: str, visit: QueueVisit, started: float
    ) -> tuple[QueueResult, str | TransferTarget | None]:
        call_id = control.session.call_id
        waiter = _Waiter(call_id)
        now = self.clock()
        try:
            joined = self.router.enqueue(
                call_id,
                queue,
                now,
                priority=request.priority,
                skills=dict(request.skills) or None,
                # a transfer to a named agent reaches that agent whatever languages they listed
                language=None if queue == DIRECT_QUEUE else control.language,
            )
        except KeyError:
            log_event(log, "queue_unknown", level=logging.ERROR, call_id=call_id, queue=queue)
            visit.disposition, visit.ended_at = "overflowed", now
            return QueueResult("closed"), None
        if isinstance(joined, Overflow):
            visit.disposition, visit.ended_at = "overflowed", now
            await self._overflow_action(control, request, queue, joined.target, visit)
            return self._overflow_result(joined, started)
        self._waiters[call_id] = waiter
        log_event(
            log, "queue_joined", call_id=call_id, queue=queue, position=joined, priority=request.priority
        )
        self._kick()
        leave_reason = "abandoned"
        # The hold task is this flow task's child: cancelled and awaited before we return, whatever
        # happens (a TaskGroup would wrap the caller's CallerHangup in an ExceptionGroup).
        hold = waiter.hold = asyncio.ensure_future(self._hold(control, request, call_id))
        try:
            result, target, leave_reason = await self._wait_for_agent(
                control, request, waiter, visit, started, hold
            )
            return result, target
        except CallerHangup:
            if visit.answered_at is None and visit.disposition not in ("callback", "voicemail"):
                visit.disposition = "abandoned"
            visit.hangup_by = visit.hangup_by or ("server" if visit.disposition == "callback" else "caller")
            raise
        finally:
            for task in {hold, waiter.hold}:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            self._waiters.pop(call_id, None)
            if not self.router.is_callback(call_id):  # a callback keeps the caller's place
                self.router.leave(call_id, self.clock(), reason=leave_reason)  # type: ignore[arg-type]
            if visit.ended_at is None:
                visit.ended_at = self.clock()
            self._kick()

    async def _wait_for_agent(
        self,
        control: LiveCallControl,
        request: QueueRequest,
        waiter: _Waiter,
        visit: QueueVisit,
        started: float,
        hold: asyncio.Task[None],
    ) -> tuple[QueueResult, str | TransferTarget | None, str]:
        loop = asyncio.get_running_loop()
        deadline = (
            None
            if request.max_wait_s is None
            else loop.time() + request.max_wait_s - (self.clock() - started)
        )
        keys = (
            asyncio.ensure_future(self._callback_key(control, request, started))
            if request.callback_key
            else None
        )
        try:
            return await self._wait_loop(control, request, waiter, visit, started, hold, deadline, keys)
        finally:
            if keys is not None:
                keys.cancel()

    async def _wait_loop(
        self,
        control: LiveCallControl,
        request: QueueRequest,
        waiter: _Waiter,
        visit: QueueVisit,
        started: float,
        hold: asyncio.Future[None],
        deadline: float | None,
        keys: asyncio.Future[None] | None,
    ) -> tuple[QueueResult, str | TransferTarget | None, str]:
        loop = asyncio.get_running_loop()
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                visit.disposition, visit.ended_at = "overflowed", self.clock()
                self.router.leave(waiter.call_id, self.clock(), reason="overflow")
                overflow = self.router.queues[visit.queue].overflow
                await self._overflow_action(control, request, visit.queue, overflow, visit, waiter)
                return QueueResult("timeout", waited_s=self.clock() - started), None, "overflow"
            if keys is not None and keys.done():
                keys = await self._callback_asked(control, request, waiter, visit, started)
                continue
            getter = asyncio.ensure_future(waiter.events.get())
            pending: set[asyncio.Future[Any]] = {getter} if keys is None else {getter, keys}
            try:
                await control._race(
                    asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                )
            finally:
                if not getter.done():
                    getter.cancel()
            if not getter.done() or getter.cancelled():
                continue
            item = getter.result()
            if isinstance(item, Overflow):
                visit.disposition, visit.ended_at = "overflowed", self.clock()
                await self._overflow_action(control, request, visit.queue, item.target, visit, waiter)
                result = self._overflow_result(item, started)
                target = (
                    item.target.removeprefix("queue:")
                    if item.target and item.target.startswith("queue:")
                    else None
                )
                return result[0], target, "overflow"
            answered = await self._offer(control, item, visit)
            if answered is None:
                continue
            hold.cancel()
            if waiter.hold is not None:
                waiter.hold.cancel()
            visit.answered_at = self.clock()
            visit.agent = answered.agent
            visit.disposition = "answered"
            self.router.leave(waiter.call_id, self.clock(), reason="answered")
            self._kick()
            transfer = await self._talk(control, answered, visit, request.hold_music)
            return (
                QueueResult("answered", agent=answered.agent, waited_s=visit.answered_at - started),
                transfer,
                "answered",
            )

    # -- callbacks and overflow actions ---------------------------------------------------------------

    async def _callback_key(self, control: LiveCallControl, request: QueueRequest, started: float) -> None:
        """Returns once the caller presses the callback key (after ``callback_after_s`` of waiting);
        other keys pressed while waiting are dropped."""
        while True:
            digit = await control._next_digit(3600.0)
            if digit == request.callback_key and self.clock() - started >= request.callback_after_s:
                return

    async def _callback_asked(
        self,
        control: LiveCallControl,
        request: QueueRequest,
        waiter: _Waiter,
        visit: QueueVisit,
        started: float,
    ) -> asyncio.Future[None]:
        """The caller pressed the callback key: out of offers while we ask for the number (keeping the
        place); a number → the entry becomes a callback and the call ends (CallerHangup); none → back
        to waiting, the key watched again."""
        call_id = waiter.call_id
        self.router.hold(call_id, self.clock())
        self._kick()
        while not waiter.events.empty():  # an offer made just before the hold is void now
            waiter.events.get_nowait()
        if waiter.hold is not None:
            waiter.hold.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter.hold
        rtp = control.session.rtp
        if rtp is not None and not rtp.closed:
            rtp.stop_playback()
        log_event(log, "callback_offered", call_id=call_id, queue=visit.queue)
        try:
            number = await ask_callback_number(
                control, caller_id=control.caller, language=control.language, allow_stay=True
            )
        except CallerHangup:
            self.router.resume(call_id, self.clock())  # the finally of _serve_one counts them abandoned
            raise
        if number is not None:
            await self._make_callback(control, request, visit, number, started)
        self.router.resume(call_id, self.clock())
        self._kick()
        waiter.hold = asyncio.ensure_future(self._hold(control, request, call_id))
        return asyncio.ensure_future(self._callback_key(control, request, started))

    async def _make_callback(
        self, control: LiveCallControl, request: QueueRequest, visit: QueueVisit, number: str, started: float
    ) -> None:
        """The caller's entry (in line, or back in line at its arrival time after an overflow) becomes a
        callback; the caller hears so and the call ends (raises CallerHangup)."""
        call_id = control.session.call_id
        now = self.clock()
        if call_id in self.router.waiting:
            self.router.to_callback(call_id, now)
        else:
            joined = self.router.enqueue(
                call_id, visit.queue, now, priority=request.priority, skills=dict(request.skills) or None,
                language=None if visit.queue == DIRECT_QUEUE else control.language,
                since=visit.enqueued_at, callback=True,
            )
            assert not isinstance(joined, Overflow)
            self.router.stats[visit.queue].callbacks += 1
        visit.disposition, visit.ended_at = "callback", now
        await self.callbacks.register(
            call_id, visit.queue, number, priority=request.priority, skills=dict(request.skills),
            language=control.language, waited_s=now - visit.enqueued_at, control=control,
        )
        self._kick()
        await confirm_and_hang_up(control, number, control.language)

    async def _overflow_action(
        self,
        control: LiveCallControl,
        request: QueueRequest,
        queue: str,
        target: str | None,
        visit: QueueVisit,
        waiter: _Waiter | None = None,
    ) -> None:
        """``overflow: voicemail`` or ``callback`` from the queue's config act here, whatever the flow
        says next; both end the call (CallerHangup) once done. Other targets: nothing to do here."""
        if target not in ("voicemail", "callback"):
            return
        if waiter is not None and waiter.hold is not None:
            waiter.hold.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter.hold
        rtp = control.session.rtp
        if rtp is not None and not rtp.closed:
            rtp.stop_playback()
        log_event(log, "queue_overflow_action", call_id=control.session.call_id, queue=queue, action=target)
        if target == "callback":
            number = await ask_callback_number(
                control, caller_id=control.caller, language=control.language, allow_stay=False
            )
            if number is not None:
                await self._make_callback(control, request, visit, number, visit.enqueued_at)
            return
        await self._overflow_voicemail(control, visit)

    async def _overflow_voicemail(self, control: LiveCallControl, visit: QueueVisit) -> None:
        """Record a message as the flow's voicemail node does (a ticket when a ticket system is there)."""
        zh = control.language.lower().startswith("zh")
        await control.say(
            "现在没有空闲的客服。请在提示音后留言，按井号键结束。" if zh
            else "Nobody can take your call right now. Please leave a message after the tone, "
            "then press the hash key.",
            language=control.language,
        )
        rec = await control.record(max_s=120.0, beep=True, terminator="#", max_silence_s=5.0)
        visit.disposition = "voicemail"
        tickets = control.runtime.services.tickets
        if rec.file is not None and tickets is not None:
            from callcenter.ivr.services import TicketDraft

            try:
                await tickets.create(TicketDraft(
                    subject=f"Voicemail from {control.caller or 'unknown caller'} ({visit.queue} queue)",
                    body=f"Voicemail, {rec.duration_s:.0f} s.",
                    tags=("voicemail",),
                    caller=control.caller,
                    call_id=control.session.call_id,
                    recording=rec.file,
                ))
            except Exception as exc:  # noqa: BLE001 - the recording is kept either way
                log_event(log, "voicemail_ticket_failed", level=logging.WARNING, error=repr(exc))
        if rec.ended_by != "hangup":
            with contextlib.suppress(CallerHangup):
                await control.say("谢谢，再见。" if zh else "Thank you. Goodbye.", language=control.language)
            await control.hangup("voicemail")
        raise CallerHangup("voicemail left")

    def _overflow_result(self, overflow: Overflow, started: float) -> tuple[QueueResult, str | None]:
        waited = self.clock() - started
        if overflow.reason == "full":
            return QueueResult("full", waited_s=waited), None
        if overflow.reason == "no_agents":
            return QueueResult("closed", waited_s=waited), None
        return QueueResult("timeout", waited_s=waited), None

    async def _offer(self, control: LiveCallControl, offer: Offer, visit: QueueVisit) -> RingResult | None:
        """Ring the offered agents; the answer's RingResult, or None (the caller stays queued)."""
        contacts = {
            name: [RingTarget.from_binding(b) for b in self.registration.lookup(name)]
            for name in offer.agents
        }
        for name in offer.agents:
            visit.offered.append(name)
        session = control.session
        first = next((t for targets in contacts.values() for t in targets), None)
        base = None
        if first is not None and self.screen_pop_port is not None:
            # the address of ours the agent's phone reaches (sip.public_host when set)
            host = format_host(self.endpoint.local_ip_for(first.dest.host))
            base = f"http://{host}:{self.screen_pop_port}/api"
        info = control.caller_info(offer.queue, base)
        if not self.settings.routing.caller_id_header:
            info = replace(info, number="", display_name=None)
        ring = AgentRing(
            self.endpoint,
            self.media,
            info,
            {n: c for n, c in contacts.items() if c},
            ptime_ms=self.settings.media.ptime_ms,
            timeout_s=offer.timeout_s,
            srtp=self.settings.media.srtp,
        )
        log_event(log, "agent_offered", call_id=session.call_id, queue=offer.queue, agents=list(offer.agents),
                  screen_pop=info.screen_pop_url)
        try:
            result = await control._race(ring.ring())
        except CallerHangup:
            for name in offer.agents:
                self.router.offer_failed(offer.call_id, name, self.clock(), missed=False)
            raise
        now = self.clock()
        if result.agent is not None:
            try:
                others = self.router.offer_answered(offer.call_id, result.agent, now)
            except OfferGone:  # the offer expired under us (never reported in time): drop that leg
                log_event(
                    log,
                    "agent_answer_too_late",
                    level=logging.WARNING,
                    call_id=session.call_id,
                    agent=result.agent,
                )
                await close_leg(result.leg, result.rtp, "offer withdrawn")
                self._kick()
                return None
            log_event(log, "agent_answered", call_id=session.call_id, agent=result.agent, released=others)
            return result
        for name in offer.agents:
            outcome = result.outcomes.get(name, "unreachable")
            missed = outcome in ("rejected", "no_answer", "unreachable")
            self.router.offer_failed(offer.call_id, name, now, missed=missed)
            log_event(log, "agent_offer_failed", call_id=session.call_id, agent=name, outcome=outcome)
        self._kick()
        return None

    async def _talk(
        self,
        control: LiveCallControl,
        answered: RingResult,
        visit: QueueVisit,
        hold_music: str | None = None,
    ) -> TransferTarget | None:
        """Bridge caller and agent until either hangs up (or the agent's RTP stops), with hold and
        transfers (calls/talk.py); a blind transfer (REFER from the agent's phone, RFC 3515, or the
        API) ends the agent's part and returns its target. The agent who has the caller last is
        released here, whatever ends it."""
        assert answered.agent is not None
        call_id = control.session.call_id
        hold_log = self._hold_logs.setdefault(control, HoldLog())
        talk = LiveTalk(self, control, answered, visit, control.queue_visits, hold_log)
        self._live_talks[call_id] = talk
        try:
            talk.music = await control.hold_music(hold_music)
            return await talk.run(self._agent_gone)
        except CallerHangup:
            talk.visit.hangup_by = talk.visit.hangup_by or "caller"
            raise
        finally:
            if self._live_talks.get(call_id) is talk:
                del self._live_talks[call_id]
            talk.visit.ended_at = self.clock()
            control.on_bridge(None, talk.agent)
            if not talk.handed_off:  # else the target's leg went on with another call (join)
                how = "caller hung up" if talk.visit.hangup_by == "caller" else "call ended"
                await close_leg(talk.leg, talk.rtp, how)
                self.router.call_ended(talk.agent, self.clock())
            self._kick()
            if self.writer is not None:
                self.writer.call_extra(call_id, hold_log.as_json())

    # -- hold and transfers through the API (and the phone's REFER) ---------------------------------

    def live_talk(self, call_id: str) -> LiveTalk:
        """The bridged call with this SIP Call-ID; KeyError when no agent has it now."""
        return self._live_talks[call_id]

    def hold_call(self, call_id: str) -> dict[str, Any]:
        return self.live_talk(call_id).hold()

    def resume_call(self, call_id: str) -> dict[str, Any]:
        return self.live_talk(call_id).resume()

    def transfer_call(self, call_id: str, to: str, mode: str) -> dict[str, Any]:
        """``to``: ``queue:NAME``, ``agent:NAME`` or a SIP URI; ``mode`` blind or attended. KeyError (no
        such call), ValueError (nothing reachable by that name), TransferError (not now)."""
        talk = self.live_talk(call_id)
        target = self.resolve_transfer(to)
        if target is None:
            raise ValueError(f"no such agent, queue or reachable SIP URI: {to}")
        if target.kind == "agent" and target.value == talk.agent:
            raise ValueError(f"{to}: the call is with that agent already")
        return talk.transfer(target, mode, "api")

    def complete_transfer(self, call_id: str) -> dict[str, Any]:
        return self.live_talk(call_id).complete()

    def cancel_transfer(self, call_id: str) -> dict[str, Any]:
        return self.live_talk(call_id).cancel()

    def refer_with_replaces(self, talk: LiveTalk, refer_to: str) -> int:
        """An attended transfer from the agent's phone (RFC 5589 §7), REFER on the caller's leg: the
        Refer-To's Replaces (RFC 3891) names the agent's own call through us to the consulted party;
        the caller is joined with that party (202). 400 when the Replaces is malformed, 481 when it
        names no call of ours placed by that agent (RFC 3891 §3), 491 while that call is not yet
        answered by its target."""
        try:
            replaces = parse_replaces(refer_to)
        except ValueError:
            return 400
        consult = self.agent_calls.find(replaces)
        if consult is None or consult.agent != talk.agent:
            return 481
        other = self._live_talks.get(consult.call_id)
        if other is None or other is talk:
            return 491  # the consulted party has not answered (yet)
        return talk.join(other, notify=talk.leg)

    def refer_on_agent_call(self, call: Any, agent: str, refer_to: str) -> int:
        """The same transfer, REFER on the agent's own call to the consulted party: the Replaces names
        the leg we rang the agent on for the caller (RFC 3891: to-tag ours, from-tag the phone's)."""
        try:
            replaces = parse_replaces(refer_to)
        except ValueError:
            return 400
        first = next((t for t in self._live_talks.values() if names_dialog(t.leg.dialog, replaces)), None)
        if first is None or first.agent != agent:
            return 481
        other = self._live_talks.get(call.call_id)
        if other is None:
            return 491
        return first.join(other, notify=call)

    def spawn(self, coro: Any) -> None:
        self._spawn(coro)

    def kick(self) -> None:
        self._kick()

    async def ring_for_consult(
        self,
        control: LiveCallControl,
        target: TransferTarget,
        consult_id: str,
        visit: QueueVisit,
        *,
        timeout_s: float,
    ) -> RingResult | str:
        """Ring a queue's or a named agent's phones for an attended transfer: the consultation waits
        in the router under its own id (``consult_id``), so the target is reserved and rung by the same
        rules as any offer. The answer, or why nobody took it (no_agents, no_answer, failed)."""
        queue = DIRECT_QUEUE if target.kind == "agent" else target.value
        skills = {personal_skill(target.value): 1} if target.kind == "agent" else None
        try:
            joined = self.router.enqueue(consult_id, queue, self.clock(), skills=skills, language=None)
        except KeyError:
            return "failed"
        if isinstance(joined, Overflow):
            return "no_agents" if joined.reason == "no_agents" else "busy"
        waiter = _Waiter(consult_id)
        self._waiters[consult_id] = waiter
        self._kick()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return "no_answer"
                try:
                    item = await asyncio.wait_for(waiter.events.get(), remaining)
                except TimeoutError:
                    continue
                if isinstance(item, Overflow):
                    return "no_agents" if item.reason == "no_agents" else "no_answer"
                answered = await self._offer(control, item, visit)
                if answered is not None:
                    return answered
        finally:
            self._waiters.pop(consult_id, None)
            self.router.leave(consult_id, self.clock(), reason="transferred")
            self._kick()

    async def uri_ring(
        self, control: LiveCallControl, uri: str, *, timeout_s: float, caller_id: str | None = None
    ) -> AgentRing | str:
        """An AgentRing for an outside SIP URI (the caller's number shown), or why there is none."""
        target = TransferTarget("uri", uri)
        return await self.outside_ring(control, target, timeout_s=timeout_s, caller_id=caller_id)

    async def outside_ring(
        self,
        control: LiveCallControl,
        target: TransferTarget,
        *,
        timeout_s: float,
        caller_id: str | None = None,
    ) -> AgentRing | str:
        """An AgentRing for an outside SIP URI, or a number at the SIP trunk (``number_uri``; the
        trunk's digest challenge is answered by the endpoint, ``install_trunk``); or why there is none.
        The branch is named ``target.value`` in the ring's outcomes."""
        info = control.caller_info(None, None)
        if target.kind == "number":
            trunk = self.settings.sip.trunk
            try:
                uri = number_uri(self.settings, target.value)
            except CallcenterError as exc:
                return str(exc)
            assert trunk is not None
            shown = caller_id or trunk.from_user or trunk.username or info.number
            info = replace(info, number=shown, display_name=info.display_name or trunk.from_display)
        else:
            uri = target.value
            if caller_id:
                info = replace(info, number=caller_id)
        # The URI's transport (sips: or ;transport=tls → TLS, the trunk's certificate checked)
        try:
            parsed = parse_uri(uri)
            dest = await outside_dest(self.endpoint, self.settings, str(parsed))
        except (ValueError, SipParseError):
            return f"not a SIP URI: {uri}"
        except OSError as exc:
            return f"cannot resolve {parsed.host_for_socket}: {exc}"
        ring_target = RingTarget(str(parsed), dest)
        # a TrunkRing: re-offers plain RTP to a trunk/peer refusing SRTP under media.srtp optional
        return TrunkRing(
            self.endpoint, self.media, self.settings, info, target.value, ring_target, timeout_s=timeout_s
        )

    async def notify_refer(self, leg: Any) -> None:
        """NOTIFY with a sipfrag 200 on ``leg``'s dialog (RFC 3515 §2.4.5): the REFER it sent worked;
        returns once the phone answered it (or after 5 s)."""
        if leg.dialog is None or leg.state != "confirmed":
            return
        await self._refer_worked(leg.dialog)

    def _refer_worked(self, dialog: Any) -> Coroutine[Any, Any, Any]:
        """The final NOTIFY of an implicit REFER subscription: sipfrag 200, subscription terminated."""
        return self.endpoint.request_in_dialog(
            dialog,
            "NOTIFY",
            extra=[
                ("Event", "refer"),
                ("Subscription-State", "terminated;reason=noresource"),
                ("Content-Type", "message/sipfrag;version=2.0"),
            ],
            body=b"SIP/2.0 200 OK\r\n",
            timeout=5.0,
        )

    async def finish_refer(self, leg: Any, gone: asyncio.Future[str]) -> None:
        """Tell the transferring phone it worked (NOTIFY with a sipfrag, RFC 3515 §2.4.5) and give it a
        moment to hang up itself, as phones do after a blind transfer; then we end that leg."""
        if leg.dialog is None:
            return
        self._spawn(self._refer_worked(leg.dialog))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(gone), 2.0)

    def resolve_transfer(self, refer_to: str) -> TransferTarget | None:
        """A Refer-To (or a flow's or the API's transfer target) as a queue, one of our agents, an
        outside URI or a number for the trunk: ``sip:support@us`` → queue support; ``sip:bob@us`` →
        agent bob; ``sip:+4930123@us``, ``tel:+4930123``, ``number:+4930123`` or plain ``+4930123`` →
        that number through the trunk; ``sip:x@elsewhere`` → the URI; ``queue:NAME`` / ``agent:NAME``
        name them directly. None when it names nothing we can reach (a number without a trunk)."""
        text = refer_to.strip()
        if text.startswith("queue:") or text.startswith("agent:"):
            kind, _, name = text.partition(":")
            if kind == "queue" and name in self.router.queues and name != DIRECT_QUEUE:
                return TransferTarget("queue", name)
            if kind == "agent" and name in self.router.agents:
                return TransferTarget("agent", name)
            return None
        if text.startswith("number:"):
            return self._number(text.removeprefix("number:"))
        if _DIGITS.fullmatch(text):
            return self._number(text)
        try:
            uri = parse_name_addr(text).parsed_uri()
        except (ValueError, SipParseError):
            return None
        if uri.scheme == "tel":  # RFC 3966: tel:+4930123;phone-context=... (parameters dropped)
            return self._number(str(uri).removeprefix("tel:").split(";")[0])
        if uri.scheme not in ("sip", "sips"):
            return None
        user = uri.user or ""
        if self._is_local(uri.host_for_socket, uri.port):
            if user in self.router.queues and user != DIRECT_QUEUE:
                return TransferTarget("queue", user)
            if user in self.router.agents:
                return TransferTarget("agent", user)
            if _DIGITS.fullmatch(user) and user not in self.settings.ivr.numbers:
                return self._number(user)
            return None
        return TransferTarget("uri", str(uri))

    def _number(self, text: str) -> TransferTarget | None:
        """A phone number for the trunk (dialling rules applied later, by ``number_uri``)."""
        trunk = self.settings.sip.trunk
        if trunk is None:
            return None
        try:
            normalise_number(trunk, text)
        except CallcenterError:
            return None
        return TransferTarget("number", re.sub(r"[\s\-.()]", "", text))

    def _is_local(self, host: str, port: int | None) -> bool:
        sip = self.settings.sip
        ours = {sip.host, sip.public_host, sip.host_v6, "127.0.0.1", "::1", "localhost"}
        if host not in ours and not (sip.host in ("0.0.0.0", "::") and _is_own_address(host)):
            return False
        return port is None or port == (self.endpoint.bound_port or sip.port)

    async def transfer_outside(
        self,
        control: LiveCallControl,
        target: TransferTarget | str,
        *,
        timeout_s: float,
        visits: list[QueueVisit] | None = None,
        caller_id: str | None = None,
    ) -> TransferResult:
        """Ring an outside SIP URI (a str) or a number through the trunk for the caller and bridge
        the answer until one side hangs up."""
        if isinstance(target, str):
            target = TransferTarget("uri", target)
        uri = target.value
        ring = await self.outside_ring(control, target, timeout_s=timeout_s, caller_id=caller_id)
        if isinstance(ring, str):
            return TransferResult("failed", ring)
        visit = QueueVisit(f"transfer:{uri}", self.clock())
        if visits is not None:
            visits.append(visit)
        log_event(log, "transfer_ringing", call_id=control.session.call_id, target=uri)
        result = await control._race(ring.ring())
        if result.agent is None:
            outcome = result.outcomes.get(uri, "unreachable")
            visit.disposition, visit.ended_at = "overflowed", self.clock()
            return TransferResult(
                "busy" if outcome == "rejected" else ("no_answer" if outcome == "no_answer" else "failed"),
                outcome,
            )
        visit.answered_at, visit.agent, visit.disposition = self.clock(), uri, "answered"
        await self._bridge_outside(control, result, visit)
        return TransferResult("answered")

    async def _bridge_outside(
        self, control: LiveCallControl, answered: RingResult, visit: QueueVisit
    ) -> None:
        caller_rtp = control.session.rtp
        assert answered.leg is not None and answered.rtp is not None
        try:
            if caller_rtp is None or caller_rtp.closed:
                raise CallerHangup("the call has ended")
            caller_rtp.stop_playback()
            with Bridge(caller_rtp, answered.rtp):
                await control._race(self._agent_gone(answered.leg, answered.rtp))
            visit.hangup_by = "agent"
        except CallerHangup:
            visit.hangup_by = "caller"
            raise
        finally:
            visit.ended_at = self.clock()
            await close_leg(answered.leg, answered.rtp, "call ended")

    async def transfer(
        self, control: LiveCallControl, target: str, *, timeout_s: float, caller_id: str | None
    ) -> TransferResult:
        """The IVR's transfer node: ``agent:NAME``, a queue (``queue:NAME`` or its bare name), a SIP
        URI, or a number (``+4930123``, ``tel:``) through the trunk."""
        bare = ":" not in target and target in self.router.queues
        resolved = self.resolve_transfer(f"queue:{target}" if bare else target)
        if resolved is None:
            return TransferResult("failed", f"no such agent, queue or reachable URI: {target}")
        if resolved.outside:
            return await self.transfer_outside(
                control, resolved, timeout_s=timeout_s, visits=control.queue_visits, caller_id=caller_id
            )
        skills = {personal_skill(resolved.value): 1} if resolved.kind == "agent" else {}
        queue = DIRECT_QUEUE if resolved.kind == "agent" else resolved.value
        result = await self.serve(
            control, QueueRequest(queue=queue, skills=skills, max_wait_s=timeout_s), control.queue_visits
        )
        if result.outcome == "answered":
            return TransferResult("answered")
        return TransferResult("no_answer" if result.outcome == "timeout" else "busy", result.outcome)

    async def _agent_gone(self, leg: Any, rtp: Any) -> str:
        """The agent leg ended (BYE) or its RTP stopped for ``media.rtp_timeout_s`` (phone vanished)."""
        timeout = self.settings.media.rtp_timeout_s
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not leg.ended.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(leg.ended), min(1.0, timeout / 4))
            if rtp.last_received_at is not None:
                last = max(last, rtp.last_received_at)
            if loop.time() - last >= timeout and not leg.ended.done():
                return "rtp-timeout"
        return str(leg.ended.result())

    # -- hold music and announcements -----------------------------------------------------------------

    async def _hold(self, control: LiveCallControl, request: QueueRequest, call_id: str) -> None:
        """Hold music while waiting; every ``announce_every_s`` the announcement and, when asked for,
        the caller's position and estimated wait."""
        try:
            music = await control.hold_music(request.hold_music)
            wait_place = getattr(self.router, "wait_for_place", None)  # a cluster's leader places callers
            if request.announce_position and wait_place is not None:
                await wait_place(call_id)  # bounded: the first announcement says the place when known
            while True:
                items = list(request.announce)
                if request.announce_position:
                    items.extend(self._position_prompts(call_id, control.language))
                items.extend(self._callback_prompts(call_id, request, control.language))
                if items:
                    await control.announce(items)
                rtp = control.session.rtp
                if rtp is None or rtp.closed:
                    return
                rtp.play(looping(music))
                await asyncio.sleep(max(request.announce_every_s, 5.0))
        except CallerHangup:
            return
        except Exception as exc:  # noqa: BLE001 - a broken prompt must not drop the waiting caller
            log_event(log, "hold_failed", level=logging.WARNING, call_id=call_id, error=repr(exc))

    def _callback_prompts(self, call_id: str, request: QueueRequest, language: str) -> list[PromptItem]:
        """With the position prompts: the callback offer, once the caller has waited long enough."""
        w = self.router.waiting.get(call_id)
        if not request.callback_key or w is None or self.clock() - w.enqueued_at < request.callback_after_s:
            return []
        key = {"*": "star", "#": "hash"}.get(request.callback_key, request.callback_key)
        zh = language.lower().startswith("zh")
        text = (
            f"如需回电并保留您的排队位置，请按{request.callback_key}。"
            if zh
            else f"To be called back without losing your place in line, press {key}."
        )
        return [PromptItem(text, None, language)]

    def _position_prompts(self, call_id: str, language: str) -> list[PromptItem]:
        position = self.router.position(call_id)
        if position is None:
            return []
        wait = self.router.estimated_wait_s(call_id, self.clock())
        zh = language.lower().startswith("zh")
        text = (
            f"您前面还有{position - 1}位客户。"
            if zh
            else ("You are next in line." if position == 1 else f"You are number {position} in the queue.")
        )
        if wait is not None and wait >= 60:
            minutes = round(wait / 60)
            text += (
                f"预计等待{minutes}分钟。"
                if zh
                else (f" Your estimated wait is about {minutes} minute{'s' if minutes != 1 else ''}.")
            )
        return [PromptItem(text, None, language)]


def _seconds_to_midnight(timezone: str) -> float:
    """Seconds from now to the next midnight in ``timezone`` (an IANA name)."""
    wall = time.time()
    return max(1.0, local_day(wall, ZoneInfo(timezone))[1] - wall)


def _is_own_address(host: str) -> bool:
    """Whether ``host`` is an address of this machine (a literal; names are not ours to resolve here)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    try:
        with socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False
