"""The dispatcher: waiting callers, live offers and timers around an :class:`AgentBoard`.

The glue drives one :class:`Router`: ``enqueue`` / ``leave`` for callers, ``agent_event`` for presence,
``dispatch`` after anything changed, ``offer_answered`` / ``offer_failed`` / ``call_ended`` as the SIP
legs progress, and ``handle_timer`` at ``get_timer()``.

Dispatch is incremental. After every ``dispatch`` no waiting caller has an available agent who
qualifies (the invariant), so the next one only has to look at what changed since: agents who became
free or were redefined, and callers who arrived, came back from a failed offer or escalated. Callers
sit in *buckets* of equal requirement (queue, escalation stage, extra skills, language), each a list
sorted by (priority desc, arrival); a freed agent compares the heads of the buckets it qualifies for,
a new caller intersects the per-skill indexes of available agents.

Callbacks keep the caller's place: ``to_callback`` turns a waiting caller (who then hangs up) into an
entry that stays in line with its arrival time and priority, never overflows, and is offered like any
caller (``Offer.callback``). The agent is called first (``callback_connecting``: on call, the entry
still in line), then the customer: ``callback_answered`` takes the entry out as answered;
``callback_failed`` either rests it out of the buckets until a retry time (same place in line) or
removes it for good. ``hold`` / ``resume`` keep a caller out of offers meanwhile (e.g. while the
caller is asked for a number).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from callcenter.core.errors import CallcenterError
from callcenter.routing.agents import (
    Agent,
    AgentBoard,
    AgentEvent,
    AgentState,
    InvalidTransition,
    language_ok,
)
from callcenter.routing.queues import QueueConfig, Waiting, choose, required_skills, skills_ok

__all__ = ["LeaveReason", "Offer", "OfferGone", "Overflow", "QueueStats", "Router"]

LeaveReason = Literal["abandoned", "answered", "overflow", "transferred", "callback_failed"]
_Key = tuple[int, float, int, str]  # (-priority, enqueued_at, seq, call_id)
_BucketKey = tuple[str, int, frozenset[tuple[str, int]], str | None]


@dataclass(frozen=True)
class Offer:
    """Ring these agents for this caller (all of them at once for ring_all) for ``timeout_s``."""

    call_id: str
    queue: str
    agents: tuple[str, ...]
    timeout_s: float
    callback: bool = False  # the caller is not on the line: call the agent, then the customer


@dataclass(frozen=True)
class Overflow:
    """The caller left the queue without an agent; ``target`` is the queue's overflow setting."""

    call_id: str
    queue: str
    target: str | None
    reason: Literal["max_wait", "full", "no_agents"]


class OfferGone(CallcenterError):
    """``offer_answered`` for an offer the router no longer has (caller left, offer expired): the glue
    must hang up that agent's leg."""


@dataclass
class QueueStats:
    offered: int = 0  # callers who came to the queue (including those turned away when full / closed)
    answered: int = 0
    abandoned: int = 0
    overflowed: int = 0
    transferred: int = 0
    callbacks: int = 0  # callers who left a number (their entries keep their place)
    callbacks_failed: int = 0  # callbacks given up after the last try
    answered_within_sl: int = 0
    total_wait_s: float = 0.0  # of answered callers (average speed of answer)
    total_abandoned_wait_s: float = 0.0
    total_talk_s: float = 0.0
    calls_ended: int = 0

    def as_json(self) -> dict[str, Any]:
        ended = self.answered + self.abandoned
        return {
            "offered": self.offered,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "overflowed": self.overflowed,
            "transferred": self.transferred,
            "callbacks": self.callbacks,
            "callbacks_failed": self.callbacks_failed,
            "answered_within_sl": self.answered_within_sl,
            # answered within the threshold / (answered + abandoned); None before the first of them
            "service_level": round(self.answered_within_sl / ended, 4) if ended else None,
            "asa_s": round(self.total_wait_s / self.answered, 2) if self.answered else None,
            "aht_s": round(self.total_talk_s / self.calls_ended, 2) if self.calls_ended else None,
            "total_wait_s": round(self.total_wait_s, 3),
            "total_talk_s": round(self.total_talk_s, 3),
        }


@dataclass
class _LiveOffer:
    call_id: str
    queue: str
    agents: set[str]
    timeout_s: float
    expires_at: float  # safety net: the glue never reported the outcome
    token: int


