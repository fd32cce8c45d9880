"""The cluster dispatcher without Redis: commands in, notices and mirror writes out, rebuilt from its
own mirror as a successor would be."""

from __future__ import annotations

import json
from functools import partial

from leader_model import WALL0, Mirror, apply_agent_up, node_offers
from leader_model import cmd as model_cmd

from callcenter.cluster.leader import LeaderState
from callcenter.routing.agents import AgentState
from callcenter.routing.queues import QueueConfig

QUEUES = {
    "sales": QueueConfig("sales", skills={"sales": 1}, ring_timeout_s=10.0),
    "all": QueueConfig("all", strategy="ring_all", ring_timeout_s=10.0),
}


# Commands in this file were sent at WALL0 unless they say otherwise.
cmd = partial(model_cmd, at=WALL0)


def test_caller_on_one_node_is_offered_to_agent_of_another() -> None:
    s, m = LeaderState(QUEUES, token=3), Mirror()
    apply_agent_up(s, "bob", "b", 0.0)
    s.apply(cmd("enqueue", "a", call_id="c1", at=WALL0 + 1, queue="sales"), 1.0, WALL0 + 1)
    out = m.take(s.step(1.0, WALL0 + 1))
    assert node_offers(out) == [("a", "c1", ("bob",))]  # to the node holding the caller
    assert all(n.token == 3 for _, n in out.notices)
    assert m.agents["bob"]["state"] == "reserved" and m.agents["bob"]["call_id"] == "c1"
    assert m.waiting["c1"]["offer"] == ["bob"] and m.waiting["c1"]["node"] == "a"
    s.apply(cmd("answered", "a", call_id="c1", agent="bob"), 2.0, WALL0 + 2)
    m.take(s.step(2.0, WALL0 + 2))
    assert "c1" not in m.waiting
    assert (m.agents["bob"]["state"], m.agents["bob"]["node"], m.agents["bob"]["queue"]) == (
        "on_call",
        "a",
        "sales",
    )


def test_one_agent_gets_one_offer_whichever_node_asks() -> None:
    s = LeaderState(QUEUES, token=1)
    apply_agent_up(s, "bob", "b", 0.0)
    s.apply(cmd("enqueue", "a", call_id="c1", at=WALL0 + 1, queue="sales"), 1.0, WALL0 + 1)
    s.apply(cmd("enqueue", "b", call_id="c2", at=WALL0 + 1.5, queue="sales"), 1.5, WALL0 + 1.5)
    assert node_offers(s.step(1.5, WALL0 + 1.5)) == [("a", "c1", ("bob",))]  # the earlier arrival first
    assert node_offers(s.step(1.6, WALL0 + 1.6)) == []  # bob rings for c1: c2 waits
    s.apply(cmd("failed", "a", call_id="c1", agent="bob", missed=True), 12.0, WALL0 + 12)
    # nobody else qualifies, so c1 (first in line) rings bob again: still one offer at a time
    assert node_offers(s.step(12.0, WALL0 + 12)) == [("a", "c1", ("bob",))]
    s.apply(cmd("answered", "a", call_id="c1", agent="bob"), 13.0, WALL0 + 13)
    assert node_offers(s.step(13.0, WALL0 + 13)) == []
    s.apply(cmd("ended", "a", agent="bob"), 20.0, WALL0 + 20)
    assert node_offers(s.step(20.0, WALL0 + 20)) == [("b", "c2", ("bob",))]


def test_arrival_time_at_the_node_decides_the_order() -> None:
    s = LeaderState(QUEUES, token=1)
    apply_agent_up(s, "bob", "b", 0.0)
    s.apply(cmd("presence", "b", agent="bob", event="set_not_ready"), 0.0, WALL0)
    # c2's command reached the leader first, but c1 arrived earlier at its node
    s.apply(cmd("enqueue", "b", call_id="c2", at=WALL0 + 5, queue="sales"), 6.0, WALL0 + 6)
    s.apply(cmd("enqueue", "a", call_id="c1", at=WALL0 + 4, queue="sales"), 6.0, WALL0 + 6)
    assert s.router.position("c1") == 1 and s.router.position("c2") == 2


def test_answer_to_an_offer_gone_tells_the_node_to_drop_the_leg() -> None:
    s = LeaderState(QUEUES, token=1)
    apply_agent_up(s, "bob", "b", 0.0)
    s.apply(cmd("enqueue", "a", call_id="c1", queue="sales"), 1.0, WALL0 + 1)
    s.step(1.0, WALL0 + 1)
    s.apply(cmd("leave", "a", call_id="c1", reason="abandoned"), 2.0, WALL0 + 2)
    s.apply(cmd("answered", "a", call_id="c1", agent="bob"), 2.0, WALL0 + 2)
    out = s.step(2.0, WALL0 + 2)
    assert [(node, n.op, n.agents) for node, n in out.notices] == [("a", "gone", ("bob",))]
    assert s.router.agents["bob"].state is AgentState.AVAILABLE


