"""The Acd's seam: two nodes' ForwardingRouters on one Redis behave as one router for the Acd's calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from callcenter.cluster.forwarding import ForwardingRouter
from callcenter.cluster.node import ClusterNode
from callcenter.routing.agents import AgentEvent, AgentState
from callcenter.routing.queues import QueueConfig
from callcenter.routing.router import Offer, OfferGone, Overflow

QUEUES = {
    "sales": QueueConfig("sales", skills={"sales": 1}, ring_timeout_s=10.0),
    "closed": QueueConfig("closed", skills={"nobody": 1}),
}
WAIT = 10.0


class Side:
    """One node as its Acd sees it: the router, and the callers waiting here (deliver)."""

    def __init__(self, url: str, node_id: str) -> None:
        self.redis = Redis.from_url(url)
        self.node = ClusterNode(self.redis, node_id, QUEUES, ttl_s=1.0, retry_s=0.1)
        self.router = ForwardingRouter(QUEUES, self.node)
        self.router.deliver = self.deliver
        self.waiting: dict[str, asyncio.Queue[Offer | Overflow]] = {}

    def deliver(self, call_id: str, item: Offer | Overflow) -> bool:
        q = self.waiting.get(call_id)
        if q is None:
            return False
        q.put_nowait(item)
        return True

    def enqueue(self, call_id: str, queue: str = "sales") -> asyncio.Queue[Offer | Overflow]:
        self.waiting[call_id] = asyncio.Queue()
        self.router.enqueue(call_id, queue, 0.0)
        return self.waiting[call_id]

    async def close(self) -> None:
        await self.router.stop()
        await self.node.stop()
        await self.redis.aclose()


async def agent_state(sides: tuple[Side, ...], agent: str, state: str) -> None:
    """Until every node's wallboard (the leader's snapshot) shows ``agent`` in ``state`` (bounded)."""

    async def poll() -> None:
        while any(s.router.snapshot(0.0)["agents"].get(agent, {}).get("state") != state for s in sides):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), WAIT)


async def next_item(q: asyncio.Queue[Offer | Overflow]) -> Offer | Overflow:
    return await asyncio.wait_for(q.get(), WAIT)


@pytest.fixture
async def sides(redis_url: str, redis: Redis) -> AsyncIterator[tuple[Side, Side]]:
    a, b = Side(redis_url, "a"), Side(redis_url, "b")
    await a.node.start()
    await asyncio.wait_for(a.node.became_leader.wait(), WAIT)
    await b.node.start()
    a.router.start(every_s=0.05)
    b.router.start(every_s=0.05)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_offer_answer_and_end_across_nodes(sides: tuple[Side, Side]) -> None:
    a, b = sides
    b.router.agents.define("bob", {"sales": 2})  # the Acd defines agents on its board: forwarded
    b.router.agent_event("bob", AgentEvent.LOGIN, 0.0)  # bob's phone registered through node b
    assert b.router.agents["bob"].state is AgentState.AVAILABLE  # the local view the Acd reads
    await agent_state(sides, "bob", "available")  # the leader has heard (nodes' commands race)
    # a caller on node a; a queue nobody can serve answers with an overflow, as one node would
    closed = a.enqueue("c0", "closed")
    overflow = await next_item(closed)
    assert isinstance(overflow, Overflow) and overflow.reason == "no_agents"
    q = a.enqueue("c1")
    offer = await next_item(q)
    assert isinstance(offer, Offer) and offer.agents == ("bob",)
    with pytest.raises(OfferGone):
        a.router.offer_answered("c1", "carol", 1.0)  # not offered to her
    assert a.router.offer_answered("c1", "bob", 1.0) == []
    a.router.leave("c1", 1.0, reason="answered")
    await agent_state(sides, "bob", "on_call")  # both nodes' wallboards
    a.router.call_ended("bob", 2.0)
    await agent_state(sides, "bob", "available")


async def test_offer_for_a_caller_gone_here_frees_the_agent(sides: tuple[Side, Side]) -> None:
    a, b = sides
    b.router.agents.define("bob", {"sales": 1})
    b.router.agent_event("bob", AgentEvent.LOGIN, 0.0)
    await agent_state(sides, "bob", "available")
    a.router.enqueue("c1", "sales", 0.0)  # no waiter registered: the caller hung up meanwhile
    leader = a.node.leader
    assert leader is not None
    bob = leader.router.agents["bob"]

    async def offered_and_freed() -> None:
        while not (
            bob.offers >= 1 and bob.state is AgentState.AVAILABLE and "c1" not in leader.router.waiting
        ):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(offered_and_freed(), WAIT)  # offered c1, freed at once by node a
    assert bob.missed_in_row == 0
    q = b.enqueue("c2")
    offer = await next_item(q)
    assert isinstance(offer, Offer) and (offer.call_id, offer.agents) == ("c2", ("bob",))
