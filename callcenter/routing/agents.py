"""Agent states as an explicit transition table, and the board that holds every agent.

Each state change is one entry of :data:`TRANSITIONS`; the rules that depend on more than the state and
the event (auto-available at login, N missed offers, wrap-up length, a logout during a call) are
compositions of table entries, so the table is the whole truth about which moves exist.

Requests that cannot apply now because the agent is ringing or talking (log out, not-ready, offline)
are *deferred*: the agent stays reserved / on call and the request applies when that offer or call
ends. Ringing and talking are never cut short by the state machine; the glue ends the SIP legs.

Calls an agent places themselves through the server (to a colleague, a queue or a number) make them
``own_call`` (TAPI's BUSYOTHER): nothing is offered to them until the last such call ends, and then
they are back where they were — available, or not-ready with the same reason (Cisco Finesse does the
same after a dropped call: READY or NOT_READY "as before the call"). No wrap-up follows an internal
call (it is not a customer's contact); a call placed during wrap-up ends that wrap-up. An invariant
does the rest: an agent with a call of their own up is never available, not-ready or in wrap-up —
whatever brings them there (a queue call hanging up during a consult they dialled, a log-in, a failed
offer) continues into ``own_call``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from callcenter.core.errors import CallcenterError

__all__ = [
    "DEFERRED",
    "Transition",
    "TRANSITIONS",
    "Agent",
    "AgentBoard",
    "AgentEvent",
    "AgentState",
    "InvalidTransition",
    "check_max_chats",
    "language_ok",
]


class AgentState(StrEnum):
    OFFLINE = "offline"
    AVAILABLE = "available"
    RESERVED = "reserved"  # being offered a call (phone ringing)
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    NOT_READY = "not_ready"
    OWN_CALL = "own_call"  # on a call they placed themselves (colleague, queue, number)


class AgentEvent(StrEnum):
    LOGIN = "login"  # softphone registered / agent logged in
    LOGOUT = "logout"  # last contact unregistered or expired / agent logged out
    SET_AVAILABLE = "set_available"
    SET_NOT_READY = "set_not_ready"
    SET_OFFLINE = "set_offline"
    OFFER = "offer"  # reserved for an offer (router only)
    ANSWER = "answer"  # the offer was answered (router only)
    OFFER_FAILED = "offer_failed"  # rejected / no answer / caller gone / cancelled (router only)
    HANGUP = "hangup"  # the bridged call ended (router only)
    WRAP_UP_DONE = "wrap_up_done"  # wrap-up timer, or the agent ends wrap-up early
    PLACE_CALL = "place_call"  # the agent's phone placed a call through us (authenticated INVITE)
    OWN_CALL_ENDED = "own_call_ended"  # one of those calls ended


class InvalidTransition(CallcenterError):
    """The event is not allowed in the agent's current state (the message says which)."""


_S, _E = AgentState, AgentEvent
_BUSY = (_S.RESERVED, _S.ON_CALL, _S.OWN_CALL)
_FREE = (_S.AVAILABLE, _S.NOT_READY, _S.WRAP_UP)  # never while an own call is up: see the invariant

