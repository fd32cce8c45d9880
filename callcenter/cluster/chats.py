"""The cluster's chat ACD, sans-I/O: one :class:`ChatRouter` on the elected leader, over the leader's
agent board (so presence — available / not ready / on a call — gates chats exactly as on one node).

Design (issue 10), chosen over capacity counters in Redis scripts: chats ride the voice side's
machinery. Each node keeps its conversations (a :class:`~callcenter.chat.engine.LiveChat`: flow,
timers, TaskGroup) and tells the leader what the single-node ChatRouter would have been told —
``chat_enqueue`` / ``chat_leave`` / ``chat_assign`` / ``chat_release`` / ``chat_hand_back`` /
``chat_take_back`` on the ``cmd`` stream; the leader runs the unchanged ChatRouter (priority, arrival,
skills, escalation stages, strategies, ``max_chats`` counted over every node) and sends
``chat_assign`` / ``chat_requeued`` notices to the node holding the conversation. Trade-off: one
decision point gives exact order and capacity (a Lua counter per agent could cap capacity, but not
serve "priority, then arrival, across nodes" nor the skills/escalation rules without rewriting them in
Lua) at the price of the leader's latency (a stream round trip, ~ms) and a pause of ``ttl + retry``
(~7 s) in assignments while a new leader is elected — the same as for calls.

The mirror (``chats`` hash, one JSON record per conversation the ACD knows: waiting with its place, or
held by an agent; and the node holding it) lets a new leader rebuild (:meth:`ChatLeader.restore`).

The line (``chat_lines`` hash, queue → JSON list of the conversation ids waiting in it, in service
order; written when it changes): every node reads it to show a waiting chat's place among the chats of
every node, and to refuse a new chat at once when the queue's ``max_length`` is reached. The leader
alone decides that limit, though: two nodes reading the same mirror could both admit the last place,
so a ``chat_enqueue`` beyond ``max_length`` (counting the waiting chats of every node, parked ones
too) is refused with a ``chat_full`` notice — the node's flow then takes its ``on_overflow`` path as on
one node, a few milliseconds later. Chats going back in line (``front``: handed back, transferred,
taken over) are never refused, as on one node.

A node that dies leaves its conversations in PostgreSQL and their owner entry in Redis;
``callcenter.chat.cluster`` on a surviving node claims them (atomically) and tells the leader with the
same commands. Meanwhile the leader parks the dead node's waiting chats (:meth:`node_gone`: out of
line, entry kept) so no agent is given a chat nobody can serve; they get their place back when a node
takes them over. Held chats keep their agent (and the agent's capacity).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from callcenter.chat.routing import ChatRouter, ChatWaiting
from callcenter.cluster.messages import Command, Notice, to_mono, to_wall
from callcenter.routing.agents import Agent
from callcenter.routing.queues import QueueConfig

__all__ = ["CHAT_OPS", "ChatLeader", "ChatOutput"]

log = logging.getLogger("callcenter.cluster.chats")

CHAT_OPS = frozenset(
    {"chat_enqueue", "chat_leave", "chat_assign", "chat_release", "chat_hand_back", "chat_take_back"}
)


@dataclass
class ChatOutput:
    notices: list[tuple[str, Notice]] = field(default_factory=list)  # (node, notice)
    writes: list[tuple[str, str | None]] = field(default_factory=list)  # chats hash: (field, JSON | None)
    lines: list[tuple[str, str | None]] = field(default_factory=list)  # chat_lines hash: (queue, JSON)


class ChatLeader:
    def __init__(
        self,
        queues: Mapping[str, QueueConfig],
        token: int,
        *,
        offer_during_calls: bool = False,
        default_max_chats: int = 3,
    ) -> None:
        self.router = ChatRouter(
            queues, offer_during_calls=offer_during_calls, default_max_chats=default_max_chats
        )
        self.token = token
        self.owner: dict[int, str] = {}  # conversation → the node holding it (absent: its node died)
        self.parked: dict[int, ChatWaiting] = {}  # waiting chats of a dead node, out of line
        self._dirty: set[int] = set()
        self._out = ChatOutput()
        self._lines_written: dict[str, str] = {}  # queue → the line JSON last written

    # -- commands -------------------------------------------------------------------------------------

    def apply(self, cmd: Command, now: float, wall: float) -> None:
        """One node's chat command (raises KeyError / ValueError for a bad one: the caller logs it)."""
        if cmd.op == "chat_take_back":
            agent = str(cmd.agent or "")
            for moved in self.router.take_back(agent, now):
                self._requeued(moved, agent, "away")
            return
        if cmd.call_id is None:
            raise ValueError("a chat command names its conversation")
        conv, a, r = int(cmd.call_id), cmd.args, self.router
        self._dirty.add(conv)
        if cmd.op == "chat_enqueue":
            self.owner[conv] = cmd.node
            queue = str(a.get("queue"))
            kept = self.parked.pop(conv, None) or r.entry(conv)
            if kept is not None and kept.queue == queue:
                r.attach(kept)  # taken over from a dead node, or back after a restart: same place
                return
            front = bool(a.get("front"))
            if not front and self.full(queue):
                self._out.notices.append(
                    (cmd.node, Notice("chat_full", str(conv), self.token, queue, reason="full"))
                )
                r.leave(conv)  # a stale entry in another queue, if any
                return
            since = now if front else to_mono(float(a.get("since_wall") or cmd.at or wall), now, wall)
            r.enqueue(
                conv,
                queue,
                since,
                priority=int(a.get("priority") or 0),
                skills=a.get("skills") or None,
                language=a.get("language"),
                front=front,
            )
        elif cmd.op == "chat_leave":
            r.leave(conv)
            self.parked.pop(conv, None)
        elif cmd.op == "chat_assign":
            self.owner[conv] = cmd.node
            self.parked.pop(conv, None)
            r.assign(conv, str(a.get("agent") or cmd.agent), str(a.get("queue") or ""), now)
        elif cmd.op == "chat_release":
            r.release(conv)
        elif cmd.op == "chat_hand_back":
            r.hand_back(conv, now)
        else:
            raise ValueError(f"not a chat command: {cmd.op}")

    def line(self, queue: str) -> list[int]:
        """The conversations waiting in ``queue``, in service order (parked ones are out of line)."""
        return [w.conversation_id for w in self.router.waiting() if w.queue == queue]

    def full(self, queue: str) -> bool:
        """Whether a new chat would exceed the queue's ``max_length`` (every node's waiting chats)."""
        q = self.router.queues.get(queue)
        if q is None or q.max_length is None:
            return False
        parked = sum(1 for w in self.parked.values() if w.queue == queue)
        return len(self.line(queue)) + parked >= q.max_length

    # -- a node went away -------------------------------------------------------------------------------

    def nodes(self) -> set[str]:
        return set(self.owner.values())

    def node_gone(self, node: str) -> None:
        """Its chats wait for another node to take them over: waiting ones leave the line (entry kept)."""
        for conv in [c for c, n in self.owner.items() if n == node]:
            del self.owner[conv]
            w = self.router.detach(conv)
            if w is not None:
                self.parked[conv] = w
            self._dirty.add(conv)

    # -- dispatch -----------------------------------------------------------------------------------------

    def step(self, agents: Iterable[Agent], now: float, wall: float) -> ChatOutput:
        """Chats of agents gone offline back in line, then assignments; notices and mirror writes."""
        agents = list(agents)
        for agent, moved in self.router.sync(agents, now):
            for conv in moved:
                self._requeued(conv, agent, "offline")
        for a in self.router.dispatch(agents, now):
            self._dirty.add(a.conversation_id)
            node = self.owner.get(a.conversation_id)
            if node is not None:
                notice = Notice(
                    "chat_assign",
                    str(a.conversation_id),
                    self.token,
                    a.queue,
                    agents=(a.agent,),
                    seconds=round(a.waited_s, 3),
                )
                self._out.notices.append((node, notice))
        out, self._out = self._out, ChatOutput()
        out.lines = self._line_writes()
        for conv in sorted(self._dirty):
            rec = self.record(conv, now, wall)
            if rec is None:
                self.owner.pop(conv, None)
            out.writes.append((str(conv), None if rec is None else json.dumps(rec, separators=(",", ":"))))
        self._dirty.clear()
        return out

    def _line_writes(self) -> list[tuple[str, str | None]]:
        """Each queue's line when it changed since last written (a queue never written: when not empty;
        after a restore, every queue the mirror had chats in)."""
        lines: dict[str, list[int]] = {name: [] for name in self.router.queues}
        for w in self.router.waiting():
            lines.setdefault(w.queue, []).append(w.conversation_id)
        writes: list[tuple[str, str | None]] = []
        for name, convs in lines.items():
            text = json.dumps(convs, separators=(",", ":"))
            if self._lines_written.get(name, "[]") != text:
                self._lines_written[name] = text
                writes.append((name, text))
        for name in [n for n in self._lines_written if n not in lines]:
            del self._lines_written[name]
            writes.append((name, None))
        return writes

    def _requeued(self, conv: int, agent: str, reason: str) -> None:
        self._dirty.add(conv)
        node = self.owner.get(conv)
        if node is None:
            w = self.router.detach(conv)  # its node is gone: parked until taken over
            if w is not None:
                self.parked[conv] = w
            return
        self._out.notices.append(
            (node, Notice("chat_requeued", str(conv), self.token, agents=(agent,), reason=reason))
        )

    # -- the mirror ---------------------------------------------------------------------------------------

    def record(self, conv: int, now: float, wall: float) -> dict[str, Any] | None:
        w = self.router.entry(conv) or self.parked.get(conv)
        held = self.router.held(conv)
        if w is None and held is None:
            return None
        rec: dict[str, Any] = {"node": self.owner.get(conv)}
        if w is not None:
            rec.update(
                state="waiting",
                queue=w.queue,
                priority=w.priority,
                skills=dict(w.skills),
                language=w.language,
                since=round(to_wall(w.enqueued_at, now, wall), 3),
                seq=w.seq,
                front=w.front,
                passed=sorted(w.passed),
            )
        elif held is not None:
            rec.update(state="held", agent=held[0], queue=held[1])
        return rec

    def restore(
        self, records: Mapping[str, Mapping[str, Any]], alive: set[str], now: float, wall: float
    ) -> None:
        """Rebuild from the ``chats`` hash; chats of nodes not alive are parked / ownerless."""
        waiting: list[ChatWaiting] = []
        for key, rec in records.items():
            try:
                conv = int(key)
                node = rec.get("node")
                if rec.get("state") == "held":
                    self.router.assign(conv, str(rec["agent"]), str(rec.get("queue") or ""), now)
                else:
                    w = ChatWaiting(
                        conv,
                        str(rec["queue"]),
                        int(rec.get("priority") or 0),
                        dict(rec.get("skills") or {}),
                        rec.get("language"),
                        to_mono(float(rec["since"]), now, wall),
                        int(rec.get("seq") or 0),
                        bool(rec.get("front")),
                        frozenset(rec.get("passed") or ()),
                    )
                    if node in alive:
                        waiting.append(w)
                    else:
                        self.parked[conv] = w
                if isinstance(node, str) and node in alive:
                    self.owner[conv] = node
                self._dirty.add(conv)
                self._lines_written[str(rec.get("queue"))] = "?"  # rewritten at the next step
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("cluster restore: chat %s skipped: %r", key, exc)
        for w in sorted(waiting, key=lambda x: x.order):
            self.router.attach(w)
