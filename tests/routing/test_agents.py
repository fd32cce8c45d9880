"""The agent state table and its composite rules (login, missed offers, wrap-up, deferred requests)."""

from __future__ import annotations

from typing import Any

import pytest

from callcenter.routing.agents import (
    DEFERRED,
    TRANSITIONS,
    AgentBoard,
    AgentEvent,
    AgentState,
    InvalidTransition,
    language_ok,
)

S, E = AgentState, AgentEvent


def board(**kw: Any) -> AgentBoard:
    b = AgentBoard(**kw)
    b.define("alice", {"sales": 3}, ["en"])
    return b


def to_state(b: AgentBoard, state: AgentState, now: float = 0.0) -> None:
    """Drive alice into ``state`` through the table."""
    path = {
        S.OFFLINE: [],
        S.AVAILABLE: [E.LOGIN],
        S.NOT_READY: [E.LOGIN, E.SET_NOT_READY],
        S.RESERVED: [E.LOGIN, E.OFFER],
        S.ON_CALL: [E.LOGIN, E.OFFER, E.ANSWER],
        S.WRAP_UP: [E.LOGIN, E.OFFER, E.ANSWER, E.HANGUP],
        S.OWN_CALL: [E.LOGIN, E.PLACE_CALL],
    }[state]
    for event in path:
        b.apply("alice", event, now, call_id="c1", wrap_up_s=10.0)
    assert b["alice"].state is state


def test_every_state_has_a_way_out_to_offline_or_available() -> None:
    for state in S:
        exits = {TRANSITIONS[(s, e)] for (s, e) in TRANSITIONS if s is state}
        assert exits - {state} or state is S.OFFLINE, state
    assert (S.OFFLINE, E.LOGIN) in TRANSITIONS


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("event", list(E))
def test_table_is_the_whole_truth(state: AgentState, event: AgentEvent) -> None:
    """An event missing from the table raises and changes nothing; a present one lands where the
    table (or a documented composite rule) says."""
    b = board()
    to_state(b, state)
    before = b["alice"].state
    if (state, event) not in TRANSITIONS:
        with pytest.raises(InvalidTransition):
            b.apply("alice", event, 5.0)
        assert b["alice"].state is before
        return
    # the own call placed on the way (c1) is the one that ends; a c2 starts a new one
    call_id = "c1" if event is E.OWN_CALL_ENDED else "c2"
    agent = b.apply("alice", event, 5.0, call_id=call_id, wrap_up_s=10.0)
    target = TRANSITIONS[(state, event)]
    if (state, event) in DEFERRED:
        assert agent.state is state and agent.pending is event
    elif (state, event) == (S.ON_CALL, E.HANGUP):
        assert agent.state is S.WRAP_UP and agent.wrap_up_until == 15.0
    else:
        assert agent.state is target


def test_login_available_or_not_ready_by_config() -> None:
    b = board()
    assert b.apply("alice", E.LOGIN, 1.0).state is S.AVAILABLE
    b2 = board(auto_available=False)
    a = b2.apply("alice", E.LOGIN, 1.0)
    assert (a.state, a.reason) == (S.NOT_READY, "login")


def test_register_refresh_keeps_not_ready_reason() -> None:
    b = board()
    to_state(b, S.AVAILABLE)
    b.apply("alice", E.SET_NOT_READY, 2.0, reason="lunch")
    a = b.apply("alice", E.LOGIN, 3.0)
    assert (a.state, a.reason, a.since) == (S.NOT_READY, "lunch", 2.0)


def test_missed_offers_in_a_row_make_the_agent_not_ready() -> None:
    b = board(max_missed=3)
    to_state(b, S.AVAILABLE)
    for i in range(2):
        b.apply("alice", E.OFFER, float(i), call_id="c")
        assert b.apply("alice", E.OFFER_FAILED, float(i), missed=True).state is S.AVAILABLE
    b.apply("alice", E.OFFER, 3.0, call_id="c")
    a = b.apply("alice", E.OFFER_FAILED, 3.0, missed=True)
    assert (a.state, a.reason, a.missed_in_row) == (S.NOT_READY, "missed offers", 3)
    assert "alice" not in b.available
    # Coming back resets the count: one more miss does not send them away again.
    b.apply("alice", E.SET_AVAILABLE, 4.0)
    b.apply("alice", E.OFFER, 5.0, call_id="c")
    assert b.apply("alice", E.OFFER_FAILED, 5.0, missed=True).state is S.AVAILABLE


def test_caller_gone_is_not_a_miss_and_answer_resets_the_count() -> None:
    b = board(max_missed=2)
    to_state(b, S.AVAILABLE)
    b.apply("alice", E.OFFER, 1.0, call_id="c")
    b.apply("alice", E.OFFER_FAILED, 1.0, missed=True)
    for _ in range(3):
        b.apply("alice", E.OFFER, 2.0, call_id="c")
        b.apply("alice", E.OFFER_FAILED, 2.0, missed=False)
    assert (b["alice"].state, b["alice"].missed_in_row) == (S.AVAILABLE, 1)
    b.apply("alice", E.OFFER, 3.0, call_id="c")
    a = b.apply("alice", E.ANSWER, 3.0)
    assert (a.missed_in_row, a.answered, a.offers, a.call_id) == (0, 1, 5, "c")


def test_hangup_without_wrap_up_is_available_at_once() -> None:
    b = board()
    to_state(b, S.AVAILABLE)
    b.apply("alice", E.OFFER, 1.0, call_id="c")
    b.apply("alice", E.ANSWER, 2.0)
    a = b.apply("alice", E.HANGUP, 60.0, wrap_up_s=0.0)
    assert (a.state, a.call_id, a.idle_since) == (S.AVAILABLE, None, 60.0)
    assert b.get_timer() is None