TRANSITIONS: Mapping[tuple[AgentState, AgentEvent], AgentState] = MappingProxyType(
    {
        (_S.OFFLINE, _E.LOGIN): _S.AVAILABLE,  # + SET_NOT_READY("login") unless auto_available
        (_S.OFFLINE, _E.LOGOUT): _S.OFFLINE,
        (_S.OFFLINE, _E.SET_AVAILABLE): _S.AVAILABLE,
        (_S.OFFLINE, _E.SET_NOT_READY): _S.NOT_READY,
        (_S.OFFLINE, _E.SET_OFFLINE): _S.OFFLINE,
        (_S.AVAILABLE, _E.LOGIN): _S.AVAILABLE,  # a REGISTER refresh
        (_S.AVAILABLE, _E.LOGOUT): _S.OFFLINE,
        (_S.AVAILABLE, _E.SET_AVAILABLE): _S.AVAILABLE,
        (_S.AVAILABLE, _E.SET_NOT_READY): _S.NOT_READY,
        (_S.AVAILABLE, _E.SET_OFFLINE): _S.OFFLINE,
        (_S.AVAILABLE, _E.OFFER): _S.RESERVED,
        (_S.AVAILABLE, _E.PLACE_CALL): _S.OWN_CALL,
        (_S.NOT_READY, _E.PLACE_CALL): _S.OWN_CALL,  # the reason comes back when the call ends
        (_S.WRAP_UP, _E.PLACE_CALL): _S.OWN_CALL,  # ends the wrap-up (its time goes on the record)
        # Set offline while registered: not in the ACD at all, so nothing to keep them from.
        (_S.OFFLINE, _E.PLACE_CALL): _S.OFFLINE,
        # Ringing: the offer keeps ringing until answered, timed out or cancelled, as an Avaya or Cisco
        # phone shows a second call; a no-answer meanwhile is not counted as missed (busy by their own
        # act, not ignoring the ring). Withdrawing it at once would need the glue to CANCEL the leg and
        # would gain the caller little: the ring timeout passes it on.
        (_S.RESERVED, _E.PLACE_CALL): _S.RESERVED,
        (_S.ON_CALL, _E.PLACE_CALL): _S.ON_CALL,  # a consult dialled from the phone (caller on hold)
        (_S.OWN_CALL, _E.PLACE_CALL): _S.OWN_CALL,  # a second one
        # On their own call: presence requests are deferred too, and these entries name where each
        # takes the agent when the last own call ends (one step: no flicker through "available").
        (_S.OWN_CALL, _E.LOGIN): _S.OWN_CALL,  # cancels a deferred LOGOUT
        (_S.OWN_CALL, _E.LOGOUT): _S.OFFLINE,  # deferred
        (_S.OWN_CALL, _E.SET_OFFLINE): _S.OFFLINE,  # deferred
        (_S.OWN_CALL, _E.SET_NOT_READY): _S.NOT_READY,  # deferred; also how a not-ready agent returns
        (_S.OWN_CALL, _E.SET_AVAILABLE): _S.OWN_CALL,  # cancels a deferred request: available afterwards
        (_S.OWN_CALL, _E.OWN_CALL_ENDED): _S.AVAILABLE,  # the last one; else a self-loop (+ deferred)
        # Any other own call ending (e.g. while on a queue call again) only updates the count.
        **{(s, _E.OWN_CALL_ENDED): s for s in _S if s is not _S.OWN_CALL},
        # Ringing: presence requests are deferred (see DEFERRED) until the offer ends.
        (_S.RESERVED, _E.LOGIN): _S.RESERVED,
        (_S.RESERVED, _E.LOGOUT): _S.RESERVED,
        (_S.RESERVED, _E.SET_AVAILABLE): _S.RESERVED,
        (_S.RESERVED, _E.SET_NOT_READY): _S.RESERVED,
        (_S.RESERVED, _E.SET_OFFLINE): _S.RESERVED,
        (_S.RESERVED, _E.ANSWER): _S.ON_CALL,
        (_S.RESERVED, _E.OFFER_FAILED): _S.AVAILABLE,  # + missed-offer rule, + deferred request
        # Talking: likewise deferred until the call ends.
        (_S.ON_CALL, _E.LOGIN): _S.ON_CALL,
        (_S.ON_CALL, _E.LOGOUT): _S.ON_CALL,
        (_S.ON_CALL, _E.SET_AVAILABLE): _S.ON_CALL,
        (_S.ON_CALL, _E.SET_NOT_READY): _S.ON_CALL,
        (_S.ON_CALL, _E.SET_OFFLINE): _S.ON_CALL,
        (_S.ON_CALL, _E.HANGUP): _S.WRAP_UP,  # + WRAP_UP_DONE at once when the queue has no wrap-up
        (_S.WRAP_UP, _E.LOGIN): _S.WRAP_UP,
        (_S.WRAP_UP, _E.LOGOUT): _S.OFFLINE,
        (_S.WRAP_UP, _E.SET_AVAILABLE): _S.AVAILABLE,  # ends wrap-up early
        (_S.WRAP_UP, _E.SET_NOT_READY): _S.NOT_READY,
        (_S.WRAP_UP, _E.SET_OFFLINE): _S.OFFLINE,
        (_S.WRAP_UP, _E.WRAP_UP_DONE): _S.AVAILABLE,  # + a deferred not-ready
        (_S.NOT_READY, _E.LOGIN): _S.NOT_READY,
        (_S.NOT_READY, _E.LOGOUT): _S.OFFLINE,
        (_S.NOT_READY, _E.SET_AVAILABLE): _S.AVAILABLE,
        (_S.NOT_READY, _E.SET_NOT_READY): _S.NOT_READY,  # a new reason
        (_S.NOT_READY, _E.SET_OFFLINE): _S.OFFLINE,
    }
)

# Requests remembered while ringing or talking; the latest wins. SET_AVAILABLE cancels any of them,
# LOGIN (the softphone registered again) cancels a deferred LOGOUT.
DEFERRED: frozenset[tuple[AgentState, AgentEvent]] = frozenset(
    (s, e) for s in _BUSY for e in (_E.LOGOUT, _E.SET_OFFLINE, _E.SET_NOT_READY)
)
_GOES_OFFLINE = (_E.LOGOUT, _E.SET_OFFLINE)
MISSED_REASON = "missed offers"


