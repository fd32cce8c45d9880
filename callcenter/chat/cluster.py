"""Chats across cluster nodes (issue 10): what a node adds to its :class:`ConversationEngine` when
``redis_url`` is set. Without Redis nothing here is imported and the engine works alone.

Who decides: the chat ACD runs on the elected leader (:mod:`callcenter.cluster.chats`, the module
docstring there explains the choice). :class:`ClusterChatRouter` is the engine's ChatRouter on a node:
it keeps the node's own view (what its conversations wait for / who holds them) and forwards each
change to the leader; the leader's ``chat_assign`` / ``chat_requeued`` notices come back through
:meth:`ChatCluster.on_notice`. It never assigns by itself.

Who holds a conversation: the node that opened it (its flow, timers and TaskGroup live there). Redis
keys (prefix ``cc:``):

- ``chat:owner`` hash — conversation id → node holding it; changed only by :data:`CLAIM_LUA`, which
  succeeds when there is no owner, the owner is the caller, or the owner's heartbeat (``alive:<node>``)
  expired: a dead node's chats are taken over by exactly one survivor;
- ``chat:open`` hash — ``channel|account|visitor`` → open conversation id (a visitor's next message
  or reload on any node finds it);
- ``chat:opening:<channel|account|visitor>`` — the node creating that visitor's conversation (SET by
  :data:`OPEN_LUA` only when ``chat:open`` has none, expires after ``open_claim_s``): a visitor whose
  first messages reach two nodes within milliseconds gets one conversation — the other node waits
  (bounded) for ``chat:open`` and forwards its message to the first;
- ``chat_lines`` hash — the leader's line per queue (:mod:`callcenter.cluster.chats`): a waiting chat's
  place and a queue's length over every node;
- ``chat:info`` hash — conversation id → its summary for the inbox of every node (what
  ``GET /api/chats`` lists), written by the holder on every change;
- pub/sub ``chat:node:<node>`` — requests to the holder and their answers (a visitor message that
  arrived elsewhere, an agent's reply / close / hand-back / transfer made through another node), and
  ``chat:out`` — every web chat message the holder sends, so the node where the visitor's widget is
  connected delivers it (a node only keeps mailboxes of visitors it serves: ``watching``), and an
  agent's typing (fire-and-forget, :class:`TypingThrottle`). A visitor's typing needs no hop: the node
  serving the widget logs ``chat_typing`` naming the conversation's agent (from ``chat:info``) and the
  event bridge shows it on every node.

WeChat's passive reply (the bot's answer in the HTTP response, within ~5 s): a message WeChat posted to
a node that does not hold the conversation is forwarded with the time left (``passive_s``); the holder
captures the conversation's next Outbound for that customer within it (the channel's passive slot,
:meth:`ConversationEngine.register_passive`) and returns it in the answer, and the first node replies
passively with it. Too late: the holder sends it through the customer-service API, as before.

Requests are answered within ``rpc_timeout_s`` or fail (the inbox gets 503; the widget retries); a
request to a node whose heartbeat is gone takes the conversation over first. Every ``sweep_s`` each
node looks for conversations whose holder died and claims them: waiting ones go back in line in their
place, held ones stay with their agent; the visitors' widgets reconnect through the load balancer to
any node, whose mailbox reads the history from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from callcenter.chat.engine import ChatError, LiveChat
from callcenter.chat.model import Inbound, Outbound
from callcenter.chat.routing import ChatRouter, ChatWaiting
from callcenter.cluster.messages import Notice
from callcenter.cluster.node import ClusterNode
from callcenter.core.logging import log_event
from callcenter.core.ratelimit import KeyedBuckets
from callcenter.routing.agents import Agent, AgentState
from callcenter.routing.queues import QueueConfig

if TYPE_CHECKING:
    from callcenter.chat.engine import ConversationEngine

__all__ = [
    "CLAIM_LUA",
    "OPEN_LUA",
    "ChatCluster",
    "ClusterChatRouter",
    "TypingThrottle",
    "inbound_from_json",
    "inbound_to_json",
]

log = logging.getLogger("callcenter.chat.cluster")

# KEYS: owner hash. ARGV: conversation id, this node, the alive-key prefix. Returns the owner after it.
# (Reads an alive key not in KEYS: fine on one Redis or a primary with replicas, not Redis Cluster.)
CLAIM_LUA = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. cur) == 1 then return cur end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return ARGV[2]
"""

