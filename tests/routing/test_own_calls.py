"""Calls agents place themselves make them busy to the router (state own_call) until the last ends."""

from __future__ import annotations

import pytest

from callcenter.routing.agents import AgentBoard, AgentEvent, AgentState, InvalidTransition
from callcenter.routing.queues import QueueConfig
from callcenter.routing.router import Router

S, E = AgentState, AgentEvent


def router(wrap_up_s: float = 0.0) -> Router:
    r = Router({"support": QueueConfig(name="support", skills={"support": 1}, wrap_up_s=wrap_up_s)})
    for name in ("amy", "ben"):
        r.agents.define(name, {"support": 2})
        r.agent_event(name, E.LOGIN, 0.0)
    return r


def test_an_agent_on_their_own_call_is_offered_nothing_and_takes_the_next_caller_afterwards() -> None:
    r = router()
    r.agent_event("ben", E.SET_NOT_READY, 0.5, reason="break")
    r.own_call_started("amy", "own-1", 1.0)
    assert r.agents["amy"].state is S.OWN_CALL and r.agents["amy"].call_id == "own-1"
    r.enqueue("caller-1", "support", 2.0)
    assert r.dispatch(2.0) == []  # amy is busy, ben not ready: the caller waits
    r.own_call_ended("amy", "own-1", 3.0)
    assert r.agents["amy"].state is S.AVAILABLE
    (offer,) = r.dispatch(3.0)
    assert offer.agents == ("amy",) and offer.call_id == "caller-1"


def test_not_ready_comes_back_with_its_reason() -> None:
    r = router()
    r.agent_event("amy", E.SET_NOT_READY, 1.0, reason="lunch")
    r.own_call_started("amy", "own-1", 2.0)
    assert r.agents["amy"].state is S.OWN_CALL
    r.own_call_ended("amy", "own-1", 3.0)
    assert (r.agents["amy"].state, r.agents["amy"].reason) == (S.NOT_READY, "lunch")


def test_set_not_ready_by_a_supervisor_meanwhile_applies_when_the_call_ends() -> None:
    r = router()
    r.own_call_started("amy", "own-1", 1.0)
    r.agent_event("amy", E.SET_NOT_READY, 2.0, reason="coaching")
    assert r.agents["amy"].state is S.OWN_CALL  # not cut short
    r.own_call_ended("amy", "own-1", 3.0)
    assert (r.agents["amy"].state, r.agents["amy"].reason) == (S.NOT_READY, "coaching")


def test_set_available_meanwhile_overrides_the_not_ready_they_had() -> None:
    r = router()
    r.agent_event("amy", E.SET_NOT_READY, 1.0, reason="lunch")
    r.own_call_started("amy", "own-1", 2.0)
    r.agent_event("amy", E.SET_AVAILABLE, 2.5)
    assert r.agents["amy"].state is S.OWN_CALL
    r.own_call_ended("amy", "own-1", 3.0)
    assert r.agents["amy"].state is S.AVAILABLE


def test_unregistering_mid_call_logs_them_out_when_it_ends_and_registering_again_cancels_that() -> None:
    r = router()
    r.own_call_started("amy", "own-1", 1.0)
    r.agent_event("amy", E.LOGOUT, 2.0)
    assert r.agents["amy"].state is S.OWN_CALL
    r.own_call_ended("amy", "own-1", 3.0)
    assert r.agents["amy"].state is S.OFFLINE
    r.agent_event("amy", E.LOGIN, 4.0)
    r.own_call_started("amy", "own-2", 5.0)
    r.agent_event("amy", E.LOGOUT, 6.0)
    r.agent_event("amy", E.LOGIN, 6.5)  # the phone registered again
    r.own_call_ended("amy", "own-2", 7.0)
    assert r.agents["amy"].state is S.AVAILABLE


def test_two_own_calls_the_last_one_frees_them_and_ending_twice_is_harmless() -> None:
    r = router()
    r.own_call_started("amy", "own-1", 1.0)
    r.own_call_started("amy", "own-2", 1.5)
    r.own_call_ended("amy", "own-1", 2.0)
    assert r.agents["amy"].state is S.OWN_CALL and r.agents["amy"].call_id == "own-2"
    r.own_call_ended("amy", "own-1", 2.5)
    assert r.agents["amy"].state is S.OWN_CALL
    r.own_call_ended("amy", "own-2", 3.0)
    r.own_call_ended("amy", "own-2", 3.5)
    assert r.agents["amy"].state is S.AVAILABLE