def language_ok(languages: frozenset[str], wanted: str | None) -> bool:
    """An agent without languages takes any caller; ``en`` serves ``en-us`` (primary subtag)."""
    if wanted is None or not languages:
        return True
    wanted = wanted.lower()
    return wanted in languages or wanted.split("-", 1)[0] in languages


@dataclass(frozen=True)
class Transition:
    """One state change, for the glue to log (``AgentBoard.transitions``)."""

    agent: str
    before: AgentState
    after: AgentState
    reason: str | None
    at: float
    call_id: str | None


@dataclass(eq=False)
class Agent:
    name: str
    skills: dict[str, int]
    languages: frozenset[str]
    state: AgentState = AgentState.OFFLINE
    since: float = 0.0  # when the current state began
    reason: str | None = None  # not-ready reason
    missed_in_row: int = 0
    idle_since: float = 0.0  # last time the agent became free after a call / log-in (longest idle)
    talk_s_total: float = 0.0
    talk_s_today: float = 0.0  # since the last day boundary (least_talk_time); Router.new_day resets it
    offers: int = 0
    answered: int = 0
    call_id: str | None = None  # the call reserved for (ringing) or bridged to
    last_offer_at: float | None = None
    pending: AgentEvent | None = None  # a deferred LOGOUT / SET_OFFLINE / SET_NOT_READY
    pending_reason: str | None = None
    wrap_up_until: float | None = None
    last_call_id: str | None = None  # during wrap-up: the call that just ended
    revision: int = 0  # the board's generation when skills / languages last changed (caches key on it)
    max_chats: int = 3  # concurrent chats (issue 9's chat routing)
    own_calls: set[str] = field(default_factory=set)  # calls they placed themselves that are up

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "since_s": round(max(0.0, now - self.since), 3),
            "reason": self.reason,
            "pending": str(self.pending) if self.pending else None,
            "skills": dict(self.skills),
            "languages": sorted(self.languages),
            "call_id": self.call_id if self.call_id is not None else self.last_call_id,
            "missed_in_row": self.missed_in_row,
            "offers": self.offers,
            "answered": self.answered,
            "talk_s_total": round(self.talk_s_total, 3),
            "talk_s_today": round(self.talk_s_today, 3),
            "wrap_up_left_s": round(max(0.0, self.wrap_up_until - now), 3) if self.wrap_up_until else None,
            "own_calls": sorted(self.own_calls),  # calls they placed (state own_call unless on a queue call)
            "max_chats": self.max_chats,
        }


def _check_skills(skills: Mapping[str, int]) -> dict[str, int]:
    out = {}
    for skill, level in skills.items():
        if not isinstance(level, int) or not 1 <= level <= 5:
            raise ValueError(f"skill {skill!r}: expected a level 1-5, got {level!r}")
        out[skill] = level
    return out