# KEYS: owner, open, info. ARGV: conversation id, open field, this node. Forgets a closed conversation.
FORGET_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[3] then redis.call('HDEL', KEYS[1], ARGV[1]) end
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""


# KEYS: open hash, opening key. ARGV: open field, this node, claim lifetime (ms). Returns {what, value}:
# {'open', id} the visitor's open conversation; {'mine', node} this node creates it (claim taken or
# already ours); {'wait', node} another node is creating it right now.
OPEN_LUA = """
local conv = redis.call('HGET', KEYS[1], ARGV[1])
if conv then return {'open', conv} end
local holder = redis.call('GET', KEYS[2])
if not holder then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return {'mine', ARGV[2]}
end
if holder == ARGV[2] then return {'mine', holder} end
return {'wait', holder}
"""


class TypingThrottle:
    """Which typing reports go to other nodes (sans-I/O, ``now`` passed in): a change of state, or the
    same state again after ``repeat_s``; at most ``rate`` per second per key (``burst`` at once) so a
    widget toggling in a loop costs Redis nothing more. At most ``max_keys`` keys are remembered."""

    def __init__(
        self, *, repeat_s: float = 2.0, rate: float = 2.0, burst: int = 6, max_keys: int = 10_000
    ) -> None:
        self.repeat_s = repeat_s
        self.max_keys = max_keys
        self._last: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self._buckets = KeyedBuckets(rate, burst, max_keys=max_keys)

    def allow(self, key: str, typing: bool, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and last[0] == typing and now - last[1] < self.repeat_s:
            return False
        if not self._buckets.take(key, now):
            return False
        self._last[key] = (typing, now)
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def open_field(channel: str, account: str, visitor: str) -> str:
    return f"{channel}|{account}|{visitor}"


def inbound_to_json(m: Inbound) -> dict[str, Any]:
    return {
        "channel": m.channel,
        "account": m.account,
        "visitor": m.visitor,
        "kind": m.kind,
        "text": m.text,
        "received_at": m.received_at.isoformat(),
        "external_id": m.external_id,
        "media": m.media,
        "display_name": m.display_name,
    }


def inbound_from_json(d: Mapping[str, Any]) -> Inbound:
    return Inbound(
        d["channel"],
        str(d["account"]),
        str(d["visitor"]),
        d["kind"],
        str(d["text"]),
        datetime.fromisoformat(d["received_at"]),
        d.get("external_id"),
        dict(d.get("media") or {}),
        d.get("display_name"),
    )


def outbound_to_json(o: Outbound) -> dict[str, Any]:
    return {
        "conversation_id": o.conversation_id,
        "channel": o.channel,
        "account": o.account,
        "visitor": o.visitor,
        "kind": o.kind,
        "text": o.text,
        "sender": o.sender,
        "sent_at": o.sent_at.isoformat(),
        "extra": o.extra,
    }


def outbound_from_json(d: Mapping[str, Any]) -> Outbound:
    at = datetime.fromisoformat(d["sent_at"])
    return Outbound(
        int(d["conversation_id"]),
        d["channel"],
        str(d["account"]),
        str(d["visitor"]),
        d["kind"],
        str(d["text"]),
        str(d["sender"]),
        at if at.tzinfo is not None else at.replace(tzinfo=UTC),
        dict(d.get("extra") or {}),
    )


# -- the node's ChatRouter -------------------------------------------------------------------------------


class ClusterChatRouter(ChatRouter):
    """This node's view of its chats; every change also goes to the leader, which alone assigns."""

    def __init__(
        self,
        queues: Mapping[str, QueueConfig],
        node: ClusterNode,
        *,
        offer_during_calls: bool = False,
        default_max_chats: int = 3,
    ) -> None:
        super().__init__(queues, offer_during_calls=offer_during_calls, default_max_chats=default_max_chats)
        self.node = node
        self._quiet = 0

    @contextlib.contextmanager
    def _silent(self) -> Iterator[None]:
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def _send(self, op: Any, conversation_id: int, **args: Any) -> None:
        if not self._quiet:
            self.node.send(op, call_id=str(conversation_id), **args)

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
        with self._silent():
            w = super().enqueue(
                conversation_id, queue, now, priority=priority, skills=skills, language=language, front=front
            )
        self._send(
            "chat_enqueue",
            conversation_id,
            queue=queue,
            priority=priority,
            skills=dict(skills or {}),
            language=language,
            front=front,
            since_wall=self.node.wall(),
        )
        return w

    def leave(self, conversation_id: int) -> bool:
        was = super().leave(conversation_id)
        self._send("chat_leave", conversation_id)
        return was

    def assign(self, conversation_id: int, agent: str, queue: str, now: float) -> None:
        with self._silent():
            super().assign(conversation_id, agent, queue, now)
        self._send("chat_assign", conversation_id, agent=agent, queue=queue)

    def release(self, conversation_id: int) -> str | None:
        agent = super().release(conversation_id)
        self._send("chat_release", conversation_id)
        return agent

    def hand_back(self, conversation_id: int, now: float) -> str | None:
        with self._silent():
            agent = super().hand_back(conversation_id, now)
        self._send("chat_hand_back", conversation_id)
        return agent

    def take_back(self, agent: str, now: float) -> list[int]:
        """This node's chats of ``agent`` at once; the leader requeues those other nodes hold."""
        with self._silent():
            moved = super().take_back(agent, now)
        if not self._quiet:
            self.node.send("chat_take_back", agent=agent)
        return moved

    # The leader decides (its notices arrive through ChatCluster.on_notice).
    def sync(self, agents: Iterable[Agent], now: float) -> list[tuple[str, list[int]]]:
        return []

    def dispatch(self, agents: Iterable[Agent], now: float) -> list[Any]:
        return []

    # -- what the leader decided, noted locally (not sent back) ---------------------------------------

    def noted_assign(self, conversation_id: int, agent: str, queue: str, now: float) -> None:
        with self._silent():
            super().assign(conversation_id, agent, queue, now)

    def noted_requeue(self, conversation_id: int, now: float) -> None:
        held = self.held(conversation_id)
        with self._silent():
            self.release(conversation_id)
            if held is not None:
                self._requeue(conversation_id, held[1], now)


# -- the Redis side ----------------------------------------------------------------------------------------


class _RemoteError(Exception):
    pass


class ChatCluster:
    """One node's chats in the cluster (module docstring). :meth:`attach` to the engine, then the engine
    calls the hooks (``inbound``, ``opened``, ``changed``, ``closed``, ``outbound``, ``forward``…)."""

    def __init__(
        self,
        redis: Redis,
        node: ClusterNode,
        *,
        local_agents: Callable[[], Iterable[Agent]] = lambda: (),
        default_max_chats: int = 3,
        rpc_timeout_s: float = 5.0,
        sweep_s: float = 2.0,
        refresh_s: float = 0.5,
        open_claim_s: float = 5.0,
        open_poll_s: float = 0.02,
        passive_margin_s: float = 0.3,
    ) -> None:
        self.redis = redis
        self.node = node
        self.node_id = node.node_id
        self.prefix = node.prefix
        self.local_agents = local_agents
        self.default_max_chats = default_max_chats
        self.rpc_timeout_s = rpc_timeout_s
        self.sweep_s = sweep_s
        self.refresh_s = refresh_s
        self.open_claim_s = open_claim_s  # how long a node's claim to open a visitor's conversation lasts
        self.open_poll_s = open_poll_s  # how often a node waiting for that conversation looks again
        self.passive_margin_s = passive_margin_s  # kept for the passive reply's way back
        self.engine: ConversationEngine | None = None
        self._claim = redis.register_script(CLAIM_LUA)
        self._open = redis.register_script(OPEN_LUA)
        self._lines: dict[str, list[int]] = {}  # the leader's chat_lines, as last read
        self.typing_throttle = TypingThrottle()
        self._forget = redis.register_script(FORGET_LUA)
        self._agents: list[Agent] | None = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._dirty: dict[int, LiveChat] = {}
        self._summary_lock = asyncio.Lock()  # summaries written one pipeline at a time, in order
        self._flush_due = False
        self._tasks: list[asyncio.Task[None]] = []
        self._spawned: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._taking: dict[int, asyncio.Lock] = {}
        self.subscribed = asyncio.Event()
        self.taken_over = 0

    def key(self, name: str) -> str:
        return self.prefix + name

    @property
    def router(self) -> ClusterChatRouter:
        assert self.engine is not None and isinstance(self.engine.router, ClusterChatRouter)
        return self.engine.router

    def attach(self, engine: ConversationEngine) -> None:
        self.engine = engine
        engine.remote = self
        previous = self.node.on_notice

        def on_notice(notice: Notice) -> None:
            if notice.op.startswith("chat_"):
                self.on_notice(notice)
            elif previous is not None:
                previous(notice)

        self.node.on_notice = on_notice

    # -- life cycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe, then take over what this node's previous run (or a dead node) left open."""
        self._tasks = [
            asyncio.create_task(self._reader(), name="chat-cluster-in"),
            asyncio.create_task(self._refresh_agents(), name="chat-cluster-agents"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.subscribed.wait(), 5.0)
        await self.refresh_agents()
        await self.sweep(at_start=True)
        self._tasks.append(asyncio.create_task(self._sweeper(), name="chat-cluster-sweep"))

    async def stop(self) -> None:
        # The loops also stop on the flag, and the wait is bounded: redis-py can turn a cancellation
        # that meets its own read timeout into a TimeoutError, which a loop would take for a hiccup.
        self._closing = True
        for _ in range(3):
            pending = [t for t in (*self._tasks, *self._spawned) if not t.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=2.0)
        self._tasks = []
        with contextlib.suppress(Exception):
            await self._flush()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    # -- agents: the leader's board (every node's presence) ---------------------------------------------

    def agents(self) -> list[Agent]:
        """Every agent as the leader last mirrored them (this node's board until the first read)."""
        return list(self._agents) if self._agents is not None else list(self.local_agents())

    async def refresh_agents(self) -> None:
        """The leader's agents and chat lines, as last mirrored."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.key("agents"))
                pipe.hgetall(self.key("chat_lines"))
                raw, lines = await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis away: keep the last copy
            log.debug("chat cluster: agents not read: %r", exc)
            return
        self._lines = {}
        for queue, value in lines.items():
            with contextlib.suppress(TypeError, ValueError):
                self._lines[_s(queue)] = [int(c) for c in json.loads(value)]
        out = []
        for name, value in raw.items():
            try:
                rec = json.loads(value)
                max_chats = rec.get("max_chats")
                out.append(
                    Agent(
                        _s(name),
                        dict(rec.get("skills") or {}),
                        frozenset(rec.get("languages") or ()),
                        state=AgentState(rec.get("state") or "offline"),
                        max_chats=int(max_chats) if max_chats is not None else self.default_max_chats,
                    )
                )
            except (TypeError, ValueError) as exc:
                log.warning("chat cluster: agent record %r skipped: %r", name, exc)
        if out or self._agents is not None:
            self._agents = out

    def line(self, queue: str) -> list[int]:
        """The conversations waiting in ``queue`` on every node, in service order (the leader's mirror,
        read every ``refresh_s``)."""
        return self._lines.get(queue, [])

    async def _refresh_agents(self) -> None:
        while not self._closing:
            await self.refresh_agents()
            await asyncio.sleep(self.refresh_s)

    # -- the leader's notices ---------------------------------------------------------------------------

    def on_notice(self, notice: Notice) -> None:
        engine = self.engine
        if engine is None:
            return
        try:
            conv = int(notice.call_id)
        except ValueError:
            return
        agent = notice.agents[0] if notice.agents else ""
        live = engine.live(conv)
        now = engine.clock.now()
        if notice.op == "chat_assign":
            if live is not None and live.state == "assigned" and live.agent == agent:
                return
            if live is None or live.state not in ("waiting", "assigned"):
                self.router.release(conv)  # gone back to the bot or closed meanwhile: free the agent
                return
            previous = live.agent
            self.router.noted_assign(conv, agent, notice.queue or live.queue or "", now)
            engine.acd_assigned(live, agent, notice.queue or live.queue or "", notice.seconds, previous)
        elif notice.op == "chat_requeued":
            if live is None or live.state != "assigned" or live.agent != agent:
                return
            self.router.noted_requeue(conv, now)
            engine.requeued(conv, agent, notice.reason or "offline")
        elif notice.op == "chat_full":
            if live is not None and live.refused(notice.queue):
                log_event(log, "chat_queue_full", conversation_id=conv, queue=notice.queue, node=self.node_id)

    # -- conversations: ownership, summaries ----------------------------------------------------------

    async def opened(self, live: LiveChat) -> None:
        """A conversation started here."""
        try:
            field = open_field(*live.key)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(self.key("chat:owner"), str(live.id), self.node_id)
                pipe.hset(self.key("chat:open"), field, str(live.id))
                pipe.delete(self.key(f"chat:opening:{field}"))
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the sweep claims it again later
            log.warning("chat cluster: conversation %s not registered: %r", live.id, exc)
        self.changed(live)

    def changed(self, live: LiveChat) -> None:
        """Its summary changed (state, agent, a message): written on the next loop turn."""
        self._dirty[live.id] = live
        if self._flush_due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._flush_due = True
        loop.call_soon(lambda: self._spawn(self._flush()))

    async def _flush(self) -> None:
        # One write at a time, each summary taken when its turn comes: two pipelines in flight could
        # land out of order (a "waiting" summary after the "open" one), and a write still in flight
        # when the chat closes would bring a closed chat back into every inbox.
        async with self._summary_lock:
            self._flush_due = False
            dirty, self._dirty = self._dirty, {}
            if not dirty:
                return
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for conv, live in dirty.items():
                        if live.state == "closed":
                            continue
                        info = {**live.summary(), "language": live.language, "node": self.node_id}
                        pipe.hset(self.key("chat:info"), str(conv), json.dumps(info, default=str))
                    await pipe.execute()
            except Exception as exc:  # noqa: BLE001
                log.warning("chat cluster: summaries not written: %r", exc)

    async def closed(self, live: LiveChat) -> None:
        self._dirty.pop(live.id, None)
        async with self._summary_lock:  # after any summary write in flight (see _flush)
            with contextlib.suppress(Exception):
                await self._forget(
                    keys=[self.key("chat:owner"), self.key("chat:open"), self.key("chat:info")],
                    args=[str(live.id), open_field(*live.key), self.node_id],
                )

    async def summaries(self) -> list[dict[str, Any]]:
        """Every open conversation of the cluster, as its holder last wrote it."""
        raw = await self.redis.hgetall(self.key("chat:info"))
        out = []
        for value in raw.values():
            with contextlib.suppress(ValueError):
                out.append(json.loads(value))
        return out

    async def summary(self, conversation_id: int) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.key("chat:info"), str(conversation_id))
        return json.loads(raw) if raw else None

    async def lookup(self, channel: str, account: str, visitor: str) -> tuple[int, str | None] | None:
        """The visitor's open conversation anywhere: (id, its agent)."""
        raw = await self.redis.hget(self.key("chat:open"), open_field(channel, account, visitor))
        if not raw:
            return None
        conv = int(_s(raw))
        info = await self.summary(conv)
        return conv, (info or {}).get("agent")

    async def owner(self, conversation_id: int) -> str | None:
        raw = await self.redis.hget(self.key("chat:owner"), str(conversation_id))
        return _s(raw) if raw else None

    # -- taking over -------------------------------------------------------------------------------------

    async def take_over(self, conversation_id: int, *, at_start: bool = False) -> bool:
        """Claim a conversation whose holder is gone (or this node's previous run) and serve it here."""
        engine = self.engine
        assert engine is not None
        lock = self._taking.setdefault(conversation_id, asyncio.Lock())
        async with lock:
            if engine.live(conversation_id) is not None:
                return True
            won = await self._claim(
                keys=[self.key("chat:owner")],
                args=[str(conversation_id), self.node_id, self.key("alive:")],
            )
            if _s(won) != self.node_id:
                return False
            conv = await asyncio.to_thread(engine.store.conversation, conversation_id)
            if conv is None or conv.ended_at is not None:
                with contextlib.suppress(Exception):
                    await self.redis.hdel(self.key("chat:owner"), str(conversation_id))
                return False
            raw = await self.redis.hget(self.key("chats"), str(conversation_id))
            rec = json.loads(raw) if raw else {}
            agent = rec.get("agent") if rec.get("state") == "held" else None
            queue = rec.get("queue") or conv.queue
            live = await engine.adopt(
                conv, queue=queue, agent=agent, by="restart" if at_start else "takeover"
            )
            self._taking.pop(conversation_id, None)
            if live is None:
                return False
            await self.redis.hset(self.key("chat:open"), open_field(*live.key), str(live.id))
            self.taken_over += 1
            log_event(
                log, "chat_taken_over", conversation_id=live.id, agent=agent, queue=queue, node=self.node_id
            )
            return True

    async def sweep(self, *, at_start: bool = False) -> None:
        """Claim the conversations of nodes whose heartbeat is gone (at start: also this node's own
        previous run, and open ones Redis never knew — older than a minute, so not being opened now)."""
        engine = self.engine
        assert engine is not None
        owners = {int(_s(k)): _s(v) for k, v in (await self.redis.hgetall(self.key("chat:owner"))).items()}
        others = {n for n in owners.values() if n != self.node_id}
        alive = await self.node.alive_nodes(others)
        mine = {c for c, n in owners.items() if n == self.node_id and engine.live(c) is None}
        orphans = sorted(c for c, n in owners.items() if n not in alive and n != self.node_id)
        todo = orphans + sorted(mine) if at_start else orphans
        if at_start:
            cutoff = datetime.now(UTC).timestamp() - 60.0
            for conv_id in sorted(await asyncio.to_thread(engine.store.open_ids)):
                if conv_id in owners:
                    continue
                conv = await asyncio.to_thread(engine.store.conversation, conv_id)
                started = conv.started_at if conv is not None else None
                if started is not None:
                    started = started if started.tzinfo else started.replace(tzinfo=UTC)
                    if started.timestamp() < cutoff:
                        todo.append(conv_id)
        for conv_id in todo:
            try:
                await self.take_over(conv_id, at_start=at_start)
            except Exception:  # noqa: BLE001 - one bad row must not stop the others
                log.exception("chat cluster: taking over conversation %s failed", conv_id)

    async def _sweeper(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.sweep_s)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                log.warning("chat cluster: sweep failed: %r", exc)

    # -- messages out to visitors on other nodes --------------------------------------------------------

    async def outbound(self, out: Outbound) -> None:
        """A message the engine sent here: the node serving the visitor's widget delivers it too."""
        if out.channel != "webchat":
            return  # WeChat: sent through the API by the holder, once
        msg = json.dumps({"from": self.node_id, "out": outbound_to_json(out)}, default=str)
        try:
            await self.redis.publish(self.key("chat:out"), msg)
        except Exception as exc:  # noqa: BLE001 - stored anyway; the widget's history has it
            log.warning("chat cluster: message not fanned out: %r", exc)

    # -- typing ------------------------------------------------------------------------------------------

    def _now(self) -> float:
        return self.engine.clock.now() if self.engine is not None else asyncio.get_running_loop().time()

    async def typing(self, conversation_id: int, channel: str, visitor: str, typing: bool, name: str) -> None:
        """An agent typing in a conversation (through any node): to every node, whichever serves the
        visitor's widget shows it. Fire-and-forget, throttled per conversation."""
        if not self.typing_throttle.allow(f"agent:{conversation_id}", typing, self._now()):
            return
        data = {"channel": channel, "visitor": visitor, "typing": typing, "name": name}
        msg = json.dumps({"from": self.node_id, "typing": data})
        try:
            await self.redis.publish(self.key("chat:out"), msg)
        except Exception as exc:  # noqa: BLE001 - only an indicator
            log.debug("chat cluster: typing not sent: %r", exc)

    async def visitor_typing(self, channel: str, account: str, visitor: str, typing: bool) -> None:
        """A visitor typing on this node while another node holds the conversation: ``chat_typing``
        naming its agent (the event bridge shows it on every node). Throttled per visitor."""
        if not self.typing_throttle.allow(f"visitor:{channel}|{account}|{visitor}", typing, self._now()):
            return
        try:
            found = await self.lookup(channel, account, visitor)
        except Exception as exc:  # noqa: BLE001 - only an indicator
            log.debug("chat cluster: typing not reported: %r", exc)
            return
        if found is not None and found[1]:
            log_event(
                log, "chat_typing", conversation_id=found[0], agent=found[1], who="customer", typing=typing
            )

    # -- requests to the holder -------------------------------------------------------------------------

    async def forward(self, conversation_id: int, op: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """Run ``op`` on the node holding the conversation; None when it is this node's now (its holder
        was dead and it was taken over: run it here). Raises ChatError as the holder did."""
        owner = await self.owner(conversation_id)
        if owner is None or owner == self.node_id:
            if owner == self.node_id and self.engine is not None and self.engine.live(conversation_id):
                return None
            raise ChatError(f"conversation {conversation_id} is not open", "not_found")
        return await self._request_or_take_over(conversation_id, owner, op, args)

    async def inbound(self, message: Inbound) -> int | None:
        """A customer's message with no conversation here: its id when the node holding the visitor's
        conversation took it; None to handle it here (no open conversation anywhere — this node has the
        claim to open it — or taken over)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        conv = await self._open_or_claim(message)
        if conv is None:
            return None
        owner = await self.owner(conv)
        if owner is None or owner == self.node_id:
            if owner != self.node_id:
                await self.take_over(conv)
            return None
        args: dict[str, Any] = {"message": inbound_to_json(message)}
        passive = self.engine.passive(message.channel) if self.engine is not None else None
        if passive is not None:
            # what is left of the channel's budget, less the answer's way back (and within the request's)
            left = min(passive[1], self.rpc_timeout_s) - (loop.time() - started) - self.passive_margin_s
            if left > 0:
                args["passive_s"] = round(left, 3)
        result = await self._request_or_take_over(conv, owner, "inbound", args)
        if result is None:
            return None
        reply = result.get("passive")
        if reply and self.engine is not None:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                await self.engine.deliver_forwarded(outbound_from_json(reply))
        return int(result["conversation_id"])

    async def _open_or_claim(self, message: Inbound) -> int | None:
        """The visitor's open conversation anywhere, or None once this node holds the claim to open it;
        while another node is opening it, wait for it (bounded: that node's claim expires)."""
        field = open_field(message.channel, message.account, message.visitor)
        keys = [self.key("chat:open"), self.key(f"chat:opening:{field}")]
        args: list[str | int] = [field, self.node_id, int(self.open_claim_s * 1000)]
        deadline = asyncio.get_running_loop().time() + self.open_claim_s + 1.0
        while True:
            what, value = (_s(x) for x in await self._open(keys=keys, args=args))
            if what == "open":
                return int(value)
            if what == "mine":
                return None
            if asyncio.get_running_loop().time() >= deadline:  # not reached: the claim expires first
                raise ChatError("the visitor's conversation is being opened elsewhere", "unavailable")
            await asyncio.sleep(self.open_poll_s)

    async def _request_or_take_over(
        self, conversation_id: int, owner: str, op: str, args: dict[str, Any]
    ) -> dict[str, Any] | None:
        if not await self.node.alive_nodes({owner}):
            if await self.take_over(conversation_id):
                return None
            owner = await self.owner(conversation_id) or owner
        try:
            return await self._request(owner, op, {"conversation_id": conversation_id, **args})
        except TimeoutError:
            if not await self.node.alive_nodes({owner}) and await self.take_over(conversation_id):
                return None
            raise ChatError(
                f"the node holding conversation {conversation_id} did not answer", "unavailable"
            ) from None

    async def _request(self, node: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        req_id = f"{self.node_id}:{next(self._ids)}:{secrets.token_hex(4)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        msg = {"t": "req", "id": req_id, "from": self.node_id, "op": op, "args": args}
        try:
            delivered = await self.redis.publish(self.key(f"chat:node:{node}"), json.dumps(msg, default=str))
            if not delivered:
                raise TimeoutError  # nobody subscribed there
            reply: dict[str, Any] = await asyncio.wait_for(future, self.rpc_timeout_s)
        finally:
            self._pending.pop(req_id, None)
        if not reply.get("ok"):
            raise ChatError(str(reply.get("error")), reply.get("reason") or "state")
        return dict(reply.get("result") or {})

    async def _answer(self, msg: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"t": "rep", "id": msg.get("id")}
        # A passive slot stays open until the answer carrying its reply is published: a later Outbound
        # to that customer waits for it (the channel's order), then takes the usual way.
        async with contextlib.AsyncExitStack() as after:
            try:
                reply["result"] = await self._run(str(msg.get("op")), dict(msg.get("args") or {}), after)
                reply["ok"] = True
            except ChatError as exc:
                reply.update(ok=False, error=str(exc), reason=exc.reason)
            except Exception as exc:  # noqa: BLE001 - answered, not raised: the requester must not wait
                log.exception("chat cluster: request %s failed", msg.get("op"))
                reply.update(ok=False, error=repr(exc), reason="unavailable")
            with contextlib.suppress(Exception):
                channel = self.key(f"chat:node:{msg.get('from')}")
                await self.redis.publish(channel, json.dumps(reply, default=str))

    async def _inbound_here(
        self, conv: int, message: Inbound, passive_s: float, after: contextlib.AsyncExitStack
    ) -> dict[str, Any]:
        """A customer's message another node received, into the conversation held here; with
        ``passive_s``, the conversation's next Outbound to the customer within that time comes back in
        the answer (not sent from here) for that node's passive reply."""
        engine = self.engine
        assert engine is not None
        slot = engine.passive(message.channel) if passive_s > 0 else None
        future = None
        loop = asyncio.get_running_loop()
        started = loop.time()
        if slot is not None:
            future = await after.enter_async_context(slot[0](message.account, message.visitor))
        got = await engine.receive(message)
        if got is None:  # a retry we had seen: the visitor's open conversation
            live = engine.live_for(message.channel, message.account, message.visitor)
            return {"conversation_id": live.id if live is not None else conv}
        out: Outbound | None = None
        if future is not None:
            left = passive_s - (loop.time() - started)
            try:
                out = await asyncio.wait_for(asyncio.shield(future), max(left, 0.0))
            except TimeoutError:
                if future.done() and not future.cancelled():
                    out = future.result()  # came at the very last moment: still the passive reply
            except asyncio.CancelledError:
                if not future.cancelled():
                    raise
        return {"conversation_id": got, "passive": outbound_to_json(out) if out is not None else None}

    async def _run(self, op: str, a: dict[str, Any], after: contextlib.AsyncExitStack) -> dict[str, Any]:
        engine = self.engine
        assert engine is not None
        conv = int(a["conversation_id"])
        if op == "inbound":
            message = inbound_from_json(a["message"])
            return await self._inbound_here(conv, message, float(a.get("passive_s") or 0.0), after)
        live = engine.live(conv)
        if live is None:
            raise ChatError(f"conversation {conv} is not open", "not_found")
        agent = a.get("agent")
        if op == "reply":
            out = await engine.agent_reply(
                conv, str(a["text"]), agent=agent, sender=str(a["sender"]), forward=False
            )
            return outbound_to_json(out)
        if op == "close":
            await engine.close(conv, by=str(a["by"]), agent=agent, forward=False)
            return {}
        if op == "hand_back":
            await engine.hand_back(conv, agent=agent or live.agent or "", forward=False)
            return {}
        if op == "transfer":
            await engine.transfer(
                conv,
                queue=a.get("queue"),
                agent=a.get("target"),
                by=str(a["by"]),
                holder=agent,
                forward=False,
            )
            return live.summary()
        raise ChatError(f"unknown request {op!r}", "invalid")

    # -- the subscription ---------------------------------------------------------------------------------

    async def _reader(self) -> None:
        mine, out = self.key(f"chat:node:{self.node_id}"), self.key("chat:out")
        while not self._closing:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(mine, out)
                self.subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        data = json.loads(message["data"])
                    except (ValueError, TypeError):
                        continue
                    if _s(message.get("channel")) == out:
                        if data.get("from") == self.node_id:
                            continue
                        if "typing" in data:
                            self._spawn(self._typing_here(data.get("typing") or {}))
                        else:
                            self._spawn(self._deliver(data.get("out") or {}))
                    elif data.get("t") == "req":
                        self._spawn(self._answer(data))
                    elif data.get("t") == "rep":
                        future = self._pending.get(str(data.get("id")))
                        if future is not None and not future.done():
                            future.set_result(data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - connection lost: subscribe again
                self.subscribed.clear()
                log.warning("chat cluster: subscription lost (%r); reconnecting", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _typing_here(self, data: Mapping[str, Any]) -> None:
        if self.engine is None:
            return
        with contextlib.suppress(KeyError, TypeError, ValueError):
            channel, visitor = str(data["channel"]), str(data["visitor"])
            await self.engine.typing_here(
                channel, visitor, bool(data["typing"]), str(data.get("name") or "agent")
            )

    async def _deliver(self, data: Mapping[str, Any]) -> None:
        engine = self.engine
        if engine is None:
            return
        try:
            out = outbound_from_json(data)
        except (KeyError, TypeError, ValueError):
            return
        await engine.deliver_here(out)