def test_full_queue_overflow_goes_back_to_the_callers_node() -> None:
    s = LeaderState({"q": QueueConfig("q", max_length=1, join_when_empty=True)}, token=1)
    s.apply(cmd("enqueue", "a", call_id="c1", queue="q"), 0.0, WALL0)
    s.apply(cmd("enqueue", "b", call_id="c2", queue="q"), 0.0, WALL0)
    s.apply(cmd("enqueue", "b", call_id="c3", queue="nope"), 0.0, WALL0)
    out = s.step(0.0, WALL0)
    assert [(node, n.op, n.call_id, n.reason) for node, n in out.notices if n.op != "place"] == [
        ("b", "overflow", "c2", "full"),
        ("b", "overflow", "c3", "unknown_queue"),
    ]


def test_successor_rebuilds_states_offers_calls_and_places() -> None:
    s, m = LeaderState(QUEUES, token=1), Mirror()
    for name in ("bob", "carol", "dave", "erin", "fred"):
        apply_agent_up(s, name, "b", 0.0)
    s.apply(cmd("presence", "b", agent="erin", event="set_not_ready", reason="lunch"), 0.0, WALL0)
    s.apply(cmd("presence", "b", agent="fred", event="set_offline"), 0.0, WALL0)
    s.apply(cmd("define", "b", agent="gina", skills={"other": 1}), 0.0, WALL0)
    s.apply(cmd("presence", "b", agent="gina", event="login"), 0.0, WALL0)
    m.take(s.step(0.0, WALL0))
    for i, (call, node) in enumerate([("c1", "a"), ("c2", "b"), ("c3", "a")]):
        s.apply(cmd("enqueue", node, call_id=call, at=WALL0 + 1 + i, queue="sales"), 1.0 + i, WALL0 + 1 + i)
        m.take(s.step(1.0 + i, WALL0 + 1 + i))
    s.apply(cmd("answered", "a", call_id="c1", agent="bob"), 4.0, WALL0 + 4)
    m.take(s.step(4.0, WALL0 + 4))
    # now: bob on c1 (node a), carol rings for c2 (node b), dave for c3 (node a); c4, c5 wait
    s.apply(cmd("enqueue", "b", call_id="c4", at=WALL0 + 5, queue="sales", priority=0), 5.0, WALL0 + 5)
    s.apply(cmd("enqueue", "a", call_id="c5", at=WALL0 + 6, queue="sales", priority=0), 6.0, WALL0 + 6)
    s.apply(cmd("enqueue", "c", call_id="c6", at=WALL0 + 6, queue="sales"), 6.0, WALL0 + 6)
    m.take(s.step(6.0, WALL0 + 6))
    assert {a: r["state"] for a, r in m.agents.items()} == {
        "bob": "on_call",
        "carol": "reserved",
        "dave": "reserved",
        "erin": "not_ready",
        "fred": "offline",
        "gina": "available",
    }

    # The leader dies; node c died too. The successor's monotonic clock has another origin.
    t = LeaderState(QUEUES, token=2)
    t.restore(m.agents, m.waiting, alive={"a", "b"}, now=500.0, wall=WALL0 + 10)
    out = t.step(500.0, WALL0 + 10)
    assert node_offers(out) == []  # the offers ringing are not sent twice
    board = t.router.agents
    assert {a.name: a.state for a in board} == {
        "bob": AgentState.ON_CALL,
        "carol": AgentState.RESERVED,
        "dave": AgentState.RESERVED,
        "erin": AgentState.NOT_READY,
        "fred": AgentState.OFFLINE,
        "gina": AgentState.AVAILABLE,
    }
    assert board["erin"].reason == "lunch"
    assert (board["carol"].call_id, board["dave"].call_id) == ("c2", "c3")
    assert "c6" in t.dropped and "c6" not in t.router.waiting  # its node is dead
    assert t.router.position("c4") == 3 and t.router.position("c5") == 4  # behind c2, c3 (ringing)
    # the reports of the old offers and call land on the new leader
    t.apply(cmd("answered", "b", call_id="c2", agent="carol"), 501.0, WALL0 + 11)
    t.apply(cmd("failed", "a", call_id="c3", agent="dave", missed=True), 501.0, WALL0 + 11)
    t.apply(cmd("ended", "a", agent="bob"), 501.0, WALL0 + 11)
    out = t.step(501.0, WALL0 + 11)
    assert board["carol"].state is AgentState.ON_CALL
    # bob (free again) and dave (c3 back in line) share c3 and c4: one offer each
    got = sorted((c, a) for _, c, a in node_offers(out))
    assert [c for c, _ in got] == ["c3", "c4"] and {a[0] for _, a in got} == {"bob", "dave"}
    assert ("c3", ("dave",)) not in got  # dave just missed c3: it goes to bob


