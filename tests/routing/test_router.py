"""The dispatcher driven by hand: offers, answers, misses, overflows, timers and the "ends now" edges."""

from __future__ import annotations

from typing import Any

import pytest

from callcenter.routing.agents import AgentEvent, AgentState, InvalidTransition
from callcenter.routing.queues import Escalation, QueueConfig
from callcenter.routing.router import Offer, OfferGone, Overflow, Router

S, E = AgentState, AgentEvent


def make(*queues: QueueConfig, agents: dict[str, dict[str, int]] | None = None, login: bool = True,
         **kw: Any) -> Router:
    r = Router({q.name: q for q in queues}, **kw)
    for i, (name, skills) in enumerate((agents or {}).items()):
        r.agents.define(name, skills)
        if login:
            r.agent_event(name, E.LOGIN, float(i) / 100)  # alphabetical = longest idle first
    return r


def q(name: str = "sales", **kw: Any) -> QueueConfig:
    kw.setdefault("join_when_empty", True)
    return QueueConfig(name, **kw)


def state(r: Router, name: str) -> AgentState:
    return r.agents[name].state


def test_a_caller_reaches_the_agent_with_the_skill_and_the_call_goes_round() -> None:
    r = make(q(skills={"sales": 2}), agents={"alice": {"support": 5}, "bob": {"sales": 2}})
    assert r.enqueue("c1", "sales", 10.0) == 1
    assert r.dispatch(10.0) == [Offer("c1", "sales", ("bob",), 15.0)]
    assert state(r, "bob") is S.RESERVED and r.ringing("bob") == "c1"
    assert r.dispatch(10.5) == []  # never two offers for one caller
    assert r.offer_answered("c1", "bob", 14.0) == []
    assert state(r, "bob") is S.ON_CALL and r.agents["bob"].call_id == "c1"
    assert r.position("c1") is None and "c1" not in r.waiting
    r.call_ended("bob", 74.0)
    r.call_ended("bob", 75.0)  # idempotent
    assert state(r, "bob") is S.AVAILABLE and r.agents["bob"].talk_s_total == 60.0
    st = r.stats["sales"]
    assert (st.offered, st.answered, st.answered_within_sl, st.total_wait_s, st.total_talk_s) == (
        1, 1, 1, 4.0, 60.0)
    r.leave("c1", 80.0, reason="abandoned")  # the glue's `finally`: already left, nothing counted
    assert st.abandoned == 0


def test_the_caller_waits_until_a_qualified_agent_logs_in() -> None:
    r = make(q(skills={"sales": 3}), agents={"alice": {"sales": 2}, "bob": {"sales": 4}}, login=False)
    r.agent_event("alice", E.LOGIN, 0.0)
    r.enqueue("c1", "sales", 1.0)
    assert r.dispatch(1.0) == []
    r.agent_event("bob", E.LOGIN, 5.0)
    assert r.dispatch(5.0) == [Offer("c1", "sales", ("bob",), 15.0)]


def test_a_closed_queue_overflows_at_once_unless_it_accepts_joining_empty() -> None:
    closed = QueueConfig("sales", skills={"sales": 1}, overflow="voicemail")
    r = make(closed, q("open"), agents={"alice": {"sales": 1}}, login=False)
    assert r.enqueue("c1", "sales", 0.0) == Overflow("c1", "sales", "voicemail", "no_agents")
    assert r.enqueue("c2", "open", 0.0) == 1
    r.agent_event("alice", E.SET_NOT_READY, 1.0, reason="break")  # logged in, just not ready
    assert r.enqueue("c3", "sales", 2.0) == 1
    assert (r.stats["sales"].offered, r.stats["sales"].overflowed) == (2, 1)