def check_max_chats(value: int) -> int:
    """Concurrent chats an agent takes: an int >= 0 (0 = no chats)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_chats: expected a whole number >= 0, got {value!r}")
    return value


@dataclass
class AgentBoard:
    """Every agent's definition and state, plus the indexes the dispatcher needs.

    The router drives OFFER / ANSWER / OFFER_FAILED / HANGUP through :meth:`apply`; the glue changes
    presence through ``Router.agent_event`` (which keeps the router's offers consistent), never here.
    A new board (server restart) has every agent offline.
    """

    max_missed: int = 3
    auto_available: bool = True
    default_max_chats: int = 3  # for agents whose account sets none (routing.default_max_chats)
    _agents: dict[str, Agent] = field(default_factory=dict)
    _available: set[str] = field(default_factory=set)
    _by_skill: dict[str, set[str]] = field(default_factory=dict)  # available agents having the skill
    _changed: set[str] = field(default_factory=set)  # became available / redefined: worth a dispatch
    _wrap_timers: list[tuple[float, str]] = field(default_factory=list)
    generation: int = 0  # bumped by every definition change (caches key on it)
    # When a list, every state change is appended to it (the glue drains and logs them); None = off.
    transitions: list[Transition] | None = None

    # -- definitions --------------------------------------------------------------------------------

    def define(
        self, name: str, skills: Mapping[str, int] | None = None, languages: Iterable[str] = (), *,
        now: float = 0.0, max_chats: int | None = None,
    ) -> Agent:
        """Add the agent (offline) or update an existing one's skills and languages, keeping its state."""
        if name in self._agents:
            return self.update(name, skills=skills or {}, languages=languages, max_chats=max_chats)
        self.generation += 1
        agent = Agent(name, _check_skills(skills or {}), frozenset(x.lower() for x in languages),
                      since=now, idle_since=now, revision=self.generation)
        agent.max_chats = check_max_chats(self.default_max_chats if max_chats is None else max_chats)
        self._agents[name] = agent
        return agent

    def update(
        self, name: str, *, skills: Mapping[str, int] | None = None, languages: Iterable[str] | None = None,
        max_chats: int | None = None,
    ) -> Agent:
        """New definitions for the next routing decision; a call in progress is not affected."""
        agent = self._agents[name]
        if max_chats is not None:
            agent.max_chats = check_max_chats(max_chats)
        free = name in self._available
        if free:
            self._unindex(agent)
        if skills is not None:
            agent.skills = _check_skills(skills)
        if languages is not None:
            agent.languages = frozenset(x.lower() for x in languages)
        if free:
            self._index(agent)
            self._changed.add(name)
        self.generation += 1
        agent.revision = self.generation
        return agent

    def remove(self, name: str) -> None:
        """Forget an agent; refused while ringing or on a call (log them out first)."""
        agent = self._agents[name]
        if agent.state in _BUSY:
            raise InvalidTransition(f"agent {name!r} is {agent.state}: cannot be removed now")
        if name in self._available:
            self._unindex(agent)
        del self._agents[name]
        self._changed.discard(name)
        self.generation += 1

    def __getitem__(self, name: str) -> Agent:
        return self._agents[name]

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def __iter__(self) -> Iterator[Agent]:
        return iter(self._agents.values())

    def __len__(self) -> int:
        return len(self._agents)

    # -- indexes ------------------------------------------------------------------------------------

    @property
    def available(self) -> set[str]:
        """Names of available agents (read only: do not mutate)."""
        return self._available

    def available_with(self, skill: str) -> set[str]:
        """Available agents having ``skill`` at any level (read only)."""
        return self._by_skill.get(skill, _EMPTY)

    def take_changed(self) -> set[str]:
        """Agents that became available or were redefined since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def _index(self, agent: Agent) -> None:
        self._available.add(agent.name)
        for skill in agent.skills:
            self._by_skill.setdefault(skill, set()).add(agent.name)

    def _unindex(self, agent: Agent) -> None:
        self._available.discard(agent.name)
        for skill in agent.skills:
            holders = self._by_skill.get(skill)
            if holders is not None:
                holders.discard(agent.name)

    # -- the state machine --------------------------------------------------------------------------

    def apply(
        self,
        name: str,
        event: AgentEvent,
        now: float,
        *,
        reason: str | None = None,
        missed: bool = False,
        call_id: str | None = None,
        wrap_up_s: float = 0.0,
    ) -> Agent:
        """Apply one event with its composite rules; raises InvalidTransition when the table has no entry.
        PLACE_CALL / OWN_CALL_ENDED take the agent's own call as ``call_id`` (ending one twice is a
        no-op)."""
        agent = self._apply(name, event, now, reason=reason, missed=missed, call_id=call_id,
                            wrap_up_s=wrap_up_s)
        if agent.own_calls and agent.state in _FREE:  # the invariant (module docstring)
            self._enter_own_call(agent, now)
        return agent

    def _apply(
        self, name: str, event: AgentEvent, now: float, *, reason: str | None, missed: bool,
        call_id: str | None, wrap_up_s: float,
    ) -> Agent:
        agent = self._agents[name]
        state = agent.state
        if (state, event) not in TRANSITIONS:
            raise InvalidTransition(f"agent {name!r} is {state}: {event} is not allowed")
        if event is _E.PLACE_CALL:
            if call_id is None:
                raise ValueError("PLACE_CALL needs the call's id")
            agent.own_calls.add(call_id)
            return agent  # the invariant in apply() moves a free agent into own_call
        if event is _E.OWN_CALL_ENDED:
            if call_id not in agent.own_calls:
                return agent
            agent.own_calls.discard(call_id)
            if state is _S.OWN_CALL:
                if agent.own_calls:
                    agent.call_id = min(agent.own_calls)  # still on another one
                elif agent.pending is not None:
                    self._apply_pending(agent, now)
                else:
                    self._step(agent, event, now)
            return agent
        if (state, event) in DEFERRED:
            agent.pending, agent.pending_reason = event, reason
            return agent
        if state in _BUSY and event in (_E.SET_AVAILABLE, _E.LOGIN):
            if event is _E.SET_AVAILABLE or agent.pending in _GOES_OFFLINE:
                agent.pending = agent.pending_reason = None
            return agent

        if event is _E.LOGIN:  # from offline (the busy / already logged-in cases are self-loops)
            if state is _S.OFFLINE:
                agent.missed_in_row = 0
                self._step(agent, _E.LOGIN, now)
                if not self.auto_available:
                    self._step(agent, _E.SET_NOT_READY, now, reason="login")
            return agent
        if event is _E.OFFER:
            agent.call_id = call_id  # first, so the transition names the call
            self._step(agent, event, now)
            agent.offers, agent.last_offer_at = agent.offers + 1, now
            return agent
        if event is _E.ANSWER:
            self._step(agent, event, now)
            agent.missed_in_row, agent.answered = 0, agent.answered + 1
            return agent
        if event is _E.OFFER_FAILED:
            self._step(agent, event, now)
            if missed and not agent.own_calls:  # busy on a call of their own: not ignoring the ring
                agent.missed_in_row += 1
            if agent.pending is not None:
                self._apply_pending(agent, now)
            elif agent.missed_in_row >= self.max_missed:
                self._step(agent, _E.SET_NOT_READY, now, reason=MISSED_REASON)
            return agent
        if event is _E.HANGUP:
            agent.last_call_id = agent.call_id
            self._step(agent, event, now)
            if agent.pending in _GOES_OFFLINE:
                self._apply_pending(agent, now)
            elif wrap_up_s > 0:
                agent.wrap_up_until = now + wrap_up_s
                heapq.heappush(self._wrap_timers, (agent.wrap_up_until, name))
            else:
                self._step(agent, _E.WRAP_UP_DONE, now)
                self._apply_pending(agent, now)
            return agent
        if event is _E.WRAP_UP_DONE:
            self._step(agent, event, now)
            self._apply_pending(agent, now)
            return agent
        if event is _E.SET_AVAILABLE:
            agent.missed_in_row = 0
        self._step(agent, event, now, reason=reason)
        return agent

    def _enter_own_call(self, agent: Agent, now: float) -> None:
        """A free agent with an own call up goes to own_call; not-ready comes back with its reason
        (kept as the deferred request, unless a later one is already waiting)."""
        if agent.state is _S.NOT_READY and agent.pending is None:
            agent.pending, agent.pending_reason = _E.SET_NOT_READY, agent.reason
        own = min(agent.own_calls)
        if agent.state is _S.WRAP_UP:  # the ending wrap-up's transition names the call it followed
            self._step(agent, _E.PLACE_CALL, now)
            agent.call_id = own
        else:
            agent.call_id = own
            self._step(agent, _E.PLACE_CALL, now)

    def _apply_pending(self, agent: Agent, now: float) -> None:
        event, reason = agent.pending, agent.pending_reason
        agent.pending = agent.pending_reason = None
        if event is not None:
            self._step(agent, event, now, reason=reason)

    def _step(self, agent: Agent, event: AgentEvent, now: float, *, reason: str | None = None) -> None:
        """One table entry: the state, its start time and the indexes."""
        before = agent.state
        after = TRANSITIONS[(before, event)]
        if after is not before:
            if self.transitions is not None:
                self.transitions.append(
                    Transition(agent.name, before, after, reason if after is _S.NOT_READY else None, now,
                               agent.call_id if agent.call_id is not None else agent.last_call_id)
                )
            agent.state, agent.since = after, now
            if before is _S.AVAILABLE:
                self._unindex(agent)
            elif after is _S.AVAILABLE:
                self._index(agent)
                self._changed.add(agent.name)
                if before is not _S.RESERVED:  # a failed offer does not make an agent "fresh"
                    agent.idle_since = now
            if before in _BUSY and after not in _BUSY:
                agent.call_id = None
            if before is _S.WRAP_UP:
                agent.wrap_up_until = None
                agent.last_call_id = None
        agent.reason = reason if after is _S.NOT_READY else None

    # -- wrap-up timers -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        timers = self._wrap_timers
        while timers:
            deadline, name = timers[0]
            agent = self._agents.get(name)
            if agent is not None and agent.state is _S.WRAP_UP and agent.wrap_up_until == deadline:
                return deadline
            heapq.heappop(timers)  # stale: wrap-up ended early or the agent was removed
        return None

    def handle_timer(self, now: float) -> list[str]:
        """End the wrap-ups due by ``now``; returns the agents concerned."""
        ended = []
        while (deadline := self.get_timer()) is not None and deadline <= now:
            _, name = heapq.heappop(self._wrap_timers)
            self.apply(name, _E.WRAP_UP_DONE, now)
            ended.append(name)
        return ended


_EMPTY: set[str] = set()
