"""What a successor leader keeps (wrap-ups, deferred requests, missed offers, statistics, callbacks),
the place notice, and the callback-key hold / resume — first on the sans-I/O LeaderState, rebuilt from
its own mirror as a successor would be, then with real nodes on a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import leader_model
import pytest
from leader_model import WALL0, agent_up, cmd, notices, run
from redis.asyncio import Redis

from callcenter.cluster.forwarding import ForwardingRouter
from callcenter.cluster.leader import LeaderState
from callcenter.cluster.messages import Notice
from callcenter.cluster.node import ClusterNode
from callcenter.cluster.status import read_status
from callcenter.routing.agents import AgentEvent, AgentState
from callcenter.routing.queues import QueueConfig
from callcenter.routing.router import Offer, Overflow

WAIT = 10.0  # bound on every wait (never asserted on)
QUEUES = {
    "sales": QueueConfig("sales", skills={"sales": 1}, ring_timeout_s=10.0, wrap_up_s=30.0),
    "quick": QueueConfig("quick", skills={"sales": 1}, ring_timeout_s=10.0, service_level_s=20.0),
    "_agent": QueueConfig("_agent", ring_timeout_s=10.0, join_when_empty=False),
}


class Mirror(leader_model.Mirror):
    queues = QUEUES


def talking(s: LeaderState, m: Mirror, agent: str, call_id: str, queue: str, now: float) -> None:
    run(s, m, now, cmd("enqueue", "a", call_id=call_id, queue=queue))
    run(s, m, now, cmd("answered", "a", call_id=call_id, agent=agent))
    assert s.router.agents[agent].state is AgentState.ON_CALL


# -- wrap-ups ---------------------------------------------------------------------------------------------


def test_a_wrap_up_in_progress_goes_on_under_the_successor_with_what_is_left() -> None:
    s, m = LeaderState(QUEUES, token=1), Mirror()
    agent_up(s, m, "bob")
    talking(s, m, "bob", "c1", "sales", 1.0)
    run(s, m, 10.0, cmd("ended", "a", agent="bob"))  # wrap-up until 40
    t = m.successor(20.0, {"a", "b"})
    assert t.router.agents["bob"].state is AgentState.WRAP_UP
    assert t.get_timer() == pytest.approx(40.0)  # 20 s left, not 30 again and not none
    out = m.take(t.step(39.0, WALL0 + 39))
    assert t.router.agents["bob"].state is AgentState.WRAP_UP and not out.notices
    t.router.handle_timer(40.0)
    out = m.take(t.step(40.0, WALL0 + 40))
    assert t.router.agents["bob"].state is AgentState.AVAILABLE
    # the node that held the call still gets the whole wrap-up's length for its record
    assert [(node, n.call_id, n.seconds) for node, n in notices(out, "wrap_up")] == [("a", "c1", 30.0)]


def test_a_wrap_up_that_ended_during_the_failover_is_reported_and_the_agent_is_free() -> None:
    s, m = LeaderState(QUEUES, token=1), Mirror()
    agent_up(s, m, "bob")
    talking(s, m, "bob", "c1", "sales", 1.0)
    run(s, m, 10.0, cmd("ended", "a", agent="bob"))
    t = m.successor(55.0, {"a", "b"})
    out = m.take(t.step(55.0, WALL0 + 55))
    assert t.router.agents["bob"].state is AgentState.AVAILABLE
    assert [(node, n.call_id, n.seconds) for node, n in notices(out, "wrap_up")] == [("a", "c1", 30.0)]


# -- deferred presence and missed offers -------------------------------------------------------------------


def test_a_not_ready_asked_for_during_a_call_applies_when_it_ends_under_the_successor() -> None:
    s, m = LeaderState(QUEUES, token=1), Mirror()
    agent_up(s, m, "bob")
    agent_up(s, m, "erin")
    talking(s, m, "bob", "c1", "quick", 1.0)
    talking(s, m, "erin", "c2", "quick", 1.0)
    run(s, m, 2.0, cmd("presence", "b", agent="bob", event="set_not_ready", reason="lunch"),
        cmd("presence", "b", agent="erin", event="logout"))  # fmt: skip
    assert m.tables["agents"]["bob"]["pending"] == "set_not_ready"
    t = m.successor(5.0, {"a", "b"})
    assert t.router.agents["bob"].state is AgentState.ON_CALL
    run(t, m, 6.0, cmd("ended", "a", agent="bob"), cmd("ended", "a", agent="erin"))
    bob, erin = t.router.agents["bob"], t.router.agents["erin"]
    assert (bob.state, bob.reason) == (AgentState.NOT_READY, "lunch")
    assert erin.state is AgentState.OFFLINE


def test_missed_offers_count_on_across_a_failover_and_auto_not_ready_still_triggers() -> None:
    s, m = LeaderState(QUEUES, token=1, max_missed=3), Mirror()
    agent_up(s, m, "bob")
    run(s, m, 1.0, cmd("enqueue", "a", call_id="c1", queue="quick"))
    for i in range(2):
        run(s, m, 2.0 + i, cmd("failed", "a", call_id="c1", agent="bob", missed=True))
    assert s.router.agents["bob"].missed_in_row == 2
    t = m.successor(10.0, {"a", "b"}, max_missed=3)
    assert t.router.agents["bob"].state is AgentState.RESERVED  # c1's offer rings him again
    run(t, m, 11.0, cmd("failed", "a", call_id="c1", agent="bob", missed=True))
    bob = t.router.agents["bob"]
    assert (bob.state, bob.reason) == (AgentState.NOT_READY, "missed offers")


# -- the wallboard's statistics ------------------------------------------------------------------------------


def test_queue_statistics_go_on_from_where_the_previous_leader_left_them() -> None:
    s, m = LeaderState(QUEUES, token=1), Mirror()
    agent_up(s, m, "bob")
    talking(s, m, "bob", "c1", "quick", 1.0)  # answered at once
    run(s, m, 30.0, cmd("ended", "a", agent="bob"))
    run(s, m, 31.0, cmd("presence", "b", agent="bob", event="set_not_ready"))
    run(s, m, 32.0, cmd("enqueue", "a", call_id="c2", queue="quick"))
    run(s, m, 40.0, cmd("leave", "a", call_id="c2", reason="abandoned"))
    before = s.router.snapshot(40.0)["queues"]["quick"]["stats"]
    assert (before["offered"], before["answered"], before["abandoned"]) == (2, 1, 1)
    t = m.successor(50.0, {"a", "b"})
    after = t.router.snapshot(50.0)["queues"]["quick"]["stats"]
    assert after == before  # offered, answered, abandoned, service level, ASA, AHT
    assert (after["service_level"], after["aht_s"]) == (0.5, 29.0)
    run(t, m, 51.0, cmd("enqueue", "a", call_id="c3", queue="quick"))
    assert t.router.snapshot(51.0)["queues"]["quick"]["stats"]["offered"] == 3
    assert m.tables["stats"]["quick"]["offered"] == 3  # and mirrored for the next one


# -- the first place announcement --------------------------------------------------------------------------


def test_a_caller_who_has_to_wait_is_told_its_place_at_once() -> None:
    s, m = LeaderState(QUEUES, token=1), Mirror()
    agent_up(s, m, "bob")
    out = run(s, m, 1.0, cmd("enqueue", "a", call_id="c1", queue="quick"),
              cmd("enqueue", "b", call_id="c2", queue="quick"),
              cmd("enqueue", "a", call_id="c3", queue="quick"))  # fmt: skip
    places = [(node, n.call_id, n.position) for node, n in notices(out, "place")]
    assert places == [("b", "c2", 2), ("a", "c3", 3)]  # c1 is offered: its offer answers it
    assert [n.call_id for _, n in notices(out, "offer")] == ["c1"]


# -- callbacks -------------------------------------------------------------------------------------------


def test_the_callback_key_holds_the_caller_out_of_offers_and_it_keeps_its_place() -> None:
    s, m = LeaderState(QUEUES, token=1), Mirror()
    agent_up(s, m, "bob")
    run(s, m, 1.0, cmd("enqueue", "a", call_id="c1", queue="quick"))
    run(s, m, 2.0, cmd("enqueue", "a", call_id="c2", queue="quick"))
    out = run(s, m, 3.0, cmd("hold", "a", call_id="c1"))  # c1 pressed the key while bob's phone rang
    assert [(n.call_id, n.agents) for _, n in notices(out, "offer")] == [("c2", ("bob",))]
    assert s.router.agents["bob"].missed_in_row == 0 and m.tables["waiting"]["c1"]["held"]
    # c1 leaves a number as c2's offer rings out: c1, first in line still, is the next one offered
    out = run(s, m, 5.0, cmd("to_callback", "a", call_id="c1"),
              cmd("failed", "a", call_id="c2", agent="bob", missed=False))  # fmt: skip
    assert s.router.position("c1") == 1
    offered = notices(out, "offer")
    assert [(node, n.call_id, n.callback) for node, n in offered] == [("a", "c1", True)]


def test_a_callback_keeps_its_place_through_a_failover_and_is_called_back() -> None:
    s, m = LeaderState(QUEUES, token=1), Mirror()
    agent_up(s, m, "bob")
    run(s, m, 0.5, cmd("presence", "b", agent="bob", event="set_not_ready"))
    run(s, m, 1.0, cmd("enqueue", "a", call_id="c1", queue="quick"))
    run(s, m, 2.0, cmd("enqueue", "b", call_id="c2", queue="quick"))
    run(s, m, 3.0, cmd("hold", "a", call_id="c1"), cmd("to_callback", "a", call_id="c1"))
    t = m.successor(10.0, {"a", "b"})
    assert t.router.is_callback("c1") and t.router.position("c1") == 1
    out = run(t, m, 11.0, cmd("presence", "b", agent="bob", event="set_available"))
    assert [(node, n.call_id, n.callback) for node, n in notices(out, "offer")] == [("a", "c1", True)]
    run(t, m, 12.0, cmd("callback_connecting", "a", call_id="c1", agent="bob"))
    u = m.successor(13.0, {"a", "b"})  # a second failover while the customer is being dialled
    assert u.router.agents["bob"].state is AgentState.ON_CALL and u.router.position("c1") == 1
    run(u, m, 14.0, cmd("callback_answered", "a", call_id="c1"))
    assert "c1" not in u.router.waiting and u.router.stats["quick"].answered == 1
    run(u, m, 20.0, cmd("ended", "a", agent="bob"))
    assert [n.call_id for _, n in notices(run(u, m, 20.0), "offer")] in ([], ["c2"])
    assert u.router.agents["bob"].state in (AgentState.AVAILABLE, AgentState.RESERVED)


def test_a_dead_nodes_callbacks_move_to_the_leaders_node_and_its_callers_drop() -> None:
    s, m = LeaderState(QUEUES, token=1, home="b"), Mirror()
    agent_up(s, m, "bob")
    run(s, m, 0.5, cmd("presence", "b", agent="bob", event="set_not_ready"))
    run(s, m, 1.0, cmd("enqueue", "a", call_id="c1", queue="quick"),
        cmd("enqueue", "a", call_id="c2", queue="quick"))  # fmt: skip
    run(s, m, 2.0, cmd("to_callback", "a", call_id="c1"))
    s.node_gone("a", 3.0)
    run(s, m, 3.0)
    assert list(s.router.waiting) == ["c1"] and s.caller_node["c1"] == "b"  # c2's call died with a
    out = run(s, m, 4.0, cmd("presence", "b", agent="bob", event="set_available"))
    assert [(node, n.call_id, n.callback) for node, n in notices(out, "offer")] == [("b", "c1", True)]
    # a successor started after a's death adopts it as well, from the mirror
    t = m.successor(5.0, {"c"}, home="c")
    assert t.caller_node == {"c1": "c"} and t.router.is_callback("c1")
    assert t.router.agents["bob"].state is AgentState.AVAILABLE  # its offer rang from dead b


def test_a_callback_being_dialled_from_a_dead_node_is_tried_again_from_the_leaders() -> None:
    s, m = LeaderState(QUEUES, token=1, home="b"), Mirror()
    agent_up(s, m, "bob")
    run(s, m, 0.5, cmd("presence", "b", agent="bob", event="set_not_ready"))
    run(s, m, 1.0, cmd("enqueue", "a", call_id="c1", queue="quick"))
    run(s, m, 2.0, cmd("to_callback", "a", call_id="c1"))
    run(s, m, 3.0, cmd("presence", "b", agent="bob", event="set_available"))
    run(s, m, 4.0, cmd("callback_connecting", "a", call_id="c1", agent="bob"))
    s.node_gone("a", 5.0)
    out = run(s, m, 5.0)
    assert [(node, n.call_id, n.callback) for node, n in notices(out, "offer")] == [("b", "c1", True)]


class StubNode:
    """What a ForwardingRouter sends, without Redis."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.on_notice: Any = None

    def send(self, op: str, **args: Any) -> None:
        self.sent.append((op, args))

    def wall(self) -> float:
        return WALL0


