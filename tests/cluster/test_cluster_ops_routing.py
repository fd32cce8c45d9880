"""Issue 10 operations: wrap-up times and queue-position announcements in cluster mode — the leader's
side without Redis, then two nodes in one process on one real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from callcenter.cluster.forwarding import ForwardingRouter
from callcenter.cluster.leader import LeaderState
from callcenter.cluster.messages import Command, Notice, decode_notice, encode
from callcenter.cluster.node import ClusterNode
from callcenter.routing.agents import AgentEvent
from callcenter.routing.queues import QueueConfig
from callcenter.routing.router import Offer, Overflow

WALL0 = 1_700_000_000.0
WAIT = 10.0  # bound on every wait (never asserted on)
QUEUES = {
    "sales": QueueConfig("sales", skills={"sales": 1}, ring_timeout_s=10.0, wrap_up_s=30.0),
    "line": QueueConfig("line", skills={"sales": 1}, join_when_empty=True),
}


def cmd(op: str, node: str, *, call_id: str | None = None, agent: str | None = None, **args: Any) -> Command:
    return Command(op, node, call_id, agent, WALL0, args)  # type: ignore[arg-type]


def wrap_ups(notices: list[tuple[str, Notice]]) -> list[tuple[str, str, tuple[str, ...], float]]:
    return [(node, n.call_id, n.agents, n.seconds) for node, n in notices if n.op == "wrap_up"]


def talking(state: LeaderState, *, caller_node: str = "b", agent_node: str = "a") -> None:
    """bob (registered through ``agent_node``) answers c1, held by ``caller_node``, at t=10."""
    state.apply(cmd("define", agent_node, agent="bob", skills={"sales": 1}), 0.0, WALL0)
    state.apply(cmd("presence", agent_node, agent="bob", event="login"), 0.0, WALL0)
    state.apply(cmd("enqueue", caller_node, call_id="c1", queue="sales"), 1.0, WALL0 + 1)
    assert [n.op for _, n in state.step(1.0, WALL0 + 1).notices] == ["offer"]
    state.apply(cmd("answered", caller_node, call_id="c1", agent="bob"), 10.0, WALL0 + 10)
    state.step(10.0, WALL0 + 10)


# -- wrap_up_s: the leader tells the node that held the call -----------------------------------------------


def test_wrap_up_timer_end_is_sent_to_the_node_holding_the_call() -> None:
    state = LeaderState(QUEUES, token=3)
    talking(state)
    state.apply(cmd("ended", "b", agent="bob"), 100.0, WALL0 + 100)
    assert wrap_ups(state.step(100.0, WALL0 + 100).notices) == []  # wrap-up still running
    timer = state.get_timer()
    assert timer == 130.0
    out = state.step(timer, WALL0 + timer)
    assert wrap_ups(out.notices) == [("b", "c1", ("bob",), 30.0)]
    assert out.notices[0][1].token == 3


def test_wrap_up_ended_early_by_the_agent_on_another_node() -> None:
    state = LeaderState(QUEUES, token=1)
    talking(state)
    state.apply(cmd("ended", "b", agent="bob"), 100.0, WALL0 + 100)
    state.step(100.0, WALL0 + 100)
    # bob's phone is on node a: the presence change comes from a, the record is b's
    state.apply(cmd("presence", "a", agent="bob", event="set_available"), 112.5, WALL0 + 112.5)
    assert wrap_ups(state.step(112.5, WALL0 + 112.5).notices) == [("b", "c1", ("bob",), 12.5)]
    assert state.get_timer() == state.router.day_ends_at  # nothing left to send later (but the day's end)


def test_no_wrap_up_notice_for_a_call_that_died_with_its_node() -> None:
    state = LeaderState(QUEUES, token=1)
    talking(state)
    state.node_gone("b", 50.0)
    state.step(50.0, WALL0 + 50)
    timer = state.get_timer()
    assert timer is not None
    assert wrap_ups(state.step(timer, WALL0 + timer).notices) == []


def test_wrap_up_notice_survives_the_stream_encoding() -> None:
    notice = Notice("wrap_up", "c1", 7, agents=("bob",), seconds=12.34)
    assert decode_notice(encode(notice)) == notice


# -- positions: what the leader writes for each node ---------------------------------------------------


def test_positions_by_node_match_the_routers_answers() -> None:
    state = LeaderState(QUEUES, token=1)
    state.apply(cmd("define", "a", agent="bob", skills={"sales": 1}), 0.0, WALL0)
    state.apply(cmd("presence", "a", agent="bob", event="login"), 0.0, WALL0)
    state.apply(cmd("enqueue", "a", call_id="x0", queue="line"), 1.0, WALL0 + 1)
    state.step(1.0, WALL0 + 1)
    state.apply(cmd("answered", "a", call_id="x0", agent="bob"), 10.0, WALL0 + 10)
    state.apply(cmd("enqueue", "a", call_id="w1", queue="line"), 20.0, WALL0 + 20)
    state.apply(cmd("enqueue", "b", call_id="w2", queue="line"), 21.0, WALL0 + 21)
    state.apply(cmd("enqueue", "b", call_id="w3", queue="line", priority=5), 22.0, WALL0 + 22)
    state.step(22.0, WALL0 + 22)
    places = state.positions(22.0)
    assert places == {
        "a": {"w1": [2, None]},
        "b": {"w2": [3, None], "w3": [1, None]},  # the higher priority goes first; no estimate yet
    }
    # bob's first call ends after 90 s: the router now has a handle time to estimate with
    state.apply(cmd("ended", "a", agent="bob"), 100.0, WALL0 + 100)
    state.step(100.0, WALL0 + 100)
    router_ewt = state.router.estimated_wait_s("w2", 100.0)
    assert router_ewt is not None
    assert state.positions(100.0)["b"]["w2"] == [3, round(router_ewt, 1)]


# -- two nodes, one Redis ----------------------------------------------------------------------------------


class Node:
    """A ClusterNode with the ForwardingRouter its Acd would talk to; deliveries and records captured."""

    def __init__(self, url: str, node_id: str) -> None:
        self.redis = Redis.from_url(url)
        self.node = ClusterNode(self.redis, node_id, QUEUES, ttl_s=1.0, retry_s=0.1)
        self.router = ForwardingRouter(QUEUES, self.node)
        self.delivered: asyncio.Queue[tuple[str, Offer | Overflow]] = asyncio.Queue()
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.router.deliver = self._deliver
        self.router.record_extra = lambda call_id, fields: self.records.append((call_id, fields))

    def _deliver(self, call_id: str, item: Offer | Overflow) -> bool:
        self.delivered.put_nowait((call_id, item))
        return True

    async def next(self) -> tuple[str, Offer | Overflow]:
        return await asyncio.wait_for(self.delivered.get(), WAIT)

    async def marker(self, name: str) -> None:
        """The leader has handled everything this node sent before (its answer comes after, in order);
        the positions it wrote in the same fenced call are in Redis by then."""
        self.node.send("enqueue", call_id=name, queue="no-such-queue")
        while (await self.next())[0] != name:
            pass

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


async def test_the_node_holding_the_caller_writes_wrap_up_s(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.router.agents.define("bob", {"sales": 1})  # bob's phone registers through node a
    a.router.agent_event("bob", AgentEvent.LOGIN, 0.0)
    await a.marker("m0")
    b.router.enqueue("c1", "sales", 0.0)  # the caller is held by node b
    call_id, offer = await b.next()
    assert call_id == "c1" and isinstance(offer, Offer) and offer.agents == ("bob",)
    assert b.router.offer_answered("c1", "bob", 0.0) == []
    b.router.call_ended("bob", 0.0)  # bob hangs up: 30 s of wrap-up at the leader...
    await b.marker("m1")
    assert b.records == [] and a.records == []
    a.router.agent_event(
        "bob", AgentEvent.SET_AVAILABLE, 0.0
    )  # ...which bob ends early from his phone's node
    await b.marker("m2")
    assert [(c, list(f)) for c, f in b.records] == [("c1", ["wrap_up_s"])]
    assert 0.0 <= b.records[0][1]["wrap_up_s"] < 30.0
    assert a.records == []  # not the agent's node, nor the leader: the node that has the record


async def test_waiting_callers_hear_their_place_in_the_global_line(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.router.enqueue("w1", "line", 0.0)
    await a.marker("m0")
    b.router.enqueue("w2", "line", 0.0)
    b.router.enqueue("w3", "line", 0.0)
    await b.marker("m1")
    await b.router.refresh()
    await a.router.refresh()
    assert (b.router.position("w2"), b.router.position("w3")) == (2, 3)  # behind a's caller
    assert a.router.position("w1") == 1
    assert b.router.position("w1") is None  # another node's caller
    assert b.router.estimated_wait_s("w2", 0.0) is None  # nothing answered yet: no estimate
    a.router.leave("w1", 0.0, reason="abandoned")  # the first caller hangs up: everyone moves up
    await a.marker("m2")
    await b.router.refresh()
    assert (b.router.position("w2"), b.router.position("w3")) == (1, 2)
    await a.router.refresh()
    assert a.router.position("w1") is None
