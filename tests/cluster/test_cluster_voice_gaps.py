"""Cluster voice gaps (issue 10): the leader's day boundary (per-day talk times), a callback whose
request is gone leaving the line, registration expiry on Redis's clock, and estimated waits that go on
after a failover — on the sans-I/O LeaderState with a hand-stepped clock, then on a real Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from zoneinfo import ZoneInfo

import leader_model
import pytest
from leader_model import agent_up, cmd, offers, run
from redis.asyncio import Redis
from sqlalchemy import create_engine

from callcenter.calls.callback import DONE, PENDING, CallbackBook, CallbackRequest, CallbackRunner
from callcenter.cluster.bindings import SharedBindings
from callcenter.cluster.forwarding import ForwardingRouter
from callcenter.cluster.leader import LeaderState, Output, local_day
from callcenter.cluster.messages import Command
from callcenter.cluster.node import ClusterNode
from callcenter.routing.agents import AgentEvent, AgentState
from callcenter.routing.queues import QueueConfig
from callcenter.routing.router import Offer, Overflow
from callcenter.sip.registrar import Binding
from callcenter.store.db import utcnow

BERLIN = "Europe/Berlin"
# 23:50:00 in Berlin (CET): the next local midnight is 600 s later.
WALL0 = datetime(2024, 3, 5, 23, 50, tzinfo=ZoneInfo(BERLIN)).timestamp()
WAIT = 10.0  # bound on every wait (never asserted on)
QUEUES = {
    "sales": QueueConfig("sales", skills={"sales": 1}, strategy="least_talk_time", ring_timeout_s=10.0),
    "quick": QueueConfig("quick", skills={"sales": 1}, ring_timeout_s=10.0),
}


class Mirror(leader_model.Mirror):
    queues, wall0, timezone = QUEUES, WALL0, BERLIN


def call(s: LeaderState, m: Mirror, call_id: str, queue: str, start: float, end: float) -> str:
    """A caller answered at ``start`` by whoever the leader offers it to, hung up at ``end``."""
    out = run(s, m, start, cmd("enqueue", "a", call_id=call_id, queue=queue))
    ((_, (agent,)),) = offers(out)
    run(s, m, start, cmd("answered", "a", call_id=call_id, agent=agent))
    run(s, m, end, cmd("ended", "a", agent=agent))
    return agent


# -- 1. the day ends at local midnight on the leader too ---------------------------------------------------


def test_local_day_follows_the_zone_and_its_dst_change() -> None:
    assert local_day(WALL0, ZoneInfo(BERLIN)) == ("2024-03-05", WALL0 + 600)
    # 30 March 2024 -> 31 March: Berlin springs forward at 02:00, so that day is 23 hours long
    start = datetime(2024, 3, 31, 0, 0, tzinfo=ZoneInfo(BERLIN)).timestamp()
    day, midnight = local_day(start, ZoneInfo(BERLIN))
    assert day == "2024-03-31" and midnight - start == 23 * 3600


def test_the_leader_starts_per_day_talk_times_again_at_local_midnight() -> None:
    s, m = LeaderState(QUEUES, token=1, timezone=BERLIN), Mirror()
    agent_up(s, m, "ann")
    agent_up(s, m, "bob")
    assert s.get_timer() == pytest.approx(600.0)  # the leader's loop wakes at midnight
    assert call(s, m, "c1", "sales", 1.0, 301.0) == "ann"  # ann: 300 s today
    assert call(s, m, "c2", "sales", 360.0, 420.0) == "bob"  # least talk time today: bob (60 s)
    assert m.get("agents")["ann"]["day"] == "2024-03-05"
    run(s, m, 599.0)
    assert s.router.agents["ann"].talk_s_today == 300.0
    run(s, m, 600.0)  # local midnight
    ann, bob = s.router.agents["ann"], s.router.agents["bob"]
    assert (ann.talk_s_today, bob.talk_s_today) == (0.0, 0.0)
    assert (ann.talk_s_total, bob.talk_s_total) == (300.0, 60.0)  # only the day's counts start again
    assert {r["day"] for r in m.get("agents").values()} == {"2024-03-06"}
    assert m.get("agents")["ann"]["talk_s_today"] == 0.0
    # a new day: both at 0, so the longest idle (ann) is next, not bob with yesterday's 60 s
    assert call(s, m, "c3", "sales", 610.0, 620.0) == "ann"
    assert s.get_timer() == pytest.approx(600.0 + 86400.0)  # and the next midnight is armed


def test_a_successor_keeps_the_days_counts_and_rolls_the_day_at_the_same_midnight() -> None:
    s, m = LeaderState(QUEUES, token=1, timezone=BERLIN), Mirror()
    agent_up(s, m, "ann")
    agent_up(s, m, "bob")
    call(s, m, "c1", "sales", 1.0, 301.0)
    call(s, m, "c2", "sales", 360.0, 420.0)
    t = m.successor(500.0, {"a", "b"})  # the leader died before midnight
    run(t, m, 500.0)
    assert t.router.agents["ann"].talk_s_today == 300.0  # still the same day
    assert call(t, m, "c3", "sales", 510.0, 520.0) == "bob"  # bob 60 s < ann 300 s
    run(t, m, 600.0)
    assert t.router.agents["ann"].talk_s_today == 0.0 and t.router.agents["bob"].talk_s_today == 0.0
    assert t.day == "2024-03-06"


def test_a_successor_that_comes_up_after_a_midnight_nobody_rolled_starts_a_new_day() -> None:
    s, m = LeaderState(QUEUES, token=1, timezone=BERLIN), Mirror()
    agent_up(s, m, "ann")
    agent_up(s, m, "bob")
    call(s, m, "c1", "sales", 1.0, 301.0)
    call(s, m, "c2", "sales", 360.0, 420.0)
    t = m.successor(700.0, {"a", "b"})  # the leader died at 23:58, the successor took over at 00:01:40
    run(t, m, 700.0)
    assert (t.router.agents["ann"].talk_s_today, t.router.agents["bob"].talk_s_today) == (0.0, 0.0)
    assert t.router.agents["ann"].talk_s_total == 300.0
    assert m.get("agents")["bob"]["day"] == "2024-03-06"
    assert call(t, m, "c3", "sales", 710.0, 720.0) == "ann"


# -- 2. a callback whose request is gone leaves the line ----------------------------------------------------


class NodeToLeader:
    """What a ForwardingRouter sends, turned into the leader's commands (node ``b``), without Redis."""

    def __init__(self) -> None:
        self.sent: list[Command] = []
        self.on_notice: Any = None

    def send(self, op: str, *, call_id: str | None = None, agent: str | None = None, **args: Any) -> None:
        self.sent.append(Command(op, "b", call_id, agent, WALL0, args))  # type: ignore[arg-type]

    def wall(self) -> float:
        return WALL0

    def take(self) -> list[Command]:
        out, self.sent = self.sent, []
        return out


