"""The conversation engine: one live conversation per (channel, account, visitor), through a flow in text
mode, the chat ACD and an agent's inbox, into tickets when it closes. Implements
:class:`callcenter.chat.model.ChatEngine`.

- A message with no open conversation starts one (its customer found or created) and the channel's
  flow (config ``chat.flows``); the opening message is stored but not taken as the answer to the flow's
  first question (a caller also hears the greeting before answering).
- Every message, in or out, is stored before :meth:`ChatEngine.receive` returns / before it is
  delivered: nothing accepted is lost. Retries are dropped by ``external_id`` (per channel+account,
  remembered ``chat.dedupe_hours``; in memory, so a restart forgets them).
- A conversation's tasks (its flow) live in its own TaskGroup; closing cancels them.
- Silence, queue waits and idle closing are timers on the engine's clock: :meth:`handle_timer(now)`
  (the server runs it every second; tests step a FakeClock).
- Live events (``chat_assigned``, ``chat_message``, ``chat_requeued``, ``chat_closed``, …) go through
  the structured log to the bus; each names its ``agent`` (agents see only their own chats).

Conversation states, as a table (:data:`TRANSITIONS`): ``bot`` (in the flow) → ``waiting`` (in a queue)
→ ``assigned`` (in an agent's inbox) → back to ``waiting`` (handed back, agent offline, transferred to
a queue) …; any → ``closed``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from callcenter.chat.flowtext import ArticleKb, ChatCallControl
from callcenter.chat.model import ChatChannel, Deliver, Inbound, Outbound, OutboundKind
from callcenter.chat.routing import ChatRouter
from callcenter.chat.store import ChatStore, StoredMessage
from callcenter.core.clock import Clock, MonotonicClock
from callcenter.core.config import ChatSettings
from callcenter.core.errors import CallcenterError
from callcenter.core.logging import log_event
from callcenter.ivr.control import QueueRequest, QueueResult, TransferResult
from callcenter.ivr.engine import FlowResult, FlowRunner
from callcenter.ivr.nodes import CallInfo
from callcenter.ivr.schema import Flow
from callcenter.ivr.services import Services, TranscriptEntry
from callcenter.routing.agents import Agent
from callcenter.store.db import utcnow
from callcenter.tickets.service import HandledCall, Turn

if TYPE_CHECKING:
    from callcenter.store.crm import Conversation

__all__ = [
    "ChatError",
    "ConversationEngine",
    "ConversationState",
    "FlowSource",
    "LiveChat",
    "PassiveSlot",
    "RemoteChats",
    "TRANSITIONS",
]

log = logging.getLogger("callcenter.chat")

ConversationState = Literal["bot", "waiting", "assigned", "closed"]
ChatAction = Literal["queue", "assign", "requeue", "leave", "close"]

TRANSITIONS: Mapping[tuple[ConversationState, ChatAction], ConversationState] = MappingProxyType(
    {
        ("bot", "queue"): "waiting",  # the flow's queue node
        ("bot", "assign"): "assigned",  # the flow's transfer to agent:NAME
        ("bot", "close"): "closed",
        ("waiting", "assign"): "assigned",  # the chat ACD, or a transfer to an agent
        ("waiting", "queue"): "waiting",  # a transfer to another queue
        ("waiting", "leave"): "bot",  # no agent in time: the flow's on_overflow goes on
        ("waiting", "close"): "closed",
        ("assigned", "requeue"): "waiting",  # handed back, agent offline, transfer to a queue
        ("assigned", "assign"): "assigned",  # transfer to another agent
        ("assigned", "close"): "closed",
    }
)

# flow id → the flow and the services its conversation keeps (a snapshot, like a call's), or None
FlowSource = Callable[[str], "tuple[Flow, Services] | None"]
TicketHook = Callable[[HandledCall], Awaitable[int | None]]
AgentSource = Callable[[], Iterable[Agent]]
# (account, visitor) → a context in which the channel's next Outbound to that customer resolves the
# future instead of being sent (WeChat's passive reply); cluster mode uses it for forwarded messages.
PassiveSlot = Callable[[str, str], AbstractAsyncContextManager["asyncio.Future[Outbound]"]]
# (visitor, typing, agent's name): show an agent's typing on the visitor's connections on this node
TypingShow = Callable[[str, bool, str], Awaitable[None]]

_SPEAKER_SENDER = {"caller": "customer", "bot": "bot", "system": "system"}
_TEXT_MAX = 10_000


ChatErrorReason = Literal["not_found", "invalid", "state", "unavailable"]


class ChatError(CallcenterError):
    """A chat action that cannot apply: ``reason`` is ``not_found`` (no such open conversation, or not
    yours), ``invalid`` (no such queue or agent), ``state`` (e.g. not with an agent) or ``unavailable``
    (cluster: the node holding the conversation did not answer)."""

    def __init__(self, message: str, reason: ChatErrorReason = "state") -> None:
        super().__init__(message)
        self.reason = reason


def _inbound_text(msg: Inbound) -> str:
    """What is stored and shown for one inbound message (media as a bracketed note)."""
    text = msg.text.strip()
    if msg.kind == "text":
        return text[:_TEXT_MAX]
    if msg.kind == "event":
        return f"[event: {text}]"
    where = msg.media.get("url") or msg.media.get("PicUrl") or msg.media.get("Url") or ""
    note = f"[{msg.kind}{': ' + str(where) if where else ''}]"
    return f"{note} {text}".strip()[:_TEXT_MAX]


class RemoteChats(Protocol):
    """The engine's other nodes (cluster mode, :mod:`callcenter.chat.cluster`): None on one node."""

    async def inbound(self, message: Inbound) -> int | None: ...
    async def opened(self, live: LiveChat) -> None: ...
    def changed(self, live: LiveChat) -> None: ...
    async def closed(self, live: LiveChat) -> None: ...
    async def outbound(self, out: Outbound) -> None: ...
    async def lookup(self, channel: str, account: str, visitor: str) -> tuple[int, str | None] | None: ...
    async def forward(self, conversation_id: int, op: str, args: dict[str, Any]) -> dict[str, Any] | None: ...
    async def summary(self, conversation_id: int) -> dict[str, Any] | None: ...
    async def typing(
        self, conversation_id: int, channel: str, visitor: str, typing: bool, name: str
    ) -> None: ...
    async def visitor_typing(self, channel: str, account: str, visitor: str, typing: bool) -> None: ...
    def line(self, queue: str) -> list[int]: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass
