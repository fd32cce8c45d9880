"""The pure parts of the cluster's chat gaps (issue 10): the leader's line of waiting chats over every
node (places, written only when they change), ``max_length`` refused by the leader with a ``chat_full``
notice, and the typing throttle."""

from __future__ import annotations

import json

from callcenter.chat.cluster import TypingThrottle
from callcenter.cluster.chats import ChatLeader
from callcenter.cluster.messages import Command, Notice, decode_notice, encode
from callcenter.routing.agents import Agent, AgentState
from callcenter.routing.queues import QueueConfig

WALL = 1_000_000.0  # wall clock at now=0


def cmd(op: str, node: str, conv: int, **args: object) -> Command:
    return Command(op, node, str(conv), None, WALL, dict(args))  # type: ignore[arg-type]


def enqueue(leader: ChatLeader, node: str, conv: int, at: float, queue: str = "chat", **args: object) -> None:
    leader.apply(cmd("chat_enqueue", node, conv, queue=queue, since_wall=at, **args), 0.0, WALL)


def lines(out: object) -> dict[str, list[int] | None]:
    return {q: None if v is None else json.loads(v) for q, v in out.lines}  # type: ignore[attr-defined]


def fulls(out: object) -> list[tuple[str, int, str]]:
    return [(node, int(n.call_id), n.queue) for node, n in out.notices if n.op == "chat_full"]  # type: ignore[attr-defined]


def test_the_line_orders_every_nodes_chats_and_is_written_when_it_changes() -> None:
    leader = ChatLeader({"chat": QueueConfig("chat"), "vip": QueueConfig("vip")}, 1)
    assert leader.step([], 0.0, WALL).lines == []  # nothing waits: nothing written
    enqueue(leader, "node1", 11, WALL - 30)
    enqueue(leader, "node2", 12, WALL - 50)  # arrived first, on another node
    enqueue(leader, "node1", 13, WALL - 10, priority=5)
    assert lines(leader.step([], 0.0, WALL)) == {"chat": [13, 12, 11]}
    assert leader.step([], 1.0, WALL + 1).lines == []  # unchanged: not written again
    leader.apply(cmd("chat_leave", "node2", 12), 2.0, WALL + 2)
    assert lines(leader.step([], 2.0, WALL + 2)) == {"chat": [13, 11]}
    # an agent takes the first: the line moves up
    ann = Agent("ann", {}, frozenset(), state=AgentState.AVAILABLE, max_chats=1)
    assert lines(leader.step([ann], 3.0, WALL + 3)) == {"chat": [11]}


def test_max_length_counts_every_nodes_chats_and_the_leader_refuses_the_next() -> None:
    leader = ChatLeader({"chat": QueueConfig("chat", max_length=2)}, 4)
    enqueue(leader, "node1", 1, WALL - 3)
    enqueue(leader, "node2", 2, WALL - 2)
    enqueue(leader, "node1", 3, WALL - 1)  # the node saw room (its own mirror was older): refused here
    out = leader.step([], 0.0, WALL)
    assert fulls(out) == [("node1", 3, "chat")]
    assert lines(out) == {"chat": [1, 2]}
    assert "3" not in dict(out.writes) or dict(out.writes)["3"] is None  # no record of a refused chat
    # a chat going back in line (handed back, transferred, taken over) is never refused
    enqueue(leader, "node2", 4, WALL, front=True)
    out = leader.step([], 1.0, WALL + 1)
    assert fulls(out) == [] and lines(out) == {"chat": [4, 1, 2]}
    # room again once one leaves
    leader.apply(cmd("chat_leave", "node1", 1), 2.0, WALL + 2)
    leader.apply(cmd("chat_leave", "node2", 4), 2.0, WALL + 2)
    enqueue(leader, "node1", 5, WALL + 2)
    out = leader.step([], 2.0, WALL + 2)
    assert fulls(out) == [] and lines(out) == {"chat": [2, 5]}


def test_a_dead_nodes_parked_chats_still_take_their_places_in_the_limit() -> None:
    leader = ChatLeader({"chat": QueueConfig("chat", max_length=2)}, 1)
    enqueue(leader, "node1", 1, WALL - 3)
    enqueue(leader, "node2", 2, WALL - 2)
    leader.step([], 0.0, WALL)
    leader.node_gone("node1")  # its chat waits to be taken over, out of line
    out = leader.step([], 1.0, WALL + 1)
    assert lines(out) == {"chat": [2]}
    enqueue(leader, "node2", 3, WALL + 1)
    assert fulls(leader.step([], 1.0, WALL + 1)) == [("node2", 3, "chat")]
    # taken over by node 2: back in its place
    enqueue(leader, "node2", 1, WALL - 3)
    assert lines(leader.step([], 2.0, WALL + 2)) == {"chat": [1, 2]}


def test_a_successor_rewrites_the_lines_of_the_queues_the_mirror_had() -> None:
    old = ChatLeader({"chat": QueueConfig("chat"), "vip": QueueConfig("vip")}, 1)
    enqueue(old, "node1", 1, WALL - 3)
    enqueue(old, "node1", 2, WALL - 2, queue="vip")
    out = old.step([], 0.0, WALL)
    records = {conv: json.loads(v) for conv, v in out.writes if v is not None}
    new = ChatLeader({"chat": QueueConfig("chat"), "vip": QueueConfig("vip")}, 2)
    new.restore(records, {"node1"}, 0.0, WALL)
    new.apply(cmd("chat_leave", "node1", 2), 0.0, WALL)
    assert lines(new.step([], 0.0, WALL)) == {"chat": [1], "vip": []}  # vip emptied: written too


def test_the_chat_full_notice_travels() -> None:
    notice = Notice("chat_full", "42", 7, "chat", reason="full")
    assert decode_notice(encode(notice)) == notice


def test_typing_goes_out_on_a_change_and_repeats_at_most_every_repeat_s() -> None:
    gate = TypingThrottle(repeat_s=2.0, rate=100.0, burst=100)
    assert gate.allow("c1", True, 0.0)
    assert not gate.allow("c1", True, 0.5)  # the same again: not worth a message
    assert gate.allow("c1", False, 0.6)  # a change always is
    assert gate.allow("c2", True, 0.6)  # another conversation: its own
    assert gate.allow("c1", False, 2.7)  # the same after repeat_s: sent again


def test_a_widget_toggling_in_a_loop_is_capped() -> None:
    gate = TypingThrottle(repeat_s=2.0, rate=2.0, burst=4)
    sent = sum(gate.allow("v", i % 2 == 0, i * 0.01) for i in range(100))  # 100 changes in one second
    assert 4 <= sent <= 6  # the burst, and what two per second add back within the second
    assert gate.allow("v", True, 10.0)  # tokens back later