def test_a_dead_node_takes_its_callers_and_calls_with_it() -> None:
    s, m = LeaderState(QUEUES, token=1), Mirror()
    apply_agent_up(s, "bob", "b", 0.0)
    apply_agent_up(s, "carol", "b", 0.0)
    s.apply(cmd("enqueue", "a", call_id="c1", queue="sales"), 1.0, WALL0 + 1)
    s.apply(cmd("enqueue", "a", call_id="c2", queue="sales"), 1.0, WALL0 + 1)
    s.apply(cmd("enqueue", "a", call_id="c3", queue="sales"), 1.0, WALL0 + 1)
    m.take(s.step(1.0, WALL0 + 1))
    s.apply(cmd("answered", "a", call_id="c1", agent="bob"), 2.0, WALL0 + 2)
    m.take(s.step(2.0, WALL0 + 2))
    assert s.nodes_in_use() == {"a"}
    s.node_gone("a", 3.0)
    m.take(s.step(3.0, WALL0 + 3))
    assert m.waiting == {}
    assert {a.name: a.state for a in s.router.agents} == {
        "bob": AgentState.AVAILABLE,
        "carol": AgentState.AVAILABLE,
    }
    assert m.agents["bob"]["state"] == "available"


def test_queue_made_in_the_admin_console_reaches_the_leader_and_its_successor() -> None:
    from callcenter.cluster.messages import queue_to_json
    from callcenter.routing.queues import Escalation

    s = LeaderState(QUEUES, token=1)
    support = QueueConfig(
        "support", skills={"de": 1}, escalations=(Escalation(30.0, {"en": 1}),), wrap_up_s=5.0
    )
    s.apply(cmd("queue", "a", **queue_to_json(support)), 0.0, WALL0)
    apply_agent_up(s, "bob", "b", 0.0, skills={"de": 3})
    s.apply(cmd("enqueue", "a", call_id="c1", queue="support"), 1.0, WALL0 + 1)
    out = s.step(1.0, WALL0 + 1)
    assert node_offers(out) == [("a", "c1", ("bob",))]
    saved = {w.field: json.loads(w.value) for w in out.writes if w.key == "queues" and w.value}
    t = LeaderState(QUEUES, token=2)
    t.restore({}, {}, alive=set(), now=0.0, wall=WALL0, queues=saved)
    assert t.router.queues["support"] == support
    s.apply(cmd("queue_removed", "a", name="support"), 2.0, WALL0 + 2)  # refused: c1 still waits in it
    assert "support" in s.router.queues


def test_a_restarted_node_says_hello_and_its_old_calls_are_dropped() -> None:
    s = LeaderState(QUEUES, token=1)
    apply_agent_up(s, "bob", "b", 0.0)
    s.apply(cmd("enqueue", "a", call_id="c1", queue="sales"), 1.0, WALL0 + 1)
    s.apply(cmd("enqueue", "a", call_id="c2", queue="sales"), 1.0, WALL0 + 1)
    s.step(1.0, WALL0 + 1)
    s.apply(cmd("answered", "a", call_id="c1", agent="bob"), 2.0, WALL0 + 2)
    s.step(2.0, WALL0 + 2)
    # node a was killed and came back before anyone noticed its heartbeat missing
    s.apply(cmd("hello", "a"), 3.0, WALL0 + 3)
    s.apply(cmd("enqueue", "a", call_id="c3", queue="sales"), 3.0, WALL0 + 3)
    out = s.step(3.0, WALL0 + 3)
    assert list(s.router.waiting) == ["c3"] and node_offers(out) == [("a", "c3", ("bob",))]  # bob was freed


def test_callback_keeps_the_place_and_is_offered_to_the_node_holding_it() -> None:
    s, m = LeaderState(QUEUES, token=1), Mirror()
    apply_agent_up(s, "bob", "b", 0.0)
    s.apply(cmd("presence", "b", agent="bob", event="set_not_ready"), 0.0, WALL0)
    s.apply(cmd("enqueue", "a", call_id="c1", at=WALL0 + 1, queue="sales"), 1.0, WALL0 + 1)
    s.apply(cmd("enqueue", "b", call_id="c2", at=WALL0 + 2, queue="sales"), 2.0, WALL0 + 2)
    # c1 leaves a number and hangs up: node a sends its entry again as a callback
    s.apply(cmd("enqueue", "a", call_id="c1", at=WALL0 + 30, queue="sales", callback=True), 30.0, WALL0 + 30)
    m.take(s.step(30.0, WALL0 + 30))
    assert s.router.position("c1") == 1 and s.router.is_callback("c1") and m.waiting["c1"]["callback"]
    s.apply(cmd("presence", "b", agent="bob", event="set_available"), 31.0, WALL0 + 31)
    out = s.step(31.0, WALL0 + 31)
    assert [(node, n.call_id, n.callback) for node, n in out.notices] == [("a", "c1", True)]
    s.apply(cmd("callback_connecting", "a", call_id="c1", agent="bob"), 32.0, WALL0 + 32)
    s.apply(cmd("callback_failed", "a", call_id="c1", retry_in_s=None), 40.0, WALL0 + 40)
    m.take(s.step(40.0, WALL0 + 40))
    assert "c1" not in m.waiting and s.router.stats["sales"].callbacks_failed == 1
    assert s.router.agents["bob"].state is AgentState.RESERVED  # free again, and c2 rings him now
