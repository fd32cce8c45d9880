"""Callbacks in the pure router: the place in line and the priority are kept, callbacks never overflow,
the agent is called first, retries rest the entry without losing its place, and the day boundary."""

from __future__ import annotations

from typing import Any

from callcenter.core.clock import FakeClock
from callcenter.routing.agents import AgentEvent, AgentState
from callcenter.routing.queues import QueueConfig
from callcenter.routing.router import Offer, Overflow, Router

S, E = AgentState, AgentEvent


def make(*agents: str, **queue: Any) -> Router:
    queue.setdefault("join_when_empty", True)
    r = Router({"sales": QueueConfig("sales", **queue)})
    for name in agents:
        r.agents.define(name, {})
    return r


def login(r: Router, name: str, now: float) -> None:
    r.agent_event(name, E.LOGIN, now)


def test_a_callback_keeps_its_place_in_line_and_is_offered_as_a_callback() -> None:
    clock = FakeClock()
    r = make("ann")
    for call, at in (("a", 0.0), ("b", 1.0), ("c", 2.0)):
        clock.advance(at - clock.now())
        r.enqueue(call, "sales", clock.now())
    r.to_callback("b", 3.0)  # b leaves a number and hangs up
    assert [r.position(c) for c in "abc"] == [1, 2, 3]
    login(r, "ann", 10.0)
    assert r.dispatch(10.0) == [Offer("a", "sales", ("ann",), 15.0)]
    r.offer_answered("a", "ann", 11.0)
    r.call_ended("ann", 20.0)
    # b's turn comes before c, who arrived later: the agent is offered a callback
    assert r.dispatch(20.0) == [Offer("b", "sales", ("ann",), 15.0, callback=True)]
    assert r.stats["sales"].callbacks == 1


def test_a_callback_keeps_its_priority() -> None:
    r = make("ann")
    r.enqueue("early", "sales", 0.0, priority=0)
    r.enqueue("vip", "sales", 5.0, priority=5)
    r.to_callback("vip", 6.0)
    login(r, "ann", 10.0)
    assert r.dispatch(10.0)[0].call_id == "vip"


def test_a_callback_never_overflows_for_waiting_too_long() -> None:
    r = make("ann", max_wait_s=30.0, overflow="voicemail")
    r.enqueue("a", "sales", 0.0)
    r.enqueue("b", "sales", 1.0)
    r.to_callback("b", 2.0)
    overflows = r.handle_timer(100.0)
    assert [o.call_id for o in overflows] == ["a"]
    assert r.position("b") == 1


def test_the_agent_is_called_first_then_the_customer_answers() -> None:
    r = make("ann")
    r.enqueue("b", "sales", 0.0)
    r.to_callback("b", 1.0)
    login(r, "ann", 10.0)
    (offer,) = r.dispatch(10.0)
    assert offer.callback
    r.callback_connecting("b", "ann", 12.0)
    # the agent is on the call (hears who is called back) while the entry still holds its place
    assert r.agents["ann"].state is S.ON_CALL and r.position("b") == 1
    r.call_ended("ann", 13.0)  # a stray hang-up report while the customer rings changes nothing
    assert r.agents["ann"].state is S.ON_CALL
    r.callback_answered("b", 20.0)
    assert r.position("b") is None
    r.call_ended("ann", 80.0)
    st = r.stats["sales"]
    assert (st.answered, st.total_wait_s, st.total_talk_s) == (1, 20.0, 60.0)
    assert r.agents["ann"].state is S.AVAILABLE


def test_no_answer_rests_the_callback_then_retries_it_in_the_same_place() -> None:
    clock = FakeClock()
    r = make("ann")
    r.enqueue("b", "sales", clock.now())
    r.to_callback("b", clock.now())
    login(r, "ann", clock.advance(10.0))
    r.dispatch(clock.now())
    r.callback_connecting("b", "ann", clock.advance(2.0))
    r.callback_failed("b", clock.advance(30.0), retry_at=clock.now() + 300.0)
    assert r.agents["ann"].state is S.AVAILABLE  # no wrap-up after a failed try
    assert r.stats["sales"].calls_ended == 0  # not a handled call
    r.enqueue("c", "sales", clock.advance(1.0))  # a later caller is served meanwhile
    assert [o.call_id for o in r.dispatch(clock.now())] == ["c"]
    r.offer_answered("c", "ann", clock.advance(1.0))
    r.call_ended("ann", clock.advance(60.0))
    r.enqueue("d", "sales", clock.advance(1.0))
    assert r.position("b") == 1 and r.position("d") == 2
    assert r.get_timer() == 1000.0 + 10.0 + 2.0 + 30.0 + 300.0
    clock.advance(r.get_timer() - clock.now())  # type: ignore[operator]
    r.handle_timer(clock.now())
    assert [o.call_id for o in r.dispatch(clock.now())] == ["b"]  # back first, ahead of d