def test_wrap_up_ends_on_the_timer() -> None:
    b = board()
    to_state(b, S.AVAILABLE)
    b.apply("alice", E.OFFER, 1.0, call_id="c")
    b.apply("alice", E.ANSWER, 2.0)
    a = b.apply("alice", E.HANGUP, 60.0, wrap_up_s=30.0)
    assert (a.state, a.last_call_id) == (S.WRAP_UP, "c")
    assert b.get_timer() == 90.0
    assert b.handle_timer(89.9) == []
    assert b.handle_timer(90.0) == ["alice"]
    assert (a.state, a.since, a.idle_since) == (S.AVAILABLE, 90.0, 90.0)
    assert b.get_timer() is None


def test_ending_wrap_up_early_cancels_the_timer() -> None:
    b = board()
    to_state(b, S.WRAP_UP)
    b.apply("alice", E.SET_AVAILABLE, 3.0)
    assert b.get_timer() is None
    b.apply("alice", E.OFFER, 4.0, call_id="c9")
    assert b.handle_timer(100.0) == []  # the old wrap-up deadline does not touch the new offer
    assert b["alice"].state is S.RESERVED


def test_logout_during_a_call_applies_when_the_call_ends() -> None:
    b = board()
    to_state(b, S.ON_CALL)
    a = b.apply("alice", E.LOGOUT, 5.0)
    assert (a.state, a.pending) == (S.ON_CALL, E.LOGOUT)
    a = b.apply("alice", E.HANGUP, 9.0, wrap_up_s=30.0)
    assert (a.state, a.pending) == (S.OFFLINE, None)
    assert b.get_timer() is None


def test_reregistering_during_the_call_cancels_the_pending_logout() -> None:
    b = board()
    to_state(b, S.ON_CALL)
    b.apply("alice", E.LOGOUT, 5.0)
    b.apply("alice", E.LOGIN, 6.0)
    assert b.apply("alice", E.HANGUP, 9.0).state is S.AVAILABLE


def test_not_ready_requested_during_the_call_applies_after_wrap_up() -> None:
    b = board()
    to_state(b, S.ON_CALL)
    b.apply("alice", E.SET_NOT_READY, 5.0, reason="break")
    assert b.apply("alice", E.HANGUP, 9.0, wrap_up_s=10.0).state is S.WRAP_UP
    b.handle_timer(19.0)
    assert (b["alice"].state, b["alice"].reason) == (S.NOT_READY, "break")


def test_logout_while_ringing_applies_when_the_offer_ends() -> None:
    b = board()
    to_state(b, S.RESERVED)
    b.apply("alice", E.LOGOUT, 5.0)
    assert b["alice"].state is S.RESERVED  # the offer is still ringing: never two truths at once
    a = b.apply("alice", E.OFFER_FAILED, 6.0, missed=True)
    assert (a.state, a.call_id) == (S.OFFLINE, None)
    assert "alice" not in b.available


def test_set_available_while_ringing_drops_a_deferred_request() -> None:
    b = board()
    to_state(b, S.RESERVED)
    b.apply("alice", E.SET_OFFLINE, 5.0)
    b.apply("alice", E.SET_AVAILABLE, 5.5)
    assert b.apply("alice", E.OFFER_FAILED, 6.0).state is S.AVAILABLE


def test_indexes_follow_state_and_definitions() -> None:
    b = board()
    assert b.available == set() and b.available_with("sales") == set()
    b.apply("alice", E.LOGIN, 1.0)
    assert b.available_with("sales") == {"alice"}
    assert b.take_changed() == {"alice"} and b.take_changed() == set()
    b.update("alice", skills={"support": 2})
    assert b.available_with("sales") == set() and b.available_with("support") == {"alice"}
    assert b.take_changed() == {"alice"}
    b.apply("alice", E.OFFER, 2.0, call_id="c")
    assert b.available_with("support") == set()


def test_definitions() -> None:
    b = board()
    g = b.generation
    b.define("alice", {"sales": 5}, ["EN", "zh"])
    assert b["alice"].skills == {"sales": 5} and b["alice"].languages == frozenset({"en", "zh"})
    assert b.generation > g
    with pytest.raises(ValueError, match="level 1-5"):
        b.define("bob", {"sales": 7})
    b.apply("alice", E.LOGIN, 0.0)
    b.apply("alice", E.OFFER, 0.0, call_id="c")
    with pytest.raises(InvalidTransition):
        b.remove("alice")
    b.apply("alice", E.OFFER_FAILED, 0.0)
    b.remove("alice")
    assert "alice" not in b and b.available == set() and len(b) == 0


def test_a_new_board_starts_everyone_offline() -> None:
    b = AgentBoard()
    for name in ("a", "b"):
        assert b.define(name, {"x": 1}).state is S.OFFLINE


@pytest.mark.parametrize(
    ("languages", "wanted", "ok"),
    [
        (frozenset(), "fr", True),
        (frozenset({"en"}), None, True),
        (frozenset({"en"}), "en-us", True),
        (frozenset({"en-us"}), "en-us", True),
        (frozenset({"en-gb"}), "en-us", False),
        (frozenset({"zh"}), "en", False),
    ],
)
def test_language_match(languages: frozenset[str], wanted: str | None, ok: bool) -> None:
    assert language_ok(languages, wanted) is ok