def test_priority_first_then_fifo() -> None:
    r = make(q(), agents={"alice": {}}, login=False)
    r.enqueue("early", "sales", 1.0)
    r.enqueue("vip", "sales", 2.0, priority=5)
    r.enqueue("late", "sales", 3.0)
    r.enqueue("vip2", "sales", 4.0, priority=5)
    assert [r.position(c) for c in ("vip", "vip2", "early", "late")] == [1, 2, 3, 4]
    served = []
    r.agent_event("alice", E.LOGIN, 5.0)
    for t in range(4):
        (offer,) = r.dispatch(10.0 + t)
        served.append(offer.call_id)
        r.offer_answered(offer.call_id, "alice", 10.0 + t)
        r.call_ended("alice", 10.5 + t)
    assert served == ["vip", "vip2", "early", "late"]


def test_an_agent_of_two_queues_takes_the_caller_first_in_line_across_them() -> None:
    r = make(q("sales", skills={"sales": 1}), q("support", skills={"support": 1}),
             agents={"alice": {"sales": 1, "support": 1}}, login=False)
    r.enqueue("s1", "sales", 3.0)
    r.enqueue("t1", "support", 1.0)
    r.enqueue("t2", "support", 2.0)
    r.enqueue("s2", "sales", 4.0, priority=1)
    r.agent_event("alice", E.LOGIN, 5.0)
    order = []
    for t in range(4):
        (offer,) = r.dispatch(10.0 + t)
        order.append(offer.call_id)
        r.offer_answered(offer.call_id, "alice", 10.0 + t)
        r.call_ended("alice", 10.5 + t)
    assert order == ["s2", "t1", "t2", "s1"]


def test_a_new_caller_gets_the_longest_idle_agent() -> None:
    r = make(q(), agents={"a": {}, "b": {}, "c": {}})
    for name, t in (("a", 30.0), ("b", 10.0), ("c", 20.0)):
        r.agent_event(name, E.SET_NOT_READY, t)
        r.agent_event(name, E.SET_AVAILABLE, t)
    r.enqueue("c1", "sales", 40.0)
    assert r.dispatch(40.0)[0].agents == ("b",)


def test_round_robin_across_dispatches() -> None:
    r = make(q(strategy="round_robin"), agents={"a": {}, "b": {}, "c": {}})
    picks: list[str] = []
    for i in range(4):
        r.enqueue(f"c{i}", "sales", float(i))
        (offer,) = r.dispatch(float(i))
        picks.extend(offer.agents)
        r.offer_answered(offer.call_id, offer.agents[0], float(i))
        r.call_ended(offer.agents[0], float(i))
    assert picks == ["a", "b", "c", "a"]


def test_least_talk_time_through_the_router() -> None:
    r = make(q(strategy="least_talk_time"), agents={"a": {}, "b": {}})
    r.enqueue("c1", "sales", 0.0)
    (offer,) = r.dispatch(0.0)
    assert offer.agents == ("a",)
    r.offer_answered("c1", "a", 1.0)
    r.call_ended("a", 100.0)
    r.enqueue("c2", "sales", 101.0)
    assert r.dispatch(101.0)[0].agents == ("b",)


def test_ring_all_answer_releases_the_others_without_a_miss() -> None:
    r = make(q(strategy="ring_all"), agents={"a": {}, "b": {}, "c": {}})
    r.agent_event("c", E.SET_NOT_READY, 0.5)
    r.enqueue("c1", "sales", 1.0)
    (offer,) = r.dispatch(1.0)
    assert offer.agents == ("a", "b")
    assert r.offer_answered("c1", "b", 3.0) == ["a"]
    assert (state(r, "a"), state(r, "b")) == (S.AVAILABLE, S.ON_CALL)
    assert r.agents["a"].missed_in_row == 0
    r.offer_failed("c1", "a", 3.1, missed=True)  # late report of the cancelled leg: ignored
    assert r.agents["a"].missed_in_row == 0 and state(r, "a") is S.AVAILABLE


