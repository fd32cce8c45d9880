"""The cluster's dispatcher, sans-I/O: the unchanged :class:`Router` fed by every node's commands,
producing notices for the nodes and the writes that mirror live state into Redis.

Only the elected leader runs one (:mod:`callcenter.cluster.node` drives it). It is rebuilt from the
mirror whenever a node becomes leader, so the mirror holds what a successor needs:

- ``agents`` hash, one JSON record per agent: definition (skills, languages, max chats) and state
  (state, reason, the call it rings for / talks on, that call's queue and node);
- ``waiting`` hash, one record per caller in line: queue, priority, skills, language, arrival
  (wall clock), max wait, callback / held flags, the node holding the caller, the agents its live
  offer rings.

Rebuilding (:meth:`LeaderState.restore`) uses the router's public API only: agents are defined
offline; each live offer is re-made by enqueuing its caller alone with only its agents available
and dispatching; each bridged call likewise, then answered; then presence states are applied and the
other callers enqueued with their arrival times (so they keep their place). Callers and calls held
by a node that is not alive are dropped (their calls died with it); agents of such calls become
available. Callbacks are not calls: their customers hung up long ago and the request is in the shared
database, so an entry whose node is gone keeps its place and moves to the leader's own node (``home``),
whose CallbackRunner reads the number from the database when the turn comes.

What else a successor keeps (each agent's record carries it): a wrap-up in progress (its start, end
and the node owed ``wrap_up_s``, as wall times: the successor runs what is left, or reports it ended
meanwhile), a deferred presence request (made again, so deferred again), the missed-offer count (auto
not-ready still triggers at ``max_missed``), the counters the strategies read (talk times, idle since,
offers, answered). Per-queue statistics (the wallboard's offered / answered / abandoned / service level
/ ASA / AHT) are mirrored in the ``stats`` hash, written in the same fenced call as the commands they
count — so they are exact, whereas recomputing them from the call records at takeover would miss the
records a node's writer had not flushed yet (and those of a dead node), and would need the database
inside a sans-I/O core. The recent answer and handle times estimated waits read are mirrored per
queue in the ``recent`` hash (as many as the router keeps: bounded), answer times as wall times, so a
successor's estimates go on where its predecessor's were. Not kept: which agents missed a given caller.

The day: per-day talk times (``least_talk_time``) start again at local midnight, as on one node (the
Acd sets ``Router.day_ends_at``): the leader sets it from its wall clock in ``timezone`` (None: the
system's zone, as the single node), and each agent record carries the local date its ``talk_s_today``
counts, so a successor coming up after a midnight its predecessor did not see starts them again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal
from zoneinfo import ZoneInfo

from callcenter.cluster.chats import CHAT_OPS, ChatLeader
from callcenter.cluster.messages import Command, Notice, queue_from_json, queue_to_json, to_mono, to_wall
from callcenter.core.clock import local_day
from callcenter.core.errors import CallcenterError
from callcenter.core.logging import log_event
from callcenter.routing.agents import AgentEvent, AgentState, Transition
from callcenter.routing.queues import QueueConfig
from callcenter.routing.router import Offer, OfferGone, Overflow, QueueStats, Router

__all__ = ["LeaderState", "Output", "Write", "local_day"]

log = logging.getLogger("callcenter.cluster.leader")

_PRESENCE = {
    "login": AgentEvent.LOGIN,
    "logout": AgentEvent.LOGOUT,
    "set_available": AgentEvent.SET_AVAILABLE,
    "set_not_ready": AgentEvent.SET_NOT_READY,
    "set_offline": AgentEvent.SET_OFFLINE,
    "wrap_up_done": AgentEvent.WRAP_UP_DONE,
}
_LEAVE_REASONS = frozenset({"abandoned", "answered", "overflow", "transferred", "callback_failed"})


@dataclass(frozen=True)
class Write:
    """One mirror write: HSET / HDEL on a hash (``value`` None deletes the field)."""

    key: Literal["agents", "waiting", "queues", "stats", "chats", "recent", "chat_lines"]
    field: str
    value: str | None


@dataclass
class Output:
    notices: list[tuple[str, Notice]] = field(default_factory=list)  # (node, notice)
    writes: list[Write] = field(default_factory=list)


@dataclass
class _Talk:
    call_id: str
    queue: str
    node: str | None


class LeaderState:
    def __init__(
        self,
        queues: Mapping[str, QueueConfig],
        token: int,
        *,
        max_missed: int = 3,
        auto_available: bool = True,
        default_max_chats: int = 3,
        home: str | None = None,
        offer_during_calls: bool = False,
        timezone: str | None = None,
    ) -> None:
        self.router = Router(queues, max_missed=max_missed, auto_available=auto_available)
        # The chat ACD over the same agents (cluster/chats.py); commands chat_*, mirror ``chats``.
        self.chats = ChatLeader(
            self.router.queues,
            token,
            offer_during_calls=offer_during_calls,
            default_max_chats=default_max_chats,
        )
        self.home = home  # the leader's own node: it takes over the callbacks of a dead node
        self.router.agents.transitions = []
        self.router.agents.default_max_chats = default_max_chats
        self.token = token
        self.caller_node: dict[str, str] = {}  # call id → the node holding the caller
        self._callers: dict[str, dict[str, Any]] = {}  # call id → its enqueue arguments (the mirror)
        self._talks: dict[str, _Talk] = {}  # agent → the bridged call
        self._dirty_agents: set[str] = set()
        self._dirty_callers: set[str] = set()
        self._out = Output()
        self._restoring = False
        # Wrap-up times for the call records (the node holding the call writes wrap_up_s): the node
        # that reported each agent's call ended, then when and after which node's call the wrap-up began.
        self._ended_on: dict[str, str] = {}
        self._wrap_since: dict[str, tuple[float, str]] = {}
        self.dropped: list[str] = []  # callers dropped at restore / with a dead node (for the log)
        self.adopted: list[str] = []  # callbacks moved to ``home`` from a dead node (for the log)
        self._new_places: list[str] = []  # callers who joined since the last step (a place notice each)
        self._stats_written: dict[str, str] = {}  # queue → the stats JSON last written to the mirror
        # queue → (answers, handles) last written to the ``recent`` hash (monotonic: compared as such)
        self._recent_written: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
        self.zone = ZoneInfo(timezone) if timezone else None  # None: the system's local zone
        self.day: str | None = None  # the local date (ISO) agents' talk_s_today counts
        self._next_day: str | None = None  # the date that begins at router.day_ends_at

    # -- commands from nodes --------------------------------------------------------------------------

    def apply(self, cmd: Command, now: float, wall: float) -> None:
        """One node's command; anything the router refuses is logged and skipped (a stale report
        after a failover is normal)."""
        try:
            self._apply(cmd, now, wall)
        except (CallcenterError, KeyError, ValueError) as exc:
            log.info("cluster: %s from %s skipped: %r", cmd.op, cmd.node, exc)
        self._note_transitions()
        self._ended_on.clear()

    def _apply(self, cmd: Command, now: float, wall: float) -> None:
        r, op, a = self.router, cmd.op, cmd.args
        if op in CHAT_OPS:
            self.chats.apply(cmd, now, wall)
            return
        if op == "enqueue" and a.get("callback") and cmd.call_id is not None and cmd.call_id in r.waiting:
            r.to_callback(cmd.call_id, now)  # the caller left a number: same entry, same place
            self._callers[cmd.call_id].update(callback=True, held=False)
            self._dirty_callers.add(cmd.call_id)
        elif op == "enqueue":
            assert cmd.call_id is not None
            # The caller's arrival at its node decides its place; a callback restored from the database
            # (or one that overflowed) brings its original arrival as since_wall.
            arrived = a.get("since_wall") if a.get("since_wall") is not None else cmd.at
            since = to_mono(float(arrived), now, wall) if arrived else now
            self._enqueue(cmd.call_id, cmd.node, a, since=since, now=now)
        elif op == "leave":
            assert cmd.call_id is not None
            reason = str(a.get("reason") or "abandoned")
            r.leave(cmd.call_id, now, reason=reason if reason in _LEAVE_REASONS else "abandoned")  # type: ignore[arg-type]
            self._forget_caller(cmd.call_id)
        elif op == "define":
            assert cmd.agent is not None
            r.agents.define(
                cmd.agent,
                dict(a.get("skills") or {}),
                a.get("languages") or (),
                now=now,
                max_chats=a.get("max_chats"),
            )
            self._dirty_agents.add(cmd.agent)
        elif op == "remove":
            assert cmd.agent is not None
            r.agents.remove(cmd.agent)
            self._out.writes.append(Write("agents", cmd.agent, None))
            self._dirty_agents.discard(cmd.agent)
        elif op == "presence":
            assert cmd.agent is not None
            r.agent_event(cmd.agent, _PRESENCE[str(a.get("event"))], now, reason=a.get("reason"))
            self._dirty_agents.add(cmd.agent)  # a deferred request changes no state, but is mirrored
        elif op == "answered":
            assert cmd.call_id is not None and cmd.agent is not None
            try:
                w = r.waiting.get(cmd.call_id)
                r.offer_answered(cmd.call_id, cmd.agent, now)
            except OfferGone:
                self._out.notices.append(
                    (
                        cmd.node,
                        Notice("gone", cmd.call_id, self.token, agents=(cmd.agent,), reason="offer_gone"),
                    )
                )
                return
            queue = w.queue if w is not None else ""
            self._talks[cmd.agent] = _Talk(cmd.call_id, queue, self.caller_node.get(cmd.call_id, cmd.node))
            self._forget_caller(cmd.call_id)
            self._dirty_agents.add(cmd.agent)
        elif op == "failed":
            assert cmd.call_id is not None and cmd.agent is not None
            r.offer_failed(cmd.call_id, cmd.agent, now, missed=bool(a.get("missed")))
            self._dirty_callers.add(cmd.call_id)
        elif op == "ended":
            assert cmd.agent is not None
            talk = self._talks.get(cmd.agent)
            # taken by _note_transitions when the wrap-up begins (cleared in apply() either way)
            self._ended_on[cmd.agent] = talk.node if talk is not None and talk.node else cmd.node
            r.call_ended(cmd.agent, now)
            self._talks.pop(cmd.agent, None)
        elif op == "own_started":
            assert cmd.agent is not None and cmd.call_id is not None
            r.own_call_started(cmd.agent, cmd.call_id, now)
        elif op == "own_ended":
            assert cmd.agent is not None and cmd.call_id is not None
            r.own_call_ended(cmd.agent, cmd.call_id, now)
        elif op == "callback_connecting":
            assert cmd.call_id is not None and cmd.agent is not None
            rec = self._callers.get(cmd.call_id)
            r.callback_connecting(cmd.call_id, cmd.agent, now)
            self._talks[cmd.agent] = _Talk(
                cmd.call_id, rec["queue"] if rec else "", self.caller_node.get(cmd.call_id)
            )
        elif op == "callback_answered":
            assert cmd.call_id is not None
            r.callback_answered(cmd.call_id, now)
            self._forget_caller(cmd.call_id)
        elif op == "callback_failed":
            assert cmd.call_id is not None
            retry = a.get("retry_in_s")
            r.callback_failed(cmd.call_id, now, retry_at=None if retry is None else now + float(retry))
            if cmd.call_id not in r.waiting:
                self._forget_caller(cmd.call_id)
            self._dirty_callers.add(cmd.call_id)
        elif op == "hello":  # a restarted node holds none of its previous run's callers or calls
            self.node_gone(cmd.node, now)
        elif op == "queue":
            q = queue_from_json(a)
            r.upsert_queue(q)
            self._out.writes.append(Write("queues", q.name, json.dumps(queue_to_json(q))))
        elif op == "queue_removed":
            r.remove_queue(str(a.get("name")))
            self._out.writes.append(Write("queues", str(a.get("name")), None))
        elif op in ("hold", "resume", "to_callback"):
            assert cmd.call_id is not None
            getattr(r, op)(cmd.call_id, now)
            if cmd.call_id in self._callers:
                if op == "to_callback":  # offered again (Router.to_callback resumes it)
                    self._callers[cmd.call_id].update(callback=True, held=False)
                else:
                    self._callers[cmd.call_id]["held"] = op == "hold"
            self._dirty_callers.add(cmd.call_id)

    def _enqueue(self, call_id: str, node: str, a: Mapping[str, Any], *, since: float, now: float) -> None:
        queue = str(a.get("queue"))
        try:
            joined = self.router.enqueue(
                call_id,
                queue,
                now,
                priority=int(a.get("priority") or 0),
                skills=a.get("skills") or None,
                language=a.get("language"),
                max_wait_s=a.get("max_wait_s"),
                since=since,
                callback=bool(a.get("callback")),
            )
        except KeyError:
            self._out.notices.append(
                (node, Notice("overflow", call_id, self.token, queue, reason="unknown_queue"))
            )
            return
        if isinstance(joined, Overflow):
            self._notice_overflow(node, joined)
            return
        self.caller_node[call_id] = node
        self._callers[call_id] = {
            "queue": queue,
            "priority": int(a.get("priority") or 0),
            "skills": dict(a.get("skills") or {}),
            "language": a.get("language"),
            "max_wait_s": a.get("max_wait_s"),
            "callback": bool(a.get("callback")),
            "held": False,
            "node": node,
            "since_mono": since,
        }
        self._dirty_callers.add(call_id)
        if not self._restoring and not a.get("callback"):
            self._new_places.append(call_id)

    def _forget_caller(self, call_id: str) -> None:
        self.caller_node.pop(call_id, None)
        self._callers.pop(call_id, None)
        self._dirty_callers.add(call_id)

    def _notice_overflow(self, node: str, o: Overflow) -> None:
        self._out.notices.append(
            (node, Notice("overflow", o.call_id, self.token, o.queue, target=o.target, reason=o.reason))
        )

    # -- a node went away -----------------------------------------------------------------------------

    def nodes_in_use(self) -> set[str]:
        """Nodes holding a waiting caller or a bridged call (the ones worth a liveness check)."""
        calls = set(self.caller_node.values()) | {t.node for t in self._talks.values() if t.node}
        return calls | self.chats.nodes()

    def node_gone(self, node: str, now: float) -> None:
        """``node`` died: its callers leave (abandoned, their offers' agents freed), its bridged calls end
        (no wrap-up is owed for a call that dropped, but the router's rule applies: the queue's). Its
        callbacks stay in line and move to ``home``. Its chats wait to be taken over (cluster/chats.py)."""
        self.chats.node_gone(node)
        for call_id in [c for c, n in self.caller_node.items() if n == node]:
            if self._adopt_callback(call_id, node, now):
                continue
            self.router.leave(call_id, now, reason="abandoned")
            self._forget_caller(call_id)
            self.dropped.append(call_id)
        for agent in [a for a, t in self._talks.items() if t.node == node]:
            self.router.call_ended(agent, now)
            del self._talks[agent]
        self._note_transitions()
        for agent in [a for a, (_, n) in self._wrap_since.items() if n == node]:
            del self._wrap_since[agent]  # nobody left to write those records

    def _adopt_callback(self, call_id: str, node: str, now: float) -> bool:
        """A callback entry of the dead ``node`` keeps its place and moves to ``home``: a live offer ends
        (its agents free, not missed: their phones rang from the dead node), a customer being dialled
        from there counts as a failed try, retried at once."""
        r = self.router
        if self.home is None or self.home == node or not r.is_callback(call_id):
            return False
        connecting = [a for a, t in self._talks.items() if t.call_id == call_id]
        if connecting:
            r.callback_failed(call_id, now, retry_at=now)
            for agent in connecting:
                del self._talks[agent]
        elif call_id in r.offers:
            r.hold(call_id, now)
            r.resume(call_id, now)
        self.caller_node[call_id] = self.home
        self._callers[call_id]["node"] = self.home
        self._dirty_callers.add(call_id)
        self.adopted.append(call_id)
        return True

    # -- timers, dispatch and what to send ------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self.router.get_timer()

    def step(self, now: float, wall: float) -> Output:
        """Timers due, a dispatch, and everything to send and write since the last step."""
        r = self.router
        rolled = r.day_ends_at is not None and r.day_ends_at <= now
        overflows = r.handle_timer(now)  # at day_ends_at: Router.new_day (talk_s_today back to 0)
        if rolled:
            self.day = self._next_day
            self._dirty_agents.update(a.name for a in r.agents)  # their records say the new day
            log.info("cluster: a new day (%s): per-day talk times start again", self.day)
        if r.day_ends_at is None:
            self._schedule_day(now, wall)
        for overflow in overflows:
            node = self.caller_node.get(overflow.call_id)
            self._forget_caller(overflow.call_id)
            if node is not None:
                self._notice_overflow(node, overflow)
        for offer in r.dispatch(now):
            self._send_offer(offer, now)
        self._note_transitions()
        self._send_places(now)
        # Talks the router ended by itself (a callback left / given up) are no longer ours to track.
        for agent in [a for a in self._talks if self._state(a) is not AgentState.ON_CALL]:
            del self._talks[agent]
        out, self._out = self._out, Output()
        for name in sorted(self._dirty_agents):
            if name in r.agents:
                out.writes.append(Write("agents", name, json.dumps(self.agent_record(name, now, wall))))
        for call_id in sorted(self._dirty_callers):
            rec = self.caller_record(call_id, now, wall)
            out.writes.append(Write("waiting", call_id, None if rec is None else json.dumps(rec)))
        self._dirty_agents.clear()
        self._dirty_callers.clear()
        out.writes.extend(self._stats_writes())
        out.writes.extend(self._recent_writes(now, wall))
        chats = self.chats.step(r.agents, now, wall)
        out.notices.extend(chats.notices)
        out.writes.extend(Write("chats", conv, value) for conv, value in chats.writes)
        out.writes.extend(Write("chat_lines", queue, value) for queue, value in chats.lines)
        return out

    def _schedule_day(self, now: float, wall: float) -> None:
        """Arm the router's day boundary at the next local midnight (as the single node's Acd does)."""
        today, midnight = local_day(wall, self.zone)
        if self.day is None:
            self.day = today
        self._next_day = local_day(midnight + 1.0, self.zone)[0]
        self.router.day_ends_at = now + (midnight - wall)

    def _send_places(self, now: float) -> None:
        """Each caller who joined since the last step learns its place at once (the node's first
        announcement waits for it); later places travel with the wallboard (``positions``)."""
        places, self._new_places = self._new_places, []
        for call_id in places:
            node, pos = self.caller_node.get(call_id), self.router.position(call_id)
            if node is None or pos is None or call_id in self.router.offers:
                continue  # gone, overflowed or offered already (that notice ends the wait)
            wait = self.router.estimated_wait_s(call_id, now)
            rec = self._callers.get(call_id) or {}
            self._out.notices.append(
                (
                    node,
                    Notice(
                        "place",
                        call_id,
                        self.token,
                        str(rec.get("queue") or ""),
                        position=pos,
                        wait_s=None if wait is None else round(wait, 1),
                    ),
                )
            )

    def _stats_writes(self) -> list[Write]:
        """The per-queue counters that changed since they were last written (the ``stats`` hash)."""
        writes = []
        for name, stats in self.router.stats.items():
            text = json.dumps(asdict(stats), sort_keys=True)
            if self._stats_written.get(name) != text:
                self._stats_written[name] = text
                writes.append(Write("stats", name, text))
        for name in [n for n in self._stats_written if n not in self.router.stats]:
            del self._stats_written[name]
            writes.append(Write("stats", name, None))
        return writes

    def _recent_writes(self, now: float, wall: float) -> list[Write]:
        """Each queue's recent answer / handle times that changed since last written (``recent`` hash)."""
        writes = []
        for name in self.router.queues:
            answers, handles = cur = self.router.recent(name)
            if self._recent_written.get(name) == cur:
                continue
            self._recent_written[name] = cur
            data = {
                "answers": [round(to_wall(t, now, wall), 3) for t in answers],
                "handles": [round(h, 3) for h in handles],
            }
            writes.append(Write("recent", name, json.dumps(data)))
        for name in [n for n in self._recent_written if n not in self.router.queues]:
            del self._recent_written[name]
            writes.append(Write("recent", name, None))
        return writes

    def _send_offer(self, offer: Offer, now: float) -> None:
        node = self.caller_node.get(offer.call_id)
        if node is None:  # a caller we hold no node for (cannot happen): free the agents again
            for agent in offer.agents:
                self.router.offer_failed(offer.call_id, agent, now, missed=False)
            return
        self._dirty_callers.add(offer.call_id)
        self._out.notices.append(
            (
                node,
                Notice(
                    "offer",
                    offer.call_id,
                    self.token,
                    offer.queue,
                    offer.agents,
                    offer.timeout_s,
                    offer.callback,
                ),
            )
        )

    def _state(self, agent: str) -> AgentState | None:
        return self.router.agents[agent].state if agent in self.router.agents else None

    def _note_transitions(self) -> None:
        """Changed agents go to the mirror; each change is logged as ``agent_state`` (the live event
        every node's clients see through the bridge) — here only, nodes do not log their own."""
        board = self.router.agents
        if board.transitions:
            for t in board.transitions:
                self._dirty_agents.add(t.agent)
                self._note_wrap_up(t)
                if not self._restoring:
                    log_event(
                        log,
                        "agent_state",
                        agent=t.agent,
                        state=str(t.after),
                        was=str(t.before),
                        reason=t.reason,
                        call_id=t.call_id,
                    )
            board.transitions = []

    def _note_wrap_up(self, t: Transition) -> None:
        """As the single node's Acd does (``Acd._note_wrap_up``), but the record is the node's to write:
        a ``wrap_up`` notice to the node that held the call, when the wrap-up ends. Not across a
        failover: the mirror does not keep wrap-ups (they end at once in a successor)."""
        if t.after is AgentState.WRAP_UP:
            node = self._ended_on.pop(t.agent, None)
            if node is not None and not self._restoring:
                self._wrap_since[t.agent] = (t.at, node)
        elif t.before is AgentState.WRAP_UP:
            began = self._wrap_since.pop(t.agent, None)
            if began is not None and t.call_id:
                since, node = began
                self._out.notices.append(
                    (
                        node,
                        Notice(
                            "wrap_up",
                            t.call_id,
                            self.token,
                            agents=(t.agent,),
                            seconds=round(t.at - since, 2),
                        ),
                    )
                )

    # -- waiting callers' places, for the nodes' announcements ------------------------------------------

    def positions(self, now: float) -> dict[str, dict[str, list[Any]]]:
        """Per node holding callers: call id → [position, estimated wait in seconds or None], as the
        single node's router answers them (``Router.position`` / ``estimated_wait_s``)."""
        out: dict[str, dict[str, list[Any]]] = {}
        for call_id, node in self.caller_node.items():
            pos = self.router.position(call_id)
            if pos is None:
                continue
            wait = self.router.estimated_wait_s(call_id, now)
            out.setdefault(node, {})[call_id] = [pos, None if wait is None else round(wait, 1)]
        return out

    # -- the mirror -----------------------------------------------------------------------------------

    def agent_record(self, name: str, now: float, wall: float) -> dict[str, Any]:
        agent = self.router.agents[name]
        talk = self._talks.get(name)
        call_id = agent.call_id
        node = queue = None
        if agent.state is AgentState.ON_CALL and talk is not None:
            call_id, queue, node = talk.call_id, talk.queue, talk.node
        elif agent.state is AgentState.RESERVED and call_id is not None:
            node = self.caller_node.get(call_id)
            rec = self._callers.get(call_id)
            queue = rec["queue"] if rec else None
        wrap = None
        if agent.state is AgentState.WRAP_UP and agent.wrap_up_until is not None:
            began = self._wrap_since.get(name)
            wrap = {
                "until": to_wall(agent.wrap_up_until, now, wall),
                "since": None if began is None else to_wall(began[0], now, wall),
                "node": None if began is None else began[1],  # owed the call's wrap_up_s
            }
        return {
            "skills": agent.skills,
            "languages": sorted(agent.languages),
            "max_chats": agent.max_chats,
            "state": str(agent.state),
            "reason": agent.reason,
            "call_id": call_id,
            "queue": queue,
            "node": node,
            "own_calls": sorted(agent.own_calls),
            "since": to_wall(agent.since, now, wall),
            "pending": None if agent.pending is None else str(agent.pending),
            "pending_reason": agent.pending_reason,
            "missed_in_row": agent.missed_in_row,
            "wrap": wrap,
            "last_call_id": agent.last_call_id,
            "idle_since": to_wall(agent.idle_since, now, wall),
            "offers": agent.offers,
            "answered": agent.answered,
            "talk_s_total": agent.talk_s_total,
            "talk_s_today": agent.talk_s_today,
            "day": self.day,  # the local date talk_s_today counts
        }

    def caller_record(self, call_id: str, now: float, wall: float) -> dict[str, Any] | None:
        rec = self._callers.get(call_id)
        if rec is None or call_id not in self.router.waiting:
            return None
        offer = self.router.offers.get(call_id)
        out = {k: v for k, v in rec.items() if k != "since_mono"}
        out["since"] = to_wall(rec["since_mono"], now, wall)
        out["offer"] = list(offer.agents) if offer is not None else None
        return out

    def restore(
        self,
        agents: Mapping[str, Mapping[str, Any]],
        waiting: Mapping[str, Mapping[str, Any]],
        alive: Iterable[str],
        now: float,
        wall: float,
        queues: Mapping[str, Mapping[str, Any]] | None = None,
        stats: Mapping[str, Mapping[str, Any]] | None = None,
        recent: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Rebuild from the mirror (module docstring). Every record is rewritten at the next step.
        ``queues``: the ones made in the admin console (the ``queues`` hash), over the configured;
        ``stats``: the per-queue counters (the ``stats`` hash); ``recent``: the answer / handle times
        for estimated waits (the ``recent`` hash)."""
        self.day = local_day(wall, self.zone)[0]
        for name, data in (queues or {}).items():
            try:
                self.router.upsert_queue(queue_from_json(data))
            except (TypeError, ValueError, KeyError) as exc:
                log.warning("cluster restore: queue %s skipped: %r", name, exc)
        self._restoring = True
        try:
            self._restore(agents, waiting, set(alive), now, wall)
        finally:
            self._restoring = False
        self._restore_stats(stats or {})
        self._restore_recent(recent or {}, now, wall)

    def _restore(
        self,
        agents: Mapping[str, Mapping[str, Any]],
        waiting: Mapping[str, Mapping[str, Any]],
        live: set[str],
        now: float,
        wall: float,
    ) -> None:
        r = self.router
        for name, rec in agents.items():
            try:
                r.agents.define(
                    name,
                    dict(rec.get("skills") or {}),
                    rec.get("languages") or (),
                    now=now,
                    max_chats=rec.get("max_chats"),
                )
            except ValueError as exc:
                log.warning("cluster restore: agent %s skipped: %r", name, exc)
        callers = sorted(waiting.items(), key=lambda kv: float(kv[1].get("since") or 0.0))
        kept: list[tuple[str, Mapping[str, Any]]] = []
        for call_id, rec in callers:
            if rec.get("node") in live:
                kept.append((call_id, rec))
            elif rec.get("callback") and self.home is not None:  # the request outlives its node
                kept.append((call_id, {**rec, "node": self.home, "offer": None}))
                self.adopted.append(call_id)
            else:
                self.dropped.append(call_id)
        kept_by_id = dict(kept)
        # 1. live offers, each made again to the same agents
        for call_id, rec in kept:
            ringing = [
                a
                for a in rec.get("offer") or ()
                if a in agents
                and a in r.agents
                and agents[a].get("state") == "reserved"
                and agents[a].get("call_id") == call_id
            ]
            if ringing:
                self._restore_offer(call_id, rec, ringing, now, wall)
        # 2. bridged calls on live nodes (and callbacks whose customer is being dialled)
        for name, rec in agents.items():
            if (
                rec.get("state") == "on_call"
                and rec.get("node") in live
                and rec.get("call_id")
                and name in r.agents
            ):
                cb = kept_by_id.get(str(rec["call_id"]))
                if cb is not None and cb.get("callback"):
                    self._restore_connecting(name, str(rec["call_id"]), cb, now, wall)
                else:
                    self._restore_talk(name, rec, now)
        # 3. everyone else's presence (a wrap-up goes on with what is left of it)
        wraps: list[tuple[str, float, str]] = []
        notices: list[tuple[str, Notice]] = []
        for name, rec in agents.items():
            if name not in r.agents or r.agents[name].state is not AgentState.OFFLINE:
                continue
            state = rec.get("state")
            if state == "not_ready":
                r.agent_event(name, AgentEvent.SET_NOT_READY, now, reason=rec.get("reason"))
            elif state == "wrap_up":
                self._restore_wrap_up(name, rec, live, now, wall, wraps, notices)
            elif state != "offline":  # available, or a call / offer lost with its node
                r.agent_event(name, AgentEvent.SET_AVAILABLE, now)
            for own in rec.get("own_calls") or ():
                r.own_call_started(name, str(own), now)
        # 4. the other callers, in their places
        for call_id, rec in kept:
            if call_id not in r.waiting:
                self._enqueue(
                    call_id, str(rec["node"]), rec, since=to_mono(float(rec["since"]), now, wall), now=now
                )
                if rec.get("held") and call_id in r.waiting:
                    r.hold(call_id, now)
                    self._callers[call_id]["held"] = True
        # 5. deferred requests, missed-offer counts and the strategies' counters
        for name, rec in agents.items():
            if name in r.agents:
                self._restore_counters(name, rec, now, wall)
        self._note_transitions()
        for name, since, node in wraps:  # after the transitions: their wrap_up notice is still owed
            self._wrap_since[name] = (since, node)
        self._out.notices.extend(notices)
        self._dirty_agents.update(agents)
        self._dirty_callers.update(waiting)

    def _restore_offer(
        self, call_id: str, rec: Mapping[str, Any], ringing: list[str], now: float, wall: float
    ) -> None:
        r = self.router
        for name in ringing:
            r.agent_event(name, AgentEvent.SET_AVAILABLE, now)
        self._enqueue(call_id, str(rec["node"]), rec, since=to_mono(float(rec["since"]), now, wall), now=now)
        offers = [o for o in r.dispatch(now) if o.call_id == call_id]
        if not offers:
            log.warning("cluster restore: the offer of %s to %s could not be made again", call_id, ringing)
        self._out = Output()  # the node already rings these agents: no second notice

    def _restore_talk(self, name: str, rec: Mapping[str, Any], now: float) -> None:
        r, call_id, queue = self.router, str(rec["call_id"]), str(rec.get("queue") or "")
        if queue not in r.queues:
            r.agent_event(name, AgentEvent.SET_AVAILABLE, now)
            return
        r.agent_event(name, AgentEvent.SET_AVAILABLE, now)
        joined = r.enqueue(call_id, queue, now, since=now)
        if isinstance(joined, Overflow) or not [o for o in r.dispatch(now) if o.call_id == call_id]:
            r.leave(call_id, now, reason="abandoned")
            return
        r.offer_answered(call_id, name, now)
        self._talks[name] = _Talk(call_id, queue, rec.get("node"))
        self._out = Output()

    def _restore_connecting(
        self, name: str, call_id: str, rec: Mapping[str, Any], now: float, wall: float
    ) -> None:
        """The agent answered a callback and its customer is being dialled: the entry stays in line,
        the agent on that call (as ``callback_connecting`` left them)."""
        r = self.router
        r.agent_event(name, AgentEvent.SET_AVAILABLE, now)
        node = str(rec["node"])
        self._enqueue(call_id, node, rec, since=to_mono(float(rec["since"]), now, wall), now=now)
        offer = next((o for o in r.dispatch(now) if o.call_id == call_id), None)
        if offer is None or name not in offer.agents:
            log.warning("cluster restore: callback %s could not be given back to %s", call_id, name)
            self._out = Output()
            return
        r.callback_connecting(call_id, name, now)
        self._talks[name] = _Talk(call_id, str(rec.get("queue") or ""), node)
        self._out = Output()

    def _restore_wrap_up(
        self,
        name: str,
        rec: Mapping[str, Any],
        live: set[str],
        now: float,
        wall: float,
        wraps: list[tuple[str, float, str]],
        notices: list[tuple[str, Notice]],
    ) -> None:
        """What is left of the wrap-up (to its mirrored end); ended meanwhile: available, and the node
        that held the call still gets the wrap-up's length."""
        board = self.router.agents
        wrap = rec.get("wrap") or {}
        until = wrap.get("until")
        since, node = wrap.get("since"), wrap.get("node")
        call_id = rec.get("last_call_id") or rec.get("call_id")
        board.apply(name, AgentEvent.SET_AVAILABLE, now)
        owed = since is not None and node in live and call_id
        if until is None or float(until) <= wall:
            if since is not None and owed and until is not None:
                seconds = round(float(until) - float(since), 2)
                notices.append(
                    (str(node), Notice("wrap_up", str(call_id), self.token, agents=(name,), seconds=seconds))
                )
            return
        # Through the board's own moves (no router talk, no statistics): reserved, on call, hung up.
        board.apply(name, AgentEvent.OFFER, now, call_id=str(call_id or ""))
        board.apply(name, AgentEvent.ANSWER, now)
        board.apply(name, AgentEvent.HANGUP, now, wrap_up_s=float(until) - wall)
        if since is not None and owed:
            wraps.append((name, to_mono(float(since), now, wall), str(node)))

    def _restore_counters(self, name: str, rec: Mapping[str, Any], now: float, wall: float) -> None:
        r, agent = self.router, self.router.agents[name]
        pending = rec.get("pending")
        if pending and agent.state in (AgentState.RESERVED, AgentState.ON_CALL, AgentState.OWN_CALL):
            try:  # deferred again: applies when that offer or call ends
                r.agent_event(name, AgentEvent(pending), now, reason=rec.get("pending_reason"))
            except (ValueError, CallcenterError) as exc:
                log.warning("cluster restore: %s's deferred %s skipped: %r", name, pending, exc)
        agent.missed_in_row = int(rec.get("missed_in_row") or 0)
        agent.offers = int(rec.get("offers") or 0)
        agent.answered = int(rec.get("answered") or 0)
        agent.talk_s_total = float(rec.get("talk_s_total") or 0.0)
        day = rec.get("day")
        # A midnight passed since the record was written (the predecessor did not roll it): a new day.
        stale = day is not None and self.day is not None and str(day) < self.day
        agent.talk_s_today = 0.0 if stale else float(rec.get("talk_s_today") or 0.0)
        if rec.get("idle_since") is not None:
            agent.idle_since = to_mono(float(rec["idle_since"]), now, wall)
        if rec.get("since") is not None and str(agent.state) == rec.get("state"):
            agent.since = to_mono(float(rec["since"]), now, wall)  # "in this state for" goes on

    def _restore_stats(self, stats: Mapping[str, Mapping[str, Any]]) -> None:
        """The counters as the mirror has them (the restore's own replays counted nothing real)."""
        r = self.router
        r.reset_stats()
        known = {f.name for f in fields(QueueStats)}
        for name, data in stats.items():
            if name in r.stats:
                try:
                    r.stats[name] = QueueStats(**{k: v for k, v in data.items() if k in known})
                except TypeError as exc:
                    log.warning("cluster restore: statistics of %s skipped: %r", name, exc)
        self._stats_written = {n: json.dumps(asdict(st), sort_keys=True) for n, st in r.stats.items()}

    def _restore_recent(self, recent: Mapping[str, Mapping[str, Any]], now: float, wall: float) -> None:
        """The estimates' answer / handle times as mirrored (the restore's replays answered nothing real)."""
        r = self.router
        for name in r.queues:
            data = recent.get(name) or {}
            try:
                answers = [to_mono(float(t), now, wall) for t in data.get("answers") or ()]
                handles = [float(h) for h in data.get("handles") or ()]
            except (TypeError, ValueError, AttributeError) as exc:
                log.warning("cluster restore: recent times of %s skipped: %r", name, exc)
                answers, handles = [], []
            r.set_recent(name, answers, handles)
        self._recent_written = {name: r.recent(name) for name in r.queues}
