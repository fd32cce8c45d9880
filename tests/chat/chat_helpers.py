"""Helpers for the conversation engine tests (imported by name): a SQLite store, a test channel adapter
collecting what the engine sends, a small flow, an agent board and a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import callcenter.store.crm  # noqa: F401 - registers the tables
from callcenter.chat.engine import ConversationEngine
from callcenter.chat.model import Inbound, Outbound
from callcenter.chat.routing import ChatRouter
from callcenter.chat.store import ChatStore
from callcenter.core.clock import FakeClock
from callcenter.core.config import ChatSettings
from callcenter.ivr.loader import load_flow_text
from callcenter.ivr.schema import Flow
from callcenter.ivr.services import KbAnswer, Services
from callcenter.routing.agents import Agent, AgentState
from callcenter.routing.queues import QueueConfig
from callcenter.store import Store
from callcenter.tickets.service import HandledCall

FLOW = """
id: chatflow
language: en-US
start: hello
nodes:
  hello:
    type: say
    text: Welcome to Acme.
    next: menu
  menu:
    type: menu
    prompt: What can we do for you?
    options:
      - {dtmf: "1", speech: [billing, invoice], next: q_billing}
      - {dtmf: "2", speech: [question], next: kb}
      - {dtmf: "9", speech: [message], next: vm}
      - {dtmf: "0", speech: [agent], next: to_ann}
      - {dtmf: "7", speech: [phone], next: to_number}
    other_speech: kb
    no_input: Are you still there?
    invalid: Sorry, I did not get that.
    retries: 1
    on_failure: bye
  kb:
    type: kb_answer
    question: ${last_utterance}
    ask: What is your question?
    not_found: Sorry, I have no answer to that.
    next: bye
    on_unresolved: q_billing
  q_billing:
    type: queue
    queue: billing
    on_overflow: closed
  closed:
    type: say
    text: Nobody is free right now.
    next: vm
  vm:
    type: voicemail
    prompt: Leave us a message.
    next: bye
  to_ann:
    type: transfer
    to: agent:ann
  to_number:
    type: transfer
    to: "+15551234567"
  bye:
    type: hangup
    prompt: Goodbye.
"""


class Channel:
    """A channel adapter that keeps every Outbound and lets tests wait for one (no sleeps)."""

    def __init__(self) -> None:
        self.sent: list[Outbound] = []
        self._changed = asyncio.Condition()
        self.fail = False

    async def deliver(self, out: Outbound) -> None:
        if self.fail:
            raise ConnectionError("channel down")
        async with self._changed:
            self.sent.append(out)
            self._changed.notify_all()

    def texts(self) -> list[str]:
        return [o.text for o in self.sent]

    async def wait_for(self, pred: Callable[[list[Outbound]], bool], timeout: float = 10.0) -> list[Outbound]:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: pred(self.sent))

        await asyncio.wait_for(wait(), timeout)  # a safety net against a hang, not a timing assertion
        return self.sent

    async def said(self, fragment: str, count: int = 1, timeout: float = 10.0) -> list[Outbound]:
        return await self.wait_for(lambda sent: sum(fragment in o.text for o in sent) >= count, timeout)


class FakeKb:
    def __init__(self) -> None:
        self.questions: list[str] = []

    async def answer(self, question: str, *, language: str) -> KbAnswer | None:
        self.questions.append(question)
        if "refund" in question.lower():
            return KbAnswer("Refunds take five working days.", article_id="7", score=0.9)
        return None

    async def article(self, key: int | str) -> Any:
        class A:
            title = "Refunds"

        return A()


def msg(
    text: str,
    visitor: str = "v1",
    *,
    external_id: str | None = None,
    kind: str = "text",
    channel: str = "webchat",
    account: str = "web",
) -> Inbound:
    return Inbound(channel, account, visitor, kind, text, datetime.now(UTC), external_id=external_id)  # type: ignore[arg-type]


async def until(pred: Callable[[], bool], limit: int = 10_000) -> None:
    """Let the loop run until ``pred`` holds: ``limit`` turns of the loop, then short sleeps (worker
    threads write the messages) — bounded (~20 s more), no assertion on how long it took."""
    for i in range(limit + 2000):
        if pred():
            return
        await asyncio.sleep(0 if i < limit else 0.01)
    raise AssertionError("condition never held")


class World:
    def __init__(self, tmp: Path) -> None:
        self.store = Store(f"sqlite:///{tmp / 'chat.db'}")
        self.store.create_all()
        self.clock = FakeClock()
        self.channel = Channel()
        self.kb = FakeKb()
        self.flow: Flow = load_flow_text(FLOW)
        self.agents: dict[str, Agent] = {}
        self.tickets: list[HandledCall] = []
        self.queues: dict[str, QueueConfig] = {
            "billing": QueueConfig("billing", skills={"billing": 1}, join_when_empty=True),
            "general": QueueConfig("general"),
        }
        self.router = ChatRouter(self.queues)
        self.settings = ChatSettings(reply_timeout_s=60, idle_close_s=600)

        async def file(call: HandledCall) -> int | None:
            self.tickets.append(call)
            return None

        self.engine = ConversationEngine(
            ChatStore(self.store.engine),
            self.router,
            settings=self.settings,
            flows=lambda flow_id: (self.flow, Services(kb=self.kb)) if flow_id == "chatflow" else None,
            default_flow="chatflow",
            agents=lambda: list(self.agents.values()),
            tickets=file,
            clock=self.clock,
        )
        self.engine.register_channel("webchat", self.channel.deliver)

    def add_agent(self, name: str, state: AgentState = AgentState.AVAILABLE, **skills: int) -> Agent:
        a = Agent(name, dict(skills or {"billing": 1}), frozenset(), state=state)
        a.max_chats = 2
        self.agents[name] = a
        return a

    def tick(self, seconds: float = 0.0) -> None:
        self.engine.handle_timer(self.clock.advance(seconds))