def test_a_ringing_offer_keeps_ringing_and_a_no_answer_then_is_not_a_miss() -> None:
    r = router()
    r.agent_event("ben", E.SET_NOT_READY, 0.5, reason="break")
    r.enqueue("caller-1", "support", 1.0)
    (offer,) = r.dispatch(1.0)
    assert offer.agents == ("amy",)
    r.own_call_started("amy", "own-1", 2.0)
    assert r.agents["amy"].state is S.RESERVED and r.offers["caller-1"].agents == ("amy",)
    r.offer_failed("caller-1", "amy", 10.0, missed=True)  # ring timeout while dialling
    amy = r.agents["amy"]
    assert amy.state is S.OWN_CALL and amy.missed_in_row == 0
    assert r.dispatch(10.0) == []  # the caller is not offered to her again meanwhile
    r.own_call_ended("amy", "own-1", 11.0)
    (again,) = r.dispatch(11.0)
    assert again.agents == ("amy",)


def test_answering_the_offer_then_the_queue_call_ends_while_the_own_call_is_up() -> None:
    r = router(wrap_up_s=30.0)
    r.agent_event("ben", E.SET_NOT_READY, 0.5, reason="break")
    r.enqueue("caller-1", "support", 1.0)
    r.dispatch(1.0)
    r.offer_answered("caller-1", "amy", 2.0)
    r.own_call_started("amy", "consult-1", 3.0)  # dialled a colleague from the phone, caller on hold
    assert r.agents["amy"].state is S.ON_CALL
    r.call_ended("amy", 4.0)  # the caller hung up; the consult goes on
    assert r.agents["amy"].state is S.OWN_CALL
    r.enqueue("caller-2", "support", 5.0)
    assert r.dispatch(5.0) == []
    r.own_call_ended("amy", "consult-1", 6.0)
    assert r.agents["amy"].state is S.AVAILABLE  # no wrap-up after an internal call
    assert r.dispatch(6.0)[0].agents == ("amy",)


def test_a_call_placed_during_wrap_up_ends_the_wrap_up() -> None:
    r = router(wrap_up_s=30.0)
    r.enqueue("caller-1", "support", 1.0)
    (offer,) = r.dispatch(1.0)
    (agent,) = offer.agents
    r.offer_answered("caller-1", agent, 2.0)
    r.call_ended(agent, 3.0)
    assert r.agents[agent].state is S.WRAP_UP
    r.own_call_started(agent, "own-1", 4.0)
    assert r.agents[agent].state is S.OWN_CALL and r.agents[agent].wrap_up_until is None
    r.handle_timer(40.0)  # the old wrap-up timer does nothing now
    assert r.agents[agent].state is S.OWN_CALL
    r.own_call_ended(agent, "own-1", 41.0)
    assert r.agents[agent].state is S.AVAILABLE


def test_set_offline_while_registered_then_logged_in_during_the_call() -> None:
    r = router()
    r.agent_event("amy", E.SET_OFFLINE, 1.0)
    r.own_call_started("amy", "own-1", 2.0)
    assert r.agents["amy"].state is S.OFFLINE  # not in the ACD: nothing to keep her from
    r.agent_event("amy", E.SET_AVAILABLE, 3.0)
    assert r.agents["amy"].state is S.OWN_CALL  # never available while her call is up
    r.own_call_ended("amy", "own-1", 4.0)
    assert r.agents["amy"].state is S.AVAILABLE


def test_transitions_name_the_own_call_and_never_pass_through_available() -> None:
    b = AgentBoard()
    b.define("amy", {"support": 1})
    b.apply("amy", E.LOGIN, 0.0)
    b.apply("amy", E.SET_NOT_READY, 1.0, reason="lunch")
    b.transitions = []
    b.apply("amy", E.PLACE_CALL, 2.0, call_id="own-1")
    b.apply("amy", E.OWN_CALL_ENDED, 3.0, call_id="own-1")
    assert [(t.before, t.after, t.call_id, t.reason) for t in b.transitions] == [
        (S.NOT_READY, S.OWN_CALL, "own-1", None),
        (S.OWN_CALL, S.NOT_READY, "own-1", "lunch"),
    ]


def test_own_call_events_go_through_their_own_methods_and_need_the_call() -> None:
    r = router()
    with pytest.raises(InvalidTransition):
        r.agent_event("amy", E.PLACE_CALL, 1.0)
    with pytest.raises(ValueError):
        r.agents.apply("amy", E.PLACE_CALL, 1.0)
    r.own_call_started("amy", "own-1", 1.0)
    with pytest.raises(InvalidTransition):
        r.agents.remove("amy")  # like ringing or talking
    assert r.own_call_ended("nobody", "own-1", 2.0) is None  # removed meanwhile: ignored


def test_a_restart_forgets_own_calls_everyone_offline() -> None:
    r = router()
    r.own_call_started("amy", "own-1", 1.0)
    fresh = Router(dict(r.queues))
    fresh.agents.define("amy", {"support": 2})
    assert fresh.agents["amy"].state is S.OFFLINE
    fresh.own_call_ended("amy", "own-1", 2.0)  # a call that outlived the old process: nothing happens
    assert fresh.agents["amy"].state is S.OFFLINE
