"""Chat routing with capacity: the voice queues' skills and priorities, no ringing (pure; ``now`` passed in).

A chat is *assigned*: it lands in the agent's inbox at once, up to the agent's ``max_chats`` at a time.
Who may take a new chat is read from the voice agent board (one presence for both media):

- ``available`` → yes; ``not_ready`` / ``offline`` → no (not-ready keeps the chats they have);
- on a voice call (ringing, talking, own call) or in wrap-up → only with ``offer_during_calls``.

Waiting chats are served by priority, then arrival, exactly as voice callers are (an agent who
qualifies for several queues takes the first in that order across them). Chats taken back from an
agent (offline, inbox closed, handed back) go to the head of their queue, before anyone else.
Strategies: ``round_robin`` as voice; ``skill_weighted`` the most skilled, then least busy; every
other (``longest_idle``, ``least_talk_time``, ``ring_all``) means "least busy, then longest since their
last chat" — the chat counterpart of longest idle.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from callcenter.routing.agents import Agent, AgentState, language_ok
from callcenter.routing.queues import QueueConfig, required_skills, skills_ok, stage_at

__all__ = ["ChatAssignment", "ChatRouter", "ChatWaiting", "can_take_chats"]

_ON_VOICE = frozenset({AgentState.RESERVED, AgentState.ON_CALL, AgentState.WRAP_UP, AgentState.OWN_CALL})


def can_take_chats(agent: Agent, *, offer_during_calls: bool = False) -> bool:
    """Whether the agent's voice state lets new chats in (capacity aside)."""
    if agent.state is AgentState.AVAILABLE:
        return True
    return offer_during_calls and agent.state in _ON_VOICE


def logged_in(agent: Agent) -> bool:
    return agent.state is not AgentState.OFFLINE


@dataclass(eq=False)
class ChatWaiting:
    conversation_id: int
    queue: str
    priority: int = 0
    skills: Mapping[str, int] = field(default_factory=dict)  # extra, from the flow
    language: str | None = None
    enqueued_at: float = 0.0
    seq: int = 0
    front: bool = False  # taken back from an agent: ahead of everyone who never had one
    passed: frozenset[str] = frozenset()  # agents who handed it back (others first)

    @property
    def order(self) -> tuple[int, int, float, int]:
        return (0 if self.front else 1, -self.priority, self.enqueued_at, self.seq)


@dataclass(frozen=True)
class ChatAssignment:
    conversation_id: int
    agent: str
    queue: str
    waited_s: float