def test_after_the_last_try_the_callback_is_given_up() -> None:
    r = make("ann")
    r.enqueue("b", "sales", 0.0)
    r.to_callback("b", 0.0)
    login(r, "ann", 1.0)
    r.dispatch(1.0)
    r.callback_connecting("b", "ann", 2.0)
    r.callback_failed("b", 30.0, retry_at=None)
    assert r.position("b") is None and "b" not in r.waiting
    assert r.stats["sales"].callbacks_failed == 1
    assert r.agents["ann"].state is S.AVAILABLE and r.dispatch(31.0) == []


def test_the_agent_missing_a_callback_offer_leaves_it_in_line() -> None:
    r = make("ann", "bob")
    r.enqueue("b", "sales", 0.0)
    r.to_callback("b", 0.0)
    login(r, "ann", 1.0)
    (offer,) = r.dispatch(1.0)
    r.offer_failed("b", "ann", 16.0, missed=True)
    assert r.position("b") == 1
    login(r, "bob", 17.0)
    assert r.dispatch(17.0) == [Offer("b", "sales", ("bob",), 15.0, callback=True)]


def test_a_restored_callback_takes_its_old_place_before_later_callers() -> None:
    r = make("ann")
    r.enqueue("later", "sales", 100.0)
    r.enqueue("old", "sales", 100.0, since=40.0, callback=True)  # restored after a restart
    assert r.position("old") == 1 and r.is_callback("old")
    login(r, "ann", 101.0)
    assert r.dispatch(101.0)[0] == Offer("old", "sales", ("ann",), 15.0, callback=True)


def test_a_full_or_empty_queue_still_takes_a_callback() -> None:
    r = Router({"sales": QueueConfig("sales", max_length=1)})  # nobody logged in, join_when_empty off
    assert isinstance(r.enqueue("x", "sales", 0.0), Overflow)  # an ordinary caller is turned away
    assert r.enqueue("cb", "sales", 0.0, callback=True) == 1


def test_a_held_caller_is_not_offered_until_resumed() -> None:
    r = make("ann")
    r.enqueue("a", "sales", 0.0)
    login(r, "ann", 1.0)
    (offer,) = r.dispatch(1.0)
    r.hold("a", 2.0)  # the offer ends: the agent is free again, not counted as missed
    assert r.agents["ann"].state is S.AVAILABLE and r.agents["ann"].missed_in_row == 0
    assert r.dispatch(3.0) == [] and r.position("a") == 1
    r.resume("a", 4.0)
    assert [o.call_id for o in r.dispatch(4.0)] == ["a"]


def test_router_driven_agent_transitions_are_reported() -> None:
    r = make("ann", wrap_up_s=5.0)
    r.agents.transitions = []
    login(r, "ann", 0.0)
    r.enqueue("a", "sales", 1.0)
    r.dispatch(1.0)
    r.offer_answered("a", "ann", 2.0)
    r.call_ended("ann", 10.0)
    r.handle_timer(15.0)
    seen = [(t.before, t.after, t.call_id) for t in r.agents.transitions]
    assert seen == [
        (S.OFFLINE, S.AVAILABLE, None),
        (S.AVAILABLE, S.RESERVED, "a"),
        (S.RESERVED, S.ON_CALL, "a"),
        (S.ON_CALL, S.WRAP_UP, "a"),
        (S.WRAP_UP, S.AVAILABLE, "a"),
    ]


def test_least_talk_time_counts_today_only() -> None:
    r = make("ann", "bob", strategy="least_talk_time")
    login(r, "ann", 0.0)
    login(r, "bob", 0.0)
    r.enqueue("a", "sales", 1.0)
    (offer,) = r.dispatch(1.0)
    assert offer.agents == ("ann",)
    r.offer_answered("a", "ann", 1.0)
    r.call_ended("ann", 601.0)
    r.enqueue("b", "sales", 602.0)
    assert r.dispatch(602.0)[0].agents == ("bob",)  # ann talked 10 minutes today
    r.offer_answered("b", "bob", 602.0)
    r.call_ended("bob", 662.0)
    r.day_ends_at = 1000.0
    assert r.get_timer() == 1000.0
    r.handle_timer(1000.0)  # midnight: today's talk starts again
    assert r.agents["ann"].talk_s_today == 0.0 and r.agents["ann"].talk_s_total == 600.0
    assert r.day_ends_at is None
    r.enqueue("c", "sales", 1001.0)
    assert r.dispatch(1001.0)[0].agents == ("ann",)  # tie on today's talk: longest idle