class _Wait:
    future: asyncio.Future[Any]
    deadline: float


class LiveChat:
    """One open conversation (the TextPeer its flow's text control talks to)."""

    def __init__(
        self,
        engine: ConversationEngine,
        conversation_id: int,
        msg: Inbound,
        customer_id: int | None,
        now: float,
    ) -> None:
        self.engine = engine
        self.id = conversation_id
        self.channel: ChatChannel = msg.channel
        self.account = msg.account
        self.visitor = msg.visitor
        self.display_name = msg.display_name
        self.customer_id = customer_id
        self.started_at = msg.received_at
        self.started_mono = now
        self.last_activity = now
        self.state: ConversationState = "bot"
        self.queue: str | None = None
        self.agent: str | None = None
        self.agents_seen: list[str] = []
        self.flow_id: str | None = None
        self.language: str | None = None
        self.flow_result: FlowResult | None = None
        self.queue_outcome: str | None = None
        self.unread = 0  # customer messages since the agent last replied
        self._replies: deque[str] = deque()
        self._reply_wait: _Wait | None = None
        self._queue_wait: _Wait | None = None
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._main: asyncio.Task[None] | None = None
        self.runner: FlowRunner | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.channel, self.account, self.visitor)

    @property
    def awaiting_reply(self) -> bool:
        return self._reply_wait is not None

    def move(self, action: ChatAction) -> None:
        target = TRANSITIONS.get((self.state, action))
        if target is None:
            raise ChatError(f"conversation {self.id} is {self.state}: cannot {action}")
        self.state = target
        if self.engine.remote is not None:
            self.engine.remote.changed(self)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "channel": self.channel,
            "account": self.account,
            "visitor": self.visitor,
            "name": self.display_name,
            "customer_id": self.customer_id,
            "state": "open" if self.state == "assigned" else self.state,
            "queue": self.queue,
            "agent": self.agent,
            "started_at": self.started_at.isoformat(),
            "unread": self.unread,
            "position": self.engine.position(self.id),
        }

    # -- lifecycle (one TaskGroup per conversation) --------------------------------------------------------

    def start(
        self, flow: tuple[Flow, Services] | None, *, requeue: str | None = None, held: bool = False
    ) -> None:
        """Run the flow; or, for a conversation a restart found with or waiting for an agent, go straight
        back into queue ``requeue``; or (``held``: taken over, cluster mode) just stay with its agent."""
        self._main = asyncio.create_task(self._run(flow, requeue, held), name=f"chat-{self.id}")

    async def _run(
        self, flow: tuple[Flow, Services] | None, requeue: str | None = None, held: bool = False
    ) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            if not held:
                self.spawn(self._flow(flow) if requeue is None else self._back_in_queue(requeue))
            await self._closed.wait()
            for task in list(self._tasks):
                task.cancel()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        if self._tg is None:  # not running yet (assigned the moment it started): the engine's task
            task = asyncio.get_running_loop().create_task(coro)
        else:
            task = self._tg.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        """End every task of the conversation (after it was closed)."""
        self._closed.set()
        for wait in (self._reply_wait, self._queue_wait):
            if wait is not None and not wait.future.done():
                wait.future.cancel()
        if self._main is not None and self._main is not asyncio.current_task():
            await asyncio.gather(self._main, return_exceptions=True)

    async def _flow(self, chosen: tuple[Flow, Services] | None) -> None:
        engine = self.engine
        if chosen is None:
            queue = engine.fallback_queue()
            if queue is None:
                await self.bot_says("Sorry, nobody can answer here right now.", speaker="system")
                engine.close_soon(self.id, "no_flow")
                return
            result = await self.enqueue(QueueRequest(queue=queue))
            if result.outcome != "answered":
                await self.bot_says(
                    "Sorry, nobody is available right now. Please try again later.", speaker="system"
                )
                engine.close_soon(self.id, f"queue_{result.outcome}")
            return
        flow, services = chosen
        self.flow_id = flow.id
        self.language = flow.language
        if services.kb is not None:
            services = _with_kb(services, ArticleKb(services.kb))
        articles = services.kb if isinstance(services.kb, ArticleKb) else None
        control = ChatCallControl(
            self,
            reply_timeout_s=engine.settings.reply_timeout_s,
            current_node=self._current_node,
            note=self._note,
            articles=articles,
        )
        variables = {
            "channel": self.channel,
            "account": self.account,
            "visitor": self.visitor,
            "conversation_id": self.id,
        }
        self.runner = FlowRunner(
            flow,
            control,
            services,
            call=CallInfo(call_id=f"chat:{self.id}", called=self.channel),
            variables=variables,
        )
        self.flow_result = await self.runner.run()
        if self.state == "bot":
            engine.close_soon(self.id, f"flow_{self.flow_result.outcome}")

    async def _back_in_queue(self, queue: str) -> None:
        result = await self.enqueue(QueueRequest(queue=queue), resumed=True)
        if result.outcome != "answered":
            sorry = "Sorry, nobody is available right now. Please try again later."
            await self.bot_says(sorry, speaker="system")
            self.engine.close_soon(self.id, f"queue_{result.outcome}")

    def _current_node(self) -> Any:
        runner = self.runner
        if runner is None:
            return None
        return runner.ctx.flow.nodes.get(runner.ctx.node_id)

    def _note(self, text: str) -> None:
        if self.runner is not None:
            self.runner.ctx.transcript.append(TranscriptEntry("caller", text, self.runner.ctx.node_id))

    # -- TextPeer ------------------------------------------------------------------------------------------

    async def bot_says(
        self, text: str, *, kind: str = "text", extra: dict[str, Any] | None = None, speaker: str = "bot"
    ) -> None:
        out_kind: OutboundKind = (
            "article" if kind == "article" else "system" if speaker == "system" else "text"
        )
        await self.engine._send(self, speaker, text, out_kind, sender=speaker, extra=extra or {})

    async def next_reply(self, timeout_s: float) -> str | None:
        if self._replies:
            return self._replies.popleft()
        loop = asyncio.get_running_loop()
        wait = _Wait(loop.create_future(), self.engine.clock.now() + timeout_s)
        self._reply_wait = wait
        try:
            result: str | None = await wait.future
            return result
        finally:
            self._reply_wait = None

    def customer_said(self, text: str) -> None:
        if self.state != "bot":
            return
        wait = self._reply_wait
        if wait is not None and not wait.future.done():
            wait.future.set_result(text)
        else:
            self._replies.append(text)

    async def enqueue(self, request: QueueRequest, *, resumed: bool = False) -> QueueResult:
        """``resumed``: a restart put it back (it was admitted before: no join or length checks; the
        agents are all offline right after a restart), at the head of the queue."""
        engine = self.engine
        queue = engine.router.queues.get(request.queue)
        if queue is None:
            return QueueResult("closed")
        agents = list(engine.agents())
        language = (
            request.variables.get("language") if isinstance(request.variables.get("language"), str) else None
        )
        if not resumed and not queue.join_when_empty and not engine.router.anyone_for(
            queue.name, agents, skills=request.skills, language=language
        ):
            self.queue_outcome = "closed"
            return QueueResult("closed")
        if (
            not resumed
            and queue.max_length is not None
            and engine.queue_length(queue.name) >= queue.max_length
        ):
            self.queue_outcome = "full"
            return QueueResult("full")
        now = engine.clock.now()
        engine.router.enqueue(
            self.id,
            queue.name,
            now,
            priority=request.priority,
            skills=request.skills,
            language=language,
            front=resumed,
        )
        self.move("queue")
        self.queue = queue.name
        log_event(log, "chat_waiting", conversation_id=self.id, queue=queue.name, channel=self.channel)
        engine.persist(self.id, queue=queue.name)
        limits = [x for x in (request.max_wait_s, queue.max_wait_s) if x is not None]
        wait = _Wait(asyncio.get_running_loop().create_future(), now + min(limits) if limits else math.inf)
        self._queue_wait = wait
        engine.poke()
        try:
            result: QueueResult = await wait.future
        finally:
            self._queue_wait = None
        self.queue_outcome = result.outcome
        if result.outcome == "answered":
            await self._closed.wait()  # the agent has it now; closing cancels this task
        return result

    def assigned(self, agent: str, waited_s: float) -> None:
        wait = self._queue_wait
        if wait is not None and not wait.future.done():
            wait.future.set_result(QueueResult("answered", agent, waited_s))

    def refused(self, queue: str) -> bool:
        """Cluster mode: the leader refused this chat a place in ``queue`` (its ``max_length`` reached
        over every node): out of line, and the flow goes on as when the queue was full here."""
        wait = self._queue_wait
        if wait is None or wait.future.done() or self.state != "waiting" or self.queue != queue:
            return False
        if self.engine.router.leave(self.id):
            self.move("leave")
        wait.future.set_result(QueueResult("full"))
        return True

    async def transfer_to_agent(self, agent: str) -> TransferResult:
        try:
            await self.engine.transfer(self.id, agent=agent, by="flow")
        except ChatError as exc:
            return TransferResult("failed", str(exc))
        return TransferResult("answered")

    async def end(self, reason: str) -> None:
        pass  # the flow task closes the conversation when the flow returns (see _flow)

    def set_language(self, language: str) -> None:
        self.language = language

    # -- timers --------------------------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        wait = self._reply_wait
        if wait is not None and wait.deadline <= now and not wait.future.done():
            wait.future.set_result(None)  # silence
        qwait = self._queue_wait
        if qwait is not None and qwait.deadline <= now and not qwait.future.done():
            if self.engine.router.leave(self.id):
                self.move("leave")
            qwait.future.set_result(QueueResult("timeout", None, now - qwait.deadline))

    def next_deadline(self) -> float:
        times = [self.last_activity + self.engine.settings.idle_close_s]
        for wait in (self._reply_wait, self._queue_wait):
            if wait is not None:
                times.append(wait.deadline)
        return min(times)