class ChatRouter:
    """Waiting chats and who holds which chat; :meth:`dispatch` assigns."""

    def __init__(
        self,
        queues: Mapping[str, QueueConfig],
        *,
        offer_during_calls: bool = False,
        default_max_chats: int = 3,
    ) -> None:
        self.queues = queues  # kept, not copied: the voice router's queues as admins change them
        self.offer_during_calls = offer_during_calls
        self.default_max_chats = default_max_chats
        self._waiting: dict[int, ChatWaiting] = {}
        self._held: dict[int, tuple[str, str]] = {}  # conversation → (agent, queue)
        self._by_agent: dict[str, set[int]] = {}
        self._last_chat_at: dict[str, float] = {}
        self._rr: dict[str, str] = {}
        self._seq = itertools.count()

    # -- views -------------------------------------------------------------------------------------------

    def waiting(self) -> list[ChatWaiting]:
        """Waiting chats in service order."""
        return sorted(self._waiting.values(), key=lambda w: w.order)

    def is_waiting(self, conversation_id: int) -> bool:
        return conversation_id in self._waiting

    def position(self, conversation_id: int) -> int | None:
        """1-based place among the chats waiting in the same queue."""
        w = self._waiting.get(conversation_id)
        if w is None:
            return None
        line = [x for x in self.waiting() if x.queue == w.queue]
        return line.index(w) + 1

    def agent_of(self, conversation_id: int) -> str | None:
        held = self._held.get(conversation_id)
        return held[0] if held is not None else None

    def chats_of(self, agent: str) -> set[int]:
        return set(self._by_agent.get(agent, ()))

    def load(self, agent: str) -> int:
        return len(self._by_agent.get(agent, ()))

    def entry(self, conversation_id: int) -> ChatWaiting | None:
        """The chat's place in line, when it waits."""
        return self._waiting.get(conversation_id)

    def held(self, conversation_id: int) -> tuple[str, str] | None:
        """(agent, queue) of a chat in an agent's inbox."""
        return self._held.get(conversation_id)

    def detach(self, conversation_id: int) -> ChatWaiting | None:
        """Take a waiting chat out of line, keeping its entry (the cluster's leader parks a dead node's
        chats until another node takes them over: :meth:`attach` puts them back in the same place)."""
        return self._waiting.pop(conversation_id, None)

    def attach(self, w: ChatWaiting) -> None:
        self.release(w.conversation_id)
        self._waiting[w.conversation_id] = w

    def capacity(self, agent: Agent) -> int:
        value = getattr(agent, "max_chats", None)
        return value if isinstance(value, int) and value >= 0 else self.default_max_chats

    # -- changes -----------------------------------------------------------------------------------------

    def enqueue(
        self,
        conversation_id: int,
        queue: str,
        now: float,
        *,
        priority: int = 0,
        skills: Mapping[str, int] | None = None,
        language: str | None = None,
        front: bool = False,
    ) -> ChatWaiting:
        if queue not in self.queues:
            raise KeyError(f"no queue {queue!r}")
        self.release(conversation_id)
        w = ChatWaiting(
            conversation_id, queue, priority, dict(skills or {}), language, now, next(self._seq), front
        )
        self._waiting[conversation_id] = w
        return w

    def anyone_for(
        self,
        queue: str,
        agents: Iterable[Agent],
        *,
        skills: Mapping[str, int] | None = None,
        language: str | None = None,
    ) -> bool:
        """Whether a logged-in agent (any state but offline) has what the queue needs: without one, a
        chat overflows at once unless the queue has ``join_when_empty``."""
        q = self.queues[queue]
        need = required_skills(q, skills or {}, 0)
        return any(
            logged_in(a)
            and self.capacity(a) > 0
            and skills_ok(a.skills, need)
            and language_ok(a.languages, language)
            for a in agents
        )

    def leave(self, conversation_id: int) -> bool:
        """The chat stops waiting (closed, timed out); True when it was waiting."""
        return self._waiting.pop(conversation_id, None) is not None

    def assign(self, conversation_id: int, agent: str, queue: str, now: float) -> None:
        """Give the chat to ``agent`` directly (a transfer to an agent; capacity is not checked)."""
        self._waiting.pop(conversation_id, None)
        self.release(conversation_id)
        self._held[conversation_id] = (agent, queue)
        self._by_agent.setdefault(agent, set()).add(conversation_id)
        self._last_chat_at[agent] = now

    def release(self, conversation_id: int) -> str | None:
        """The chat no longer takes its agent's capacity (closed or moved); returns that agent."""
        held = self._held.pop(conversation_id, None)
        if held is None:
            return None
        chats = self._by_agent.get(held[0])
        if chats is not None:
            chats.discard(conversation_id)
            if not chats:
                del self._by_agent[held[0]]
        return held[0]

    def hand_back(self, conversation_id: int, now: float) -> str | None:
        """The agent gives the chat back: head of its queue, other agents first. Returns the agent."""
        held = self._held.get(conversation_id)
        if held is None:
            return None
        agent, queue = held
        self.release(conversation_id)
        w = self._requeue(conversation_id, queue, now)
        w.passed = w.passed | {agent}
        return agent

    def take_back(self, agent: str, now: float) -> list[int]:
        """Every chat of ``agent`` (offline, inbox closed) goes back to the head of its queue, in the
        order the agent got them."""
        moved = sorted(self._by_agent.get(agent, ()))
        for conversation_id in moved:
            queue = self._held[conversation_id][1]
            self.release(conversation_id)
            self._requeue(conversation_id, queue, now)
        return moved

    def _requeue(self, conversation_id: int, queue: str, now: float) -> ChatWaiting:
        w = ChatWaiting(conversation_id, queue, 0, {}, None, now, next(self._seq), front=True)
        self._waiting[conversation_id] = w
        return w

    def sync(self, agents: Iterable[Agent], now: float) -> list[tuple[str, list[int]]]:
        """Take the chats back from agents who went offline or no longer exist."""
        present = {a.name: a for a in agents}
        out = []
        for name in list(self._by_agent):
            agent = present.get(name)
            if agent is None or not logged_in(agent):
                out.append((name, self.take_back(name, now)))
        return out

    def dispatch(self, agents: Iterable[Agent], now: float) -> list[ChatAssignment]:
        """Assign waiting chats (in service order) to agents with room; returns the assignments made."""
        ready = [
            a
            for a in agents
            if can_take_chats(a, offer_during_calls=self.offer_during_calls)
            and self.load(a.name) < self.capacity(a)
        ]
        out: list[ChatAssignment] = []
        if not ready:
            return out
        for w in self.waiting():
            queue = self.queues.get(w.queue)
            if queue is None:
                continue
            need = required_skills(queue, w.skills, stage_at(queue, now - w.enqueued_at))
            fit = [
                a
                for a in ready
                if self.load(a.name) < self.capacity(a)
                and skills_ok(a.skills, need)
                and language_ok(a.languages, w.language)
            ]
            fresh = [a for a in fit if a.name not in w.passed]
            pick = self._choose(queue, fresh or fit, need)
            if pick is None:
                continue
            self.assign(w.conversation_id, pick.name, w.queue, now)
            out.append(ChatAssignment(w.conversation_id, pick.name, w.queue, max(0.0, now - w.enqueued_at)))
            ready = [a for a in ready if self.load(a.name) < self.capacity(a)]
            if not ready:
                break
        return out

    def _choose(self, queue: QueueConfig, candidates: list[Agent], need: Mapping[str, int]) -> Agent | None:
        if not candidates:
            return None
        if queue.strategy == "round_robin":
            last = self._rr.get(queue.name)
            names = sorted(a.name for a in candidates)
            name = next((n for n in names if last is None or n > last), names[0])
            self._rr[queue.name] = name
            return next(a for a in candidates if a.name == name)

        def least_busy(a: Agent) -> tuple[int, float, str]:
            return (self.load(a.name), self._last_chat_at.get(a.name, a.idle_since), a.name)

        if queue.strategy == "skill_weighted":
            return min(candidates, key=lambda a: (-sum(a.skills.get(s, 0) for s in need), *least_busy(a)))
        return min(candidates, key=least_busy)