async def test_an_offer_reaching_a_caller_held_for_its_number_is_refused_without_a_miss() -> None:
    node = StubNode()
    router = ForwardingRouter(QUEUES, cast(Any, node))
    delivered: list[Offer | Overflow] = []

    def deliver(call_id: str, item: Offer | Overflow) -> bool:
        delivered.append(item)
        return True

    router.deliver = deliver
    router.enqueue("c1", "quick", 0.0)
    router.on_notice(Notice("place", "c1", 1, "quick", position=3, wait_s=90.0))
    assert await router.wait_for_place("c1", 0.0) and router.position("c1") == 3
    assert router.estimated_wait_s("c1", 0.0) == 90.0
    router.hold("c1", 1.0)
    node.sent.clear()
    router.on_notice(Notice("offer", "c1", 1, "quick", ("bob",), 10.0))  # made just before the hold
    assert delivered == []
    assert node.sent == [("failed", {"call_id": "c1", "agent": "bob", "missed": False})]  # no leave
    router.resume("c1", 2.0)
    router.on_notice(Notice("offer", "c1", 1, "quick", ("bob",), 10.0))
    assert [getattr(d, "agents", None) for d in delivered] == [("bob",)]


# -- real nodes on a real Redis ------------------------------------------------------------------------------


class Side:
    """One node with the router its Acd would use; what the leader hands to its callers is queued."""

    def __init__(self, url: str, node_id: str) -> None:
        self.redis = Redis.from_url(url)
        self.node = ClusterNode(self.redis, node_id, QUEUES, ttl_s=1.0, retry_s=0.1)
        self.router = ForwardingRouter(QUEUES, self.node)
        self.items: asyncio.Queue[Offer | Overflow] = asyncio.Queue()
        self.router.deliver = self._deliver

    def _deliver(self, call_id: str, item: Offer | Overflow) -> bool:
        self.items.put_nowait(item)
        return True

    async def next(self) -> Offer | Overflow:
        return await asyncio.wait_for(self.items.get(), WAIT)

    async def sync(self, name: str) -> None:
        """The leader has applied everything this node sent before: its answer to a marker is back."""
        self.node.send("enqueue", call_id=name, queue="no-such-queue")
        item = await self.next()
        assert isinstance(item, Overflow) and item.call_id == name, item

    async def close(self) -> None:
        await self.router.stop()
        await self.node.stop()
        await self.redis.aclose()