def test_ring_all_waits_for_every_leg_to_fail() -> None:
    r = make(q(strategy="ring_all"), agents={"a": {}, "b": {}})
    r.enqueue("c1", "sales", 1.0)
    r.dispatch(1.0)
    r.offer_failed("c1", "a", 5.0, missed=True)
    assert "c1" in r.offers and r.offers["c1"].agents == ("b",)
    assert r.dispatch(5.0) == []  # still ringing b
    r.offer_failed("c1", "b", 16.0, missed=True)
    # Both missed it; nobody else: it rings them again rather than letting the caller wait forever.
    assert r.dispatch(16.0) == [Offer("c1", "sales", ("a", "b"), 15.0)]


def test_no_answer_moves_to_the_next_agent_and_not_back_while_others_qualify() -> None:
    r = make(q(), agents={"a": {}, "b": {}})
    r.enqueue("c1", "sales", 1.0)
    assert r.dispatch(1.0)[0].agents == ("a",)
    r.offer_failed("c1", "a", 16.0, missed=True)  # ring timeout
    assert r.position("c1") == 1 and state(r, "a") is S.AVAILABLE
    assert r.dispatch(16.0)[0].agents == ("b",)  # a is the longest idle but already missed this caller
    r.offer_failed("c1", "b", 17.0, missed=True)  # 486 / 603: rejected
    assert r.dispatch(17.0)[0].agents == ("a",)  # everyone missed it: round again
    assert r.waiting["c1"].offered_to == {"a", "b"}


def test_missing_offers_in_a_row_sends_the_agent_to_not_ready() -> None:
    r = make(q(), agents={"a": {}}, max_missed=2)
    r.enqueue("c0", "sales", 0.0)
    r.enqueue("c1", "sales", 0.0)
    for t in (0.0, 15.0):
        (offer,) = r.dispatch(t)
        assert offer.call_id == "c0"  # alone: c0 is offered to the only agent again
        r.offer_failed("c0", "a", t + 15, missed=True)
    a = r.agents["a"]
    assert (a.state, a.reason) == (S.NOT_READY, "missed offers")
    assert r.dispatch(20.0) == []
    r.agent_event("a", E.SET_AVAILABLE, 30.0)
    assert [o.call_id for o in r.dispatch(30.0)] == ["c0"]


def test_caller_hangs_up_while_the_agent_rings() -> None:
    r = make(q(), agents={"a": {}})
    r.enqueue("c1", "sales", 1.0)
    r.dispatch(1.0)
    r.leave("c1", 4.0, reason="abandoned")
    assert state(r, "a") is S.AVAILABLE and r.agents["a"].missed_in_row == 0
    assert r.offers == {} and r.waiting == {}
    r.offer_failed("c1", "a", 4.1, missed=False)  # the glue's report after the CANCEL: ignored
    with pytest.raises(OfferGone):
        r.offer_answered("c1", "a", 4.2)  # 200 OK crossing the CANCEL: the glue hangs the leg up
    assert state(r, "a") is S.AVAILABLE
    st = r.stats["sales"]
    assert (st.abandoned, st.total_abandoned_wait_s, st.answered) == (1, 3.0, 0)


def test_agent_unregisters_while_ringing() -> None:
    r = make(q(), agents={"a": {}, "b": {}})
    r.enqueue("c1", "sales", 1.0)
    assert r.dispatch(1.0)[0].agents == ("a",)
    r.agent_event("a", E.LOGOUT, 2.0)
    assert state(r, "a") is S.RESERVED  # still one offer, one truth, until the leg is reported
    r.offer_failed("c1", "a", 2.1, missed=True)
    assert state(r, "a") is S.OFFLINE and r.agents["a"].call_id is None
    assert r.dispatch(2.1)[0].agents == ("b",)


def test_agent_answers_after_a_logout_request_then_goes_offline_after_the_call() -> None:
    r = make(q(), agents={"a": {}})
    r.enqueue("c1", "sales", 1.0)
    r.dispatch(1.0)
    r.agent_event("a", E.SET_OFFLINE, 2.0)
    r.offer_answered("c1", "a", 3.0)
    assert state(r, "a") is S.ON_CALL
    r.call_ended("a", 30.0)
    assert state(r, "a") is S.OFFLINE