def _with_kb(services: Services, kb: ArticleKb) -> Services:
    return replace(services, kb=kb)


class ConversationEngine:
    """See the module docstring. ``flows``: flow id → (flow, services); ``default_flow``: the flow when
    ``chat.flows`` names none for the channel; ``agents``: the voice agent board's agents."""

    def __init__(
        self,
        store: ChatStore,
        router: ChatRouter,
        *,
        settings: ChatSettings | None = None,
        flows: FlowSource | None = None,
        default_flow: str | None = None,
        agents: AgentSource = lambda: (),
        tickets: TicketHook | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.settings = settings or ChatSettings()
        self.flows = flows
        self.default_flow = default_flow
        self.agents = agents
        self.tickets = tickets
        self.clock = clock or MonotonicClock()
        self._channels: dict[str, Deliver] = {}
        self._open: dict[tuple[str, str, str], LiveChat] = {}
        self._by_id: dict[int, LiveChat] = {}
        self._opening: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._seen: dict[tuple[str, str, str], float] = {}
        self._seen_order: deque[tuple[float, tuple[str, str, str]]] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dispatch_due = False
        self.delivery_failures = 0
        self._watching: dict[str, Callable[[str], bool]] = {}
        self._typing: dict[str, TypingShow] = {}
        self._passive: dict[str, tuple[PassiveSlot, float]] = {}
        self.remote: RemoteChats | None = None  # cluster mode: the other nodes (chat/cluster.py)

    # -- ChatEngine ----------------------------------------------------------------------------------------

    def register_channel(
        self,
        channel: ChatChannel,
        deliver: Deliver,
        *,
        watching: Callable[[str], bool] | None = None,
        typing: TypingShow | None = None,
    ) -> None:
        """``watching(visitor)``: whether this node serves that visitor's connections (cluster mode:
        messages another node sends them are delivered here too); ``typing``: shows an agent's typing
        there (cluster mode: an agent typing through another node)."""
        self._channels[channel] = deliver
        if watching is not None:
            self._watching[channel] = watching
        if typing is not None:
            self._typing[channel] = typing

    def register_passive(self, channel: ChatChannel, slot: PassiveSlot, budget_s: float) -> None:
        """The channel answers a customer's message with the conversation's next Outbound when it comes
        within ``budget_s`` (WeChat's passive reply). Cluster mode: a message forwarded to the node
        holding the conversation brings that reply back over the forward's answer."""
        self._passive[channel] = (slot, budget_s)

    def passive(self, channel: str) -> tuple[PassiveSlot, float] | None:
        return self._passive.get(channel)

    async def deliver_forwarded(self, out: Outbound) -> None:
        """A reply the node holding the conversation captured for this node's passive slot: through this
        node's adapter (which answers the waiting request, or sends it the usual way when too late)."""
        deliver = self._channels.get(out.channel)
        if deliver is None:
            return
        try:
            await deliver(out)
        except Exception as exc:  # noqa: BLE001 - stored by the holder; the adapter decides on retries
            self.delivery_failures += 1
            log_event(log, "chat_undelivered", level=logging.WARNING, conversation_id=out.conversation_id,
                      error=str(exc))  # fmt: skip

    async def typing_here(self, channel: str, visitor: str, typing: bool, name: str) -> None:
        """An agent typing through another node: shown on the visitor's connections here, if any."""
        watching = self._watching.get(channel)
        show = self._typing.get(channel)
        if watching is not None and show is not None and watching(visitor):
            await show(visitor, typing, name)

    async def deliver_here(self, out: Outbound) -> None:
        """A message another node sent: to the visitor's connections on this node, if any."""
        watching = self._watching.get(out.channel)
        deliver = self._channels.get(out.channel)
        if watching is None or deliver is None or not watching(out.visitor):
            return
        try:
            await deliver(out)
        except Exception as exc:  # noqa: BLE001 - the holder stored it; the widget's history has it
            log_event(log, "chat_undelivered", level=logging.WARNING, conversation_id=out.conversation_id,
                      error=str(exc))  # fmt: skip

    async def receive(self, message: Inbound) -> int | None:
        now = self.clock.now()
        dedupe_key = None
        if message.external_id:
            dedupe_key = (message.channel, message.account, message.external_id)
            if dedupe_key in self._seen:
                log_event(
                    log,
                    "chat_duplicate",
                    level=logging.DEBUG,
                    channel=message.channel,
                    external_id=message.external_id,
                )
                return None
            self._remember(dedupe_key, now)  # before any await: a retry arriving meanwhile is a duplicate
        try:
            return await self._receive(message, now)
        except BaseException:
            if dedupe_key is not None:
                self._seen.pop(dedupe_key, None)  # not stored: the channel's retry must get through
            raise

    async def _receive(self, message: Inbound, now: float) -> int:
        key = (message.channel, message.account, message.visitor)
        started = False
        live = self._open.get(key)
        if live is None and self.remote is not None:
            taken = await self.remote.inbound(message)  # held by another node: it takes the message
            if taken is not None:
                return taken
            live = self._open.get(key)  # taken over from a dead node just now, or none anywhere
        if live is None:
            lock = self._opening.setdefault(key, asyncio.Lock())
            async with lock:
                live = self._open.get(key)
                if live is None:
                    live = await self._start(message, now)
                    started = True
            if not lock.locked():
                self._opening.pop(key, None)
        text = _inbound_text(message)
        stored = await self.store.append(live.id, "caller", text, message.received_at)
        live.last_activity = self.clock.now()
        if live.state == "assigned":
            live.unread += 1
        self._event_message(live, stored)
        if message.kind == "event" and message.text == "unsubscribe":
            self.close_soon(live.id, "unsubscribed")
        elif not started and message.kind != "event":
            # text and voice (WeChat's recognition) as typed; other kinds as their bracketed note
            live.customer_said(message.text.strip() if message.kind in ("text", "voice") else text)
        return live.id

    async def _start(self, message: Inbound, now: float) -> LiveChat:
        conv_id, customer_id = await asyncio.to_thread(
            self.store.open_conversation,
            message.channel,
            message.account,
            message.visitor,
            message.received_at,
            message.display_name,
        )
        live = LiveChat(self, conv_id, message, customer_id, now)
        self._open[live.key] = live
        self._by_id[conv_id] = live
        log_event(
            log, "chat_started", conversation_id=conv_id, channel=message.channel, account=message.account
        )
        if self.remote is not None:
            await self.remote.opened(live)
        live.start(self._choose_flow(message.channel, message.account))
        self.poke()
        return live

    async def history(
        self, channel: ChatChannel, account: str, visitor: str, limit: int = 50
    ) -> list[Outbound]:
        live = self._open.get((channel, account, visitor))
        if live is None and self.remote is not None:  # held by another node: the shared store has it
            found = await self.remote.lookup(channel, account, visitor)
            if found is None:
                return []
            conv_id, agent = found
            rows = await asyncio.to_thread(self.store.messages, conv_id, limit)
            return [self._outbound_of(conv_id, channel, account, visitor, agent, m) for m in rows]
        if live is None:
            return []
        rows = await asyncio.to_thread(self.store.messages, live.id, limit)
        return [self._outbound(live, m) for m in rows]

    def live_for(self, channel: str, account: str, visitor: str) -> LiveChat | None:
        return self._open.get((channel, account, visitor))

    @staticmethod
    def _outbound_of(
        conv_id: int, channel: ChatChannel, account: str, visitor: str, agent: str | None, m: StoredMessage
    ) -> Outbound:
        sender = _SPEAKER_SENDER.get(m.speaker) or agent or "agent"
        kind: OutboundKind = "system" if m.speaker == "system" else "text"
        return Outbound(conv_id, channel, account, visitor, kind, m.text, sender, m.at)

    def _outbound(self, live: LiveChat, m: StoredMessage) -> Outbound:
        sender = _SPEAKER_SENDER.get(m.speaker) or live.agent or "agent"
        kind: OutboundKind = "system" if m.speaker == "system" else "text"
        return Outbound(live.id, live.channel, live.account, live.visitor, kind, m.text, sender, m.at)

    # -- flows ---------------------------------------------------------------------------------------------

    def _choose_flow(self, channel: str, account: str) -> tuple[Flow, Services] | None:
        mapping = self.settings.flows
        flow_id = mapping.get(f"{channel}:{account}") or mapping.get(channel) or self.default_flow
        if flow_id is None or self.flows is None:
            return None
        chosen = self.flows(flow_id)
        if chosen is None:
            log_event(log, "chat_flow_missing", level=logging.WARNING, flow=flow_id, channel=channel)
        return chosen

    def fallback_queue(self) -> str | None:
        """Where a conversation without a flow waits: ``general`` when configured, else the first queue."""
        if "general" in self.router.queues:
            return "general"
        return next(iter(self.router.queues), None)

    # -- sending -------------------------------------------------------------------------------------------

    async def _send(
        self,
        live: LiveChat,
        speaker: str,
        text: str,
        kind: OutboundKind,
        *,
        sender: str,
        extra: dict[str, Any] | None = None,
    ) -> Outbound:
        stored_text = text
        if kind == "article" and extra:
            stored_text = "\n".join(str(x) for x in (extra.get("title"), text, extra.get("url")) if x)
        stored = await self.store.append(live.id, speaker, stored_text, utcnow())
        out = Outbound(
            live.id,
            live.channel,
            live.account,
            live.visitor,
            kind,
            text,
            sender,
            stored.at,
            dict(extra or {}),
        )
        self._event_message(live, stored)
        if self.remote is not None:
            await self.remote.outbound(out)
        deliver = self._channels.get(live.channel)
        if deliver is None:
            log_event(
                log, "chat_undelivered", level=logging.WARNING, conversation_id=live.id, reason="no adapter"
            )
            return out
        try:
            await deliver(out)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - kept in the conversation; the adapter decides on retries
            self.delivery_failures += 1
            log_event(log, "chat_undelivered", level=logging.WARNING, conversation_id=live.id, error=str(exc))
        return out

    def _event_message(self, live: LiveChat, m: StoredMessage) -> None:
        log_event(
            log,
            "chat_message",
            conversation_id=live.id,
            agent=live.agent,
            channel=live.channel,
            speaker=m.speaker,
            text=m.text[:500],
            message_id=m.id,
        )
        if self.remote is not None:
            self.remote.changed(live)

    # -- queues: places and lengths ----------------------------------------------------------------------

    def position(self, conversation_id: int, queue: str | None = None) -> int | None:
        """1-based place of a waiting chat in its queue. Cluster mode: in the whole cluster's line as the
        leader last mirrored it, this node's chats queued since then after it; ``queue`` names the queue
        of a chat another node holds."""
        remote = self.remote
        if remote is None:
            return self.router.position(conversation_id)
        w = self.router.entry(conversation_id)
        if w is None and conversation_id in self._by_id:
            return None  # held here and not waiting (the mirror may not know yet)
        name = w.queue if w is not None else queue
        if name is None:
            return None
        line = remote.line(name)
        if conversation_id in line:
            return line.index(conversation_id) + 1
        if w is None:
            return None
        known = set(line)
        newer = [
            x.conversation_id
            for x in self.router.waiting()
            if x.queue == name and x.conversation_id not in known
        ]
        return len(line) + newer.index(conversation_id) + 1

    def queue_length(self, queue: str) -> int:
        """Chats waiting in ``queue``; cluster mode: on every node (the leader's mirror, with this node's
        own newer ones)."""
        here = {w.conversation_id for w in self.router.waiting() if w.queue == queue}
        if self.remote is None:
            return len(here)
        return len(here) + sum(1 for c in self.remote.line(queue) if c not in self._by_id)  # others' chats

    # -- the agent's side ----------------------------------------------------------------------------------

    def live(self, conversation_id: int) -> LiveChat | None:
        return self._by_id.get(conversation_id)

    def conversations(self, agent: str | None = None) -> list[LiveChat]:
        """Open conversations (``agent``: only theirs), oldest first."""
        out = [c for c in self._by_id.values() if agent is None or c.agent == agent]
        return sorted(out, key=lambda c: c.id)

    def _held(self, conversation_id: int, agent: str | None) -> LiveChat:
        live = self._by_id.get(conversation_id)
        if live is None:
            raise ChatError(f"conversation {conversation_id} is not open", "not_found")
        if agent is not None and live.agent != agent:
            raise ChatError(f"conversation {conversation_id} is not yours", "not_found")
        return live

    def _remote_for(self, conversation_id: int, forward: bool) -> RemoteChats | None:
        """The other nodes, when the conversation is not here and may be held there."""
        if not forward or self.remote is None or conversation_id in self._by_id:
            return None
        return self.remote

    async def agent_reply(
        self, conversation_id: int, text: str, *, agent: str | None, sender: str, forward: bool = True
    ) -> Outbound:
        """An agent's (or, ``agent`` None, a supervisor's) message to the customer. ``forward``: to the
        node holding it (cluster mode) when it is not here."""
        remote = self._remote_for(conversation_id, forward)
        if remote is not None:
            args = {"text": text, "agent": agent, "sender": sender}
            result = await remote.forward(conversation_id, "reply", args)
            if result is not None:
                from callcenter.chat.cluster import outbound_from_json

                return outbound_from_json(result)
        live = self._held(conversation_id, agent)
        if live.state != "assigned":
            raise ChatError(f"conversation {conversation_id} is {live.state}: not with an agent")
        live.unread = 0
        live.last_activity = self.clock.now()
        return await self._send(live, "agent", text[:_TEXT_MAX], "text", sender=sender)

    async def close(
        self, conversation_id: int, *, by: str, agent: str | None = None, forward: bool = True
    ) -> None:
        """Close the conversation: a system notice, its tasks ended, stored, filed to tickets."""
        remote = self._remote_for(conversation_id, forward)
        if remote is not None:
            if await remote.forward(conversation_id, "close", {"by": by, "agent": agent}) is not None:
                return
        live = self._held(conversation_id, agent)
        if live.state == "closed":
            return
        was = live.state
        live.move("close")
        self.router.leave(live.id)
        self.router.release(live.id)
        self._open.pop(live.key, None)
        self._by_id.pop(live.id, None)
        notice = (
            "This conversation has been closed."
            if by != "idle"
            else "This conversation was closed after a period of inactivity."
        )
        try:
            await self._send(live, "system", notice, "system", sender="system")
        finally:
            await live.stop()
            if self.remote is not None:
                await self.remote.closed(live)
            ended = utcnow()
            disposition = self._disposition(live, was)
            await asyncio.to_thread(
                self.store.update,
                live.id,
                ended_at=ended,
                disposition=disposition,
                agent=live.agent,
                queue=live.queue,
            )
            log_event(
                log, "chat_closed", conversation_id=live.id, agent=live.agent, by=by, disposition=disposition
            )
            self.poke()
            if self.tickets is not None:
                self._spawn(self._file(live, ended, disposition))

    def close_soon(self, conversation_id: int, by: str) -> None:
        """Close from inside the conversation (its flow ended): on the engine's own task."""

        async def run() -> None:
            try:
                await self.close(conversation_id, by=by)
            except ChatError:
                pass  # closed meanwhile

        self._spawn(run())

    async def transfer(
        self,
        conversation_id: int,
        *,
        queue: str | None = None,
        agent: str | None = None,
        by: str,
        holder: str | None = None,
        forward: bool = True,
    ) -> None:
        """To another queue (head of it) or straight into an agent's inbox."""
        remote = self._remote_for(conversation_id, forward)
        if remote is not None:
            args = {"queue": queue, "target": agent, "by": by, "agent": holder}
            if await remote.forward(conversation_id, "transfer", args) is not None:
                return
        live = self._held(conversation_id, holder)
        if live.state == "bot" and by != "flow":
            raise ChatError(f"conversation {conversation_id} is still with the bot")
        now = self.clock.now()
        previous = live.agent
        if agent is not None:
            known = {a.name for a in self.agents()}
            if agent not in known:
                raise ChatError(f"no agent {agent!r}", "invalid")
            target_queue = live.queue or self.fallback_queue() or "chat"
            live.move("assign")
            self.router.assign(live.id, agent, target_queue, now)
            self._assigned(live, agent, target_queue, 0.0, previous=previous, by=by)
            return
        if queue is None or queue not in self.router.queues:
            raise ChatError(f"no queue {queue!r}", "invalid")
        live.move("requeue" if live.state == "assigned" else "queue")
        self.router.enqueue(live.id, queue, now, front=True)
        live.queue, live.agent = queue, None
        log_event(log, "chat_requeued", conversation_id=live.id, queue=queue, previous_agent=previous, by=by)
        self.persist(live.id, queue=queue)
        self.poke()

    async def hand_back(self, conversation_id: int, *, agent: str, forward: bool = True) -> None:
        """``agent`` "" (cluster mode, a supervisor through another node): whoever holds it."""
        remote = self._remote_for(conversation_id, forward)
        if remote is not None:
            if await remote.forward(conversation_id, "hand_back", {"agent": agent}) is not None:
                return
        live = self._held(conversation_id, agent)
        if live.state != "assigned":
            raise ChatError(f"conversation {conversation_id} is {live.state}")
        self.router.hand_back(live.id, self.clock.now())
        live.move("requeue")
        live.agent = None
        log_event(
            log, "chat_requeued", conversation_id=live.id, queue=live.queue, previous_agent=agent, by="agent"
        )
        self.poke()

    def agent_away(self, agent: str) -> list[int]:
        """The agent closed the inbox or went offline: their chats go back to the head of the queues."""
        moved = self.router.take_back(agent, self.clock.now())
        for conv_id in moved:
            self._requeued(conv_id, agent)
        self.poke()
        return moved

    def _requeued(self, conv_id: int, agent: str) -> None:
        self.requeued(conv_id, agent, "offline")

    def requeued(self, conv_id: int, agent: str, by: str) -> None:
        """The chat was taken back from ``agent`` (the router has it waiting again)."""
        live = self._by_id.get(conv_id)
        if live is None:
            return
        live.move("requeue")
        live.agent = None
        log_event(
            log,
            "chat_requeued",
            conversation_id=conv_id,
            queue=live.queue,
            previous_agent=agent,
            by=by,
        )
        if self.remote is not None:
            self.remote.changed(live)

    def acd_assigned(
        self, live: LiveChat, agent: str, queue: str, waited_s: float, previous: str | None
    ) -> None:
        """The ACD (cluster mode: the leader) gave the chat to ``agent``; the router noted it already."""
        live.move("assign")
        self._assigned(live, agent, queue, waited_s, previous=previous, by="acd")

    # -- routing -------------------------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Take chats back from agents who left, then assign waiting chats (the server does this on
        every timer tick and whenever something changes: :meth:`poke`)."""
        now = self.clock.now()
        agents = list(self.agents())
        for agent, moved in self.router.sync(agents, now):
            for conv_id in moved:
                self._requeued(conv_id, agent)
        for a in self.router.dispatch(agents, now):
            live = self._by_id.get(a.conversation_id)
            if live is None:
                self.router.release(a.conversation_id)
                continue
            live.move("assign")
            self._assigned(live, a.agent, a.queue, a.waited_s, previous=None, by="acd")

    def _assigned(
        self, live: LiveChat, agent: str, queue: str, waited_s: float, *, previous: str | None, by: str
    ) -> None:
        live.agent, live.queue = agent, queue
        live.agents_seen.append(agent)
        if self.remote is not None:
            self.remote.changed(live)
        live.assigned(agent, waited_s)
        log_event(
            log,
            "chat_assigned",
            conversation_id=live.id,
            agent=agent,
            queue=queue,
            previous_agent=previous,
            by=by,
            waited_s=round(waited_s, 3),
            channel=live.channel,
        )
        self.persist(live.id, agent=agent, queue=queue)

        async def notice() -> None:
            await self._send(
                live, "system", f"{agent} has joined the conversation.", "system", sender="system"
            )

        live.spawn(notice())

    def poke(self) -> None:
        """Something changed (an agent's state, a chat queued or closed): dispatch on the next loop turn
        (several pokes in one turn make one dispatch)."""
        if self._dispatch_due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (synchronous use): the next timer tick dispatches
            return
        self._dispatch_due = True
        loop.call_soon(self._dispatch_now)

    def _dispatch_now(self) -> None:
        self._dispatch_due = False
        self.dispatch()

    def persist(self, conversation_id: int, **values: Any) -> None:
        async def run() -> None:
            await asyncio.to_thread(self.store.update, conversation_id, **values)

        self._spawn(run())

    # -- timers --------------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        times = [c.next_deadline() for c in self._by_id.values()]
        if self._seen_order:
            times.append(self._seen_order[0][0])
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Silence and queue-wait deadlines, idle closing, forgetting old message ids, then dispatch."""
        for live in list(self._by_id.values()):
            live.expire(now)
            if live.last_activity + self.settings.idle_close_s <= now and live.state != "closed":
                live.last_activity = math.inf  # once
                self.close_soon(live.id, "idle")
        while self._seen_order and self._seen_order[0][0] <= now:
            expires, key = self._seen_order.popleft()
            if self._seen.get(key) == expires:
                del self._seen[key]
        self.dispatch()

    def _remember(self, key: tuple[str, str, str], now: float) -> None:
        expires = now + self.settings.dedupe_hours * 3600.0
        self._seen[key] = expires
        self._seen_order.append((expires, key))

    async def run(self, tick_s: float = 1.0) -> None:
        """The server's loop: :meth:`handle_timer` every ``tick_s``. Cancel to stop."""
        while True:
            self.handle_timer(self.clock.now())
            await asyncio.sleep(tick_s)

    async def start(self) -> None:
        """Conversations a previous run left open (a crash, SIGKILL): those that were waiting for an
        agent or with one (a queue on the row) go back into that queue, oldest first, at its head — the
        agents are offline after a restart, as when an agent leaves (:meth:`agent_away`). Those still
        in the bot's flow are closed (``restart``): a flow's place is not persisted. Cluster mode: the
        other nodes' open conversations are theirs; this node takes over its own previous run's and
        those of dead nodes (:mod:`callcenter.chat.cluster`)."""
        if self.remote is not None:
            await self.remote.start()
            return
        for conv_id in sorted(await asyncio.to_thread(self.store.open_ids)):
            conv = await asyncio.to_thread(self.store.conversation, conv_id)
            if conv is None:
                await asyncio.to_thread(self.store.update, conv_id, ended_at=utcnow(), disposition="restart")
                continue
            await self.adopt(conv, queue=conv.queue, agent=None, by="restart")
        if self._by_id:
            self.poke()

    async def adopt(
        self, conv: Conversation, *, queue: str | None, agent: str | None, by: str
    ) -> LiveChat | None:
        """Serve a stored open conversation here: back in ``queue`` (at its head; the leader keeps its
        place in cluster mode), or still with ``agent`` (cluster mode: taken over from a dead node).
        Closed as ``restart`` when it cannot go on (no such queue, or the visitor has a newer one)."""
        assert conv.id is not None
        conv_id = conv.id
        now = self.clock.now()
        if conv_id in self._by_id:
            return self._by_id[conv_id]
        if queue is None or queue not in self.router.queues:
            await asyncio.to_thread(self.store.update, conv_id, ended_at=utcnow(), disposition="restart")
            return None
        account, _, visitor = (conv.address or "").partition("/")
        channel: ChatChannel = "wechat" if conv.channel == "wechat" else "webchat"
        message = Inbound(channel, account, visitor, "text", "", conv.started_at)
        live = LiveChat(self, conv_id, message, conv.customer_id, now)
        live.language = conv.language
        live.agents_seen = [conv.agent] if conv.agent else []
        if live.key in self._open:  # two rows for one visitor: the older one stays open
            await asyncio.to_thread(self.store.update, conv_id, ended_at=utcnow(), disposition="restart")
            return None
        self._open[live.key] = live
        self._by_id[conv_id] = live
        if agent is not None:
            live.state, live.queue, live.agent = "assigned", queue, agent
            if agent not in live.agents_seen:
                live.agents_seen.append(agent)
            self.router.assign(conv_id, agent, queue, now)
            live.start(None, held=True)
        else:
            log_event(
                log, "chat_requeued", conversation_id=conv_id, queue=queue, previous_agent=conv.agent, by=by
            )
            live.start(None, requeue=queue)
        if self.remote is not None:
            self.remote.changed(live)
        return live

    async def aclose(self) -> None:
        """Close every conversation (one node); cluster mode: leave them open for the other nodes to
        take over (this node's heartbeat ends with it)."""
        if self.remote is not None:
            for live in list(self._by_id.values()):
                await live.stop()
            await self.remote.stop()
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            return
        for live in list(self._by_id.values()):
            try:
                await self.close(live.id, by="shutdown")
            except ChatError:
                pass
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for the engine's own background work (closing, storing, filing) — for tests."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- tickets -------------------------------------------------------------------------------------------

    @staticmethod
    def _disposition(live: LiveChat, was: ConversationState) -> str:
        """answered (an agent had it), abandoned (closed while waiting), overflowed (no agent: the flow
        went on), bot (the flow handled it)."""
        if live.agents_seen:
            return "answered"
        if was == "waiting":
            return "abandoned"
        if live.queue_outcome in ("timeout", "closed", "full"):
            return "overflowed"
        return "bot"

    async def _file(self, live: LiveChat, ended: datetime, disposition: str) -> None:
        assert self.tickets is not None
        rows = await asyncio.to_thread(self.store.messages, live.id)
        turns = tuple(
            Turn(m.speaker, m.text, max(0.0, (m.at - live.started_at).total_seconds())) for m in rows
        )
        result = live.flow_result
        intent = result.variables.get("intent") if result is not None else None
        call = HandledCall(
            call_id=f"chat:{live.id}",
            caller="",
            caller_name=live.display_name,
            started_at=live.started_at,
            ended_at=ended,
            disposition=disposition,
            flow=live.flow_id,
            ivr_outcome=result.outcome if result is not None else ("caller_hangup" if live.flow_id else None),
            queue=live.queue,
            agent=live.agents_seen[-1] if live.agents_seen else None,
            intent=intent if isinstance(intent, str) else None,
            language=live.language,
            transcript=turns,
            channel=live.channel,
        )
        await self.tickets(call)
