"""Two nodes in one process on one real Redis: global queues, one offer per agent, failover."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from callcenter.cluster.messages import Notice
from callcenter.cluster.node import FENCED_LUA, ClusterNode
from callcenter.routing.agents import AgentState
from callcenter.routing.queues import QueueConfig

QUEUES = {"sales": QueueConfig("sales", skills={"sales": 1}, ring_timeout_s=10.0)}
WAIT = 10.0  # bound on every wait (never asserted on)


class Node:
    def __init__(self, url: str, node_id: str) -> None:
        self.redis = Redis.from_url(url)
        self.notices: asyncio.Queue[Notice] = asyncio.Queue()
        self.node = ClusterNode(
            self.redis, node_id, QUEUES, on_notice=self._on_notice, ttl_s=1.0, retry_s=0.1
        )

    def _on_notice(self, notice: Notice) -> None:
        if notice.op != "place":  # a waiting caller's place (announcements), not routing
            self.notices.put_nowait(notice)

    async def next(self) -> Notice:
        return await asyncio.wait_for(self.notices.get(), WAIT)

    async def marker(self, name: str) -> Notice:
        """Everything the leader sent this node before handling this command has arrived by the time
        its answer does (one stream, in order): the notices until then, the marker's last."""
        self.node.send("enqueue", call_id=name, queue="no-such-queue")
        while True:
            notice = await self.next()
            if notice.call_id == name:
                return notice
            raise AssertionError(f"unexpected notice before the marker: {notice}")

    async def close(self) -> None:
        await self.node.stop()
        await self.redis.aclose()


@pytest.fixture
async def nodes(redis_url: str, redis: Redis) -> AsyncIterator[tuple[Node, Node]]:
    a, b = Node(redis_url, "a"), Node(redis_url, "b")
    await a.node.start()
    await asyncio.wait_for(a.node.became_leader.wait(), WAIT)  # a leads: it started alone
    await b.node.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def login(node: Node, agent: str, **skills: int) -> None:
    node.node.send("define", agent=agent, skills=skills or {"sales": 1})
    node.node.send("presence", agent=agent, event="login")


async def test_caller_on_a_is_offered_to_agent_registered_on_b(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    login(b, "bob")
    await b.marker("m0")  # bob is known to the leader before the caller arrives
    a.node.send("enqueue", call_id="c1", queue="sales")
    offer = await a.next()
    assert (offer.op, offer.call_id, offer.agents, offer.queue) == ("offer", "c1", ("bob",), "sales")
    a.node.send("answered", call_id="c1", agent="bob")
    await a.marker("m1")
    leader = a.node.leader
    assert leader is not None and leader.router.agents["bob"].state is AgentState.ON_CALL
    assert (await a.node.snapshot())["agents"]["bob"]["state"] == "on_call"  # what every node's API reads
    assert (await b.node.snapshot())["agents"]["bob"]["call_id"] == "c1"


async def test_an_agent_gets_one_offer_while_both_nodes_have_callers(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    login(b, "bob")
    await b.marker("m0")
    a.node.send("enqueue", call_id="c1", queue="sales")
    b.node.send("enqueue", call_id="c2", queue="sales")
    await a.node._flush()
    await b.node._flush()
    got = []
    for node in (a, b):
        node.node.send("enqueue", call_id="m-" + node.node.node_id, queue="no-such-queue")
    for node in (a, b):
        while (n := await node.next()).call_id != "m-" + node.node.node_id:
            got.append((node.node.node_id, n.op, n.call_id, n.agents))
    assert len(got) == 1 and got[0][1:] == ("offer", got[0][2], ("bob",))
    # bob answers; only when that call ends is the other caller offered to him
    first_node = a if got[0][0] == "a" else b
    other_node, other_call = (b, "c2") if first_node is a else (a, "c1")
    first_node.node.send("answered", call_id=got[0][2], agent="bob")
    first_node.node.send("ended", agent="bob")
    offer = await other_node.next()
    assert (offer.op, offer.call_id, offer.agents) == ("offer", other_call, ("bob",))


async def test_leader_killed_the_other_takes_over_with_agents_states(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    login(b, "bob")
    login(b, "erin")
    b.node.send("presence", agent="erin", event="set_not_ready", reason="training")
    b.node.send("enqueue", call_id="c1", queue="sales")
    b.node.send("enqueue", call_id="c2", queue="sales")
    offer = await b.next()
    assert offer.agents == ("bob",)
    b.node.send("answered", call_id=offer.call_id, agent="bob")
    await b.marker("m0")
    token = a.node.election.token
    assert token is not None
    await a.node.kill()  # as SIGKILL: the lock expires, nobody releases it
    await asyncio.wait_for(b.node.became_leader.wait(), WAIT)
    leader = b.node.leader
    assert leader is not None and b.node.election.token == token + 1
    board = leader.router.agents
    assert board["bob"].state is AgentState.ON_CALL and board["bob"].call_id == offer.call_id
    assert board["erin"].state is AgentState.NOT_READY and board["erin"].reason == "training"
    other = "c2" if offer.call_id == "c1" else "c1"
    assert leader.router.position(other) == 1  # the caller still waiting kept its place
    # routing goes on under the new leader: bob's call ends, the waiting caller is offered to him
    b.node.send("ended", agent="bob")
    wrap = await b.next()  # the queue has no wrap-up: it ends at once, and the call's record says so
    assert (wrap.op, wrap.call_id, wrap.agents, wrap.seconds) == ("wrap_up", offer.call_id, ("bob",), 0.0)
    nxt = await b.next()
    assert (nxt.op, nxt.call_id, nxt.agents, nxt.token) == (
        "offer",
        other,
        ("bob",),
        token + 1 if token else 0,
    )


async def test_a_deposed_leader_cannot_write(redis: Redis) -> None:
    fenced = redis.register_script(FENCED_LUA)
    await redis.set("cc:leader", "b:2")
    assert await fenced(keys=["cc:leader"], args=["a:1", "hset", "cc:agents", "bob", "{}"]) == 0
    assert await fenced(keys=["cc:leader"], args=["a:1", "xadd", "cc:node:a", "{}", "100"]) == 0
    assert await redis.exists("cc:agents", "cc:node:a") == 0
    assert await fenced(keys=["cc:leader"], args=["b:2", "hset", "cc:agents", "bob", "{}"]) == 1
    assert await redis.hget("cc:agents", "bob") == b"{}"