def test_logout_during_a_call() -> None:
    r = make(q(wrap_up_s=10.0), agents={"a": {}})
    r.enqueue("c1", "sales", 1.0)
    r.dispatch(1.0)
    r.offer_answered("c1", "a", 2.0)
    r.agent_event("a", E.LOGOUT, 5.0)
    assert state(r, "a") is S.ON_CALL
    r.call_ended("a", 9.0)
    assert state(r, "a") is S.OFFLINE and r.get_timer() is None


def test_wrap_up_then_the_next_caller() -> None:
    r = make(q(wrap_up_s=20.0), agents={"a": {}})
    r.enqueue("c1", "sales", 0.0)
    r.enqueue("c2", "sales", 1.0)
    r.dispatch(1.0)
    r.offer_answered("c1", "a", 2.0)
    r.call_ended("a", 50.0)
    assert state(r, "a") is S.WRAP_UP and r.dispatch(50.0) == []
    assert r.get_timer() == 70.0
    assert r.handle_timer(70.0) == []
    assert state(r, "a") is S.AVAILABLE
    assert r.dispatch(70.0) == [Offer("c2", "sales", ("a",), 15.0)]


def test_max_length_turns_callers_away() -> None:
    r = make(q(max_length=2, overflow="queue:other"), q("other"))
    assert r.enqueue("c1", "sales", 0.0) == 1
    assert r.enqueue("c2", "sales", 0.0) == 2
    assert r.enqueue("c3", "sales", 0.0) == Overflow("c3", "sales", "queue:other", "full")
    assert "c3" not in r.waiting
    r.leave("c1", 1.0, reason="abandoned")
    assert r.enqueue("c3", "sales", 1.0) == 2


def test_max_wait_overflows_on_the_timer() -> None:
    r = make(q(max_wait_s=60.0, overflow="callback"), agents={"a": {"other": 1}})
    r.enqueue("c1", "sales", 10.0)
    r.enqueue("c2", "sales", 20.0, max_wait_s=5.0)  # the flow's own limit
    assert r.get_timer() == 25.0
    assert r.handle_timer(24.9) == []
    assert r.handle_timer(25.0) == [Overflow("c2", "sales", "callback", "max_wait")]
    assert r.get_timer() == 70.0
    assert r.handle_timer(71.0) == [Overflow("c1", "sales", "callback", "max_wait")]
    assert r.get_timer() is None and r.waiting == {}
    assert r.stats["sales"].overflowed == 2


def test_max_wait_while_ringing_waits_for_the_offer() -> None:
    r = make(q(max_wait_s=20.0), agents={"a": {}})
    r.agent_event("a", E.SET_NOT_READY, 0.0)
    r.enqueue("c1", "sales", 0.0)
    r.agent_event("a", E.SET_AVAILABLE, 10.0)
    r.dispatch(10.0)
    assert r.handle_timer(20.0) == []  # ringing: not pulled away from a ringing agent
    r.offer_failed("c1", "a", 25.0, missed=True)
    assert r.dispatch(25.0) == []  # past its max wait: no new offer
    assert r.get_timer() == 25.0
    assert r.handle_timer(25.0) == [Overflow("c1", "sales", None, "max_wait")]


def test_max_wait_while_ringing_and_then_answered_is_answered() -> None:
    r = make(q(max_wait_s=20.0), agents={"a": {}})
    r.agent_event("a", E.SET_NOT_READY, 0.0)
    r.enqueue("c1", "sales", 0.0)
    r.agent_event("a", E.SET_AVAILABLE, 15.0)
    r.dispatch(15.0)
    assert r.handle_timer(20.0) == []
    r.offer_answered("c1", "a", 22.0)
    assert r.handle_timer(100.0) == [] and r.stats["sales"].answered == 1
    assert r.stats["sales"].answered_within_sl == 0  # waited 22 s, threshold 20 s


