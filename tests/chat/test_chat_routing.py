"""Chat routing: capacity, order, skills, presence from the voice board, taking chats back."""

from __future__ import annotations

from callcenter.chat.routing import ChatRouter
from callcenter.routing.agents import Agent, AgentState
from callcenter.routing.queues import QueueConfig

QUEUES = {
    "support": QueueConfig("support", skills={"support": 1}),
    "billing": QueueConfig("billing", skills={"billing": 2}),
    "rr": QueueConfig("rr", strategy="round_robin"),
}


def agent(name: str, state: AgentState = AgentState.AVAILABLE, max_chats: int = 2, **skills: int) -> Agent:
    a = Agent(name, dict(skills or {"support": 1}), frozenset(), state=state)
    a.max_chats = max_chats
    return a


def test_an_agent_takes_chats_up_to_max_chats_and_the_rest_wait_in_order() -> None:
    r = ChatRouter(QUEUES)
    ann = agent("ann", max_chats=2)
    for conv in (1, 2, 3):
        r.enqueue(conv, "support", now=float(conv))
    got = r.dispatch([ann], now=10.0)
    assert [(a.conversation_id, a.agent) for a in got] == [(1, "ann"), (2, "ann")]
    assert [w.conversation_id for w in r.waiting()] == [3]
    assert r.dispatch([ann], now=11.0) == []  # full
    r.release(1)  # ann closes one
    assert [(a.conversation_id, a.agent) for a in r.dispatch([ann], now=12.0)] == [(3, "ann")]


def test_max_chats_zero_means_no_chats() -> None:
    r = ChatRouter(QUEUES)
    r.enqueue(1, "support", now=0.0)
    assert r.dispatch([agent("ann", max_chats=0)], now=1.0) == []


def test_higher_priority_first_then_arrival() -> None:
    r = ChatRouter(QUEUES)
    r.enqueue(1, "support", now=1.0)
    r.enqueue(2, "support", now=2.0, priority=5)
    r.enqueue(3, "support", now=3.0)
    got = r.dispatch([agent("ann", max_chats=1)], now=4.0)
    assert [a.conversation_id for a in got] == [2]
    assert r.position(1) == 1 and r.position(3) == 2


def test_skills_and_levels_decide_who_qualifies() -> None:
    r = ChatRouter(QUEUES)
    r.enqueue(1, "billing", now=0.0)
    junior = agent("jo", billing=1)
    assert r.dispatch([junior], now=1.0) == []
    senior = agent("sid", billing=2)
    assert [a.agent for a in r.dispatch([junior, senior], now=2.0)] == ["sid"]


def test_not_ready_offline_and_on_call_agents_get_no_new_chats() -> None:
    r = ChatRouter(QUEUES)
    r.enqueue(1, "support", now=0.0)
    idle = [agent("a", AgentState.NOT_READY), agent("b", AgentState.OFFLINE), agent("c", AgentState.ON_CALL)]
    assert r.dispatch(idle, now=1.0) == []
    assert [a.agent for a in r.dispatch([agent("d", AgentState.WRAP_UP)], now=2.0)] == []


def test_offer_during_calls_lets_agents_on_a_call_take_chats() -> None:
    r = ChatRouter(QUEUES, offer_during_calls=True)
    r.enqueue(1, "support", now=0.0)
    assert [a.agent for a in r.dispatch([agent("c", AgentState.ON_CALL)], now=1.0)] == ["c"]
    r.enqueue(2, "support", now=2.0)
    assert r.dispatch([agent("n", AgentState.NOT_READY)], now=3.0) == []  # not-ready still means no


def test_least_busy_agent_gets_the_next_chat() -> None:
    r = ChatRouter(QUEUES)
    ann, bob = agent("ann", max_chats=3), agent("bob", max_chats=3)
    ann.idle_since, bob.idle_since = 0.0, 5.0  # ann idle longer
    r.enqueue(1, "support", now=10.0)
    r.enqueue(2, "support", now=11.0)
    r.enqueue(3, "support", now=12.0)
    got = [(a.conversation_id, a.agent) for a in r.dispatch([ann, bob], now=20.0)]
    assert got == [(1, "ann"), (2, "bob"), (3, "ann")]
    assert r.load("ann") == 2 and r.load("bob") == 1


def test_round_robin_takes_turns() -> None:
    r = ChatRouter(QUEUES)
    agents = [agent("a", max_chats=5), agent("b", max_chats=5)]
    picks = []
    for conv in range(1, 5):
        r.enqueue(conv, "rr", now=float(conv))
        picks += [a.agent for a in r.dispatch(agents, now=float(conv))]
    assert picks == ["a", "b", "a", "b"]


def test_an_agent_going_offline_puts_their_chats_back_at_the_head_of_the_queue() -> None:
    r = ChatRouter(QUEUES)
    ann = agent("ann", max_chats=2)
    r.enqueue(1, "support", now=1.0)
    r.enqueue(2, "support", now=2.0)
    r.dispatch([ann], now=3.0)
    r.enqueue(3, "support", now=4.0, priority=9)  # even a high-priority newcomer waits behind them
    ann.state = AgentState.OFFLINE
    moved = r.sync([ann], now=5.0)
    assert moved == [("ann", [1, 2])]
    assert r.chats_of("ann") == set()
    assert [w.conversation_id for w in r.waiting()] == [1, 2, 3]
    bob = agent("bob", max_chats=1)
    assert [a.conversation_id for a in r.dispatch([ann, bob], now=6.0)] == [1]


def test_a_handed_back_chat_goes_to_someone_else_first() -> None:
    r = ChatRouter(QUEUES)
    ann, bob = agent("ann"), agent("bob")
    ann.idle_since, bob.idle_since = 0.0, 100.0
    r.enqueue(1, "support", now=1.0)
    assert [a.agent for a in r.dispatch([ann, bob], now=2.0)] == ["ann"]
    assert r.hand_back(1, now=3.0) == "ann"
    assert [a.agent for a in r.dispatch([ann, bob], now=4.0)] == ["bob"]


def test_a_handed_back_chat_returns_to_the_same_agent_when_nobody_else_can() -> None:
    r = ChatRouter(QUEUES)
    ann = agent("ann")
    r.enqueue(1, "support", now=1.0)
    r.dispatch([ann], now=2.0)
    r.hand_back(1, now=3.0)
    assert [a.agent for a in r.dispatch([ann], now=4.0)] == ["ann"]


def test_anyone_for_counts_logged_in_agents_with_the_skills() -> None:
    r = ChatRouter(QUEUES)
    assert not r.anyone_for("billing", [agent("a", billing=1), agent("b", AgentState.OFFLINE, billing=3)])
    assert r.anyone_for("billing", [agent("c", AgentState.NOT_READY, billing=2)])