@pytest.fixture
async def sides(redis_url: str, redis: Redis) -> AsyncIterator[tuple[Side, Side]]:
    a, b = Side(redis_url, "a"), Side(redis_url, "b")
    await a.node.start()
    await asyncio.wait_for(a.node.became_leader.wait(), WAIT)
    await b.node.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def define(side: Side, name: str, now: float = 0.0) -> None:
    side.router.agents.define(name, {"sales": 1, f"agent:{name}": 1}, now=now)
    side.router.agent_event(name, AgentEvent.LOGIN, now)


async def test_callback_left_on_a_node_survives_a_leader_failover_and_reaches_the_agent(
    sides: tuple[Side, Side],
) -> None:
    a, b = sides  # a leads; the callers wait on b
    define(b, "bob")
    b.router.agent_event("bob", AgentEvent.SET_NOT_READY, 0.0, reason="meeting")
    b.router.enqueue("c1", "quick", 1.0)
    assert await b.router.wait_for_place("c1", WAIT)  # the first announcement can say it
    b.router.enqueue("c2", "quick", 2.0)
    assert await b.router.wait_for_place("c2", WAIT)
    assert (b.router.position("c1"), b.router.position("c2")) == (1, 2)
    assert b.router.waiting["c1"].queue == "quick"  # what the Acd's callback prompt reads
    b.router.hold("c1", 3.0)  # the caller pressed the key: asked for a number
    b.router.to_callback("c1", 4.0)  # gave one and hung up; the Acd does not make it leave
    assert b.router.is_callback("c1")
    await b.sync("m1")
    await a.node.kill()  # the leader dies before the agent is free
    await asyncio.wait_for(b.node.became_leader.wait(), WAIT)
    b.router.agent_event("bob", AgentEvent.SET_AVAILABLE, 5.0)
    offer = await b.next()
    assert isinstance(offer, Offer)
    assert (offer.call_id, offer.agents, offer.callback) == ("c1", ("bob",), True)
    b.router.callback_connecting("c1", "bob", 6.0)
    b.router.callback_answered("c1", 7.0)
    b.router.call_ended("bob", 8.0)
    nxt = await b.next()  # bob's wrap-up over (none in this queue): c2's turn
    assert isinstance(nxt, Offer) and (nxt.call_id, nxt.callback) == ("c2", False)
    leader = b.node.leader
    assert leader is not None and leader.router.stats["quick"].callbacks == 1


