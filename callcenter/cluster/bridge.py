"""Every node's live events on every node: the in-process :class:`EventBus` bridged to one Redis
pub/sub channel.

Local events (``Event.origin is None``) are published to the channel with this node's id; events
from the channel whose node is another are republished on the local bus with ``origin`` set (and
``data["node"]``), so ``/api/live`` on any node shows the whole cluster. No echo by construction:
the bridge listens to local events only (``EventBus.listen`` without ``remote``), so what it
republishes never goes out again; and its own messages coming back are skipped by node id.

Not bridged: ``queue_changed`` (each node derives it from the shared snapshot itself) and kinds that
are not live (``speech``: per-node metrics).

Pub/sub is fire-and-forget (a node not connected at that moment misses the event): right for a live
view that starts from a snapshot anyway. Publishing never blocks the caller: events go through a
bounded queue to one writer task; when Redis is unreachable the oldest are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from callcenter.events import LIVE_KINDS, Event, EventBus

__all__ = ["EventBridge", "decode_event", "encode_event"]

log = logging.getLogger("callcenter.cluster.bridge")

_NOT_BRIDGED = frozenset({"queue_changed"})


def encode_event(event: Event, node: str) -> str:
    return json.dumps(
        {
            "node": node,
            "kind": event.kind,
            "name": event.name,
            "at": event.at.isoformat(),
            "data": event.data,
        },
        separators=(",", ":"),
        default=str,
        ensure_ascii=False,
    )


def decode_event(raw: str | bytes) -> tuple[str, Event]:
    """(sending node, event with ``origin`` set); ValueError when it is not one of ours."""
    data = json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("node"), str):
        raise ValueError("not a bridged event")
    node = data["node"]
    fields = dict(data.get("data") or {})
    fields.setdefault("node", node)
    event = Event(
        str(data["kind"]), str(data["name"]), datetime.fromisoformat(data["at"]), fields, origin=node
    )
    return node, event


class EventBridge:
    def __init__(
        self, bus: EventBus, redis: Redis, node_id: str, *, channel: str = "cc:events", backlog: int = 10_000
    ) -> None:
        self.bus = bus
        self.redis = redis
        self.node_id = node_id
        self.channel = channel
        self._out: deque[str] = deque(maxlen=backlog)
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stop_listening: Any = None
        self._closing = False
        self.sent = 0
        self.received = 0
        self.dropped = 0  # local events lost because Redis was unreachable for too long
        self.subscribed = asyncio.Event()

    async def start(self) -> None:
        self._stop_listening = self.bus.listen(self._on_local)
        self._tasks = [
            asyncio.create_task(self._writer(), name="cluster-events-out"),
            asyncio.create_task(self._reader(), name="cluster-events-in"),
        ]

    async def stop(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        # The loops also stop on the flag, and the wait is bounded: redis-py can turn a cancellation
        # that meets its own read timeout into a TimeoutError, which a loop would take for a hiccup.
        self._closing = True
        self._ready.set()
        for _ in range(3):
            pending = [t for t in self._tasks if not t.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=2.0)
        for task in self._tasks:
            if not task.done():
                log.warning("event bridge: task %s did not stop", task.get_name())
        self._tasks = []

    def _on_local(self, event: Event) -> None:
        if event.origin is not None or event.kind not in LIVE_KINDS or event.name in _NOT_BRIDGED:
            return
        if len(self._out) == self._out.maxlen:
            self.dropped += 1
        self._out.append(encode_event(event, self.node_id))
        self._ready.set()

    async def _writer(self) -> None:
        while not self._closing:
            await self._ready.wait()
            self._ready.clear()
            while self._out and not self._closing:
                batch = list(self._out)
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for text in batch:
                            pipe.publish(self.channel, text)
                        await pipe.execute()
                except (OSError, ConnectionError, TimeoutError) as exc:
                    log.warning("event bridge: publish failed (%r); retrying", exc)
                    await asyncio.sleep(1.0)
                    continue
                except Exception as exc:  # noqa: BLE001 - redis errors: keep the writer alive
                    log.warning("event bridge: publish failed (%r); retrying", exc)
                    await asyncio.sleep(1.0)
                    continue
                for _ in batch:
                    if self._out:
                        self._out.popleft()
                self.sent += len(batch)

    async def _reader(self) -> None:
        while not self._closing:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        node, event = decode_event(message["data"])
                    except (ValueError, KeyError, TypeError) as exc:
                        log.warning("event bridge: skipped a message: %r", exc)
                        continue
                    if node == self.node_id:
                        continue
                    self.received += 1
                    self.bus.publish(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - connection lost: subscribe again
                self.subscribed.clear()
                log.warning("event bridge: subscription lost (%r); reconnecting", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