class Side:
    """Node b: its ForwardingRouter and CallbackRunner (the Acd reduced to what an offer's start uses),
    fed by a leader whose node ``a`` died with a callback that moves to b."""

    def __init__(self, engine: Any) -> None:
        self.node = NodeToLeader()
        self.router = ForwardingRouter(QUEUES, cast(Any, self.node))
        self.offers: list[Offer] = []
        self.router.deliver = self._deliver
        self.acd = SimpleNamespace(router=self.router, clock=lambda: 0.0, _kick=lambda: None)
        self.runner = CallbackRunner(cast(Any, self.acd))
        self.runner.book = CallbackBook(engine) if engine is not None else None
        self.leader = LeaderState(QUEUES, token=1, home="b")
        self.mirror = Mirror()

    def _deliver(self, call_id: str, item: Offer | Overflow) -> bool:
        if isinstance(item, Offer):
            self.offers.append(item)
        return True

    def step(self, now: float, *cmds: Command) -> Output:
        out = run(self.leader, self.mirror, now, *cmds)
        for node, notice in out.notices:
            if node == "b":
                self.router.on_notice(notice)
        return out

    def callback_adopted(self) -> Offer:
        """Caller c1 waited on node a and left a number; a died; bob is free: b is offered it."""
        agent_up(self.leader, self.mirror, "bob")
        run(self.leader, self.mirror, 0.0, cmd("presence", "b", agent="bob", event="set_not_ready"))
        run(self.leader, self.mirror, 1.0, cmd("enqueue", "a", call_id="c1", queue="quick"))
        run(self.leader, self.mirror, 2.0, cmd("to_callback", "a", call_id="c1"))
        self.leader.node_gone("a", 3.0)
        self.step(4.0, cmd("presence", "b", agent="bob", event="set_available"))
        (offer,) = self.offers
        assert (offer.call_id, offer.agents, offer.callback) == ("c1", ("bob",), True)
        return offer


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    return create_engine(f"sqlite:///{tmp_path / 'callbacks.db'}")


def _row(status: str) -> CallbackRequest:
    return CallbackRequest(call_id="c1", queue="quick", number="5551234", enqueued_at=utcnow(), status=status)


