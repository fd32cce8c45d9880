"""The cluster's chat ACD on the leader (callcenter/cluster/chats.py), sans-I/O: capacity counted over
every node, one order of service for chats of all nodes, presence gating, a dead node's chats parked
and given back their place, and a new leader rebuilt from the mirror."""

from __future__ import annotations

import json

from callcenter.cluster.chats import ChatLeader
from callcenter.cluster.messages import Command
from callcenter.routing.agents import Agent, AgentState
from callcenter.routing.queues import QueueConfig

QUEUES = {"chat": QueueConfig("chat"), "vip": QueueConfig("vip")}
WALL = 1_000_000.0  # wall clock at now=0


def agent(name: str, state: AgentState = AgentState.AVAILABLE, max_chats: int = 1) -> Agent:
    return Agent(name, {}, frozenset(), state=state, max_chats=max_chats)


def cmd(op: str, node: str, conv: int | None, at: float = WALL, **args: object) -> Command:
    return Command(op, node, None if conv is None else str(conv), args.pop("agent", None), at, dict(args))  # type: ignore[arg-type]


def enqueue(leader: ChatLeader, node: str, conv: int, at: float, **args: object) -> None:
    queue = args.pop("queue", "chat")
    leader.apply(cmd("chat_enqueue", node, conv, at, queue=queue, since_wall=at, **args), 0.0, WALL)


def assigned(out: object) -> list[tuple[str, int, str]]:
    return [
        (node, int(n.call_id), n.agents[0])
        for node, n in out.notices  # type: ignore[attr-defined]
        if n.op == "chat_assign"
    ]


def test_an_agents_capacity_counts_chats_of_every_node() -> None:
    leader = ChatLeader(QUEUES, 1)
    ann = [agent("ann", max_chats=1)]
    enqueue(leader, "node1", 1, WALL - 5)
    enqueue(leader, "node2", 2, WALL - 4)
    out = leader.step(ann, 0.0, WALL)
    assert assigned(out) == [("node1", 1, "ann")]  # the older chat; the other waits
    assert leader.step(ann, 1.0, WALL + 1).notices == []
    leader.apply(cmd("chat_leave", "node1", 1), 2.0, WALL + 2)  # closed on node 1
    leader.apply(cmd("chat_release", "node1", 1), 2.0, WALL + 2)
    assert assigned(leader.step(ann, 2.0, WALL + 2)) == [("node2", 2, "ann")]


def test_priority_then_arrival_whichever_node_a_chat_arrived_on() -> None:
    leader = ChatLeader(QUEUES, 1)
    enqueue(leader, "node2", 10, WALL - 30)
    enqueue(leader, "node1", 11, WALL - 50)  # arrived first, on another node
    enqueue(leader, "node2", 12, WALL - 10, priority=5)
    order = [a[1] for a in assigned(leader.step([agent("ann", max_chats=3)], 0.0, WALL))]
    assert order == [12, 11, 10]


def test_the_voice_boards_presence_gates_chats() -> None:
    leader = ChatLeader(QUEUES, 1)
    enqueue(leader, "node1", 1, WALL)
    for state in (AgentState.NOT_READY, AgentState.ON_CALL, AgentState.OFFLINE):
        assert leader.step([agent("ann", state)], 0.0, WALL).notices == []
    assert assigned(leader.step([agent("ann")], 1.0, WALL)) == [("node1", 1, "ann")]


def test_chats_of_an_agent_gone_offline_go_back_to_the_node_holding_them() -> None:
    leader = ChatLeader(QUEUES, 1)
    enqueue(leader, "node2", 5, WALL)
    leader.step([agent("ann")], 0.0, WALL)
    out = leader.step([agent("ann", AgentState.OFFLINE)], 1.0, WALL + 1)
    requeued = [(node, n.call_id, n.agents) for node, n in out.notices if n.op == "chat_requeued"]
    assert requeued == [("node2", "5", ("ann",))]
    assert leader.router.is_waiting(5)


def test_a_dead_nodes_waiting_chat_is_parked_then_keeps_its_place_on_the_node_taking_it_over() -> None:
    leader = ChatLeader(QUEUES, 1)
    enqueue(leader, "node1", 1, WALL - 60)  # oldest, on the node that dies
    enqueue(leader, "node2", 2, WALL - 30)
    leader.node_gone("node1")
    leader.step([], 0.0, WALL)
    assert not leader.router.is_waiting(1) and 1 in leader.parked
    # nobody is given a chat no node can serve meanwhile
    assert assigned(leader.step([agent("ann")], 1.0, WALL + 1)) == [("node2", 2, "ann")]
    leader.apply(cmd("chat_release", "node2", 2), 2.0, WALL + 2)
    enqueue(leader, "node2", 3, WALL - 20)
    # node 2 takes chat 1 over (front=True as after a restart): its old place, ahead of chat 3
    leader.apply(cmd("chat_enqueue", "node2", 1, WALL + 3, queue="chat", front=True), 3.0, WALL + 3)
    assert assigned(leader.step([agent("ann")], 3.0, WALL + 3)) == [("node2", 1, "ann")]


def test_a_held_chat_taken_over_keeps_its_agent_and_their_capacity() -> None:
    leader = ChatLeader(QUEUES, 1)
    enqueue(leader, "node1", 1, WALL)
    leader.step([agent("ann")], 0.0, WALL)
    leader.node_gone("node1")
    enqueue(leader, "node2", 2, WALL + 1)
    assert leader.step([agent("ann")], 1.0, WALL + 1).notices == []  # ann still has chat 1
    leader.apply(cmd("chat_assign", "node2", 1, agent="ann", queue="chat"), 2.0, WALL + 2)
    assert leader.owner[1] == "node2" and leader.router.held(1) == ("ann", "chat")


def test_a_new_leader_rebuilds_from_the_mirror() -> None:
    old = ChatLeader(QUEUES, 1)
    enqueue(old, "node1", 1, WALL - 40)
    enqueue(old, "node2", 2, WALL - 30)
    enqueue(old, "node2", 3, WALL - 20, queue="vip", priority=2)
    out = old.step([agent("ann")], 0.0, WALL)  # ann gets 3 (priority)
    mirror = {conv: json.loads(value) for conv, value in out.writes if value is not None}
    assert mirror["3"]["state"] == "held" and mirror["1"]["state"] == "waiting"

    new = ChatLeader(QUEUES, 2)
    new.restore(mirror, {"node2"}, 100.0, WALL + 5)  # node1 died meanwhile
    assert new.router.held(3) == ("ann", "vip")
    assert 1 in new.parked and new.router.is_waiting(2)
    out = new.step([agent("ann", max_chats=2), agent("bob")], 100.0, WALL + 5)
    assert sorted(assigned(out)) == [("node2", 2, "ann")] or sorted(assigned(out)) == [("node2", 2, "bob")]
    assert all(n.token == 2 for _, n in out.notices)


def test_an_agent_closing_the_inbox_on_one_node_frees_their_chats_everywhere() -> None:
    leader = ChatLeader(QUEUES, 1)
    enqueue(leader, "node1", 1, WALL - 2)
    enqueue(leader, "node2", 2, WALL - 1)
    leader.step([agent("ann", max_chats=2)], 0.0, WALL)
    leader.apply(cmd("chat_take_back", "node2", None, agent="ann"), 1.0, WALL + 1)
    out = leader.step([], 1.0, WALL + 1)
    requeued = sorted((node, n.call_id) for node, n in out.notices if n.op == "chat_requeued")
    assert requeued == [("node1", "1"), ("node2", "2")]
    assert leader.router.load("ann") == 0