def test_escalation_widens_the_skills_after_a_while() -> None:
    r = make(q(skills={"sales": 4}, escalations=(Escalation(30.0, {"sales": 2}),)),
             agents={"junior": {"sales": 2}})
    r.enqueue("c1", "sales", 100.0)
    assert r.dispatch(100.0) == []
    assert r.get_timer() == 130.0
    assert r.dispatch(129.0) == []
    assert r.handle_timer(130.0) == []
    assert r.dispatch(130.0) == [Offer("c1", "sales", ("junior",), 15.0)]


def test_escalation_is_applied_by_dispatch_too() -> None:
    r = make(q(skills={"sales": 4}, escalations=(Escalation(30.0, {}),)), agents={"x": {}})
    r.enqueue("c1", "sales", 0.0)
    assert r.dispatch(31.0)[0].agents == ("x",)


def test_escalation_while_ringing_applies_when_the_offer_fails() -> None:
    r = make(q(skills={"sales": 4}, escalations=(Escalation(30.0, {}),)),
             agents={"senior": {"sales": 4}, "x": {}})
    r.enqueue("c1", "sales", 0.0)
    assert r.dispatch(0.0)[0].agents == ("senior",)
    r.handle_timer(30.0)
    r.offer_failed("c1", "senior", 31.0, missed=True)
    assert r.dispatch(31.0)[0].agents == ("x",)


def test_a_lost_offer_report_does_not_leave_the_agent_reserved() -> None:
    r = make(q(ring_timeout_s=15.0), agents={"a": {}})
    r.enqueue("c1", "sales", 0.0)
    r.dispatch(0.0)
    assert r.get_timer() == 15.0 + r.offer_grace_s
    r.handle_timer(15.0 + r.offer_grace_s)
    assert state(r, "a") is S.AVAILABLE and r.agents["a"].missed_in_row == 1
    assert r.waiting["c1"].offered_to == {"a"} and r.offers == {}
    with pytest.raises(OfferGone):
        r.offer_answered("c1", "a", 50.0)


def test_agent_redefined_with_a_new_skill_is_offered_the_waiting_caller() -> None:
    r = make(q(skills={"french": 1}), agents={"a": {"sales": 1}})
    r.enqueue("c1", "sales", 0.0)
    assert r.dispatch(0.0) == []
    r.agents.define("a", {"sales": 1, "french": 2})
    assert r.dispatch(1.0)[0].agents == ("a",)


def test_languages() -> None:
    r = make(q(), agents={})
    r.agents.define("en", {}, ["en"])
    r.agents.define("zh", {}, ["zh"])
    r.agent_event("en", E.LOGIN, 0.0)
    r.agent_event("zh", E.LOGIN, 1.0)
    r.enqueue("c1", "sales", 2.0, language="zh-CN")
    assert r.dispatch(2.0)[0].agents == ("zh",)


def test_agent_event_shorthands_and_refusals() -> None:
    r = make(q(strategy="ring_all"), agents={"a": {}, "b": {}})
    with pytest.raises(InvalidTransition):
        r.agent_event("a", E.OFFER, 0.0)
    with pytest.raises(InvalidTransition):
        r.agent_event("a", E.ANSWER, 0.0)
    with pytest.raises(KeyError):
        r.agent_event("nobody", E.LOGIN, 0.0)
    r.enqueue("c1", "sales", 0.0)
    r.dispatch(0.0)
    r.agent_event("a", E.OFFER_FAILED, 1.0, missed=True)
    assert r.waiting["c1"].offered_to == {"a"}
    r.agent_event("b", E.ANSWER, 2.0)
    assert state(r, "b") is S.ON_CALL
    r.agent_event("b", E.HANGUP, 3.0)
    assert state(r, "b") is S.AVAILABLE