@pytest.mark.parametrize("request_row", [None, DONE], ids=["row_deleted", "row_done"])
async def test_a_callback_whose_request_is_gone_leaves_the_line_once(
    engine: Any, request_row: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    b = Side(engine)
    if request_row is not None:
        assert b.runner.book is not None
        b.runner.book.add(_row(request_row))
    offer = b.callback_adopted()
    caplog.set_level(logging.INFO, logger="callcenter.callback")
    await b.runner.run(offer)
    sent = b.node.take()
    assert [(c.op, c.call_id, c.args.get("reason")) for c in sent] == [("leave", "c1", "callback_failed")]
    out = b.step(5.0, *sent)
    assert "c1" not in b.leader.router.waiting and offers(out) == []
    assert b.leader.router.agents["bob"].state is AgentState.AVAILABLE
    assert b.leader.router.agents["bob"].missed_in_row == 0  # not the agent's fault
    assert "c1" not in b.mirror.get("waiting")  # a successor will not offer it either
    assert offers(b.step(30.0)) == []  # and nobody is offered it again
    await b.runner.run(offer)  # a duplicate offer (made before the leave arrived): left again, quietly
    assert [c.op for c in b.node.take()] == ["leave"]
    dropped = [r for r in caplog.records if r.getMessage() == "callback_dropped"]
    assert len(dropped) == 1


async def test_a_callback_whose_database_is_away_is_offered_again_later(engine: Any) -> None:
    b = Side(engine)
    offer = b.callback_adopted()

    def broken(call_id: str) -> CallbackRequest | None:
        raise OSError("database away")

    assert b.runner.book is not None
    b.runner.book.get = broken  # type: ignore[method-assign]
    await b.runner.run(offer)
    sent = b.node.take()
    assert [(c.op, c.agent, c.args.get("missed")) for c in sent] == [("failed", "bob", False)]
    out = b.step(5.0, *sent)
    assert "c1" in b.leader.router.waiting  # keeps its place: the request may still be there
    assert offers(out) == [("c1", ("bob",))]


async def test_a_pending_request_of_a_dead_node_is_still_read_from_the_shared_book(engine: Any) -> None:
    b = Side(engine)
    assert b.runner.book is not None
    b.runner.book.add(_row(PENDING))
    b.callback_adopted()
    assert await b.runner.number("c1") == "5551234"


# -- 3. registration expiry on Redis's clock -----------------------------------------------------------------


def _binding(aor: str, port: int, lifetime_s: float, now: float) -> Binding:
    return Binding(
        aor=aor, contact=f"sip:{aor}@127.0.0.1:{port}", key=f"<sip:{aor}@127.0.0.1:{port}>",
        expires_at=now + lifetime_s, q=None, params={}, call_id=f"reg-{aor}", cseq=1,
        source=("127.0.0.1", port), transport="udp", registered_at=now,
    )  # fmt: skip


@pytest.fixture
async def skewed(redis_url: str, redis: Redis) -> AsyncIterator[dict[str, SharedBindings]]:
    """Three nodes on real clocks whose wall clocks disagree: ``fast`` is 5 minutes ahead, ``slow`` 5
    minutes behind."""
    skews = {"ok": 0.0, "fast": 300.0, "slow": -300.0}

    def skewed_wall(skew: float) -> Callable[[], float]:
        return lambda: time.time() + skew

    nodes = {
        name: SharedBindings(Redis.from_url(redis_url), name, sweep_s=3600.0, wall=skewed_wall(skew))
        for name, skew in skews.items()
    }
    for n in nodes.values():
        await n.start()
    try:
        yield nodes
    finally:
        for n in nodes.values():
            await n.kill()
            await n.redis.aclose()


async def _written(node: SharedBindings, aor: str, binding: Binding) -> None:
    node.bind(aor, binding)
    await asyncio.wait_for(node.flush(), WAIT)


async def test_a_node_whose_clock_is_ahead_neither_expires_others_early_nor_makes_its_own_last(
    skewed: dict[str, SharedBindings], redis: Redis
) -> None:
    ok, fast = skewed["ok"], skewed["fast"]
    await _written(ok, "agent1", _binding("agent1", 40000, 60.0, ok.clock()))
    await _written(fast, "agent2", _binding("agent2", 40002, 60.0, fast.clock()))
    assert await fast.sweep() == 0  # agent1's binding has ~60 s left whatever fast's clock says
    assert await redis.hlen(ok.hash_key("agent1")) == 1
    await ok.refresh("agent2")
    (seen,) = ok.remote("agent2", ok.clock())
    assert 30 < seen.remaining(ok.clock()) <= 61  # not 360: fast's clock is not the cluster's
    await fast.refresh("agent1")
    (seen,) = fast.remote("agent1", fast.clock())
    assert 30 < seen.remaining(fast.clock()) <= 61  # and fast does not see agent1 as expired


async def test_a_node_whose_clock_is_behind_neither_keeps_expired_bindings_nor_expires_its_own_early(
    skewed: dict[str, SharedBindings], redis: Redis
) -> None:
    ok, slow = skewed["ok"], skewed["slow"]
    await _written(slow, "agent2", _binding("agent2", 40002, 60.0, slow.clock()))
    assert await ok.sweep() == 0  # slow's binding is not 5 minutes old to the others
    assert await redis.hlen(ok.hash_key("agent2")) == 1
    # a binding whose lifetime is over (written already expired: Redis's clock needs no waiting for)
    await _written(ok, "agent1", _binding("agent1", 40000, -1.0, ok.clock()))
    assert await slow.sweep() == 1  # slow's clock, 5 minutes behind, does not keep it
    assert await redis.hlen(ok.hash_key("agent1")) == 0
    assert await redis.hlen(ok.hash_key("agent2")) == 1


# -- 4. estimated waits go on after a failover ---------------------------------------------------------------


def test_a_successor_estimates_waits_from_its_predecessors_recent_answers() -> None:
    s, m = LeaderState(QUEUES, token=1, timezone=BERLIN), Mirror()
    agent_up(s, m, "bob")
    call(s, m, "c1", "quick", 10.0, 12.0)
    call(s, m, "c2", "quick", 40.0, 42.0)
    run(s, m, 45.0, cmd("presence", "b", agent="bob", event="set_not_ready"))
    run(s, m, 50.0, cmd("enqueue", "a", call_id="c3", queue="quick"))
    before = s.router.estimated_wait_s("c3", 50.0)
    assert before == pytest.approx(20.0)  # 1 × (50 − 10) / 2 answers
    t = m.successor(55.0, {"a", "b"})
    run(t, m, 55.0)
    assert t.router.estimated_wait_s("c3", 55.0) == pytest.approx(22.5)  # the same answers, 5 s on
    assert t.positions(55.0)["a"]["c3"] == [1, 22.5]  # what the caller's announcement says


def test_the_mirrored_recent_answers_are_bounded() -> None:
    s, m = LeaderState(QUEUES, token=1), Mirror()
    agent_up(s, m, "bob")
    for i in range(30):
        call(s, m, f"c{i}", "quick", 10.0 * i, 10.0 * i + 1)
    rec = m.get("recent")["quick"]
    assert len(rec["answers"]) == 20 and len(rec["handles"]) == 20
    assert rec["answers"][-1] == pytest.approx(WALL0 + 290.0)  # the newest kept, as wall times


class RealSide:
    """One node on the real Redis with the router its Acd would use."""

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

    async def close(self) -> None:
        await self.router.stop()
        await self.node.stop()
        await self.redis.aclose()


async def test_after_a_failover_a_new_caller_still_hears_an_estimated_wait(
    redis_url: str, redis: Redis
) -> None:
    a, b = RealSide(redis_url, "a"), RealSide(redis_url, "b")
    await a.node.start()
    await asyncio.wait_for(a.node.became_leader.wait(), WAIT)
    await b.node.start()
    try:
        b.router.agents.define("bob", {"sales": 1}, now=0.0)
        b.router.agent_event("bob", AgentEvent.LOGIN, 0.0)
        for i in range(2):  # two answered calls: the answer rate is known
            b.router.enqueue(f"c{i}", "quick", 1.0)
            offer = await b.next()
            assert isinstance(offer, Offer) and offer.agents == ("bob",)
            b.router.offer_answered(offer.call_id, "bob", 2.0)
            b.router.call_ended("bob", 3.0)
        b.router.agent_event("bob", AgentEvent.SET_NOT_READY, 4.0)
        b.router.enqueue("m1", "quick", 4.0)  # a caller in line
        assert await b.router.wait_for_place("m1", WAIT)  # the leader applied everything before it
        await a.node.kill()
        await asyncio.wait_for(b.node.became_leader.wait(), WAIT)
        b.router.enqueue("c9", "quick", 5.0)
        assert await b.router.wait_for_place("c9", WAIT)
        assert b.router.position("c9") == 2
        assert b.router.estimated_wait_s("c9", 5.0) is not None  # not "afresh": the answers came along
    finally:
        await a.close()
        await b.close()