async def test_an_attended_transfer_consults_an_agent_through_the_leader_and_survives_a_failover(
    sides: tuple[Side, Side],
) -> None:
    a, b = sides
    define(a, "ann")  # registered through a
    define(a, "bob")
    a.router.agent_event("bob", AgentEvent.SET_NOT_READY, 0.0)
    b.router.enqueue("c1", "quick", 1.0)  # the caller is on b
    first = await b.next()
    assert isinstance(first, Offer) and first.agents == ("ann",)
    b.router.offer_answered("c1", "ann", 2.0)
    b.router.leave("c1", 2.0, reason="answered")
    a.router.agent_event("bob", AgentEvent.SET_AVAILABLE, 3.0)
    # ann consults bob (Acd.ring_for_consult): the consultation waits under its own id
    b.router.enqueue("c1;consult1", "_agent", 4.0, skills={"agent:bob": 1})
    consult = await b.next()
    assert isinstance(consult, Offer) and (consult.call_id, consult.agents) == ("c1;consult1", ("bob",))
    b.router.offer_answered("c1;consult1", "bob", 5.0)
    b.router.leave("c1;consult1", 5.0, reason="transferred")
    b.router.call_ended("ann", 6.0)  # completed: ann is released, bob has the caller
    await b.sync("m1")
    await a.node.kill()
    await asyncio.wait_for(b.node.became_leader.wait(), WAIT)
    leader = b.node.leader
    assert leader is not None
    board = leader.router.agents
    assert board["bob"].state is AgentState.ON_CALL and board["bob"].call_id == "c1;consult1"
    assert board["ann"].state is not AgentState.ON_CALL
    b.router.enqueue("c2", "quick", 7.0)
    b.router.call_ended("bob", 8.0)  # the caller hangs up: bob is free for the next one
    nxt = await b.next()
    assert isinstance(nxt, Offer) and nxt.call_id == "c2"