def test_enqueue_errors() -> None:
    r = make(q())
    with pytest.raises(KeyError):
        r.enqueue("c1", "nope", 0.0)
    r.enqueue("c1", "sales", 0.0)
    with pytest.raises(ValueError, match="already queued"):
        r.enqueue("c1", "sales", 0.0)
    r.leave("c1", 1.0, reason="transferred")
    assert r.enqueue("c1", "sales", 2.0) == 1  # a transfer back into a queue
    assert r.stats["sales"].transferred == 1


def test_estimated_wait_from_the_answer_rate_or_handle_times() -> None:
    r = make(q(wrap_up_s=0.0), agents={"a": {}, "b": {}})
    r.enqueue("first", "sales", 0.0)
    r.dispatch(0.0)
    assert r.estimated_wait_s("first", 0.0) is None  # nothing known yet
    r.offer_answered("first", "a", 1.0)
    r.call_ended("a", 121.0)  # one call handled in 120 s
    r.agent_event("a", E.SET_NOT_READY, 121.0)
    r.agent_event("b", E.SET_NOT_READY, 121.0)
    r.enqueue("x", "sales", 130.0)
    r.enqueue("y", "sales", 131.0)
    # No answer rate yet (one answer): position × 120 s / 2 logged-in agents.
    assert r.estimated_wait_s("y", 131.0) == pytest.approx(2 * 120.0 / 2)
    r.agent_event("b", E.SET_AVAILABLE, 140.0)
    r.dispatch(140.0)
    r.offer_answered("x", "b", 141.0)
    # Answers at 1 s and 141 s: two in 200 s at t=201 → 100 s per answer; y is now first.
    assert r.estimated_wait_s("y", 201.0) == pytest.approx(100.0)
    assert r.estimated_wait_s("gone", 201.0) is None


def test_snapshot_for_the_wallboard() -> None:
    r = make(q(skills={"sales": 1}), q("support", skills={"support": 1}),
             agents={"a": {"sales": 2}, "b": {"sales": 1, "support": 1}, "c": {"support": 3}})
    r.agent_event("c", E.SET_NOT_READY, 1.0, reason="training")
    r.enqueue("c1", "sales", 2.0)
    r.enqueue("c2", "sales", 3.0)
    r.enqueue("c3", "sales", 4.0)
    r.dispatch(4.0)
    snap = r.snapshot(10.0)
    sales = snap["queues"]["sales"]
    assert (sales["waiting"], sales["ringing"], sales["longest_wait_s"]) == (3, 2, 8.0)
    assert sales["agents"]["reserved"] == 2 and sales["agents"]["available"] == 0
    assert snap["queues"]["support"]["agents"]["not_ready"] == 1
    assert snap["agents"]["c"]["state"] == "not_ready" and snap["agents"]["c"]["reason"] == "training"
    assert snap["agents"]["c"]["since_s"] == 9.0
    assert snap["agents"]["a"]["call_id"] == "c1"
    assert sales["stats"]["offered"] == 3
    import json

    json.dumps(snap)  # JSON-ready


def test_service_level_and_averages() -> None:
    r = make(q(service_level_s=20.0), agents={"a": {}})
    r.agent_event("a", E.SET_NOT_READY, 0.0)
    r.enqueue("fast", "sales", 0.0)
    r.enqueue("slow", "sales", 0.0)
    r.enqueue("gone", "sales", 0.0)
    r.agent_event("a", E.SET_AVAILABLE, 10.0)
    r.dispatch(10.0)
    r.offer_answered("fast", "a", 10.0)
    r.call_ended("a", 70.0)
    r.dispatch(70.0)
    r.offer_answered("slow", "a", 70.0)
    r.leave("gone", 75.0, reason="abandoned")
    r.call_ended("a", 100.0)
    s = r.stats["sales"].as_json()
    assert (s["answered"], s["abandoned"], s["answered_within_sl"]) == (2, 1, 1)
    assert s["service_level"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["asa_s"] == 40.0 and s["aht_s"] == 45.0