@dataclass
class _Bucket:
    queue: QueueConfig
    need: dict[str, int]
    language: str | None
    items: list[_Key] = field(default_factory=list)


@dataclass
class _Recent:
    """Per queue: recent answer times and handle times, for estimated waits."""

    answers: deque[float] = field(default_factory=lambda: deque(maxlen=20))
    handles: deque[float] = field(default_factory=lambda: deque(maxlen=20))


class Router:
    #: A live offer the glue never reports on is ended after ring timeout + this grace (counted missed).
    offer_grace_s: float = 30.0
    #: Answers older than this do not count towards the answer rate of estimated waits.
    ewt_window_s: float = 900.0

    def __init__(
        self, queues: Mapping[str, QueueConfig], *, max_missed: int = 3, auto_available: bool = True
    ) -> None:
        for name, q in queues.items():
            if name != q.name:
                raise ValueError(f"queue key {name!r} differs from its config's name {q.name!r}")
        self.queues: dict[str, QueueConfig] = dict(queues)
        self.agents = AgentBoard(max_missed=max_missed, auto_available=auto_available)
        self.stats: dict[str, QueueStats] = {name: QueueStats() for name in self.queues}
        self._waiting: dict[str, Waiting] = {}
        self._lines: dict[str, list[_Key]] = {name: [] for name in self.queues}  # everyone, for positions
        self._buckets: dict[_BucketKey, _Bucket] = {}
        self._queue_buckets: dict[str, dict[_BucketKey, _Bucket]] = {name: {} for name in self.queues}
        self._in_bucket: dict[str, _BucketKey] = {}  # waiting and not being offered
        self._offers: dict[str, _LiveOffer] = {}
        self._talks: dict[str, tuple[str, str, float]] = {}  # agent → (call_id, queue, answered_at)
        self._dirty: set[str] = set()  # callers worth a look at the next dispatch
        self._rr: dict[str, str] = {}
        self._recent: dict[str, _Recent] = {name: _Recent() for name in self.queues}
        self._seq = itertools.count()
        self._max_wait_timers: list[tuple[float, int, Waiting]] = []
        self._escalation_timers: list[tuple[float, int, Waiting, int]] = []
        self._offer_timers: list[tuple[float, int, str]] = []
        self._qualified: dict[tuple[Any, ...], tuple[int, tuple[str, ...]]] = {}
        self._agent_queues: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._callbacks: set[str] = set()  # entries whose caller left a number and hung up
        self._held: set[str] = set()  # in line but not offered (hold, callback retry delay)
        self._connecting: dict[str, str] = {}  # callback call id → agent who answered (customer rings)
        self._retry_timers: list[tuple[float, int, str]] = []
        #: Monotonic time of the next local midnight (set by the glue): per-day talk times reset then.
        self.day_ends_at: float | None = None

    # -- read-only views ----------------------------------------------------------------------------

    @property
    def waiting(self) -> Mapping[str, Waiting]:
        return MappingProxyType(self._waiting)

    @property
    def offers(self) -> dict[str, Offer]:
        """Live offers by call id (agents who already failed are gone from ``agents``)."""
        return {
            c: Offer(c, o.queue, tuple(sorted(o.agents)), o.timeout_s, c in self._callbacks)
            for c, o in self._offers.items()
        }

    def ringing(self, agent: str) -> str | None:
        """The call whose offer is ringing ``agent``, if any."""
        a = self.agents[agent]
        return a.call_id if a.state is AgentState.RESERVED else None

    # -- agents -------------------------------------------------------------------------------------

    def agent_event(
        self, name: str, event: AgentEvent, now: float, *, reason: str | None = None, missed: bool = False
    ) -> Agent:
        """Presence changes (LOGIN, LOGOUT, SET_*, WRAP_UP_DONE). ANSWER / OFFER_FAILED / HANGUP are
        accepted as shorthands for offer_answered / offer_failed / call_ended of the agent's current
        call; OFFER only comes from :meth:`dispatch`."""
        agent = self.agents[name]
        if event is AgentEvent.OFFER:
            raise InvalidTransition("offers are made by dispatch(), not by agent events")
        if event in (AgentEvent.PLACE_CALL, AgentEvent.OWN_CALL_ENDED):
            raise InvalidTransition("an agent's own calls go through own_call_started / own_call_ended")
        if event in (AgentEvent.ANSWER, AgentEvent.OFFER_FAILED):
            if agent.state is not AgentState.RESERVED or agent.call_id is None:
                raise InvalidTransition(f"agent {name!r} is {agent.state}: {event} is not allowed")
            if event is AgentEvent.ANSWER:
                self.offer_answered(agent.call_id, name, now)
            else:
                self.offer_failed(agent.call_id, name, now, missed=missed)
            return agent
        if event is AgentEvent.HANGUP:
            if agent.state is not AgentState.ON_CALL:
                raise InvalidTransition(f"agent {name!r} is {agent.state}: {event} is not allowed")
            self.call_ended(name, now)
            return agent
        return self.agents.apply(name, event, now, reason=reason)

    def own_call_started(self, name: str, call_id: str, now: float) -> Agent:
        """``name`` placed ``call_id`` through us (authenticated): nothing is offered to them until it
        ends (state own_call; a ringing offer keeps ringing, a queue call goes on)."""
        return self.agents.apply(name, AgentEvent.PLACE_CALL, now, call_id=call_id)

    def own_call_ended(self, name: str, call_id: str, now: float) -> Agent | None:
        """That call ended: back to the state before (or a request made meanwhile). Idempotent; a
        removed agent is ignored (None)."""
        if name not in self.agents:
            return None
        return self.agents.apply(name, AgentEvent.OWN_CALL_ENDED, now, call_id=call_id)

    # -- callers ------------------------------------------------------------------------------------

    def enqueue(
        self,
        call_id: str,
        queue: str,
        now: float,
        *,
        priority: int = 0,
        skills: Mapping[str, int] | None = None,
        language: str | None = None,
        max_wait_s: float | None = None,
        since: float | None = None,
        callback: bool = False,
    ) -> int | Overflow:
        """Queue a caller: its 1-based position, or an Overflow when the queue is full or has nobody
        logged in who could ever take it (``join_when_empty`` false). Unknown queue: KeyError.
        ``max_wait_s`` overrides the queue's for this caller. ``since`` is the arrival time when it is
        not ``now`` (a callback restored after a restart, or one that overflowed keeps its place);
        ``callback`` entries always join and never overflow."""
        q = self.queues[queue]
        if call_id in self._waiting:
            raise ValueError(f"call {call_id!r} is already queued in {self._waiting[call_id].queue!r}")
        stats = self.stats[queue]
        stats.offered += 1
        w = Waiting(
            call_id, queue, priority, dict(skills or {}), language.lower() if language else None,
            now if since is None else since,
            max_wait_s=None if callback else (max_wait_s if max_wait_s is not None else q.max_wait_s),
            seq=next(self._seq),
        )
        reason: Literal["full", "no_agents"] | None = None
        if callback:
            self._callbacks.add(call_id)
        elif q.max_length is not None and len(self._lines[queue]) >= q.max_length:
            reason = "full"
        elif not q.join_when_empty and not self._anyone_logged_in(q, w):
            reason = "no_agents"
        if reason is not None:
            stats.overflowed += 1
            return Overflow(call_id, queue, q.overflow, reason)
        self._waiting[call_id] = w
        key = self._key(w)
        line = self._lines[queue]
        bisect.insort(line, key)
        self._to_bucket(w)
        if w.max_wait_s is not None:
            heapq.heappush(self._max_wait_timers, (w.deadline, w.seq, w))
        self._arm_escalation(w)
        return bisect.bisect_left(line, key) + 1

    def leave(self, call_id: str, now: float, *, reason: LeaveReason) -> None:
        """The caller left the queue (idempotent). An offer still ringing for it ends: its agents are
        free again, not counted as missed; the glue cancels their legs."""
        w = self._waiting.pop(call_id, None)
        if w is None:
            return
        self._from_line(w)
        self._from_bucket(w)
        self._dirty.discard(call_id)
        self._callbacks.discard(call_id)
        self._held.discard(call_id)
        agent = self._connecting.pop(call_id, None)
        if agent is not None:  # the customer never answered and the entry is given up: free the agent
            self._end_talk(agent, now, handled=False)
        offer = self._offers.pop(call_id, None)
        if offer is not None:
            for name in sorted(offer.agents):
                self.agents.apply(name, AgentEvent.OFFER_FAILED, now, missed=False)
        stats = self.stats[w.queue]
        waited = now - w.enqueued_at
        if reason == "answered":
            self._count_answer(w, now)
        elif reason == "abandoned":
            stats.abandoned += 1
            stats.total_abandoned_wait_s += waited
        elif reason == "overflow":
            stats.overflowed += 1
        elif reason == "callback_failed":
            stats.callbacks_failed += 1
        else:
            stats.transferred += 1

    def position(self, call_id: str) -> int | None:
        """1-based place in its queue (priority, then arrival), counting callers being offered."""
        w = self._waiting.get(call_id)
        if w is None:
            return None
        return bisect.bisect_left(self._lines[w.queue], self._key(w)) + 1

    def estimated_wait_s(self, call_id: str, now: float) -> float | None:
        """Position / the queue's recent answer rate (answers in the last ``ewt_window_s``, at least two),
        else position × recent average handle time (talk + wrap-up) / logged-in agents who qualify; None
        when neither is known yet."""
        pos = self.position(call_id)
        if pos is None:
            return None
        w = self._waiting[call_id]
        recent = self._recent[w.queue]
        answers = [t for t in recent.answers if now - t <= self.ewt_window_s]
        if len(answers) >= 2 and now > answers[0]:
            return pos * (now - answers[0]) / len(answers)
        if recent.handles:
            q = self.queues[w.queue]
            staffed = sum(
                1 for n in self._qualified_names(q.skills, w.language)
                if self.agents[n].state is not AgentState.OFFLINE
            )
            if staffed:
                return pos * (sum(recent.handles) / len(recent.handles)) / staffed
        return None

    # -- offers -------------------------------------------------------------------------------------

    def dispatch(self, now: float) -> list[Offer]:
        """Match waiting callers with available agents; the agents offered are reserved."""
        self._run_escalations(now)
        board = self.agents
        avail = board.available
        heap: list[tuple[_Key, str]] = []  # (best caller for this agent, agent)
        for name in board.take_changed():
            if name in avail:
                self._push_best(heap, board[name], now)
        callers = sorted(
            (self._waiting[c] for c in self._dirty if c in self._in_bucket), key=lambda w: w.order
        )
        self._dirty.clear()
        offers: list[Offer] = []
        i = 0
        while True:
            while heap:  # the top entry must still hold: agent free, caller not yet offered
                key, name = heap[0]
                if name not in avail:
                    heapq.heappop(heap)
                elif key[3] not in self._in_bucket:
                    heapq.heappop(heap)
                    self._push_best(heap, board[name], now)
                else:
                    break
            while i < len(callers) and (
                callers[i].call_id not in self._in_bucket or callers[i].deadline <= now
            ):
                i += 1
            if heap and (i >= len(callers) or heap[0][0] < self._key(callers[i])):
                w = self._waiting[heap[0][0][3]]
            elif i < len(callers):
                w = callers[i]
                i += 1
            else:
                break
            offer = self._offer(w, now)
            if offer is not None:
                offers.append(offer)
            elif heap and heap[0][0][3] == w.call_id:
                heapq.heappop(heap)  # cannot happen (the agent qualifies); never loop on it
        return offers

    def offer_answered(self, call_id: str, agent: str, now: float) -> list[str]:
        """``agent`` answered: on call; the caller leaves the queue (answered). Returns the other agents
        of a ring_all offer, free again (not missed): the glue cancels their legs."""
        offer = self._offers.get(call_id)
        if offer is None or agent not in offer.agents:
            raise OfferGone(f"no live offer of call {call_id!r} to agent {agent!r}")
        del self._offers[call_id]
        others = sorted(offer.agents - {agent})
        for name in others:
            self.agents.apply(name, AgentEvent.OFFER_FAILED, now, missed=False)
        self.agents.apply(agent, AgentEvent.ANSWER, now)
        w = self._waiting.pop(call_id)
        self._from_line(w)
        self._count_answer(w, now)
        self._talks[agent] = (call_id, w.queue, now)
        return others

    def offer_failed(self, call_id: str, agent: str, now: float, *, missed: bool) -> None:
        """The agent's leg failed. ``missed`` for a real miss (no answer, rejected, unreachable), not when
        the caller left or the offer was cancelled. The caller stays queued and is not offered to this
        agent again while someone else qualifies. A stale report (offer already over) is ignored."""
        offer = self._offers.get(call_id)
        if offer is None or agent not in offer.agents:
            return
        offer.agents.discard(agent)
        w = self._waiting[call_id]
        if missed:
            w.offered_to.add(agent)
        self.agents.apply(agent, AgentEvent.OFFER_FAILED, now, missed=missed)
        if not offer.agents:
            self._end_offer(w, now)

    def call_ended(self, agent: str, now: float) -> None:
        """The bridged call of ``agent`` ended: wrap-up (the queue's wrap_up_s) or available, or a
        deferred not-ready / offline. Idempotent."""
        talk = self._talks.get(agent)
        if talk is not None and talk[0] in self._connecting:
            return  # a callback's customer is still ringing: callback_answered / callback_failed decide
        self._end_talk(agent, now, handled=True)

    def _end_talk(self, agent: str, now: float, *, handled: bool) -> None:
        talk = self._talks.pop(agent, None)
        if talk is None or self.agents[agent].state is not AgentState.ON_CALL:
            return
        _, queue, answered_at = talk
        q = self.queues[queue]
        talked = max(0.0, now - answered_at)
        a = self.agents[agent]
        a.talk_s_total += talked
        a.talk_s_today += talked
        if handled:
            stats = self.stats[queue]
            stats.total_talk_s += talked
            stats.calls_ended += 1
            self._recent[queue].handles.append(talked + q.wrap_up_s)
        self.agents.apply(agent, AgentEvent.HANGUP, now, wrap_up_s=q.wrap_up_s if handled else 0.0)

    # -- callbacks ----------------------------------------------------------------------------------

    def is_callback(self, call_id: str) -> bool:
        return call_id in self._callbacks

    def hold(self, call_id: str, now: float) -> None:
        """Keep a waiting caller in line but out of offers (a live offer ends: its agents are free
        again, not missed; the glue drops that offer). Idempotent."""
        w = self._waiting.get(call_id)
        if w is None:
            return
        self._held.add(call_id)
        offer = self._offers.pop(call_id, None)
        if offer is not None:
            for name in sorted(offer.agents):
                self.agents.apply(name, AgentEvent.OFFER_FAILED, now, missed=False)
        self._from_bucket(w)
        self._dirty.discard(call_id)

    def resume(self, call_id: str, now: float) -> None:
        """Back to being offered after :meth:`hold`, in the same place."""
        w = self._waiting.get(call_id)
        if w is None or call_id not in self._held:
            return
        self._held.discard(call_id)
        if call_id not in self._offers and call_id not in self._connecting:
            self._to_bucket(w)
            if w.deadline <= now:  # its max wait passed while held: overflow at the next handle_timer
                heapq.heappush(self._max_wait_timers, (now, next(self._seq), w))

    def to_callback(self, call_id: str, now: float) -> None:
        """The caller left a number and hangs up: the entry keeps its place and priority, never
        overflows, and is offered with ``Offer.callback``."""
        w = self._waiting[call_id]
        if call_id not in self._callbacks:
            self._callbacks.add(call_id)
            self.stats[w.queue].callbacks += 1
        w.max_wait_s = None
        self.resume(call_id, now)

    def callback_connecting(self, call_id: str, agent: str, now: float) -> list[str]:
        """The agent answered a callback offer: on call (hearing who is called back) while the customer
        is dialled; the entry stays in line. Returns the other agents of a ring_all offer (freed)."""
        offer = self._offers.get(call_id)
        if offer is None or agent not in offer.agents:
            raise OfferGone(f"no live offer of call {call_id!r} to agent {agent!r}")
        del self._offers[call_id]
        others = sorted(offer.agents - {agent})
        for name in others:
            self.agents.apply(name, AgentEvent.OFFER_FAILED, now, missed=False)
        self.agents.apply(agent, AgentEvent.ANSWER, now)
        self._talks[agent] = (call_id, offer.queue, now)
        self._connecting[call_id] = agent
        return others

    def callback_answered(self, call_id: str, now: float) -> None:
        """The customer answered: the entry leaves the line, answered (its wait counts from arrival)."""
        agent = self._connecting.pop(call_id)
        w = self._waiting.pop(call_id)
        self._from_line(w)
        self._callbacks.discard(call_id)
        self._held.discard(call_id)
        self._count_answer(w, now)
        talk = self._talks.get(agent)
        if talk is not None:
            self._talks[agent] = (call_id, talk[1], now)  # talk time counts from the customer's answer

    def callback_failed(self, call_id: str, now: float, *, retry_at: float | None) -> None:
        """The customer did not answer: the agent is free again (no wrap-up, not counted as handled);
        the entry rests, keeping its place, until ``retry_at`` — or leaves for good (None)."""
        agent = self._connecting.pop(call_id, None)
        if agent is not None:
            self._end_talk(agent, now, handled=False)
        w = self._waiting.get(call_id)
        if w is None:
            return
        if retry_at is None:
            self.leave(call_id, now, reason="callback_failed")
            return
        self._held.add(call_id)
        self._from_bucket(w)
        heapq.heappush(self._retry_timers, (retry_at, next(self._seq), call_id))

    def new_day(self, now: float) -> None:
        """Per-day talk times start again (the glue calls this at local midnight, or handle_timer does
        at ``day_ends_at``)."""
        for agent in self.agents:
            agent.talk_s_today = 0.0  # only the order of least_talk_time changes: no new matches

    # -- timers -------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The next deadline (wrap-up end, escalation, max wait, lost offer); may lie in the past."""
        times = [
            t for t in (
                self.agents.get_timer(), self._head_max_wait(), self._head_escalation(), self._head_offer(),
                self._head_retry(), self.day_ends_at,
            ) if t is not None
        ]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[Overflow]:
        """Apply everything due by ``now``; returns the callers overflowed for waiting too long."""
        if self.day_ends_at is not None and self.day_ends_at <= now:
            self.day_ends_at = None  # the glue sets the next one
            self.new_day(now)
        while (t := self._head_retry()) is not None and t <= now:
            _, _, call_id = heapq.heappop(self._retry_timers)
            self.resume(call_id, now)
        self.agents.handle_timer(now)
        self._run_escalations(now)
        while (t := self._head_offer()) is not None and t <= now:
            _, _, call_id = heapq.heappop(self._offer_timers)
            offer = self._offers[call_id]
            for name in sorted(offer.agents):
                self.offer_failed(call_id, name, now, missed=True)
        out = []
        while (t := self._head_max_wait()) is not None and t <= now:
            _, _, w = heapq.heappop(self._max_wait_timers)
            if w.call_id in self._offers or w.call_id in self._callbacks or w.call_id in self._held:
                continue  # ringing: decided when the offer ends (see _end_offer); callbacks never overflow
            self.leave(w.call_id, now, reason="overflow")
            out.append(Overflow(w.call_id, w.queue, self.queues[w.queue].overflow, "max_wait"))
        return out

    # -- the wallboard ------------------------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        """JSON-ready: per queue waiting / ringing / longest wait / qualified agents by state / stats;
        per agent its state, how long, reason, call."""
        queues: dict[str, Any] = {}
        for name, q in self.queues.items():
            callers = [self._waiting[k[3]] for k in self._lines[name]]
            by_state = {str(s): 0 for s in AgentState}
            for agent in self._qualified_names(q.skills, None):
                by_state[str(self.agents[agent].state)] += 1
            queues[name] = {
                "waiting": len(callers),
                "ringing": sum(1 for w in callers if w.call_id in self._offers),
                "longest_wait_s": round(max((now - w.enqueued_at for w in callers), default=0.0), 3),
                "strategy": q.strategy,
                "agents": by_state,
                "stats": self.stats[name].as_json(),
            }
        return {
            "queues": queues,
            "agents": {a.name: a.as_json(now) for a in self.agents},
        }

    def reset_stats(self) -> None:
        """Start the counters again (e.g. at midnight)."""
        self.stats = {name: QueueStats() for name in self.queues}

    def recent(self, queue: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """What estimated waits read for ``queue``: recent answer times (monotonic, oldest first) and
        recent handle times (talk + wrap-up, seconds); empty for an unknown queue."""
        r = self._recent.get(queue)
        return ((), ()) if r is None else (tuple(r.answers), tuple(r.handles))

    def set_recent(self, queue: str, answers: Iterable[float], handles: Iterable[float]) -> None:
        """Replace them (a cluster successor continues its predecessor's estimates); the newest are
        kept when there are more than the router keeps. Unknown queue: ignored."""
        if queue in self._recent:
            r = _Recent()
            r.answers.extend(sorted(float(t) for t in answers))
            r.handles.extend(float(h) for h in handles)
            self._recent[queue] = r

    # -- internals ----------------------------------------------------------------------------------

    @staticmethod
    def _key(w: Waiting) -> _Key:
        return (-w.priority, w.enqueued_at, w.seq, w.call_id)

    def _bucket_key(self, w: Waiting) -> _BucketKey:
        return (w.queue, w.stage, frozenset(w.skills.items()), w.language)

    def _to_bucket(self, w: Waiting) -> None:
        bkey = self._bucket_key(w)
        bucket = self._buckets.get(bkey)
        if bucket is None:
            q = self.queues[w.queue]
            bucket = self._buckets[bkey] = _Bucket(q, required_skills(q, w.skills, w.stage), w.language)
            self._queue_buckets[w.queue][bkey] = bucket
        bisect.insort(bucket.items, self._key(w))
        self._in_bucket[w.call_id] = bkey
        self._dirty.add(w.call_id)

    def _from_bucket(self, w: Waiting) -> None:
        bkey = self._in_bucket.pop(w.call_id, None)
        if bkey is None:
            return
        items = self._buckets[bkey].items
        key = self._key(w)
        i = bisect.bisect_left(items, key)
        if i < len(items) and items[i] == key:
            del items[i]
        if not items:
            del self._buckets[bkey]
            del self._queue_buckets[w.queue][bkey]

    def _from_line(self, w: Waiting) -> None:
        line = self._lines[w.queue]
        key = self._key(w)
        i = bisect.bisect_left(line, key)
        if i < len(line) and line[i] == key:
            del line[i]

    def _push_best(self, heap: list[tuple[_Key, str]], agent: Agent, now: float) -> None:
        """Push the first caller (priority, arrival) across every bucket ``agent`` qualifies for."""
        best: _Key | None = None
        for queue in self._queues_for(agent):
            for bucket in self._queue_buckets[queue].values():
                items = bucket.items
                if best is not None and items[0] >= best:
                    continue  # cheap test first: this bucket cannot beat the best so far
                if not skills_ok(agent.skills, bucket.need) or not language_ok(
                    agent.languages, bucket.language
                ):
                    continue
                for key in items:
                    if best is not None and key >= best:
                        break
                    if self._waiting[key[3]].deadline > now:  # overdue callers wait for handle_timer
                        best = key
                        break
        if best is not None:
            heapq.heappush(heap, (best, agent.name))

    def _offer(self, w: Waiting, now: float) -> Offer | None:
        bucket = self._buckets[self._in_bucket[w.call_id]]
        board = self.agents
        need = bucket.need
        pool = min((board.available_with(s) for s in need), key=len) if need else board.available
        candidates = [
            a for a in map(board.__getitem__, pool)
            if skills_ok(a.skills, need) and language_ok(a.languages, bucket.language)
        ]
        q = bucket.queue
        names = choose(q, candidates, need, w.offered_to, self._rr)
        if not names:
            return None
        self._from_bucket(w)
        for name in names:
            board.apply(name, AgentEvent.OFFER, now, call_id=w.call_id)
        token = next(self._seq)
        expires = now + q.ring_timeout_s + self.offer_grace_s
        self._offers[w.call_id] = _LiveOffer(w.call_id, q.name, set(names), q.ring_timeout_s, expires, token)
        heapq.heappush(self._offer_timers, (expires, token, w.call_id))
        return Offer(w.call_id, q.name, tuple(names), q.ring_timeout_s, w.call_id in self._callbacks)

    def _end_offer(self, w: Waiting, now: float) -> None:
        """Every leg of the caller's offer failed: back in line (same place), offered again later."""
        del self._offers[w.call_id]
        if w.call_id in self._held:
            return
        self._to_bucket(w)
        if w.deadline <= now:  # its max wait passed while ringing: overflow at the next handle_timer
            heapq.heappush(self._max_wait_timers, (now, next(self._seq), w))

    def _count_answer(self, w: Waiting, now: float) -> None:
        stats = self.stats[w.queue]
        waited = max(0.0, now - w.enqueued_at)
        stats.answered += 1
        stats.total_wait_s += waited
        if waited <= self.queues[w.queue].service_level_s:
            stats.answered_within_sl += 1
        self._recent[w.queue].answers.append(now)

    def _arm_escalation(self, w: Waiting) -> None:
        escalations = self.queues[w.queue].escalations
        if w.stage < len(escalations):
            at = w.enqueued_at + escalations[w.stage].after_s
            heapq.heappush(self._escalation_timers, (at, next(self._seq), w, w.stage + 1))

    def _run_escalations(self, now: float) -> None:
        while (t := self._head_escalation()) is not None and t <= now:
            _, _, w, stage = heapq.heappop(self._escalation_timers)
            ringing = w.call_id not in self._in_bucket
            if not ringing:
                self._from_bucket(w)
            w.stage = stage
            if not ringing:
                self._to_bucket(w)
            self._arm_escalation(w)

    def _head_max_wait(self) -> float | None:
        timers = self._max_wait_timers
        while timers and self._waiting.get(timers[0][2].call_id) is not timers[0][2]:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def _head_escalation(self) -> float | None:
        timers = self._escalation_timers
        while timers:
            _, _, w, stage = timers[0]
            if self._waiting.get(w.call_id) is w and w.stage == stage - 1:
                break
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def _head_retry(self) -> float | None:
        timers = self._retry_timers
        while timers and (timers[0][2] not in self._held or timers[0][2] not in self._waiting):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def _head_offer(self) -> float | None:
        timers = self._offer_timers
        while timers and (
            (o := self._offers.get(timers[0][2])) is None or o.token != timers[0][1]
        ):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def _queues_for(self, agent: Agent) -> tuple[str, ...]:
        """Queues whose skills (at some escalation stage) the agent has: the flow's extras only add to
        them, so no caller of any other queue can be theirs. Cached per agent definition."""
        cached = self._agent_queues.get(agent.name)
        if cached is None or cached[0] != agent.revision:
            names = tuple(
                q.name for q in self.queues.values()
                if any(skills_ok(agent.skills, n) for n in (q.skills, *(e.skills for e in q.escalations)))
            )
            cached = self._agent_queues[agent.name] = (agent.revision, names)
        return cached[1]

    def _qualified_names(self, need: Mapping[str, int], language: str | None) -> tuple[str, ...]:
        """Agents whose definitions meet ``need`` and ``language`` (any state), cached per definitions."""
        key = (frozenset(need.items()), language)
        cached = self._qualified.get(key)
        if cached is None or cached[0] != self.agents.generation:
            names = tuple(
                a.name for a in self.agents
                if skills_ok(a.skills, need) and language_ok(a.languages, language)
            )
            cached = self._qualified[key] = (self.agents.generation, names)
        return cached[1]

    def _anyone_logged_in(self, q: QueueConfig, w: Waiting) -> bool:
        """Someone not offline who qualifies for this caller now or after an escalation."""
        for stage in range(len(q.escalations) + 1):
            for name in self._qualified_names(required_skills(q, w.skills, stage), w.language):
                if self.agents[name].state is not AgentState.OFFLINE:
                    return True
        return False


    # -- queues changed at run time (the admin console) ------------------------------------------------

    def upsert_queue(self, queue: QueueConfig) -> None:
        """Add a queue or replace its settings. Callers waiting keep their place (arrival, priority) and
        their max wait; the new skills, strategy and escalations apply from the next dispatch (an
        escalation already due is applied there). Live offers and calls are left as they are."""
        name = queue.name
        self.queues[name] = queue
        self._agent_queues.clear()  # which queues an agent may serve depends on the queues' skills
        if name not in self.stats:
            self.stats[name] = QueueStats()
            self._lines[name] = []
            self._queue_buckets[name] = {}
            self._recent[name] = _Recent()
            return
        callers = [self._waiting[k[3]] for k in self._lines[name]]
        # Out of every bucket first: a bucket keeps the QueueConfig and requirement it was made with.
        rebucket = [w for w in callers if w.call_id in self._in_bucket]
        for w in rebucket:
            self._from_bucket(w)
        self._escalation_timers = [t for t in self._escalation_timers if t[2].queue != name]
        heapq.heapify(self._escalation_timers)
        for w in callers:
            w.stage = min(w.stage, len(queue.escalations))
            self._arm_escalation(w)
        for w in rebucket:
            self._to_bucket(w)

    def remove_queue(self, name: str) -> None:
        """Drop a queue nobody waits in and no agent talks on (else CallcenterError: the caller's 409).
        Unknown name: KeyError."""
        if name not in self.queues:
            raise KeyError(name)
        if self._lines[name]:
            raise CallcenterError(f"queue {name!r} has {len(self._lines[name])} caller(s) waiting")
        if any(talk[1] == name for talk in self._talks.values()):
            raise CallcenterError(f"queue {name!r} still has calls connected to agents")
        del self.queues[name], self.stats[name], self._lines[name], self._queue_buckets[name]
        del self._recent[name]
        self._rr.pop(name, None)
        self._agent_queues.clear()
