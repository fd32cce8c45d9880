"""Two nodes' buses bridged over one Redis: each sees the other's events once, never its own twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from redis.asyncio import Redis

from callcenter.cluster.bridge import EventBridge
from callcenter.events import Event, EventBus


def _event(name: str, **data: object) -> Event:
    kind = name.split("_", 1)[0]
    return Event(kind, name, datetime.now(UTC), dict(data))


async def _next(sub, timeout: float = 5.0) -> Event:  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(sub.get(), timeout)  # bounded wait, no assertion on time


async def test_events_cross_nodes_without_echo(redis_url: str, redis: Redis) -> None:
    bus_a, bus_b = EventBus(), EventBus()
    ra, rb = Redis.from_url(redis_url), Redis.from_url(redis_url)
    a, b = EventBridge(bus_a, ra, "a"), EventBridge(bus_b, rb, "b")
    sub_a, sub_b = bus_a.subscribe(), bus_b.subscribe()
    webhook_a: list[Event] = []
    bus_a.listen(webhook_a.append)  # a side-effecting listener: this node's events only
    await a.start()
    await b.start()
    try:
        await asyncio.wait_for(asyncio.gather(a.subscribed.wait(), b.subscribed.wait()), 5.0)
        bus_a.publish(_event("call_started", call_id="c1"))
        got = await _next(sub_b)
        assert (got.name, got.call_id, got.origin, got.data["node"]) == ("call_started", "c1", "a", "a")
        assert (await _next(sub_a)).origin is None  # the local one, once

        bus_b.publish(_event("agent_offered", agent="bob", call_id="c1"))
        remote = await _next(sub_a)
        assert remote.name == "agent_offered" and remote.origin == "b"
        assert (await _next(sub_b)).origin is None
        # a marker round trip: anything echoed back would arrive before it
        bus_a.publish(_event("call_ended", call_id="c1"))
        assert (await _next(sub_a)).name == "call_ended"
        assert (await _next(sub_b)).name == "call_ended"
        bus_b.publish(_event("call_ended", call_id="c2"))
        assert (await _next(sub_a)).call_id == "c2"
        assert sub_a.get_nowait() is None and len(sub_b) == 1  # b: its own c2 only, no echo of c1
        assert [e.name for e in webhook_a] == ["call_started", "call_ended"]
        assert b.received == 2 and a.received == 2
    finally:
        await a.stop()
        await b.stop()
        await ra.aclose()
        await rb.aclose()


async def test_queue_changed_and_metrics_kinds_stay_local(redis_url: str, redis: Redis) -> None:
    bus_a, bus_b = EventBus(), EventBus()
    ra, rb = Redis.from_url(redis_url), Redis.from_url(redis_url)
    a, b = EventBridge(bus_a, ra, "a"), EventBridge(bus_b, rb, "b")
    sub_b = bus_b.subscribe()
    await a.start()
    await b.start()
    try:
        await asyncio.wait_for(asyncio.gather(a.subscribed.wait(), b.subscribed.wait()), 5.0)
        bus_a.publish(Event("queue", "queue_changed", datetime.now(UTC), {"queue": "sales"}))
        bus_a.publish(Event("speech", "asr_decoded", datetime.now(UTC), {}))
        bus_a.publish(_event("queue_joined", call_id="c9"))
        got = await _next(sub_b)
        assert got.name == "queue_joined"
        assert sub_b.get_nowait() is None
    finally:
        await a.stop()
        await b.stop()
        await ra.aclose()
        await rb.aclose()