class CancelToTimeout(Redis):
    """redis-py as it can behave: the cancellation of a blocking read surfaces as TimeoutError."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading = asyncio.Event()

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        self.reading.set()
        try:
            return await super().xread(*args, **kwargs)
        except asyncio.CancelledError:
            raise TimeoutError("Timeout reading from socket") from None


async def test_stop_returns_while_a_blocking_read_turns_its_cancellation_into_a_timeout(
    redis_url: str, redis: Redis
) -> None:
    client = CancelToTimeout.from_url(redis_url)
    assert isinstance(client, CancelToTimeout)
    node = ClusterNode(client, "a", QUEUES, ttl_s=1.0, retry_s=0.1)
    router = ForwardingRouter(QUEUES, node)
    await node.start()
    router.start()
    try:
        await asyncio.wait_for(node.became_leader.wait(), WAIT)
        await asyncio.wait_for(client.reading.wait(), WAIT)  # notices and commands are being read
        await asyncio.wait_for(router.stop(), WAIT)
        await asyncio.wait_for(node.stop(), WAIT)  # returns: no loop took the cancellation for a hiccup
        assert await redis.get("cc:leader") is None  # and the lock was handed back
    finally:
        await client.aclose()


async def test_a_node_gone_for_long_is_no_longer_listed_and_the_leader_forgets_it(
    redis_url: str, redis: Redis
) -> None:
    client = Redis.from_url(redis_url)
    node = ClusterNode(client, "a", QUEUES, ttl_s=1.0, retry_s=0.1)
    await node.start()
    try:
        await asyncio.wait_for(node.became_leader.wait(), WAIT)
        now = node.wall()
        await redis.hset("cc:nodes", "old", json.dumps({"at": now - 60.0, "calls": 0, "ttl": 1.0}))
        await redis.hset("cc:nodes", "recent", json.dumps({"at": now - 3.0, "calls": 0, "ttl": 1.0}))
        status = await read_status(redis, "a", now_wall=now)
        assert [(n.node, n.alive) for n in status.nodes] == [("a", True), ("recent", False)]
        await node._prune_nodes(now)
        assert sorted(await redis.hkeys("cc:nodes")) == [b"a", b"recent"]
    finally:
        await node.stop()
        await client.aclose()
