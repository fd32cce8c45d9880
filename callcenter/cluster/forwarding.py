"""The seam between one node's :class:`~callcenter.calls.acd.Acd` and the cluster: a :class:`Router`
whose routing happens on the leader.

The Acd keeps calling ``enqueue`` / ``leave`` / ``offer_answered`` / ``offer_failed`` / ``call_ended``
/ ``agent_event`` as it does on one node; here each becomes a command to the leader
(:class:`~callcenter.cluster.node.ClusterNode`), and the leader's notices come back as the Acd's
:class:`Offer` / :class:`Overflow` items for the waiting caller (``deliver``). Local ``dispatch`` and
timers do nothing: the leader runs them over every node's callers and agents.

What stays local: the agent board (definitions and presence as this node saw them — the Acd reads it
to decide log-in / log-out on REGISTER), and the offers this node was told to ring (so an answer can
be checked, and the other agents of a ring-all offer released, without a round trip). The leader
still decides: an answer it no longer has an offer for comes back as a ``gone`` notice.

The wallboard (``snapshot``) is the leader's, refreshed in the background from Redis.

``waiting`` holds this node's own callers (arrival, queue, priority: what the Acd reads, e.g. for the
callback-key prompt once the caller has waited ``callback_after_s``); their order is the leader's.

Callbacks: the callback key ``hold``s the caller at the leader while it is asked for a number (a live
offer ends there, its agents free; an offer notice arriving meanwhile is refused, not missed), then
``to_callback`` (the entry keeps its place) or ``resume``. The callback offer comes to the node that
holds the entry, whose CallbackRunner calls back; a dead node's callbacks move to the leader's node.
Attended-transfer consultations (``Acd.ring_for_consult``) are callers like any other: enqueued under
their own id, offered by the leader, answered, and the consulted agent's call ends with ``call_ended``.

Position and estimated-wait announcements: the leader sends each new caller's place as a ``place``
notice (the Acd's first announcement waits for it, ``wait_for_place``, at most ``place_wait_s``), and
writes every node's callers' places (``positions:<node>``) with its snapshot, refreshed here with the
wallboard's copy for later announcements.

Wrap-up times: the leader runs the agents' wrap-ups; when one ends it sends a ``wrap_up`` notice to the
node that held the call, which merges ``wrap_up_s`` into the call's record (``record_extra``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from collections.abc import Mapping as _Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from callcenter.cluster.bindings import SharedBindings
from callcenter.cluster.messages import Notice, queue_to_json, to_wall
from callcenter.cluster.node import ClusterNode
from callcenter.routing.agents import Agent, AgentBoard, AgentEvent, InvalidTransition
from callcenter.routing.queues import QueueConfig, Waiting
from callcenter.routing.router import LeaveReason, Offer, OfferGone, Overflow, Router

__all__ = ["ForwardingRouter"]

log = logging.getLogger("callcenter.cluster.forwarding")

Deliver = Callable[[str, Offer | Overflow], bool]

_PRESENCE_OPS = {
    AgentEvent.LOGIN: "login",
    AgentEvent.LOGOUT: "logout",
    AgentEvent.SET_AVAILABLE: "set_available",
    AgentEvent.SET_NOT_READY: "set_not_ready",
    AgentEvent.SET_OFFLINE: "set_offline",
    AgentEvent.WRAP_UP_DONE: "wrap_up_done",
}


@dataclass
class _Ringing:
    queue: str
    agents: set[str]


class _ForwardingBoard(AgentBoard):
    """The local board; definitions also go to the leader."""

    node: ClusterNode | None = None

    # The leader logs every agent's state change (agent_state); a node logging its local view too
    # would show each presence change twice. The Acd's transitions list stays empty here.
    @property
    def transitions(self) -> list[Any] | None:
        return None

    @transitions.setter
    def transitions(self, value: list[Any] | None) -> None:
        pass

    def define(
        self,
        name: str,
        skills: Mapping[str, int] | None = None,
        languages: Any = (),
        *,
        now: float = 0.0,
        max_chats: int | None = None,
    ) -> Agent:
        languages = tuple(languages)
        agent = super().define(name, skills, languages, now=now, max_chats=max_chats)
        if self.node is not None:
            self.node.send(
                "define",
                agent=name,
                skills=dict(agent.skills),
                languages=sorted(agent.languages),
                max_chats=agent.max_chats,
            )
        return agent

    def remove(self, name: str) -> None:
        super().remove(name)
        if self.node is not None:
            self.node.send("remove", agent=name)


class ForwardingRouter(Router):
    def __init__(
        self,
        queues: Mapping[str, QueueConfig],
        node: ClusterNode,
        *,
        max_missed: int = 3,
        auto_available: bool = True,
    ) -> None:
        super().__init__(queues, max_missed=max_missed, auto_available=auto_available)
        board = _ForwardingBoard(max_missed=max_missed, auto_available=auto_available)
        board.node = node
        self.agents = board
        self.node = node
        self.deliver: Deliver | None = None  # the Acd's: hands an Offer / Overflow to the waiting caller
        self._ringing: dict[str, _Ringing] = {}
        self._callback_ids: set[str] = set()  # entries of callers who left a number (kept in line)
        self._local: dict[str, Waiting] = {}  # this node's callers in line (``waiting``)
        self._held: set[str] = set()  # held at the leader (asked for a callback number)
        self._place_known: dict[str, asyncio.Event] = {}  # first announcements waiting for a place
        self.place_wait_s = 2.0  # the longest a first announcement waits for the leader's place notice
        self._stopping = False
        self._snapshot: dict[str, Any] = {"queues": {}, "agents": {}}
        self._positions: dict[str, list[Any]] = {}  # call id → [position, estimated wait s | None]
        # Where wrap_up_s goes (the app: CallRecordWriter.call_extra); None = nowhere.
        self.record_extra: Callable[[str, dict[str, Any]], None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        # The cluster's shared registrations (cluster/bindings.py); the Acd attaches its registrar.
        self.bindings: SharedBindings | None = None
        node.on_notice = self.on_notice

    # -- life cycle: the wallboard copy -----------------------------------------------------------------

    def start(self, every_s: float = 0.5) -> None:
        self._refresh = asyncio.get_running_loop().create_task(self._refresh_snapshot(every_s))

    async def stop(self) -> None:
        """Bounded: the loop also stops on the flag (a cancelled Redis read may surface as another
        exception, which ``refresh`` swallows)."""
        self._stopping = True
        if self._refresh is not None:
            for _ in range(3):
                if self._refresh.done():
                    break
                self._refresh.cancel()
                await asyncio.wait({self._refresh}, timeout=2.0)
            self._refresh = None

    async def _refresh_snapshot(self, every_s: float) -> None:
        while not self._stopping:
            await self.refresh()
            await asyncio.sleep(every_s)

    async def refresh(self) -> None:
        """Read the leader's wallboard and this node's callers' places again (Redis errors: keep the
        last copy)."""
        with contextlib.suppress(Exception):
            self._snapshot = await self.node.snapshot()
        with contextlib.suppress(Exception):
            self._positions = await self.node.positions()

    def snapshot(self, now: float) -> dict[str, Any]:
        """The leader's wallboard; agents it has not heard of yet as this node sees them."""
        agents = {a.name: a.as_json(now) for a in self.agents}
        agents.update(self._snapshot.get("agents") or {})
        return {**self._snapshot, "agents": agents}

    # -- notices from the leader --------------------------------------------------------------------------

    def on_notice(self, notice: Notice) -> None:
        if notice.op != "wrap_up":
            self._placed(notice.call_id)
        if notice.op == "offer" and notice.call_id in self._held:
            # Made before the leader held the caller (the hold has ended it there): not rung, not missed.
            for agent in notice.agents:
                self.node.send("failed", call_id=notice.call_id, agent=agent, missed=False)
        elif notice.op == "offer":
            offer = Offer(notice.call_id, notice.queue, notice.agents, notice.timeout_s, notice.callback)
            self._ringing[notice.call_id] = _Ringing(notice.queue, set(notice.agents))
            if self.deliver is None or not self.deliver(notice.call_id, offer):
                # No such caller here (hung up meanwhile, or held by this node before it restarted):
                # free the agents, not missed, and take the caller out of the line for good.
                self._ringing.pop(notice.call_id, None)
                for agent in notice.agents:
                    self.node.send("failed", call_id=notice.call_id, agent=agent, missed=False)
                self.node.send("leave", call_id=notice.call_id, reason="abandoned")
        elif notice.op == "overflow":
            target = notice.target if notice.reason != "unknown_queue" else None
            reason = notice.reason if notice.reason in ("max_wait", "full", "no_agents") else "no_agents"
            overflow = Overflow(notice.call_id, notice.queue, target, reason)  # type: ignore[arg-type]
            if self.deliver is not None:
                self.deliver(notice.call_id, overflow)
        elif notice.op == "wrap_up":
            if self.record_extra is not None:
                self.record_extra(notice.call_id, {"wrap_up_s": notice.seconds})
        elif notice.op == "place":
            if notice.call_id in self._local:
                self._positions[notice.call_id] = [notice.position, notice.wait_s]
        else:  # gone: the leader had no offer for an answer we reported (the leg should be dropped)
            log.warning("cluster: answer of %s by %s came too late", notice.call_id, notice.agents)

    def _placed(self, call_id: str) -> None:
        event = self._place_known.pop(call_id, None)
        if event is not None:
            event.set()

    async def wait_for_place(self, call_id: str, timeout_s: float | None = None) -> bool:
        """Until the leader has answered this caller's enqueue (its place, an offer or an overflow),
        at most ``timeout_s`` (default ``place_wait_s``); whether the place is known."""
        if call_id in self._positions or call_id not in self._local:
            return call_id in self._positions
        event = self._place_known.setdefault(call_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), self.place_wait_s if timeout_s is None else timeout_s)
        if self._place_known.get(call_id) is event:
            del self._place_known[call_id]
        return call_id in self._positions

    # -- callers -------------------------------------------------------------------------------------------

    @property
    def waiting(self) -> _Mapping[str, Waiting]:
        """This node's callers in line (read only; their order is the leader's)."""
        return MappingProxyType(self._local)

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
        """Sent to the leader; the leader's answer (an offer, or an overflow when the queue is full or
        nobody is logged in) arrives as a notice. The position returned is provisional (1)."""
        if queue not in self.queues:
            raise KeyError(queue)
        if callback:
            self._callback_ids.add(call_id)
        own_max = max_wait_s if max_wait_s is not None else self.queues[queue].max_wait_s
        self._local[call_id] = Waiting(
            call_id, queue, priority, dict(skills or {}), language.lower() if language else None,
            now if since is None else since, max_wait_s=None if callback else own_max,
        )  # fmt: skip
        self.node.send(
            "enqueue",
            since_wall=None if since is None else to_wall(since, now, self.node.wall()),
            call_id=call_id,
            queue=queue,
            priority=priority,
            skills=dict(skills or {}),
            language=language,
            max_wait_s=max_wait_s,
            callback=callback,
        )
        return 1

    def leave(self, call_id: str, now: float, *, reason: LeaveReason) -> None:
        self._ringing.pop(call_id, None)
        self._callback_ids.discard(call_id)
        self._forget(call_id)
        self.node.send("leave", call_id=call_id, reason=reason)

    def _forget(self, call_id: str) -> None:
        self._local.pop(call_id, None)
        self._held.discard(call_id)
        self._positions.pop(call_id, None)  # not its place in a next queue
        self._placed(call_id)

    def position(self, call_id: str) -> int | None:
        entry = self._positions.get(call_id)
        return int(entry[0]) if entry else None

    def estimated_wait_s(self, call_id: str, now: float) -> float | None:
        entry = self._positions.get(call_id)
        return None if not entry or entry[1] is None else float(entry[1])

    # -- offers (decided by the leader) --------------------------------------------------------------------

    def dispatch(self, now: float) -> list[Offer]:
        return []

    def handle_timer(self, now: float) -> list[Overflow]:
        self.agents.handle_timer(now)
        return []

    def get_timer(self) -> float | None:
        return None

    def offer_answered(self, call_id: str, agent: str, now: float) -> list[str]:
        ringing = self._ringing.get(call_id)
        if ringing is None or agent not in ringing.agents:
            raise OfferGone(f"no live offer of call {call_id!r} to agent {agent!r}")
        del self._ringing[call_id]
        self.node.send("answered", call_id=call_id, agent=agent)
        return sorted(ringing.agents - {agent})

    def offer_failed(self, call_id: str, agent: str, now: float, *, missed: bool) -> None:
        ringing = self._ringing.get(call_id)
        if ringing is None or agent not in ringing.agents:
            return
        ringing.agents.discard(agent)
        if not ringing.agents:
            del self._ringing[call_id]
        self.node.send("failed", call_id=call_id, agent=agent, missed=missed)

    def call_ended(self, agent: str, now: float) -> None:
        self.node.send("ended", agent=agent)

    # -- callbacks (the entry keeps its place at the leader; this node runs the call back) -----------------

    def is_callback(self, call_id: str) -> bool:
        return call_id in self._callback_ids

    def hold(self, call_id: str, now: float) -> None:
        """Out of offers at the leader, keeping the place (the caller is asked for a number)."""
        if call_id not in self._local or call_id in self._held:
            return
        self._held.add(call_id)
        self._ringing.pop(call_id, None)  # an offer the Acd drops now: the leader's hold ends it
        self.node.send("hold", call_id=call_id)

    def resume(self, call_id: str, now: float) -> None:
        if call_id not in self._held:
            return
        self._held.discard(call_id)
        self.node.send("resume", call_id=call_id)

    def to_callback(self, call_id: str, now: float) -> None:
        """The caller left a number: the leader keeps the entry in its place, offered as a callback."""
        if call_id not in self._local:
            raise KeyError(call_id)
        self._callback_ids.add(call_id)
        self._held.discard(call_id)
        self._local[call_id].max_wait_s = None
        self.node.send("to_callback", call_id=call_id)

    def callback_connecting(self, call_id: str, agent: str, now: float) -> list[str]:
        ringing = self._ringing.get(call_id)
        if ringing is None or agent not in ringing.agents:
            raise OfferGone(f"no live offer of call {call_id!r} to agent {agent!r}")
        del self._ringing[call_id]
        self.node.send("callback_connecting", call_id=call_id, agent=agent)
        return sorted(ringing.agents - {agent})

    def callback_answered(self, call_id: str, now: float) -> None:
        self._callback_ids.discard(call_id)
        self._forget(call_id)
        self.node.send("callback_answered", call_id=call_id)

    def callback_failed(self, call_id: str, now: float, *, retry_at: float | None) -> None:
        if retry_at is None:
            self._callback_ids.discard(call_id)
            self._forget(call_id)
        self.node.send(
            "callback_failed", call_id=call_id, retry_in_s=None if retry_at is None else retry_at - now
        )

    # -- queues changed at run time (the admin console) -----------------------------------------------

    def upsert_queue(self, queue: QueueConfig) -> None:
        super().upsert_queue(queue)
        self.node.send("queue", **queue_to_json(queue))

    def remove_queue(self, name: str) -> None:
        """Checked here against this node's view only; the leader refuses (and logs) a queue someone
        still waits in anywhere."""
        super().remove_queue(name)
        self.node.send("queue_removed", name=name)

    # -- presence -------------------------------------------------------------------------------------------

    def agent_event(
        self, name: str, event: AgentEvent, now: float, *, reason: str | None = None, missed: bool = False
    ) -> Agent:
        op = _PRESENCE_OPS.get(event)
        if op is None:
            raise InvalidTransition(f"{event} is decided by the cluster's leader")
        agent = self.agents[name]
        self.node.send("presence", agent=name, event=op, reason=reason)
        with contextlib.suppress(InvalidTransition):
            self.agents.apply(name, event, now, reason=reason)  # the local view the Acd reads
        return agent

    def own_call_started(self, name: str, call_id: str, now: float) -> Agent:
        self.node.send("own_started", agent=name, call_id=call_id)
        return super().own_call_started(name, call_id, now)

    def own_call_ended(self, name: str, call_id: str, now: float) -> Agent | None:
        self.node.send("own_ended", agent=name, call_id=call_id)
        return super().own_call_ended(name, call_id, now)
